"""Making an enhanced file ready to publish: loudness, peaks, clipping, residue.

All of it happens once a file's chunks are joined, in one pool task per
file (:mod:`denoise.engine.completion`), reading the joined file from a
hidden float staging copy:

- **Leveler** (``leveler``, on with the podcast preset): each stretch of
  speech moved toward the file's typical speech loudness, pauses held
  (:mod:`denoise.engine.leveler`), from one more pass over the staging
  copy; what follows sees the levelled signal.
- **Loudness** (``loudness_lufs``): the staging copy's integrated loudness
  (ITU-R BS.1770-4) is measured, and it is played through a gain to the
  target. The output's loudness is measured as it is written; if the peak
  limiter took it more than 0.2 LU off the target, the gain is corrected and
  the file played again (at most 4 passes in all, rarely more than one).
- **Peaks** (``true_peak_dbtp``): a look-ahead limiter on the true peak (the
  signal 4x oversampled, BS.1770 annex 2). It lowers the gain smoothly
  *before* a peak (5 ms look-ahead, so it has no attack distortion) and lets
  it recover exponentially (150 ms), one gain for all channels so the stereo
  image does not move. A signal within the ceiling passes exactly as it is.
  Oversampling is done only where a peak can reach the ceiling: elsewhere
  the samples bound it (the interpolation filter cannot raise a peak by more
  than its gain ``OVERSHOOT``), which gives the same output for less work.
- **Clipping** (``clip``): a sample beyond full scale cannot be stored in an
  integer or lossy file. ``limit`` (the default) runs the limiter at full
  scale; ``report`` clips and counts the samples; ``error`` fails the file.
  Float files store such samples as they are. A run with nothing else to
  finish writes its outputs directly through this (:class:`Output`).
- **Residue** (``residue``): what was taken away, input minus output
  (before loudness and limiting), written beside the output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import torch

from denoise.engine.audio_io import FLOAT_SUBTYPES, AtomicWriter
from denoise.engine.choices import CLIP_MODES, PRESETS
from denoise.engine.dsp import FULL_SCALE, resample
from denoise.engine.errors import FileError
from denoise.engine.leveler import MAX_GAIN_DB, Leveling, plan_leveling
from denoise.engine.pool import check_stop

LOOKAHEAD_S = 0.005
RELEASE_S = 0.150
OVERSAMPLE = 4
# Margin for the 4x interpolation filter at the edges of what is held back
# (its taps reach 7 samples each way).
FILTER_MARGIN = 64
# Oversampling is computed span by span, only for spans that could peak at
# the ceiling.
PEAK_SPAN = 2048
# The limiter aims this far under its ceiling, so that quantisation and the
# gain's own smooth change between samples cannot carry a peak over it.
SAFETY_DB = 0.05
LOUDNESS_TOLERANCE_LU = 0.2
LOUDNESS_ATTEMPTS = 4
BLOCK_S = 30.0


@dataclass(frozen=True)
class Finishing:
    """What to do to each output once it is enhanced (all off by default,
    except that nothing is clipped: ``clip="limit"``)."""

    loudness_lufs: float | None = None
    true_peak_dbtp: float | None = None
    preset: str | None = None
    clip: str = "limit"
    residue: bool = False
    leveler: bool | None = None  # None: as the preset says
    leveler_max_gain_db: float = MAX_GAIN_DB

    def __post_init__(self) -> None:
        if not 0 < self.leveler_max_gain_db <= 40:
            raise ValueError(f"leveler_max_gain_db must be within (0, 40], got "
                             f"{self.leveler_max_gain_db}")
        if self.clip not in CLIP_MODES:
            raise ValueError(f"clip must be one of {', '.join(CLIP_MODES)}, not {self.clip!r}")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")

    def describe(self) -> dict[str, str]:
        """What finishing does, as a person reads it."""
        text = {}
        preset = PRESETS.get(self.preset) if self.preset else None
        if self.loudness_lufs is not None:
            text["loudness"] = f"{self.loudness_lufs:g} LUFS"
        elif preset is not None:
            text["loudness"] = (f"{preset.stereo_lufs:g} LUFS (mono files {preset.mono_lufs:g}), "
                                f"preset {self.preset}")
        text["leveler"] = (f"on, at most {self.leveler_max_gain_db:g} dB up or down"
                           if self.levels() else "off")
        ceiling = self.ceiling_dbtp()
        if ceiling is not None:
            text["true peak"] = f"at most {ceiling:g} dBTP"
        text["clipping"] = {"limit": "limited at full scale", "report": "clipped and counted",
                            "error": "fails the file"}[self.clip]
        if self.residue:
            text["residue"] = "written beside each output"
        return text

    def target_lufs(self, channels: int) -> float | None:
        if self.loudness_lufs is not None or self.preset is None:
            return self.loudness_lufs
        preset = PRESETS[self.preset]
        return preset.mono_lufs if channels == 1 else preset.stereo_lufs

    def levels(self) -> bool:
        """Whether the leveler runs."""
        if self.leveler is not None:
            return self.leveler
        return self.preset is not None and PRESETS[self.preset].leveler

    def ceiling_dbtp(self) -> float | None:
        if self.true_peak_dbtp is not None or self.preset is None:
            return self.true_peak_dbtp
        return PRESETS[self.preset].true_peak_dbtp


@lru_cache(maxsize=1)
def overshoot() -> float:
    """The most the 4x interpolation can raise a peak over the samples: the
    largest sum of absolute taps of any of its phases (1.87, 5.4 dB)."""
    impulse = torch.zeros(1, 4 * FILTER_MARGIN)
    impulse[0, 2 * FILTER_MARGIN] = 1.0
    taps = resample(impulse, 1, OVERSAMPLE)[0].abs().numpy()
    return float(max(taps[phase::OVERSAMPLE].sum() for phase in range(OVERSAMPLE)))


def true_peak(block: np.ndarray, below: float | None = None) -> np.ndarray:
    """Per sample of ``[C, T]``: the largest magnitude over the channels and
    the 4x oversampled points from that sample to the next, ``[T]``.

    With ``below``, spans that cannot reach it (their samples, and their
    neighbours', times :func:`overshoot` stay under it) get that bound
    instead of their exact value: anything under ``below`` serves a limiter
    whose ceiling is ``below`` as well as the exact value does.
    """
    length = block.shape[1]
    if below is None:
        return _oversampled(block)
    starts = np.arange(0, length, PEAK_SPAN)
    span_peak = np.maximum.reduceat(np.abs(block).max(axis=0), starts)
    reach = np.maximum(span_peak, np.maximum(np.r_[0.0, span_peak[:-1]], np.r_[span_peak[1:], 0.0]))
    bound = overshoot() * reach
    peaks = np.repeat(bound, PEAK_SPAN)[:length]
    exact = np.flatnonzero(bound > below)
    for first, last in _runs(exact):
        begin, end = first * PEAK_SPAN, min(length, (last + 1) * PEAK_SPAN)
        lead, stop = max(0, begin - FILTER_MARGIN), min(length, end + FILTER_MARGIN)
        peaks[begin:end] = _oversampled(block[:, lead:stop])[begin - lead:end - lead]
    return peaks


def _oversampled(block: np.ndarray) -> np.ndarray:
    upsampled = resample(torch.from_numpy(np.ascontiguousarray(block)), 1, OVERSAMPLE)
    magnitude = upsampled.abs().amax(dim=0).numpy()
    length = block.shape[1]
    return magnitude[: length * OVERSAMPLE].reshape(length, OVERSAMPLE).max(axis=1)


def _runs(indices: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive runs in sorted ``indices``, as (first, last) pairs."""
    if len(indices) == 0:
        return []
    breaks = np.flatnonzero(np.diff(indices) > 1)
    return list(zip(indices[np.r_[0, breaks + 1]], indices[np.r_[breaks, len(indices) - 1]]))


class Limiter:
    """A streaming look-ahead peak limiter, one gain for all channels.

    ``process`` takes blocks ``[C, T]`` in order and returns the limited
    signal delayed by what it holds back (the look-ahead and a filter
    margin); ``flush`` returns the rest. In total, exactly the input's length
    comes out, aligned with it.
    """

    def __init__(self, sample_rate: int, ceiling: float, oversample: bool = True):
        self.nominal_ceiling = ceiling
        self.ceiling = ceiling * 10 ** (-SAFETY_DB / 20)
        self.lookahead = max(1, round(LOOKAHEAD_S * sample_rate))
        self.decay = math.exp(-1.0 / (RELEASE_S * sample_rate))  # of the gain reduction, per sample
        self.oversample = oversample
        self.hold = self.lookahead + FILTER_MARGIN
        self.pending: np.ndarray | None = None
        self.lead: np.ndarray | None = None  # samples already out, for the filter's reach
        self.history = np.ones(self.lookahead, dtype=np.float64)  # last look-ahead minima
        self.reduction = 0.0  # 1 - gain of the last sample out
        self.started = False
        self.engaged = False  # whether the gain ever went under 1

    def process(self, block: np.ndarray) -> np.ndarray:
        joined = block if self.pending is None else np.concatenate([self.pending, block], axis=1)
        ready = joined.shape[1] - self.hold
        if ready <= 0:
            self.pending = joined
            return joined[:, :0]
        out = self._limit(joined, ready)
        self.pending = joined[:, ready:]
        return out

    def flush(self) -> np.ndarray:
        if self.pending is None or self.pending.shape[1] == 0:
            return np.zeros((0 if self.pending is None else self.pending.shape[0], 0),
                            dtype=np.float32)
        out = self._limit(self.pending, self.pending.shape[1])
        self.pending = None
        return out

    def _limit(self, joined: np.ndarray, ready: int) -> np.ndarray:
        """Gain for the first ``ready`` samples of ``joined``; the rest only
        looks ahead. The oversampling filter's lead-in (``FILTER_MARGIN`` samples before
        ``ready``) comes from the samples already let out."""
        if self.oversample:
            lead = 0 if self.lead is None else self.lead.shape[1]
            context = joined if self.lead is None else np.concatenate([self.lead, joined], axis=1)
            peaks = true_peak(context, below=self.ceiling)[lead:]
            self.lead = joined[:, max(0, ready - FILTER_MARGIN):ready]
        else:
            peaks = np.abs(joined).max(axis=0)
        # A signal within the ceiling passes exactly as it is; one that goes
        # over it is brought under the ceiling less the safety margin.
        if peaks.max(initial=0.0) <= self.nominal_ceiling and self.reduction < 1e-9 \
                and self.history.min() >= 1.0:
            self.history[:] = 1.0
            return joined[:, :ready].astype(np.float32, copy=False)
        wanted = np.minimum(1.0, self.ceiling / np.maximum(peaks, 1e-30))
        # Forward-looking minimum over the look-ahead, then its moving average
        # over the same length: the gain is at or under what every sample
        # wants, and reaches it gradually, the look-ahead before the peak.
        from scipy.ndimage import minimum_filter1d  # only once the limiter has work

        span = self.lookahead + 1
        minimum = minimum_filter1d(wanted, span, mode="constant", cval=1.0,
                                   origin=-(span // 2))[:ready]
        if not self.started:  # nothing comes before the file: start already down
            self.history[:] = minimum[0]
            self.started = True
        series = np.concatenate([self.history, minimum])
        cumulative = np.concatenate([[0.0], np.cumsum(series)])
        smooth = (cumulative[self.lookahead + 1:] - cumulative[:-self.lookahead - 1]) \
            / (self.lookahead + 1)
        smooth = smooth[-ready:]
        self.history = series[-self.lookahead:]
        gain = 1.0 - self._released(1.0 - smooth)
        self.engaged = self.engaged or bool(gain.min() < 1.0)
        return (joined[:, :ready] * gain).astype(np.float32)

    def _released(self, reduction: np.ndarray) -> np.ndarray:
        """The gain reduction held and let go exponentially:
        ``r[n] = max(wanted[n], decay * r[n-1])``, as a running maximum in
        the log domain (no loop over samples)."""
        steps = np.arange(1, len(reduction) + 1, dtype=np.float64)
        log_decay = math.log(self.decay)
        with np.errstate(divide="ignore"):
            scaled = np.log(reduction) - steps * log_decay
            start = math.log(self.reduction) if self.reduction > 0 else -math.inf
        held = np.maximum.accumulate(np.maximum(scaled, start))
        released = np.exp(held + steps * log_decay)
        self.reduction = float(released[-1])
        return released


class Output:
    """One output file written in order, through the limiter its settings
    call for (a true-peak ceiling, or full scale under ``clip="limit"``)
    and the clip policy. ``write`` takes ``[C, T]`` blocks, ``finish`` flushes
    the limiter; ``on_block`` sees every block as written (for meters)."""

    def __init__(self, target: str, sample_rate: int, channels: int, fmt: str, subtype: str,
                 finishing: Finishing, stdout: BinaryIO | None = None, on_block=None):
        self.target, self.subtype, self.finishing = target, subtype, finishing
        self.on_block = on_block
        self.clipped = 0
        self.writer = AtomicWriter(target, sample_rate, channels, fmt, subtype, stdout)
        try:
            ceiling = finishing.ceiling_dbtp()
            self.limiter = None
            if ceiling is not None:
                self.limiter = Limiter(sample_rate, min(10 ** (ceiling / 20), FULL_SCALE))
            elif subtype not in FLOAT_SUBTYPES and finishing.clip == "limit":
                self.limiter = Limiter(sample_rate, FULL_SCALE, oversample=False)
        except BaseException:  # Ctrl-C before the caller holds this output to abort it
            self.writer.abort()
            raise

    def write(self, block: np.ndarray) -> None:
        self._emit(self.limiter.process(block) if self.limiter else block)

    def finish(self) -> None:
        """Everything written; the file keeps its temporary name until
        :meth:`commit` (so it can be checked first)."""
        if self.limiter is not None:
            self._emit(self.limiter.flush())
        self.writer.close()

    def commit(self) -> None:
        self.writer.commit()

    def abort(self) -> None:
        self.writer.abort()

    def _emit(self, block: np.ndarray) -> None:
        if self.finishing.clip == "error" and self.subtype not in FLOAT_SUBTYPES:
            over = int(np.count_nonzero(np.abs(block) > 1.0))
            if over:
                raise FileError(self.target, f"{over} samples would clip in this block "
                                             f"(--clip error); use --clip limit or lower "
                                             f"the level")
        if self.on_block is not None:
            self.on_block(block)
        self.clipped += self.writer.write(block)


@dataclass
class Finished:
    """What finishing did to one file."""

    clipped: int
    gain_db: float | None
    leveling: Leveling | None = None


def finish(staging: Path, source: Path, target: str, info, fmt: str, subtype: str,
           finishing: Finishing, input_meters=None, output_meters=None,
           stdout: BinaryIO | None = None) -> Finished:
    """Write ``target`` from the float ``staging`` copy of the enhanced file:
    gain to the loudness target, limiter, clip policy, and the residue
    (``source`` minus the enhanced signal). ``input_meters`` and
    ``output_meters`` (``add([C, T])``) see the input and the output on the
    way, so neither is read again to be measured."""
    from denoise.engine.metrics import LoudnessMeter

    sample_rate, channels = info.sample_rate, info.channels
    target_lufs = finishing.target_lufs(channels)
    leveling = staging_leveling(staging, finishing.leveler_max_gain_db) if finishing.levels() \
        else None
    gain_db = None
    if target_lufs is not None:
        measured = staging_loudness(staging, leveling)
        if measured is None:
            raise FileError(target, "cannot normalise loudness: the output is silent or "
                                    "shorter than 400 ms")
        gain_db = target_lufs - measured
    residue = (AtomicWriter(residue_path(target), sample_rate, channels, fmt, subtype)
               if finishing.residue else None)
    read_input = residue is not None or input_meters is not None
    tried: list[tuple[float, float]] = []  # (gain, loudness reached)
    output = None
    try:
        for attempt in range(LOUDNESS_ATTEMPTS):
            loudness = LoudnessMeter(sample_rate, channels) if target_lufs is not None else None
            if output_meters is not None:
                output_meters.reset()
            meters = [meter for meter in (loudness, output_meters) if meter is not None]
            output = Output(target, sample_rate, channels, fmt, subtype, finishing, stdout,
                            on_block=lambda block: [meter.add(block.T) for meter in meters])
            first = attempt == 0
            _play(staging, source if read_input and first else None, output, sample_rate, gain_db,
                  residue if first else None, input_meters if first else None, leveling)
            output.finish()
            if target_lufs is None or not output.limiter or not output.limiter.engaged:
                break  # a gain alone moves the loudness by exactly that gain
            reached = loudness.loudness()[0]
            if reached is None or abs(reached - target_lufs) <= LOUDNESS_TOLERANCE_LU \
                    or attempt == LOUDNESS_ATTEMPTS - 1:
                break
            tried.append((gain_db, reached))
            gain_db = _corrected_gain(tried, target_lufs)
            output.abort()
        output.commit()
        if residue is not None:
            residue.commit()
    except BaseException:
        for writer in (output, residue):
            if writer is not None:
                writer.abort()
        raise
    return Finished(output.clipped, gain_db, leveling)


def _staging_blocks(audio: sf.SoundFile):
    """The staging copy in ``[T, C]`` blocks, each with its first sample."""
    start = 0
    for block in audio.blocks(blocksize=round(BLOCK_S * audio.samplerate), dtype="float32",
                              always_2d=True):
        check_stop()
        yield start, block
        start += len(block)


def staging_leveling(staging: Path, max_gain_db: float) -> Leveling:
    """The leveler's gain for the staging copy."""
    with sf.SoundFile(str(staging)) as audio:
        return plan_leveling((block.T for _, block in _staging_blocks(audio)), audio.samplerate,
                             audio.channels, max_gain_db)


def staging_loudness(staging: Path, leveling: Leveling | None = None) -> float | None:
    """The integrated loudness of the staging copy, levelled where asked
    (``None``: silent or shorter than a gating block)."""
    from denoise.engine.metrics import LoudnessMeter

    with sf.SoundFile(str(staging)) as audio:
        meter = LoudnessMeter(audio.samplerate, audio.channels)
        for start, block in _staging_blocks(audio):
            if leveling is not None:
                block = block * leveling.gains(start, len(block), audio.samplerate)[:, None]
            meter.add(block)
    return meter.loudness()[0]


def _play(staging: Path, source: Path | None, output: Output, sample_rate: int,
          gain_db: float | None, residue: AtomicWriter | None, input_meters,
          leveling: Leveling | None) -> None:
    """One pass over the staging copy (and, where asked, the input beside
    it) into ``output``. Meters take ``[T, C]`` blocks, as files give them."""
    scale = np.float32(10 ** (gain_db / 20)) if gain_db is not None else None
    with sf.SoundFile(str(staging)) as enhanced, \
            (sf.SoundFile(str(source)) if source is not None else _Nothing()) as original:
        for start, data in _staging_blocks(enhanced):
            block = data.T
            if source is not None:
                before = original.read(len(data), dtype="float32", always_2d=True)
                if residue is not None:
                    residue.write(before.T - block)
                if input_meters is not None:
                    input_meters.add(before)
            if leveling is not None:
                block = block * leveling.gains(start, block.shape[-1], sample_rate)
            output.write(block * scale if scale is not None else block)


class _Nothing:
    """Stands in for the input file when it need not be read."""

    def __enter__(self):
        return self

    def __exit__(self, *_):
        return False


def _corrected_gain(tried: list[tuple[float, float]], target_lufs: float) -> float:
    """The limiter makes loudness grow slower than the gain: step along the
    slope seen so far (secant), at first as if it were 1 dB/dB."""
    gain_db, reached = tried[-1]
    slope = 1.0
    if len(tried) > 1 and tried[-1][0] != tried[-2][0]:
        slope = (tried[-1][1] - tried[-2][1]) / (tried[-1][0] - tried[-2][0])
    return gain_db + (target_lufs - reached) / min(1.0, max(slope, 0.1))


def residue_path(target: str) -> str:
    """``talk.residue.wav`` beside ``talk.wav``."""
    path = Path(target)
    return str(path.with_name(f"{path.stem}.residue{path.suffix}"))
