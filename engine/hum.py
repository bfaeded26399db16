"""Mains hum and buzz: found per channel over a whole file, tracked through
its drift, and subtracted as a harmonic model.

**Detection.** A mains fundamental sits within half a hertz of 50 or 60 Hz; its
harmonics are lines that stand above the spectrum around them in every
second of the file, where speech's harmonics move. Each second (a Hann
frame, zero-padded 4x) gives a log spectrum less its median over ±25 Hz
(how far each bin stands above its neighbourhood); a candidate fundamental
scores the sum, over its first 20 harmonics, of what stands more than
6 dB up (``LINE_DB``), averaged over 5 s so that a line present in every
frame wins over speech peaks that meet a harmonic by chance. Harmonics up
to 8 kHz that stand more than 6 dB up in a quarter of the frames with hum
(in the pauses, at least) are the audible ones, and only those are
removed; a file (channel) with none, or with hum in fewer than 3 s,
passes bit for bit, as does one whose harmonics are not a mains hum's
(:func:`_mains_like`: notes of music and engines). (The thresholds were set
on clean speech of the shared recordings: the score's highest 5 s without
hum is 7.7; with 8 harmonics 45 dB below the speech, 10 at the least; on
their music, the orchestra, the piano and the jazz guitar, nothing is
found.)

**Tracking.** The hum is a sum of harmonics of one phase ``phi(t)``:
``h(t) = sum_k 2 Re(A_k(t) exp(j k phi(t)))`` with slowly changing complex
amplitudes ``A_k``. Complex demodulation (the heterodyne method; each
harmonic shifted to 0 Hz by ``exp(-j k phi)`` and low-passed) measures
them: averaged over boxes of two mains periods, the other harmonics, at
whole multiples of the mains frequency from each, cancel. Starting from
the fundamental found above (each frame's best, fitted smoothly), a drift
makes each ``A_k`` turn at ``k`` times the frequency error, so the turn of
the low harmonics from box to box is the error's rate; a second
demodulation with the corrected phase gives every harmonic, and their
phases against their steady phases give what is left of the error. The
measurements are weighted by inverse variance (the harmonic's steady
power, the quietest fifth of its magnitude over 10 s, over the power of
what is not hum: speech, most of all) and fitted with the Whittaker
smoother (Eilers 2003, "A perfect smoother", Anal. Chem. 75(14)), so
pauses carry the track through words, with no lag.

**Removal.** Each ``A_k`` is its boxes averaged over ``SMOOTH_S``
(Gaussian), each box weighted by the inverse of the power that is not
hum about it, so the hum under a word is taken from the
pauses around it and the word stays. Subtracting a low-passed
demodulation is the adaptive noise canceller with a sinusoidal reference
of Glover (1977), "Adaptive noise cancelling applied to sinusoidal
interferences", IEEE Trans. ASSP 25(6): a notch at each tracked harmonic
whose width the smoothing sets (a fraction of a hertz), which follows the
interference as its reference does. The model is a function of the
sample's position in the file, so chunks of a long file give exactly what
the whole file would: there are no seams. Offline only: the detector
and the smoothing look at the whole file.

Constants: the 50/60 Hz mains and the search of ±1 Hz are the power
grids'; every other constant is this module's choice, set on the shared
recordings (bench/repair.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.ndimage import gaussian_filter1d, percentile_filter, uniform_filter1d
from scipy.sparse.linalg import spsolve

MAINS_HZ = (50.0, 60.0)
# A fundamental within ACCEPT_HZ of its mains frequency is hum (grids hold
# theirs within 0.2 Hz; tape and clock errors add some). The search reaches
# further so that a note just outside is found where it is, not at the
# edge of the window (an orchestra's G1 at 49.5 Hz was).
SEARCH_HZ = 1.0
ACCEPT_HZ = 0.5
GRID_HZ = 0.005
FRAME_S = 1.0  # detection frames
PAD = 4  # zero-padding of the detection frames: 0.25 Hz bins
NEIGHBOURHOOD_HZ = 25.0  # the floor a line stands above: the median over +-this
FLOOR_STEP_HZ = 5.0
LINE_DB = 6.0  # a harmonic this far above its neighbourhood is audible
LOW_HARMONICS = 10
LOWEST_HARMONIC = 3  # see _mains_like
RUN_FRACTION = 0.5  # see _mains_like
SCORE_HARMONICS = 20
SCORE_FRAMES = 5
MIN_SCORE = 9.0  # see the module's docstring
MIN_PRESENT_S = 3.0
TOP_HZ = 8000.0  # buzz reaches far up; above this speech masks what is left
TRACK_PERIODS = 2  # demodulation boxes of two mains periods
TRACK_HARMONICS = 8  # the harmonics whose turn measures the drift
TRACK_SMOOTH_S = 0.2
# The envelopes' Gaussian smoothing: longer takes less of the speech,
# shorter follows what error the tracker leaves (1 s: bench/repair.py).
SMOOTH_S = 1.0
SPREAD_S = 0.1  # the span over which what moves about a harmonic is measured
QUIET_S = 5.0
QUIET_PERCENTILE = 20
FIT_HARMONICS = (8, 20, 10_000)  # the phase fit's passes: the harmonics each takes
REFERENCE_S = 5.0
TRACK_STIFFNESS = 5.0 ** 4  # the detection frames' track: a cut-off near 5 s
RATE_STIFFNESS = 256.0 ** 2  # the frequency error's: a cut-off near 4 s
FIT_STIFFNESS = 256.0  # in boxes: a cut-off near 1 s where the weights are typical
GATE_S = 0.25  # the model fades in and out over this where hum starts or ends


@dataclass(frozen=True)
class Hum:
    """One channel's hum: its harmonics' complex envelopes on a grid of
    ``frame`` samples, and the fundamental's phase at each grid point,
    linear between them. ``start``: the file sample of grid point 0 (a
    slice of a file's hum for one chunk starts later)."""

    sample_rate: int
    frame: int
    start: int
    harmonics: np.ndarray  # [K] harmonic numbers
    phase: np.ndarray  # [F + 1] float64, radians
    envelopes: np.ndarray  # [F + 1, K] complex64
    fundamental_hz: float
    present_s: float
    reduction_db: float  # the median harmonic's, in the pauses (see _reduction_db)

    def describe(self) -> str:
        return (f"hum at {self.fundamental_hz:.2f} Hz, {len(self.harmonics)} harmonic"
                f"{'s' if len(self.harmonics) != 1 else ''} (to "
                f"{self.harmonics.max() * self.fundamental_hz:.0f} Hz), "
                f"in {self.present_s:.0f} s, {self.reduction_db:.0f} dB lower in the pauses")

    def span(self, start: int, stop: int) -> Hum:
        """The part of this hum that samples ``[start, stop)`` need."""
        first = max(0, (start - self.start) // self.frame)
        last = min(len(self.phase) - 1, -(-(stop - self.start) // self.frame))
        last = max(last, first)
        return Hum(self.sample_rate, self.frame, self.start + first * self.frame, self.harmonics,
                   self.phase[first: last + 1], self.envelopes[first: last + 1],
                   self.fundamental_hz, self.present_s, self.reduction_db)

    def waveform(self, start: int, stop: int) -> np.ndarray:
        """The hum at file samples ``[start, stop)``, float64 (zeros where
        the model has none)."""
        out = np.zeros(stop - start)
        position = np.arange(start, stop) - self.start
        inside = (position >= 0) & (position < (len(self.phase) - 1) * self.frame)
        if not inside.any():
            return out
        position = position[inside]
        index, within = np.divmod(position, self.frame)
        fraction = within / self.frame
        phase = self.phase[index] + (self.phase[index + 1] - self.phase[index]) * fraction
        envelopes = (self.envelopes[index] * (1 - fraction)[:, None]
                     + self.envelopes[index + 1] * fraction[:, None])
        turns = np.exp(1j * phase[:, None] * self.harmonics[None, :])
        out[inside] = 2 * np.real((envelopes * turns).sum(axis=1))
        return out


def remove_hum(audio: np.ndarray, start: int, hums: list[Hum | None]) -> np.ndarray:
    """``audio`` ``[C, T]`` (file samples from ``start``) less each row's
    hum; rows without hum are passed as they are."""
    if all(hum is None for hum in hums):
        return audio
    out = np.array(audio, dtype=np.float32, copy=True)
    for row, hum in enumerate(hums):
        if hum is not None:
            out[row] = (audio[row] - hum.waveform(start, start + audio.shape[-1])).astype(np.float32)
    return out


def find_hums(blocks: Callable[[], Iterable[np.ndarray]], sample_rate: int, rows: int,
              mains: str = "auto") -> list[Hum | None]:
    """Each row's hum over a whole signal, or ``None`` where it has none.

    ``blocks()`` gives the signal as ``[rows, n]`` blocks, again each time
    it is called (it is read three times). ``mains``: ``auto``, ``50`` or
    ``60``."""
    candidates = MAINS_HZ if mains == "auto" else (float(mains),)
    spectra = Spectra(sample_rate)
    found = detect(spectra, lambda: spectra(blocks()), rows, candidates)
    return [None if item is None else _track(blocks, sample_rate, row, item)
            for row, item in enumerate(found)]


@dataclass
class Detection:
    fundamental_hz: np.ndarray  # [frames] per detection frame
    harmonics: np.ndarray
    present: np.ndarray  # [frames] bool


def _frames(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """``[rows, size]`` frames, one after another, out of blocks of any
    length; a last part shorter than ``size`` is dropped."""
    held = None
    for block in blocks:
        block = np.asarray(block, dtype=np.float64)
        held = block if held is None else np.concatenate([held, block], axis=-1)
        count = held.shape[-1] // size
        for index in range(count):
            yield held[:, index * size: (index + 1) * size]
        held = held[:, count * size:]


class Spectra:
    """Detection frames' log spectra, less their neighbourhoods' medians."""

    def __init__(self, sample_rate: int):
        self.size = round(FRAME_S * sample_rate)
        self.length = PAD * self.size
        self.bins_per_hz = self.length / sample_rate
        self.top = min(TOP_HZ, 0.45 * sample_rate)
        self.bins = int(self.top * self.bins_per_hz) + 2
        self.window = np.hanning(self.size)
        self.neighbourhood = int(2 * NEIGHBOURHOOD_HZ * self.bins_per_hz) | 1

    def __call__(self, blocks) -> Iterator[np.ndarray]:
        for frame in _frames(blocks, self.size):
            yield self.standing(frame)

    def standing(self, frame: np.ndarray) -> np.ndarray:
        """How far each bin of one frame ``[rows, size]`` stands above its
        neighbourhood, dB, ``[rows, bins]``."""
        power = np.abs(np.fft.rfft(frame * self.window, self.length, axis=-1)[:, :self.bins]) ** 2
        db = 10 * np.log10(power + 1e-20)
        return db - self._floor(db)

    def _floor(self, db: np.ndarray) -> np.ndarray:
        """The median over each bin's neighbourhood, ``[rows, bins]``: taken
        every ``FLOOR_STEP_HZ`` and linear between (a median at every bin
        costs ten times as much and moves the heights by a fraction of a dB)."""
        half = self.neighbourhood // 2
        padded = np.pad(db, ((0, 0), (half, half)), mode="edge")
        step = max(1, round(FLOOR_STEP_HZ * self.bins_per_hz))
        windows = np.lib.stride_tricks.sliding_window_view(padded, self.neighbourhood, axis=-1)
        centres = np.arange(0, db.shape[-1], step)
        medians = np.median(windows[:, centres], axis=-1)
        bins = np.arange(db.shape[-1])
        return np.stack([np.interp(bins, centres, row) for row in medians])

    def heights(self, standing: np.ndarray, fundamentals: np.ndarray, count: int) -> np.ndarray:
        """How far each of the first ``count`` harmonics of each of
        ``fundamentals`` ``[..., G]`` stands up, ``[rows, ..., G, count]``."""
        position = fundamentals[..., None] * np.arange(1, count + 1) * self.bins_per_hz
        low = np.minimum(np.floor(position).astype(int), self.bins - 2)
        fraction = position - low
        return standing[:, low] * (1 - fraction) + standing[:, low + 1] * fraction


def detect(spectra: Spectra, frames: Callable[[], Iterable[np.ndarray]], rows: int,
           candidates) -> list[Detection | None]:
    """Each row's hum, or ``None``, from the detection frames' spectra that
    ``frames()`` gives (again each time it is called: it is read twice)."""
    grids = [np.arange(m - SEARCH_HZ, m + SEARCH_HZ + GRID_HZ / 2, GRID_HZ) for m in candidates]
    scores = [[] for _ in candidates]  # per candidate: [frames][rows, G]
    for standing in frames():
        for which, grid in enumerate(grids):
            heights = spectra.heights(standing, grid, SCORE_HARMONICS)
            scores[which].append(np.clip(heights - LINE_DB, 0, None).sum(axis=-1))
    if not scores[0]:
        return [None] * rows
    # each row's best candidate, and its fundamental in each frame
    choice = []
    for row in range(rows):
        best = None
        for which, grid in enumerate(grids):
            surface = uniform_filter1d(np.array([s[row] for s in scores[which]]), SCORE_FRAMES,
                                       axis=0, mode="nearest")
            present = surface.max(axis=1) > MIN_SCORE
            strength = surface.max(axis=1)[present].sum()
            if present.sum() * FRAME_S < MIN_PRESENT_S or (best is not None and strength <= best[0]):
                continue
            peak = grid[surface.argmax(axis=1)]
            centre = np.median(peak[present])
            if abs(centre - candidates[which]) > ACCEPT_HZ:
                continue
            # each frame's best, fitted smoothly with the frames' scores
            # as weights: frames that speech confuses lean on the others
            weight = np.where(present, surface.max(axis=1), 0.0)
            fundamental = peak if len(peak) < 3 else _whittaker(
                peak - centre, _normalised(weight), TRACK_STIFFNESS) + centre
            best = (strength, fundamental, present)
        choice.append(best)
    if all(item is None for item in choice):
        return [None] * rows
    # every harmonic's height along each row's fundamental
    top = [None if item is None else int(spectra.top // item[1].max()) for item in choice]
    heights = [[] for _ in range(rows)]
    for index, standing in enumerate(frames()):
        for row, item in enumerate(choice):
            if item is not None:
                heights[row].append(spectra.heights(standing[row: row + 1],
                                                    item[1][index: index + 1], top[row])[0, 0])
    found = []
    for row, item in enumerate(choice):
        if item is None:
            found.append(None)
            continue
        _, fundamental, present = item
        harmonics = _audible(np.array(heights[row])[present])
        found.append(Detection(fundamental, harmonics, present) if _mains_like(harmonics)
                     else None)
    return found


def _mains_like(harmonics: np.ndarray) -> bool:
    """Whether audible harmonics are a mains hum's: one of the first
    ``LOWEST_HARMONIC`` among them (engines and drones have series without),
    and at least ``RUN_FRACTION`` of the first ten up to the highest of them
    (a run, as rectifiers and transformers make; a note of music whose own
    fundamental is a multiple of the mains, piano's F4 at 7 x 49.9 Hz, lights
    up a sparse set: 2, 7, 14, 21)."""
    if not len(harmonics) or harmonics.min() > LOWEST_HARMONIC:
        return False
    span = min(LOW_HARMONICS, int(harmonics.max()))
    return (harmonics <= span).sum() >= RUN_FRACTION * span


def _audible(heights: np.ndarray) -> np.ndarray:
    """The harmonic numbers that stand ``LINE_DB`` above their
    neighbourhood, from their heights in the frames with hum ``[F, K]``:
    the first ``LOW_HARMONICS`` in a quarter of the frames (the pauses,
    at least), the higher ones in half, since among a hundred of them a
    few stand up in a quarter of the frames by chance."""
    low = np.percentile(heights[:, :LOW_HARMONICS], 75, axis=0) > LINE_DB
    high = np.median(heights[:, LOW_HARMONICS:], axis=0) > LINE_DB
    return np.flatnonzero(np.concatenate([low, high])) + 1


def _track(blocks, sample_rate: int, row: int, found: Detection) -> Hum:
    harmonics, present = found.harmonics, found.present
    fundamental = float(np.median(found.fundamental_hz[present]))
    frame = round(TRACK_PERIODS * sample_rate / fundamental)
    low = harmonics[harmonics <= TRACK_HARMONICS]
    if not len(low):
        low = harmonics[:1]
    # pass 1: the drift, from the low harmonics' turn about the frames' fundamentals
    box_s = frame / sample_rate
    def coarse(count):
        centres = (np.arange(count) + 0.5) * box_s
        index = np.minimum((centres / FRAME_S).astype(int), len(found.fundamental_hz) - 1)
        return np.concatenate([[0.0], np.cumsum(2 * np.pi * found.fundamental_hz[index] * box_s)])
    boxes = _demodulate(_rows(blocks(), row), frame, coarse, low)
    phase = coarse(len(boxes))
    weights = _presence(present, len(boxes), frame, sample_rate)
    phase = phase + _phase_error(boxes, low, weights, box_s)
    # pass 2: every harmonic, demodulated with the phase that follows the drift
    boxes = _demodulate(_rows(blocks(), row), frame, lambda count: phase[: count + 1], harmonics)
    error = _phase_fit(boxes, harmonics, weights, box_s)
    # what is left of the drift is small: it turns each box as a whole
    boxes = boxes * np.exp(-1j * np.outer(error, harmonics))
    padded = np.concatenate([error[:1], error, error[-1:]])
    phase = phase + 0.5 * (padded[:-1] + padded[1:])
    envelopes = _steady(boxes, SMOOTH_S / box_s, SPREAD_S / box_s, box_s, weights)
    # no model where there is no hum, and a short ramp at its edges
    gate = gaussian_filter1d(weights, GATE_S * sample_rate / frame, mode="constant", truncate=2.0)
    envelopes = envelopes * gate[:, None]
    reduction = _reduction_db(boxes, boxes - envelopes, weights, box_s)
    # the envelopes belong to the boxes' centres; the grid points are their
    # edges: the mean of the two boxes beside each point
    padded = np.concatenate([envelopes[:1], envelopes, envelopes[-1:]])
    at_points = 0.5 * (padded[:-1] + padded[1:])
    return Hum(sample_rate, frame, 0, harmonics.astype(np.int64), phase,
               at_points.astype(np.complex64), fundamental,
               float(present.sum() * FRAME_S), reduction)


def _reduction_db(before: np.ndarray, after: np.ndarray, present: np.ndarray,
                  box_s: float) -> float:
    """How far the removal brings the hum down, as the median harmonic's
    line in the pauses: each harmonic's demodulation averaged over
    ``SMOOTH_S`` (a band of about a hertz about the line), before and after,
    its quietest fifth over the boxes with hum (the pauses, where speech
    does not cover it); what noise lies in that band bounds the figure."""
    inside = present > 0
    if not inside.any():
        return 0.0
    sigma = SMOOTH_S / box_s
    def pauses(boxes):
        return np.percentile(np.abs(_smooth(boxes, sigma)[inside]) ** 2, QUIET_PERCENTILE, axis=0)
    ratio = pauses(before) / np.maximum(pauses(after), 1e-30)
    return float(np.median(10 * np.log10(np.maximum(ratio, 1e-30))))


def _rows(blocks, row: int) -> Iterator[np.ndarray]:
    for block in blocks:
        yield np.asarray(block)[row: row + 1]


def _demodulate(blocks, frame: int, phases: Callable[[int], np.ndarray],
                harmonics: np.ndarray) -> np.ndarray:
    """Each harmonic's mean of ``x exp(-j k phi)`` over each box of
    ``frame`` samples, ``[boxes, K]``; ``phases(count)`` gives ``phi`` at
    the first ``count + 1`` box edges (linear between)."""
    out, done = [], 0
    batch = 64
    held = []
    for box in _frames(blocks, frame):
        held.append(box[0])
        if len(held) == batch:
            out.append(_boxes(np.stack(held), done, frame, phases, harmonics))
            done += len(held)
            held = []
    if held:
        out.append(_boxes(np.stack(held), done, frame, phases, harmonics))
    return np.concatenate(out) if out else np.zeros((0, len(harmonics)), np.complex128)


def _boxes(samples: np.ndarray, first: int, frame: int, phases, harmonics) -> np.ndarray:
    edges = phases(first + len(samples))[first:]
    fraction = np.arange(frame) / frame
    phase = edges[:-1, None] + (edges[1:] - edges[:-1])[:, None] * fraction[None, :]
    turns = np.exp(-1j * phase[..., None] * harmonics)  # [B, frame, K]
    return np.einsum("bf,bfk->bk", samples, turns) / frame


def _presence(present: np.ndarray, boxes: int, frame: int, sample_rate: int) -> np.ndarray:
    """The detection frames' verdict on the demodulation boxes' grid."""
    centres = (np.arange(boxes) + 0.5) * frame / sample_rate
    index = np.minimum((centres / FRAME_S).astype(int), len(present) - 1)
    return present[index].astype(np.float64)


def _phase_error(boxes: np.ndarray, harmonics: np.ndarray, weights: np.ndarray,
                 box_s: float) -> np.ndarray:
    """The fundamental's phase error at each box edge, ``[B + 1]``, from the
    harmonics' turn between neighbouring boxes, held where there is no hum.

    Each harmonic's turn, divided by ``k``, estimates the error's rate; the
    estimates are weighted by their inverse variance (``k`` squared times
    the harmonic's steady power over the power of what is not hum, speech
    above all), and fitted with a Whittaker smoother with the same
    weights, so that pauses carry the track through words."""
    sigma = TRACK_SMOOTH_S / box_s
    smooth = _smooth(boxes, sigma)
    hum, interference = _hum_and_interference(boxes, smooth, sigma, box_s)
    turn = smooth[1:] * np.conj(smooth[:-1])
    confidence = harmonics**2 * hum**2 / interference
    confidence = np.minimum(confidence[1:], confidence[:-1])
    confidence = confidence * np.minimum(weights[1:], weights[:-1])[:, None]
    total = confidence.sum(axis=1)
    measured = (np.angle(turn) / harmonics * confidence).sum(axis=1) / np.maximum(total, 1e-30)
    rate = _whittaker(measured, _normalised(total), RATE_STIFFNESS)
    error = np.concatenate([[0.0], np.cumsum(rate)])
    # the turn between box centres belongs to the edge between them
    return np.concatenate([error[:1], 0.5 * (error[1:] + error[:-1]), error[-1:]])


def _hum_and_interference(boxes: np.ndarray, smooth: np.ndarray, sigma: float,
                          box_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Each harmonic's steady magnitude (the quietest fifth of its smoothed
    magnitude over ``QUIET_S`` around each box: hum does not come and go,
    speech does) and the power of what is not hum at each box: what
    moves from box to box, and how far the smoothed magnitude stands above
    the steady one. Both ``[B, K]``."""
    spread = gaussian_filter1d(np.abs(boxes - smooth) ** 2, sigma, axis=0)
    magnitude = np.abs(smooth)
    span = max(1, round(QUIET_S / box_s))
    step = max(1, span // 8)
    coarse = percentile_filter(magnitude[::step], QUIET_PERCENTILE,
                               size=(max(1, 2 * span // step + 1), 1), mode="nearest")
    positions = np.arange(len(boxes))
    hum = np.stack([np.interp(positions, positions[::step], column) for column in coarse.T], axis=1)
    excess = np.maximum(magnitude - hum, 0.0) ** 2
    return hum, spread + excess + 1e-30


def _steady(boxes: np.ndarray, sigma: float, spread_sigma: float, box_s: float,
            present: np.ndarray | None = None) -> np.ndarray:
    """Each harmonic's envelope, ``[B, K]``: its boxes averaged over
    ``sigma`` boxes (Gaussian), each box weighted by the inverse of the power
    that is not hum about it (:func:`_hum_and_interference`), so that
    the hum under a word is taken from the pauses around it rather than
    from the word, and the word is left in place."""
    weights = 1.0 / _hum_and_interference(boxes, _smooth(boxes, spread_sigma), spread_sigma,
                                          box_s)[1]
    if present is not None:
        weights = weights * present[:, None]
    return _smooth(boxes * weights, sigma) / np.maximum(gaussian_filter1d(weights, sigma, axis=0),
                                                        1e-30)


def _phase_fit(boxes: np.ndarray, harmonics: np.ndarray, weights: np.ndarray,
               box_s: float) -> np.ndarray:
    """What is left of the fundamental's phase error at each box centre,
    ``[B]``, once the frequency-locked loop has followed the drift.

    Each harmonic's phase over ``TRACK_SMOOTH_S`` against its steady phase
    over ``REFERENCE_S``, divided by ``k``, is a measurement of the error;
    they are combined with inverse-variance weights (``k`` squared times
    the harmonic's steady power over what is not hum) and fitted with a
    Whittaker smoother (a second-difference penalty: where speech leaves no
    measurement, the fit runs smoothly through from the pauses). Rather
    than integrating a rate, as the loop does, it measures the phase
    itself, so its error does not wander. Higher harmonics join as the
    error shrinks below what would wrap their phase."""
    error = np.zeros(len(boxes))
    sigma = TRACK_SMOOTH_S / box_s
    for highest in FIT_HARMONICS:
        rotated = boxes * np.exp(-1j * np.outer(error, harmonics))
        short = _smooth(rotated, sigma)
        hum, interference = _hum_and_interference(rotated, short, sigma, box_s)
        reference = _steady(rotated, REFERENCE_S / box_s, sigma, box_s, weights)
        deviation = np.angle(short * np.conj(reference)) / harmonics
        confidence = (harmonics**2 * hum**2 / interference * weights[:, None]
                      * (harmonics <= highest))
        total = confidence.sum(axis=1)
        measured = (deviation * confidence).sum(axis=1) / np.maximum(total, 1e-30)
        error = error + _whittaker(measured, _normalised(total), FIT_STIFFNESS)
    return error


def _normalised(weights: np.ndarray) -> np.ndarray:
    """``weights`` over their median where they are not zero, so that a
    smoother's stiffness means the same whatever the hum's level."""
    positive = weights[weights > 0]
    return weights / np.median(positive) if len(positive) else weights


def _whittaker(values: np.ndarray, weights: np.ndarray, stiffness: float) -> np.ndarray:
    """The smooth ``z`` minimising ``sum w (v - z)^2 + stiffness * sum (D2 z)^2``
    (Eilers 2003, "A perfect smoother", Anal. Chem. 75(14))."""
    count = len(values)
    if count < 3 or not weights.any():
        return np.zeros(count)
    second = sparse.diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(count - 2, count))
    system = (stiffness * (second.T @ second) + sparse.diags(weights)).tocsc()
    return spsolve(system, weights * values)


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_filter1d(values.real, sigma, axis=0) + 1j * gaussian_filter1d(
        values.imag, sigma, axis=0)
