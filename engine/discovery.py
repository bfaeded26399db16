"""Turning the command line's inputs into (input file, output path) pairs.

Folders are walked (recursively on request) and only audio and video files
are taken (by extension, or by content where the extension is unknown);
the relative tree is mirrored under the output folder with the same file
names. A single input file may instead go to an output file path. The output
folder itself is never walked, even when it lies inside an input folder, so a
second run does not enhance the first run's outputs.

What was left out is counted (subfolders not entered, files a ``--glob``
did not match), so a run can say why it found less than the user expected.
"""

from __future__ import annotations

import fnmatch
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from denoise.engine.audio_io import AUDIO_SUFFIXES, STDIO, SUFFIX_FORMATS
from denoise.engine.errors import FileError, UsageError
from denoise.engine.media import AUDIO_SUFFIX_OF, MUXERS, is_media

# What a folder walk takes by its extension: what libsndfile reads, and the
# containers FFmpeg reads (M4A, WebM, WMA, video).
MEDIA_SUFFIXES = AUDIO_SUFFIXES | frozenset(MUXERS) | {".amr", ".mp2", ".m2ts", ".mts", ".flv"}
# Files a walk never opens to look inside: pictures, documents, subtitles.
_NOT_MEDIA = frozenset({".txt", ".md", ".pdf", ".doc", ".docx", ".jpg", ".jpeg", ".png", ".gif",
                        ".srt", ".vtt", ".json", ".csv", ".xml", ".html", ".log", ".py"})


@dataclass(frozen=True)
class Job:
    """One file to enhance. ``source`` is what the user named (``-`` for
    stdin); ``relative`` is the output's path under the output root (for an
    output file: its name)."""

    source: str
    output: str
    relative: str = ""

    @property
    def output_root(self) -> Path | None:
        """The folder the outputs are mirrored into (for an output file: its
        folder); ``None`` for standard output."""
        if self.output == STDIO:
            return None
        root = Path(self.output)
        for _ in Path(self.relative or Path(self.output).name).parts:
            root = root.parent
        return root


@dataclass
class Plan:
    """The jobs of a run, the inputs that could not be taken, and what a
    folder walk left out."""

    jobs: list[Job] = field(default_factory=list)
    problems: list[FileError] = field(default_factory=list)
    folders_not_entered: int = 0
    unmatched: int = 0  # audio files that --glob left out

    def left_out(self) -> list[str]:
        """What was not taken and why, one phrase each (empty if nothing)."""
        notes = []
        if self.folders_not_entered:
            notes.append(f"{counted(self.folders_not_entered, 'subfolder')} not entered: "
                         "use --recursive")
        if self.unmatched:
            notes.append(f"{counted(self.unmatched, 'audio file')} not matching --glob")
        return notes


def counted(number: int, noun: str) -> str:
    """``3 files``, ``1 file``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def walk(folder: Path, recursive: bool, pattern: str | None,
         plan: Plan | None = None, skip: Path | None = None) -> list[Path]:
    """Audio and video files in ``folder`` (sorted), skipping hidden names,
    everything else and the folder ``skip`` (the output root). What is left out is counted
    in ``plan``."""
    plan = plan if plan is not None else Plan()
    skip = skip.resolve() if skip is not None else None
    found = []
    for root, dirs, names in os.walk(folder):
        root_path = Path(root)
        entered = [name for name in sorted(dirs) if not name.startswith(".")
                   and (skip is None or (root_path / name).resolve() != skip)]
        if recursive:
            dirs[:] = entered
        else:
            plan.folders_not_entered += len(entered)
            dirs[:] = []
        for name in names:
            path = root_path / name
            suffix = path.suffix.lower()
            if name.startswith("."):
                continue
            if not path.is_file() or not (suffix in MEDIA_SUFFIXES or (
                    suffix not in _NOT_MEDIA and is_media(path))):
                continue
            relative = path.relative_to(folder).as_posix()
            if pattern and not (fnmatch.fnmatch(name, pattern)
                                or fnmatch.fnmatch(relative, pattern)):
                plan.unmatched += 1
                continue
            found.append(path)
    return sorted(found)


def _with_format_suffix(path: Path, fmt: str | None, audio_only: bool = False) -> Path:
    """Rename the suffix when ``--format`` asks for another container, or
    ``--audio-only`` for a video's audio flavour (``.mp4`` -> ``.m4a``)."""
    if audio_only and fmt is None and path.suffix.lower() in AUDIO_SUFFIX_OF:
        return path.with_suffix(AUDIO_SUFFIX_OF[path.suffix.lower()])
    if fmt is None or SUFFIX_FORMATS.get(path.suffix.lower()) == fmt.upper():
        return path
    suffix = next((s for s, f in SUFFIX_FORMATS.items() if f == fmt.upper()), "." + fmt.lower())
    return path.with_suffix(suffix)


