"""Folder walking, output mirroring, overwrite policy, JSON and exit codes."""

import json
import os

import soundfile as sf

from conftest import write_audio
from denoise.engine.runlog import LOG_NAME


def test_folder_tree_is_mirrored_and_non_audio_skipped(tmp_path, cli):
    src = tmp_path / "in"
    write_audio(src / "a.wav")
    write_audio(src / "deep" / "er" / "b.flac")
    (src / "notes.txt").write_text("not audio")
    (src / "cover.png").write_bytes(b"\x89PNG\r\n")
    result = cli(src, "-o", tmp_path / "out", "-r", "-j", "1")
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(tmp_path / "out").as_posix()
                     for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name != LOG_NAME)
    assert written == ["a.wav", "deep/er/b.flac"]
    assert "notes.txt" not in result.output and "cover.png" not in result.output
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out" / "a.wav").stat().st_mode & 0o777 == 0o666 & ~umask


def test_without_recursive_only_top_level_is_taken(tmp_path, cli):
    write_audio(tmp_path / "in" / "a.wav")
    write_audio(tmp_path / "in" / "sub" / "b.wav")
    assert cli(tmp_path / "in", "-o", tmp_path / "out", "-j", "1").exit_code == 0
    assert [p.name for p in (tmp_path / "out").rglob("*.wav")] == ["a.wav"]


def test_glob_filters_files(tmp_path, cli):
    write_audio(tmp_path / "in" / "keep.flac")
    write_audio(tmp_path / "in" / "drop.wav")
    assert cli(tmp_path / "in", "-o", tmp_path / "out", "--glob", "*.flac", "-j", "1").exit_code == 0
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name != LOG_NAME] == ["keep.flac"]


def test_single_file_to_file_path_and_format_change(tmp_path, cli):
    write_audio(tmp_path / "talk.wav", subtype="PCM_16")
    result = cli(tmp_path / "talk.wav", "-o", tmp_path / "clean.flac", "-j", "1")
    assert result.exit_code == 0, result.output
    info = sf.info(str(tmp_path / "clean.flac"))
    assert (info.format, info.subtype, info.frames) == ("FLAC", "PCM_16", 16000)


def test_existing_output_is_an_error_unless_told(tmp_path, cli):
    write_audio(tmp_path / "in" / "a.wav")
    write_audio(tmp_path / "in" / "b.wav")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.wav").write_bytes(b"keep me")
    result = cli(tmp_path / "in", "-o", out, "-j", "1")
    assert result.exit_code == 1
    assert "a.wav exists" in result.stderr and "--overwrite" in result.stderr
    assert (out / "a.wav").read_bytes() == b"keep me"
    assert (out / "b.wav").exists()

    (out / "b.wav").unlink()
    result = cli(tmp_path / "in", "-o", out, "--skip-existing", "-j", "1")
    assert result.exit_code == 0
    assert (out / "a.wav").read_bytes() == b"keep me" and (out / "b.wav").exists()

    assert cli(tmp_path / "in", "-o", out, "--overwrite", "-j", "1").exit_code == 0
    assert sf.info(str(out / "a.wav")).frames == 16000


def test_output_equal_to_input_folder_is_refused(tmp_path, cli):
    original = write_audio(tmp_path / "in" / "a.wav").read_bytes()
    result = cli(tmp_path / "in", "-o", tmp_path / "in", "-j", "1")
    assert result.exit_code == 2
    assert "input folder" in result.stderr and "--overwrite" in result.stderr
    assert (tmp_path / "in" / "a.wav").read_bytes() == original
    assert cli(tmp_path / "in", "-o", tmp_path / "in", "--overwrite", "-j", "1").exit_code == 0
    assert (tmp_path / "in" / "a.wav").read_bytes() != original


def test_output_equal_to_input_file_is_refused(tmp_path, cli):
    original = write_audio(tmp_path / "a.wav").read_bytes()
    result = cli(tmp_path / "a.wav", "-o", tmp_path / "a.wav", "-j", "1")
    assert result.exit_code == 2 and "input file" in result.stderr
    assert (tmp_path / "a.wav").read_bytes() == original


