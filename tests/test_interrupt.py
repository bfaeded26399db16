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


def test_ctrl_c_stops_a_threaded_completion_at_its_next_block(tmp_path, monkeypatch):
    """dfn3's onnx engine runs a batch on threads, which cannot be killed:
    a Ctrl-C that lands while a file is being finished (here made slow, a
    30 s block every 0.5 s) has the completion give up at its next block,
    its temporary output removed, instead of finishing the file first."""
    import os
    import threading
    import time

    import numpy as np
    import soundfile as sf

    from denoise.engine import Batch, BatchOptions, Finishing, finishing, plan_jobs
    from denoise.engine.pool import LocalThreads

    rate = 16000
    (tmp_path / "in").mkdir()
    noise = 0.05 * np.random.default_rng(0).standard_normal(rate * 300).astype(np.float32)
    sf.write(str(tmp_path / "in" / "talk.wav"), noise, rate)
    monkeypatch.setattr("denoise.engine.schedule.default_jobs", lambda: 2)
    finishing_began = threading.Event()
    write = finishing.Output.write

    def slow_write(output, block):
        finishing_began.set()
        time.sleep(0.5)
        return write(output, block)

    monkeypatch.setattr(finishing.Output, "write", slow_write)
    pools = []
    monkeypatch.setattr("denoise.engine.schedule.LocalThreads",
                        lambda workers: pools.append(LocalThreads(workers)) or pools[-1])
    jobs = plan_jobs([str(tmp_path / "in")], str(tmp_path / "out")).jobs
    batch = Batch(jobs, BatchOptions(method="dfn3", log=None,
                                     finishing=Finishing(preset="podcast")))
    interrupted_at = []

    def ctrl_c_once_finishing():
        finishing_began.wait(120)
        interrupted_at.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c_once_finishing, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        list(batch.run())
    stopped_after = time.monotonic() - interrupted_at[0]
    assert len(pools) == 1  # the batch ran on threads
    assert list((tmp_path / "out").iterdir()) == []
    assert stopped_after < 2.0  # 10 blocks of 0.5 s if the file were finished first
    # the next batch in this process, on a pool of any kind, is not stopped
    monkeypatch.setattr(finishing.Output, "write", write)
    again = Batch(plan_jobs([str(tmp_path / "in")], str(tmp_path / "again")).jobs,
                  BatchOptions(method="spectral", jobs=1, log=None,
                               finishing=Finishing(preset="podcast")))
    assert [result.status for result in again.run()] == ["done"]