def writes_one_file(inputs: list[str], output: str) -> bool:
    """Whether ``output`` is one output file (or standard output) rather than
    a folder: one input that is not a folder, and an ``output`` named like
    a recording (an audio or media extension), not ending in a slash."""
    if output == STDIO:
        return True
    suffix = Path(output).suffix.lower()
    return (len(inputs) == 1 and not Path(inputs[0]).is_dir()
            and not output.endswith(("/", os.sep)) and not Path(output).is_dir()
            and suffix in MEDIA_SUFFIXES)


def plan_jobs(inputs: list[str], output: str, *, recursive: bool = False,
              pattern: str | None = None, overwrite: bool = False,
              fmt: str | None = None, audio_only: bool = False) -> Plan:
    """Pair every input file with its output path.

    The plan lists the jobs, the inputs that could not be taken (missing
    paths, two inputs mapping to one output) and what the folder walks left
    out. Raises :class:`UsageError` for a request that makes no sense as a
    whole: an output that cannot be written, or no input found at all.
    """
    if not inputs:
        raise UsageError("no INPUT given")
    if STDIO in inputs and len(inputs) > 1:
        raise UsageError("'-' (standard input) cannot be mixed with other inputs")
    to_file = writes_one_file(inputs, output)
    if output == STDIO and (len(inputs) != 1 or Path(inputs[0]).is_dir()):
        raise UsageError("'-o -' (standard output) takes exactly one input file")
    out = Path(output)
    writable = set(SUFFIX_FORMATS) | set(MUXERS)
    if to_file and output != STDIO and out.suffix.lower() not in writable:
        raise UsageError(f"cannot write {out.suffix} files; name the output with one of "
                         f"{' '.join(sorted(writable))}")
    if not to_file and not out.is_dir() and out.suffix.lower() in MEDIA_SUFFIXES:
        several = f"{len(inputs)} inputs need" if len(inputs) > 1 else "a folder input needs"
        raise UsageError(f"-o {out} is named like a file, but {several} an output folder; "
                         "name a folder, or give one input file")
    if output != STDIO:
        check_writable(out, to_file)

    plan = Plan()
    for source in inputs:
        path = Path(source)
        if source == STDIO:
            target = output if to_file else str(_with_format_suffix(out / "stdin.wav", fmt))
            plan.jobs.append(Job(source, target, Path(target).name))
        elif path.is_dir():
            _refuse_in_place(path, out, overwrite)
            for found in walk(path, recursive, pattern, plan, skip=out):
                relative = _with_format_suffix(found.relative_to(path), fmt, audio_only)
                plan.jobs.append(Job(str(found), str(out / relative), relative.as_posix()))
        elif not path.exists():
            plan.problems.append(FileError(path, "no such file or folder"))
        else:
            target = output if to_file else str(_with_format_suffix(out / path.name, fmt,
                                                                     audio_only))
            if target != STDIO:
                _refuse_in_place(path, Path(target), overwrite)
            plan.jobs.append(Job(source, target, Path(target).name))
    _drop_collisions(plan)
    if not plan.jobs and not plan.problems:
        named = ", ".join(inputs)
        notes = plan.left_out()
        raise UsageError(f"no audio files found in {named}"
                         + (f"; {'; '.join(notes)}" if notes else ""))
    return plan


def check_writable(out: Path, to_file: bool) -> None:
    """Refuse, once for the whole run, an output that cannot be written: a
    file where a folder is needed, a folder under a file, a place where no
    file can be created."""
    folder = out.parent if to_file else out
    if not to_file and out.exists() and not out.is_dir():
        raise UsageError(f"-o {out} is a file; with a folder or several inputs, -o must "
                         "be a folder")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"cannot write to -o {out}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise UsageError(f"cannot write to -o {out}: {existing} is not writable "
                         f"({error.strerror or error})") from None


def _refuse_in_place(source: Path, target: Path, overwrite: bool) -> None:
    """Writing over the originals (same folder or same file) needs --overwrite."""
    if overwrite or source.resolve() != target.resolve():
        return
    kind = "folder" if source.is_dir() else "file"
    raise UsageError(f"output {target} is the input {kind}: the enhanced files would "
                     "replace the originals; choose another -o or pass --overwrite")


def _drop_collisions(plan: Plan) -> None:
    """Two inputs must never write the same output; the later one fails."""
    seen: dict[str, str] = {}
    kept = []
    for job in plan.jobs:
        key = job.output if job.output == STDIO else str(Path(job.output).resolve())
        if key in seen:
            plan.problems.append(FileError(job.source, f"its output {job.output} is also "
                                                       f"the output of {seen[key]}; skipped"))
            continue
        seen[key] = job.source
        kept.append(job)
    plan.jobs = kept
