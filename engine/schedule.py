"""Running a planned batch's stages over a pool (see :mod:`denoise.engine.batch`).

Tasks are submitted in this order of preference: a file's completion (it
ends a file and frees its staging copy), then the next chunks (or the
statistics pre-pass) in file order. At most ``TASKS_PER_WORKER`` tasks per
worker are in flight, so this process holds at most that many chunk outputs
waiting to be put in order, and starts no new file while completions wait:
memory stays bounded however slow a stage is.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import shutil
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator


from denoise.engine import backends
from denoise.engine.audio_io import STDIO, AtomicWriter, remove_abandoned
from denoise.engine.chunking import Chunk, OverlapAdd, plan_chunks
from denoise.engine.completion import Completed, Completion, Mux, complete, decode, mux
from denoise.engine.errors import FileError
from denoise.engine.finishing import Output, residue_path
from denoise.engine.pipeline import (ChunkResult, ChunkTask, FileStats, Shaping, file_statistics,
                                     run_chunks, wants_stats, worker_backend)
from denoise.engine.pool import Cluster, InProcess, LocalProcesses, LocalThreads
from denoise.engine.report import FileReport
from denoise.engine.results import FileResult, Progress, cause_for

TASKS_PER_WORKER = 2
# Margin for the resampling filters' own reach at chunk edges.
RESAMPLE_CONTEXT_S = 0.01
# What a worker process costs before its first chunk: starting Python and
# importing torch and the engine (measured 2.3-3.2 s on a 2-core machine).
# With the default pool size, a batch gets worker processes only when its
# work outweighs this.
WORKER_START_S = 2.5


def default_jobs() -> int:
    """The cores this process may run on: the most workers a pool gets
    unless asked for more."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class _File:
    """A file going through the stages."""

    planned: object  # batch.Planned
    chunks: list[Chunk]
    stats: FileStats | None = None
    statistics: str = "none"  # none, asked, ready
    submitted: int = 0  # chunks handed to the pool
    next_index: int = 0  # the next chunk to put in place
    waiting: dict[int, ChunkResult] = field(default_factory=dict)
    ola: OverlapAdd = field(default_factory=OverlapAdd)
    sink: Output | AtomicWriter | None = None
    completing: bool = False
    seconds: float = 0.0
    error: str | None = None
    done: bool = False


