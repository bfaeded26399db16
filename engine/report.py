"""What a run measured, per file, and the report files made from it:
``report.json`` (everything), ``report.csv`` (one row per file) and
``report.html`` (one self-contained page a producer can read)."""

from __future__ import annotations

import csv
import html
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from denoise.engine.dnsmos import SCORES as DNSMOS_SCORES
from denoise.engine.dnsmos import dnsmos
from denoise.engine.metrics import REFERENCE_METRICS, measure_file, reference_scores

LEVEL_FIELDS = ("peak_dbfs", "rms_dbfs", "clipped", "loudness_lufs", "noise_floor_dbfs",
                "snr_db")
CSV_FIRST = ("input", "output", "status", "error", "duration_s", "sample_rate", "channels",
             "seconds", "realtime_factor")
SCHEMA_VERSION = 1


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

    @classmethod
    def of(cls, result) -> "FileReport":
        """The record of an engine ``FileResult``, before any measurement."""
        return cls(input=result.input, output=result.output, status=result.status,
                   error=result.error, duration_s=result.duration_s, seconds=result.seconds,
                   realtime_factor=result.realtime_factor)

    def row(self) -> dict:
        """The flat CSV row: the run's fields, then every metric column."""
        record = {name: getattr(self, name) for name in CSV_FIRST}
        record.update(self.metrics)
        record["reference"] = self.reference
        record["plot"] = self.plot
        return record


def metric_columns(reference: bool, dnsmos: bool = False) -> list[str]:
    """The metric columns, each naming its side: ``peak_dbfs_in``,
    ``peak_dbfs_out``, ..., ``noise_reduction_db``, then with a reference
    ``pesq_in``, ``pesq_out``, ``pesq_delta`` and so on, then with DNSMOS
    ``dnsmos_sig_in`` ... ``dnsmos_ovrl_delta``."""
    columns = [f"{name}_{side}" for name in LEVEL_FIELDS for side in ("in", "out")]
    columns.append("noise_reduction_db")
    if reference:
        columns += _compared(REFERENCE_METRICS)
    if dnsmos:
        columns += _compared(f"dnsmos_{score}" for score in DNSMOS_SCORES)
    return columns


def _compared(metrics) -> list[str]:
    return [f"{metric}_{side}" for metric in metrics for side in ("in", "out", "delta")]


def measure(result, reference: Path | None = None, dnsmos: bool = False) -> FileReport:
    """A :class:`FileReport` for a finished ``result`` (an engine
    ``FileResult``): the input and output are read again, in blocks.
    ``reference`` is the clean file to score against, if any; ``dnsmos``
    adds DNSMOS P.835 scores of both sides."""
    report = FileReport.of(result)
    if result.status != "done" or result.output == "-" or result.input == "-":
        return report
    import soundfile as sf

    info = sf.info(result.input)
    report.sample_rate, report.channels = info.samplerate, info.channels
    for side, path in (("in", result.input), ("out", result.output)):
        levels = measure_file(path)
        for name in LEVEL_FIELDS:
            key = f"{name}_{side}"
            report.metrics[key] = getattr(levels, name)
            if name in levels.missing:
                report.missing[key] = levels.missing[name]
    floor_in, floor_out = (report.metrics[f"noise_floor_dbfs_{side}"] for side in ("in", "out"))
    report.metrics["noise_reduction_db"] = (floor_in - floor_out
                                            if None not in (floor_in, floor_out) else None)
    if report.metrics["noise_reduction_db"] is None:
        report.missing["noise_reduction_db"] = "no noise floor on one side"
    if reference is not None:
        report.reference = str(reference)
        if not reference.is_file():
            reason = f"no reference file {reference}"
            for column in metric_columns(True)[len(metric_columns(False)):]:
                report.metrics[column] = None
                report.missing[column] = reason
        else:
            scores, missing = reference_scores(reference, result.input, result.output)
            for column in metric_columns(True)[len(metric_columns(False)):]:
                report.metrics[column] = scores.get(column)
            report.missing.update(missing)
    if dnsmos:
        _add_dnsmos(report, result.input, result.output)
    return report


def _add_dnsmos(report: FileReport, before: str, after: str) -> None:
    sides = {"in": dnsmos(before), "out": dnsmos(after)}
    for score in DNSMOS_SCORES:
        values = {}
        for side, (scores, reason) in sides.items():
            values[side] = scores.get(score)
            if reason is not None:
                report.missing[f"dnsmos_{score}_{side}"] = reason
        values["delta"] = (values["out"] - values["in"]
                           if None not in (values["in"], values["out"]) else None)
        if values["delta"] is None:
            report.missing[f"dnsmos_{score}_delta"] = "not scored on one side"
        for side, value in values.items():
            report.metrics[f"dnsmos_{score}_{side}"] = value


