"""Running a batch: files and the chunks of long files across a worker pool.

The parent process checks every file once (header, output policy), then
streams chunk tasks to joblib workers. Results come back in completion order;
the parent puts each file's chunks back in order, overlap-adds them and
appends them to that file's temporary output, and renames the output when its
last chunk is in. Memory stays bounded: at most a few chunks are in flight,
and nothing holds a whole file.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np
from joblib import Parallel, delayed, parallel_config

from denoise.engine import backends
from denoise.engine.audio_io import (STDIO, AudioInfo, channel_std, output_format, probe,
                            spool_stdin)
from denoise.engine.chunking import Chunk, OverlapAdd, plan_chunks
from denoise.engine.cluster import connect, worker_threads
from denoise.engine.discovery import Job
from denoise.engine.errors import FileError
from denoise.engine.finishing import Finishing, OutputSink
from denoise.engine.pipeline import ChunkResult, ChunkTask, Shaping, run_chunks, worker_backend
from denoise.engine.runlog import RunLog, default_path, input_identity

# Margin for the resampling filters' own reach at chunk edges.
RESAMPLE_CONTEXT_S = 0.01
# What a worker process costs before its first chunk: starting Python and
# importing torch and the engine (measured 2.3-3.2 s on a 2-core machine).
# With the default pool size, a batch gets worker processes only when its
# work outweighs this.
WORKER_START_S = 2.5


@dataclass(frozen=True)
class BatchOptions:
    """How to process a batch; built once by the caller.

    ``existing`` is what to do when an output exists: ``"error"`` (that file
    fails), ``"overwrite"``, ``"skip"``, or ``"resume"`` (skip it if the run
    log says it was made from this input, unchanged, with these settings;
    else redo it). ``log`` is the run log's path, ``"auto"`` for
    ``.denoise-log.jsonl`` in the output root (the ``-o`` folder, or the
    folder of a single output file), or ``None`` for no log. ``jobs`` is the
    number of worker processes (``None``: as many as the work is worth, up
    to one per core).
    ``segment_s`` is the length of the chunks long files are cut into
    (``None``: the backend's own choice), ``overlap_s`` their cross-fade.
    """

    method: str = "spectral"
    backend_options: dict = field(default_factory=dict)
    jobs: int | None = None
    existing: str = "error"
    log: str | None = "auto"
    cluster: str | None = None
    fmt: str | None = None
    subtype: str | None = None
    segment_s: float | None = None
    overlap_s: float = 0.5
    dry: float = 0.0
    channels: str = "each"
    atten_lim_db: float | None = None
    full_band: bool = True
    finishing: Finishing = field(default_factory=Finishing)

    def settings(self) -> dict:
        """Everything that shapes an output (not how the run is carried out)."""
        settings = asdict(self)
        for name in ("jobs", "existing", "log", "cluster"):
            settings.pop(name)
        return settings

    def describe(self) -> dict[str, str]:
        """The settings that shape the outputs as a person reads them: the
        values in effect (a backend's own defaults filled in), with units."""
        method = self.backend_options
        text = {"method": self.method}
        if self.method == "spectral":
            text["strength"] = f"{method.get('strength', 1.0):g}"
            if method.get("noise_file"):
                text["noise profile"] = str(method["noise_file"])
        else:
            text["model"] = str(method.get("weights") or method.get("model", "dns48"))
            text["device"] = str(method.get("device", "cpu"))
            text["upper band (files above 16 kHz)"] = ("restored from the input" if self.full_band
                                                       else "left out (--band-limit)")
        limit = self.atten_lim_db
        if limit is None:
            limit = backends.default_atten_lim_db(self.method)
        text["attenuation limit"] = f"{limit:g} dB" if limit else "none"
        text["channels"] = self.channels
        text["dry mix"] = f"{self.dry:g}"
        text["output format"] = " ".join(part for part in (self.fmt, self.subtype) if part) \
            or "as the input"
        text["chunks"] = f"{self.segment_s:g} s" if self.segment_s else "the method's default"
        text.update(self.finishing.describe())
        return text

    def __post_init__(self) -> None:
        if self.existing not in ("error", "overwrite", "skip", "resume"):
            raise ValueError(f"existing must be error, overwrite, skip or resume, "
                             f"not {self.existing!r}")
        if not 0 <= self.overlap_s < (self.segment_s or float("inf")):
            raise ValueError("need 0 <= overlap_s < segment_s")
        if self.atten_lim_db is not None and self.atten_lim_db < 0:
            raise ValueError(f"atten_lim_db must be >= 0 (0: no limit), got {self.atten_lim_db}")


@dataclass
class FileResult:
    """The outcome for one input; ``status`` is done, skipped, failed or
    planned. ``error`` is the cause of a failure (the input is named in
    ``input``), ``reason`` why a file was skipped, ``warnings`` what was
    wrong without stopping it. ``gain_db`` is the loudness gain finishing
    applied (``None`` without a loudness target). ``relative`` is the
    output's path under the output root."""

    input: str
    output: str
    status: str
    duration_s: float | None = None
    seconds: float | None = None
    error: str | None = None
    clipped_samples: int = 0
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)
    gain_db: float | None = None
    relative: str = ""

    @property
    def realtime_factor(self) -> float | None:
        """Processing seconds per second of audio (below 1 is faster than real time)."""
        if self.seconds is None or not self.duration_s:
            return None
        return self.seconds / self.duration_s

    def to_dict(self) -> dict:
        record = asdict(self)
        record["realtime_factor"] = self.realtime_factor
        return record


@dataclass(frozen=True)
class Progress:
    files_done: int
    files_total: int
    audio_s_done: float
    audio_s_total: float


def _groups(tasks: Iterator[ChunkTask], size: int) -> Iterator[list[ChunkTask]]:
    """Consecutive tasks in lists of ``size`` (the last may be shorter)."""
    group: list[ChunkTask] = []
    for task in tasks:
        group.append(task)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class _FileState:
    """A file being processed: its plan, its writer and its reorder buffer."""

    file_id: int
    job: Job
    path: Path
    info: AudioInfo
    chunks: list[Chunk]
    fmt: str
    subtype: str
    file_std: np.ndarray | None = None
    identity: dict | None = None  # the input's size and time, for the run log
    writer: OutputSink | None = None
    ola: OverlapAdd = field(default_factory=OverlapAdd)
    waiting: dict[int, ChunkResult] = field(default_factory=dict)
    next_index: int = 0
    seconds: float = 0.0
    clipped: int = 0
    gain_db: float | None = None
    error: str | None = None

    def result(self, status: str) -> FileResult:
        return FileResult(self.job.source, self.job.output, status, self.info.duration_s,
                          None if status == "planned" else self.seconds, self.error,
                          self.clipped, warnings=[self.info.warning] if self.info.warning
                          else [], gain_db=self.gain_db, relative=self.job.relative)


class Batch:
    """A prepared batch: files checked, chunks planned, ready to :meth:`run`."""

    def __init__(self, jobs: list[Job], options: BatchOptions, stdout: BinaryIO | None = None):
        self.options = options
        backend_options = dict(options.backend_options)
        generic_limit = options.atten_lim_db or None
        if options.atten_lim_db is not None and options.method in backends.OWN_GAIN_FLOOR:
            backend_options["atten_lim_db"] = options.atten_lim_db
            generic_limit = None
        self.shaping = Shaping(options.channels, generic_limit, options.dry, options.full_band)
        self.spec = backends.BackendSpec(options.method, backend_options)
        log_path = default_path(jobs) if options.log == "auto" else options.log
        self.runlog = RunLog(log_path, options.settings()) if log_path else None
        # Backend builds seen per worker process (the main one's is built above).
        self.builds_per_worker: dict[int, int] = {}
        self.client = connect(options.cluster) if options.cluster else None
        self.backend = backends.build(self.spec)
        self._stdout = stdout
        self._spooled: list[Path] = []
        self.files: list[_FileState] = []
        self.early: list[FileResult] = []
        for job in jobs:
            try:
                state = self._prepare(len(self.files), job)
            except FileError as error:
                self.early.append(FileResult(job.source, job.output, "failed",
                                             error=_cause(job, error), relative=job.relative))
                continue
            if isinstance(state, str):
                self.early.append(FileResult(job.source, job.output, "skipped", reason=state,
                                             relative=job.relative))
            else:
                self.files.append(state)

    @property
    def audio_s_total(self) -> float:
        return sum(state.info.duration_s for state in self.files)

    def _prepare(self, file_id: int, job: Job) -> _FileState | str:
        """The file's state, ready to run; or why it is skipped."""
        target_exists = job.output != STDIO and Path(job.output).exists()
        if target_exists and self.options.existing == "skip":
            return "output exists"
        if target_exists and self.options.existing == "resume" and self.runlog is not None \
                and self.runlog.is_current(job.source, job.output):
            return "up to date (same input and settings in the run log)"
        if target_exists and self.options.existing == "error":
            raise FileError(job.source, f"output {job.output} exists; pass --overwrite "
                                        "to replace it or --skip-existing to keep it")
        path = Path(job.source)
        if job.source == STDIO:
            path = spool_stdin()
            self._spooled.append(path)
        try:  # name the file as the user did (stdin is spooled to a temporary)
            info = probe(path)
            file_std = (channel_std(path, info, self.shaping.enhances_mix)
                        if self.backend.uses_file_std else None)
        except FileError as error:
            raise FileError(job.source, error.cause) from None
        fmt, subtype = output_format(info, job.output, self.options.fmt, self.options.subtype)
        identity = input_identity(job.source) if job.source != STDIO else None
        return _FileState(file_id, job, path, info, self._plan(info), fmt, subtype, file_std,
                          identity)

    def _plan(self, info: AudioInfo) -> list[Chunk]:
        rate = info.sample_rate
        before, after = self.backend.context_frames(rate)
        margin = round(RESAMPLE_CONTEXT_S * rate)
        segment = max(1, round((self.options.segment_s or self.backend.segment_s) * rate))
        overlap = min(round(self.options.overlap_s * rate), segment - 1)
        return plan_chunks(info.frames, segment, overlap, before + margin, after + margin,
                           align=self.backend.alignment(rate))

    def planned(self) -> Iterator[FileResult]:
        """What :meth:`run` would do, without doing it (``--dry-run``)."""
        yield from self.early
        for state in self.files:
            yield state.result("planned")
        self.close()

    def run(self, on_progress: Callable[[Progress], None] | None = None) -> Iterator[FileResult]:
        """Process every file; yields one result per input as each finishes."""
        yield from self.early
        if not self.files:
            self.close()
            return
        # A backend that takes several chunks per call (a model on a GPU) is
        # fed by one process; otherwise files and chunks spread over workers.
        per_call = max(1, self.backend.batch_chunks(self._longest_chunk_s()))
        if self.client is not None:
            # One torch thread per task: a worker runs as many tasks at once
            # as it has threads, and a local run with one job per core
            # computes exactly the same numbers.
            jobs, threads = worker_threads(self.client), 1
            context = parallel_config(backend="dask")
        else:
            jobs = 1 if per_call > 1 else self._pool_size()
            threads = max(1, default_jobs() // jobs)
            context = nullcontext()
            if jobs == 1:
                worker_backend(self.spec, threads, built=self.backend)
        batches = (delayed(run_chunks)(self.spec, threads, group, self.shaping)
                   for group in _groups(self._tasks(), per_call))
        try:
            with context:
                parallel = Parallel(n_jobs=jobs, return_as="generator_unordered",
                                    pre_dispatch="2*n_jobs")
                yield from self._gather(parallel(batches), on_progress)
        finally:
            self.close()

    def _pool_size(self) -> int:
        """Worker processes: as asked; else one per core, as long as the
        work is worth starting them (a process that is already running
        finishes a small batch sooner than new workers that import torch)."""
        tasks = sum(len(state.chunks) for state in self.files)
        if self.options.jobs:
            return max(1, min(self.options.jobs, tasks))
        cores = min(default_jobs(), tasks)
        work_s = sum(state.info.duration_s * (1 if self.shaping.enhances_mix
                                              else state.info.channels)
                     for state in self.files) * self.backend.compute_s_per_audio_s
        # Worth it when work / n + start < work, i.e. work > start * n / (n - 1).
        if cores < 2 or work_s <= WORKER_START_S * cores / (cores - 1):
            return 1
        return cores

    def _gather(self, outputs, on_progress) -> Iterator[FileResult]:
        """Write chunks back into their files as they come; yield each file's
        result once it is final."""
        files_done, audio_done = 0, 0.0
        for results in outputs:
            for result in results:
                pid, builds = result.worker
                self.builds_per_worker[pid] = max(builds, self.builds_per_worker.get(pid, 0))
                state = self.files[result.file_id]
                finished = self._collect(state, result)
                # Each sample once: a chunk's overlap with the next is the next's.
                chunk = result.chunk
                audio_done += (chunk.keep_stop - chunk.keep_start - chunk.fade_out) \
                    / state.info.sample_rate
                if finished is not None:
                    files_done += 1
                    self._log(state, finished)
                    yield finished
            if on_progress is not None:
                on_progress(Progress(files_done, len(self.files), audio_done,
                                     self.audio_s_total))

    def _tasks(self) -> Iterator[ChunkTask]:
        for state in self.files:
            for chunk in state.chunks:
                yield ChunkTask(state.file_id, str(state.path), state.info.sample_rate, chunk,
                                state.file_std)

    def _longest_chunk_s(self) -> float:
        return max((c.read_stop - c.read_start) / s.info.sample_rate
                   for s in self.files for c in s.chunks)

    def _collect(self, state: _FileState, result: ChunkResult) -> FileResult | None:
        """Take one chunk's result; returns the file's result once it is final."""
        if state.error is not None:
            return None
        state.seconds += result.seconds
        if result.error is not None:
            return self._fail(state, result.error)
        state.waiting[result.chunk.index] = result
        try:
            while state.next_index in state.waiting:
                ready = state.waiting.pop(state.next_index)
                if state.writer is None:
                    state.writer = OutputSink(
                        state.job.output, state.path, state.info.sample_rate,
                        state.info.channels, state.fmt, state.subtype, self.options.finishing,
                        self._stdout if state.job.output == STDIO else None)
                state.writer.write(state.ola.add(ready.chunk, ready.kept))
                state.next_index += 1
            if state.next_index < len(state.chunks):
                return None
            state.writer.commit()
            state.clipped, state.gain_db = state.writer.clipped, state.writer.gain_db
            state.writer = None
        except FileError as error:
            return self._fail(state, _cause(state.job, error))
        except BrokenPipeError:  # the reader of '-o -' went away: no file's fault
            raise
        except OSError as error:
            return self._fail(state, f"{state.job.output}: write failed "
                                     f"({error.strerror or error})")
        return state.result("done")

    def _fail(self, state: _FileState, message: str) -> FileResult:
        state.error = message
        state.waiting.clear()
        if state.writer is not None:
            state.writer.abort()
            state.writer = None
        return state.result("failed")

    def _log(self, state: _FileState, result: FileResult) -> None:
        if self.runlog is not None and state.identity is not None and result.output != STDIO:
            self.runlog.record(result.input, result.output, result.status, result.error,
                               state.identity)

    def close(self) -> None:
        """Drop unfinished outputs and spooled input, close the run log; safe
        to call twice."""
        if self.runlog is not None:
            self.runlog.close()
        if self.client is not None:
            self.client.close()
            self.client = None
        for state in self.files:
            if state.writer is not None:
                state.writer.abort()
                state.writer = None
        for path in self._spooled:
            path.unlink(missing_ok=True)
        self._spooled.clear()


def _cause(job: Job, error: FileError) -> str:
    """An error's message for the result of ``job``, which names the input
    already: the cause alone, or the other file it is about and the cause."""
    return error.cause if error.path == job.source else str(error)
