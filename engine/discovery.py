"""Turning the command line's inputs into (input file, output path) pairs.

Folders are walked (recursively on request) and only audio files are taken;
the relative tree is mirrored under the output folder with the same file
names. A single input file may instead go to an output file path.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

from denoise.engine.audio_io import AUDIO_SUFFIXES, STDIO, SUFFIX_FORMATS
from denoise.engine.errors import FileError, UsageError


@dataclass(frozen=True)
class Job:
    """One file to enhance. ``source`` is what the user named (``-`` for stdin)."""

    source: str
    output: str


def walk(folder: Path, recursive: bool, pattern: str | None) -> list[Path]:
    """Audio files in ``folder`` (sorted), skipping hidden names and non-audio."""
    if recursive:
        candidates = (Path(root) / name
                      for root, dirs, names in os.walk(folder)
                      if not _hidden_below(Path(root), folder)
                      for name in names)
    else:
        candidates = (entry for entry in folder.iterdir() if entry.is_file())
    found = []
    for path in candidates:
        if path.name.startswith(".") or path.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        relative = path.relative_to(folder).as_posix()
        if pattern and not (fnmatch.fnmatch(path.name, pattern)
                            or fnmatch.fnmatch(relative, pattern)):
            continue
        found.append(path)
    return sorted(found)


def _hidden_below(root: Path, top: Path) -> bool:
    return any(part.startswith(".") for part in root.relative_to(top).parts)


def _with_format_suffix(path: Path, fmt: str | None) -> Path:
    """Rename the suffix when ``--format`` asks for another container."""
    if fmt is None or SUFFIX_FORMATS.get(path.suffix.lower()) == fmt.upper():
        return path
    suffix = next((s for s, f in SUFFIX_FORMATS.items() if f == fmt.upper()), "." + fmt.lower())
    return path.with_suffix(suffix)


def plan_jobs(inputs: list[str], output: str, *, recursive: bool = False,
              pattern: str | None = None, overwrite: bool = False,
              fmt: str | None = None) -> tuple[list[Job], list[FileError]]:
    """Pair every input file with its output path.

    Returns the jobs and the inputs that could not be taken (missing paths,
    two inputs mapping to one output). Raises :class:`UsageError` for a
    request that makes no sense as a whole.
    """
    if not inputs:
        raise UsageError("no INPUT given")
    if STDIO in inputs and len(inputs) > 1:
        raise UsageError("'-' (standard input) cannot be mixed with other inputs")
    out = Path(output)
    to_file = output == STDIO or (
        len(inputs) == 1 and not Path(inputs[0]).is_dir()
        and not out.is_dir() and out.suffix.lower() in AUDIO_SUFFIXES)
    if output == STDIO and (len(inputs) != 1 or Path(inputs[0]).is_dir()):
        raise UsageError("'-o -' (standard output) takes exactly one input file")

    jobs: list[Job] = []
    errors: list[FileError] = []
    for source in inputs:
        path = Path(source)
        if source == STDIO:
            target = output if to_file else str(_with_format_suffix(out / "stdin.wav", fmt))
            jobs.append(Job(source, target))
        elif path.is_dir():
            _refuse_in_place(path, out, overwrite)
            for found in walk(path, recursive, pattern):
                target = _with_format_suffix(out / found.relative_to(path), fmt)
                jobs.append(Job(str(found), str(target)))
        elif not path.exists():
            errors.append(FileError(path, "no such file or folder"))
        else:
            target = output if to_file else str(_with_format_suffix(out / path.name, fmt))
            if target != STDIO:
                _refuse_in_place(path, Path(target), overwrite)
            jobs.append(Job(source, target))
    return _drop_collisions(jobs, errors)


def _refuse_in_place(source: Path, target: Path, overwrite: bool) -> None:
    """Writing over the originals (same folder or same file) needs --overwrite."""
    if overwrite or source.resolve() != target.resolve():
        return
    kind = "folder" if source.is_dir() else "file"
    raise UsageError(f"output {target} is the input {kind}: the enhanced files would "
                     "replace the originals; choose another -o or pass --overwrite")


def _drop_collisions(jobs: list[Job], errors: list[FileError]) -> tuple[list[Job], list[FileError]]:
    """Two inputs must never write the same output; the later one fails."""
    seen: dict[str, str] = {}
    kept = []
    for job in jobs:
        key = job.output if job.output == STDIO else str(Path(job.output).resolve())
        if key in seen:
            errors.append(FileError(job.source, f"its output {job.output} is also the "
                                                f"output of {seen[key]}; skipped"))
            continue
        seen[key] = job.source
        kept.append(job)
    return kept, errors
