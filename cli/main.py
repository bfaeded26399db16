"""The ``denoise`` command: parse, check, call the engine, present.

This is the one place that turns engine errors into one-line messages and
exit codes (``EXIT_CODES``). Nothing here enhances, measures or writes audio.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand

from denoise.cli import present
from denoise.cli.environment import denoise_version, save_traceback, stack_problem
from denoise.engine.choices import (CHANNEL_MODES, CLIP_MODES, DEHUM_MODES, METHODS, PRESETS,
                                    PRETRAINED_MODELS)
from denoise.engine.errors import DenoiseError

EXIT_CODES = {0: "every file done or skipped", 1: "some files failed (the others were done)",
              2: "usage error, or an install that cannot work", 3: "internal error (a bug)",
              130: "interrupted (Ctrl-C)", 129: "hung up (SIGHUP)", 143: "terminated (SIGTERM)",
              141: "the reader of standard output went away (SIGPIPE)"}
HELP = ("Enhance speech in recordings: remove background noise. Files and folders in, "
        "enhanced files out, with the same names, rates, channels, lengths and formats. "
        "Reads WAV, FLAC, Ogg/Opus, MP3, AIFF, CAF (libsndfile) and, through FFmpeg (PyAV), "
        "M4A/AAC, WebM, WMA, AC-3 and the sound of MP4, MOV, MKV, WebM, AVI videos; a video "
        "comes back as a video with its sound enhanced.")
EXAMPLES = (("denoise in/ -o out/ -r", "a folder tree, mirrored in out/ (DeepFilterNet3)"),
            ("denoise talk.mp3 -o talk-clean.flac", "one file to another file and format"),
            ("denoise in/ -o out/ --method demucs", "DEMUCS (downloads it once; non-commercial)"),
            ("denoise lecture.mp4 -o clean/", "a video: picture copied, sound enhanced"),
            ("denoise memo.m4a -o memo.flac", "an M4A to lossless FLAC"),
            ("cat a.wav | denoise - -o - > b.wav", "in a shell pipeline"),
            ("arecord | denoise --stream | aplay", "live, through pipes"),
            ("denoise --live --virtual-mic", "a clean microphone for call apps"))


class _Command(TyperCommand):
    """The command, with the help page of :func:`present.help_page`."""

    def format_help(self, ctx, formatter) -> None:
        present.help_page(self, ctx, EXAMPLES, EXIT_CODES)


app = typer.Typer(add_completion=True, rich_markup_mode=None, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]})

IO, ENHANCE, SPECTRAL, DEMUCS = "Input and output", "Enhancement", "Spectral method", "DEMUCS method"
FINISH, REPORTS, RUN, ABOUT = "Finishing", "Reports", "Running", "Information"
LIVE = "Streaming and live"
RAW_FORMATS = ("s16le", "s24le", "s32le", "f32le", "f64le", "u8")
# What a stream or live run takes besides its own options: the enhancement's
# settings that work block by block, and how much is printed.
STREAM_TAKES = {"stream", "live", "raw", "rate", "channels", "hop_ms", "method", "dry", "dehum",
                "atten_lim", "strength", "noise_file", "model", "weights", "quiet", "verbose",
                "inputs", "output", "input_device", "virtual_mic", "fp16"}


def _one_of(values, name: str):
    """A callback that refuses a value not in ``values`` with the choices."""
    def check(value):
        if value is not None and value not in values:
            raise typer.BadParameter(f"{value!r} is not a {name}; choose from "
                                     f"{', '.join(values)}")
        return value
    return check


def _version(value: bool) -> None:
    if value:
        print(f"denoise {denoise_version()}")
        present.default_method_note()
        raise typer.Exit(0)


def _self_test(value: bool) -> None:
    if value:
        raise typer.Exit(present.self_test())


def _list_models(value: bool) -> None:
    if value:
        _need_stack()
        present.model_table()
        raise typer.Exit(0)


def _download_model(name: Optional[str]) -> None:
    if name is not None:
        _need_stack()
        raise typer.Exit(present.download(name))


def _list_devices(value: bool) -> None:
    if value:
        with _usage_errors():
            from denoise.engine.live import list_devices

            present.device_table(list_devices())
        raise typer.Exit(0)


@app.command(cls=_Command, help=HELP, no_args_is_help=True)
def denoise(
    ctx: typer.Context,
    inputs: Annotated[Optional[list[str]], typer.Argument(
        metavar="INPUT...", show_default=False, rich_help_panel=IO,
        help="Audio or video files, or folders; '-' reads one file from standard "
             "input.")] = None,
    output: Annotated[Optional[str], typer.Option(
        "-o", "--output", metavar="OUT", rich_help_panel=IO, show_default=False,
        help="Output folder (the input tree is mirrored there); for a single input, an "
             "output file (named .wav, .flac, .m4a, .mp4, ...); '-' for standard output. With "
             "--live, the output device.")] = None,
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r", rich_help_panel=IO, help="Walk folders recursively.")] = False,
    glob: Annotated[Optional[str], typer.Option(
        metavar="PATTERN", rich_help_panel=IO,
        help="Only take files whose name or relative path matches, e.g. '*.flac'.")] = None,
    fmt: Annotated[Optional[str], typer.Option(
        "--format", metavar="FORMAT", rich_help_panel=IO,
        help="Output format: WAV, FLAC, OGG, MP3, ... (libsndfile's; one audio track) "
             "[default: as the input: M4A, MP4, WebM... are written in their own container, "
             "codec and bitrate]")] = None,
    subtype: Annotated[Optional[str], typer.Option(
        metavar="SUBTYPE", rich_help_panel=IO,
        help="Output sample format: PCM_16, PCM_24, FLOAT, ... [default: as the input, or "
             "the nearest the container holds]")] = None,
    audio_track: Annotated[Optional[str], typer.Option(
        "--audio-track", metavar="N|all", rich_help_panel=IO,
        help="Which audio track of a video or multi-track file to enhance (1 is the first); "
             "the others are copied untouched. [default: all]")] = None,
    audio_only: Annotated[bool, typer.Option(
        "--audio-only", rich_help_panel=IO,
        help="From a video, write only the enhanced audio (lecture.mp4 -> lecture.m4a).")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", rich_help_panel=IO, help="Replace existing outputs.")] = False,
    skip_existing: Annotated[bool, typer.Option(
        "--skip-existing", rich_help_panel=IO,
        help="Keep existing outputs and skip their inputs.")] = False,
    resume: Annotated[bool, typer.Option(
        "--resume", rich_help_panel=IO,
        help="Skip an input only if the run log says its output was made from this input, "
             "unchanged, with the same settings; redo it otherwise.")] = False,
    log: Annotated[Optional[Path], typer.Option(
        "--log", metavar="FILE", dir_okay=False, rich_help_panel=IO,
        help="The run log: one JSON line per finished file [default: .denoise-log.jsonl in "
             "the -o folder, or beside a single output file]")] = None,
    no_log: Annotated[bool, typer.Option(
        "--no-log", rich_help_panel=IO, help="Write no run log.")] = False,
    method: Annotated[Optional[str], typer.Option(
        metavar="|".join(METHODS), rich_help_panel=ENHANCE, callback=_one_of(METHODS, "method"),
        help="dfn3: DeepFilterNet3, neural, 48 kHz full band, its weights installed with "
             "denoise (MIT/Apache-2.0). spectral: classical, the fastest. demucs: the DEMUCS "
             "network; downloads its model on first use (official weights CC BY-NC 4.0: "
             "non-commercial). [default: dfn3, or spectral where DeepFilterNet3 has no wheel; "
             "demucs with --model or --weights, spectral with --strength or --noise-file]")] = None,
    dry: Annotated[float, typer.Option(
        metavar="X", min=0.0, max=1.0, rich_help_panel=ENHANCE,
        help="Fraction of the original mixed back into the output, 0 to 1: 0 fully "
             "denoised, 1 the input unchanged. [default: 0]")] = 0.0,
    dehum: Annotated[Optional[str], typer.Option(
        metavar="|".join(DEHUM_MODES), rich_help_panel=ENHANCE,
        callback=_one_of(DEHUM_MODES, "dehum mode"),
        help="Find mains hum or buzz (auto: 50 or 60 Hz) in each file and take out its "
             "audible harmonics, following their drift, before the method; a file without "
             "hum passes this step untouched. With --stream and --live: found in the last 6 s "
             "and taken out from a second later, with no added latency. [default: off; auto "
             "with --preset podcast]")] = None,
    dereverb: Annotated[float, typer.Option(
        metavar="STRENGTH", min=0.0, max=1.0, rich_help_panel=ENHANCE,
        help="Take out late room reverberation (WPE) before the method, 0 to 1: for a "
             "bare room or a microphone at arm's length; dry recordings pass nearly "
             "unchanged. Files only, not --stream; about 0.1 s a second of 16 kHz audio, "
             "0.3 s at 48 kHz, on one core. [default: 0]")] = 0.0,
    atten_lim: Annotated[Optional[float], typer.Option(
        "--atten-lim", metavar="DB", min=0.0, rich_help_panel=ENHANCE,
        help="The most any time-frequency region is attenuated, so the background gets "
             "quieter rather than gone; 0 no limit. [default: 15 for spectral, none for "
             "demucs]")] = None,
    channels: Annotated[str, typer.Option(
        metavar="|".join(CHANNEL_MODES), rich_help_panel=ENHANCE,
        help="each: every channel on its own; mix: the mono mix, on every channel; linked: "
             "the mono mix's gains on every channel (the stereo image stays put). With "
             "--raw, a number: the input's channel count. [default: each]")] = "each",
    band_limit: Annotated[bool, typer.Option(
        "--band-limit", rich_help_panel=ENHANCE,
        help="demucs, files above 16 kHz: keep the model's band (nothing above 8 kHz) "
             "instead of restoring the upper band from the input.")] = False,
    segment: Annotated[Optional[float], typer.Option(
        "--segment-s", metavar="SECONDS", min=1.0, rich_help_panel=ENHANCE,
        help="Long files are processed in chunks this long; memory grows with it. "
             "[default: 30 for spectral, 60 for demucs]")] = None,
    strength: Annotated[Optional[float], typer.Option(
        metavar="X", min=0.0, max=1.0, rich_help_panel=SPECTRAL,
        help="0 to 1: 0 leaves the input exactly as it is, 1 applies the full reduction. "
             "[default: 1]")] = None,
    noise_file: Annotated[Optional[Path], typer.Option(
        metavar="FILE", exists=True, dir_okay=False, rich_help_panel=SPECTRAL,
        help="A recording of the noise alone; its spectrum is used instead of tracking "
             "the noise (best for steady noise).")] = None,
    model: Annotated[Optional[str], typer.Option(
        metavar="NAME", rich_help_panel=DEMUCS,
        help=f"Pretrained model: {', '.join(PRETRAINED_MODELS)} (see --list-models). "
             "[default: dns48]")] = None,
    weights: Annotated[Optional[Path], typer.Option(
        metavar="FILE", exists=True, dir_okay=False, rich_help_panel=DEMUCS,
        help="A local checkpoint (state_dict or training package) instead of "
             "downloading --model.")] = None,
    device: Annotated[Optional[str], typer.Option(
        metavar="DEVICE", rich_help_panel=ENHANCE,
        help="Where dfn3 or demucs runs: auto, cpu, cuda, cuda:N (demucs also mps). dfn3 on "
             "a GPU needs pip install 'denoise-speech[gpu]'. [default: cpu]")] = None,
    dfn3_engine: Annotated[Optional[str], typer.Option(
        "--dfn3-engine", metavar="onnx|runtime", rich_help_panel=ENHANCE,
        callback=_one_of(("onnx", "runtime"), "dfn3-engine"),
        help="onnx: DeepFilterNet3's networks over whole chunks with ONNX Runtime (CPU or "
             "GPU); runtime: libDF's own, frame by frame. Same output to about 50 dB or "
             "more; streams always use the runtime. [default: onnx]")] = None,
    preset: Annotated[Optional[str], typer.Option(
        metavar="|".join(PRESETS), rich_help_panel=FINISH, callback=_one_of(PRESETS, "preset"),
        help="podcast: -16 LUFS (mono -19), -1 dBTP, --dehum auto, --leveler; broadcast (EBU "
             "R128): -23 LUFS, -1 dBTP. --loudness, --true-peak, --dehum and --no-leveler "
             "override its parts.")] = None,
    loudness: Annotated[Optional[float], typer.Option(
        metavar="LUFS", max=0.0, rich_help_panel=FINISH,
        help="Normalise each output's integrated loudness (ITU-R BS.1770) to LUFS.")] = None,
    true_peak: Annotated[Optional[float], typer.Option(
        "--true-peak", metavar="DBTP", max=0.0, rich_help_panel=FINISH,
        help="Keep inter-sample peaks (4x oversampled) under DBTP with a look-ahead "
             "limiter.")] = None,
    clip: Annotated[str, typer.Option(
        metavar="|".join(CLIP_MODES), rich_help_panel=FINISH,
        callback=_one_of(CLIP_MODES, "clip policy"),
        help="Samples beyond full scale in an integer or lossy output: limit them (limiter "
             "at full scale), report them (clip and count) or error (fail the file). "
             "[default: limit]")] = "limit",
    leveler: Annotated[Optional[bool], typer.Option(
        "--leveler/--no-leveler", rich_help_panel=FINISH,
        help="Even out voices: each stretch of speech (found by voice activity detection) "
             "moved toward the file's typical speech loudness over about a second, pauses "
             "never lifted above the speech around them. Files only, not --stream. "
             "[default: off; on with --preset podcast]")] = None,
    leveler_max_gain: Annotated[float, typer.Option(
        "--leveler-max-gain", metavar="DB", min=1.0, max=40.0, rich_help_panel=FINISH,
        help="The most the leveler raises or lowers any speech. [default: 15]")] = 15.0,
    residue: Annotated[bool, typer.Option(
        "--residue", rich_help_panel=FINISH,
        help="Also write what was removed (input minus output) as NAME.residue.EXT.")] = False,
    report: Annotated[Optional[Path], typer.Option(
        "--report", metavar="DIR", file_okay=False, rich_help_panel=REPORTS,
        help="Measure every file before and after (levels, loudness, noise floor, SNR) and "
             "write DIR/report.html, .json and .csv.")] = None,
    plot: Annotated[bool, typer.Option(
        "--plot", rich_help_panel=REPORTS,
        help="Draw each file's waveform and spectrogram before and after: NAME.EXT.png "
             "beside the output, or in DIR/plots with --report.")] = False,
    reference: Annotated[Optional[Path], typer.Option(
        "--reference", metavar="DIR", exists=True, file_okay=False, rich_help_panel=REPORTS,
        help="Clean recordings at the outputs' relative paths: adds PESQ, STOI, ESTOI and "
             "SI-SDR.")] = None,
    dnsmos: Annotated[bool, typer.Option(
        "--dnsmos", rich_help_panel=REPORTS,
        help="Add DNSMOS P.835 quality scores (1-5, no reference needed); about 0.2 s per 9 s "
             "of audio. Needs pip install 'denoise-speech[dnsmos]'.")] = False,
    jobs: Annotated[Optional[int], typer.Option(
        "-j", "--jobs", metavar="N", min=1, rich_help_panel=RUN,
        help="Worker processes. [default: one per core when the work is worth it, else "
             "none]")] = None,
    cluster: Annotated[Optional[str], typer.Option(
        "--cluster", metavar="ADDRESS", rich_help_panel=RUN,
        help="Run on the Dask scheduler at ADDRESS (tcp://host:8786); workers must see the "
             "same paths. Needs pip install 'denoise-speech[cluster]'.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", rich_help_panel=RUN, help="Show what would be done; write nothing.")] = False,
    json_lines: Annotated[bool, typer.Option(
        "--json", rich_help_panel=RUN, help="One JSON object per file on standard output.")] = False,
    quiet: Annotated[bool, typer.Option(
        "-q", "--quiet", rich_help_panel=RUN, help="Print only errors.")] = False,
    verbose: Annotated[bool, typer.Option(
        "-v", "--verbose", rich_help_panel=RUN,
        help="A line for every file; a traceback for an internal error.")] = False,
    stream: Annotated[bool, typer.Option(
        "--stream", rich_help_panel=LIVE,
        help="Enhance standard input to standard output as it arrives, block by block, in "
             "its own format: a WAV stream (as arecord and ffmpeg -f wav - write it) or raw "
             "PCM (--raw).")] = False,
    raw: Annotated[Optional[str], typer.Option(
        metavar="FORMAT", rich_help_panel=LIVE,
        callback=_one_of(RAW_FORMATS, "raw sample format"),
        help=f"--stream input is headerless PCM: {', '.join(RAW_FORMATS)} (ffmpeg's names), "
             "with --rate and --channels N; the output is the same.")] = None,
    rate: Annotated[Optional[int], typer.Option(
        metavar="HZ", min=1000, rich_help_panel=LIVE,
        help="The sample rate of --raw input; for --live, the rate the devices are opened "
             "at. [default for --live: the method's own, 48000 for dfn3 and spectral, 16000 for "
             "demucs]")] = None,
    hop_ms: Annotated[Optional[float], typer.Option(
        "--hop-ms", metavar="MS", min=1.0, rich_help_panel=LIVE,
        help="demucs: enhance in steps of MS, a multiple of 16; a longer step costs less "
             "per second of audio and adds its length to the latency. [default: 16]")] = None,
    fp16: Annotated[bool, typer.Option(
        "--fp16", rich_help_panel=LIVE,
        help="demucs: keep the model's large weights in float16 (x86-64 CPUs): hops about "
             "1.3x faster, the output within -100 dB of float32's (see the README).")] = False,
    live: Annotated[bool, typer.Option(
        "--live", rich_help_panel=LIVE,
        help="Enhance an input device into an output device until Ctrl-C, showing the "
             "latency and any dropouts. Needs pip install 'denoise-speech[live]'.")] = False,
    input_device: Annotated[Optional[str], typer.Option(
        "--input", metavar="DEVICE", rich_help_panel=LIVE,
        help="--live: the input device, by number or part of its name (see --list-devices). "
             "[default: the system's]")] = None,
    virtual_mic: Annotated[bool, typer.Option(
        "--virtual-mic", rich_help_panel=LIVE,
        help="--live on Linux (PulseAudio or PipeWire): write to a new virtual microphone, "
             "'Denoise microphone', that call apps can pick; it is removed on exit.")] = False,
    list_devices: Annotated[bool, typer.Option(
        "--list-devices", is_eager=True, callback=_list_devices, rich_help_panel=ABOUT,
        help="Show the audio devices --live can use.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_version, rich_help_panel=ABOUT,
        help="Print the version and exit.")] = False,
    self_test: Annotated[bool, typer.Option(
        "--self-test", is_eager=True, callback=_self_test, rich_help_panel=ABOUT,
        help="Check the installation: enhance a second of noise with each method that "
             "needs no download.")] = False,
    list_models: Annotated[bool, typer.Option(
        "--list-models", is_eager=True, callback=_list_models, rich_help_panel=ABOUT,
        help="Show the pretrained models and which are downloaded.")] = False,
    download_model: Annotated[Optional[str], typer.Option(
        "--download-model", metavar="NAME", is_eager=True, callback=_download_model,
        rich_help_panel=ABOUT, help="Download a pretrained model, then exit.")] = None,
) -> None:
    method = method or _implied_method(model or weights, strength is not None or noise_file)
    if stream or live:
        raise typer.Exit(_stream_or_live(ctx, method, inputs, output, stream, live, raw, rate,
                                         channels,
                                         hop_ms, input_device, virtual_mic, quiet, verbose, dry,
                                         atten_lim, strength, noise_file, model, weights, fp16,
                                         dehum or "off"))
    if channels not in CHANNEL_MODES:
        _usage_error(f"--channels {channels}: a channel count is for --raw input; the modes "
                     f"are {', '.join(CHANNEL_MODES)}" if channels.isdigit() else
                     f"--channels: {channels!r} is not a channel mode; choose from "
                     f"{', '.join(CHANNEL_MODES)}")
    if not inputs:
        _usage_error("Missing argument 'INPUT...'. (see denoise --help)")
    if output is None:
        _usage_error("Missing option '-o' / '--output'. (see denoise --help)")
    given = _given(ctx) & {"raw", "rate", "hop_ms", "input_device", "virtual_mic", "fp16"}
    if given:
        _usage_error(f"{_names(ctx, given)}: only with --stream or --live")
    _check_combinations(method, output, inputs, quiet, verbose, json_lines,
                        sum((overwrite, skip_existing, resume)), bool(log) and no_log,
                        spectral_only={"--strength": strength, "--noise-file": noise_file},
                        demucs_only={"--model": model, "--weights": weights,
                                     "--band-limit": band_limit or None},
                        file_outputs={"--residue": residue, "--report": report, "--plot": plot,
                                      "--reference": reference, "--dnsmos": dnsmos})
    if device is not None and method not in ("demucs", "dfn3"):
        _usage_error("--device: only for --method demucs or dfn3")
    if dfn3_engine is not None and method != "dfn3":
        _usage_error("--dfn3-engine: only for --method dfn3")
    _need_stack()
    from denoise.engine import BatchOptions, Finishing, Measure

    backend_options = _backend_options(method, strength=strength,
                                       noise=_recording("--noise-file", noise_file),
                                       model=model, weights=weights, device=device,
                                       engine=dfn3_engine)
    with _usage_errors():
        options = BatchOptions(
            method=method, backend_options=backend_options, jobs=jobs, fmt=fmt, subtype=subtype,
            existing=("overwrite" if overwrite else "skip" if skip_existing
                      else "resume" if resume else "error"),
            log=None if no_log else str(log) if log else "auto", cluster=cluster,
            segment_s=segment, dry=dry, channels=channels, atten_lim_db=atten_lim,
            dehum=dehum or (PRESETS[preset].dehum if preset else "off"), dereverb=dereverb,
            full_band=not band_limit, audio_track=_audio_track(audio_track),
            audio_only=audio_only,
            finishing=Finishing(loudness_lufs=loudness, true_peak_dbtp=true_peak, preset=preset,
                                clip=clip, residue=residue, leveler=leveler,
                                leveler_max_gain_db=leveler_max_gain))
    view = present.View(quiet=quiet, verbose=verbose, json_lines=json_lines, dry_run=dry_run,
                        from_stdin=inputs == ["-"])
    measure = Measure(report_dir=report, plot=plot, reference_dir=reference, dnsmos=dnsmos)
    if method == "demucs" and not (dry_run or quiet):
        present.licence_note(model, weights)
    raise typer.Exit(_run(inputs, output, recursive, glob, overwrite, options, view, measure))


def _given(ctx: typer.Context) -> set[str]:
    """The parameters given on the command line."""
    return {name for name in ctx.params
            if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"}


def _names(ctx: typer.Context, params: set[str]) -> str:
    """``--report, --plot``: the options as the user typed them."""
    options = {param.name: max(param.opts, key=len) for param in ctx.command.params}
    return ", ".join(sorted(options[name] for name in params))


def _stream_or_live(ctx, method, inputs, output, stream, live, raw, rate, channels, hop_ms,
                    input_device, virtual_mic, quiet, verbose, dry, atten_lim, strength,
                    noise_file, model, weights, fp16, dehum) -> int:
    """``--stream`` and ``--live``: check what they can take, then run."""
    if stream and live:
        _usage_error("--stream and --live cannot be used together")
    mode = "--stream" if stream else "--live"
    refused = _given(ctx) - STREAM_TAKES
    if refused:
        _usage_error(f"{_names(ctx, refused)}: not with {mode} (files only)")
    if quiet and verbose:
        _usage_error("-q and -v cannot be used together")
    _method_only(method, spectral_only={"--strength": strength, "--noise-file": noise_file},
                 demucs_only={"--model": model, "--weights": weights, "--fp16": fp16})
    if method == "demucs" and atten_lim is not None:
        _usage_error("--atten-lim: with --stream or --live, only for --method spectral or dfn3")
    raw_channels = None
    if channels.isdigit():
        if not raw:
            _usage_error(f"--channels {channels}: a channel count is for --raw input")
        raw_channels, channels = int(channels), "each"
    elif channels not in CHANNEL_MODES:
        _usage_error(f"--channels: {channels!r} is not a channel mode; choose from "
                     f"{', '.join(CHANNEL_MODES)}")
    if stream:
        if inputs not in (None, ["-"]) or output not in (None, "-"):
            _usage_error("--stream reads standard input and writes standard output; to "
                         "enhance files, leave out --stream")
        if raw and (rate is None or raw_channels is None):
            _usage_error("--raw needs --rate HZ and --channels N (the input has no header)")
        if not raw and (rate is not None or raw_channels is not None):
            _usage_error("--rate and --channels N describe --raw input; a WAV stream's "
                         "header gives them")
        if sys.stdout.isatty():
            _usage_error("refusing to write audio to a terminal; pipe it into a player "
                         "(| aplay, | ffplay -) or redirect it")
        if sys.stdin.isatty():
            _usage_error("--stream reads audio from standard input, which is a terminal "
                         "here; pipe a stream in (arecord | denoise --stream | aplay)")
    else:
        if inputs or raw:
            _usage_error("--live reads the --input device, not files or standard input")
        if virtual_mic and output is not None:
            _usage_error("--virtual-mic is the output; -o names another output device")
    _need_stack()
    from denoise.engine.backends import BackendSpec

    spec = BackendSpec(method, _backend_options(
        method, strength=strength, noise=_recording("--noise-file", noise_file),
        atten_lim_db=atten_lim, model=model, weights=weights, stream_fp16=fp16 or None))
    view = present.StreamView(quiet=quiet, verbose=verbose)
    if method == "demucs" and not quiet:
        present.licence_note(model, weights)
    if stream:
        return _pipe(spec, raw, rate, raw_channels, channels, dry, hop_ms, dehum, view)
    return _live(spec, input_device, output, rate, channels, dry, hop_ms, dehum, virtual_mic,
                 view)


def _pipe(spec, raw, rate, raw_channels, channel_mode, dry, hop_ms, dehum, view) -> int:
    from denoise.engine.pipe import SAMPLE_FORMATS, StreamFormat, StreamFormatError, run_pipe

    try:
        with _usage_errors():
            fmt = (StreamFormat(rate, raw_channels, SAMPLE_FORMATS[raw], wav=False)
                   if raw else None)
        result = run_pipe(sys.stdin.fileno(), sys.stdout.buffer, spec, raw=fmt,
                          channel_mode=channel_mode, dry=dry, hop_ms=hop_ms, dehum=dehum,
                          on_start=view.stream_started)
    except StreamFormatError as error:
        present.error(f"standard input: {error}")
        return 1
    except DenoiseError as refusal:
        present.error(str(refusal))
        return 2
    except BrokenPipeError:  # the player or the next program stopped reading
        present.silence_stdout()
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt as stop:
        return present.exit_code(stop)
    view.stream_ended(result)
    return 0


def _live(spec, input_device, output_device, rate, channel_mode, dry, hop_ms, dehum,
          virtual_mic, view) -> int:
    from contextlib import nullcontext

    from denoise.engine.live import VirtualMicrophone, run_live

    as_device = lambda name: int(name) if name is not None and name.isdigit() else name  # noqa: E731
    try:
        with _usage_errors(), (VirtualMicrophone() if virtual_mic else nullcontext()) as mic:
            if mic is not None:
                view.virtual_mic(mic)
                output_device = "pulse"
            run_live(spec, as_device(input_device), as_device(output_device), rate,
                     channel_mode, dry, hop_ms, dehum, on_status=view.live_status)
    except KeyboardInterrupt as stop:  # Ctrl-C is how a live run ends
        view.live_ended()
        return 0 if getattr(stop, "signum", signal.SIGINT) == signal.SIGINT \
            else present.exit_code(stop)
    view.live_ended()
    return 0


def _check_combinations(method, output, inputs, quiet, verbose, json_lines, policies,
                        log_twice, spectral_only, demucs_only, file_outputs) -> None:
    """Usage errors that need no file read: options that contradict each
    other or do nothing with the method chosen."""
    _method_only(method, spectral_only, demucs_only)
    given = lambda options: [name for name, value in options.items() if value]  # noqa: E731
    if quiet and verbose:
        _usage_error("-q and -v cannot be used together")
    if policies > 1:
        _usage_error("--overwrite, --skip-existing and --resume cannot be used together")
    if log_twice:
        _usage_error("--log and --no-log cannot be used together")
    if output == "-" and json_lines:
        _usage_error("--json prints to standard output, which '-o -' uses for audio")
    if output == "-" and given(file_outputs):
        _usage_error(f"{', '.join(given(file_outputs))} need output files, not '-o -'")
    if output == "-" and sys.stdout.isatty():
        _usage_error("refusing to write audio to a terminal; redirect it (-o - > out.wav) or "
                     "pipe it into another program")
    if inputs == ["-"] and sys.stdin.isatty():
        _usage_error("'-' reads audio from standard input, which is a terminal here; pipe "
                     "a file in (cat a.wav | denoise - -o out.wav)")


def _audio_track(value: str | None) -> int | None:
    """``--audio-track``: a track number from 1, or all (``None``)."""
    if value is None or value.lower() == "all":
        return None
    if not value.isdigit() or int(value) < 1:
        _usage_error(f"--audio-track {value}: give a track number (1 is the first) or 'all'")
    return int(value)


def _implied_method(demucs_options, spectral_options) -> str:
    """The method when none is named: the one whose options were given,
    else the default (dfn3, or spectral where dfn3 cannot run)."""
    if demucs_options:
        return "demucs"
    if spectral_options:
        return "spectral"
    from denoise.engine.backends import default_method

    return default_method()


def _method_only(method: str, spectral_only: dict, demucs_only: dict) -> None:
    """Refuse options given for the method not chosen."""
    for owner, options in (("demucs", demucs_only), ("spectral", spectral_only)):
        given = [name for name, value in options.items()
                 if value is not None and value is not False]
        if method != owner and given:
            _usage_error(f"{', '.join(given)}: only for --method {owner}")


def _backend_options(method: str, **given) -> dict:
    """The options of ``method``'s backend among ``given`` (None: not given)."""
    from denoise.engine.backends import backend_class

    fields = backend_class(method).Options.__dataclass_fields__
    return {name: value for name, value in given.items()
            if name in fields and value is not None}


