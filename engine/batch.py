"""A batch: the files to enhance, planned, then run through the stages.

Each file flows one way:

1. **plan** (:class:`Batch` itself): each input is probed (its header only)
   and its output format decided. No model is loaded and no audio read, so
   ``planned()`` (``--dry-run``) is instant whatever the method.
2. **statistics** (a pool task, where the backend needs them): the whole
   file's deviation per channel, for DEMUCS's normalisation.
3. **enhancement** (pool tasks): chunks read, enhanced and shaped.
4. **assembly** (this process): chunks put back in order and cross-faded,
   written straight to the output when there is nothing more to do (the clip
   limiter aside), else to a hidden float staging copy.
5. **completion** (a pool task): finishing (loudness, true-peak limiter,
   clip policy, residue) and measuring (levels, scores, plot).

:mod:`denoise.engine.schedule` runs stages 2 to 5 over the pool; this
process orchestrates and writes the run log. What a run yields (each file's
result, progress) is in :mod:`denoise.engine.results`, which both import.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from denoise.engine import backends, media
from denoise.engine.audio_io import (STDIO, SUFFIX_FORMATS, AudioInfo, output_format, probe,
                                     spool_stdin)
from denoise.engine.choices import DEHUM_MODES
from denoise.engine.discovery import Job, counted
from denoise.engine.errors import FileError
from denoise.engine.finishing import Finishing
from denoise.engine.report import FileReport, Measure
from denoise.engine.results import FileResult, Progress, cause_for
from denoise.engine.runlog import RunLog, default_path, input_identity
# default_jobs lives where the pool is sized now; still importable from here.
from denoise.engine.schedule import Run, default_jobs  # noqa: F401


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
    to one per core). ``segment_s`` is the length of the chunks long files
    are cut into (``None``: the backend's own choice), ``overlap_s`` their
    cross-fade. ``dehum``: mains hum (``auto``, ``50`` or ``60`` Hz) looked
    for in each file and taken out before the method (``off``: not looked for);
    ``dereverb``: how much of the late reverberation (0 to 1) is taken out
    after that, before the method.
    """

    method: str = field(default_factory=backends.default_method)
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
    dehum: str = "off"
    dereverb: float = 0.0
    finishing: Finishing = field(default_factory=Finishing)
    audio_track: int | None = None
    audio_only: bool = False

    def __post_init__(self) -> None:
        if self.audio_track is not None and self.audio_track < 1:
            raise ValueError(f"audio_track counts from 1, got {self.audio_track}")
        if self.existing not in ("error", "overwrite", "skip", "resume"):
            raise ValueError(f"existing must be error, overwrite, skip or resume, "
                             f"not {self.existing!r}")
        if not 0 <= self.overlap_s < (self.segment_s or float("inf")):
            raise ValueError("need 0 <= overlap_s < segment_s")
        if self.dehum not in DEHUM_MODES:
            raise ValueError(f"dehum must be one of {', '.join(DEHUM_MODES)}, not {self.dehum!r}")
        if not 0 <= self.dereverb <= 1:
            raise ValueError(f"dereverb must be within [0, 1], got {self.dereverb}")
        if self.atten_lim_db is not None and self.atten_lim_db < 0:
            raise ValueError(f"atten_lim_db must be >= 0 (0: no limit), got {self.atten_lim_db}")
        # The backend's own checks of its options, now rather than when the
        # run builds it: a caller's mistake is refused with the request.
        backends.backend_class(self.method).Options(**self.spec().options)

    def settings(self) -> dict:
        """Everything that shapes an output (not how the run is carried out)."""
        settings = asdict(self)
        for name in ("jobs", "existing", "log", "cluster"):
            settings.pop(name)
        return settings

    def spec(self) -> backends.BackendSpec:
        """The backend to build: an attenuation limit goes to a backend with
        a gain floor of its own, as its option."""
        options = dict(self.backend_options)
        if self.atten_lim_db is not None and backends.backend_class(self.method).owns_gain_floor:
            options["atten_lim_db"] = self.atten_lim_db
        return backends.BackendSpec(self.method, options)

    def describe(self) -> dict[str, str]:
        """The settings that shape the outputs as a person reads them: the
        values in effect (a backend's own defaults filled in), with units."""
        cls = backends.backend_class(self.method)
        text = {"method": self.method, **cls.Options(**self.spec().options).describe()}
        if cls.sample_rate is not None:
            text[f"upper band (files above {cls.sample_rate // 1000} kHz)"] = (
                "restored from the input" if self.full_band else "left out (--band-limit)")
        if not cls.owns_gain_floor:
            text["attenuation limit"] = f"{self.atten_lim_db:g} dB" if self.atten_lim_db \
                else "none"
        text["hum removal"] = {"off": "off", "auto": "50 or 60 Hz, where found"}.get(
            self.dehum, f"{self.dehum} Hz, where found")
        text["dereverberation"] = (f"WPE, strength {self.dereverb:g}" if self.dereverb
                                   else "off")
        text["channels"] = self.channels
        text["dry mix"] = f"{self.dry:g}"
        text["output format"] = " ".join(part for part in (self.fmt, self.subtype) if part) \
            or "as the input"
        text["chunks"] = f"{self.segment_s:g} s" if self.segment_s else "the method's default"
        text["audio tracks of media files"] = (f"track {self.audio_track}" if self.audio_track
                                               else "all")
        if self.audio_only:
            text["video"] = "left out (--audio-only)"
        text.update(self.finishing.describe())
        return text