def test_usage_errors_exit_2(tmp_path, cli):
    write_audio(tmp_path / "a.wav")
    assert cli(tmp_path / "a.wav", "-o", tmp_path / "o", "--overwrite", "--skip-existing").exit_code == 2
    assert cli(tmp_path / "a.wav").exit_code == 2
    assert cli(tmp_path / "a.wav", "-o", tmp_path / "o", "--method", "magic").exit_code == 2
    assert cli(tmp_path / "a.wav", "-o", tmp_path / "o", "--format", "XYZ").exit_code == 2


def test_json_lines_and_exit_code_for_partial_failure(tmp_path, cli):
    write_audio(tmp_path / "in" / "good.wav", frames=32000)
    (tmp_path / "in" / "bad.wav").write_bytes(b"RIFF not really")
    result = cli(tmp_path / "in", "-o", tmp_path / "out", "--json", "-j", "1")
    assert result.exit_code == 1
    records = {r["input"].rsplit("/", 1)[-1]: r for r in map(json.loads, result.stdout.splitlines())}
    assert set(records) == {"good.wav", "bad.wav"}
    good, bad = records["good.wav"], records["bad.wav"]
    assert good["status"] == "done" and good["duration_s"] == 2.0 and good["error"] is None
    assert good["seconds"] > 0 and 0 < good["realtime_factor"] < 5
    assert good["output"].endswith("out/good.wav")
    assert bad["status"] == "failed" and bad["input"].endswith("bad.wav")
    assert bad["error"] == "not a readable audio file (format not recognised)"


def test_dry_run_writes_nothing(tmp_path, cli):
    write_audio(tmp_path / "in" / "a.wav")
    result = cli(tmp_path / "in", "-o", tmp_path / "out", "--dry-run")
    assert result.exit_code == 0
    assert "a.wav" in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_input_fails_that_input_only(tmp_path, cli):
    write_audio(tmp_path / "a.wav")
    result = cli(tmp_path / "a.wav", tmp_path / "nope.wav", "-o", tmp_path / "out", "-j", "1")
    assert result.exit_code == 1
    assert "nope.wav: no such file" in result.stderr
    assert (tmp_path / "out" / "a.wav").exists()


def test_every_option_has_help(cli):
    result = cli("--help")
    assert result.exit_code == 0
    from denoise.cli.main import app

    command = app.registered_commands[0].callback
    import inspect

    for name in inspect.signature(command).parameters:
        if name == "ctx":  # the command's context, not an option
            continue
        option = "--" + name.replace("_", "-")
        aliases = {"inputs": "INPUT", "fmt": "--format", "json-lines": "--json",
                   "atten-lim": "--atten-lim", "segment": "--segment-s",
                   "input-device": "--input"}
        key = aliases.get(name, aliases.get(option[2:], option))
        assert key in result.output, f"{key} missing from --help"


def test_plain_output_when_not_a_terminal(tmp_path):
    """Pipelines and log files get no colour codes and no progress bar."""
    import subprocess
    import sys

    write_audio(tmp_path / "in" / "a.wav")
    (tmp_path / "in" / "b.wav").write_bytes(b"junk")
    done = subprocess.run([sys.executable, "-m", "denoise.cli", str(tmp_path / "in"), "-o",
                           str(tmp_path / "out"), "-j", "1", "-v"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NO_COLOR": "1", "TERM": "xterm-256color"})
    assert done.returncode == 1
    assert "\x1b[" not in done.stderr and done.stdout == ""
    lines = done.stderr.splitlines()
    assert any(line.startswith("error: ") and "b.wav" in line for line in lines)
    assert any(line.startswith("done: ") and "a.wav" in line for line in lines)


def test_a_run_with_worker_processes_ends_when_its_work_is_done(tmp_path):
    """The workers are told to stop at exit; the command does not wait out
    their idle timeout (300 s) before returning to the shell."""
    import subprocess
    import sys

    for name in ("a.wav", "b.wav"):
        write_audio(tmp_path / "in" / name)
    done = subprocess.run([sys.executable, "-m", "denoise.cli", str(tmp_path / "in"), "-o",
                           str(tmp_path / "out"), "-j", "2"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.wav")) == ["a.wav", "b.wav"]
