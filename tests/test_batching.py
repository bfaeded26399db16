"""Chunks from several files go through the backend in one batch (what makes a
GPU fast); the assembly and the split back are checked here on the CPU."""

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import noisy_tone, snr_db
from denoise.engine import Batch, BatchOptions, plan_jobs
from denoise.engine.backends.demucs import DemucsBackend, DemucsOptions
from denoise.engine.backends.demucs_model import Demucs
from denoise.engine.pipeline import FileStats, enhance_audio, enhance_batch

SMALL = {"hidden": 8, "depth": 4}


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("w") / "small.th"
    torch.save({"kwargs": SMALL, "state": Demucs(**SMALL).state_dict()}, path)
    return DemucsBackend(DemucsOptions(weights=path))


def _signals():
    """Three signals with their whole files' statistics (as chunks have them)."""
    return [(noisy_tone(16000, 16000, 1, seed=1).T.copy(), 16000, _stats([0.2], [-20])),
            (noisy_tone(30000, 48000, 2, seed=2).T.copy(), 48000, _stats([0.2, 0.3], [-20, -45])),
            (noisy_tone(9000, 16000, 1, seed=3).T.copy(), 16000, _stats([0.25], [-18]))]


def _stats(std, speech_dbfs):
    return FileStats(np.array(std, np.float32), np.array(speech_dbfs, float))


def test_batch_equals_one_by_one_and_is_one_call(backend, monkeypatch):
    calls = []
    enhance = backend.enhance
    monkeypatch.setattr(backend, "enhance", lambda audio, rate, std: calls.append(
        tuple(audio.shape)) or enhance(audio, rate, std))
    batched = enhance_batch(backend, _signals())
    assert calls == [(4, 16000)], "all rows (1 + 2 + 1 channels) in one call, padded to the longest"
    calls.clear()
    for (audio, rate, std), out in zip(_signals(), batched):
        alone = enhance_audio(backend, audio, rate, stats=std)
        assert out.shape == audio.shape
        assert snr_db(alone, out) > 60
    assert len(calls) == 3


def test_batch_that_does_not_fit_is_split(backend, monkeypatch):
    forward = backend.model.forward

    def small_memory(x, std=None):
        if x.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(x, std=std)

    expected = enhance_batch(backend, _signals())
    monkeypatch.setattr(backend.model, "forward", small_memory)
    for out, reference in zip(enhance_batch(backend, _signals()), expected):
        np.testing.assert_allclose(out, reference, atol=1e-5)


def test_cpu_takes_one_chunk_per_call(backend):
    assert backend.chunks_per_call(30.0) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batch_run_matches_cpu(tmp_path, backend):
    (tmp_path / "in").mkdir()
    for index in range(5):
        sf.write(str(tmp_path / "in" / f"{index}.wav"),
                 noisy_tone(16000 * (index + 1), 16000, 1, seed=index), 16000, subtype="FLOAT")
    weights = backend.options.weights
    outputs = {}
    for device in ("cpu", "cuda"):
        jobs = plan_jobs([str(tmp_path / "in")], str(tmp_path / device)).jobs
        batch = Batch(jobs, BatchOptions(method="demucs", jobs=1, segment_s=2.0, backend_options={
            "weights": weights, "device": device}))
        assert {r.status for r in batch.run()} == {"done"}
        outputs[device] = [sf.read(str(tmp_path / device / f"{i}.wav"))[0] for i in range(5)]
    for cpu, cuda in zip(outputs["cpu"], outputs["cuda"]):
        assert snr_db(cpu, cuda) > 40


def test_each_worker_loads_the_model_once(tmp_path, small_checkpoint):
    from conftest import write_audio
    from denoise.engine import Batch, BatchOptions, plan_jobs

    for index in range(8):
        write_audio(tmp_path / "in" / f"f{index}.wav", frames=16000, seed=index)
    jobs = plan_jobs([str(tmp_path / "in")], str(tmp_path / "out")).jobs
    batch = Batch(jobs, BatchOptions(method="demucs", jobs=2,
                                     backend_options={"weights": small_checkpoint[0]}))
    assert [result.status for result in batch.run()] == ["done"] * 8
    assert 1 <= len(batch.builds_per_worker) <= 2  # the worker processes that took chunks
    assert set(batch.builds_per_worker.values()) == {1}  # each built the model once