@dataclass
class Planned:
    """A file ready to run: its job, where its audio is read from, what it
    holds and what to write."""

    file_id: int
    job: Job
    path: Path
    info: AudioInfo
    fmt: str
    subtype: str
    identity: dict | None  # the input's size and time, for the run log
    # A track of a media file: it is decoded before its chunks are read
    # (``path`` is then the decoded copy), and, where ``media.mux``, its
    # enhanced audio goes into the output container with the other streams.
    media: MediaJob | None = None
    track: media.Track | None = None

    def result(self, status: str, **fields) -> FileResult:
        warnings = [self.info.warning] if self.info.warning else []
        return FileResult(self.job.source, self.job.output, status, self.info.duration_s,
                          warnings=warnings, relative=self.job.relative, **fields)


@dataclass
class MediaJob:
    """A media input being enhanced: its job as the user asked for it, the
    tracks chosen, and the private folder for their decoded and enhanced
    copies. ``mux``: the output is a media container written from the
    input's streams (else one track goes to a libsndfile format directly)."""

    job: Job
    path: Path  # the file as read (standard input's spooled copy)
    tracks: tuple[media.Track, ...]
    folder: Path
    mux: bool
    muxer: str | None
    audio_only: bool
    decode_asked: bool = False
    decoded: list[media.Decoded] | None = None
    results: list[FileResult] = field(default_factory=list)  # of its tracks, as each ends
    failed: bool = False
    seconds: float = 0.0  # decoding and writing it

    def enhanced_path(self, track: media.Track) -> Path:
        return self.folder / f"enhanced{track.number}.w64"


