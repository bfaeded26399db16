"""What a run measured, per file, and the report files made from it:
``report.json`` (everything), ``report.csv`` (one row per file) and
``report.html`` (one self-contained page a producer can read).

Measuring is the last stage of a file, in the same pool task as its
finishing (:mod:`denoise.engine.completion`): the output's levels and
picture are gathered as it is written, the input's in one more pass, so no
file is read again just to be measured. A Python user gets what the command
line gets:

    measure = Measure(report_dir=Path("report"), plot=True)
    results = list(Batch(plan.jobs, options, measure=measure).run())
    write_reports(Path("report"), [r.report for r in results], options.describe(), wall_s)
"""

from __future__ import annotations

import csv
import html
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from denoise.engine import DISTRIBUTION
from denoise.engine.audio_io import replacing
from denoise.engine.dnsmos import SCORES as DNSMOS_SCORES
from denoise.engine.dnsmos import dnsmos
from denoise.engine.metrics import REFERENCE_METRICS, LevelMeter, reference_scores
from denoise.engine.plots import PlotData, PlotMeter, plot_file

LEVEL_FIELDS = ("peak_dbfs", "rms_dbfs", "clipped", "loudness_lufs", "noise_floor_dbfs",
                "snr_db", "decay_s", "speech_ratio", "speech_lufs")
CSV_FIRST = ("input", "output", "status", "error", "duration_s", "sample_rate", "channels",
             "seconds", "realtime_factor")
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Measure:
    """What to measure of each finished file: levels (for a report in
    ``report_dir``, or with any score), scores against the clean file at the
    output's relative path under ``reference_dir``, DNSMOS, and a before /
    after plot (in ``report_dir/plots``, or beside the output)."""

    report_dir: Path | None = None
    plot: bool = False
    reference_dir: Path | None = None
    dnsmos: bool = False

    @property
    def levels(self) -> bool:
        return bool(self.report_dir or self.reference_dir or self.dnsmos)

    @property
    def wanted(self) -> bool:
        return self.levels or self.plot


class Meters:
    """One side's levels and picture, gathered from ``[T, C]`` blocks in
    order."""

    def __init__(self, samples: int, sample_rate: int, channels: int, measure: Measure):
        self.shape = (samples, sample_rate, channels)
        self.measure = measure
        self.reset()

    def reset(self) -> None:
        samples, sample_rate, channels = self.shape
        self.level = LevelMeter(sample_rate, channels) if self.measure.levels else None
        self.picture = PlotMeter(samples, sample_rate, channels) if self.measure.plot else None

    def add(self, block: np.ndarray) -> None:
        for meter in (self.level, self.picture):
            if meter is not None:
                meter.add(block)

    def scan(self, path: str | Path) -> "Meters":
        """Gather from a whole file, read in blocks."""
        import soundfile as sf

        with sf.SoundFile(str(path)) as audio:
            for block in audio.blocks(blocksize=1 << 20, dtype="float32", always_2d=True):
                self.add(block)
        return self

    def plot_data(self) -> PlotData | None:
        return self.picture.data() if self.picture is not None else None


@dataclass
class Measurements:
    """What measuring one file found: metric values, why any are missing,
    the reference used, the plot written, and why measuring failed if it did."""

    metrics: dict[str, float | int | None] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    reference: str | None = None
    plot: str | None = None
    problem: str | None = None


@dataclass
class FileReport:
    """One input's record: the run's result, levels before (``_in``) and
    after (``_out``), the improvement, reference scores, and why any metric
    is missing."""

    input: str
    output: str
    status: str
    error: str | None = None
    duration_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    seconds: float | None = None
    realtime_factor: float | None = None
    metrics: dict[str, float | int | None] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    reference: str | None = None
    plot: str | None = None
    problem: str | None = None  # why measuring or plotting failed, if it did
    repairs: list[str] = field(default_factory=list)  # what the repair stages found and did

    @classmethod
    def of(cls, result, measurements: Measurements | None = None,
           sample_rate: int | None = None, channels: int | None = None) -> "FileReport":
        """The record of an engine ``FileResult`` and what was measured."""
        found = measurements or Measurements()
        return cls(input=result.input, output=result.output, status=result.status,
                   error=result.error, duration_s=result.duration_s,
                   sample_rate=sample_rate, channels=channels, seconds=result.seconds,
                   realtime_factor=result.realtime_factor, metrics=found.metrics,
                   missing=found.missing, reference=found.reference, plot=found.plot,
                   problem=found.problem, repairs=list(getattr(result, "repairs", [])))

    def row(self) -> dict:
        """The flat CSV row: the run's fields, then every metric column."""
        record = {name: getattr(self, name) for name in CSV_FIRST}
        record.update(self.metrics)
        record["reference"] = self.reference
        record["plot"] = self.plot
        return record


