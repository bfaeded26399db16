"""What a worker does with one chunk: read, resample, enhance, resample back.

Workers are handed a picklable :class:`ChunkTask` and the backend's
:class:`~engine.backends.BackendSpec`; each worker process builds a backend
once and keeps it for every later chunk, and sets its torch thread count once
so that N workers share the cores instead of oversubscribing them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF

from engine import backends
from engine.audio_io import read_frames
from engine.chunking import Chunk
from engine.errors import FileError

# Resampling filters need a few dozen samples to work on; shorter chunks
# (a file of a handful of samples) are zero-padded first and trimmed after.
MIN_RESAMPLE_FRAMES = 256

_worker_backends: dict[tuple, backends.Backend] = {}


@dataclass(frozen=True)
class ChunkTask:
    file_id: int
    path: str
    name: str
    sample_rate: int
    chunk: Chunk
    dry: float = 0.0
    mix_channels: bool = False
    file_std: np.ndarray | None = None


@dataclass
class ChunkResult:
    file_id: int
    chunk: Chunk
    kept: np.ndarray | None
    error: str | None
    seconds: float


def worker_backend(spec: backends.BackendSpec, threads: int) -> backends.Backend:
    """The backend for ``spec`` in this process, built on first use."""
    key = spec.key()
    if key not in _worker_backends:
        torch.set_num_threads(threads)
        _worker_backends[key] = backends.build(spec)
    return _worker_backends[key]


def resample(audio: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """Band-limited resampling of ``[..., T]`` (torchaudio's windowed sinc)."""
    if from_rate == to_rate:
        return audio
    length = audio.shape[-1]
    if length < MIN_RESAMPLE_FRAMES:
        audio = torch.nn.functional.pad(audio, (0, MIN_RESAMPLE_FRAMES - length))
    out = AF.resample(audio, from_rate, to_rate)
    return out[..., : max(1, round(length * to_rate / from_rate))]


def enhance_audio(backend: backends.Backend, audio: np.ndarray, sample_rate: int,
                  dry: float = 0.0, file_std: np.ndarray | None = None,
                  mix_channels: bool = False) -> np.ndarray:
    """Enhance ``[C, T]`` at ``sample_rate``; same shape out, no delay.

    Channels are enhanced independently (as a batch), at the backend's rate,
    or with ``mix_channels`` their mean is enhanced once and written to each.
    ``dry`` mixes that fraction of the original back in, at the file's rate
    so the dry part keeps its full band.
    """
    rate = backend.sample_rate or sample_rate
    length = audio.shape[-1]
    source = audio.mean(axis=0, keepdims=True) if mix_channels else audio
    with torch.inference_mode():
        signal = resample(torch.from_numpy(source), sample_rate, rate)
        enhanced = backend.enhance(signal, rate, file_std)
        enhanced = resample(enhanced.cpu(), rate, sample_rate)
    out = enhanced.numpy()
    if out.shape[-1] < length:
        out = np.pad(out, ((0, 0), (0, length - out.shape[-1])))
    out = np.broadcast_to(out[..., :length], audio.shape)
    if dry:
        out = (1 - dry) * out + dry * audio
    return np.ascontiguousarray(out, dtype=np.float32)


def run_chunk(spec: backends.BackendSpec, threads: int, task: ChunkTask) -> ChunkResult:
    """Process one chunk; failures come back as results, never as exceptions,
    so that one bad file cannot stop the pool."""
    started = time.perf_counter()
    chunk = task.chunk
    try:
        backend = worker_backend(spec, threads)
        audio = read_frames(Path(task.path), chunk.read_start, chunk.read_stop)
        enhanced = enhance_audio(backend, audio, task.sample_rate, task.dry, task.file_std,
                                 task.mix_channels)
        offset = chunk.keep_start - chunk.read_start
        kept = enhanced[:, offset: offset + chunk.keep_stop - chunk.keep_start]
        return ChunkResult(task.file_id, chunk, kept, None, time.perf_counter() - started)
    except FileError as error:
        message = f"{task.name}: {error.cause}"
    except Exception as error:  # a backend bug must fail one file, not the batch
        message = f"{task.name}: internal error in {spec.name}: {type(error).__name__}: {error}"
    return ChunkResult(task.file_id, chunk, None, message, time.perf_counter() - started)
