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
  copy of the real background instead of "musical" tones. The gain sees a
  slightly lowered noise estimate and a faster decision-directed rule than
  the textbook, so weak speech and onsets are kept (see the constants).
- The floor is speech-aware: in frames where speech is present, it is
  raised (halved in decibels). Cohen and Berdugo's OM-LSA estimates speech
  absence with a "frame" term, the a-priori SNR averaged over frequency;
  here the frame's measure is the speech presence probability averaged over
  the telephone band, 300 to 3400 Hz (ITU-T G.712), where speech carries
  most of its intelligibility. Weak speech under music and babble that the
  floor used to cut keeps more of itself; pauses keep the full floor.

``noise_profile`` replaces the tracker with a fixed noise spectrum measured on
a noise-only recording, which is best for truly stationary noise (hum, hiss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from denoise.engine.audio_io import Recording
from denoise.engine.dsp import frame_length, resample
from denoise.engine.errors import UsageError

# Gerkmann and Hendriks' fixed a-priori SNR for "speech present" (15 dB) and
# their smoothing constants, given for 32 ms frames at 50 % overlap. (A lower
# prior, e.g. 8 dB, keeps more weak speech out of the noise estimate but makes
# the tracker slow to forget its state: chunked and whole-file runs then
# differed by up to 35 dB SNR, so the tracker is left as published.)
SPP_PRIOR_SNR = 10 ** (15 / 10)
SPP_SMOOTHING = 0.9
SPP_STAGNATION_LIMIT = 0.99
NOISE_SMOOTHING = 0.8
# The tracker lets speech at a local SNR below ~5 dB into its noise estimate
# (the posterior with a 15 dB prior calls it absent), and the gain then removes
# that speech as noise, which loses intelligibility (STOI) in babble, piano
# and cafe noise. The gain therefore sees the noise estimate scaled by this
# factor (-3 dB); the tracker itself is not changed. A noise profile from
# ``noise`` recording has no such leak and is used as measured.
GAIN_NOISE_SCALE = 0.5
# The speech presence probability that weights the gain uses a fixed a-priori
# SNR of 5 dB rather than the tracker's 15 dB: its transition from "absent" to
# "present" is softer, so weak speech is kept and the gain varies less from
# bin to bin.
GAIN_SPP_PRIOR_SNR = 10 ** (5 / 10)
# Decision-directed weight (Ephraim and Malah; Cappe 1994). The textbook 0.98
# smooths the a-priori SNR over ~50 frames, which attenuates speech onsets and
# weak speech and cost ~0.01 STOI; 0.92 keeps most of its freedom from
# musical noise.
DD_WEIGHT = 0.92
# The noise estimate's floor: a power per bin 200 dB under a full-scale
# frame's, far above float32's smallest normal number.
NOISE_FLOOR_POWER = 1e-20
PRIOR_SNR_FLOOR = 10 ** (-25 / 10)
# The speech-aware floor. In a frame whose speech presence, averaged over
# SPEECH_BAND_HZ, is SPEECH_FRAME_PRESENCE[1] or more, the floor's
# attenuation in dB is multiplied by 1 - SPEECH_FLOOR_RAISE; below
# SPEECH_FRAME_PRESENCE[0] it is the full floor; linear between. Chosen on
# the bench pairs (bench/quality.py --levels): files left below their
# input's STOI 12 -> 9 of 52, mean PESQ-WB 1.303 -> 1.304, STOI
# 0.8279 -> 0.8292 (stronger raises cut more files' losses but lower PESQ).
SPEECH_BAND_HZ = (300.0, 3400.0)
SPEECH_FRAME_PRESENCE = (0.6, 0.9)
SPEECH_FLOOR_RAISE = 0.5
NO_LIMIT_DB = 100.0  # the gain is computed in the log domain, so "none" is a very low floor
# The tracker needs this much signal before a chunk to reach the state it
# would have had if it had run from the start of the file.
WARMUP_S = 4.0


@dataclass(frozen=True)
class SpectralOptions:
    """Settings of the spectral backend.

    Args:
        atten_lim_db: most attenuation applied to any time-frequency bin
            (the gain floor); larger removes more noise and more speech; 0
            means no limit (a floor of -100 dB).
        strength: 0 leaves the signal unchanged, 1 applies the full gain;
            values between scale the attenuation in decibels.
        noise: a recording of the noise alone (``audio_io.read_recording``);
            when given, its average
            spectrum is used instead of tracking the noise.
    """

    atten_lim_db: float = 15.0
    strength: float = 1.0
    noise: Recording | None = None

    def describe(self) -> dict[str, str]:
        """These settings as a person reads them."""
        text = {"strength": f"{self.strength:g}",
                "attenuation limit": f"{self.atten_lim_db:g} dB" if self.atten_lim_db else "none"}
        if self.noise is not None:
            text["noise profile"] = str(self.noise)
        return text

    def __post_init__(self) -> None:
        if not self.atten_lim_db >= 0:
            raise ValueError(f"atten_lim_db must be >= 0 (0: no limit), got {self.atten_lim_db}")
        if not 0 <= self.strength <= 1:
            raise ValueError(f"strength must be within [0, 1], got {self.strength}")


def exp_integral(x: torch.Tensor) -> torch.Tensor:
    """E1(x), the exponential integral: within 3 % for 0 < x < 9, and within
    1e-4 absolute above (where it is all but zero).

    Swamee and Ohija, "Approximation of the exponential integral", J. Hydrologic
    Eng. 8(3), 2003. torch has no E1; this closed form runs on any device.
    For large x, ``exp(7.7 x)`` overflows float32 to inf, which gives 0.
    """
    x = x.clamp(min=1e-10, max=10.0)
    a = torch.log((0.56146 / x + 0.65) * (1 + x))
    b = x ** 4 * torch.exp(7.7 * x) * (2 + x) ** 3.7
    return (a ** -7.7 + b) ** -0.13


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

    Options = SpectralOptions
    name = "spectral"
    sample_rate: int | None = None
    segment_s = 30.0
    # One thread, 48 kHz (the slowest common rate): 0.0054 s (0.0025 at 16 kHz).
    compute_s_per_audio_s = 0.006
    parallel_in_threads = False
    owns_gain_floor = True
    needs_file_std = False
    level_range_dbfs = None
    causal = True

    def __init__(self, options: SpectralOptions = SpectralOptions()):
        self.options = options
        self._profiles: dict[int, torch.Tensor] = {}

    def context_samples(self, sample_rate: int) -> tuple[int, int]:
        """Samples of real signal needed before and after a chunk."""
        return round(WARMUP_S * sample_rate), frame_length(sample_rate)

    def prepare(self) -> None:
        """Nothing to fetch: no model."""

    def chunks_per_call(self, chunk_s: float) -> int:
        """One: the frame loop gains nothing from bigger batches."""
        return 1

    def alignment(self, sample_rate: int) -> int:
        """The STFT hop: chunks starting on it share the whole file's frames."""
        return frame_length(sample_rate) // 2

    def enhance(self, audio: torch.Tensor, sample_rate: int,
                file_std: np.ndarray | None = None) -> torch.Tensor:
        """Enhance a batch of mono signals. Shape: ``[N, T] -> [N, T]``.
        (The noise is tracked within the signal; ``file_std`` is not used.)
        At ``strength`` 0 the signal comes back as it is, bit for bit."""
        if self.options.strength == 0:
            return audio.clone()
        n_fft = frame_length(sample_rate)
        hop = n_fft // 2
        length = audio.shape[-1]
        window = torch.hann_window(n_fft, periodic=True, device=audio.device).sqrt()
        spec = torch.stft(audio, n_fft, hop, window=window, center=True,
                          pad_mode="constant", return_complex=True)
        power = spec.real**2 + spec.imag**2
        if self.options.noise is not None:
            noise = self._noise_profile(sample_rate, n_fft, hop, window).to(audio.device)
            tracker = Tracker(noise.expand(power.shape[:-1]), track=False)
        else:
            tracker = Tracker(initial_noise(power, sample_rate, hop), track=True)
        gains = track_and_gain(power, tracker, self.gain_floor, speech_band(sample_rate, n_fft))
        if self.options.strength < 1:
            gains = gains ** self.options.strength
        return torch.istft(spec * gains, n_fft, hop, window=window, center=True,
                           length=length)

    @property
    def gain_floor(self) -> float:
        return 10 ** (-(self.options.atten_lim_db or NO_LIMIT_DB) / 20)

    def stream(self, sample_rate: int, channels: int,
               hop_ms: float | None = None) -> SpectralStream:
        """The same filter run live, ``channels`` at ``sample_rate`` (see
        :class:`SpectralStream` for how its start differs). Its hop is half
        its frame, fixed (16 ms at 16 kHz, 21 ms at 44.1 and 48 kHz)."""
        if hop_ms is not None:
            raise UsageError("--hop-ms: only for --method demucs (the spectral filter's hop "
                             "is half its 32 ms frame)")
        return SpectralStream(self, sample_rate, channels)

    def _noise_profile(self, sample_rate: int, n_fft: int, hop: int,
                       window: torch.Tensor) -> torch.Tensor:
        """Mean noise power per bin of the ``noise`` recording, at ``sample_rate``."""
        if sample_rate not in self._profiles:
            recording = self.options.noise
            noise = resample(torch.from_numpy(recording.samples), recording.sample_rate,
                             sample_rate)
            spec = torch.stft(noise, n_fft, hop, window=window, center=True,
                              return_complex=True)
            power = (spec.real**2 + spec.imag**2).mean(dim=-1)
            self._profiles[sample_rate] = power.clamp(min=1e-12)
        return self._profiles[sample_rate]


def speech_band(sample_rate: int, n_fft: int) -> slice:
    """The STFT bins of :data:`SPEECH_BAND_HZ`."""
    low, high = (round(hz * n_fft / sample_rate) for hz in SPEECH_BAND_HZ)
    return slice(low, high + 1)


def track_and_gain(power: torch.Tensor, tracker: Tracker, gain_floor: float,
                   speech_bins: slice) -> torch.Tensor:
    """Gains ``[N, F, T]`` for a power spectrogram ``[N, F, T]``, the noise
    followed by ``tracker`` (whose state goes on to the next call), the
    frame's speech presence measured over ``speech_bins``. Only the
    recursions run frame by frame (:meth:`Tracker.run`); everything else is
    computed for all frames at once.
    """
    gain_noise, prior_snr = tracker.run(power)
    post_snr = power / gain_noise
    # MMSE log-spectral amplitude gain (Ephraim and Malah, 1985).
    wiener = prior_snr / (1 + prior_snr)
    gain_h1 = (wiener * torch.exp(0.5 * exp_integral(wiener * post_snr))).clamp(max=1.0)
    speech_prob = torch.sigmoid(post_snr * (GAIN_SPP_PRIOR_SNR / (1 + GAIN_SPP_PRIOR_SNR))
                                - math.log1p(GAIN_SPP_PRIOR_SNR))
    low, high = SPEECH_FRAME_PRESENCE
    in_speech = ((speech_prob[:, speech_bins].mean(dim=1, keepdim=True) - low)
                 / (high - low)).clamp(0.0, 1.0)
    log_floor = math.log(gain_floor) * (1 - SPEECH_FLOOR_RAISE * in_speech)
    log_gain = (speech_prob * torch.maximum(torch.log(gain_h1), log_floor)
                + (1 - speech_prob) * log_floor)
    return torch.exp(log_gain)


class Tracker:
    """The noise power the gain sees and the a-priori SNR, frame by frame.

    Per frame: the Gerkmann-Hendriks noise update (when ``track``; otherwise
    the starting ``noise`` ``[N, F]`` is kept), then the decision-directed
    a-priori SNR, whose previous speech power is estimated with the Wiener
    gain (keeping this loop to a handful of operations; the costlier
    log-spectral amplitude gain is computed for all frames at once). Both run
    in one loop over frames, time-major, on NumPy with every operation in
    place: this loop is the backend's speed (it matches the TorchScript it
    replaced, without compiling at import). The state is kept between calls,
    so a signal given in pieces gives what it gives whole.
    """

    def __init__(self, noise: torch.Tensor, track: bool):
        self.track = track
        # Digital silence would bring the estimate to zero (or underflow it
        # there), and the ratios below to infinity: it never goes under a
        # floor far beneath any recording's noise.
        self.estimate = np.maximum(noise.numpy().astype(np.float32), NOISE_FLOOR_POWER)
        self.spp_mean = np.zeros_like(self.estimate)
        self.speech_power = np.zeros_like(self.estimate)

    def run(self, power: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise for the gain and a-priori SNR, ``[N, F, T]`` each, for ``power``."""
        frames = power.permute(2, 0, 1).contiguous().numpy()  # [T, N, F]
        estimate, spp_mean, speech_power = self.estimate, self.spp_mean, self.speech_power
        gain_noise = np.empty_like(frames)
        prior = np.empty_like(frames)
        probability, scratch = np.empty_like(estimate), np.empty_like(estimate)
        prior_ratio = SPP_PRIOR_SNR / (1 + SPP_PRIOR_SNR)
        log_prior_odds = math.log1p(SPP_PRIOR_SNR)
        for t, frame in enumerate(frames):
            if self.track:
                # p = sigmoid(prior_ratio * frame / noise - log_prior_odds)
                np.divide(frame, estimate, out=probability)
                probability *= -prior_ratio
                probability += log_prior_odds
                np.exp(probability, out=probability)
                probability += 1.0
                np.reciprocal(probability, out=probability)
                np.subtract(probability, spp_mean, out=scratch)
                scratch *= 1.0 - SPP_SMOOTHING
                spp_mean += scratch
                # A probability stuck near one would freeze the estimate: cap it.
                np.minimum(probability, SPP_STAGNATION_LIMIT, out=probability,
                           where=spp_mean > SPP_STAGNATION_LIMIT)
                # noise <- s * noise + (1 - s) * E[noise | frame], with
                # E[noise | frame] = (1 - p) * frame + p * noise.
                np.subtract(frame, estimate, out=scratch)
                np.subtract(1.0, probability, out=probability)
                scratch *= probability
                scratch *= 1.0 - NOISE_SMOOTHING
                estimate += scratch
                np.maximum(estimate, NOISE_FLOOR_POWER, out=estimate)
                np.multiply(estimate, GAIN_NOISE_SCALE, out=gain_noise[t])
            else:
                gain_noise[t] = estimate
            # prior = max((1 - w) max(frame / noise - 1, 0) + w speech / noise, floor)
            current = prior[t]
            np.divide(frame, gain_noise[t], out=current)
            current -= 1.0
            np.maximum(current, 0.0, out=current)
            current *= 1.0 - DD_WEIGHT
            np.divide(speech_power, gain_noise[t], out=scratch)
            scratch *= DD_WEIGHT
            current += scratch
            np.maximum(current, PRIOR_SNR_FLOOR, out=current)
            # speech power of this frame, for the next: (prior / (prior + 1))^2 * frame
            np.add(current, 1.0, out=scratch)
            np.divide(current, scratch, out=speech_power)
            np.square(speech_power, out=speech_power)
            speech_power *= frame
        return _frequency_major(gain_noise), _frequency_major(prior)


def _frequency_major(frames: np.ndarray) -> torch.Tensor:
    """``[T, N, F]`` as the ``[N, F, T]`` tensor the rest of the backend uses."""
    return torch.from_numpy(frames).permute(1, 2, 0)


# Mean power per sample below which a frame is digital silence (-100 dBFS).
SILENCE_POWER = 1e-10


class SpectralStream:
    """The spectral filter run live on ``[C, n]`` blocks at one rate.

    Frame for frame it is the offline filter (the same STFT grid, tracker,
    gain and overlap-add, with the same ending), except where the offline
    filter looks ahead: it starts its noise tracker from a low quantile of
    the first second, which a live stream has not heard yet. The stream
    starts it from its first full frame with sound instead (a start too high is
    corrected within a few frames, one too low only slowly), so the two
    differ while the tracker settles; ``initial_noise`` ``[C, F]`` gives it
    the offline start instead. With a noise profile nothing is looked ahead
    and the two are the same throughout.

    Output sample ``t`` is the enhancement of input sample ``t``; it comes
    out once the frame after it is complete, at most ``latency_samples``
    (one frame) later.
    """

    def __init__(self, backend: SpectralBackend, sample_rate: int, channels: int,
                 initial_noise: torch.Tensor | None = None):
        self.n_fft = frame_length(sample_rate)
        self.hop = self.n_fft // 2
        self.latency_samples = self.n_fft
        self.hop_samples = self.hop
        self.gain_floor, self.strength = backend.gain_floor, backend.options.strength
        self.speech_bins = speech_band(sample_rate, self.n_fft)
        window = torch.hann_window(self.n_fft, periodic=True).sqrt()
        self.window = window.numpy()
        self.tracker = None
        if backend.options.noise is not None:
            profile = backend._noise_profile(sample_rate, self.n_fft, self.hop, window)
            self.tracker = Tracker(profile.expand(channels, -1), track=False)
        elif initial_noise is not None:
            self.tracker = Tracker(initial_noise, track=True)
        # The offline STFT is centred: the signal is padded with half a frame
        # of zeros before it; the output in that padding is never emitted.
        self.pending = np.zeros((channels, self.hop), dtype=np.float32)
        self.overlap = np.zeros((channels, self.n_fft - self.hop), dtype=np.float32)
        self.padding_left = self.hop
        self.received = self.emitted = self.frames_done = 0

    def feed(self, block: np.ndarray) -> np.ndarray:
        """The next ``[C, n]`` samples; returns the enhanced ``[C, m]`` ready."""
        block = np.asarray(block, dtype=np.float32)
        self.received += block.shape[1]
        self.pending = np.concatenate([self.pending, block], axis=1)
        frames = (self.pending.shape[1] - self.n_fft) // self.hop + 1
        if self.frames_done == 0 and self.tracker is None:
            # The first full frame (the second of the centred grid) may start
            # the tracker; nothing comes out before it anyway.
            frames = frames if self.pending.shape[1] >= self.n_fft + self.hop else 0
        if frames <= 0:
            return np.zeros((block.shape[0], 0), dtype=np.float32)
        return self._trim(self._frames(frames)[:, :frames * self.hop])

    def flush(self) -> np.ndarray:
        """The rest: the last frames, as the offline filter ends its signal."""
        # The offline grid has 1 + length // hop frames; the last ones see
        # half a frame of zeros after the signal.
        done = (self.received + self.hop - self.pending.shape[1]) // self.hop
        missing = 1 + self.received // self.hop - done
        if missing <= 0:
            return np.zeros((self.pending.shape[0], 0), dtype=np.float32)
        needed = (missing - 1) * self.hop + self.n_fft - self.pending.shape[1]
        self.pending = np.pad(self.pending, ((0, 0), (0, max(0, needed))))
        out = self._frames(missing)
        # Past the last frame's centre only that frame covers the signal; the
        # offline inverse STFT divides by its window there, as here.
        out[:, missing * self.hop:] /= np.maximum(self.window[self.hop:] ** 2, 1e-11)
        return self._trim(out)[:, :self.received - self.emitted]

    def _frames(self, count: int) -> np.ndarray:
        """Enhance the next ``count`` frames; returns the overlap-added output
        from the first new sample to the end of the last frame."""
        hop, n_fft = self.hop, self.n_fft
        pending = self.pending
        windows = np.lib.stride_tricks.sliding_window_view(pending, n_fft, axis=1)[:, :count * hop:hop]
        spectrum = np.fft.rfft(windows * self.window, axis=-1)  # [C, T, F]
        power = torch.from_numpy((spectrum.real ** 2 + spectrum.imag ** 2)
                                 .astype(np.float32).transpose(0, 2, 1))
        gains = np.ones(power.shape, dtype=np.float32)
        first = 0
        if self.tracker is None:
            # The tracker starts on the first full frame with sound in it: a
            # device's first blocks are often digital silence, and a start
            # that low would take the tracker seconds to climb out of.
            half_padding = 1 if self.frames_done == 0 else 0  # the grid's first frame
            heard = power[:, :, half_padding:].mean(dim=(0, 1)) > SILENCE_POWER * self.n_fft
            if bool(heard.any()):
                first = half_padding + int(heard.int().argmax())
                self.tracker = Tracker(power[:, :, first], track=True)
        if self.tracker is not None:
            gains[:, :, first:] = track_and_gain(power[:, :, first:], self.tracker,
                                                 self.gain_floor, self.speech_bins).numpy()
        if self.strength < 1:
            gains = gains ** self.strength
        frames = np.fft.irfft(spectrum * gains.transpose(0, 2, 1), n_fft, axis=-1) * self.window
        out = np.zeros((pending.shape[0], (count - 1) * hop + n_fft), dtype=np.float32)
        out[:, :n_fft - hop] = self.overlap
        for index in range(count):
            out[:, index * hop:index * hop + n_fft] += frames[:, index]
        self.overlap = out[:, count * hop:].copy()
        self.frames_done += count
        self.pending = pending[:, count * hop:]
        return out

    def _trim(self, out: np.ndarray) -> np.ndarray:
        """Drop what falls in the centring padding."""
        skip = min(self.padding_left, out.shape[1])
        self.padding_left -= skip
        self.emitted += out.shape[1] - skip
        return out[:, skip:]