def metric_columns(reference: bool, dnsmos: bool = False, gain: bool = False) -> list[str]:
    """The metric columns, each naming its side: ``peak_dbfs_in``,
    ``peak_dbfs_out``, ..., ``noise_reduction_db`` (net of any loudness
    gain), with finishing ``loudness_gain_db``, then with a reference
    ``pesq_in``, ``pesq_out``, ``pesq_delta`` and so on, then with DNSMOS
    ``dnsmos_sig_in`` ... ``dnsmos_ovrl_delta``."""
    columns = [f"{name}_{side}" for name in LEVEL_FIELDS for side in ("in", "out")]
    columns.append("noise_reduction_db")
    if gain:
        columns.append("loudness_gain_db")
    if reference:
        columns += _compared(REFERENCE_METRICS)
    if dnsmos:
        columns += _compared(f"dnsmos_{score}" for score in DNSMOS_SCORES)
    return columns


def _compared(metrics) -> list[str]:
    return [f"{metric}_{side}" for metric in metrics for side in ("in", "out", "delta")]


def measure(source: str, output: str, relative: str, measure: Measure, title: str,
            gain_db: float | None, before: Meters, after: Meters,
            named: str | None = None, track: int | None = None) -> Measurements:
    """Measure one finished file from its two sides' meters (already fed),
    and score it against its reference and with DNSMOS where asked; draw the
    plot, named after ``named`` (the output as the user named it) where
    ``output`` is a private copy of its audio track number ``track``. A failure here is recorded in ``problem``: the enhanced file stays."""
    found = Measurements()
    try:
        if measure.levels:
            _levels(found, before.level.levels(), after.level.levels(), gain_db)
        if measure.reference_dir is not None:
            _scores(found, reference_for(relative, measure.reference_dir), source, output)
        if measure.dnsmos:
            _add_dnsmos(found, source, output)
        if measure.plot:
            where = plot_path(named or output, relative, measure.report_dir, track)
            found.plot = str(plot_file(before.plot_data(), after.plot_data(), where, title))
    except Exception as error:  # noqa: BLE001 - one file's report must not stop the batch
        return Measurements(problem=f"could not measure or plot ({type(error).__name__}: "
                                    f"{error})")
    return found


def _levels(found: Measurements, before, after, gain_db: float | None) -> None:
    for side, levels in (("in", before), ("out", after)):
        for name in LEVEL_FIELDS:
            key = f"{name}_{side}"
            found.metrics[key] = getattr(levels, name)
            if name in levels.missing:
                found.missing[key] = levels.missing[name]
    floor_in, floor_out = (found.metrics[f"noise_floor_dbfs_{side}"] for side in ("in", "out"))
    # A loudness target raises or lowers the whole file, the noise floor with
    # it: the reduction is counted net of that gain, which is reported too.
    found.metrics["noise_reduction_db"] = (floor_in - floor_out + (gain_db or 0.0)
                                           if None not in (floor_in, floor_out) else None)
    if found.metrics["noise_reduction_db"] is None:
        found.missing["noise_reduction_db"] = "no noise floor on one side"
    if gain_db is not None:
        found.metrics["loudness_gain_db"] = gain_db


def _scores(found: Measurements, reference: Path, source: str, output: str) -> None:
    found.reference = str(reference)
    if not reference.is_file():
        scores, missing = {}, {column: f"no reference file {reference}"
                               for column in _compared(REFERENCE_METRICS)}
    else:
        scores, missing = reference_scores(reference, source, output)
    for column in _compared(REFERENCE_METRICS):
        found.metrics[column] = scores.get(column)
    found.missing.update(missing)


