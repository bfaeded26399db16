"""Time-frequency shaping of a backend's output against its input.

- :func:`limit_attenuation`: no time-frequency bin of the output is more than
  ``atten_lim_db`` below the same bin of the input, so the background gets
  quieter rather than gone (for backends with no gain floor of their own).
- :func:`linked_gains`: one real gain per bin, taken from the enhanced mono
  mix and applied to every channel, so a stereo image does not wander.
- :func:`extend_band`: the full band back for a backend that works at a
  lower sample_rate than the file (DEMUCS at 16 kHz on 44.1/48 kHz files).

All work on an STFT of :func:`~denoise.engine.dsp.frame_length` frames with 75 % overlap at the file's
sample_rate, on whole chunks (with the chunk's context, so frames at its edges are
discarded with the context).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from denoise.engine.dsp import frame_length, resample

# Projections back onto a consistent STFT: modifying bins and resynthesising
# smears the change a little into neighbouring frames; re-imposing the floor
# on the resynthesised signal's own STFT a few times removes most of that.
PROJECTIONS = 3
TINY = 1e-12
# Full band: the model's output is used up to CROSSOVER_HZ[0], the input
# shaped by the model's gain above CROSSOVER_HZ[1], and the two cross-fade
# between. The gain is read where the model's output is whole. (With the
# cross-fade at 6.5-7.5 kHz, an oracle low band lost 0.09 PESQ to the plain
# path; at 7.2-8 kHz it loses none.)
CROSSOVER_HZ = (7200.0, 8000.0)
GUIDE_HZ = (4500.0, 6500.0)
GAIN_SMOOTHING_FRAMES = 5  # 40 ms at a 8 ms hop: follows syllables, not noise bursts



def stft(signal: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """``[C, T] -> [C, F, frames]`` complex."""
    n_fft = frame_length(sample_rate)
    return torch.stft(signal, n_fft, n_fft // 4, window=torch.hann_window(n_fft),
                      center=True, return_complex=True)


def istft(spec: torch.Tensor, sample_rate: int, length: int) -> torch.Tensor:
    n_fft = frame_length(sample_rate)
    return torch.istft(spec, n_fft, n_fft // 4, window=torch.hann_window(n_fft), center=True,
                       length=length)


def limit_attenuation(noisy: np.ndarray, enhanced: np.ndarray, sample_rate: int,
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
        floor_spec = floor_gain * stft(torch.from_numpy(noisy), sample_rate)
        floor = floor_spec.abs()
        signal = torch.from_numpy(np.array(enhanced))
        for _ in range(PROJECTIONS):
            spec = stft(signal, sample_rate)
            magnitude = spec.abs()
            raised = torch.where(magnitude >= floor, spec, floor_spec)
            signal = istft(raised, sample_rate, length)
        return signal.numpy().astype(np.float32, copy=False)


def linked_gains(noisy: np.ndarray, enhanced_mix: np.ndarray, sample_rate: int) -> np.ndarray:
    """Every channel of ``noisy`` ``[C, T]`` through the same per-bin gain:
    the enhanced mono mix's magnitude over the noisy mix's, at most 1."""
    length = noisy.shape[-1]
    with torch.inference_mode():
        channels = stft(torch.from_numpy(noisy), sample_rate)
        mix = stft(torch.from_numpy(noisy.mean(axis=0, keepdims=True)), sample_rate)
        enhanced = stft(torch.from_numpy(enhanced_mix), sample_rate)
        gain = (enhanced.abs() / mix.abs().clamp(min=TINY)).clamp(max=1)
        return istft(channels * gain, sample_rate, length).numpy().astype(np.float32, copy=False)


def extend_band(noisy: np.ndarray, enhanced: np.ndarray, sample_rate: int, band_rate: int) -> np.ndarray:
    """``enhanced`` ``[C, T]``, which went through ``band_rate`` and back (so
    it fades from 6 kHz and holds nothing above 8), with the band above the
    crossover taken from ``noisy`` ``[C, T]`` through the model's own gain:
    per frame, the ratio of enhanced to noisy energy between 4.5 and 6.5 kHz,
    smoothed over 40 ms, at most 1. The resamplers' roll-off (0.5 dB at
    6 kHz, 4 dB at 7 kHz, 11 dB at 8 kHz, measured) is undone first, so
    neither the level nor the gain dips towards the crossover."""
    length = noisy.shape[-1]
    with torch.inference_mode():
        noisy_spec = stft(torch.from_numpy(noisy), sample_rate)
        enhanced_spec = stft(torch.from_numpy(np.array(enhanced)), sample_rate)
        freqs = torch.fft.rfftfreq(frame_length(sample_rate), 1 / sample_rate)
        guide = (freqs >= GUIDE_HZ[0]) & (freqs < GUIDE_HZ[1])
        kernel = GAIN_SMOOTHING_FRAMES

        def smoothed(power: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.avg_pool1d(power, kernel, 1, kernel // 2,
                                                  count_include_pad=False)

        equalised = enhanced_spec / _round_trip_response(sample_rate, band_rate)[:, None]
        ratio = smoothed(equalised[:, guide].abs().square().sum(dim=1, keepdim=True)) \
            / smoothed(noisy_spec[:, guide].abs().square().sum(dim=1, keepdim=True)).clamp(min=TINY)
        gain = ratio.sqrt().clamp(max=1)  # [C, 1, frames]
        low, high = CROSSOVER_HZ
        position = ((freqs - low) / (high - low)).clamp(0, 1)
        keep = (0.5 + 0.5 * torch.cos(math.pi * position))[:, None]  # 1 below, 0 above
        spec = equalised * keep + noisy_spec * gain * (1 - keep)
        return istft(spec, sample_rate, length).numpy().astype(np.float32, copy=False)


_responses: dict[tuple[int, int], torch.Tensor] = {}


def _round_trip_response(sample_rate: int, band_rate: int) -> torch.Tensor:
    """The magnitude response, per STFT bin, of resampling from ``sample_rate`` to
    ``band_rate`` and back (what the enhanced signal went through), measured
    on 4 s of white noise (the round trip is not time-invariant, so an
    impulse would not do), floored at -12 dB so nothing is boosted more."""
    key = (sample_rate, band_rate)
    if key not in _responses:
        noise = torch.randn(4 * sample_rate, generator=torch.Generator().manual_seed(0))[None]
        round_trip = resample(resample(noise, sample_rate, band_rate), band_rate, sample_rate)
        power = stft(round_trip, sample_rate).abs().square().mean(dim=-1)
        reference = stft(noise, sample_rate).abs().square().mean(dim=-1)
        _responses[key] = (power / reference)[0].sqrt().clamp(min=0.25)
    return _responses[key]
