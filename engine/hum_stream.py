"""Mains hum taken out as a stream arrives: found in the last seconds, then
followed sample by sample with no look-ahead, so it adds no latency.

**Detection** is the offline detector's (:mod:`~denoise.engine.hum`) on
the last ``DETECT_S`` seconds of one-second frames, every
``DETECT_EVERY_S`` seconds; a hum counts once ``CONFIRM`` looks in a row
find it near one fundamental (six seconds alone took notes of music and
an engine for hum; with three looks, none of the shared music and noises
is), with the harmonics all of them found, and harmonics confirmed later
join. Until then every sample passes as it came. A tracker learns for
``LEARN_S`` before its removal fades in over ``FADE_S``: a hum present
from the start is taken out from about 11 s, one that starts later about
11 s after it does.

**Removal** is the adaptive noise canceller with a sinusoidal reference
of Glover (1977), "Adaptive noise cancelling applied to sinusoidal
interferences", IEEE Trans. ASSP 25(6), made causal: each harmonic's
complex envelope is the mean of ``x exp(-j k phi)`` over boxes of two
mains periods (the other harmonics cancel over whole periods), averaged
over the past with an exponential window of ``ENVELOPE_S``, each box
weighted by the inverse of what is not hum in it (its departure from the
envelope, smoothed over ``SPREAD_S``), so that a word at a harmonic's
frequency barely moves the envelope. A sample's hum is the envelope of
the boxes before it: a prediction, never waiting for the box it is in.

**The phase** ``phi`` follows the grid's drift, which the envelopes
alone would lag at the high harmonics of a buzz: a Kalman filter of its
error and the error's rate, with the discrete white-noise acceleration
model (Bar-Shalom, Li and Kirubarajan 2001, "Estimation with
Applications to Tracking and Navigation", Wiley) of ``DRIFT_RATE``. Its
measurement is each harmonic's phase against a slower reference
envelope (``REFERENCE_S``), read with the mixer's phase detector over
four mains periods under a Hann window, with an inverse-variance weight
from the harmonic's power over what is not hum, so that pauses steer the
loop and words barely do; octaves are taken lowest first, each narrowing
the phase enough for the next to be read without wrapping.

Where the offline stage weighs the pauses on both sides of a word, fits a
smooth phase through the whole file and counts harmonics over all of it,
this one has the past and six seconds: it takes out about as much at a
hum 20 or 30 dB under the speech, less at 45 (bench/repair.py's stream
table). Constants: the boxes and ``ENVELOPE_S`` are the offline stage's;
``DRIFT_RATE`` is three times the fastest drift the bench asks to follow
(±0.3 Hz over a minute), which followed it best; ``WRAP_MARGIN``,
``GATE`` and ``REFERENCE_S`` were set on the same bench.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from denoise.engine.hum import FRAME_S, MAINS_HZ, TRACK_PERIODS, Spectra, detect

DETECT_S = 6.0
DETECT_EVERY_S = 2.0
CONFIRM = 3  # looks in a row that must find a hum (10 s of it)
CONFIRM_HZ = 0.4  # with fundamentals this close (a fast drift moves 0.1 Hz a second)
ENVELOPE_S = 1.0
REFERENCE_S = 5.0
SPREAD_S = 0.1
INITIAL_PHASE = 0.1  # radians: how well the detector's fundamental gives it
INITIAL_HZ = 0.05
WRAP_MARGIN = 1.5  # radians: k times what is known of the phase (sin peaks at pi / 2)
GATE = 3.0  # standard deviations
DRIFT_RATE = 0.1  # Hz a second: how fast the grid's frequency may move
LEARN_S = 1.0  # a tracker learns this long before it removes anything
FADE_S = 0.25  # then its removal fades in over this


class HumCanceller:
    """``[C, n]`` blocks in, the same less each channel's hum out, sample
    for sample (no latency). ``mains``: ``auto``, ``50`` or ``60``.

    The work is spread over the samples, so that a live run's hops all
    take about as long: a detection frame's spectrum when its second is
    complete, the decision on the last ``DETECT_S`` every
    ``DETECT_EVERY_S``, and a tracker found learns for ``LEARN_S`` on the
    samples that follow before its removal fades in. The output depends on
    the samples only, not on how they are cut into blocks."""

    def __init__(self, sample_rate: int, channels: int, mains: str = "auto"):
        self.sample_rate = sample_rate
        self.candidates = MAINS_HZ if mains == "auto" else (float(mains),)
        self.trackers: list[_Tracker | None] = [None] * channels
        self.spectra = Spectra(sample_rate)
        self.frames: deque[np.ndarray] = deque(maxlen=round(DETECT_S / FRAME_S))
        self.held = np.zeros((channels, 0))  # of the detection frame being filled
        self.received = 0  # samples fed before this block
        self.frames_seen = 0
        self.found_at: list[float | None] = [None] * channels
        self.looks = [deque(maxlen=CONFIRM) for _ in range(channels)]  # the last looks' finds

    def feed(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32)
        out = block.copy()
        decisions = self._look(block)
        for row in range(block.shape[0]):
            samples = block[row].astype(np.float64)
            done = 0
            for at, found in [*decisions, (block.shape[1], None)]:
                tracker = self.trackers[row]
                if tracker is not None and at > done:
                    out[row, done:at] = (samples[done:at] - tracker.follow(samples[done:at])
                                         ).astype(np.float32)
                done = at
                if found is not None:
                    self._start(row, found[row], self.received + at)
        self.received += block.shape[1]
        return out

    def found(self) -> list[str | None]:
        """Each channel's hum as a line, or ``None`` while none is found."""
        return [None if tracker is None else
                f"{tracker.describe()}, found at {at:.0f} s, taken out from {at + LEARN_S:.0f} s"
                for tracker, at in zip(self.trackers, self.found_at)]

    def _look(self, block: np.ndarray) -> list[tuple[int, list]]:
        """Each detection frame's spectrum as it completes, and every
        ``DETECT_EVERY_S`` hum looked for in the last ``DETECT_S``: where
        in the block each look ended, and what it found per channel."""
        held = np.concatenate([self.held, block], axis=1)
        size, kept = self.spectra.size, self.frames.maxlen
        every = round(DETECT_EVERY_S / FRAME_S)
        done, decisions = 0, []
        while held.shape[1] - done >= size:
            self.frames.append(self.spectra.standing(held[:, done: done + size]))
            self.frames_seen += 1
            done += size
            if self.frames_seen >= kept and (self.frames_seen - kept) % every == 0:
                found = detect(self.spectra, lambda: self.frames, len(self.trackers),
                               self.candidates)
                decisions.append((done - (held.shape[1] - block.shape[1]), found))
        self.held = held[:, done:]
        return decisions

    def _start(self, row: int, detection, position: int) -> None:
        """What a look found in a channel at sample ``position``: a hum
        confirmed by the last ``CONFIRM`` looks (near one fundamental, the
        harmonics all of them found) gets a tracker; where one runs, the
        confirmed harmonics it does not have yet join it (a hum found as it
        starts shows few)."""
        looks = self.looks[row]
        looks.append(detection)
        if len(looks) < CONFIRM or any(look is None for look in looks):
            return
        fundamentals = [float(np.median(look.fundamental_hz[look.present])) for look in looks]
        if max(fundamentals) - min(fundamentals) > CONFIRM_HZ:
            return
        harmonics = looks[0].harmonics
        for look in list(looks)[1:]:
            harmonics = np.intersect1d(harmonics, look.harmonics)
        if not len(harmonics):
            return
        if self.trackers[row] is not None:
            self.trackers[row].join(harmonics)
            return
        self.trackers[row] = _Tracker(self.sample_rate, fundamentals[-1], harmonics)
        self.found_at[row] = position / self.sample_rate


