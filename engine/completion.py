"""The last stages of a file, as one pool task: finishing, then measuring.

The batch joins a file's enhanced chunks into a hidden float staging copy
and hands this task a :class:`Completion`; the task writes the output from
it (loudness, limiter, clip policy, residue), gathering the output's levels
and picture as it writes and the input's on the same pass, then measures
and plots. Where there is nothing to finish, the batch has written the
output itself and the task only measures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from denoise.engine.audio_io import AudioInfo, TemporaryFile, copy_to
from denoise.engine.errors import FileError
from denoise.engine.finishing import Finishing, finish
from denoise.engine.leveler import Leveling
from denoise.engine.media import Decoded, Track, decode_tracks, write_media
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
    named: str | None = None  # the output as the user named it, where target is a track of it
    track: int | None = None  # that track's number, where the file has several


@dataclass
class Completed:
    """What the task did: samples clipped, the loudness gain, the leveler's
    gain, the measurements; or why the file failed."""

    clipped: int = 0
    gain_db: float | None = None
    measurements: Measurements | None = None
    error: str | None = None
    leveling: Leveling | None = None


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
            done = Completed(finished.clipped, finished.gain_db, leveling=finished.leveling)
        elif wanted:
            after.scan(job.target)
        if wanted:
            if job.staging is None:
                before.scan(job.source)
            done.measurements = measure(job.source, job.target, job.relative, job.measure,
                                        job.title, done.gain_db, before, after, job.named,
                                        job.track)
        return done
    except FileError as error:
        return Completed(error=error.cause if error.path == job.name else str(error))
    except OSError as error:  # a full disk, a folder removed under the run
        return Completed(error=f"{job.target}: write failed ({error.strerror or error})")


def decode(path: str, tracks: list[Track], folder: str,
           threads: int) -> tuple[list[Decoded] | None, str | None, float]:
    """A media file's chosen tracks decoded into ``folder``, or why not; and
    the seconds it took."""
    worker_setup(threads)
    started = time.perf_counter()
    try:
        return decode_tracks(Path(path), tracks, Path(folder)), None, \
            time.perf_counter() - started
    except FileError as error:
        return None, error.cause, time.perf_counter() - started
    except OSError as error:  # a full disk under the temporary folder
        return None, f"cannot decode into {folder} ({error.strerror or error})", \
            time.perf_counter() - started


@dataclass(frozen=True)
class Mux:
    """What a worker needs to write a media file from its enhanced tracks:
    ``source`` as read, ``name`` as the user gave it, ``enhanced`` the
    tracks by stream index (decoded input, enhanced file)."""

    source: str
    name: str
    target: str
    muxer: str
    enhanced: dict[int, tuple[Decoded, str]]
    audio_only: bool
    threads: int
    stdout: BinaryIO | None = None


def mux(job: Mux) -> tuple[str | None, float]:
    """Write the media file under a temporary name and publish it (or send
    it to standard output); returns why it failed, if it did, and the
    seconds it took."""
    worker_setup(job.threads)
    started = time.perf_counter()
    return _mux(job), time.perf_counter() - started


def _mux(job: Mux) -> str | None:
    try:
        temporary = TemporaryFile(job.target)
        try:
            write_media(job.source, temporary.path, job.muxer, job.enhanced, job.audio_only)
            if job.stdout is not None:
                copy_to(temporary.path, job.stdout)
                temporary.discard()
            else:
                temporary.publish()
        except BaseException:
            temporary.discard()
            raise
    except FileError as error:
        return error.cause if error.path in (job.name, job.source) else str(error)
    except OSError as error:
        return f"{job.target}: write failed ({error.strerror or error})"
    finally:
        keep_memory_flat()
    return None