class Batch:
    """A planned batch, ready to :meth:`run`; use it as a context manager (or
    call :meth:`close`) so that an interrupted run leaves nothing behind."""

    def __init__(self, jobs: list[Job], options: BatchOptions, stdout: BinaryIO | None = None,
                 measure: Measure = Measure()):
        self.options, self.measure, self.stdout = options, measure, stdout
        log_path = default_path(jobs) if options.log == "auto" else options.log
        self.runlog = RunLog(log_path, options.settings()) if log_path else None
        self.builds_per_worker: dict[int, int] = {}  # model builds seen per worker process
        self.tasks: Counter = Counter()  # chunks, statistics and completions handed out
        self._spooled: list[Path] = []
        self._media_folders: list[Path] = []
        self._run = None
        self.files: list[Planned] = []
        self.early: list[FileResult] = []
        for job in jobs:
            try:
                planned = self._plan(len(self.files), job)
            except FileError as error:
                self.early.append(FileResult(job.source, job.output, "failed",
                                             error=cause_for(job.source, error),
                                             relative=job.relative))
                continue
            if isinstance(planned, str):
                self.early.append(FileResult(job.source, job.output, "skipped", reason=planned,
                                             relative=job.relative))
            elif isinstance(planned, list):
                self.files.extend(planned)
            else:
                self.files.append(planned)
        if measure.wanted:  # a report lists every input, those that never ran too
            for result in self.early:
                result.report = FileReport.of(result)

    def __enter__(self) -> "Batch":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    @property
    def audio_s_total(self) -> float:
        return sum(planned.info.duration_s for planned in self.files)

    def _plan(self, file_id: int, job: Job) -> Planned | str:
        """The file, planned; or why it is skipped."""
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
        identity = input_identity(job.source) if job.source != STDIO else None
        if Path(job.output).suffix.lower() in media.MUXERS:  # M4A, MP4...: FFmpeg writes it
            return self._plan_media(file_id, job, path, identity)
        try:  # name the file as the user did (stdin is spooled to a temporary)
            info = probe(path)
        except FileError as error:
            if not (media.is_media(path) or Path(job.source).suffix.lower() in media.MUXERS):
                raise FileError(job.source, error.cause) from None
            return self._plan_media(file_id, job, path, identity)
        fmt, subtype = output_format(info, job.output, self.options.fmt, self.options.subtype)
        return Planned(file_id, job, path, info, fmt, subtype, identity)

    def _plan_media(self, file_id: int, job: Job, path: Path,
                    identity: dict | None) -> list[Planned]:
        """A file only FFmpeg reads: one planned file per chosen audio track."""
        try:
            found = media.probe_media(path)
        except FileError as error:
            raise FileError(job.source, error.cause) from None
        tracks = found.tracks
        chosen = self.options.audio_track
        if chosen is not None:
            total = len(tracks) + len(found.undecodable)
            if chosen > total:
                raise FileError(job.source, f"has {counted(total, 'audio track')}; "
                                            f"there is no --audio-track {chosen}")
            if chosen in found.undecodable:
                raise FileError(job.source, f"its audio track {chosen} is in a codec FFmpeg "
                                            "cannot decode")
            tracks = tuple(track for track in tracks if track.number == chosen)
        suffix = Path(job.output).suffix.lower()
        direct = (self.options.fmt is not None or suffix in SUFFIX_FORMATS) \
            and suffix not in media.MUXERS
        if direct and len(tracks) > 1:
            raise FileError(job.source, f"has {len(tracks)} audio tracks and a "
                                        f"{(self.options.fmt or suffix.lstrip('.')).upper()} "
                                        "file holds one: choose one with --audio-track N")
        audio_only = self.options.audio_only or suffix in media.AUDIO_ONLY_SUFFIXES
        folder = Path(tempfile.mkdtemp(prefix="denoise-media-"))
        self._media_folders.append(folder)
        muxer = None if direct else media.muxer_for(job.output, found.container,
                                                    found.video and not audio_only)
        group = MediaJob(job, path, tracks, folder, not direct, muxer, audio_only)
        planned = []
        for track in tracks:
            info = AudioInfo(track.samples, track.sample_rate, track.channels,
                             found.describe(), track.codec)
            if direct:
                fmt, subtype = output_format(info, job.output, self.options.fmt,
                                             self.options.subtype)
                member = job
            else:
                fmt, subtype = "W64", "FLOAT"
                member = replace(job, output=str(group.enhanced_path(track)))
            planned.append(Planned(file_id + len(planned), member, path, info, fmt, subtype,
                                   identity, group, track))
        return planned

    def planned(self) -> Iterator[FileResult]:
        """What :meth:`run` would do, without doing it (``--dry-run``)."""
        yield from self.early
        for planned in self.files:
            if planned.media is None or not planned.media.mux:
                yield planned.result("planned")
            elif planned.track == planned.media.tracks[0]:  # one line for the file
                yield replace(planned, job=planned.media.job).result("planned")
        self.close()

    def run(self, on_progress: Callable[[Progress], None] | None = None) -> Iterator[FileResult]:
        """Process every file; yields one result per input as each finishes."""
        yield from self.early
        if not self.files:
            self.close()
            return
        self._run = Run(self)
        try:
            yield from self._run.results(on_progress)
        except BaseException:
            self._run.stop()
            raise
        finally:
            self.close()

    def log(self, planned: Planned, result: FileResult) -> None:
        if planned.media is not None and planned.media.mux:
            return  # one track of several: the whole file's result is logged
        self.log_result(planned, result)

    def log_result(self, planned: Planned, result: FileResult) -> None:
        if self.runlog is not None and planned.identity is not None and result.output != STDIO:
            self.runlog.record(result.input, result.output, result.status, result.error,
                               planned.identity)

    def close(self) -> None:
        """Remove unfinished outputs and spooled input, stop the workers,
        close the run log; safe to call twice."""
        if self._run is not None:
            self._run.close()
            self._run = None
        if self.runlog is not None:
            self.runlog.close()
        for path in self._spooled:
            path.unlink(missing_ok=True)
        self._spooled.clear()
        for folder in self._media_folders:
            shutil.rmtree(folder, ignore_errors=True)
        self._media_folders.clear()
