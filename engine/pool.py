"""Where a batch's tasks run: in this process, in local worker processes, or
on a Dask cluster, behind one interface (a ``concurrent.futures`` executor),
so the batch has one code path for all three.

- :class:`InProcess` runs each task when it is submitted. A batch too small
  to be worth starting workers uses it, and so do a GPU backend (one process
  feeds the device) and standard output (only this process can write it).
- :class:`LocalThreads`: threads of this process, for a backend whose work
  runs in native code that releases the GIL (ONNX Runtime): nothing to
  start, one copy of the model, no results to pickle.
- Local workers are loky's reusable process pool from joblib: processes
  started fresh (no fork of a process that holds torch's threads), tasks
  and results pickled with cloudpickle, a dead worker reported as an error.
- ``--cluster ADDRESS``: the Dask scheduler's executor; every worker must see
  the inputs and outputs at the same paths.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import warnings
from collections.abc import Callable

from denoise.engine.errors import UsageError

CONNECT_TIMEOUT_S = 10
# Idle workers of a local pool stay this long; a batch shuts its pool down
# at the end, so this only matters to a Python user running several.
IDLE_S = 300


class InProcess(cf.Executor):
    """An executor that runs each task at once, in this process."""

    workers = 1

    def submit(self, fn: Callable, /, *args, **kwargs) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as error:  # noqa: BLE001 - a task's failure is its future's
            future.set_exception(error)
        return future


# Set while an interrupted run stops its threads, which cannot be killed: a
# task that may run long (a file's completion) calls check_stop() between
# blocks, so that Ctrl-C waits for a block, not for a whole file.
_stopping = threading.Event()


class TaskStopped(Exception):
    """A task gave up because its run is being stopped."""


def check_stop() -> None:
    """Raise :class:`TaskStopped` if the run is being stopped."""
    if _stopping.is_set():
        raise TaskStopped("the run is being stopped")


class LocalThreads:
    """``workers`` threads of this process."""

    def __init__(self, workers: int):
        _stopping.clear()
        self.workers = workers
        self.executor = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="denoise")

    def submit(self, fn: Callable, /, *args) -> cf.Future:
        return self.executor.submit(fn, *args)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop; an interrupted run (``cancel_futures``) drops the tasks not
        started and has those in hand give up at their next block (their
        temporary outputs removed as on any failure)."""
        if cancel_futures:
            _stopping.set()
        self.executor.shutdown(wait=wait, cancel_futures=cancel_futures)
        if wait:
            # every task has given up: the next run in this process, on any
            # pool, must not find the flag still set
            _stopping.clear()


class LocalProcesses:
    """``workers`` local processes (loky, through joblib)."""

    def __init__(self, workers: int):
        from joblib.externals.loky import get_reusable_executor

        # loky replaces a worker whose memory has grown 300 MB past what it
        # held after its first task, and warns when tasks were waiting for
        # it: a worker whose first task decoded a media file grows that much
        # when it then enhances. The replacement takes the waiting tasks, so
        # nothing is lost, and the warning would only puzzle a user.
        warnings.filterwarnings("ignore", message="A worker stopped while some jobs were "
                                                  "given to the executor", category=UserWarning)
        self.workers = workers
        self.executor = get_reusable_executor(max_workers=workers, timeout=IDLE_S)

    def submit(self, fn: Callable, /, *args) -> cf.Future:
        return self.executor.submit(fn, *args)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the workers; with ``cancel_futures`` (an interrupted run)
        they are killed rather than left to finish their tasks."""
        self.executor.shutdown(wait=wait, kill_workers=cancel_futures)


class Cluster:
    """The Dask scheduler at ``address``: as many tasks at once as its
    workers have threads."""

    def __init__(self, address: str):
        try:
            from distributed import Client
        except ImportError:
            raise UsageError("--cluster needs dask.distributed, which is not installed: "
                             "pip install 'denoise-speech[cluster]'") from None
        try:
            self.client = Client(address, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as error:
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UsageError(f"cannot reach the Dask scheduler at {address} ({first})") from None
        self.workers = max(1, sum(self.client.nthreads().values()))
        self.executor = self.client.get_executor(pure=False)

    def submit(self, fn: Callable, /, *args) -> cf.Future:
        return self.executor.submit(fn, *args)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.executor.shutdown(wait=wait and not cancel_futures)
        self.client.close()
