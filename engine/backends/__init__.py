"""Backends: a name, the sample rate they work at, and a batch ``enhance``.

A backend is built from a picklable :class:`BackendSpec` so each worker
process builds it once and reuses it for every chunk it is handed. Adding a
backend is one module plus one line in :data:`FACTORIES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    import numpy as np
    import torch


class Backend(Protocol):
    """What the pipeline needs from a backend.

    ``sample_rate`` is the rate ``enhance`` expects, or ``None`` for any rate.
    ``context_frames`` says how much real signal (in samples at the rate given)
    the backend needs before and after a chunk for the chunk's output to match
    a whole-file run. ``segment_s`` is the chunk length it prefers: longer
    chunks repeat that context less often and hold more memory.
    ``compute_s_per_audio_s`` is what one second of one channel costs on one
    CPU thread, so the batch can tell whether worker processes pay off.
    ``enhance`` maps mono signals ``[N, T] -> [N, T]``.
    """

    name: str
    sample_rate: int | None
    segment_s: float
    compute_s_per_audio_s: float

    def context_frames(self, sample_rate: int) -> tuple[int, int]: ...

    def enhance(self, audio: torch.Tensor, sample_rate: int,
                file_std: np.ndarray | None = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class BackendSpec:
    """A picklable recipe for a backend: its registry name and its options."""

    name: str
    options: dict = field(default_factory=dict, hash=False, compare=True)

    def key(self) -> tuple:
        return (self.name, tuple(sorted((k, str(v)) for k, v in self.options.items())))


def _spectral(options: dict) -> Backend:
    from denoise.engine.backends.spectral import SpectralBackend, SpectralOptions

    return SpectralBackend(SpectralOptions(**options))


def _demucs(options: dict) -> Backend:
    from denoise.engine.backends.demucs import DemucsBackend, DemucsOptions

    return DemucsBackend(DemucsOptions(**options))


FACTORIES: dict[str, Callable[[dict], Backend]] = {
    "spectral": _spectral,
    "demucs": _demucs,
}


# Backends whose own gain floor is the attenuation limit (``atten_lim_db``
# among their options); the others get the pipeline's STFT floor.
OWN_GAIN_FLOOR = frozenset({"spectral"})


def default_atten_lim_db(name: str) -> float | None:
    """The attenuation limit a method uses when none is asked for."""
    if name == "spectral":
        from denoise.engine.backends.spectral import SpectralOptions

        return SpectralOptions().atten_lim_db
    return None


def available() -> list[str]:
    return sorted(FACTORIES)


def build(spec: BackendSpec) -> Backend:
    """Instantiate the backend ``spec`` names; options are validated here."""
    try:
        factory = FACTORIES[spec.name]
    except KeyError:
        from denoise.engine.errors import UsageError

        raise UsageError(f"unknown method {spec.name!r}; choose from {', '.join(available())}")
    return factory(dict(spec.options))
