"""What a new user meets in the first hour: each rough edge found by hand,
as the user would notice it (files, exit codes, messages)."""

import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from conftest import answer_ctrl_c, noisy_tone, start_long_run, write_audio
from denoise.engine import Batch, BatchOptions, plan_jobs
from denoise.engine.runlog import LOG_NAME

CLI = [sys.executable, "-m", "denoise.cli"]


def _errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_an_output_folder_inside_the_input_folder_is_never_walked(tmp_path, cli, monkeypatch):
    write_audio(tmp_path / "talk.wav")
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        result = cli(".", "-o", "clean", "-r", "--overwrite")
        assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(tmp_path / "clean").as_posix()
                  for p in (tmp_path / "clean").rglob("*.wav")) == ["talk.wav"]


@pytest.mark.parametrize("how", ["file", "--format", "stdin"])
def test_a_lossy_source_becomes_16_bit_pcm_in_a_container_that_cannot_hold_it(tmp_path, cli,
                                                                               how):
    talk = tmp_path / "talk.mp3"
    sf.write(str(talk), noisy_tone(32000, 16000), 16000, format="MP3")
    if how == "file":
        result, written = cli(talk, "-o", tmp_path / "clean.wav"), tmp_path / "clean.wav"
    elif how == "--format":
        result = cli(talk, "-o", tmp_path / "out", "--format", "WAV")
        written = tmp_path / "out" / "talk.wav"
    else:
        result = cli("-", "-o", tmp_path / "out", stdin=talk.read_bytes())
        written = tmp_path / "out" / "stdin.wav"
    assert result.exit_code == 0, result.output
    info = sf.info(str(written))
    assert (info.format, info.subtype) == ("WAV", "PCM_16")
    assert abs(info.frames - sf.info(str(talk)).frames) == 0


def test_float_source_into_flac_keeps_24_bits(tmp_path, cli):
    write_audio(tmp_path / "a.wav", subtype="FLOAT")
    assert cli(tmp_path / "a.wav", "-o", tmp_path / "a.flac").exit_code == 0
    assert sf.info(str(tmp_path / "a.flac")).subtype == "PCM_24"


def test_plots_of_files_with_the_same_stem_never_share_a_picture(tmp_path, cli):
    sources = {"a/take.wav": 1, "a/take.flac": 2, "b/take.wav": 3}
    for relative, seed in sources.items():
        write_audio(tmp_path / "in" / relative, frames=16000 * seed, seed=seed)
    result = cli(tmp_path / "in", "-o", tmp_path / "out", "-r", "--report", tmp_path / "rep",
                 "--plot")
    assert result.exit_code == 0, result.output
    plots = sorted(p.relative_to(tmp_path / "rep" / "plots").as_posix()
                   for p in (tmp_path / "rep" / "plots").rglob("*.png"))
    assert plots == ["a/take.flac.png", "a/take.wav.png", "b/take.wav.png"]
    pictures = {p.read_bytes() for p in (tmp_path / "rep" / "plots").rglob("*.png")}
    assert len(pictures) == 3
    result = cli(tmp_path / "in" / "a", "-o", tmp_path / "beside", "--plot")
    assert sorted(p.name for p in (tmp_path / "beside").glob("*.png")) == \
        ["take.flac.png", "take.wav.png"]


def test_the_run_log_stays_at_the_output_root_so_resume_finds_it(tmp_path, cli):
    write_audio(tmp_path / "in" / "sub" / "a.wav")
    out = tmp_path / "out"
    assert cli(tmp_path / "in", "-o", out, "-r").exit_code == 0
    assert (out / LOG_NAME).exists() and not (out / "sub" / LOG_NAME).exists()
    write_audio(tmp_path / "in" / "b.wav", seed=1)  # the set of outputs grows upwards
    result = cli(tmp_path / "in", "-o", out, "-r", "--resume", "--json")
    statuses = {Path(r["input"]).name: (r["status"], r["reason"])
                for r in map(json.loads, result.stdout.splitlines())}
    assert statuses == {"a.wav": ("skipped", "up to date (same input and settings in the run "
                                             "log)"),
                        "b.wav": ("done", None)}