def _add_dnsmos(found: Measurements, before: str, after: str) -> None:
    sides = {"in": dnsmos(before), "out": dnsmos(after)}
    for score in DNSMOS_SCORES:
        values = {}
        for side, (scores, reason) in sides.items():
            values[side] = scores.get(score)
            if reason is not None:
                found.missing[f"dnsmos_{score}_{side}"] = reason
        values["delta"] = (values["out"] - values["in"]
                           if None not in (values["in"], values["out"]) else None)
        if values["delta"] is None:
            found.missing[f"dnsmos_{score}_delta"] = "not scored on one side"
        for side, value in values.items():
            found.metrics[f"dnsmos_{score}_{side}"] = value


def plot_path(output: str, relative: str, report_dir: Path | None,
              track: int | None = None) -> Path:
    """Where a file's plot goes: named after the whole output name, so that
    ``take.wav`` and ``take.flac`` (or ``a/take.wav`` and ``b/take.wav``
    under a report) never share one picture; one per audio ``track`` of a
    file that has several (``talk.mp4.track2.png``)."""
    suffix = f".track{track}.png" if track else ".png"
    if report_dir is None:
        return Path(output).with_name(Path(output).name + suffix)
    return report_dir / "plots" / f"{relative}{suffix}"


def reference_for(relative: str, reference_dir: Path) -> Path:
    """The clean file for an output at ``relative`` under the output root:
    the same relative path under ``reference_dir``, else a file there with
    the same stem and another audio extension."""
    candidate = reference_dir / relative
    if not candidate.exists() and candidate.parent.is_dir():
        for other in sorted(candidate.parent.glob(f"{candidate.stem}.*")):
            return other
    return candidate


def write_reports(folder: Path, reports: list[FileReport], settings: dict[str, str],
                  wall_s: float | None = None) -> dict[str, Path]:
    """``report.json``, ``report.csv`` and ``report.html`` in ``folder``,
    each written under a temporary name and renamed. ``settings`` are the
    effective settings as a person reads them (``BatchOptions.describe()``),
    ``wall_s`` the run's wall-clock time. Returns the files' paths."""
    folder.mkdir(parents=True, exist_ok=True)
    columns = report_columns(reports)
    summary = summarise(reports, columns, wall_s)
    document = {
        "schema": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": settings,
        "versions": _versions(),
        "summary": summary,
        "files": [asdict(report) for report in reports],
    }
    paths = {name: folder / f"report.{name}" for name in ("json", "csv", "html")}
    _write_text(paths["json"], json.dumps(document, indent=2, default=_json_value)
                      + "\n")
    _write_text(paths["csv"], _csv_text(reports, columns))
    _write_text(paths["html"], _html(folder, reports, columns, summary, settings))
    return paths


def report_columns(reports: list[FileReport]) -> list[str]:
    """The metric columns these records have."""
    return metric_columns(any(report.reference for report in reports),
                          any(key.startswith("dnsmos_") for report in reports
                              for key in report.metrics),
                          any("loudness_gain_db" in report.metrics for report in reports))


def summarise(reports: list[FileReport], columns: list[str], wall_s: float | None = None) -> dict:
    """Counts, audio and processing time, the speed, and the mean of every
    metric over the files that have it. ``processing_s`` is the run's wall
    time (as the terminal shows it); ``compute_s`` the files' own
    processing times added up."""
    done = [report for report in reports if report.status == "done"]
    means = {}
    for column in columns:
        values = [report.metrics.get(column) for report in done]
        values = [value for value in values if isinstance(value, (int, float))]
        means[column] = sum(values) / len(values) if values else None
    audio_s = sum(report.duration_s or 0 for report in done)
    compute_s = sum(report.seconds or 0 for report in done)
    processing_s = wall_s if wall_s is not None else compute_s
    return {
        "files": len(reports),
        "done": len(done),
        "skipped": sum(report.status == "skipped" for report in reports),
        "failed": sum(report.status == "failed" for report in reports),
        "audio_s": audio_s,
        "processing_s": processing_s,
        "compute_s": compute_s,
        "realtime_factor": processing_s / audio_s if audio_s else None,
        "mean": means,
    }


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import numpy
    import soundfile
    import torch
    import torchaudio

    try:
        denoise_version = version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a checkout that is not installed
        denoise_version = None
    return {"denoise": denoise_version, "python": platform.python_version(),
            "torch": torch.__version__, "torchaudio": torchaudio.__version__,
            "numpy": numpy.__version__, "soundfile": soundfile.__version__,
            "libsndfile": soundfile.__libsndfile_version__}


