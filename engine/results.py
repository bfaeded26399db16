"""What a batch run reports: each input's outcome, and how far the run is.

Kept apart from :mod:`denoise.engine.batch` (which plans the files and
yields these) and :mod:`denoise.engine.schedule` (which runs the stages and
makes most of them), so that both import them from here and neither imports
the other for them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from denoise.engine.errors import FileError
from denoise.engine.report import FileReport


@dataclass
class FileResult:
    """The outcome for one input; ``status`` is done, skipped, failed or
    planned. ``error`` is the cause of a failure (the input is named in
    ``input``), ``reason`` why a file was skipped, ``warnings`` what was
    wrong without stopping it. ``gain_db`` is the loudness gain finishing
    applied (``None`` without a loudness target). ``relative`` is the
    output's path under the output root. ``repairs`` says what the repair
    stages found and did (hum: its frequency and harmonics, or that there
    was none). ``report`` is what measuring found, when the batch measures."""

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
    repairs: list[str] = field(default_factory=list)
    report: FileReport | None = None

    @property
    def realtime_factor(self) -> float | None:
        """Processing seconds per second of audio (below 1 is faster than real time)."""
        if self.seconds is None or not self.duration_s:
            return None
        return self.seconds / self.duration_s

    def to_dict(self) -> dict:
        """The JSON record (``--json``): the outcome, without the report."""
        record = {name: value for name, value in asdict(self).items() if name != "report"}
        record["realtime_factor"] = self.realtime_factor
        return record


@dataclass(frozen=True)
class Progress:
    """How far a run is, as ``Batch.run(on_progress=...)`` hears it."""

    files_done: int
    files_total: int
    audio_s_done: float
    audio_s_total: float


def cause_for(source: str, error: FileError) -> str:
    """An error's message for the result of ``source``, which names the
    input already: the cause alone, or the other file it is about and the
    cause."""
    return error.cause if error.path == source else str(error)