def _recording(option: str, path: Path | None):
    """A recording an option names, read once before anything runs."""
    if path is None:
        return None
    from denoise.engine.audio_io import read_recording
    from denoise.engine.errors import FileError

    try:
        return read_recording(path)
    except FileError as error:
        _usage_error(f"{option} {path}: {error.cause}")


def _run(inputs, output, recursive, pattern, overwrite, options, view, measure) -> int:
    """Plan, run, present; returns the exit code."""
    from denoise.engine import Batch, plan_jobs

    with _usage_errors():
        if measure.dnsmos:
            from denoise.engine.dnsmos import check_available

            check_available()
        plan = plan_jobs(inputs, output, recursive=recursive, pattern=pattern,
                         overwrite=overwrite, fmt=options.fmt, audio_only=options.audio_only)
    view.problems(plan.problems)
    view.left_out(plan.left_out())
    started = time.perf_counter()
    tally = present.Tally(failed=len(plan.problems))
    records, batch = [], None
    try:
        with _usage_errors():  # standard input is read here: Ctrl-C may come
            batch = Batch(plan.jobs, options, measure=measure,
                          stdout=sys.stdout.buffer if output == "-" else None)
        with batch, view.progress_bar(batch) as on_progress:
            results = batch.planned() if view.dry_run else batch.run(on_progress=on_progress)
            for result in results:
                tally.add(result)
                view.result(result)
                if result.report is not None:
                    records.append(result.report)
    except KeyboardInterrupt as stop:
        return view.interrupted(tally, stop)
    except DenoiseError as refusal:  # the model cannot be had, the cluster cannot be reached
        present.error(str(refusal))
        return 2
    except BrokenPipeError:  # '-o -' into a reader that stopped (| head): say nothing more
        present.silence_stdout()
        return 128 + signal.SIGPIPE
    view.after_run(batch, options, records, measure, tally, time.perf_counter() - started)
    return 1 if tally.failed else 0