class Run:
    """One run of a batch: the pool, the files in flight, the results."""

    def __init__(self, batch):
        self.batch, options = batch, batch.options
        self.spec = options.spec()
        self.backend = backends.build(self.spec)  # cheap: the model loads where it enhances
        self.backend.prepare()
        self.shaping = Shaping(options.channels,
                               None if self.backend.owns_gain_floor else options.atten_lim_db or None,
                               options.dry, options.full_band, options.dehum, options.dereverb)
        self.wants_stats = wants_stats(self.backend) or options.dehum != "off"
        self.files = [_File(planned, self._chunks(planned.info)) for planned in batch.files]
        self.per_call = max(1, self.backend.chunks_per_call(self._longest_chunk_s()))
        self.pool, self.threads = self._open_pool()
        self.limit = TASKS_PER_WORKER * self.pool.workers
        self.in_flight: dict[cf.Future, tuple[str, object]] = {}
        self.completions: deque[_File] = deque()
        self.cursor = 0  # the first file whose chunks are not all submitted
        self.audio_done, self.files_done = 0.0, 0
        # The tracks of media files that are written into a container, by
        # their own (private) output: their results make one file's result.
        self.tracks = {file.planned.job.output: file for file in self.files
                       if file.planned.media is not None and file.planned.media.mux}
        self.members: dict[int, list[_File]] = {}  # a media job's tracks, by id(media job)
        for file in self.files:
            if file.planned.media is not None:
                self.members.setdefault(id(file.planned.media), []).append(file)
        self.muxing: list = []  # media jobs whose output is being written

    # -- planning ------------------------------------------------------------

    def _chunks(self, info) -> list[Chunk]:
        sample_rate = info.sample_rate
        before, after = self.backend.context_samples(sample_rate)
        margin = round(RESAMPLE_CONTEXT_S * sample_rate)
        segment = max(1, round((self.batch.options.segment_s or self.backend.segment_s) * sample_rate))
        overlap = min(round(self.batch.options.overlap_s * sample_rate), segment - 1)
        return plan_chunks(info.samples, segment, overlap, before + margin, after + margin,
                           align=self.backend.alignment(sample_rate))

    def _longest_chunk_s(self) -> float:
        return max((c.read_stop - c.read_start) / f.planned.info.sample_rate
                   for f in self.files for c in f.chunks)

    def _members(self, media_job) -> list[_File]:
        return self.members[id(media_job)]

    def _open_pool(self):
        """The pool and the torch threads each task may use. One process
        where it must (a GPU batching chunks; standard output) or where
        workers would not pay for their start; threads of this process for
        a backend that runs outside the GIL."""
        options = self.batch.options
        if options.cluster:
            return Cluster(options.cluster), 1
        jobs = self._pool_size()
        threads = max(1, default_jobs() // jobs)
        if self.per_call == 1 and jobs > 1 and self.backend.parallel_in_threads:
            worker_backend(self.spec, threads, built=self.backend)
            return LocalThreads(jobs), threads
        if self.per_call > 1 or self.batch.stdout is not None or jobs == 1:
            worker_backend(self.spec, default_jobs(), built=self.backend)
            return InProcess(), default_jobs()
        return LocalProcesses(jobs), threads

    def _pool_size(self) -> int:
        """Workers: as asked; else one per core, threads at once (they cost
        nothing to start), processes as long as the work is worth starting
        them (a process that is already running finishes a small batch
        sooner than new workers that import torch)."""
        tasks = sum(len(file.chunks) for file in self.files)
        if self.batch.options.jobs:
            return max(1, min(self.batch.options.jobs, tasks))
        cores = min(default_jobs(), tasks)
        if self.backend.parallel_in_threads:
            return cores
        work_s = sum(file.planned.info.duration_s * (1 if self.shaping.enhances_mix
                                                     else file.planned.info.channels)
                     for file in self.files) * self.backend.compute_s_per_audio_s
        # Worth it when work / n + start < work, i.e. work > start * n / (n - 1).
        if cores < 2 or work_s <= WORKER_START_S * cores / (cores - 1):
            return 1
        return cores

    # -- the loop ------------------------------------------------------------

    def results(self, on_progress: Callable | None) -> Iterator:
        total = sum(file.planned.info.duration_s for file in self.files)
        while True:
            while len(self.in_flight) < self.limit and self._submit_next():
                pass
            if not self.in_flight:
                return
            done, _ = cf.wait(self.in_flight, return_when=cf.FIRST_COMPLETED)
            for future in done:
                kind, subject = self.in_flight.pop(future)
                yield from self._by_file(self._take(kind, subject, future))
            if on_progress is not None:
                on_progress(Progress(self.files_done, len(self.files), self.audio_done, total))

    def _submit_next(self) -> bool:
        """Hand the pool the most useful next task; False if none is ready."""
        if self.completions:
            file = self.completions.popleft()
            self._submit("complete", file, complete, self._completion(file))
            return True
        group: list[ChunkTask] = []
        for file in self.files[self.cursor:]:
            if file.error is not None or file.submitted == len(file.chunks):
                if self.cursor < len(self.files) and file is self.files[self.cursor]:
                    self.cursor += 1
                continue
            media_job = file.planned.media
            if media_job is not None and media_job.decoded is None:
                if group:
                    break
                if not media_job.decode_asked:
                    media_job.decode_asked = True
                    self._submit("decode", media_job, decode, str(media_job.path),
                                 list(media_job.tracks), str(media_job.folder), self.threads)
                    return True
                continue  # being decoded: look further ahead for work
            if self.wants_stats and file.statistics != "ready":
                if group:
                    break
                if file.statistics == "none":
                    file.statistics = "asked"
                    info = file.planned.info
                    self._submit("statistics", file, file_statistics, str(file.planned.path),
                                 info, self.shaping.enhances_mix, self.threads, self.shaping.dehum)
                    return True
                continue  # its statistics are on their way: look further ahead for work
            while file.submitted < len(file.chunks) and len(group) < self.per_call:
                chunk = file.chunks[file.submitted]
                stats = None if file.stats is None else file.stats.span(chunk.read_start,
                                                                          chunk.read_stop)
                group.append(ChunkTask(file.planned.file_id, str(file.planned.path),
                                       file.planned.info.sample_rate, chunk, stats))
                file.submitted += 1
            if len(group) == self.per_call:
                break
        if not group:
            return False
        self._submit("chunks", group, run_chunks, self.spec, self.threads, group, self.shaping)
        return True

    def _submit(self, kind: str, subject, function, *args) -> None:
        self.batch.tasks[kind] += len(subject) if kind == "chunks" else 1
        self.in_flight[self.pool.submit(function, *args)] = (kind, subject)

    def _take(self, kind: str, subject, future: cf.Future) -> Iterator:
        """Take a finished task's outcome; yields the files it finishes."""
        error = future.exception()
        if kind == "statistics":
            stats, cause = (None, _task_failure(error)) if error else future.result()
            subject.stats, subject.statistics = stats, "ready"
            if cause is not None:
                yield from self._fail(subject, cause)
        elif kind == "chunks":
            results = ([ChunkResult(task.file_id, task.chunk, None, _task_failure(error), 0.0)
                        for task in subject] if error else future.result())
            for result in results:
                yield from self._assemble(self.files[result.file_id], result)
        elif kind == "decode":
            decoded, cause, seconds = (None, _task_failure(error), 0.0) if error \
                else future.result()
            members = self._members(subject)
            if subject.mux:
                subject.seconds += seconds
            else:  # the one track's own result says what the file took
                members[0].seconds += seconds
            if cause is not None:
                for member in members:
                    yield from self._fail(member, cause)
                return
            subject.decoded = decoded
            for member, track in zip(members, decoded):
                planned = member.planned
                planned.path = Path(track.path)
                planned.info = replace(planned.info, samples=track.samples)
                member.chunks = self._chunks(planned.info)
        elif kind == "mux":
            self.muxing.remove(subject)
            cause, seconds = (_task_failure(error), 0.0) if error else future.result()
            subject.seconds += seconds
            yield self._media_result(subject, cause)
        else:
            yield from self._completed(subject, Completed(error=_task_failure(error))
                                       if error else future.result())

    # -- media files ---------------------------------------------------------

    def _by_file(self, results: Iterator) -> Iterator:
        """Results as the user sees them: a media file's tracks make one
        result, once its output is written from them (or one has failed)."""
        for result in results:
            file = self.tracks.get(result.output)
            if file is None:
                yield result
                continue
            media_job = file.planned.media
            if media_job.failed:
                continue
            media_job.results.append(result)
            if result.status == "failed":
                media_job.failed = True
                for member in self._members(media_job):
                    for _ in self._fail(member, result.error):
                        pass  # its siblings stop: the file has failed
                yield self._media_result(media_job, result.error)
            elif len(media_job.results) == len(media_job.tracks):
                self.muxing.append(media_job)
                self._submit("mux", media_job, mux, self._mux(media_job))

    def _mux(self, media_job) -> Mux:
        job = media_job.job
        enhanced = {track.index: (decoded, str(media_job.enhanced_path(track)))
                    for track, decoded in zip(media_job.tracks, media_job.decoded)}
        return Mux(str(media_job.path), job.source, job.output,
                   media_job.muxer, enhanced, media_job.audio_only, self.threads,
                   self.batch.stdout if job.output == STDIO else None)

    def _media_result(self, media_job, cause: str | None):
        """The one result of a media file written from its enhanced tracks."""
        job, tracks = media_job.job, media_job.results
        first = tracks[0] if tracks else None
        result = FileResult(job.source, job.output, "failed" if cause else "done",
                            first.duration_s if first else None,
                            media_job.seconds + sum(track.seconds or 0.0 for track in tracks),
                            cause,
                            sum(track.clipped_samples for track in tracks),
                            warnings=[w for track in tracks for w in track.warnings],
                            gain_db=first.gain_db if first else None, relative=job.relative)
        if self.batch.measure.wanted:
            result.report = FileReport.of(result)
            if first is not None and first.report is not None and not cause:
                result.report = replace(first.report, input=result.input, output=result.output,
                                        seconds=result.seconds,
                                        realtime_factor=result.realtime_factor)
        shutil.rmtree(media_job.folder, ignore_errors=True)  # its decoded and enhanced copies
        self.batch.log_result(self._members(media_job)[0].planned, result)
        return result

    # -- assembly and completion --------------------------------------------

    def _assemble(self, file: _File, result: ChunkResult) -> Iterator:
        """Put one chunk's output in place; once the last is in, the file
        goes on to completion (or is done)."""
        pid, builds = result.worker
        self.batch.builds_per_worker[pid] = max(builds, self.batch.builds_per_worker.get(pid, 0))
        if file.error is not None:
            return
        chunk = result.chunk
        # Each sample once: a chunk's overlap with the next is the next's.
        self.audio_done += (chunk.keep_stop - chunk.keep_start - chunk.fade_out) \
            / file.planned.info.sample_rate
        file.seconds += result.seconds
        if result.error is not None:
            yield from self._fail(file, result.error)
            return
        file.waiting[chunk.index] = result
        try:
            while file.next_index in file.waiting:
                ready = file.waiting.pop(file.next_index)
                if file.sink is None:
                    file.sink = self._sink(file)
                file.sink.write(file.ola.add(ready.chunk, ready.kept))
                file.next_index += 1
            if file.next_index < len(file.chunks):
                return
            if isinstance(file.sink, Output):  # nothing to finish or measure
                file.sink.finish()
                file.sink.commit()
                clipped, file.sink = file.sink.clipped, None
                yield self._done(file, Completed(clipped=clipped))
            else:
                file.sink.close()
                file.completing = True
                self.completions.append(file)
        except FileError as error:
            yield from self._fail(file, _cause(file, error))
        except BrokenPipeError:  # the reader of '-o -' went away: no file's fault
            raise
        except OSError as error:
            yield from self._fail(file, f"{file.planned.job.output}: write failed "
                                        f"({error.strerror or error})")

    def _needs_completion(self, file: _File) -> bool:
        finishing = self.batch.options.finishing
        return (finishing.target_lufs(file.planned.info.channels) is not None
                or finishing.ceiling_dbtp() is not None or finishing.residue
                or finishing.levels() or self.batch.measure.wanted)

    def _sink(self, file: _File):
        """Where the joined chunks go: the output itself, or a hidden float
        staging copy beside it for the completion task to finish."""
        planned = file.planned
        info = planned.info
        if self._needs_completion(file):
            return AtomicWriter(planned.job.output, info.sample_rate, info.channels, "W64", "FLOAT")
        return Output(planned.job.output, info.sample_rate, info.channels, planned.fmt,
                      planned.subtype, self.batch.options.finishing,
                      self.batch.stdout if planned.job.output == STDIO else None)

    def _completion(self, file: _File) -> Completion:
        planned = file.planned
        return Completion(str(planned.path), planned.job.source, planned.job.output,
                          planned.job.relative, planned.info, planned.fmt, planned.subtype,
                          self.batch.options.finishing, self.batch.measure,
                          str(file.sink.temporary), self.threads,
                          f"{Path(planned.job.source).name} - {self.batch.options.method}",
                          self.batch.stdout if planned.job.output == STDIO else None,
                          *_shown_output(planned))

    def _completed(self, file: _File, completed: Completed) -> Iterator:
        file.completing = False
        if file.sink is not None:
            file.sink.abort()  # the staging copy: the output is written, or failed
            file.sink = None
        if completed.error is not None:
            yield from self._fail(file, completed.error)
        else:
            yield self._done(file, completed)

    def _done(self, file: _File, completed: Completed):
        file.done = True
        self.files_done += 1
        planned = file.planned
        result = planned.result("done", seconds=file.seconds, clipped_samples=completed.clipped,
                                gain_db=completed.gain_db,
                                repairs=self._repairs(file, completed))
        if self.batch.measure.wanted:
            result.report = FileReport.of(result, completed.measurements, planned.info.sample_rate,
                                          planned.info.channels)
        self.batch.log(planned, result)
        return result

    def _repairs(self, file: _File, completed: Completed) -> list[str]:
        """What the repair stages and the leveler found in ``file`` and did,
        in words."""
        lines = []
        hums = file.stats.hums if self.shaping.dehum != "off" and file.stats is not None else None
        if hums is not None and not any(hums):
            lines.append("no hum found: passed as it was")
        elif hums is not None and len(hums) == 1:
            lines.append(hums[0].describe() + ", taken out")
        elif hums is not None:
            lines += [f"channel {row + 1}: " + (hum.describe() + ", taken out" if hum else "no hum")
                      for row, hum in enumerate(hums)]
        if self.shaping.dereverb:
            lines.append(f"late reverberation taken out (WPE, strength {self.shaping.dereverb:g}); "
                         "the report's decay s says how fast speech now dies away")
        if completed.leveling is not None:
            lines.append(completed.leveling.describe())
        return lines

    def _fail(self, file: _File, cause: str) -> Iterator:
        if file.error is not None or file.done:
            return
        file.error = cause
        file.waiting.clear()
        if file.sink is not None:
            file.sink.abort()
            file.sink = None
        self.files_done += 1
        result = file.planned.result("failed", seconds=file.seconds, error=cause)
        if self.batch.measure.wanted:
            result.report = FileReport.of(result)
        self.batch.log(file.planned, result)
        yield result

    # -- the end ---------------------------------------------------------------

    def stop(self) -> None:
        """An interrupted run: stop the workers at once, then remove what
        they were writing (their locks went with them)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        for file in self.files:
            if file.completing:
                target = file.planned.job.output
                for path in (target, residue_path(target)):
                    if path != STDIO:
                        remove_abandoned(Path(path))
        for media_job in self.muxing:
            if media_job.job.output != STDIO:
                remove_abandoned(Path(media_job.job.output))

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for file in self.files:
            if file.sink is not None:
                file.sink.abort()
                file.sink = None


def _shown_output(planned) -> tuple[str | None, int | None]:
    """A media track's output as the user knows it: the file it goes into,
    and which of its tracks where it has several."""
    media_job = planned.media
    if media_job is None or not media_job.mux:
        return None, None
    several = len(media_job.tracks) > 1
    return media_job.job.output, planned.track.number if several else None


def _task_failure(error: BaseException) -> str:
    """A task that raised (a worker process that died, a bug)."""
    return f"internal error: {type(error).__name__}: {error}"


def _cause(file: _File, error: FileError) -> str:
    return cause_for(file.planned.job.source, error)