class _Tracker:
    """One channel's hum: its envelopes and its phase, followed box by box."""

    def __init__(self, sample_rate: int, fundamental_hz: float, harmonics: np.ndarray):
        self.sample_rate, self.fundamental_hz = sample_rate, fundamental_hz
        self.harmonics = harmonics.astype(np.float64)
        self.columns = harmonics.astype(np.int64) - 1
        count = len(harmonics)
        self.box = round(TRACK_PERIODS * sample_rate / fundamental_hz)
        box_s = self.box / sample_rate
        self.step = 2 * np.pi * fundamental_hz / sample_rate  # radians a sample
        self.phase = 0.0  # at the next sample
        self.filled, self.sum = 0, np.zeros(count, complex)  # the box being filled
        # x exp(-j k phi) at each sample of this box and the one before: the
        # loop's measurement is their mean under a Hann window of both
        self.products = np.zeros((self.box, count), complex)
        self.last_products = np.zeros((self.box, count), complex)
        self.window = np.hanning(2 * self.box + 2)[1:-1]
        self.window /= self.window.sum()
        self.previous = np.zeros(count, complex)  # the loop's last measurement
        self.box_weight, self.step_weight = _Interference(box_s), _Interference(box_s)
        self.envelope = _Average(count, np.exp(-box_s / ENVELOPE_S))
        self.reference = _Average(count, np.exp(-box_s / REFERENCE_S))
        self.loop = _PhaseLoop(box_s)
        self.followed = 0  # samples
        # each harmonic's removal: off while its envelope learns, from the
        # sample it joined at, then faded in
        self.joined = np.zeros(count)
        self.learn, self.fade = round(LEARN_S * sample_rate), round(FADE_S * sample_rate)
        self.joining = np.zeros(0)  # harmonics to join at the next box's start

    def describe(self) -> str:
        top = self.harmonics.max() * self.fundamental_hz
        count = len(self.harmonics)
        return (f"hum at {self.fundamental_hz:.2f} Hz, {count} harmonic"
                f"{'s' if count != 1 else ''} (to {top:.0f} Hz)")

    def follow(self, samples: np.ndarray) -> np.ndarray:
        """The hum at ``samples`` (the next ones), as predicted from those
        before; the envelopes and the loop learn from them."""
        hum = np.empty(len(samples))
        done = 0
        while done < len(samples):
            if self.filled == 0 and len(self.joining):
                self._add(self.joining)
            count = min(len(samples) - done, self.box - self.filled)
            phase = self.phase + self.step * np.arange(count)
            turns = _turns(phase, self.columns)  # [n, K]
            hum[done: done + count] = 2 * np.real(self._faded(turns) @ self.envelope.mean)
            products = samples[done: done + count, None] * np.conj(turns)
            self.products[self.filled: self.filled + count] = products
            self.sum += products.sum(axis=0)
            self.phase += self.step * count
            self.filled += count
            done += count
            if self.filled == self.box:
                self._learn(self.sum / self.box)
                self.sum[:] = 0
                self.filled = 0
                self.products, self.last_products = self.last_products, self.products
        return hum

    def join(self, harmonics: np.ndarray) -> None:
        """Follow ``harmonics`` too, from the next box on (those followed
        already are left as they are)."""
        new = np.setdiff1d(harmonics.astype(np.float64), self.harmonics)
        self.joining = np.union1d(self.joining, new)

    def _add(self, harmonics: np.ndarray) -> None:
        count = len(harmonics)
        self.harmonics = np.concatenate([self.harmonics, harmonics])
        self.columns = self.harmonics.astype(np.int64) - 1
        self.joined = np.concatenate([self.joined, np.full(count, float(self.followed))])
        self.sum, self.previous = _wider(self.sum, count), _wider(self.previous, count)
        self.products = _wider(self.products, count)
        self.last_products = _wider(self.last_products, count)
        for average in (self.envelope, self.reference):
            average.total, average.weight = _wider(average.total, count), _wider(average.weight,
                                                                                 count)
        for interference in (self.box_weight, self.step_weight):
            if interference.power is not None:
                interference.power = _wider(interference.power, count)
        self.joining = np.zeros(0)

    def _faded(self, turns: np.ndarray) -> np.ndarray:
        """``turns`` ``[n, K]`` times each harmonic's fade at those samples."""
        position = self.followed + np.arange(len(turns))
        self.followed += len(turns)
        since = position[:, None] - self.joined[None, :] - self.learn
        if since[0].min() >= self.fade:
            return turns
        return turns * np.clip(since / self.fade, 0.0, 1.0)

    def _learn(self, box: np.ndarray) -> None:
        """One box's demodulation: the envelopes learn it, then the loop
        takes a step."""
        self.envelope.add(box, self.box_weight(box, self.envelope.mean))
        measured = self.window @ np.concatenate([self.last_products, self.products])
        weight = self.step_weight(measured, self.previous)
        self.previous = measured
        if self.envelope.count > 1:
            self._step(measured, weight)

    def _step(self, measured: np.ndarray, weight: np.ndarray) -> None:
        """The loop's step on the last two boxes under a Hann window (four
        mains periods: the other harmonics fall on its zeros, and a voice's
        pitch 40 Hz from a harmonic, which one box's rectangle passes at
        -13 dB, is 30 dB down). Each harmonic measures the phase error with
        the mixer's phase detector, ``Im(b conj(R)) / (k |R|^2)``, linear in
        what is not hum, its variance ``1 / (2 k^2 |R|^2 w)``, ``w`` the
        inverse of what is not hum (how the measurement differs from the
        last). The reference ``R`` learns the harmonics' shape, turned back
        by the error measured, so that it does not follow the drift and
        hide it from the loop."""
        power = np.abs(self.reference.mean) ** 2 + 1e-30
        deviation = np.imag(measured * np.conj(self.reference.mean)) / power / self.harmonics
        variance = 1.0 / (2 * self.harmonics**2 * power * weight + 1e-30)
        # a harmonic that joined later steers once its reference has learned
        variance[(self.joined > 0) & (self.followed - self.joined < self.learn)] = np.inf
        if self.reference.count:
            error, (phase, rate) = self.loop.correct(deviation, variance, self.harmonics)
            self.phase += phase
            self.step += rate / self.sample_rate
            measured = measured * np.exp(-1j * self.harmonics * error)
        self.reference.add(measured, weight)


