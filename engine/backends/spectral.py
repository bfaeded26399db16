"""Classical speech enhancement: SPP noise tracking and an OM-LSA gain.

Per channel, on a short-time Fourier transform (32 ms square-root Hann
frames, 50 % overlap, at the file's own sample rate so nothing is resampled):

- Noise power is tracked through the signal with the speech-presence-
  probability estimator of Gerkmann and Hendriks, "Unbiased MMSE-based noise
  power estimation with low complexity and low tracking delay", IEEE TASLP
  20(4), 2012. It follows noise that changes during speech (music, babble,
  applause) within about a second, unlike an estimate learnt once at the start.
- The a-priori SNR comes from the decision-directed rule and the gain is the
  MMSE log-spectral amplitude estimator (Ephraim and Malah, 1984 and 1985).
- The gain is weighted by the speech presence probability as in OM-LSA
  (Cohen and Berdugo, 2001): ``G = G_lsa**p * G_min**(1 - p)``. Bins without
  speech go down to a floor, not to zero, so the residual noise stays a quiet
  copy of the real background instead of "musical" tones.

``noise_profile`` replaces the tracker with a fixed noise spectrum measured on
a noise-only recording, which is best for truly stationary noise (hum, hiss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import os
EXP={k[4:]:float(v) for k,v in os.environ.items() if k.startswith('EXP_')}

FRAME_S = 0.032
# Gerkmann and Hendriks' fixed a-priori SNR for "speech present" (15 dB) and
# their smoothing constants, given for 32 ms frames at 50 % overlap.
SPP_PRIOR_SNR = 10 ** (15 / 10)
SPP_SMOOTHING = 0.9
SPP_STAGNATION_LIMIT = 0.99
NOISE_SMOOTHING = 0.8
# Decision-directed weight and a-priori SNR floor (Ephraim and Malah; Cappé 1994).
DD_WEIGHT = 0.98
PRIOR_SNR_FLOOR = 10 ** (-25 / 10)
# The tracker needs this much signal before a chunk to reach the state it
# would have had if it had run from the start of the file.
WARMUP_S = 4.0


@dataclass(frozen=True)
class SpectralOptions:
    """Settings of the spectral backend.

    Args:
        atten_lim_db: most attenuation applied to any time-frequency bin
            (the gain floor); larger removes more noise and more speech.
        strength: 0 leaves the signal unchanged, 1 applies the full gain;
            values between scale the attenuation in decibels.
        noise_file: a recording of the noise alone; when given, its average
            spectrum is used instead of tracking the noise.
    """

    atten_lim_db: float = 15.0
    strength: float = 1.0
    noise_file: Path | None = None

    def __post_init__(self) -> None:
        if not self.atten_lim_db > 0:
            raise ValueError(f"atten_lim_db must be > 0, got {self.atten_lim_db}")
        if not 0 <= self.strength <= 1:
            raise ValueError(f"strength must be within [0, 1], got {self.strength}")


def frame_length(sample_rate: int) -> int:
    """FFT size for a ~32 ms frame: the next power of two."""
    return 1 << max(4, math.ceil(math.log2(FRAME_S * sample_rate)))


def exp_integral(x: torch.Tensor) -> torch.Tensor:
    """E1(x), the exponential integral, within 3 % for x > 0.

    Swamee and Ohija, "Approximation of the exponential integral", J. Hydrologic
    Eng. 8(3), 2003. torch has no E1; this closed form runs on any device.
    """
    x = x.clamp(min=1e-10, max=30.0).double()
    a = torch.log((0.56146 / x + 0.65) * (1 + x))
    b = x**4 * torch.exp(7.7 * x) * (2 + x) ** 3.7
    return ((a ** -7.7 + b) ** -0.13).to(torch.float32)


def lsa_gain(prior_snr: torch.Tensor, post_snr: torch.Tensor) -> torch.Tensor:
    """MMSE log-spectral amplitude gain (Ephraim and Malah, 1985)."""
    wiener = prior_snr / (1 + prior_snr)
    v = wiener * post_snr
    return (wiener * torch.exp(0.5 * exp_integral(v))).clamp(max=1.0)


def initial_noise(power: torch.Tensor, sample_rate: int, hop: int) -> torch.Tensor:
    """Starting noise estimate from the first second: a low per-bin quantile.

    Periodogram values of noise are exponentially distributed, so the q-th
    quantile is -ln(1 - q) times the mean; dividing by that removes the bias
    while speech (the upper quantiles) is ignored.
    """
    frames = max(1, min(power.shape[-1], round(sample_rate / hop)))
    q = 0.2
    low = torch.quantile(power[..., :frames], q, dim=-1)
    return (low / -math.log(1 - q)).clamp(min=1e-12)


class SpectralBackend:
    """SPP noise tracking + OM-LSA gain; works at any sample rate."""

    name = "spectral"
    sample_rate: int | None = None

    def __init__(self, options: SpectralOptions = SpectralOptions()):
        self.options = options
        self._profiles: dict[int, torch.Tensor] = {}

    def context_frames(self, sample_rate: int) -> tuple[int, int]:
        """Samples of real signal needed before and after a chunk."""
        return round(WARMUP_S * sample_rate), frame_length(sample_rate)

    def alignment(self, sample_rate: int) -> int:
        """The STFT hop: chunks starting on it share the whole file's frames."""
        return frame_length(sample_rate) // 2

    def enhance(self, audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Enhance a batch of mono signals. Shape: ``[N, T] -> [N, T]``."""
        n_fft = frame_length(sample_rate)
        hop = n_fft // 2
        length = audio.shape[-1]
        window = torch.hann_window(n_fft, periodic=True, device=audio.device).sqrt()
        spec = torch.stft(audio, n_fft, hop, window=window, center=True,
                          pad_mode="constant", return_complex=True)
        power = spec.real**2 + spec.imag**2
        if self.options.noise_file is not None:
            noise = self._noise_profile(sample_rate, n_fft, hop, window).to(audio.device)
            noise = noise.expand(power.shape[:-1]).clone()
            track = False
        else:
            noise = initial_noise(power, sample_rate, hop)
            track = True
        gain_floor = 10 ** (-self.options.atten_lim_db / 20)
        gains = track_and_gain(power, noise, gain_floor, track)
        if self.options.strength < 1:
            gains = gains ** self.options.strength
        return torch.istft(spec * gains, n_fft, hop, window=window, center=True,
                           length=length)

    def _noise_profile(self, sample_rate: int, n_fft: int, hop: int,
                       window: torch.Tensor) -> torch.Tensor:
        """Mean noise power per bin of ``noise_file``, at ``sample_rate``."""
        if sample_rate not in self._profiles:
            from engine.audio_io import read_noise_file

            noise = read_noise_file(self.options.noise_file, sample_rate)
            spec = torch.stft(noise, n_fft, hop, window=window, center=True,
                              return_complex=True)
            power = (spec.real**2 + spec.imag**2).mean(dim=-1)
            self._profiles[sample_rate] = power.clamp(min=1e-12)
        return self._profiles[sample_rate]


def track_and_gain(power: torch.Tensor, noise: torch.Tensor, gain_floor: float,
                   track: bool) -> torch.Tensor:
    """Gains ``[N, F, T]`` for a power spectrogram, frame by frame.

    Frames run in order because the noise tracker and the decision-directed
    a-priori SNR are both recursive.
    """
    gains = torch.empty_like(power)
    spp_mean = torch.zeros_like(noise)
    prev_speech_power = torch.zeros_like(noise)
    prior_ratio = SPP_PRIOR_SNR / (1 + SPP_PRIOR_SNR)
    log_prior_odds = math.log1p(SPP_PRIOR_SNR)
    log_floor = math.log(gain_floor)
    for t in range(power.shape[-1]):
        frame = power[..., t]
        post_snr = frame / noise
        speech_prob = torch.sigmoid(post_snr * prior_ratio - log_prior_odds)
        if track:
            spp_mean = SPP_SMOOTHING * spp_mean + (1 - SPP_SMOOTHING) * speech_prob
            speech_prob = torch.where(spp_mean > SPP_STAGNATION_LIMIT,
                                      speech_prob.clamp(max=SPP_STAGNATION_LIMIT),
                                      speech_prob)
            noise_given_frame = (1 - speech_prob) * frame + speech_prob * noise
            noise = NOISE_SMOOTHING * noise + (1 - NOISE_SMOOTHING) * noise_given_frame
            post_snr = frame / (noise*EXP.get('NS',1.0))
            speech_prob = torch.sigmoid(post_snr * prior_ratio - log_prior_odds)
            if EXP.get('FS',0): speech_prob = torch.nn.functional.avg_pool1d(speech_prob[:,None], int(EXP['FS']), 1, int(EXP['FS'])//2, count_include_pad=False)[:,0]
            if EXP.get('NOSPP',0): speech_prob = torch.ones_like(speech_prob)
        prior_snr = (DD_WEIGHT * prev_speech_power / (noise*EXP.get('NS',1.0))
                     + (1 - DD_WEIGHT) * (post_snr - 1).clamp(min=0)).clamp(min=PRIOR_SNR_FLOOR)
        gain_h1 = lsa_gain(prior_snr, post_snr)
        prev_speech_power = gain_h1**2 * frame
        log_gain = speech_prob * torch.log(gain_h1.clamp(min=gain_floor)) + (1 - speech_prob) * log_floor
        gains[..., t] = torch.exp(log_gain)
    return gains
