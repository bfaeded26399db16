"""Per-file measurements: levels, loudness, noise floor, and with a clean
reference PESQ, STOI, ESTOI and SI-SDR.

Levels are read from the files in blocks, so a 2-hour file costs a few MB.
A value that cannot be computed is ``None`` with a reason in
``missing[name]``, never a made-up number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

BLOCK_S = 30.0
KWEIGHT_PREROLL_S = 1.0  # the K-weighting filters forget their start within ms
FRAME_S = 0.02
NOISE_PERCENTILE = 10
SPEECH_PERCENTILE = 95
SILENCE_DBFS = -120.0
CLIP_LEVEL = 1.0 - 1.0 / 32768  # full scale of 16-bit PCM; floats at or above it clip there


@dataclass
class Levels:
    """What one pass over a file measures. Levels in dBFS (a full-scale
    sine's peak is 0 dBFS), loudness in LUFS (ITU-R BS.1770-4)."""

    peak_dbfs: float | None = None
    rms_dbfs: float | None = None
    clipped: int = 0
    loudness_lufs: float | None = None
    noise_floor_dbfs: float | None = None
    snr_db: float | None = None
    missing: dict[str, str] = field(default_factory=dict)


def _db(power: float) -> float:
    return 10 * math.log10(power) if power > 0 else -math.inf


def measure_file(path: str | Path) -> Levels:
    """Peak, RMS, clipped samples, integrated loudness and the noise floor
    and SNR estimate of an audio file, reading it in blocks.

    The noise floor is the 10th percentile of 20 ms frame levels (of the
    channels' mean power), the speech level the 95th; their difference is
    the SNR estimate: it needs no reference, and it is what a listener
    hears as "how far the voice stands above the background".
    """
    with sf.SoundFile(str(path)) as audio:
        rate, channels, frames = audio.samplerate, audio.channels, audio.frames
        block = max(1, round(BLOCK_S * rate))
        frame = max(1, round(FRAME_S * rate))
        preroll = round(KWEIGHT_PREROLL_S * rate)
        gate = round(0.4 * rate)
        step = round(gate * 0.25)
        peak, total_power, clipped = 0.0, 0.0, 0
        frame_power: list[np.ndarray] = []
        step_energy: list[np.ndarray] = []  # K-weighted sums per 100 ms, per channel
        tail = np.zeros((0, channels), dtype=np.float32)  # the K-weighting pre-roll
        pending_frame = np.zeros((0, channels), dtype=np.float32)
        pending_step = np.zeros((channels, 0), dtype=np.float64)
        for data in audio.blocks(blocksize=block, dtype="float32", always_2d=True):
            magnitude = np.abs(data)
            peak = max(peak, float(magnitude.max(initial=0.0)))
            clipped += int((magnitude >= CLIP_LEVEL).sum())
            total_power += float(np.square(data, dtype=np.float64).sum())
            joined = np.concatenate([pending_frame, data])
            usable = len(joined) // frame * frame
            frame_power.append(np.square(joined[:usable]).reshape(-1, frame, channels)
                               .mean(axis=(1, 2)))
            pending_frame = joined[usable:]
            weighted = _k_weighted(np.concatenate([tail, data]), rate)[:, len(tail):]
            tail = data[-preroll:] if len(data) >= preroll else \
                np.concatenate([tail, data])[-preroll:]
            squares = np.concatenate([pending_step, np.square(weighted, dtype=np.float64)], axis=1)
            usable = squares.shape[1] // step * step
            step_energy.append(squares[:, :usable].reshape(channels, -1, step).sum(axis=2))
            pending_step = squares[:, usable:]
    levels = Levels(clipped=clipped)
    if frames == 0:
        levels.missing.update({name: "empty file" for name in
                               ("peak_dbfs", "rms_dbfs", "loudness_lufs", "noise_floor_dbfs",
                                "snr_db")})
        return levels
    mean_power = total_power / (frames * channels)
    if peak == 0:
        levels.missing.update({name: "silent" for name in
                               ("peak_dbfs", "rms_dbfs", "loudness_lufs", "noise_floor_dbfs",
                                "snr_db")})
        return levels
    levels.peak_dbfs = 20 * math.log10(peak)
    levels.rms_dbfs = _db(mean_power) + 3.0103  # so that a full-scale sine reads 0 dBFS
    _noise_and_snr(levels, np.concatenate(frame_power))
    _loudness(levels, np.concatenate(step_energy, axis=1), gate, step)
    return levels


def _k_weighted(data: np.ndarray, rate: int) -> np.ndarray:
    """BS.1770's K-weighting (torchaudio's two biquads), ``[T, C] -> [C, T]``."""
    x = torch.from_numpy(np.ascontiguousarray(data.T))
    x = AF.treble_biquad(x, rate, 4.0, 1500.0, 1 / math.sqrt(2))
    return AF.highpass_biquad(x, rate, 38.0, 0.5).numpy()


def _noise_and_snr(levels: Levels, frame_power: np.ndarray) -> None:
    if len(frame_power) < 10:
        reason = f"shorter than {10 * FRAME_S:.1f} s"
        levels.missing.update(noise_floor_dbfs=reason, snr_db=reason)
        return
    decibels = 10 * np.log10(np.maximum(frame_power, 10 ** (SILENCE_DBFS / 10))) + 3.0103
    noise = float(np.percentile(decibels, NOISE_PERCENTILE))
    levels.noise_floor_dbfs = noise
    levels.snr_db = float(np.percentile(decibels, SPEECH_PERCENTILE)) - noise


def _loudness(levels: Levels, step_energy: np.ndarray, gate: int, step: int) -> None:
    """Integrated loudness from K-weighted energies per 100 ms step: 400 ms
    blocks overlapping by 75 %, absolute gate at -70 LUFS, relative gate 10 LU
    below the absolutely gated loudness (BS.1770-4, as torchaudio computes it)."""
    channels = step_energy.shape[0]
    if channels > 5:
        levels.missing["loudness_lufs"] = f"BS.1770 covers up to 5 channels, not {channels}"
        return
    steps_per_block = round(gate / step)
    count = step_energy.shape[1] - steps_per_block + 1
    if count < 1:
        levels.missing["loudness_lufs"] = "shorter than the 400 ms gating block"
        return
    cumulative = np.concatenate([np.zeros((channels, 1)), np.cumsum(step_energy, axis=1)], axis=1)
    energy = (cumulative[:, steps_per_block:] - cumulative[:, :count]) / gate  # [C, blocks]
    weights = np.array([1.0, 1.0, 1.0, 1.41, 1.41])[:channels, None]
    with np.errstate(divide="ignore"):
        block_loudness = -0.691 + 10 * np.log10((weights * energy).sum(axis=0))
    gated = block_loudness > -70.0
    if not gated.any():
        levels.missing["loudness_lufs"] = "below the -70 LUFS absolute gate"
        return
    relative = -0.691 + _db(float((weights[:, 0] * energy[:, gated].mean(axis=1)).sum())) - 10
    gated &= block_loudness > relative
    levels.loudness_lufs = -0.691 + _db(float((weights[:, 0] * energy[:, gated].mean(axis=1)).sum()))


REFERENCE_METRICS = ("pesq", "stoi", "estoi", "si_sdr")


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019)."""
    estimate = estimate - estimate.mean()
    reference = reference - reference.mean()
    target = reference * (estimate @ reference) / (reference @ reference)
    return _db(float(target @ target)) - _db(float((estimate - target) @ (estimate - target)))


def reference_scores(clean_path: str | Path, noisy_path: str | Path,
                     enhanced_path: str | Path) -> tuple[dict[str, float], dict[str, str]]:
    """PESQ, STOI, ESTOI and SI-SDR of the input and of the output against the
    clean reference, and each improvement (``pesq_in``, ``pesq_out``,
    ``pesq_delta``...). Channels are averaged; signals are cut to the
    shortest. PESQ is wide-band at 16 kHz (narrow-band for 8 kHz files),
    resampling as needed; STOI works at the file's rate (pystoi resamples to
    its 10 kHz internally). Returns the scores and the reasons for any
    missing ones."""
    scores: dict[str, float] = {}
    missing: dict[str, str] = {}

    def miss(metric: str, reason: str) -> None:
        for side in ("in", "out", "delta"):
            missing[f"{metric}_{side}"] = reason

    signals, rates = [], set()
    for path in (clean_path, noisy_path, enhanced_path):
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        signals.append(data.mean(axis=1))
        rates.add(rate)
    if len(rates) != 1:
        for metric in REFERENCE_METRICS:
            miss(metric, f"the reference's sample rate differs from the input's ({sorted(rates)})")
        return scores, missing
    rate = rates.pop()
    length = min(len(signal) for signal in signals)
    clean, noisy, enhanced = (signal[:length].astype(np.float64) for signal in signals)
    if length < rate // 4 or not np.any(clean):
        reason = "reference silent" if length >= rate // 4 else "shorter than 0.25 s"
        for metric in REFERENCE_METRICS:
            miss(metric, reason)
        return scores, missing
    for side, signal in (("in", noisy), ("out", enhanced)):
        scores[f"si_sdr_{side}"] = si_sdr(signal, clean)
    _intelligibility(scores, missing, miss, clean, noisy, enhanced, rate)
    _pesq(scores, miss, clean, noisy, enhanced, rate)
    for metric in REFERENCE_METRICS:
        if f"{metric}_in" in scores and f"{metric}_out" in scores:
            scores[f"{metric}_delta"] = scores[f"{metric}_out"] - scores[f"{metric}_in"]
    return scores, missing


def _intelligibility(scores, missing, miss, clean, noisy, enhanced, rate) -> None:
    try:
        from pystoi import stoi
    except ImportError:
        for metric in ("stoi", "estoi"):
            miss(metric, "pystoi is not installed (pip install 'denoise[metrics]')")
        return
    for side, signal in (("in", noisy), ("out", enhanced)):
        scores[f"stoi_{side}"] = float(stoi(clean, signal, rate, extended=False))
        scores[f"estoi_{side}"] = float(stoi(clean, signal, rate, extended=True))


def _pesq(scores, miss, clean, noisy, enhanced, rate) -> None:
    try:
        from pesq import PesqError, pesq
    except ImportError:
        miss("pesq", "pesq is not installed (pip install 'denoise[metrics]')")
        return
    mode, target = ("nb", 8000) if rate == 8000 else ("wb", 16000)
    if rate != target:
        clean, noisy, enhanced = (
            AF.resample(torch.from_numpy(signal), rate, target).numpy()
            for signal in (clean, noisy, enhanced))
    try:
        for side, signal in (("in", noisy), ("out", enhanced)):
            scores[f"pesq_{side}"] = float(pesq(target, clean, signal, mode))
    except PesqError as error:
        scores.pop("pesq_in", None)
        miss("pesq", f"PESQ found no speech ({type(error).__name__})")
