"""Before/after pictures of one file: the waveforms on the same axes and
scale, and the spectrograms with the same colour scale in dBFS, on a
logarithmic frequency axis (speech lives between 100 Hz and 8 kHz, which a
linear axis up to 24 kHz squeezes into its lower third).

Each channel's waveform is drawn in its own colour, over a shade where
voice activity (:mod:`denoise.engine.vad`) finds speech; the spectrogram shows
the channels' mean power (not the power of their mean, which would cancel
out-of-phase content) and says so.

The data are gathered while the file is read or written for another reason
(:class:`PlotMeter`, block by block): the waveform as the minimum and
maximum of each of ``COLUMNS`` spans, the spectrogram from one windowed
frame at each of ``COLUMNS`` evenly spaced times. So a 2-hour file costs as
little memory as a short one, and drawing needs no pass of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from denoise.engine.dsp import frame_length
from denoise.engine.vad import WINDOW_S, SpeechMeter

COLUMNS = 1200  # of the waveform envelope
SPECTRUM_COLUMNS = 600  # a spectrogram panel is about 600 pixels wide
ROWS = 400  # of the log-frequency image
FLOOR_DB = -120.0
LOWEST_HZ = 50.0
CHANNEL_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
SPEECH_SHADE = "#2ca02c"


@dataclass
class PlotData:
    """One side's picture: waveform envelope ``[C, columns]`` each, the
    spectrogram in dBFS ``[n_fft // 2 + 1, columns]``, which 32 ms windows
    hold speech, and what they cover."""

    low: np.ndarray
    high: np.ndarray
    spectrum_db: np.ndarray
    sample_rate: int
    duration_s: float
    channels: int
    speech: np.ndarray


class PlotMeter:
    """Gathers :class:`PlotData` from a signal given in order, ``[T, C]``
    blocks, whose total length ``samples`` (per channel) is known in advance."""

    def __init__(self, samples: int, sample_rate: int, channels: int, columns: int = COLUMNS,
                 spectrum_columns: int = SPECTRUM_COLUMNS):
        self.samples, self.sample_rate, self.channels = samples, sample_rate, channels
        spans = max(1, min(columns, samples))
        self.edges = np.linspace(0, samples, spans + 1).astype(np.int64)
        self.low = np.full((channels, spans), np.inf)
        self.high = np.full((channels, spans), -np.inf)
        self.n_fft = frame_length(sample_rate)
        self.window = np.hanning(self.n_fft).astype(np.float32)
        count = max(1, min(spectrum_columns, samples // self.n_fft or 1))
        self.starts = np.linspace(0, max(0, samples - self.n_fft), count).astype(np.int64)
        self.power = np.zeros((self.n_fft // 2 + 1, count), dtype=np.float32)
        self.next_frame = 0
        self.position = 0
        self.carry = np.zeros((0, channels), dtype=np.float32)  # for frames across blocks
        self.voice = SpeechMeter(sample_rate, channels)

    def add(self, block: np.ndarray) -> None:
        self.voice.add(block.T)
        start, stop = self.position, self.position + len(block)
        self._envelope(block, start, stop)
        joined = np.concatenate([self.carry, block])
        offset = start - len(self.carry)  # the file position of joined[0]
        first = self.next_frame
        ends = np.minimum(self.starts[first:] + self.n_fft, self.samples)
        last = first + int(np.searchsorted(ends, stop, side="right"))
        if last > first:
            if len(joined) < self.n_fft:  # a file shorter than one frame
                joined = np.pad(joined, ((0, self.n_fft - len(joined)), (0, 0)))
            windows = np.lib.stride_tricks.sliding_window_view(joined, self.n_fft, axis=0)
            frames = windows[self.starts[first:last] - offset]  # [k, C, n_fft]
            spectra = np.fft.rfft(frames * self.window, axis=-1)
            self.power[:, first:last] = np.square(np.abs(spectra)).mean(axis=1).T
            self.next_frame = last
        self.carry = joined[-(self.n_fft - 1):] if self.n_fft > 1 else joined[:0]
        self.position = stop

    def _envelope(self, block: np.ndarray, start: int, stop: int) -> None:
        """Per span the block touches: the minimum and maximum per channel."""
        first = int(np.searchsorted(self.edges, start, side="right") - 1)
        last = min(int(np.searchsorted(self.edges, stop, side="left")), self.low.shape[1])
        if first >= last:
            return
        bounds = np.clip(self.edges[first:last], start, stop) - start
        low = np.minimum.reduceat(block, bounds, axis=0).T
        high = np.maximum.reduceat(block, bounds, axis=0).T
        self.low[:, first:last] = np.minimum(self.low[:, first:last], low)
        self.high[:, first:last] = np.maximum(self.high[:, first:last], high)

    def data(self) -> PlotData:
        low = np.where(np.isfinite(self.low), self.low, 0)
        high = np.where(np.isfinite(self.high), self.high, 0)
        power = self.power * 4 / self.window.sum() ** 2  # a sine of amplitude A: A**2 in its bin
        decibels = 10 * np.log10(np.maximum(power, 10 ** (FLOOR_DB / 10)))
        return PlotData(low, high, decibels, self.sample_rate,
                        self.samples / self.sample_rate if self.sample_rate else 0.0,
                        self.channels, self.voice.windows()[0])


def plot_data(path: str | Path) -> PlotData:
    """The picture data of a file, read once in blocks."""
    import soundfile as sf

    with sf.SoundFile(str(path)) as audio:
        meter = PlotMeter(audio.frames, audio.samplerate, audio.channels)
        for block in audio.blocks(blocksize=1 << 20, dtype="float32", always_2d=True):
            meter.add(block)
    return meter.data()


def plot_file(before: PlotData, after: PlotData, png: str | Path, title: str) -> Path:
    """Write the before/after figure to ``png`` (under a temporary name,
    renamed when complete)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from denoise.engine.audio_io import replacing

    sides = (before, after)
    limit = max(1e-6, *(max(abs(side.low).max(), abs(side.high).max()) for side in sides))
    top = max(side.spectrum_db.max() for side in sides)
    figure, axes = plt.subplots(2, 2, figsize=(14, 7), sharex=True)
    figure.subplots_adjust(left=0.06, right=0.9, bottom=0.08, top=0.9, wspace=0.15, hspace=0.12)
    figure.suptitle(title)
    for column, (label, side) in enumerate(zip(("before", "after"), sides)):
        _waveform(axes[0, column], side, limit, label)
        image = _spectrogram(axes[1, column], side, top)
    bar = figure.colorbar(image, cax=figure.add_axes((0.92, 0.08, 0.012, 0.38)), label="dBFS")
    bar.locator = MaxNLocator(5)
    bar.update_ticks()
    png = Path(png)
    with replacing(png) as temporary:
        figure.savefig(temporary, dpi=100, format="png", pil_kwargs={"compress_level": 1})
    plt.close(figure)
    return png


def _waveform(axis, side: PlotData, limit: float, label: str) -> None:
    from matplotlib.ticker import MaxNLocator

    times = np.linspace(0, side.duration_s, side.low.shape[1])
    if side.speech.any():
        # one shade per waveform column at most: a long file's pauses are
        # thousands of spans, and drawing is most of a plot's time
        window = np.minimum((times / WINDOW_S).astype(int), len(side.speech) - 1)
        axis.fill_between(times, -limit, limit, where=side.speech[window], step="mid",
                          color=SPEECH_SHADE, alpha=0.12, linewidth=0, label="speech")
    for channel in range(side.low.shape[0]):
        axis.fill_between(times, side.low[channel], side.high[channel], linewidth=0.3,
                          color=CHANNEL_COLOURS[channel % len(CHANNEL_COLOURS)],
                          alpha=0.6 if side.channels > 1 else 1.0,
                          label=_channel_name(channel, side.channels) if side.channels > 1
                          else None)
    if 1 < side.channels <= len(CHANNEL_COLOURS) or side.speech.any():
        axis.legend(loc="upper right", fontsize="small")
    axis.set_ylim(-limit, limit)
    axis.yaxis.set_major_locator(MaxNLocator(5))  # every tick costs: drawing is mostly text
    axis.xaxis.set_major_locator(MaxNLocator(6))
    axis.set_title(label)
    axis.set_ylabel("amplitude (full scale = 1)")


def _spectrogram(axis, side: PlotData, top: float):
    """The spectrogram on a log-frequency axis: the bins interpolated onto
    ``ROWS`` log-spaced frequencies and drawn as one image (a mesh of every
    bin draws ten times slower)."""
    bin_hz = side.sample_rate / (2 * (side.spectrum_db.shape[0] - 1))
    nyquist = side.sample_rate / 2
    position = np.geomspace(LOWEST_HZ, nyquist, ROWS) / bin_hz  # in bins, fractional
    below = np.minimum(position.astype(int), side.spectrum_db.shape[0] - 2)
    weight = (position - below)[:, None]
    picture = (1 - weight) * side.spectrum_db[below] + weight * side.spectrum_db[below + 1]
    image = axis.imshow(picture, origin="lower", aspect="auto", cmap="magma", vmin=top - 90,
                        vmax=top, interpolation="nearest",
                        extent=(0, side.duration_s, np.log10(LOWEST_HZ), np.log10(nyquist)))
    ticks = [f for f in (100, 300, 1000, 3000, 10000) if f <= nyquist]
    axis.set_yticks(np.log10(ticks), [f"{f / 1000:g}k" if f >= 1000 else str(f) for f in ticks])
    axis.set_ylabel("frequency (Hz)" + (f", mean of {side.channels} channels"
                                        if side.channels > 1 else ""))
    axis.set_xlabel("time (s)")
    return image


def _channel_name(channel: int, channels: int) -> str:
    if channels == 2:
        return ("left", "right")[channel]
    return f"channel {channel + 1}"