def test_a_single_file_logs_beside_its_output_and_no_log_writes_none(tmp_path, cli,
                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_audio(tmp_path / "a.wav")
    assert cli("a.wav", "-o", tmp_path / "out" / "clean.wav").exit_code == 0
    assert (tmp_path / "out" / LOG_NAME).exists() and not (tmp_path / LOG_NAME).exists()
    assert cli("a.wav", "-o", tmp_path / "quiet" / "clean.wav", "--no-log").exit_code == 0
    assert [p.name for p in (tmp_path / "quiet").iterdir()] == ["clean.wav"]


def test_a_run_that_finds_nothing_says_why_and_fails(tmp_path, cli):
    (tmp_path / "in" / "day1").mkdir(parents=True)
    (tmp_path / "in" / "day2").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not audio")
    result = cli(tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert _errors(result) == [f"error: no audio files found in {tmp_path / 'in'}; "
                               "2 subfolders not entered: use --recursive"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--method", "spectral", "--model", "dns64"], "--model: only for --method demucs"),
    (["--method", "spectral", "--device", "cuda"], "--device: only for --method demucs or dfn3"),
    (["--method", "demucs", "--dfn3-engine", "runtime"], "--dfn3-engine: only for --method dfn3"),
    (["--method", "demucs", "--strength", "0.5"], "--strength: only for --method spectral"),
    (["-q", "-v"], "-q and -v cannot be used together"),
])
def test_options_of_the_other_method_are_refused(tmp_path, cli, args, message):
    write_audio(tmp_path / "a.wav")
    result = cli(tmp_path / "a.wav", "-o", tmp_path / "out", *args)
    assert result.exit_code == 2
    (line,) = _errors(result)
    assert message in line
    assert not (tmp_path / "out").exists()


def test_weights_imply_the_demucs_method(tmp_path, cli, small_checkpoint):
    write_audio(tmp_path / "a.wav")
    result = cli(tmp_path / "a.wav", "-o", tmp_path / "out", "--weights", small_checkpoint[0],
                 "--report", tmp_path / "rep")
    assert result.exit_code == 0, result.output
    settings = json.loads((tmp_path / "rep" / "report.json").read_text())["settings"]
    assert settings["method"] == "demucs"


def test_a_noise_file_that_is_not_audio_is_one_usage_error_before_anything_runs(tmp_path, cli):
    for name in ("a.wav", "b.wav"):
        write_audio(tmp_path / "in" / name)
    (tmp_path / "notes.txt").write_text("hum at 50 Hz")
    result = cli(tmp_path / "in", "-o", tmp_path / "out", "--noise-file", tmp_path / "notes.txt")
    assert result.exit_code == 2
    assert _errors(result) == [f"error: --noise-file {tmp_path / 'notes.txt'}: not a readable "
                               "audio file (format not recognised)"]
    assert not (tmp_path / "out").exists()


def test_a_small_batch_runs_in_this_process_and_a_big_one_in_workers(tmp_path, monkeypatch):
    """For a backend that holds the GIL (spectral; dfn3's onnx engine runs
    on threads, tests/test_dfn3.py)."""
    from denoise.engine.schedule import Run

    for index in range(4):
        write_audio(tmp_path / "in" / f"{index}.wav", frames=16000 * 5, seed=index)
    jobs = plan_jobs([str(tmp_path / "in")], str(tmp_path / "out")).jobs
    batch = Batch(jobs, BatchOptions(method="spectral", log=None))
    assert all(result.status == "done" for result in batch.run())
    assert set(batch.builds_per_worker) == {os.getpid()}  # no worker process started
    monkeypatch.setattr("denoise.engine.schedule.default_jobs", lambda: 2)
    run = Run(Batch(jobs, BatchOptions(method="spectral", log=None, existing="overwrite")))
    assert run._pool_size() == 1
    run.backend.compute_s_per_audio_s = 1.0  # 20 s of work: worth two workers
    assert run._pool_size() == 2
    run.close()


@pytest.mark.parametrize("signum, code, jobs", [(signal.SIGTERM, 143, 1),
                                                (signal.SIGTERM, 143, 2),
                                                (signal.SIGHUP, 129, 1)])
def test_sigterm_and_sighup_stop_like_ctrl_c(tmp_path, signum, code, jobs):
    process, out = start_long_run(tmp_path, jobs)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    stderr = stderr.decode()
    assert process.returncode == code, stderr
    assert f"stopped by {signal.Signals(signum).name}: 0 files done" in stderr
    assert "Traceback" not in stderr and "leaked" not in stderr
    assert [p.name for p in out.iterdir()] == []


def test_podcast_noise_reduction_is_net_of_the_loudness_gain(tmp_path, cli):
    rate = 16000
    quiet = 0.05 * noisy_tone(rate * 6, rate)  # about -40 dBFS: the preset raises it
    sf.write(str(tmp_path / "quiet.wav"), quiet, rate, subtype="FLOAT")
    # The spectral filter, whose modest reduction the gain outweighs: the floor rises.
    result = cli(tmp_path / "quiet.wav", "-o", tmp_path / "out.wav", "--preset", "podcast",
                 "--method", "spectral", "--report", tmp_path / "rep")
    assert result.exit_code == 0, result.output
    (record,) = json.loads((tmp_path / "rep" / "report.json").read_text())["files"]
    metrics = record["metrics"]
    assert metrics["loudness_gain_db"] > 15
    floors = metrics["noise_floor_dbfs_in"] - metrics["noise_floor_dbfs_out"]
    assert floors < 0  # the floor itself went up with the gain
    assert metrics["noise_reduction_db"] == pytest.approx(floors + metrics["loudness_gain_db"])
    assert metrics["noise_reduction_db"] > 3


def test_the_report_reads_as_a_person_would(tmp_path):
    write_audio(tmp_path / "in" / "a.wav", frames=16000 * 3)
    report = tmp_path / "rep"
    done = subprocess.run(CLI + [str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--report",
                                 str(report)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    page = (report / "report.html").read_text()
    assert "None" not in page and "atten_lim_db" not in page
    assert "<th>method</th><td>dfn3</td>" in page  # the default
    assert "<th>attenuation limit</th><td>none</td>" in page
    assert "<th>model licence</th><td>MIT or Apache-2.0</td>" in page
    summary = json.loads((report / "report.json").read_text())["summary"]
    seconds = float(re.search(r"of audio in ([\d.]+) s", done.stderr).group(1))
    assert summary["processing_s"] == pytest.approx(seconds, abs=0.06)
    assert "3.0 s</td>" in page and re.search(r"RTF 0\.\d*[1-9]", page)
    table = [line for line in done.stderr.splitlines() if "noise reduction dB" in line]
    assert table and len(table[0]) > 80  # a pipe gets the whole table, not 80 columns


def test_plots_show_each_channel_and_read_in_dbfs(tmp_path):
    from denoise.engine.plots import plot_data

    rate = 48000
    t = np.arange(rate) / rate
    centred = 43 * rate / 2048  # on an FFT bin: no scalloping loss
    stereo = np.stack([np.sin(2 * np.pi * centred * t), np.zeros(rate)], axis=1)
    sf.write(str(tmp_path / "s.wav"), stereo.astype(np.float32), rate, subtype="FLOAT")
    data = plot_data(tmp_path / "s.wav")
    assert data.low.shape[0] == 2 and data.high[0].max() > 0.99 and np.all(data.high[1] == 0)
    sf.write(str(tmp_path / "m.wav"), stereo[:, 0].astype(np.float32), rate, subtype="FLOAT")
    assert plot_data(tmp_path / "m.wav").spectrum_db.max() == pytest.approx(0.0, abs=0.05)


def test_progress_ends_exactly_at_the_total(tmp_path):
    write_audio(tmp_path / "in" / "a.wav", frames=16000 * 20)
    write_audio(tmp_path / "in" / "b.wav", frames=16000 * 7, seed=1)
    seen = []
    jobs = plan_jobs([str(tmp_path / "in")], str(tmp_path / "out")).jobs
    batch = Batch(jobs, BatchOptions(segment_s=3, log=None))
    list(batch.run(on_progress=seen.append))
    assert all(p.audio_s_done <= p.audio_s_total + 1e-9 for p in seen)
    assert seen[-1].audio_s_done == pytest.approx(27.0) and seen[-1].files_done == 2


def test_a_wav_cut_short_is_reported_as_truncated(tmp_path, cli):
    full = write_audio(tmp_path / "full.wav", subtype="PCM_16")
    (tmp_path / "cut.wav").write_bytes(full.read_bytes()[:1000])
    result = cli(tmp_path / "cut.wav", "-o", tmp_path / "out.wav", "--json")
    assert result.exit_code == 0, result.output
    (record,) = map(json.loads, result.stdout.splitlines())
    assert record["warnings"] == ["file is truncated: its header promises 16000 samples, "
                                  "the file holds 478; enhanced what is there"]
    assert sf.info(str(tmp_path / "out.wav")).frames == 478
    shown = cli(tmp_path / "cut.wav", "-o", tmp_path / "again.wav")
    assert f"warning: {tmp_path / 'cut.wav'}: file is truncated" in shown.stderr


@pytest.mark.parametrize("target", ["file", "proc"])
def test_an_output_that_cannot_be_written_is_one_error_before_the_run(tmp_path, cli, target):
    for name in ("a.wav", "b.wav"):
        write_audio(tmp_path / "in" / name)
    out = tmp_path / "taken.txt" if target == "file" else Path("/proc/denoise-out")
    if target == "file":
        out.write_text("a file")
    result = cli(tmp_path / "in", "-o", out)
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and str(out) in line
    assert "a.wav" not in line and "of audio" not in result.stderr


def test_a_single_input_to_a_media_name_is_a_file_and_unknown_formats_are_refused(tmp_path,
                                                                                  cli):
    write_audio(tmp_path / "intro.wav")
    result = cli(tmp_path / "intro.wav", "-o", tmp_path / "result.amr")
    assert result.exit_code == 2 and "cannot write .amr files" in result.stderr
    assert not (tmp_path / "result.amr").exists()
    assert cli(tmp_path / "intro.wav", "-o", tmp_path / "result.m4a").exit_code == 0
    with av.open(str(tmp_path / "result.m4a")) as written:
        assert written.streams.audio[0].codec_context.name == "aac"
    assert cli(tmp_path / "intro.wav", "-o", tmp_path / "result.flac").exit_code == 0
    assert sf.info(str(tmp_path / "result.flac")).format == "FLAC"


def test_audio_is_never_written_to_a_terminal(tmp_path):
    write_audio(tmp_path / "a.wav")
    leader, follower = pty.openpty()
    done = subprocess.run(CLI + [str(tmp_path / "a.wav"), "-o", "-"], stdout=follower,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(follower)
    os.set_blocking(leader, False)
    try:
        shown = os.read(leader, 65536)
    except OSError:  # nothing was written (EAGAIN), or the terminal is gone (EIO)
        shown = b""
    os.close(leader)
    assert done.returncode == 2
    assert "refusing to write audio to a terminal" in done.stderr and shown == b""


def test_help_reads_well(cli):
    page = cli("--help").stdout
    flat = " ".join(page.replace("│", " ").split())
    assert "Usage: denoise [OPTIONS] INPUT... -o OUT" in page
    assert not re.search(r"<(str|float|bool|int|list|path)", page)
    for group in ("Input and output", "Enhancement", "Spectral method", "DEMUCS method",
                  "Finishing", "Reports", "Running", "Information", "Exit codes:"):
        assert group in page
    assert "--atten-lim DB" in page and "--loudness LUFS" in page and "--noise-file FILE" in page
    assert "nothing above 8 kHz" in flat and "--install-completion" in page
    assert "143" in page and "terminated (SIGTERM)" in flat
    wrong = cli("a.wav", "-o", "x", "--method", "foo")
    assert wrong.exit_code == 2
    assert _errors(wrong) == ["error: Invalid value for '--method': 'foo' is not a method; "
                              "choose from dfn3, spectral, demucs (see denoise --help)"]


@pytest.mark.parametrize("channels", ["each", "linked"])
def test_strength_zero_gives_the_input_back_bit_for_bit(tmp_path, cli, channels):
    write_audio(tmp_path / "a.wav", frames=16000 * 4, channels=2, subtype="PCM_16")
    result = cli(tmp_path / "a.wav", "-o", tmp_path / "b.wav", "--strength", "0",
                 "--channels", channels, "--segment-s", "1")
    assert result.exit_code == 0, result.output
    before, after = (sf.read(str(tmp_path / name), dtype="int16")[0] for name in ("a.wav", "b.wav"))
    assert np.array_equal(before, after)


def test_json_records_say_null_for_what_was_not_measured(tmp_path, cli):
    write_audio(tmp_path / "in" / "a.wav")
    (record,) = map(json.loads, cli(tmp_path / "in", "-o", tmp_path / "out", "--dry-run",
                                    "--json").stdout.splitlines())
    assert record["status"] == "planned"
    assert record["seconds"] is None and record["realtime_factor"] is None


def test_ctrl_c_on_standard_input_does_not_suggest_resume(tmp_path):
    spool = tmp_path / "tmp"
    spool.mkdir()
    process = subprocess.Popen(CLI + ["-", "-o", str(tmp_path / "out")], stdin=subprocess.PIPE,
                               stderr=subprocess.PIPE, env={**os.environ, "TMPDIR": str(spool)},
                               preexec_fn=answer_ctrl_c)
    process.stdin.write(b"RIFF")  # a producer that has not finished
    process.stdin.flush()
    deadline = time.monotonic() + 120
    while not list(spool.glob("denoise-stdin-*")):  # reading standard input now
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert b"interrupted" in stderr and b"--resume" not in stderr and b"Traceback" not in stderr
    assert list(spool.iterdir()) == []


def test_a_reader_that_stops_early_ends_the_run_quietly(tmp_path):
    write_audio(tmp_path / "a.wav", frames=16000 * 20)
    process = subprocess.Popen(CLI + [str(tmp_path / "a.wav"), "-o", "-"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert len(process.stdout.read(100)) == 100  # as `| head -c 100` does
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141
    assert stderr == ""


def test_several_inputs_into_a_file_name_are_refused(tmp_path, cli):
    for name in ("a.wav", "b.wav"):
        write_audio(tmp_path / name)
    result = cli(tmp_path / "a.wav", tmp_path / "b.wav", "-o", tmp_path / "both.wav")
    assert result.exit_code == 2
    assert _errors(result) == [f"error: -o {tmp_path / 'both.wav'} is named like a file, but 2 "
                               "inputs need an output folder; name a folder, or give one input "
                               "file"]
    assert not (tmp_path / "both.wav").exists()


def test_denoise_alone_shows_the_help(cli):
    result = cli()
    assert result.exit_code == 2
    assert result.stdout.startswith("Usage: denoise") and result.stderr == ""
