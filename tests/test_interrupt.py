"""An interrupted run leaves no partial file under a real name."""

import signal
import subprocess
import sys

import pytest

from conftest import start_long_run


@pytest.mark.parametrize("jobs", [1, 2])
def test_ctrl_c_removes_the_partial_output(tmp_path, jobs):
    process, out = start_long_run(tmp_path, jobs)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr.decode()
    assert "interrupted" in stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert list(out.iterdir()) == []


def test_killed_run_leaves_only_a_hidden_temporary(tmp_path):
    process, out = start_long_run(tmp_path, 1)
    process.kill()
    process.wait(timeout=30)
    names = [p.name for p in out.iterdir()]
    assert "long.wav" not in names
    assert all(name.startswith(".") and name.endswith(".partial") for name in names)


def test_next_run_removes_what_a_killed_run_left_but_not_a_live_runs_file(tmp_path):
    import fcntl

    process, out = start_long_run(tmp_path, 1)
    process.kill()
    process.wait(timeout=30)
    abandoned = list(out.glob(".long.wav.*.partial"))
    assert abandoned
    live = out / ".long.wav.livewriter.partial"
    live.write_bytes(b"being written by another run")
    with open(live, "rb") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)  # as a live run's writer holds it
        again = subprocess.run(
            [sys.executable, "-m", "denoise.cli", str(tmp_path / "in"), "-o", str(out), "-j", "1",
             "--segment-s", "60"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert not any(path.exists() for path in abandoned)
    assert live.exists()
    assert sorted(path.name for path in out.iterdir() if path.suffix == ".wav") == ["long.wav"]
