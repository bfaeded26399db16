"""The last stages of a file, as one pool task: finishing, then measuring.

The batch joins a file's enhanced chunks into a hidden float staging copy
and hands this task a :class:`Completion`; the task writes the output from
it (loudness, limiter, clip policy, residue), gathering the output's levels
and picture as it writes and the input's on the same pass, then measures
and plots. Where there is nothing to finish, the batch has written the
output itself and the task only measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from denoise.engine.audio_io import AudioInfo
from denoise.engine.errors import FileError
from denoise.engine.finishing import Finishing, finish
from denoise.engine.pipeline import keep_memory_flat, worker_setup
from denoise.engine.report import Measure, Measurements, Meters, measure


@dataclass(frozen=True)
class Completion:
    """What a worker needs to finish and measure one file. ``source`` is the
    input as read (a spooled copy of standard input too), ``name`` as the
    user gave it; ``staging`` the joined enhanced file, or ``None`` when
    ``target`` is already written."""

    source: str
    name: str
    target: str
    relative: str
    info: AudioInfo
    fmt: str
    subtype: str
    finishing: Finishing
    measure: Measure
    staging: str | None
    threads: int
    title: str = ""
    stdout: BinaryIO | None = None  # only in this process: standard output is not picklable


@dataclass
class Completed:
    """What the task did: samples clipped, the loudness gain, the
    measurements; or why the file failed."""

    clipped: int = 0
    gain_db: float | None = None
    measurements: Measurements | None = None
    error: str | None = None


def complete(job: Completion) -> Completed:
    """Finish and measure one file; a file's failure is returned, not raised."""
    worker_setup(job.threads)
    try:
        return _complete(job)
    finally:
        keep_memory_flat()


def _complete(job: Completion) -> Completed:
    info = job.info
    before = Meters(info.samples, info.sample_rate, info.channels, job.measure)
    after = Meters(info.samples, info.sample_rate, info.channels, job.measure)
    wanted = job.measure.wanted
    try:
        done = Completed()
        if job.staging is not None:
            finished = finish(Path(job.staging), Path(job.source), job.target, info, job.fmt,
                              job.subtype, job.finishing, before if wanted else None,
                              after if wanted else None, job.stdout)
            done = Completed(finished.clipped, finished.gain_db)
        elif wanted:
            after.scan(job.target)
        if wanted:
            if job.staging is None:
                before.scan(job.source)
            done.measurements = measure(job.source, job.target, job.relative, job.measure,
                                        job.title, done.gain_db, before, after)
        return done
    except FileError as error:
        return Completed(error=error.cause if error.path == job.name else str(error))
    except OSError as error:  # a full disk, a folder removed under the run
        return Completed(error=f"{job.target}: write failed ({error.strerror or error})")