def _json_value(value):
    return str(value)


def _write_text(path: Path, text: str) -> None:
    with replacing(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def _csv_text(reports: list[FileReport], columns: list[str]) -> str:
    import io

    buffer = io.StringIO()
    names = list(CSV_FIRST) + columns + ["reference", "plot"]
    writer = csv.DictWriter(buffer, fieldnames=names, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for report in reports:
        writer.writerow({name: "" if value is None else value
                         for name, value in report.row().items()})
    return buffer.getvalue()


HEADINGS = {
    "duration_s": "duration s", "realtime_factor": "RTF", "peak_dbfs": "peak dBFS",
    "rms_dbfs": "RMS dBFS", "clipped": "clipped", "loudness_lufs": "loudness LUFS",
    "noise_floor_dbfs": "noise floor dBFS", "snr_db": "SNR dB", "decay_s": "decay s",
    "speech_ratio": "speech share", "speech_lufs": "speech LUFS",
    "noise_reduction_db": "noise reduction dB", "loudness_gain_db": "loudness gain dB",
    "pesq": "PESQ", "stoi": "STOI",
    "estoi": "ESTOI", "si_sdr": "SI-SDR dB", "dnsmos_sig": "DNSMOS SIG",
    "dnsmos_bak": "DNSMOS BAK", "dnsmos_ovrl": "DNSMOS OVRL",
}

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px}table{border-collapse:collapse;font-size:12px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}
th{background:#f0f0f0;cursor:pointer;position:sticky;top:0}
td.name{text-align:left}td.missing{color:#999}tr.failed td{background:#fdd}
.summary td,.summary th,.means th{text-align:left}.wide{overflow-x:auto}
section.file{margin:24px 0;border-top:1px solid #ccc;padding-top:8px}
section.file img{max-width:100%;border:1px solid #ddd}
audio{vertical-align:middle;margin-right:16px}
"""

SORT_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function(th, col){
  th.addEventListener('click', function(){
    var body = th.closest('table').tBodies[0];
    var rows = Array.from(body.rows);
    var up = th.dataset.order !== 'asc'; th.dataset.order = up ? 'asc' : 'desc';
    rows.sort(function(a, b){
      var x = a.cells[col].dataset.value, y = b.cells[col].dataset.value;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (isNaN(nx) || isNaN(ny)) ? String(x).localeCompare(String(y)) : nx - ny;
      return up ? c : -c;
    });
    rows.forEach(function(r){ body.appendChild(r); });
  });
});
"""


def _heading(column: str) -> str:
    for suffix in ("_in", "_out", "_delta"):
        if column.endswith(suffix):
            base = column[: -len(suffix)]
            side = {"_in": "in", "_out": "out", "_delta": "Δ"}[suffix]
            return f"{HEADINGS.get(base, base)} {side}"
    return HEADINGS.get(column, column)


def _cell(value, missing: str | None = None, digits: str = ".2f") -> str:
    if value is None:
        title = html.escape(missing or "not measured")
        return f'<td class="missing" data-value="" title="{title}">–</td>'
    shown = f"{value:{digits}}" if isinstance(value, float) else str(value)
    return f'<td data-value="{html.escape(str(value))}">{shown}</td>'


def duration_text(seconds: float) -> str:
    """``42.3 s``, ``3 min 12 s``, ``2 h 05 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def speed_text(realtime_factor: float | None) -> str:
    """Processing time per audio time, and what that means: ``RTF 0.012
    (83x faster than real time)``."""
    if not realtime_factor:
        return "–"
    return f"RTF {realtime_factor:.3g} ({1 / realtime_factor:.3g}x faster than real time)" \
        if realtime_factor < 1 else f"RTF {realtime_factor:.3g} (slower than real time)"


def _mean_rows(columns: list[str], means: dict) -> str:
    """One row per metric: its mean before, after, and the change (the mean
    of the files' changes, which is the change of the means)."""
    rows = {}
    for column in columns:
        base, _, side = column.rpartition("_")
        if side not in ("in", "out", "delta"):  # a change in itself: the noise reduction
            base, side = column, "delta"
        rows.setdefault(base, {})[side] = means.get(column)
    for sides in rows.values():
        if sides.get("delta") is None and None not in (sides.get("in"), sides.get("out")):
            sides["delta"] = sides["out"] - sides["in"]
    return "".join(
        f"<tr><th>{HEADINGS.get(base, base)}</th>"
        + "".join(_cell(sides.get(side)) for side in ("in", "out", "delta")) + "</tr>"
        for base, sides in rows.items() if any(value is not None for value in sides.values()))


def _link(folder: Path, path: str) -> str:
    return html.escape(Path(os.path.relpath(Path(path).resolve(), folder.resolve())).as_posix())


def _html(folder: Path, reports: list[FileReport], columns: list[str], summary: dict,
          settings: dict) -> str:
    head = ["file", "status", "duration s", "RTF"] + [_heading(column) for column in columns]
    rows = []
    for report in reports:
        name = html.escape(Path(report.input).name)
        cells = [f'<td class="name" data-value="{name}"><a href="#f{len(rows)}">{name}</a></td>',
                 f'<td class="name" data-value="{report.status}">{report.status}</td>',
                 _cell(report.duration_s), _cell(report.realtime_factor, digits=".3g")]
        cells += [_cell(report.metrics.get(column), report.missing.get(column))
                  for column in columns]
        rows.append(f'<tr class="{report.status}">{"".join(cells)}</tr>')
    sections = []
    for index, report in enumerate(reports):
        parts = [f'<section class="file" id="f{index}"><h2>{html.escape(report.input)}</h2>']
        if report.error:
            parts.append(f"<p>failed: {html.escape(report.error)}</p>")
        parts += [f'<p class="repair">{html.escape(text)}</p>' for text in report.repairs]
        if report.status == "done":
            parts.append(f'<p>before <audio controls preload="none" '
                         f'src="{_link(folder, report.input)}"></audio>'
                         f'after <audio controls preload="none" '
                         f'src="{_link(folder, report.output)}"></audio></p>')
        if report.plot:
            parts.append(f'<img src="{_link(folder, report.plot)}" '
                         f'alt="before and after: {html.escape(report.input)}">')
        parts.append("</section>")
        sections.append("".join(parts))
    mean_rows = _mean_rows(columns, summary["mean"])
    setting_rows = "".join(f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
                           for name, value in settings.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>denoise report</title>
<style>{STYLE}</style></head><body>
<h1>denoise report</h1>
<table class="summary"><tbody>
<tr><th>files</th><td>{summary['files']} ({summary['done']} done, {summary['skipped']} skipped,
{summary['failed']} failed)</td></tr>
<tr><th>audio</th><td>{duration_text(summary['audio_s'])}</td></tr>
<tr><th>processing</th><td>{duration_text(summary['processing_s'])} wall time,
{speed_text(summary['realtime_factor'])}</td></tr>
</tbody></table>
<h2>Settings</h2>
<table class="summary"><tbody>{setting_rows}</tbody></table>
<h2>Mean over the files</h2>
<table class="means"><thead><tr><th></th><th>before</th><th>after</th><th>change</th></tr></thead>
<tbody>{mean_rows}</tbody></table>
<h2>Files</h2>
<div class="wide"><table class="sortable" id="files">
<thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead>
<tbody>{"".join(rows)}</tbody></table></div>
{"".join(sections)}
<script>{SORT_SCRIPT}</script>
</body></html>
"""
