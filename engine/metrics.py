"""Measurements: levels, loudness, noise floor; and, against a clean
reference, PESQ, STOI, ESTOI and SI-SDR.

Levels are accumulated block by block (:class:`LevelMeter`), so a file is
measured while it is read or written for another reason, and a 2-hour file
costs a few MB (20 more for the envelopes of :mod:`denoise.engine.decay`). A value that cannot be computed is ``None`` with a reason in
``missing[name]``, never a made-up number.

The reference scores are the one implementation the engine, the tests and
the bench all use: scores take ``(reference, estimate)`` in that order, as
PESQ and STOI do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path


import numpy as np
import soundfile as sf

from denoise.engine.decay import DecayMeter
from denoise.engine.dsp import FULL_SCALE, k_weighting, power_db, resample
from denoise.engine.vad import SpeechMeter

BLOCK_S = 30.0
LEVEL_FRAME_S = 0.02
NOISE_PERCENTILE = 10
SPEECH_PERCENTILE = 95
SILENCE_DBFS = -120.0
SINE_CREST_DB = 3.0103  # a full-scale sine's RMS reads 0 dBFS (AES17)
GATE_S = 0.4  # BS.1770 gating block
STEP_S = 0.1  # and its step (75 % overlap)
LEVEL_NAMES = ("peak_dbfs", "rms_dbfs", "loudness_lufs", "noise_floor_dbfs", "snr_db", "decay_s",
               "speech_ratio", "speech_lufs")


@dataclass
class Levels:
    """What one pass over a file measures. Levels in dBFS (a full-scale
    sine's peak and RMS are 0 dBFS), loudness in LUFS (ITU-R BS.1770-4)."""

    peak_dbfs: float | None = None
    rms_dbfs: float | None = None
    clipped: int = 0
    loudness_lufs: float | None = None
    noise_floor_dbfs: float | None = None
    snr_db: float | None = None
    decay_s: float | None = None  # how fast speech dies away: denoise.engine.decay
    speech_ratio: float | None = None  # the share that is speech (denoise.engine.vad)
    speech_lufs: float | None = None  # the loudness of the speech alone
    missing: dict[str, str] = field(default_factory=dict)


class FrameSums:
    """Sums of a signal's values over consecutive frames of ``frame``
    samples, from ``[C, T]`` blocks given in order (a frame may straddle
    blocks); the last, partial frame is left out."""

    def __init__(self, frame: int, channels: int):
        self.frame = frame
        self.sums: list[np.ndarray] = []  # [C, frames] per block
        self.partial = np.zeros(channels)
        self.filled = 0

    def add(self, values: np.ndarray) -> None:
        start = 0
        if self.filled:
            start = min(self.frame - self.filled, values.shape[1])
            self.partial += values[:, :start].sum(axis=1, dtype=np.float64)
            self.filled += start
            if self.filled < self.frame:
                return
            self.sums.append(self.partial[:, None].copy())
            self.partial[:], self.filled = 0.0, 0
        whole = (values.shape[1] - start) // self.frame
        stop = start + whole * self.frame
        self.sums.append(values[:, start:stop].reshape(values.shape[0], whole, self.frame)
                         .sum(axis=2, dtype=np.float64))
        if stop < values.shape[1]:
            self.partial = values[:, stop:].sum(axis=1, dtype=np.float64)
            self.filled = values.shape[1] - stop

    def frames(self) -> np.ndarray:
        return np.concatenate(self.sums, axis=1) if self.sums else np.zeros((len(self.partial), 0))


class LoudnessMeter:
    """Integrated loudness (BS.1770-4) of a signal given in order, block by
    block (``[T, C]``): K-weighted energies per 100 ms step. The K-weighting
    filters carry their state from block to block, so blocks of any size
    give exactly what one pass over the whole signal gives."""

    def __init__(self, sample_rate: int, channels: int):
        self.sample_rate = sample_rate
        self.step = round(STEP_S * sample_rate)
        self.filter_state = np.zeros((2, channels, 2), dtype=np.float32)  # two biquads' delays
        self.steps = FrameSums(self.step, channels)

    def add(self, block: np.ndarray) -> None:
        from scipy.signal import sosfilt  # 0.6 s to import: only where loudness is measured

        weighted, self.filter_state = sosfilt(k_weighting(self.sample_rate), block.T, axis=-1,
                                              zi=self.filter_state)
        self.steps.add(np.square(weighted))

    def loudness(self) -> tuple[float | None, str | None]:
        """The loudness in LUFS, or ``None`` and why."""
        return integrated_loudness(self.steps.frames(), round(GATE_S / STEP_S), self.step)


class LevelMeter:
    """Levels of a signal given in order, block by block (``[T, C]``).

    The noise floor is the 10th percentile of 20 ms frame levels (of the
    channels' mean power), the speech level the 95th; their difference is
    the SNR estimate: it needs no reference, and it is what a listener hears
    as "how far the voice stands above the background". Loudness comes from
    a :class:`LoudnessMeter`.
    """

    def __init__(self, sample_rate: int, channels: int):
        self.channels = channels
        self.frame = max(1, round(LEVEL_FRAME_S * sample_rate))
        self.samples = 0
        self.peak, self.total_power, self.clipped = 0.0, 0.0, 0
        self.frame_power = FrameSums(self.frame, 1)
        self.loudness = LoudnessMeter(sample_rate, channels)
        self.decay = DecayMeter(sample_rate)
        self.speech = SpeechMeter(sample_rate, channels)

    def add(self, block: np.ndarray) -> None:
        """The next ``[T, C]`` samples."""
        self.samples += len(block)
        magnitude = np.abs(block)
        self.peak = max(self.peak, float(magnitude.max(initial=0.0)))
        self.clipped += int(np.count_nonzero(magnitude >= FULL_SCALE))
        power = np.square(block).mean(axis=1)  # the channels' mean power, per sample
        self.total_power += float(power.sum(dtype=np.float64))
        self.frame_power.add(power[None])
        self.loudness.add(block)
        self.decay.add(block)
        self.speech.add(block.T)

    def levels(self) -> Levels:
        levels = Levels(clipped=self.clipped)
        if self.samples == 0 or self.peak == 0:
            reason = "empty file" if self.samples == 0 else "silent"
            levels.missing.update({name: reason for name in LEVEL_NAMES})
            return levels
        levels.peak_dbfs = 20 * math.log10(self.peak)
        levels.rms_dbfs = power_db(self.total_power / self.samples) + SINE_CREST_DB
        _noise_and_snr(levels, self.frame_power.frames()[0] / self.frame)
        levels.loudness_lufs, reason = self.loudness.loudness()
        if reason:
            levels.missing["loudness_lufs"] = reason
        levels.decay_s, reason = self.decay.decay_s()
        if reason:
            levels.missing["decay_s"] = reason
        levels.speech_ratio, levels.speech_lufs = self.speech.speech()
        if levels.speech_lufs is None:
            levels.missing["speech_lufs"] = "no speech found"
        return levels


def measure_file(path: str | Path) -> Levels:
    """The levels of an audio file, read in blocks."""
    with sf.SoundFile(str(path)) as audio:
        meter = LevelMeter(audio.samplerate, audio.channels)
        for block in audio.blocks(blocksize=max(1, round(BLOCK_S * audio.samplerate)),
                                  dtype="float32", always_2d=True):
            meter.add(block)
    return meter.levels()


def _noise_and_snr(levels: Levels, frame_power: np.ndarray) -> None:
    if len(frame_power) < 10:
        reason = f"shorter than {10 * LEVEL_FRAME_S:.1f} s"
        levels.missing.update(noise_floor_dbfs=reason, snr_db=reason)
        return
    decibels = 10 * np.log10(np.maximum(frame_power, 10 ** (SILENCE_DBFS / 10))) + SINE_CREST_DB
    noise = float(np.percentile(decibels, NOISE_PERCENTILE))
    levels.noise_floor_dbfs = noise
    levels.snr_db = float(np.percentile(decibels, SPEECH_PERCENTILE)) - noise


def integrated_loudness(step_energy: np.ndarray, steps_per_block: int,
                        step: int) -> tuple[float | None, str | None]:
    """Integrated loudness from K-weighted energies per step ``[C, steps]``:
    400 ms blocks overlapping by 75 %, absolute gate at -70 LUFS, relative
    gate 10 LU below the absolutely gated loudness (BS.1770-4, as torchaudio
    computes it). Returns the loudness, or ``None`` and why."""
    channels = step_energy.shape[0]
    if channels > 5:
        return None, f"BS.1770 covers up to 5 channels, not {channels}"
    count = step_energy.shape[1] - steps_per_block + 1
    if count < 1:
        return None, "shorter than the 400 ms gating block"
    cumulative = np.concatenate([np.zeros((channels, 1)), np.cumsum(step_energy, axis=1)], axis=1)
    energy = (cumulative[:, steps_per_block:] - cumulative[:, :count]) / (steps_per_block * step)
    weights = np.array([1.0, 1.0, 1.0, 1.41, 1.41])[:channels, None]
    with np.errstate(divide="ignore"):
        block_loudness = -0.691 + 10 * np.log10((weights * energy).sum(axis=0))
    gated = block_loudness > -70.0
    if not gated.any():
        return None, "below the -70 LUFS absolute gate"
    relative = -0.691 + power_db(float((weights[:, 0] * energy[:, gated].mean(axis=1)).sum())) - 10
    gated &= block_loudness > relative
    return -0.691 + power_db(float((weights[:, 0] * energy[:, gated].mean(axis=1)).sum())), None


REFERENCE_METRICS = ("pesq", "stoi", "estoi", "si_sdr")


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio of ``estimate`` in dB (Le
    Roux et al. 2019): its energy along the zero-mean reference against the
    energy of everything else (infinite for a scaled copy)."""
    reference = reference.astype(np.float64) - reference.mean()
    estimate = estimate.astype(np.float64) - estimate.mean()
    target = reference * (estimate @ reference) / (reference @ reference)
    return power_db(float(target @ target)) - power_db(float((estimate - target) @ (estimate - target)))


def pesq_score(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float | None:
    """PESQ (ITU-T P.862.2 wide-band at 16 kHz, resampling as needed;
    P.862 narrow-band for 8 kHz signals), or ``None`` where PESQ finds no
    speech. Needs ``pesq`` (``pip install 'denoise-speech[metrics]'``)."""
    from pesq import PesqError, pesq

    mode, sample_rate = ("nb", 8000) if sample_rate == 8000 else ("wb", 16000)
    reference, estimate = (resample(np.asarray(signal, dtype=np.float64), sample_rate, sample_rate)
                           for signal in (reference, estimate))
    try:
        return float(pesq(sample_rate, reference, estimate, mode))
    except (PesqError, ValueError):  # no utterance found; an all-zero signal
        return None


def stoi_score(reference: np.ndarray, estimate: np.ndarray, sample_rate: int,
               extended: bool = False) -> float:
    """STOI (or ESTOI with ``extended``) of ``estimate``; pystoi resamples to
    its 10 kHz itself. Needs ``pystoi`` (``pip install 'denoise-speech[metrics]'``)."""
    from pystoi import stoi

    return float(stoi(reference, estimate, sample_rate, extended=extended))


def reference_scores(clean_path: str | Path, noisy_path: str | Path,
                     enhanced_path: str | Path) -> tuple[dict[str, float], dict[str, str]]:
    """PESQ, STOI, ESTOI and SI-SDR of the input and of the output against the
    clean reference, and each improvement (``pesq_in``, ``pesq_out``,
    ``pesq_delta``...). Channels are averaged; signals are cut to the
    shortest. Returns the scores and the reasons for any missing ones."""
    scores: dict[str, float] = {}
    missing: dict[str, str] = {}

    def miss(metric: str, reason: str) -> None:
        for side in ("in", "out", "delta"):
            missing[f"{metric}_{side}"] = reason

    signals, rates = [], set()
    for path in (clean_path, noisy_path, enhanced_path):
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
        signals.append(data.mean(axis=1))
        rates.add(sample_rate)
    if len(rates) != 1:
        for metric in REFERENCE_METRICS:
            miss(metric, f"the reference's sample sample_rate differs from the input's ({sorted(rates)})")
        return scores, missing
    sample_rate = rates.pop()
    length = min(len(signal) for signal in signals)
    clean, noisy, enhanced = (signal[:length].astype(np.float64) for signal in signals)
    if length < sample_rate // 4 or not np.any(clean):
        reason = "reference silent" if length >= sample_rate // 4 else "shorter than 0.25 s"
        for metric in REFERENCE_METRICS:
            miss(metric, reason)
        return scores, missing
    sides = (("in", noisy), ("out", enhanced))
    for side, signal in sides:
        scores[f"si_sdr_{side}"] = si_sdr(clean, signal)
    try:
        for side, signal in sides:
            scores[f"stoi_{side}"] = stoi_score(clean, signal, sample_rate)
            scores[f"estoi_{side}"] = stoi_score(clean, signal, sample_rate, extended=True)
    except ImportError:
        for metric in ("stoi", "estoi"):
            miss(metric, "pystoi is not installed (pip install 'denoise-speech[metrics]')")
    try:
        pesq_scores = {side: pesq_score(clean, signal, sample_rate) for side, signal in sides}
        if None in pesq_scores.values():
            miss("pesq", "PESQ found no speech")
        else:
            scores.update({f"pesq_{side}": value for side, value in pesq_scores.items()})
    except ImportError:
        miss("pesq", "pesq is not installed (pip install 'denoise-speech[metrics]')")
    for metric in REFERENCE_METRICS:
        if f"{metric}_in" in scores and f"{metric}_out" in scores:
            scores[f"{metric}_delta"] = scores[f"{metric}_out"] - scores[f"{metric}_in"]
    return scores, missing
