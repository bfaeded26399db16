"""Running a batch's chunks on a Dask cluster (``--cluster ADDRESS``).

The chunks go through joblib's Dask backend to an existing scheduler, so a
batch uses every worker the cluster has. Inputs and outputs are paths: every
worker must see the same files at the same paths (a shared file system); the
client reads nothing but what it writes. ``dask[distributed]`` is an extra:
``pip install 'denoise-speech[cluster]'``.
"""

from __future__ import annotations

from denoise.engine.errors import UsageError

CONNECT_TIMEOUT_S = 10


def connect(address: str):
    """A ``distributed.Client`` for the scheduler at ``address``, set as the
    default client (the one joblib's Dask backend uses)."""
    try:
        from distributed import Client
    except ImportError:
        raise UsageError("--cluster needs dask.distributed, which is not installed: "
                         "pip install 'denoise-speech[cluster]'") from None
    try:
        return Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as error:
        raise UsageError(f"cannot reach the Dask scheduler at {address} "
                         f"({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None


def worker_threads(client) -> int:
    """How many tasks the cluster runs at once: its workers' threads."""
    return max(1, sum(client.nthreads().values()))
