"""A backend that exists only in the tests: one module and one line in the
registry (``monkeypatch.setitem(backends.REGISTRY, "half", ...)``) make it a
method the command line runs.

At 8 kHz, causal: ``y[n] = smoothing * y[n-1] + (1 - smoothing) * gain * x[n]``.
With the defaults it halves the signal; with ``smoothing`` it has state to
carry from block to block when streamed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.signal import lfilter


@dataclass(frozen=True)
class HalfOptions:
    gain: float = 0.5
    smoothing: float = 0.0

    def describe(self) -> dict[str, str]:
        return {"gain": f"{self.gain:g}", "smoothing": f"{self.smoothing:g}"}


class HalfStream:
    """The same filter, fed in blocks: its state carries over."""

    latency_samples = 0

    def __init__(self, options: HalfOptions, channels: int):
        self.options = options
        self.state = np.zeros((channels, 1))

    def feed(self, block: np.ndarray) -> np.ndarray:
        out, self.state = lfilter(*_coefficients(self.options), block, axis=-1, zi=self.state)
        return out.astype(np.float32)

    def flush(self) -> np.ndarray:
        return np.zeros((self.state.shape[0], 0), dtype=np.float32)


class HalfBackend:
    Options = HalfOptions
    name = "half"
    sample_rate = 8000
    segment_s = 30.0
    compute_s_per_audio_s = 0.001
    parallel_in_threads = False
    owns_gain_floor = False
    needs_file_std = False
    level_range_dbfs = None
    causal = True

    def __init__(self, options: HalfOptions = HalfOptions()):
        self.options = options

    def context_samples(self, sample_rate: int) -> tuple[int, int]:
        return (round(0.5 * sample_rate) if self.options.smoothing else 0), 0

    def alignment(self, sample_rate: int) -> int:
        return 1

    def chunks_per_call(self, chunk_s: float) -> int:
        return 1

    def prepare(self) -> None:
        pass

    def enhance(self, audio: torch.Tensor, sample_rate: int, file_std=None) -> torch.Tensor:
        out = lfilter(*_coefficients(self.options), audio.numpy(), axis=-1)
        return torch.from_numpy(out.astype(np.float32))

    def stream(self, sample_rate: int, channels: int) -> HalfStream:
        return HalfStream(self.options, channels)


def _coefficients(options: HalfOptions) -> tuple[list[float], list[float]]:
    return [(1 - options.smoothing) * options.gain], [1.0, -options.smoothing]
