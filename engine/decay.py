"""A reverberation indicator with no reference: how fast speech dies away.

Where a sound stops, what the microphone hears decays as the room's
reverberation does; in a dry recording as fast as the voice itself falls
silent. The indicator finds those free decays in the energy envelopes of
subbands and takes their decay rate as a time to fall 60 dB, after the
blind estimators that detect free-decay regions in a subband decomposition
of speech (Prego, de Lima, Netto, Lee et al. (2012), "A blind algorithm for
reverberation time estimation using subband decomposition of speech
signals", J. Acoust. Soc. Am. 131(4)). It is an indicator, not the room's
RT60: speech's own offsets bound it from below (dry speech of the shared
recordings reads about 0.33 s) and a noise floor shortens the decays it
can see. On speech in simulated rooms (bench/repair.py) it reads 0.39, 0.60
and 0.77 s at RT60 0.3, 0.6 and 1.0 s.

Constants (this module's, set on those rooms): 32 ms frames every 8 ms,
six bands evenly spaced in log frequency from 250 Hz to 4 kHz (where speech
carries its energy), the envelope smoothed over three frames; a decay is a
run of at least 80 ms in which each frame is less than 0.3 dB above the one
before, falling 10 dB in all; its rate is a least-squares line. The
indicator is the 75th percentile of the decays' times, since most decays
end on the next sound before the reverberation has had its say.
"""

from __future__ import annotations

import numpy as np

from denoise.engine.dsp import runs

FRAME_S = 0.032
HOP_S = 0.008
BAND_EDGES_HZ = np.geomspace(250.0, 4000.0, 7)
SMOOTH_FRAMES = 3
MIN_DECAY_S = 0.08
RISE_DB = 0.3  # a frame this much above the one before still belongs to a decay
MIN_DROP_DB = 10.0
PERCENTILE = 75
MIN_DECAYS = 5


class DecayMeter:
    """Gathers the subband envelopes of a signal given block by block
    (``[T, C]``; the channels' mean power) and gives its decay time. It
    keeps 24 bytes per 8 ms: 20 MB for two hours."""

    def __init__(self, sample_rate: int):
        self.frame = round(FRAME_S * sample_rate)
        self.hop = round(HOP_S * sample_rate)
        self.window = np.hanning(self.frame).astype(np.float32)
        frequencies = np.fft.rfftfreq(self.frame, 1 / sample_rate)
        top = min(BAND_EDGES_HZ[-1], 0.45 * sample_rate)
        self.bands = [(frequencies >= low) & (frequencies < min(high, top))
                      for low, high in zip(BAND_EDGES_HZ[:-1], BAND_EDGES_HZ[1:]) if low < top]
        self.held = np.zeros((0, 0), np.float32)
        self.energies: list[np.ndarray] = []

    def add(self, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float32)
        held = block if self.held.size == 0 else np.concatenate([self.held, block])
        count = (len(held) - self.frame) // self.hop + 1 if len(held) >= self.frame else 0
        if count > 0:
            frames = np.lib.stride_tricks.sliding_window_view(held, self.frame, axis=0)[
                ::self.hop][:count]  # [n, C, frame]
            power = (np.abs(np.fft.rfft(frames * self.window, axis=-1)) ** 2).mean(axis=1)
            self.energies.append(np.stack([power[:, band].sum(axis=1) for band in self.bands],
                                          axis=1).astype(np.float32))
        self.held = held[count * self.hop:]

    def decay_s(self) -> tuple[float | None, str | None]:
        """The indicator in seconds, or why there is none."""
        if not self.energies or not self.bands:
            return None, "too short"
        energy = np.concatenate(self.energies)
        kernel = np.ones(SMOOTH_FRAMES) / SMOOTH_FRAMES
        shortest = round(MIN_DECAY_S / HOP_S)
        times = []
        for band in energy.T:
            envelope = 10 * np.log10(np.convolve(band, kernel, mode="same") + 1e-12)
            times += _decays(envelope, shortest)
        if len(times) < MIN_DECAYS:
            return None, "too few decays of speech"
        return float(np.percentile(times, PERCENTILE)), None


def _decays(envelope: np.ndarray, shortest: int) -> list[float]:
    """Each free decay's time to fall 60 dB, in seconds."""
    falling = np.diff(envelope) < RISE_DB
    times = []
    for start, stop in runs(falling):
        if stop - start >= shortest and envelope[start] - envelope[stop] >= MIN_DROP_DB:
            run = envelope[start: stop + 1]
            slope = np.polyfit(np.arange(len(run)) * HOP_S, run, 1)[0]
            if slope < 0:
                times.append(-60.0 / slope)
    return times