def _wider(values: np.ndarray, count: int) -> np.ndarray:
    """``values`` with ``count`` zeros more along its last axis (for harmonics
    that join)."""
    return np.concatenate([values, np.zeros(values.shape[:-1] + (count,), values.dtype)],
                          axis=-1)


def _turns(phase: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``exp(j k phase)`` for the harmonics ``k = columns + 1``, ``[n, K]``:
    powers of ``exp(j phase)`` by repeated multiplication (ten times
    faster than an exponential each; the rounding grows as ``k``, 1e-13 at
    the 200th)."""
    base = np.exp(1j * phase)
    powers = np.empty((len(phase), columns.max() + 1), complex)
    powers[:, 0] = base
    for column in range(1, powers.shape[1]):
        np.multiply(powers[:, column - 1], base, out=powers[:, column])
    return powers[:, columns]


class _PhaseLoop:
    """A Kalman filter of the error of the phase the tracker follows: its
    phase at the end of a step (radians) and its rate (radians a second),
    the rate a random walk of white acceleration ``DRIFT_RATE``."""

    def __init__(self, box_s: float):
        acceleration = 2 * np.pi * DRIFT_RATE
        self.move = np.array([[1.0, box_s], [0.0, 1.0]])
        self.drift = acceleration**2 * np.array([[box_s**4 / 4, box_s**3 / 2],
                                                [box_s**3 / 2, box_s**2]])
        # a measurement is the error's mean over the last two boxes: at the
        # edge between them, a box before the state's time
        self.sees = np.array([1.0, -box_s])
        self.covariance = np.diag([INITIAL_PHASE**2, (2 * np.pi * INITIAL_HZ) ** 2])

    def correct(self, deviation: np.ndarray, variance: np.ndarray,
                harmonics: np.ndarray) -> tuple[float, tuple[float, float]]:
        """The error the harmonics measure, and the correction (phase, rate)
        it gives. The harmonics are taken in octaves, lowest first: each
        octave's measurement narrows what is known of the phase, so that the
        next, whose turns would have wrapped before, can be used."""
        correction, total_precision, total = np.zeros(2), 0.0, 0.0
        for octave in range(int(np.log2(harmonics.max())) + 1):
            within = (harmonics >= 2**octave) & (harmonics < 2 ** (octave + 1))
            known = float(self.sees @ self.covariance @ self.sees)
            # what is left once the correction so far is made
            left = deviation - self.sees @ correction
            usable = (within & np.isfinite(variance) & (harmonics * np.sqrt(known) < WRAP_MARGIN)
                      & (left**2 < GATE**2 * (known + variance)))
            if not usable.any():
                continue
            precision = 1.0 / variance[usable]
            error = float((left[usable] * precision).sum() / precision.sum())
            gain = self.covariance @ self.sees / (known + 1.0 / precision.sum())
            correction = correction + gain * error
            self.covariance = self.covariance - np.outer(gain, self.sees @ self.covariance)
            total_precision += precision.sum()
            total += float((deviation[usable] * precision).sum())
        self.covariance = self.move @ self.covariance @ self.move.T + self.drift
        measured = total / total_precision if total_precision else 0.0
        return measured, (float(correction[0]), float(correction[1]))


class _Interference:
    """The weight of a measurement: the inverse of the power of what is not
    hum in it, its departure from what it is compared with, smoothed over
    ``SPREAD_S`` and never below that smoothed value (so that a word's
    onset gets a small weight at once, and what follows a word too)."""

    def __init__(self, box_s: float):
        self.forget = np.exp(-box_s / SPREAD_S)
        self.power = None

    def __call__(self, value: np.ndarray, compared: np.ndarray) -> np.ndarray:
        departure = np.abs(value - compared) ** 2
        if self.power is None:
            self.power = departure
        self.power = self.forget * self.power + (1 - self.forget) * departure
        return 1.0 / (np.maximum(departure, self.power) + 1e-30)


class _Average:
    """A weighted mean that forgets by ``forget`` a box."""

    def __init__(self, size: int, forget: float):
        self.forget = forget
        self.total, self.weight = np.zeros(size, complex), np.zeros(size)
        self.count = 0

    @property
    def mean(self) -> np.ndarray:
        return self.total / np.maximum(self.weight, 1e-300)

    def add(self, value: np.ndarray, weight: np.ndarray) -> None:
        self.total = self.forget * self.total + weight * value
        self.weight = self.forget * self.weight + weight
        self.count += 1
