"""Making an enhanced file ready to publish: loudness, peaks, clipping, residue.

Everything here happens after the chunks are joined, in file order:

- **Loudness** (``loudness_lufs``): the file is first written whole to a
  hidden float intermediate, its integrated loudness (ITU-R BS.1770-4) is
  measured, and it is played again through a gain to the target. If the peak
  limiter then takes the loudness more than 0.2 LU off the target, the gain
  is corrected and the file played again (at most 4 passes in all).
- **Peaks** (``true_peak_dbtp``): a look-ahead limiter on the true peak (the
  signal 4x oversampled, BS.1770 annex 2). It lowers the gain smoothly
  *before* a peak (5 ms look-ahead, so it has no attack distortion) and lets
  it recover exponentially (150 ms), one gain for all channels so the stereo
  image does not move. Below the ceiling it does nothing: the gain is exactly 1.
- **Clipping** (``clip``): a sample beyond full scale cannot be stored in an
  integer or lossy file. ``limit`` (the default) runs the limiter at full
  scale; ``report`` clips and counts the samples; ``error`` fails the file.
  Float files store such samples as they are.
- **Residue** (``residue``): what was taken away, input minus output
  (before loudness and limiting), written beside the output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from denoise.engine.audio_io import FLOAT_SUBTYPES, AtomicWriter, read_frames
from denoise.engine.choices import CLIP_MODES, PRESETS
from denoise.engine.dsp import FULL_SCALE, resample
from denoise.engine.errors import FileError
from denoise.engine.metrics import measure_file

LOOKAHEAD_S = 0.005
RELEASE_S = 0.150
OVERSAMPLE = 4
# Margin for the 4x interpolation filter at the edges of what is held back.
FILTER_MARGIN = 64
# The limiter aims this far under its ceiling, so that quantisation and the
# gain's own smooth change between samples cannot carry a peak over it.
SAFETY_DB = 0.05
LOUDNESS_TOLERANCE_LU = 0.2
LOUDNESS_ATTEMPTS = 4


@dataclass(frozen=True)
class Finishing:
    """What to do to each output once it is enhanced (all off by default,
    except that nothing is clipped: ``clip="limit"``)."""

    loudness_lufs: float | None = None
    true_peak_dbtp: float | None = None
    preset: str | None = None
    clip: str = "limit"
    residue: bool = False

    def __post_init__(self) -> None:
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

    def ceiling_dbtp(self) -> float | None:
        if self.true_peak_dbtp is not None or self.preset is None:
            return self.true_peak_dbtp
        return PRESETS[self.preset].true_peak_dbtp


def true_peak(block: np.ndarray) -> np.ndarray:
    """Per sample of ``[C, T]``: the largest magnitude over the channels and
    the 4x oversampled points from that sample to the next, ``[T]``."""
    upsampled = resample(torch.from_numpy(np.ascontiguousarray(block)), 1, OVERSAMPLE)
    magnitude = upsampled.abs().amax(dim=0).numpy()
    length = block.shape[1]
    return magnitude[: length * OVERSAMPLE].reshape(length, OVERSAMPLE).max(axis=1)


class Limiter:
    """A streaming look-ahead peak limiter, one gain for all channels.

    ``process`` takes blocks ``[C, T]`` in order and returns the limited
    signal delayed by what it holds back (the look-ahead and a filter
    margin); ``flush`` returns the rest. In total, exactly the input's length
    comes out, aligned with it.
    """

    def __init__(self, rate: int, ceiling: float, oversample: bool = True):
        self.nominal_ceiling = ceiling
        self.ceiling = ceiling * 10 ** (-SAFETY_DB / 20)
        self.lookahead = max(1, round(LOOKAHEAD_S * rate))
        self.decay = math.exp(-1.0 / (RELEASE_S * rate))  # of the gain reduction, per sample
        self.oversample = oversample
        self.hold = self.lookahead + FILTER_MARGIN
        self.pending: np.ndarray | None = None
        self.lead: np.ndarray | None = None  # samples already out, for the filter's reach
        self.history = np.ones(self.lookahead, dtype=np.float64)  # last look-ahead minima
        self.reduction = 0.0  # 1 - gain of the last sample out
        self.started = False

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
            peaks = true_peak(context)[lead:]
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
        padded = np.concatenate([wanted, np.ones(self.lookahead)])
        windows = np.lib.stride_tricks.sliding_window_view(padded, self.lookahead + 1)
        minimum = windows.min(axis=1)[:ready]
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


class OutputSink:
    """Where one file's enhanced blocks go, in order: straight to the output
    (through the limiter when needed), or through a float intermediate when
    the loudness must be measured first. Writes the residue alongside."""

    def __init__(self, target: str, source: Path, rate: int, channels: int, fmt: str,
                 subtype: str, finishing: Finishing, stdout=None):
        self.target, self.source, self.rate, self.channels = target, source, rate, channels
        self.fmt, self.subtype, self.finishing, self.stdout = fmt, subtype, finishing, stdout
        self.clipped = 0
        self.gain_db: float | None = None  # the loudness gain applied
        self.position = 0
        self.residue = (AtomicWriter(residue_path(target), rate, channels, fmt, subtype)
                        if finishing.residue else None)
        self.target_lufs = finishing.target_lufs(channels)
        self.writer: AtomicWriter | None = None
        self.limiter: Limiter | None = None
        # With a loudness target, the file is staged whole in float (in the
        # output's folder, hidden, never published) to be measured first.
        self.staging = (AtomicWriter(target, rate, channels, "W64", "FLOAT")
                        if self.target_lufs is not None else None)
        if self.staging is None:
            self.writer, self.limiter = self._output()

    def write(self, block: np.ndarray) -> None:
        """Take the next ``[C, T]`` of enhanced audio."""
        if self.residue is not None:
            original = read_frames(self.source, self.position, self.position + block.shape[1])
            self.residue.write(original - block)
        self.position += block.shape[1]
        if self.staging is not None:
            self.staging.write(block)
        else:
            self._emit(self.limiter.process(block) if self.limiter else block)

    def commit(self) -> None:
        """Finish the output (and residue) and give them their real names."""
        if self.staging is not None:
            self.staging.close()
            self._normalise()
            self.staging.abort()
        elif self.limiter is not None:
            self._emit(self.limiter.flush())
        self.writer.commit()
        if self.residue is not None:
            self.residue.commit()

    def abort(self) -> None:
        for writer in (self.writer, self.residue, self.staging):
            if writer is not None:
                writer.abort()

    def _output(self) -> tuple[AtomicWriter, Limiter | None]:
        writer = AtomicWriter(self.target, self.rate, self.channels, self.fmt, self.subtype,
                              self.stdout)
        ceiling = self.finishing.ceiling_dbtp()
        clips = self.subtype not in FLOAT_SUBTYPES
        limiter = None
        if ceiling is not None:
            limiter = Limiter(self.rate, min(10 ** (ceiling / 20), FULL_SCALE))
        elif clips and self.finishing.clip == "limit":
            limiter = Limiter(self.rate, FULL_SCALE, oversample=False)
        return writer, limiter

    def _emit(self, block: np.ndarray) -> None:
        if self.finishing.clip == "error" and self.subtype not in FLOAT_SUBTYPES:
            over = int(np.count_nonzero(np.abs(block) > 1.0))
            if over:
                raise FileError(self.target, f"{over} samples would clip in this block "
                                             f"(--clip error); use --clip limit or lower "
                                             f"the level")
        self.clipped += self.writer.write(block)

    def _normalise(self) -> None:
        """Gain the intermediate to the target loudness, through the limiter;
        once more with a corrected gain if limiting moved the loudness."""
        measured = measure_file(self.staging.temporary).loudness_lufs
        if measured is None:
            raise FileError(self.target, "cannot normalise loudness: the output is silent "
                                         "or shorter than 400 ms")
        gain_db = self.target_lufs - measured
        tried: list[tuple[float, float]] = []  # (gain, loudness reached)
        for _ in range(LOUDNESS_ATTEMPTS):
            self.gain_db = gain_db
            if self.writer is not None:
                self.writer.abort()
            self.clipped = 0
            self.writer, self.limiter = self._output()
            with sf.SoundFile(str(self.staging.temporary)) as staged:
                for data in staged.blocks(blocksize=round(30 * self.rate), dtype="float32",
                                          always_2d=True):
                    block = data.T * np.float32(10 ** (gain_db / 20))
                    self._emit(self.limiter.process(block) if self.limiter else block)
            if self.limiter is not None:
                self._emit(self.limiter.flush())
            self.writer.close()
            reached = measure_file(self.writer.temporary).loudness_lufs
            if reached is None or abs(reached - self.target_lufs) <= LOUDNESS_TOLERANCE_LU:
                break
            tried.append((gain_db, reached))
            # The limiter makes loudness grow slower than the gain: step along
            # the slope seen so far (secant), at first as if it were 1 dB/dB.
            slope = 1.0
            if len(tried) > 1 and tried[-1][0] != tried[-2][0]:
                slope = (tried[-1][1] - tried[-2][1]) / (tried[-1][0] - tried[-2][0])
            gain_db += (self.target_lufs - reached) / min(1.0, max(slope, 0.1))


def residue_path(target: str) -> str:
    """``talk.residue.wav`` beside ``talk.wav``."""
    path = Path(target)
    return str(path.with_name(f"{path.stem}.residue{path.suffix}"))