class _usage_errors:
    """Turn the engine's refusals of the request as a whole into exit 2."""

    def __enter__(self):
        return self

    def __exit__(self, kind, error, _traceback):
        if isinstance(error, (DenoiseError, ValueError)):
            _usage_error(str(error))
        return False


def _need_stack() -> None:
    problem = stack_problem()
    if problem is not None:
        present.error(problem)
        raise typer.Exit(2)


def _usage_error(message: str) -> None:
    present.error(message)
    raise typer.Exit(2)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled as Ctrl-C is: outputs in progress are
    removed, the counts are printed, and the exit code is 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, _frame) -> None:
    raise Stopped(signum)


def run(argv: list[str]) -> int:
    """The whole command, from arguments to exit code; what ``main`` and
    the tests call."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="denoise", standalone_mode=False)
    except typer.Exit as stop:
        code = stop.exit_code
    except KeyboardInterrupt as stop:  # before or after the batch (during it: _run)
        code = present.exit_code(stop)
    except typer.BadParameter as error:
        present.error(f"{error.format_message()} (see denoise --help)")
        code = 2
    except Exception as error:  # noqa: BLE001 - click's usage errors, and any bug
        code = _unexpected(error, argv)
    return code if isinstance(code, int) else 0


def _unexpected(error: Exception, argv: list[str]) -> int:
    """A usage error from the parser is one line and exit 2; anything else
    is a bug: one line, the traceback in a file (and on screen with -v)."""
    click_error = getattr(error, "exit_code", None)
    if click_error is not None and hasattr(error, "format_message"):
        if error.format_message():  # empty after 'denoise' alone: the help was the answer
            present.error(f"{error.format_message()} (see denoise --help)")
        return click_error
    path = save_traceback(error)
    where = f"the traceback is in {path}" if path else "run again with -v for the traceback"
    present.error(f"internal error: {type(error).__name__}: {error} (a bug in denoise; {where})")
    if "-v" in argv or "--verbose" in argv:
        present.traceback(error)
    return 3


def main() -> None:
    """The console script. Once the command is done, everything it opened
    is closed (outputs renamed, workers stopped, the run log closed) and its
    output flushed; with torch loaded, the interpreter's own teardown then
    takes another 0.6 to 0.9 s and does nothing for the user, so the process
    ends at once, unless some library left a thread running that might
    still have work to do."""
    code = run(sys.argv[1:])
    present.flush()
    others = [thread for thread in threading.enumerate()
              if thread is not threading.main_thread() and not thread.daemon]
    if others:
        sys.exit(code)
    logging.shutdown()
    os._exit(code)
