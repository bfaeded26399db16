"""The ``denoise`` command: parse, call the engine, present the results.

This is the one place that turns engine errors into one-line messages and
exit codes: 0 when every file was done (or skipped), 1 when some failed, 2
for a usage error, 130 when interrupted.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

app = typer.Typer(add_completion=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]})
console = Console(stderr=True, highlight=False, soft_wrap=True)

EXAMPLES = """\
Examples:

  denoise in/ -o out/ --recursive        enhance a folder tree, mirrored in out/

  denoise talk.mp3 -o talk-clean.flac    one file to another file and format

  cat a.wav | denoise - -o - > b.wav     in a shell pipeline (stdin to stdout)
"""


class Method(str, Enum):
    spectral = "spectral"
    demucs = "demucs"


class Channels(str, Enum):
    each = "each"
    mix = "mix"
    linked = "linked"


class Preset(str, Enum):
    podcast = "podcast"
    broadcast = "broadcast"


class Clip(str, Enum):
    limit = "limit"
    report = "report"
    error = "error"


def _list_models(value: bool) -> None:
    if not value:
        return
    from denoise.engine.backends.demucs import PRETRAINED, cached_path

    print(f"{'model':<13} {'parameters':<11} {'rate':<7} {'causal':<7} {'trained on':<28} cached")
    for name, model in PRETRAINED.items():
        path = cached_path(name)
        print(f"{name:<13} {f'{model.parameters_m} M':<11} {'16 kHz':<7} {'yes' if model.causal else 'no':<7} "
              f"{model.trained_on:<28} {path if path.exists() else 'no'}")
    raise typer.Exit(0)


def _download_model(name: Optional[str]) -> None:
    if name is None:
        return
    from denoise.engine.backends.demucs import PRETRAINED, ModelError, download

    if name not in PRETRAINED:
        _usage_error(f"unknown model {name!r}; choose from {', '.join(PRETRAINED)}")
    with Progress(TextColumn(f"downloading {name}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("download", total=None)
        try:
            path = download(name, lambda done, total: bar.update(task, completed=done, total=total))
        except ModelError as error:
            _usage_error(str(error))
    console.print(f"{name}: {path}", markup=False)
    raise typer.Exit(0)


def _spectral_options(strength: float, noise_file: Optional[Path]) -> dict:
    options = {"strength": strength}
    if noise_file is not None:
        options["noise_file"] = noise_file
    return options


@app.command(help="Enhance speech in audio files: remove background noise.\n\n" + EXAMPLES)
def denoise(
    inputs: Annotated[Optional[list[str]], typer.Argument(
        metavar="INPUT...", show_default=False,
        help="Audio files or folders; '-' reads one file from standard input.")] = None,
    output: Annotated[Optional[str], typer.Option(
        "-o", "--output", metavar="OUT",
        help="Output folder (the input tree is mirrored there), an output file for a "
             "single input, or '-' for standard output.")] = None,
    method: Annotated[Method, typer.Option(
        help="spectral: classical, no download. demucs: the DEMUCS neural network "
             "(better; downloads its model on first use).")] = Method.spectral,
    dry: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Fraction of the original signal mixed back into the "
        "output: 0 = fully denoised, 1 = the input unchanged.")] = 0.0,
    channels: Annotated[Channels, typer.Option(
        help="each: enhance every channel on its own; mix: enhance the mono mix and "
             "write it to every channel; linked: apply the mono mix's gains to every "
             "channel, so a stereo image stays where it is.")] = Channels.each,
    band_limit: Annotated[bool, typer.Option(
        "--band-limit", help="demucs on files above 16 kHz: leave the output band-limited "
                             "as the model makes it (nothing above about 7 kHz) instead of "
                             "restoring the upper band from the input through the model's "
                             "gain.")] = False,
    loudness: Annotated[Optional[float], typer.Option(
        "--loudness", metavar="LUFS", max=0.0,
        help="Normalise each output's integrated loudness (ITU-R BS.1770) to LUFS.")] = None,
    true_peak: Annotated[Optional[float], typer.Option(
        "--true-peak", metavar="DBTP", max=0.0,
        help="Limit inter-sample peaks (4x oversampled) to DBTP with a look-ahead "
             "limiter.")] = None,
    preset: Annotated[Optional[Preset], typer.Option(
        help="podcast: -16 LUFS (-19 for mono files), -1 dBTP; broadcast (EBU R128): "
             "-23 LUFS, -1 dBTP. --loudness and --true-peak override its parts.")] = None,
    clip: Annotated[Clip, typer.Option(
        help="Samples beyond full scale in an integer or lossy output: limit them "
             "(look-ahead limiter at 0 dBFS), report (clip and count them) or error "
             "(fail the file).")] = Clip.limit,
    residue: Annotated[bool, typer.Option(
        "--residue", help="Also write what was removed (input minus output, before "
                          "loudness and limiting) as NAME.residue.EXT beside each output.")] = False,
    recursive: Annotated[bool, typer.Option("--recursive", "-r",
                                            help="Walk folders recursively.")] = False,
    glob: Annotated[Optional[str], typer.Option(
        metavar="PATTERN", help="Only take files whose name or relative path matches, "
                                "e.g. '*.flac'.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
    skip_existing: Annotated[bool, typer.Option(
        "--skip-existing", help="Leave existing outputs as they are and skip their inputs.")] = False,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Skip an input only if its output exists and the run log says it "
                         "was made from this input, unchanged, with the same settings; "
                         "redo it otherwise.")] = False,
    cluster: Annotated[Optional[str], typer.Option(
        "--cluster", metavar="ADDRESS",
        help="Run the chunks on the Dask scheduler at ADDRESS (tcp://host:8786); every "
             "worker must see the inputs and outputs at the same paths. Needs "
             "pip install 'denoise[cluster]'.")] = None,
    log: Annotated[Optional[Path], typer.Option(
        "--log", metavar="PATH", dir_okay=False,
        help="The run log (one JSON line per finished file: input size and time, settings, "
             "outcome) [default: .denoise-log.jsonl beside the outputs].")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be done; write nothing.")] = False,
    jobs: Annotated[Optional[int], typer.Option(
        "-j", "--jobs", min=1, help="Worker processes (default: all cores).")] = None,
    json_lines: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object per file on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only print errors.")] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose",
                                          help="Print a line for every file.")] = False,
    fmt: Annotated[Optional[str], typer.Option(
        "--format", help="Output container, e.g. WAV, FLAC, OGG (default: as the input).")] = None,
    subtype: Annotated[Optional[str], typer.Option(
        help="Output sample format, e.g. PCM_16, PCM_24, FLOAT (default: as the input).")] = None,
    atten_lim: Annotated[Optional[float], typer.Option(
        "--atten-lim", metavar="DB", min=0.0, show_default=False,
        help="The most any time-frequency region is attenuated, in dB, so background "
             "becomes quieter rather than gone; 0 means no limit [default: 15 for "
             "spectral, no limit for demucs].")] = None,
    strength: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="spectral: 0 changes nothing, 1 applies the full "
                               "noise reduction.")] = 1.0,
    noise_file: Annotated[Optional[Path], typer.Option(
        exists=True, dir_okay=False, help="spectral: a recording of the noise alone; "
        "its spectrum is used instead of tracking the noise (for steady noise).")] = None,
    model: Annotated[str, typer.Option(
        help="demucs: pretrained model, dns48, dns64, master64 or valentini_nc "
             "(see --list-models).")] = "dns48",
    weights: Annotated[Optional[Path], typer.Option(
        exists=True, dir_okay=False, help="demucs: a local checkpoint (a state_dict or a "
        "training package) instead of downloading --model.")] = None,
    device: Annotated[str, typer.Option(
        help="demucs: auto, cpu, cuda, cuda:N or mps.")] = "cpu",
    list_models: Annotated[bool, typer.Option(
        "--list-models", is_eager=True, callback=_list_models,
        help="Show the pretrained models and whether each is downloaded, then exit.")] = False,
    download_model: Annotated[Optional[str], typer.Option(
        "--download-model", metavar="NAME", is_eager=True, callback=_download_model,
        help="Download a pretrained model into the cache, then exit.")] = None,
    report: Annotated[Optional[Path], typer.Option(
        "--report", metavar="DIR", file_okay=False,
        help="Measure every file before and after (levels, loudness, noise floor, SNR) and "
             "write DIR/report.json, report.csv and report.html.")] = None,
    plot: Annotated[bool, typer.Option(
        "--plot", help="Draw each file's waveform and spectrogram before and after, as a "
                       "PNG next to the output (in DIR/plots with --report).")] = False,
    reference: Annotated[Optional[Path], typer.Option(
        "--reference", metavar="DIR", exists=True, file_okay=False,
        help="Clean recordings, matched to inputs by relative path: adds PESQ, STOI, "
             "ESTOI and SI-SDR of input and output to the report.")] = None,
    dnsmos: Annotated[bool, typer.Option(
        "--dnsmos", help="Add DNSMOS P.835 (speech, background and overall quality, 1-5; "
                         "no reference needed) of input and output to the report. About 0.2 s "
                         "per 9 s of audio and side; needs pip install 'denoise[dnsmos]'.")] = False,
    segment: Annotated[Optional[float], typer.Option(
        "--segment-s", min=1.0, show_default=False,
        help="Long files are processed in chunks of this many seconds; memory use grows "
             "with it [default: 30 for spectral, 60 for demucs].")] = None,
) -> None:
    from denoise.engine import Batch, BatchOptions, DenoiseError, Finishing, plan_jobs

    if not inputs or output is None:
        _usage_error("give INPUT... and -o OUT (see --help)")
    if sum((overwrite, skip_existing, resume)) > 1:
        _usage_error("--overwrite, --skip-existing and --resume cannot be used together")
    if json_lines and output == "-":
        _usage_error("--json prints to standard output, which '-o -' uses for audio")
    if residue and output == "-":
        _usage_error("--residue needs output files, not '-o -'")
    if (report or plot or reference or dnsmos) and output == "-":
        _usage_error("--report, --plot, --reference and --dnsmos need output files, not '-o -'")
    if dnsmos:
        from denoise.engine.dnsmos import check_available

        try:
            check_available()
        except DenoiseError as error:
            _usage_error(str(error))
    for value, check in ((fmt, _check_format), (subtype, _check_subtype)):
        if value is not None:
            check(value)
    if method is Method.demucs:
        backend_options = {"model": model, "weights": weights, "device": device}
    else:
        backend_options = _spectral_options(strength, noise_file)
    options = BatchOptions(
        method=method.value, jobs=jobs, fmt=fmt, subtype=subtype, segment_s=segment,
        existing=("overwrite" if overwrite else "skip" if skip_existing
                  else "resume" if resume else "error"),
        log=str(log) if log else "auto", cluster=cluster,
        dry=dry, channels=channels.value, atten_lim_db=atten_lim, full_band=not band_limit,
        backend_options=backend_options,
        finishing=Finishing(loudness_lufs=loudness, true_peak_dbtp=true_peak,
                            preset=preset.value if preset else None, clip=clip.value,
                            residue=residue))
    try:
        jobs_list, problems = plan_jobs(inputs, output, recursive=recursive, pattern=glob,
                                        overwrite=overwrite, fmt=fmt)
        batch = Batch(jobs_list, options, stdout=sys.stdout.buffer if output == "-" else None)
    except DenoiseError as error:
        _usage_error(str(error))
    except ValueError as error:
        _usage_error(str(error))
    for problem in problems:
        _report_failure(str(problem), json_lines, problem.path)
    failed = len(problems)
    started = time.perf_counter()
    results = batch.planned() if dry_run else None
    show_progress = not (quiet or dry_run) and console.is_terminal
    counts = {"done": 0, "skipped": 0, "failed": 0, "planned": 0}
    try:
        with _progress_bar(show_progress) as bar:
            task = bar.add_task("enhancing", total=batch.audio_s_total or None,
                                files=f"0/{len(batch.files)}")
            if results is None:
                results = batch.run(on_progress=lambda p: bar.update(
                    task, completed=p.audio_s_done, files=f"{p.files_done}/{p.files_total}"))
            reports = []
            for result in results:
                counts[result.status] += 1
                _present(result, json_lines, verbose, dry_run)
                if not dry_run and (report or plot or reference or dnsmos):
                    reports.append(_examine(result, inputs, report, plot, reference, dnsmos,
                                            method.value))
    except KeyboardInterrupt:
        console.print(f"interrupted: {counts['done']} files done, {counts['skipped']} skipped; "
                      "unfinished outputs were removed; --resume goes on from here")
        raise typer.Exit(130)
    failed += counts["failed"]
    if batch.runlog is not None and batch.runlog.error and not quiet:
        console.print(f"warning: run log {batch.runlog.path} not written "
                      f"({batch.runlog.error}); --resume cannot use this run", markup=False)
    show = not quiet and not json_lines
    if show and (report or reference or dnsmos):
        _metrics_table(reports)
    if report is not None:
        from denoise.engine.report import write_reports

        paths = write_reports(report, reports, options.settings())
        if show:
            console.print(f"report: {paths['html']}", markup=False)
    if show:
        _summary(counts, failed, batch.audio_s_total, time.perf_counter() - started)
    raise typer.Exit(1 if failed else 0)


def _examine(result, inputs: list[str], report: Optional[Path], plot: bool,
             reference: Optional[Path], dnsmos: bool, method: str):
    """Measure (and plot) one finished file; a failure here is reported and
    leaves the enhanced file as it is."""
    from denoise.engine.plots import plot_file
    from denoise.engine.report import FileReport, measure, reference_for

    clean = reference_for(result.input, inputs, reference) if reference else None
    try:
        record = (measure(result, clean, dnsmos) if report or reference or dnsmos
                  else FileReport.of(result))
        if plot and result.status == "done":
            output = Path(result.output)
            png = (report / "plots" / f"{output.stem}.png" if report is not None
                   else output.with_suffix(".png"))
            record.plot = str(plot_file(result.input, result.output, png,
                                        f"{Path(result.input).name} - {method}"))
    except Exception as error:  # noqa: BLE001 - one file's report must not stop the batch
        console.print(f"error: {result.input}: could not measure or plot ({error})",
                      markup=False)
        record = FileReport.of(result)
    return record


def _metrics_table(reports) -> None:
    from rich.table import Table

    scored = any(record.reference for record in reports)
    rated = any("dnsmos_ovrl_in" in record.metrics for record in reports)
    table = Table(title="before -> after", title_justify="left")
    headings = ["file", "loudness LUFS", "peak dBFS", "noise floor dBFS", "SNR dB",
                "reduction dB"] + (["PESQ", "STOI"] if scored else []) + \
        (["DNSMOS OVRL"] if rated else [])
    for heading in headings:
        table.add_column(heading, justify="left" if heading == "file" else "right")

    def pair(record, name, digits=1):
        before, after = record.metrics.get(f"{name}_in"), record.metrics.get(f"{name}_out")
        if before is None and after is None:
            return "-"
        show = lambda value: "-" if value is None else f"{value:.{digits}f}"  # noqa: E731
        return f"{show(before)} -> {show(after)}"

    for record in reports:
        if record.status != "done":
            continue
        reduction = record.metrics.get("noise_reduction_db")
        cells = [Path(record.input).name, pair(record, "loudness_lufs"),
                 pair(record, "peak_dbfs"), pair(record, "noise_floor_dbfs"),
                 pair(record, "snr_db"), "-" if reduction is None else f"{reduction:.1f}"]
        if scored:
            cells += [pair(record, "pesq", 2), pair(record, "stoi", 3)]
        if rated:
            cells.append(pair(record, "dnsmos_ovrl", 2))
        table.add_row(*cells)
    console.print(table)


def _progress_bar(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.fields[files]} files"),
                    TextColumn("{task.completed:.0f}/{task.total:.0f} s audio"),
                    TimeRemainingColumn(), console=console, disable=not enabled,
                    transient=True)


def _present(result, json_lines: bool, verbose: bool, dry_run: bool) -> None:
    if json_lines:
        print(json.dumps(result.to_dict()), flush=True)
    if result.status == "failed":
        if not json_lines:
            console.print(f"error: {result.error}", markup=False)
    elif result.clipped_samples and not json_lines:
        console.print(f"warning: {result.output}: {result.clipped_samples} samples clipped "
                      "at full scale", markup=False)
    elif dry_run and not json_lines:
        console.print(f"would write {result.output}  (from {result.input})", markup=False)
    elif verbose and not json_lines:
        detail = ""
        if result.status == "done":
            detail = f"  ({result.duration_s:.1f} s audio, {result.seconds:.2f} s, " \
                     f"{result.realtime_factor:.3f}x real time)"
        console.print(f"{result.status}: {result.input} -> {result.output}{detail}", markup=False)


def _report_failure(message: str, json_lines: bool, source: str) -> None:
    if json_lines:
        print(json.dumps({"input": source, "output": None, "status": "failed",
                          "duration_s": None, "seconds": None, "realtime_factor": None,
                          "error": message, "clipped_samples": 0}), flush=True)
    else:
        console.print(f"error: {message}", markup=False)


def _summary(counts: dict, failed: int, audio_s: float, elapsed: float) -> None:
    if counts["planned"]:
        console.print(f"dry run: {counts['planned']} files would be written, "
                      f"{counts['skipped']} skipped, {failed} failed")
        return
    parts = [f"{counts['done']} done"]
    if counts["skipped"]:
        parts.append(f"{counts['skipped']} skipped (output exists)")
    if failed:
        parts.append(f"{failed} failed")
    console.print(f"{', '.join(parts)}; {audio_s:.1f} s of audio in {elapsed:.1f} s")


def _check_format(value: str) -> None:
    import soundfile as sf

    if value.upper() not in sf.available_formats():
        _usage_error(f"unknown --format {value!r}; choose from "
                     f"{', '.join(sorted(sf.available_formats()))}")


def _check_subtype(value: str) -> None:
    import soundfile as sf

    if value.upper() not in sf.available_subtypes():
        _usage_error(f"unknown --subtype {value!r}; e.g. PCM_16, PCM_24, FLOAT")


def _usage_error(message: str) -> None:
    console.print(f"error: {message}", markup=False)
    raise typer.Exit(2)


def main() -> None:
    """The console script. Once the app has finished (every output closed and
    renamed), the process leaves without the interpreter's teardown: with
    torch loaded, that teardown takes 0.7 to 1 s and does nothing for the
    user. What the interpreter would do before it still happens, in its
    order: threads' exit hooks (where joblib's worker pool tells its workers
    to stop; without them the next step waits out the workers' 300 s idle
    timeout), then exit handlers, then the standard streams are flushed."""
    try:
        app()
        code = 0
    except SystemExit as stop:
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream has nothing to lose
            pass
    os._exit(code)
