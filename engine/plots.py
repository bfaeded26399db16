"""Before/after pictures of one file: the waveforms on the same axes and
scale, and the spectrograms with the same colour scale in dBFS, on a
logarithmic frequency axis (speech lives between 100 Hz and 8 kHz, which a
linear axis up to 24 kHz squeezes into its lower third).

Each channel's waveform is drawn in its own colour; the spectrogram shows
the channels' mean power (not the power of their mean, which would cancel
out-of-phase content) and says so.

A 2-hour file plots as fast as a short one: the waveform is drawn as the
minimum and maximum of each of ``COLUMNS`` spans (read in blocks), and the
spectrogram from one windowed frame read at each of ``COLUMNS`` evenly spaced
times, so the cost and memory do not grow with the file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import soundfile as sf

COLUMNS = 1200
FRAME_S = 0.032
BLOCK_FRAMES = 1 << 20
FLOOR_DB = -120.0
LOWEST_HZ = 50.0
CHANNEL_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def envelope(path: str | Path, columns: int = COLUMNS) -> tuple[np.ndarray, np.ndarray, float]:
    """Minimum and maximum of each channel over ``columns`` equal spans,
    ``[C, columns]`` each, and the duration in seconds."""
    with sf.SoundFile(str(path)) as audio:
        frames, rate, channels = audio.frames, audio.samplerate, audio.channels
        columns = max(1, min(columns, frames))
        edges = np.linspace(0, frames, columns + 1).astype(np.int64)
        low = np.full((channels, columns), np.inf)
        high = np.full((channels, columns), -np.inf)
        start = 0
        for block in audio.blocks(blocksize=BLOCK_FRAMES, dtype="float32", always_2d=True):
            stop = start + len(block)
            # the spans this block touches, clipped to the block
            first = np.searchsorted(edges, start, side="right") - 1
            last = np.searchsorted(edges, stop, side="left")
            for column in range(first, min(last, columns)):
                span = block[max(edges[column], start) - start: min(edges[column + 1], stop) - start]
                if len(span):
                    low[:, column] = np.minimum(low[:, column], span.min(axis=0))
                    high[:, column] = np.maximum(high[:, column], span.max(axis=0))
            start = stop
    low[~np.isfinite(low)] = 0
    high[~np.isfinite(high)] = 0
    return low, high, frames / rate if rate else 0.0


def fft_size(rate: int) -> int:
    """About 32 ms: the next power of two."""
    return 1 << max(4, math.ceil(math.log2(FRAME_S * rate)))


def spectrogram(path: str | Path, columns: int = COLUMNS) -> tuple[np.ndarray, int, float, int]:
    """Power in dBFS ``[n_fft // 2 + 1, columns]`` of Hann-windowed frames
    read at evenly spaced times, averaged over the channels (a full-scale
    sine reads 0 dBFS at its frequency); returns it, the sample rate, the
    duration and the number of channels."""
    with sf.SoundFile(str(path)) as audio:
        frames, rate, channels = audio.frames, audio.samplerate, audio.channels
        n_fft = fft_size(rate)
        window = np.hanning(n_fft).astype(np.float32)
        columns = max(1, min(columns, frames // n_fft or 1))
        starts = np.linspace(0, max(0, frames - n_fft), columns).astype(np.int64)
        power = np.empty((n_fft // 2 + 1, columns), dtype=np.float32)
        for column, start in enumerate(starts):
            audio.seek(int(start))
            frame = audio.read(n_fft, dtype="float32", always_2d=True)
            frame = np.pad(frame, ((0, n_fft - len(frame)), (0, 0)))
            spectrum = np.fft.rfft(frame * window[:, None], axis=0)
            power[:, column] = (np.abs(spectrum) ** 2).mean(axis=1)
    power *= 4 / window.sum() ** 2  # a sine of amplitude A -> A**2 in its bin
    decibels = 10 * np.log10(np.maximum(power, 10 ** (FLOOR_DB / 10)))
    return decibels, rate, frames / rate, channels


def plot_file(before: str | Path, after: str | Path, png: str | Path, title: str) -> Path:
    """Write the before/after figure of ``before`` and ``after`` to ``png``
    (under a temporary name, renamed when complete)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import FuncFormatter

    waves = [envelope(path) for path in (before, after)]
    spectra = [spectrogram(path) for path in (before, after)]
    limit = max(1e-6, *(max(abs(low).max(), abs(high).max()) for low, high, _ in waves))
    top = max(spectrum.max() for spectrum, *_ in spectra)
    figure, axes = plt.subplots(2, 2, figsize=(14, 7), sharex=True, constrained_layout=True)
    figure.suptitle(title)
    for column, label in enumerate(("before", "after")):
        low, high, duration = waves[column]
        times = np.linspace(0, duration, low.shape[1])
        wave_axis = axes[0, column]
        for channel in range(low.shape[0]):
            wave_axis.fill_between(times, low[channel], high[channel], linewidth=0.3,
                                   color=CHANNEL_COLOURS[channel % len(CHANNEL_COLOURS)],
                                   alpha=0.6 if low.shape[0] > 1 else 1.0,
                                   label=_channel_name(channel, low.shape[0]))
        if 1 < low.shape[0] <= len(CHANNEL_COLOURS):
            wave_axis.legend(loc="upper right", fontsize="small")
        wave_axis.set_ylim(-limit, limit)
        wave_axis.set_title(label)
        wave_axis.set_ylabel("amplitude (full scale = 1)")
        spectrum, rate, duration, channels = spectra[column]
        frequencies = np.fft.rfftfreq(2 * (spectrum.shape[0] - 1), 1 / rate)
        shown = frequencies >= LOWEST_HZ
        times = np.linspace(0, duration, spectrum.shape[1])
        image = axes[1, column].pcolormesh(times, frequencies[shown], spectrum[shown],
                                           shading="nearest", cmap="magma",
                                           vmin=top - 90, vmax=top, rasterized=True)
        spectrum_axis = axes[1, column]
        spectrum_axis.set_yscale("log")
        spectrum_axis.set_ylim(LOWEST_HZ, rate / 2)
        spectrum_axis.yaxis.set_major_formatter(FuncFormatter(_hertz))
        spectrum_axis.set_ylabel("frequency (Hz)" + (f", mean of {channels} channels"
                                                     if channels > 1 else ""))
        spectrum_axis.set_xlabel("time (s)")
    figure.colorbar(image, ax=axes[1, :], label="dBFS", shrink=0.9)
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    temporary = png.with_name(f".{png.name}.partial.png")
    figure.savefig(temporary, dpi=100)
    plt.close(figure)
    os.replace(temporary, png)
    return png


def _channel_name(channel: int, channels: int) -> str:
    if channels == 2:
        return ("left", "right")[channel]
    return f"channel {channel + 1}"


def _hertz(value: float, _position) -> str:
    return f"{value / 1000:g}k" if value >= 1000 else f"{value:g}"
