"""The run log: one JSON line per finished file, so a run can be resumed.

Each line records the input (path, size, modification time), the output,
the settings (and a short hash of them), the outcome and when. Lines are
appended and flushed one at a time, so a run that is killed keeps the record
of every file it finished. ``--resume`` skips an input only when its output
exists and the last record for that output says it was done from the same
input bytes (size and modification time) with the same settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

LOG_NAME = ".denoise-log.jsonl"


def settings_key(settings: dict) -> str:
    """A short, stable hash of the settings that shape an output."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_path(jobs) -> Path | None:
    """In the output root: the ``-o`` folder, or the folder of a single
    output file (``None`` for standard output). The place does not move when
    the set of outputs changes, so ``--resume`` finds it again."""
    roots = {job.output_root for job in jobs} - {None}
    return next(iter(roots)) / LOG_NAME if roots else None


def input_identity(path: str) -> dict:
    stat = os.stat(path)
    return {"input_size": stat.st_size, "input_mtime_ns": stat.st_mtime_ns}


class RunLog:
    """The log at ``path``: what earlier runs recorded, and where this one writes."""

    def __init__(self, path: Path, settings: dict):
        self.path = Path(path)
        self.settings = settings
        self.key = settings_key(settings)
        self.previous: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                    self.previous[record["output"]] = record
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a killed run
        self._handle = None
        self.error: str | None = None  # why the log could not be written, if so

    def is_current(self, source: str, output: str) -> bool:
        """Whether ``output`` was made from ``source`` as it is now, with these
        settings (and so can be kept by ``--resume``)."""
        record = self.previous.get(os.path.abspath(output))
        if record is None or record.get("status") != "done":
            return False
        if record.get("settings_key") != self.key:
            return False
        try:
            return {name: record.get(name) for name in ("input_size", "input_mtime_ns")} \
                == input_identity(source)
        except OSError:
            return False

    def record(self, source: str, output: str, status: str, error: str | None,
               identity: dict) -> None:
        """Append one finished file's line and flush it. A log that cannot be
        written does not stop the run: ``error`` says why, and nothing more
        is tried."""
        if self.error is not None:
            return
        line = {"input": os.path.abspath(source), "output": os.path.abspath(output),
                **identity, "settings_key": self.key, "settings": self.settings,
                "status": status, "error": error,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = open(self.path, "a", encoding="utf-8")
            self._handle.write(json.dumps(line, default=str) + "\n")
            self._handle.flush()
        except OSError as error:
            self.error = error.strerror or str(error)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
