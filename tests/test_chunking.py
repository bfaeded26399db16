"""Chunk plans cover the file exactly; seams cannot be measured."""

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import snr_db
from denoise.engine import Batch, BatchOptions, backends, enhance_array, plan_jobs
from denoise.engine.chunking import OverlapAdd, fade_in_ramp, plan_chunks


@pytest.mark.parametrize("total, segment, overlap, align", [
    (1, 10, 2, 1), (10, 10, 2, 1), (12, 10, 2, 4), (95, 10, 3, 1), (1000, 64, 0, 16),
    (1001, 64, 63, 3)])
def test_plan_covers_every_sample_once(total, segment, overlap, align):
    chunks = plan_chunks(total, segment, overlap, context_before=7, context_after=5, align=align)
    weight = np.zeros(total)
    for chunk in chunks:
        window = np.ones(chunk.keep_stop - chunk.keep_start)
        window[:chunk.fade_in] = fade_in_ramp(chunk.fade_in)
        window[len(window) - chunk.fade_out:] -= fade_in_ramp(chunk.fade_out)
        weight[chunk.keep_start:chunk.keep_stop] += window
        assert 0 <= chunk.read_start <= chunk.keep_start < chunk.keep_stop <= chunk.read_stop <= total
        assert chunk.read_start % align == 0
        assert chunk.keep_start - chunk.read_start >= min(7, chunk.keep_start)
    np.testing.assert_allclose(weight, 1.0, atol=1e-6)
    assert chunks[-1].keep_stop == total and chunks[0].keep_start == 0


def test_overlap_add_of_unchanged_chunks_is_exact():
    signal = np.random.default_rng(1).standard_normal((2, 5003)).astype(np.float32)
    ola, pieces = OverlapAdd(), []
    for chunk in plan_chunks(signal.shape[-1], 700, 120, 0, 0):
        pieces.append(ola.add(chunk, signal[:, chunk.keep_start:chunk.keep_stop].copy()))
    np.testing.assert_array_equal(np.concatenate(pieces, axis=-1), signal)


def test_overlap_add_cross_fades_chunks_that_differ():
    """Chunk outputs of 0 and then 1: the seam rises smoothly from one to
    the other across the overlap, and nowhere else."""
    chunks = plan_chunks(300, 100, 40, 0, 0)
    ola = OverlapAdd()
    out = np.concatenate([ola.add(chunk, np.full((1, chunk.keep_stop - chunk.keep_start),
                                                 float(chunk.index), dtype=np.float32))
                          for chunk in chunks], axis=-1)[0]
    seam = out[100:140]
    assert np.all(out[:100] == 0) and np.all(out[140:200] == 1)
    assert np.all(np.diff(seam) > 0) and 0 < seam[0] < 0.01 and 0.99 < seam[-1] < 1


def test_chunked_file_through_a_resampling_backend(tmp_path, monkeypatch):
    monkeypatch.setitem(backends.REGISTRY, "half", "half_backend:HalfBackend")
    rate = 44100
    t = np.arange(rate * 5) / rate
    signal = (0.4 * np.sin(2 * np.pi * 330 * t))[:, None].astype(np.float32)
    sf.write(str(tmp_path / "a.wav"), signal, rate, subtype="FLOAT")
    jobs = plan_jobs([str(tmp_path / "a.wav")], str(tmp_path / "b.wav")).jobs
    options = BatchOptions(method="half", jobs=1, segment_s=1.0, overlap_s=0.1)
    assert [r.status for r in Batch(jobs, options).run()] == ["done"]
    out, _ = sf.read(str(tmp_path / "b.wav"), dtype="float32")
    interior = slice(rate // 10, -rate // 10)  # resampling filters ring at the true ends
    assert snr_db(0.5 * signal[interior, 0], out[interior]) > 60


def test_spectral_chunked_run_equals_whole_file_run(tmp_path, bench_data):
    speech, rate = sf.read(str(bench_data / "librispeech_ljspeech_ami_cv__lhotse"
                               / "libri-1088-134315-0000.wav"), dtype="float32")
    noise, noise_rate = sf.read(str(bench_data / "freesound_noise__IBM_MAX-Audio-Classifier"
                                    / "crowd_cheering.wav"), dtype="float32")
    noise = torch.nn.functional.interpolate(torch.from_numpy(noise.mean(axis=1))[None, None],
                                            scale_factor=rate / noise_rate)[0, 0].numpy()
    noisy = speech + 0.5 * np.resize(noise, speech.shape)
    sf.write(str(tmp_path / "noisy.wav"), noisy, rate, subtype="FLOAT")
    whole = enhance_array(noisy, rate, method="spectral")

    jobs = plan_jobs([str(tmp_path / "noisy.wav")], str(tmp_path / "chunked.wav")).jobs
    options = BatchOptions(method="spectral", jobs=1, segment_s=3.0, overlap_s=0.25)
    batch = Batch(jobs, options)
    results = list(batch.run())
    assert [r.status for r in results] == ["done"]
    assert batch.tasks["chunks"] >= 5
    chunked, _ = sf.read(str(tmp_path / "chunked.wav"), dtype="float32")
    assert chunked.shape == whole.shape
    peak_error = np.abs(chunked - whole).max()
    print(f"chunked vs whole: peak error {peak_error:.2e}, SNR {snr_db(whole, chunked):.1f} dB")
    assert peak_error < 1e-4 or snr_db(whole, chunked) >= 60, (peak_error, snr_db(whole, chunked))
