"""The enhancement stage, as pool tasks: read chunks, bring them to the
backend's speech level (:mod:`~denoise.engine.level`), resample, enhance,
resample back, undo the level's gain, shape (channels, attenuation limit,
dry mix); and the whole-file statistics pre-pass (standard deviation and
speech level) that a backend's chunks need before they start.

Workers are handed picklable :class:`ChunkTask` lists and the backend's
:class:`~denoise.engine.backends.BackendSpec`; each worker process builds a
backend once (its model loads on first use) and keeps it for every later
chunk, and sets its torch thread count once so that N workers share the
cores instead of oversubscribing them.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from denoise.engine import backends
from denoise.engine.audio_io import file_blocks, read_span
from denoise.engine.bands import extend_band, limit_attenuation, linked_gains
from denoise.engine.choices import CHANNEL_MODES, DEHUM_MODES
from denoise.engine.chunking import Chunk
from denoise.engine.dereverb import dereverb
from denoise.engine.dsp import resample
from denoise.engine.errors import FileError
from denoise.engine.hum import Hum, find_hums, remove_hum
from denoise.engine.level import level_gain_db, speech_levels

# A worker's memory may grow this much over what it held after its first
# task before freed memory is handed back to the system.
MEMORY_GROWTH = 1.1
try:
    _libc = ctypes.CDLL("libc.so.6")
    _libc.malloc_trim  # noqa: B018 - glibc only
except (OSError, AttributeError):
    _libc = None
_memory_base: int | None = None
_worker_backends: dict[tuple, backends.Backend] = {}
_builds: dict[tuple, int] = {}
_building = threading.Lock()
_set_up = False


@dataclass(frozen=True)
class FileStats:
    """Whole-file statistics of each row a backend is given (each channel,
    or the mono mix): its standard deviation, its active speech level
    (dBFS, ``-inf`` where there is no speech) and, where hum is looked for,
    its hum (``None`` for a row without; a mix's hum is every channel's)."""

    std: np.ndarray
    speech_dbfs: np.ndarray
    hums: tuple[Hum | None, ...] = ()

    def span(self, start: int, stop: int) -> FileStats:
        """What the samples ``[start, stop)`` need of these statistics."""
        if not any(self.hums):
            return self
        return FileStats(self.std, self.speech_dbfs,
                         tuple(None if hum is None else hum.span(start, stop) for hum in self.hums))


def signal_stats(blocks, sample_rate: int, rows: int, dehum: str = "off") -> FileStats:
    """:class:`FileStats` of a signal given as ``[rows, n]`` blocks by
    ``blocks()`` (called again to look for hum unless ``dehum`` is off)."""
    count, total, squares = 0, np.zeros(rows), np.zeros(rows)

    def counted(blocks):
        nonlocal count, total, squares
        for block in blocks:
            wide = np.asarray(block, dtype=np.float64)
            count += wide.shape[-1]
            total, squares = total + wide.sum(axis=-1), squares + np.square(wide).sum(axis=-1)
            yield block

    levels = speech_levels(counted(blocks()), sample_rate, rows)
    variance = (squares - total**2 / max(count, 1)) / max(count - 1, 1)
    hums = () if dehum == "off" else tuple(find_hums(blocks, sample_rate, rows, dehum))
    return FileStats(np.sqrt(np.maximum(variance, 0.0)).astype(np.float32), levels, hums)


def without_hum(audio: np.ndarray, start: int, stats: FileStats | None) -> np.ndarray:
    """``[C, T]`` file samples from ``start`` with the hum that ``stats``
    found taken out (a mono mix's hum out of every channel)."""
    if stats is None or not any(stats.hums):
        return audio
    hums = list(stats.hums) * (audio.shape[0] if len(stats.hums) == 1 else 1)
    return remove_hum(audio, start, hums)


@dataclass(frozen=True)
class ChunkTask:
    file_id: int
    path: str
    sample_rate: int
    chunk: Chunk
    stats: FileStats | None = None


@dataclass
class ChunkResult:
    file_id: int
    chunk: Chunk
    kept: np.ndarray | None
    error: str | None
    seconds: float
    # (process id, times this process has built the backend): the batch
    # checks that each worker loads its model once.
    worker: tuple[int, int] = (0, 0)


def keep_memory_flat() -> None:
    """After each task: hand freed memory back to the system once the
    process holds ``MEMORY_GROWTH`` times what it held after its first task.

    glibc keeps freed blocks for reuse, and chunk-sized tensors fragment its
    heap: left alone, a worker's memory creeps up chunk after chunk (+27 %
    over a 2-hour file with two workers). ``malloc_trim`` releases the free
    pages; doing it only when memory has grown costs almost nothing, where
    trimming after every task took 40 % longer per chunk (pages touched
    afresh) and giving every large tensor its own mapping took 80 % longer.
    """
    global _memory_base
    if _libc is None:
        return
    with open("/proc/self/statm") as statm:
        resident = int(statm.read().split()[1])
    if _memory_base is None:
        _memory_base = resident
    elif resident > MEMORY_GROWTH * _memory_base:
        _libc.malloc_trim(0)


def worker_setup(threads: int) -> None:
    """Once per process, before its first task: the torch threads it may use."""
    global _set_up
    with _building:
        if not _set_up:
            torch.set_num_threads(threads)
            _set_up = True


def worker_backend(spec: backends.BackendSpec, threads: int,
                   built: backends.Backend | None = None) -> backends.Backend:
    """The backend for ``spec`` in this process, built on first use (or
    ``built``, when the caller already has one: a model is loaded once)."""
    worker_setup(threads)
    key = spec.key()
    with _building:  # a Dask worker runs tasks in threads: build once, not once each
        if key not in _worker_backends:
            _worker_backends[key] = built or backends.build(spec)
            _builds[key] = _builds.get(key, 0) + (built is None)
    return _worker_backends[key]


def file_statistics(path: str, info, mix: bool, threads: int,
                    dehum: str = "off") -> tuple[FileStats | None, str | None]:
    """The pre-pass: :class:`FileStats` of each channel (or of the mono mix)
    over the whole file; or why the file cannot be read."""
    worker_setup(threads)
    try:
        return signal_stats(lambda: file_blocks(Path(path), info, mix), info.sample_rate,
                            1 if mix else info.channels, dehum), None
    except FileError as error:
        return None, error.cause


@dataclass(frozen=True)
class Shaping:
    """What becomes of a backend's output at the file's sample_rate, in each chunk.

    ``channels``: ``each`` channel enhanced on its own; ``mix``: the mono mix
    enhanced and written to every channel; ``linked``: the mono mix
    enhanced, and its per-bin gain applied to every channel (the stereo
    image stays put). ``atten_lim_db``: no time-frequency bin ends up more
    than this below the input (``None``: no limit; for backends without a
    gain floor of their own). ``dry``: the fraction of the input mixed back.
    ``full_band``: for a backend working at a lower sample_rate than the file, the
    band above its reach is restored (:func:`~engine.bands.extend_band`)
    rather than left empty. ``dehum``: mains hum looked for in each file
    (:mod:`~denoise.engine.hum`) and taken out before anything else;
    ``dereverb``: then this much of the late reverberation taken out
    (:mod:`~denoise.engine.dereverb`, 0 to 1).
    """

    channels: str = "each"
    atten_lim_db: float | None = None
    dry: float = 0.0
    full_band: bool = True
    dehum: str = "off"
    dereverb: float = 0.0

    def __post_init__(self) -> None:
        if self.channels not in CHANNEL_MODES:
            raise ValueError(f"channels must be one of {', '.join(CHANNEL_MODES)}, "
                             f"not {self.channels!r}")
        if not 0 <= self.dry <= 1:
            raise ValueError(f"dry must be within [0, 1], got {self.dry}")
        if self.dehum not in DEHUM_MODES:
            raise ValueError(f"dehum must be one of {', '.join(DEHUM_MODES)}, not {self.dehum!r}")
        if not 0 <= self.dereverb <= 1:
            raise ValueError(f"dereverb must be within [0, 1], got {self.dereverb}")

    @property
    def enhances_mix(self) -> bool:
        return self.channels != "each"


def enhance_array(audio: np.ndarray, sample_rate: int, method: str | None = None,
                  dry: float = 0.0, dehum: str = "off", dereverb: float = 0.0,
                  **options) -> np.ndarray:
    """Enhance a whole signal held in memory, in one piece, with ``method``
    (``None``: the default, :func:`~denoise.engine.backends.default_method`),
    mains hum taken out first where ``dehum`` is not ``off``, then
    ``dereverb`` of the late reverberation.

    Shape: ``[T]`` or ``[channels, T]`` -> the same. For files, and for
    signals too long to hold, use :class:`~denoise.engine.batch.Batch`,
    which works in chunks.
    """
    backend = backends.build(backends.BackendSpec(method or backends.default_method(), options))
    signal = np.asarray(audio, dtype=np.float32)
    rows = np.atleast_2d(signal)
    stats = None
    if dehum != "off":
        stats = signal_stats(lambda: [rows], sample_rate, rows.shape[0], dehum)
        rows = without_hum(rows, 0, stats)
    rows = _dereverbed(rows, sample_rate, dereverb)
    enhanced = enhance_audio(backend, rows, sample_rate,
                             Shaping(dry=dry, dehum=dehum, dereverb=dereverb), stats)
    return enhanced.reshape(signal.shape)


def enhance_audio(backend: backends.Backend, audio: np.ndarray, sample_rate: int,
                  shaping: Shaping = Shaping(), stats: FileStats | None = None) -> np.ndarray:
    """Enhance ``[C, T]`` at ``sample_rate``; same shape out, no delay.
    ``stats``: the whole file's, where ``audio`` is a chunk of it."""
    return enhance_batch(backend, [(audio, sample_rate, stats)], shaping)[0]


def enhance_batch(backend: backends.Backend,
                  signals: list[tuple[np.ndarray, int, FileStats | None]],
                  shaping: Shaping = Shaping()) -> list[np.ndarray]:
    """Enhance several ``(audio [C, T], sample_rate, stats)`` signals, from
    any files, in as few backend calls as possible: rows at the same backend
    sample_rate are zero-padded at the end to the longest and stacked into one batch
    (on a GPU, one batch per call is what makes it fast). ``stats`` are the
    whole file's where the signal is a chunk of one; ``None``: the signal is
    all there is. Returns each signal's enhanced ``[C, T]``."""
    sources = [audio.mean(axis=0, keepdims=True) if shaping.enhances_mix else audio
               for audio, _, _ in signals]
    rates = [backend.sample_rate or sample_rate for _, sample_rate, _ in signals]
    stats = [stats if stats is not None or not wants_stats(backend)
             else signal_stats(lambda source=source: [source], sample_rate, source.shape[0])
             for source, (_, sample_rate, stats) in zip(sources, signals)]
    gains = [_level_gains(backend, row_stats, source.shape[0])
             for source, row_stats in zip(sources, stats)]
    with torch.inference_mode():
        rows = [resample(torch.from_numpy(source * gain[:, None]), sample_rate, to_rate)
                for source, gain, (_, sample_rate, _), to_rate in zip(sources, gains, signals, rates)]
        enhanced: list[torch.Tensor] = [None] * len(signals)
        for sample_rate in sorted(set(rates)):
            members = [i for i, r in enumerate(rates) if r == sample_rate]
            longest = max(rows[i].shape[-1] for i in members)
            stacked = torch.cat([F.pad(rows[i], (0, longest - rows[i].shape[-1]))
                                 for i in members])
            std = None
            if backend.needs_file_std and all(stats[i] is not None for i in members):
                std = np.concatenate([stats[i].std * gains[i] for i in members])
            out = backend.enhance(stacked, sample_rate, std).cpu()
            for i, part in zip(members, out.split([rows[i].shape[0] for i in members])):
                enhanced[i] = part[..., : rows[i].shape[-1]] / torch.from_numpy(gains[i])[:, None]
        return [_shape(audio, source, resample(out, to_rate, sample_rate).numpy(), sample_rate, to_rate,
                       shaping)
                for (audio, sample_rate, _), source, out, to_rate
                in zip(signals, sources, enhanced, rates)]


def _dereverbed(audio: np.ndarray, sample_rate: int, strength: float) -> np.ndarray:
    return dereverb(audio, sample_rate, strength) if strength else audio


def wants_stats(backend: backends.Backend) -> bool:
    """Whether ``backend`` needs whole-file statistics: its normalisation,
    or the level stage's speech level."""
    return backend.needs_file_std or backend.level_range_dbfs is not None


def _level_gains(backend: backends.Backend, stats: FileStats | None, rows: int) -> np.ndarray:
    """The level stage's linear gain for each row (ones where the backend
    has no speech level of its own)."""
    if backend.level_range_dbfs is None:
        return np.ones(rows, np.float32)
    return np.array([10 ** (level_gain_db(level, backend.level_range_dbfs) / 20)
                     for level in stats.speech_dbfs], np.float32)


def _shape(audio: np.ndarray, source: np.ndarray, enhanced: np.ndarray, sample_rate: int,
           backend_rate: int, shaping: Shaping) -> np.ndarray:
    """Exactly the input's shape and length, shaped as ``shaping`` says;
    ``source`` is what the backend was given (the input, or its mono mix)."""
    length = audio.shape[-1]
    if enhanced.shape[-1] < length:
        enhanced = np.pad(enhanced, ((0, 0), (0, length - enhanced.shape[-1])))
    enhanced = np.ascontiguousarray(enhanced[..., :length], dtype=np.float32)
    if shaping.channels != "mix" and np.array_equal(enhanced, source):
        # The backend changed nothing (spectral at strength 0): neither does
        # the shaping, whose STFT round trips are exact only to a rounding.
        return np.ascontiguousarray(audio, dtype=np.float32)
    if shaping.full_band and backend_rate < sample_rate:
        enhanced = extend_band(source, enhanced, sample_rate, backend_rate)
    if shaping.channels == "linked":
        enhanced = linked_gains(audio, enhanced, sample_rate)
    out = np.broadcast_to(enhanced, audio.shape)
    if shaping.atten_lim_db:
        out = limit_attenuation(audio, np.ascontiguousarray(out), sample_rate, shaping.atten_lim_db)
    if shaping.dry:
        out = (1 - shaping.dry) * out + shaping.dry * audio
    return np.ascontiguousarray(out, dtype=np.float32)


def run_chunks(spec: backends.BackendSpec, threads: int, tasks: list[ChunkTask],
               shaping: Shaping = Shaping()) -> list[ChunkResult]:
    """Process chunks (a batch, possibly from several files) in one go.

    Failures come back as results, never as exceptions, so that one bad file
    cannot stop the pool or the other chunks of its batch.
    """
    started = time.perf_counter()
    results: list[ChunkResult] = []
    readable: list[tuple[ChunkTask, np.ndarray]] = []
    for task in tasks:
        try:
            audio = read_span(Path(task.path), task.chunk.read_start, task.chunk.read_stop)
            audio = without_hum(audio, task.chunk.read_start, task.stats)
            readable.append((task, _dereverbed(audio, task.sample_rate, shaping.dereverb)))
        except FileError as error:
            results.append(ChunkResult(task.file_id, task.chunk, None, error.cause, 0.0))
    if readable:
        try:
            backend = worker_backend(spec, threads)
            outputs = enhance_batch(backend, [(audio, task.sample_rate, task.stats)
                                              for task, audio in readable],
                                    shaping)
            errors = [None] * len(readable)
        except Exception as error:  # a backend bug must fail these files, not the batch
            outputs = [None] * len(readable)
            errors = [f"internal error in {spec.name}: {type(error).__name__}: {error}"
                      for _ in readable]
        seconds = (time.perf_counter() - started) / len(readable)
        for (task, _), out, error in zip(readable, outputs, errors):
            chunk = task.chunk
            kept = None
            if out is not None:
                offset = chunk.keep_start - chunk.read_start
                kept = out[:, offset: offset + chunk.keep_stop - chunk.keep_start]
            results.append(ChunkResult(task.file_id, chunk, kept, error, seconds,
                                       (os.getpid(), _builds.get(spec.key(), 0))))
    keep_memory_flat()
    return results
