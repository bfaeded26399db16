"""Even voices: a speech-aware leveler for a whole file.

A host close to the microphone and a guest on a laptop should come out at
one loudness, without the pauses, breaths and noise between phrases being
pumped up with the quiet voice. Loudness normalisation moves a whole file;
a compressor or ffmpeg's ``dynaudnorm`` follows the signal and lifts the
pauses with it. This stage measures only speech and moves each stretch of
speech toward the file's typical speech loudness:

1. **Where speech is**: Silero VAD (:mod:`denoise.engine.vad`) on the
   enhanced signal, 32 ms windows, any channel speaking.
2. **Whose voice**: the speech is cut into spans of one voice each, where
   the speech level (K-weighted power of ITU-R BS.1770-4, channels summed,
   averaged over 0.5 s of speech, in dB) shifts by ``SAME_VOICE_DB`` or
   more and stays shifted for ``MIN_VOICE_S`` of speech (binary
   segmentation of the mean, after Scott and Knott 1974, "A cluster
   analysis method for grouping means in the analysis of variance",
   Biometrics 30(3); a reply often follows with no pause), and at pauses of
   ``SPLIT_PAUSE_S``; neighbouring spans within ``SAME_VOICE_DB`` of each
   other are joined again (one voice's sentences). Each span's level is
   its speech's power averaged with Gaussian weights of ``LEVEL_S``, so a
   speaker who leans back over a minute is followed, and within a phrase
   nothing moves.
3. **The gain**: the median speech level over the file less each window's,
   within ±``max_gain_db``. Pauses take the lower of the gains of the
   speech either side of them, and never more than the median gain of the
   speech within ``PAUSE_CONTEXT_S`` (noise and breaths are not lifted above
   their surroundings), and the
   whole curve is smoothed with a Gaussian of ``SMOOTH_S``: a change takes
   about a second (10-90 % in 0.8 s), mostly inside the pause before it,
   slow enough that no phrase pumps and quick enough to catch the first
   word of a reply. The gain is the same for every channel, so a stereo
   image stays where it was; speakers on different channels are evened as
   they take turns.

Offline only: step 3 looks at the speech on both sides of a pause. The
loudness target and the true-peak limiter come after it, as without it.

Constants (this module's, set on two-speaker conversations of the shared
recordings, bench/leveler.py, four conversations of different turns):
``SAME_VOICE_DB`` 5 (one voice's sentences differ by less), ``MIN_VOICE_S``
0.5 s (2 s missed the first second of a reply), ``SPLIT_PAUSE_S`` 0.15 s,
``LEVEL_S`` 20 s, ``PAUSE_CONTEXT_S`` 20 s (5 s let a pause take the gain
of a quieter sentence beside it, 1 dB over its turn's), ``SMOOTH_S`` 0.3 s,
and a default maximum of 15 dB (a guest 12 dB under the host who speaks
most still reaches the host's level).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from denoise.engine.dsp import runs
from denoise.engine.vad import WINDOW_S, SpeechMeter

MAX_GAIN_DB = 15.0
LEVEL_S = 20.0
SPLIT_PAUSE_S = 0.15
SAME_VOICE_DB = 5.0
MIN_VOICE_S = 0.5
VOICE_LEVEL_S = 0.5  # the speech level that spans are cut on: syllables averaged out
PAUSE_CONTEXT_S = 20.0
SMOOTH_S = 0.3


@dataclass(frozen=True)
class Leveling:
    """A file's leveller gain in dB per 32 ms window (centred on each), and
    which windows hold speech."""

    gain_db: np.ndarray
    speech: np.ndarray

    def describe(self) -> str:
        if not self.speech.any():
            return "leveler: no speech found, no gain change"
        spoken = self.gain_db[self.speech]
        return (f"leveler: speech in {100 * self.speech.mean():.0f} % of the file, gains "
                f"{spoken.min():+.1f} to {spoken.max():+.1f} dB")

    def gains(self, start: int, count: int, sample_rate: int) -> np.ndarray:
        """The linear gain of samples ``[start, start + count)``, float32."""
        if not self.speech.any():
            return np.ones(count, np.float32)
        centres = (np.arange(len(self.gain_db)) + 0.5) * WINDOW_S * sample_rate
        positions = np.arange(start, start + count)
        return (10 ** (np.interp(positions, centres, self.gain_db) / 20)).astype(np.float32)


def plan_leveling(blocks: Iterable[np.ndarray], sample_rate: int, channels: int,
                  max_gain_db: float = MAX_GAIN_DB) -> Leveling:
    """The leveller's gain for a whole signal given as ``[C, n]`` blocks."""
    meter = SpeechMeter(sample_rate, channels)
    for block in blocks:
        meter.add(block)
    speech, power = meter.windows()
    return Leveling(_gain_db(power, speech, max_gain_db), speech)


