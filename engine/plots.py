"""Before/after pictures of one file: the waveforms on the same axes and
scale, and the spectrograms with the same colour scale in dB.

A 2-hour file plots as fast as a short one: the waveform is drawn as the
minimum and maximum of each of ``COLUMNS`` spans (read in blocks), and the
spectrogram from one windowed frame read at each of ``COLUMNS`` evenly spaced
times, so the cost and memory do not grow with the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

COLUMNS = 1200
N_FFT = 1024
BLOCK_FRAMES = 1 << 20
FLOOR_DB = -120.0


def envelope(path: str | Path, columns: int = COLUMNS) -> tuple[np.ndarray, np.ndarray, float]:
    """Minimum and maximum of the channels' mean over ``columns`` equal spans,
    and the duration in seconds."""
    with sf.SoundFile(str(path)) as audio:
        frames, rate = audio.frames, audio.samplerate
        columns = max(1, min(columns, frames))
        edges = np.linspace(0, frames, columns + 1).astype(np.int64)
        low = np.full(columns, np.inf)
        high = np.full(columns, -np.inf)
        start = 0
        for block in audio.blocks(blocksize=BLOCK_FRAMES, dtype="float32", always_2d=True):
            mono = block.mean(axis=1)
            stop = start + len(mono)
            # the spans this block touches, clipped to the block
            first = np.searchsorted(edges, start, side="right") - 1
            last = np.searchsorted(edges, stop, side="left")
            for column in range(first, min(last, columns)):
                span = mono[max(edges[column], start) - start: min(edges[column + 1], stop) - start]
                if len(span):
                    low[column] = min(low[column], span.min())
                    high[column] = max(high[column], span.max())
            start = stop
    low[~np.isfinite(low)] = 0
    high[~np.isfinite(high)] = 0
    return low, high, frames / rate if rate else 0.0


def spectrogram(path: str | Path, columns: int = COLUMNS) -> tuple[np.ndarray, int, float]:
    """Power in dB ``[N_FFT // 2 + 1, columns]`` of Hann-windowed frames read
    at evenly spaced times; returns it, the sample rate and the duration."""
    window = np.hanning(N_FFT).astype(np.float32)
    with sf.SoundFile(str(path)) as audio:
        frames, rate = audio.frames, audio.samplerate
        columns = max(1, min(columns, frames // N_FFT or 1))
        starts = np.linspace(0, max(0, frames - N_FFT), columns).astype(np.int64)
        power = np.empty((N_FFT // 2 + 1, columns), dtype=np.float32)
        for column, start in enumerate(starts):
            audio.seek(int(start))
            frame = audio.read(N_FFT, dtype="float32", always_2d=True).mean(axis=1)
            frame = np.pad(frame, (0, N_FFT - len(frame)))
            power[:, column] = np.abs(np.fft.rfft(frame * window)) ** 2 / window.sum() ** 2
    return 10 * np.log10(np.maximum(power, 10 ** (FLOOR_DB / 10))), rate, frames / rate


def plot_file(before: str | Path, after: str | Path, png: str | Path, title: str) -> Path:
    """Write the before/after figure of ``before`` and ``after`` to ``png``
    (under a temporary name, renamed when complete)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    waves = [envelope(path) for path in (before, after)]
    spectra = [spectrogram(path) for path in (before, after)]
    limit = max(1e-6, *(max(abs(low).max(), abs(high).max()) for low, high, _ in waves))
    top = max(spectrum.max() for spectrum, _, _ in spectra)
    figure, axes = plt.subplots(2, 2, figsize=(14, 7), sharex=True, constrained_layout=True)
    figure.suptitle(title)
    for column, label in enumerate(("before", "after")):
        low, high, duration = waves[column]
        times = np.linspace(0, duration, len(low))
        wave_axis = axes[0, column]
        wave_axis.fill_between(times, low, high, color="#1f77b4", linewidth=0.3)
        wave_axis.set_ylim(-limit, limit)
        wave_axis.set_title(label)
        wave_axis.set_ylabel("amplitude")
        spectrum, rate, duration = spectra[column]
        image = axes[1, column].imshow(
            spectrum, origin="lower", aspect="auto", cmap="magma", vmin=top - 90, vmax=top,
            extent=(0, duration, 0, rate / 2000))
        axes[1, column].set_ylabel("kHz")
        axes[1, column].set_xlabel("time (s)")
    figure.colorbar(image, ax=axes[1, :], label="dB", shrink=0.9)
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    temporary = png.with_name(f".{png.name}.partial.png")
    figure.savefig(temporary, dpi=100)
    plt.close(figure)
    os.replace(temporary, png)
    return png