def reference_for(source: str, inputs: list[str], reference_dir: Path) -> Path:
    """The clean file matching ``source``: the same path relative to the
    input folder it was found in (or the same name, for a file named
    directly), else a file with the same stem and another audio extension."""
    source_path = Path(source).resolve()
    relative = Path(source_path.name)
    for root in inputs:
        root_path = Path(root).resolve()
        if root_path.is_dir() and root_path in source_path.parents:
            relative = source_path.relative_to(root_path)
            break
    candidate = reference_dir / relative
    if not candidate.exists() and candidate.parent.is_dir():
        for other in sorted(candidate.parent.glob(f"{candidate.stem}.*")):
            return other
    return candidate


def write_reports(folder: Path, reports: list[FileReport], settings: dict) -> dict[str, Path]:
    """``report.json``, ``report.csv`` and ``report.html`` in ``folder``,
    each written under a temporary name and renamed. Returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    with_reference = any(report.reference for report in reports)
    with_dnsmos = any(key.startswith("dnsmos_") for report in reports for key in report.metrics)
    columns = metric_columns(with_reference, with_dnsmos)
    summary = summarise(reports, columns)
    document = {
        "schema": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": settings,
        "versions": _versions(),
        "summary": summary,
        "files": [asdict(report) for report in reports],
    }
    paths = {name: folder / f"report.{name}" for name in ("json", "csv", "html")}
    _write_atomically(paths["json"], json.dumps(document, indent=2, default=_json_value)
                      + "\n")
    _write_atomically(paths["csv"], _csv_text(reports, columns))
    _write_atomically(paths["html"], _html(folder, reports, columns, summary, settings))
    return paths


def summarise(reports: list[FileReport], columns: list[str]) -> dict:
    """Counts, hours of audio, and the mean of every metric over the files
    that have it."""
    done = [report for report in reports if report.status == "done"]
    means = {}
    for column in columns:
        values = [report.metrics.get(column) for report in done]
        values = [value for value in values if isinstance(value, (int, float))]
        means[column] = sum(values) / len(values) if values else None
    return {
        "files": len(reports),
        "done": len(done),
        "skipped": sum(report.status == "skipped" for report in reports),
        "failed": sum(report.status == "failed" for report in reports),
        "audio_hours": sum(report.duration_s or 0 for report in done) / 3600,
        "processing_s": sum(report.seconds or 0 for report in done),
        "mean": means,
    }


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import numpy
    import soundfile
    import torch
    import torchaudio

    try:
        denoise_version = version("denoise")
    except PackageNotFoundError:  # run from a checkout that is not installed
        denoise_version = None
    return {"denoise": denoise_version, "python": platform.python_version(),
            "torch": torch.__version__, "torchaudio": torchaudio.__version__,
            "numpy": numpy.__version__, "soundfile": soundfile.__version__,
            "libsndfile": soundfile.__libsndfile_version__}


def _json_value(value):
    return str(value)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


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
    "noise_floor_dbfs": "noise floor dBFS", "snr_db": "SNR dB",
    "noise_reduction_db": "noise reduction dB", "pesq": "PESQ", "stoi": "STOI",
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


def _cell(value, missing: str | None = None) -> str:
    if value is None:
        title = html.escape(missing or "not measured")
        return f'<td class="missing" data-value="" title="{title}">–</td>'
    shown = f"{value:.2f}" if isinstance(value, float) else str(value)
    return f'<td data-value="{html.escape(str(value))}">{shown}</td>'


def _flat(settings: dict):
    """``(name, value)`` pairs, nested groups (backend options, finishing)
    spread out, for one line of text."""
    for key, value in settings.items():
        if isinstance(value, dict):
            yield from _flat(value)
        else:
            yield key, value


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
                 _cell(report.duration_s), _cell(report.realtime_factor)]
        cells += [_cell(report.metrics.get(column), report.missing.get(column))
                  for column in columns]
        rows.append(f'<tr class="{report.status}">{"".join(cells)}</tr>')
    sections = []
    for index, report in enumerate(reports):
        parts = [f'<section class="file" id="f{index}"><h2>{html.escape(report.input)}</h2>']
        if report.error:
            parts.append(f"<p>failed: {html.escape(report.error)}</p>")
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
    setting_text = html.escape(", ".join(f"{key}={value}" for key, value in _flat(settings)))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>denoise report</title>
<style>{STYLE}</style></head><body>
<h1>denoise report</h1>
<p>{setting_text}</p>
<table class="summary"><tbody>
<tr><th>files</th><td>{summary['files']} ({summary['done']} done, {summary['skipped']} skipped,
{summary['failed']} failed)</td></tr>
<tr><th>audio</th><td>{summary['audio_hours']:.3f} h</td></tr>
<tr><th>processing</th><td>{summary['processing_s']:.1f} s</td></tr>
</tbody></table>
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
