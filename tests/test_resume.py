"""Resumable runs: the run log, --skip-existing after a killed run, and
--resume redoing what changed."""

import json
import os
import subprocess
import sys
import time

import soundfile as sf

from conftest import noisy_tone


def _inputs(folder, count, seconds, rate=16000):
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        sf.write(str(folder / f"f{index}.wav"), noisy_tone(seconds * rate, rate, seed=index), rate)
    return sorted(path.name for path in folder.iterdir())


def _statuses(result_stdout: str) -> dict:
    records = [json.loads(line) for line in result_stdout.splitlines()]
    return {os.path.basename(record["input"]): record["status"] for record in records}


def test_a_killed_run_started_again_does_only_what_is_missing(tmp_path):
    names = _inputs(tmp_path / "in", 8, 30)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "denoise.cli", str(tmp_path / "in"), "-o", str(out), "-j", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = out / ".denoise-log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and len(log.read_text().splitlines()) >= 2):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no file finished"
        time.sleep(0.02)
    process.kill()
    process.wait(timeout=30)
    finished = sorted(path.name for path in out.glob("*.wav"))
    assert 2 <= len(finished) < len(names)

    again = subprocess.run(command + ["--skip-existing", "--json"], capture_output=True,
                           text=True, timeout=300)

    assert again.returncode == 0, again.stderr
    statuses = _statuses(again.stdout)
    assert {name for name, status in statuses.items() if status == "skipped"} == set(finished)
    assert {name for name, status in statuses.items() if status == "done"} \
        == set(names) - set(finished)
    for name in names:
        assert sf.info(str(out / name)).frames == 30 * 16000


def test_resume_redoes_what_changed_and_nothing_else(tmp_path, cli):
    names = _inputs(tmp_path / "in", 3, 2)
    out = tmp_path / "out"
    first = cli(tmp_path / "in", "-o", out, "-j", "1", "--json")
    assert first.exit_code == 0, first.output
    log_lines = (out / ".denoise-log.jsonl").read_text().splitlines()
    assert [json.loads(line)["status"] for line in log_lines] == ["done"] * 3
    assert {"input_size", "input_mtime_ns", "settings", "settings_key"} <= set(json.loads(log_lines[0]))

    same = cli(tmp_path / "in", "-o", out, "-j", "1", "--resume", "--json")
    assert set(_statuses(same.stdout).values()) == {"skipped"}

    sf.write(str(tmp_path / "in" / names[1]), noisy_tone(16000, 16000, seed=9), 16000)
    touched = cli(tmp_path / "in", "-o", out, "-j", "1", "--resume", "--json")
    assert _statuses(touched.stdout) == {names[0]: "skipped", names[1]: "done",
                                         names[2]: "skipped"}
    assert sf.info(str(out / names[1])).frames == 16000

    changed = cli(tmp_path / "in", "-o", out, "-j", "1", "--resume", "--dry", "0.5", "--json")
    assert set(_statuses(changed.stdout).values()) == {"done"}
    again = cli(tmp_path / "in", "-o", out, "-j", "1", "--resume", "--dry", "0.5", "--json")
    assert set(_statuses(again.stdout).values()) == {"skipped"}


def test_log_goes_where_asked_and_resume_excludes_overwrite(tmp_path, cli):
    _inputs(tmp_path / "in", 1, 1)
    log = tmp_path / "logs" / "run.jsonl"
    result = cli(tmp_path / "in", "-o", tmp_path / "out", "-j", "1", "--log", log)
    assert result.exit_code == 0, result.output
    assert len(log.read_text().splitlines()) == 1
    assert not (tmp_path / "out" / ".denoise-log.jsonl").exists()
    clash = cli(tmp_path / "in", "-o", tmp_path / "out", "--resume", "--overwrite")
    assert clash.exit_code == 2 and "cannot be used together" in clash.output
    assert sf.info(str(tmp_path / "out" / "f0.wav")).frames == 16000
