"""The level stage: each signal brought to the speech level a model works
best at before the model sees it, and the gain undone after.

DeepFilterNet3 removes quiet speech with the noise: a recording 30 dB
below the usual level loses most of its words (its STOI falls from 0.90 to
0.57 on the shared pairs). A gain before the model and its exact inverse
after make a model's quality independent of the recording level, and the
output keeps the input's level.

The level measured is the **active speech level** of ITU-T P.56 (2011),
method B: the mean power over the samples where speech is active, with
activity found by an envelope against a threshold that sits a fixed margin
below the level being measured. Taken from P.56: the envelope (two cascaded
one-pole smoothers of ``|x|``, time constant 0.03 s), the hangover that
keeps a pause shorter than 0.2 s active, the margin M = 15.9 dB, and the
power summed over the whole signal divided by the active samples' count.
Different here: the hangover and the activity count work on 10 ms frames
(the envelope's peak in each frame), and instead of P.56's thresholds every
6 dB with interpolation between two, every frame's envelope is a candidate
threshold, so the level moves exactly with a gain (no threshold grid) and
costs one sort. Frames under -100 dBFS are never active: a file with
nothing above that has no speech level and gets no gain.

A signal whose level is inside the range a backend names
(``level_range_dbfs``) is left as it is; one outside is brought to the
nearer end. Offline (:func:`speech_levels` over a whole file, read in
blocks) one gain per channel for the file. Streams (:class:`CausalGain`)
measure the same level over the last :data:`WINDOW_S` of active frames,
only frames that count as active at the current level entering it, so a
pause holds the gain where the speech left it instead of raising it toward
the noise; the gain follows in dB with the time constants below and
changes linearly across each 10 ms frame; :class:`~denoise.engine.streaming.Levelled` divides each
output sample by the gain its input sample got, so the inverse is exact
whatever the model's latency.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from scipy.signal import lfilter

ENVELOPE_S = 0.03  # P.56: the envelope's time constant
HANGOVER_S = 0.2  # P.56: pauses shorter than this count as active
MARGIN_DB = 15.9  # P.56: the threshold sits this far below the active level
FRAME_S = 0.01
FLOOR = 1e-5  # -100 dBFS: quieter frames are never active speech
# The most the stage raises or lowers a signal: enough for a recording 40 dB
# below the usual level, and for one peaking above full scale (float files).
MAX_BOOST_DB = 50.0
MAX_CUT_DB = 30.0
# Streams: the level over this much active signal; the gain falling within
# a fifth of a second when speech gets louder (a loud word must not reach
# the model boosted for long) and rising as fast when it gets quieter or a
# stream starts quiet. It stays at 0 dB until half a second of active
# signal has been measured: what comes first may be noise alone, whose
# level is no guide to the speech's. (Waiting a whole second cost a quiet
# stream its first second of words: 76 dB down, tests/test_level.py; a
# quarter of a second moved an in-range stream away from the offline result.)
WINDOW_S = 10.0
FALL_S = 0.2
RISE_S = 0.2
SETTLE_S = 0.5


def level_gain_db(level_dbfs: float, level_range_dbfs: tuple[float, float]) -> float:
    """The gain (dB) that brings ``level_dbfs`` into ``level_range_dbfs``
    (none for a level inside it, or a signal without speech, ``-inf``),
    within the stage's limits."""
    if not math.isfinite(level_dbfs):
        return 0.0
    lowest, highest = level_range_dbfs
    wanted = max(0.0, lowest - level_dbfs) + min(0.0, highest - level_dbfs)
    return float(np.clip(wanted, -MAX_CUT_DB, MAX_BOOST_DB))


def active_level_db(envelopes: np.ndarray, energies: np.ndarray, frame_samples: int,
                    total_energy: float | None = None) -> float:
    """P.56's active speech level (dBFS) of frames with these peak-held
    envelopes and sums of squares; ``-inf`` where none is above the floor.

    ``total_energy``: the signal's sum of squares, where it holds frames not
    listed (P.56 divides the whole signal's power by the active count).
    """
    candidates = np.sort(envelopes[envelopes >= FLOOR])[::-1]
    if not len(candidates):
        return -math.inf
    energy = float(energies.sum()) if total_energy is None else total_energy
    count = np.arange(1, len(candidates) + 1)
    # With the n loudest frames active (threshold: the n-th envelope):
    level = 10 * np.log10(max(energy, 1e-30) / (count * frame_samples))
    excess = level - 20 * np.log10(candidates)  # P.56's A - C, against M
    below = np.flatnonzero(excess <= MARGIN_DB)
    if not len(below):
        return float(level[np.argmin(excess)])
    n = below[-1]  # the lowest threshold whose excess is within the margin
    if n + 1 == len(candidates):
        return float(level[n])
    # Between that threshold and the next lower one, where A - C = M.
    fraction = (excess[n + 1] - MARGIN_DB) / (excess[n + 1] - excess[n])
    return float(level[n + 1] + fraction * (level[n] - level[n + 1]))


