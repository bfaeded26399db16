"""Time-frequency shaping of a backend's output against its input.

- :func:`limit_attenuation`: no time-frequency bin of the output is more than
  ``atten_lim_db`` below the same bin of the input, so the background gets
  quieter rather than gone (for backends with no gain floor of their own).
- :func:`linked_gains`: one real gain per bin, taken from the enhanced mono
  mix and applied to every channel, so a stereo image does not wander.

Both work on an STFT of about 32 ms frames with 75 % overlap at the file's
rate, on whole chunks (with the chunk's context, so frames at its edges are
discarded with the context).
"""

from __future__ import annotations

import math

import numpy as np
import torch

FRAME_S = 0.032
# Projections back onto a consistent STFT: modifying bins and resynthesising
# smears the change a little into neighbouring frames; re-imposing the floor
# on the resynthesised signal's own STFT a few times removes most of that.
PROJECTIONS = 3
TINY = 1e-12


def frame_length(rate: int) -> int:
    """The STFT size: the power of two nearest 32 ms."""
    return 1 << round(math.log2(FRAME_S * rate))


def stft(signal: torch.Tensor, rate: int) -> torch.Tensor:
    """``[C, T] -> [C, F, frames]`` complex."""
    n_fft = frame_length(rate)
    return torch.stft(signal, n_fft, n_fft // 4, window=torch.hann_window(n_fft),
                      center=True, return_complex=True)


def istft(spec: torch.Tensor, rate: int, length: int) -> torch.Tensor:
    n_fft = frame_length(rate)
    return torch.istft(spec, n_fft, n_fft // 4, window=torch.hann_window(n_fft), center=True,
                       length=length)


def limit_attenuation(noisy: np.ndarray, enhanced: np.ndarray, rate: int,
                      atten_lim_db: float) -> np.ndarray:
    """``enhanced`` ``[C, T]`` with every STFT bin that is more than
    ``atten_lim_db`` below the same bin of ``noisy`` replaced by that bin of
    ``noisy``, attenuated by exactly ``atten_lim_db``. The replacement keeps
    the input's phase, which is consistent from frame to frame, so the
    resynthesis does not cancel it (the output's own phase, where it has
    removed nearly everything, can be anything)."""
    floor_gain = 10 ** (-atten_lim_db / 20)
    length = noisy.shape[-1]
    with torch.inference_mode():
        floor_spec = floor_gain * stft(torch.from_numpy(noisy), rate)
        floor = floor_spec.abs()
        signal = torch.from_numpy(np.array(enhanced))
        for _ in range(PROJECTIONS):
            spec = stft(signal, rate)
            magnitude = spec.abs()
            raised = torch.where(magnitude >= floor, spec, floor_spec)
            signal = istft(raised, rate, length)
        return signal.numpy().astype(np.float32, copy=False)


def linked_gains(noisy: np.ndarray, enhanced_mix: np.ndarray, rate: int) -> np.ndarray:
    """Every channel of ``noisy`` ``[C, T]`` through the same per-bin gain:
    the enhanced mono mix's magnitude over the noisy mix's, at most 1."""
    length = noisy.shape[-1]
    with torch.inference_mode():
        channels = stft(torch.from_numpy(noisy), rate)
        mix = stft(torch.from_numpy(noisy.mean(axis=0, keepdims=True)), rate)
        enhanced = stft(torch.from_numpy(enhanced_mix), rate)
        gain = (enhanced.abs() / mix.abs().clamp(min=TINY)).clamp(max=1)
        return istft(channels * gain, rate, length).numpy().astype(np.float32, copy=False)
