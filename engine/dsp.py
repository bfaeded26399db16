"""Signal-processing helpers every stage shares: one resampler, one STFT
frame length, one full-scale level.

- :func:`resample` is torchaudio's band-limited windowed-sinc resampler
  (Smith and Gossett, ICASSP 1984), with inputs shorter than its filter
  zero-padded first and trimmed after, so a file of a few samples works too.
- :func:`frame_length` is the STFT size of every short-time analysis here:
  the next power of two at or above 32 ms (512 samples at 16 kHz, 2048 at
  44.1 and 48 kHz), so frames are as long at every rate within a factor of 2.
- :func:`runs` finds the runs of ``True`` in a mask (speech, pauses, decays).
- :func:`k_weighting` is the loudness filter of ITU-R BS.1770-4, for the
  loudness meters and the speech level of the leveler.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

FRAME_S = 0.032
# The largest 16-bit sample: a float sample at or beyond it clips in a
# 16-bit file, so levels count it as clipped and limiters stay under it.
FULL_SCALE = 1.0 - 1.0 / 32768
# Resampling filters need a few dozen samples to work on; shorter signals are
# zero-padded to this length first.
MIN_RESAMPLE_SAMPLES = 256


def frame_length(sample_rate: int, frame_s: float = FRAME_S) -> int:
    """STFT size: the next power of two at or above ``frame_s``."""
    return 1 << max(4, math.ceil(math.log2(frame_s * sample_rate)))


def resample(signal, from_rate: int, to_rate: int):
    """Band-limited resampling of ``[..., T]`` (a tensor or an array; the
    same type comes back), ``T * to_rate / from_rate`` samples long."""
    if from_rate == to_rate:
        return signal
    as_array = isinstance(signal, np.ndarray)
    audio = torch.from_numpy(np.ascontiguousarray(signal)) if as_array else signal
    length = audio.shape[-1]
    if length < MIN_RESAMPLE_SAMPLES:
        audio = torch.nn.functional.pad(audio, (0, MIN_RESAMPLE_SAMPLES - length))
    import torchaudio.functional as AF

    out = AF.resample(audio, from_rate, to_rate)[..., : max(1, round(length * to_rate / from_rate))]
    return out.numpy() if as_array else out


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of ``True`` in a 1-D ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], np.asarray(mask, np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def power_db(power: float) -> float:
    """Decibels of a power (mean square); minus infinity for silence."""
    return 10 * math.log10(power) if power > 0 else -math.inf


@lru_cache(maxsize=None)
def k_weighting(sample_rate: int) -> np.ndarray:
    """BS.1770's K-weighting at any sample_rate, as second-order sections: a high
    shelf of +4 dB at 1500 Hz (Q 1/sqrt 2) and a high-pass at 38 Hz (Q 0.5),
    with the Audio EQ Cookbook's formulas (as torchaudio's ``loudness``
    builds them; at 48 kHz they match BS.1770's published coefficients)."""
    w0 = 2 * math.pi * 1500.0 / sample_rate
    alpha, gain = math.sin(w0) / 2 * math.sqrt(2), 10 ** (4.0 / 40)
    rooted, cosine = 2 * math.sqrt(gain) * alpha, math.cos(w0)
    shelf = [gain * ((gain + 1) + (gain - 1) * cosine + rooted),
             -2 * gain * ((gain - 1) + (gain + 1) * cosine),
             gain * ((gain + 1) + (gain - 1) * cosine - rooted),
             (gain + 1) - (gain - 1) * cosine + rooted,
             2 * ((gain - 1) - (gain + 1) * cosine),
             (gain + 1) - (gain - 1) * cosine - rooted]
    w0 = 2 * math.pi * 38.0 / sample_rate
    alpha, cosine = math.sin(w0) / 2 / 0.5, math.cos(w0)
    highpass = [(1 + cosine) / 2, -1 - cosine, (1 + cosine) / 2, 1 + alpha, -2 * cosine, 1 - alpha]
    sections = np.array([shelf, highpass])
    return (sections / sections[:, 3:4]).astype(np.float32)
