"""Everything the command shows: per-file lines, JSON records, the progress
bar, tables and the summary. Messages go to standard error; standard output
carries only JSON records (``--json``) or audio (``-o -``)."""

from __future__ import annotations

import json
import sys
import traceback as tracebacks
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

console = Console(stderr=True, highlight=False, soft_wrap=True)
if not console.is_terminal:
    # A log file or a pipe has no width to fit: tables keep their columns.
    console.width = 1000


def error(message: str) -> None:
    console.print(f"error: {message}", markup=False)


def warning(message: str) -> None:
    console.print(f"warning: {message}", markup=False)


def traceback(exception: BaseException) -> None:
    console.print("".join(tracebacks.format_exception(exception)), markup=False)


def exit_code(stop: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 128 + the signal for SIGTERM and SIGHUP."""
    return 128 + getattr(stop, "signum", 2)


def silence_stdout() -> None:
    """Point standard output at /dev/null: its reader is gone, and the
    interpreter's own flush at exit must not fail on it."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file descriptor (tests)
        pass


def flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe has nothing more to take
            pass


@dataclass
class Tally:
    """Files by outcome, and the audio of those done."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    planned: int = 0
    audio_s: float = 0.0
    skip_reasons: dict[str, int] = field(default_factory=dict)

    def add(self, result) -> None:
        setattr(self, result.status, getattr(self, result.status) + 1)
        if result.status == "done":
            self.audio_s += result.duration_s or 0.0
        if result.status == "skipped":
            self.skip_reasons[result.reason] = self.skip_reasons.get(result.reason, 0) + 1


@dataclass
class View:
    quiet: bool
    verbose: bool
    json_lines: bool
    dry_run: bool
    from_stdin: bool

    @property
    def chatty(self) -> bool:
        """Whether lines other than errors go to the terminal."""
        return not self.quiet and not self.json_lines

    def file_error(self, source: str, cause: str) -> None:
        error(f"{source}: {cause}")

    def problems(self, problems) -> None:
        for problem in problems:
            if self.json_lines:
                _json({"input": problem.path, "output": None, "status": "failed",
                       "duration_s": None, "seconds": None, "realtime_factor": None,
                       "error": problem.cause, "clipped_samples": 0, "reason": None,
                       "warnings": [], "gain_db": None, "repairs": []})
            else:
                self.file_error(problem.path, problem.cause)

    def left_out(self, notes: list[str]) -> None:
        if notes and not self.quiet:
            console.print(f"not taken: {'; '.join(notes)}", markup=False)

    @contextmanager
    def progress_bar(self, batch):
        """A callback for the batch's progress, drawing a bar on a terminal."""
        if self.quiet or self.dry_run or not console.is_terminal:
            yield None
            return
        bar = Progress(TextColumn("enhancing"), BarColumn(),
                       TextColumn("{task.fields[files]} files"),
                       TextColumn("{task.completed:.0f}/{task.total:.0f} s audio"),
                       TimeRemainingColumn(), console=console, transient=True)
        with bar:
            task = bar.add_task("enhancing", total=batch.audio_s_total or None,
                                files=f"0/{len(batch.files)}")
            yield lambda p: bar.update(task, completed=p.audio_s_done,
                                       files=f"{p.files_done}/{p.files_total}")

    def result(self, result) -> None:
        if self.json_lines:
            _json(result.to_dict())
        if result.status == "failed":
            if not self.json_lines:
                self.file_error(result.input, result.error)
            return
        if result.report is not None and result.report.problem:
            self.file_error(result.input, result.report.problem)
        if self.chatty:
            for text in result.warnings:
                warning(f"{result.input}: {text}")
            for text in result.repairs:
                console.print(f"{result.input}: {text}", markup=False)
            if result.clipped_samples:
                warning(f"{result.output}: {result.clipped_samples} samples clipped at "
                        "full scale")
        if self.dry_run and self.chatty:
            line = (f"would write {result.output}  (from {result.input})"
                    if result.status == "planned" else
                    f"would skip {result.input}  ({result.reason})")
            console.print(line, markup=False)
        elif self.verbose and not self.json_lines:
            detail = f"  ({result.reason})" if result.reason else ""
            if result.status == "done":
                detail = (f"  ({result.duration_s:.1f} s audio in {result.seconds:.2f} s, "
                          f"RTF {result.realtime_factor:.3g})")
            console.print(f"{result.status}: {result.input} -> {result.output}{detail}",
                          markup=False)

    def interrupted(self, tally: Tally, stop: KeyboardInterrupt) -> int:
        how = "interrupted" if not getattr(stop, "signum", None) else f"stopped by {stop}"
        then = "" if self.from_stdin else "; the same command with --resume goes on from here"
        console.print(f"{how}: {tally.done} files done, {tally.skipped} skipped; unfinished "
                      f"outputs were removed{then}", markup=False)
        return exit_code(stop)

    def after_run(self, batch, options, records, measure, tally: Tally, wall_s: float) -> None:
        if batch.runlog is not None and batch.runlog.error and not self.quiet:
            warning(f"run log {batch.runlog.path} not written ({batch.runlog.error}); "
                    "--resume cannot use this run")
        if self.chatty and measure.levels:
            metrics_table(records)
        if measure.report_dir is not None:
            from denoise.engine import write_reports

            paths = write_reports(measure.report_dir, records, options.describe(), wall_s)
            if self.chatty:
                console.print(f"report: {paths['html']}", markup=False)
        if self.chatty:
            summary(tally, wall_s, self.dry_run)


def _json(record: dict) -> None:
    print(json.dumps(record), flush=True)


def summary(tally: Tally, wall_s: float, dry_run: bool) -> None:
    skipped = ", ".join(f"{count} {reason}" for reason, count in tally.skip_reasons.items())
    if dry_run:
        console.print(f"dry run: {tally.planned} files would be written, {tally.skipped} "
                      f"skipped, {tally.failed} failed", markup=False)
        return
    parts = [f"{tally.done} done"]
    if tally.skipped:
        parts.append(f"{tally.skipped} skipped ({skipped})")
    if tally.failed:
        parts.append(f"{tally.failed} failed")
    console.print(f"{', '.join(parts)}; {tally.audio_s:.1f} s of audio in {wall_s:.1f} s",
                  markup=False)


def metrics_table(records) -> None:
    from rich.table import Table

    scored = any(record.reference for record in records)
    rated = any("dnsmos_ovrl_in" in record.metrics for record in records)
    gained = any("loudness_gain_db" in record.metrics for record in records)
    table = Table(title="before -> after", title_justify="left")
    headings = (["file", "loudness LUFS", "peak dBFS", "noise floor dBFS", "SNR dB",
                 "noise reduction dB"] + (["loudness gain dB"] if gained else [])
                + (["PESQ", "STOI"] if scored else []) + (["DNSMOS OVRL"] if rated else []))
    for heading in headings:
        table.add_column(heading, justify="left" if heading == "file" else "right")
    for record in records:
        if record.status != "done":
            continue
        cells = [Path(record.input).name, _pair(record, "loudness_lufs"),
                 _pair(record, "peak_dbfs"), _pair(record, "noise_floor_dbfs"),
                 _pair(record, "snr_db"), _one(record.metrics.get("noise_reduction_db"))]
        if gained:
            cells.append(_one(record.metrics.get("loudness_gain_db")))
        if scored:
            cells += [_pair(record, "pesq", 2), _pair(record, "stoi", 3)]
        if rated:
            cells.append(_pair(record, "dnsmos_ovrl", 2))
        table.add_row(*cells)
    console.print(table)


def _one(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pair(record, name: str, digits: int = 1) -> str:
    before, after = record.metrics.get(f"{name}_in"), record.metrics.get(f"{name}_out")
    if before is None and after is None:
        return "-"
    return f"{_one(before, digits)} -> {_one(after, digits)}"


def self_test() -> int:
    """Run the installation check; returns the exit code."""
    from denoise.cli.environment import STACK, denoise_version, installed_version, stack_problem

    problem = stack_problem()
    if problem is not None:
        error(problem)
        return 2
    from denoise.engine import run_self_test

    versions = ", ".join(f"{name} {installed_version(name)}" for name in STACK)
    console.print(f"denoise {denoise_version()} (python {sys.version.split()[0]}, "
                  f"{versions})", markup=False)
    default_method_note()
    checks = run_self_test()
    for check in checks:
        console.print(f"{'ok' if check.passed else 'FAILED'}  {check.name}: {check.detail}",
                      markup=False)
    return 0 if all(check.passed for check in checks) else 1


def default_method_note() -> None:
    """One line where the default method falls back from dfn3 to spectral."""
    from denoise.engine.backends import dfn3_missing

    missing = dfn3_missing()
    if missing is not None:
        console.print(f"default method: spectral, not dfn3: {missing}", markup=False)


def model_table() -> None:
    from denoise.engine.backends.demucs import OFFICIAL_LICENCE, PRETRAINED, cached_path

    print(f"{'model':<13} {'parameters':<11} {'rate':<7} {'causal':<7} {'trained on':<28} cached")
    for name, model in PRETRAINED.items():
        path = cached_path(name)
        print(f"{name:<13} {f'{model.parameters_m} M':<11} {'16 kHz':<7} "
              f"{'yes' if model.causal else 'no':<7} {model.trained_on:<28} "
              f"{path if path.exists() else 'no'}")
    print(f"\nLicences: {OFFICIAL_LICENCE} (facebookresearch/denoiser). The default method, "
          f"dfn3, is DeepFilterNet3, whose weights (installed with denoise) are MIT or "
          f"Apache-2.0.")


def licence_note(model: str | None, weights) -> None:
    """Before a pretrained DEMUCS model is downloaded for a run: its licence."""
    from denoise.engine.backends.demucs import OFFICIAL_LICENCE, cached_path

    name = model or "dns48"
    if weights is None and not cached_path(name).exists():
        console.print(f"note: downloading DEMUCS {name} (first use); {OFFICIAL_LICENCE}",
                      markup=False)


def download(name: str) -> int:
    """Fetch a pretrained model with a progress bar; returns the exit code."""
    from denoise.engine.backends.demucs import OFFICIAL_LICENCE, PRETRAINED, ModelError
    from denoise.engine.backends.demucs import download as fetch

    if name not in PRETRAINED:
        error(f"unknown model {name!r}; choose from {', '.join(PRETRAINED)}")
        return 2
    bar = Progress(TextColumn(f"downloading {name}"), BarColumn(),
                   TextColumn("{task.percentage:>3.0f}%"), console=console, transient=True,
                   disable=not console.is_terminal)
    with bar if console.is_terminal else nullcontext():
        task = bar.add_task("download", total=None)
        try:
            path = fetch(name, lambda done, total: bar.update(task, completed=done, total=total))
        except ModelError as refusal:
            error(str(refusal))
            return 2
    console.print(f"{name}: {path} ({OFFICIAL_LICENCE})", markup=False)
    return 0


def help_page(command, ctx, examples, exit_codes: dict[int, str]) -> None:
    """``denoise --help``: usage, description, examples, the options in
    groups, exit codes. Rendered here rather than by Typer, so that every
    option shows the metavar it was given (``DB``, ``LUFS``, ``FILE``),
    flags show none, and examples never wrap inside a command."""
    from rich.panel import Panel
    from rich.text import Text

    out = Console(highlight=False)
    out.print(Text.assemble(("Usage: ", "bold"), "denoise [OPTIONS] INPUT... -o OUT"))
    out.print("       denoise --stream [OPTIONS] < IN > OUT")
    out.print("       denoise --live [--input DEVICE] [-o DEVICE | --virtual-mic] [OPTIONS]")
    out.print()
    out.print(command.help, markup=False)
    out.print()
    out.print(Text("Examples:", style="bold"))
    out.print(_grid([(command_line, text) for command_line, text in examples], indent=2))
    groups: dict[str, list] = {}
    for param in command.get_params(ctx):
        groups.setdefault(getattr(param, "rich_help_panel", None) or "Information", []).append(param)
    for title, params in groups.items():
        rows = [(_option_label(param), param.help or "") for param in params]
        out.print(Panel(_grid(rows, bold=True), title=title, title_align="left",
                        border_style="dim"))
    out.print(Text("Exit codes:", style="bold"))
    out.print(_grid([(str(code), meaning) for code, meaning in exit_codes.items()], indent=2))


def _grid(rows, indent: int = 0, bold: bool = False):
    """Two columns: the first never wraps, the second wraps to the width."""
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True, style="bold" if bold else None)
    table.add_column()
    for left, right in rows:
        table.add_row(Text(left), Text(right))
    return Padding(table, (0, 0, 0, indent))


def _option_label(param) -> str:
    """``-o, --output OUT``; ``INPUT...``; ``-r, --recursive``."""
    if param.param_type_name == "argument":
        return param.metavar or param.name.upper()
    names = sorted(param.opts, key=len)
    metavar = "" if getattr(param, "is_flag", False) else f" {param.metavar or 'VALUE'}"
    return ", ".join(names) + metavar


def device_table(devices) -> None:
    """``--list-devices``: number, name, host API, channels in/out, rate."""
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("#", "device", "host API", "in", "out", "rate"):
        table.add_column(column, justify="right" if column in ("#", "in", "out", "rate")
                         else "left")
    for device in devices:
        marks = ("<" if device.default_input else "") + (">" if device.default_output else "")
        table.add_row(f"{marks}{device.index}", device.name, device.host_api,
                      str(device.inputs), str(device.outputs), f"{device.sample_rate:g}")
    out = Console(highlight=False)
    out.print(table)
    out.print("< default input, > default output; --input and -o take a number or part of "
              "a name")


@dataclass
class StreamView:
    """What ``--stream`` and ``--live`` print, on standard error."""

    quiet: bool = False
    verbose: bool = False
    last_status: object = None
    warned: bool = False

    def stream_started(self, result) -> None:
        if not self.quiet:
            latency_ms = 1000 * result.latency_samples / result.format.sample_rate
            console.print(f"streaming {result.format.describe()}: latency {latency_ms:.1f} ms",
                          markup=False)

    def stream_ended(self, result) -> None:
        if not self.quiet:
            for channel, hum in enumerate(result.hum, 1):
                where = f"channel {channel}: " if len(result.hum) > 1 else ""
                console.print(f"{where}{hum or 'no hum found'}", markup=False)
        if self.verbose:
            console.print(f"done: {result.samples_in} samples in, {result.samples_out} out",
                          markup=False)

    def virtual_mic(self, mic) -> None:
        if not self.quiet:
            console.print(f"virtual microphone: '{mic.description}' (PulseAudio source "
                          f"{mic.name}_mic); pick it in the call app", markup=False)

    def live_status(self, status) -> None:
        """A line a second: latency, load, dropouts; a warning, once, when
        the CPU cannot keep up."""
        self.last_status = status
        if not status.keeping_up and not self.warned:
            self.warned = True
            warning(f"the CPU cannot keep up: a {status.hop_ms:.3g} ms hop takes "
                    f"{sum(status.recent) / len(status.recent):.1f} ms to enhance, so the "
                    "output will drop out; try a longer --hop-ms (e.g. 32) or a smaller model "
                    "(--model dns48, or --method spectral)")
        if self.quiet:
            return
        line = _live_line(status)
        if status.hops == 0:
            console.print(f"live: {line}; Ctrl-C stops", markup=False)
            return
        if console.is_terminal:
            console.print(line, end="\r", markup=False)
        elif self.verbose:
            console.print(line, markup=False)

    def live_ended(self) -> None:
        if self.last_status is not None and not self.quiet:
            console.print(f"stopped. {_live_line(self.last_status)}", markup=False)


def _live_line(status) -> str:
    return (f"{status.sample_rate} Hz, hop {status.hop_ms:.3g} ms: latency at most "
            f"{status.latency_ms:.0f} ms (enhancement {status.algorithmic_ms:.0f}, hops "
            f"{status.waiting_ms:.0f}, devices {status.device_ms:.0f} as PortAudio reports "
            f"them); compute "
            f"{status.compute_ms:.1f} ms per hop at most; underruns {status.underflows}, "
            f"overruns {status.overflows}, gaps {status.gaps}"
            + (f"; {status.hum}" if status.hum else ""))