def _gain_db(power: np.ndarray, speech: np.ndarray, max_gain_db: float) -> np.ndarray:
    gain = np.zeros(len(power))
    if not speech.any():
        return gain
    level = np.full(len(power), np.nan)
    for start, stop in _voices(_stretches(speech), power, speech):
        weights = speech[start:stop].astype(np.float64)
        sigma = LEVEL_S / WINDOW_S
        mean = (gaussian_filter1d(power[start:stop] * weights, sigma, mode="constant")
                / np.maximum(gaussian_filter1d(weights, sigma, mode="constant"), 1e-12))
        level[start:stop] = 10 * np.log10(np.maximum(mean, 1e-20))
    target = np.median(level[speech])
    gain[speech] = np.clip(target - level[speech], -max_gain_db, max_gain_db)
    # pauses: the lower of the gains either side (the one side at the ends)
    index = np.arange(len(speech))
    before = np.maximum.accumulate(np.where(speech, index, -1))
    after = np.minimum.accumulate(np.where(speech, index, len(speech))[::-1])[::-1]
    pause = ~speech
    left = np.where(before >= 0, gain[np.maximum(before, 0)], np.inf)
    right = np.where(after < len(speech), gain[np.minimum(after, len(speech) - 1)], np.inf)
    held = np.minimum(left, right)
    # nor above the typical gain of the speech about them, where the speech
    # next to a pause is a quieter phrase than its turn's
    reach = round(PAUSE_CONTEXT_S / WINDOW_S)
    for start, stop in runs(pause):
        nearby = speech[max(0, start - reach): stop + reach]
        gains = gain[max(0, start - reach): stop + reach][nearby]
        gain[start:stop] = min(held[start], float(np.median(gains)))
    return gaussian_filter1d(gain, SMOOTH_S / WINDOW_S, mode="nearest")


def _voices(stretches: list[tuple[int, int]], power: np.ndarray,
            speech: np.ndarray) -> list[tuple[int, int]]:
    """The spans of one voice each: the stretches, split further where the
    speech level shifts by ``SAME_VOICE_DB`` or more and stays shifted for
    ``MIN_VOICE_S`` of speech (binary segmentation of the level of the
    speech windows, 0.5 s averages, in dB; a reply often follows without a
    pause), and joined again across pauses where the level does not shift
    (one voice's sentences)."""
    spoken = np.flatnonzero(speech)
    smoothed = gaussian_filter1d(power[spoken], VOICE_LEVEL_S / WINDOW_S, mode="nearest")
    level = 10 * np.log10(np.maximum(smoothed, 1e-20))
    shortest = round(MIN_VOICE_S / WINDOW_S)
    cuts = set()
    for start, stop in stretches:
        first, last = np.searchsorted(spoken, [start, stop])
        cuts.update(_shifts(level, first, last, shortest))
        cuts.add(first)
    cuts = sorted(cuts | {len(spoken)})
    spans = []
    for begin, end in zip(cuts[:-1], cuts[1:]):
        mean = level[begin:end].mean()
        if spans and abs(mean - spans[-1][2]) < SAME_VOICE_DB:
            spans[-1][1] = end
            spans[-1][2] = level[spans[-1][0]:end].mean()
        else:
            spans.append([begin, end, mean])
    return [(int(spoken[begin]), int(spoken[end - 1]) + 1) for begin, end, _ in spans]


def _shifts(level: np.ndarray, first: int, last: int, shortest: int) -> list[int]:
    """Where ``level[first:last]`` shifts for good (binary segmentation)."""
    if last - first < 2 * shortest:
        return []
    part = level[first:last]
    total = np.cumsum(part)
    splits = np.arange(shortest, len(part) - shortest + 1)
    left = total[splits - 1] / splits
    right = (total[-1] - total[splits - 1]) / (len(part) - splits)
    best = int(np.argmax(np.abs(left - right) * np.sqrt(splits * (len(part) - splits))))
    if abs(left[best] - right[best]) < SAME_VOICE_DB:
        return []
    cut = first + int(splits[best])
    return _shifts(level, first, cut, shortest) + [cut] + _shifts(level, cut, last, shortest)


def _stretches(speech: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of each stretch of speech windows that no pause of
    ``SPLIT_PAUSE_S`` or more divides (short pauses inside)."""
    spoken = np.flatnonzero(speech)
    split = round(SPLIT_PAUSE_S / WINDOW_S)
    breaks = np.flatnonzero(np.diff(spoken) > split)
    starts = np.concatenate([[spoken[0]], spoken[breaks + 1]])
    stops = np.concatenate([spoken[breaks], [spoken[-1]]]) + 1
    return list(zip(starts, stops))