class FrameMeter:
    """P.56's envelope over ``[C, n]`` blocks, cut into 10 ms frames: for each
    whole frame, the envelope's peak over it and the hangover before it, and
    the frame's sum of squares. Fed in any block sizes, the frames are the
    same."""

    def __init__(self, sample_rate: int, channels: int):
        self.frame_samples = max(1, round(FRAME_S * sample_rate))
        pole = math.exp(-1 / (ENVELOPE_S * sample_rate))
        # Two cascaded one-pole smoothers as one second-order filter.
        self.b, self.a = [(1 - pole) ** 2], [1, -2 * pole, pole ** 2]
        self.state = np.zeros((channels, 2))
        self.hangover_frames = round(HANGOVER_S / FRAME_S)
        self.recent_peaks = np.zeros((channels, self.hangover_frames))
        self.pending_envelope = np.zeros((channels, 0))
        self.pending_signal = np.zeros((channels, 0))

    def feed(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The frames completed by ``block``: ``(envelopes, energies)``, each
        ``[C, frames]``."""
        block = np.asarray(block, dtype=np.float64)
        envelope, self.state = lfilter(self.b, self.a, np.abs(block), axis=-1, zi=self.state)
        envelope = np.concatenate([self.pending_envelope, envelope], axis=-1)
        signal = np.concatenate([self.pending_signal, block], axis=-1)
        channels, whole = signal.shape[0], signal.shape[-1] // self.frame_samples
        cut = whole * self.frame_samples
        self.pending_envelope, self.pending_signal = envelope[:, cut:], signal[:, cut:]
        if not whole:
            return np.zeros((channels, 0)), np.zeros((channels, 0))
        frames = (channels, whole, self.frame_samples)
        peaks = envelope[:, :cut].reshape(frames).max(axis=-1)
        energies = np.square(signal[:, :cut]).reshape(frames).sum(axis=-1)
        history = np.concatenate([self.recent_peaks, peaks], axis=-1)
        held = np.lib.stride_tricks.sliding_window_view(
            history, self.hangover_frames + 1, axis=-1).max(axis=-1)
        self.recent_peaks = history[:, history.shape[-1] - self.hangover_frames:]
        return held, energies


def speech_levels(blocks, sample_rate: int, channels: int) -> np.ndarray:
    """Each channel's active speech level (dBFS, ``-inf`` for none) over a
    whole signal given as ``[C, n]`` blocks."""
    meter = FrameMeter(sample_rate, channels)
    envelopes, energies, total = [], [], np.zeros(channels)
    for block in blocks:
        held, energy = meter.feed(block)
        envelopes.append(held)
        energies.append(energy)
        total += np.square(np.asarray(block, dtype=np.float64)).sum(axis=-1)
    envelopes = np.concatenate(envelopes, axis=-1) if envelopes else np.zeros((channels, 0))
    energies = np.concatenate(energies, axis=-1) if energies else np.zeros((channels, 0))
    return np.array([active_level_db(envelopes[c], energies[c], meter.frame_samples, total[c])
                     for c in range(channels)])


class CausalGain:
    """The level stage's gain for a stream: ``gains(block)`` gives, for each
    sample of each ``[C, n]`` block, the linear gain it gets, from what came
    before it. Fed in any block sizes, the gains are the same."""

    def __init__(self, sample_rate: int, channels: int, level_range_dbfs: tuple[float, float]):
        self.meter = FrameMeter(sample_rate, channels)
        self.level_range_dbfs = level_range_dbfs
        self.window_frames = round(WINDOW_S / FRAME_S)
        self.windows = [deque(maxlen=self.window_frames) for _ in range(channels)]
        self.level_dbfs = np.full(channels, -math.inf)
        self.gain_db = np.zeros(channels)  # at the start of the frame being received
        self.next_gain_db = np.zeros(channels)  # at its end
        self.position = 0  # samples into the current frame

    def gains(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block)
        frame = self.meter.frame_samples
        # Sample positions within their frames; a frame's gain ramps from
        # the gain at its start to the one at its end, both known before
        # the frame arrives.
        offsets = (self.position + np.arange(block.shape[-1])) % frame
        frame_index = (self.position + np.arange(block.shape[-1])) // frame
        starts, ends = [self.gain_db.copy()], [self.next_gain_db.copy()]
        held, energies = self.meter.feed(block)
        for k in range(held.shape[-1]):
            self._update(held[:, k], energies[:, k])
            starts.append(self.gain_db.copy())
            ends.append(self.next_gain_db.copy())
        self.position = (self.position + block.shape[-1]) % frame
        start, end = np.stack(starts, axis=-1), np.stack(ends, axis=-1)
        ramp = offsets / frame
        gain_db = start[:, frame_index] + ramp * (end[:, frame_index] - start[:, frame_index])
        return np.power(10.0, gain_db / 20).astype(np.float32)

    def _update(self, held: np.ndarray, energies: np.ndarray) -> None:
        """One more frame measured: the gain at the end of the next frame."""
        self.gain_db = self.next_gain_db.copy()
        for c, window in enumerate(self.windows):
            level = self.level_dbfs[c]
            if math.isfinite(level) and 20 * math.log10(max(held[c], 1e-30)) < level - MARGIN_DB:
                continue  # a pause: the gain stays where the speech left it
            window.append((held[c], energies[c]))
            frames = np.array(window)
            self.level_dbfs[c] = active_level_db(frames[:, 0], frames[:, 1],
                                                 self.meter.frame_samples)
            measured_s = np.count_nonzero(frames[:, 0] >= FLOOR) * FRAME_S
            if measured_s < SETTLE_S or not math.isfinite(self.level_dbfs[c]):
                continue
            wanted = level_gain_db(self.level_dbfs[c], self.level_range_dbfs)
            time_s = FALL_S if wanted < self.next_gain_db[c] else RISE_S
            step = 1 - math.exp(-FRAME_S / time_s)
            self.next_gain_db[c] += step * (wanted - self.next_gain_db[c])
