"""DEMUCS on real files: any rate and channel count, --dry, chunked = whole."""

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import noisy_tone, snr_db
from denoise.engine import Batch, BatchOptions, plan_jobs
from denoise.engine.backends.demucs_model import Demucs

@pytest.mark.parametrize("rate, channels, subtype", [(16000, 1, "PCM_16"), (44100, 2, "PCM_24"),
                                                     (48000, 6, "FLOAT"), (8000, 1, "PCM_16")])
def test_rate_channels_and_length_are_kept(tmp_path, cli, small_checkpoint, rate, channels, subtype):
    frames = rate + 17
    sf.write(str(tmp_path / "in.wav"), noisy_tone(frames, rate, channels), rate, subtype=subtype)
    result = cli(tmp_path / "in.wav", "-o", tmp_path / "out.wav", "--method", "demucs",
                 "--weights", small_checkpoint[0], "-j", "1")
    assert result.exit_code == 0, result.output
    info = sf.info(str(tmp_path / "out.wav"))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (rate, channels, frames, subtype)


def test_dry_one_returns_the_input_and_zero_the_model_output(tmp_path, cli, small_checkpoint):
    signal = noisy_tone(16000, 16000, 1)
    sf.write(str(tmp_path / "in.wav"), signal, 16000, subtype="FLOAT")
    outputs = {}
    for dry in ("0", "1"):
        result = cli(tmp_path / "in.wav", "-o", tmp_path / f"dry{dry}.wav", "--method", "demucs",
                     "--weights", small_checkpoint[0], "--dry", dry, "-j", "1")
        assert result.exit_code == 0, result.output
        outputs[dry] = sf.read(str(tmp_path / f"dry{dry}.wav"), dtype="float32")[0]
    np.testing.assert_allclose(outputs["1"], signal[:, 0], atol=1e-6)
    with torch.no_grad():
        expected = small_checkpoint[1](torch.from_numpy(signal[:, 0])[None, None])[0, 0].numpy()
    assert snr_db(expected, outputs["0"]) > 60


def test_dry_is_explained_in_help(cli):
    words = " ".join(cli("--help").output.replace("│", " ").split())
    assert "0 fully denoised, 1 the input unchanged" in words


def test_channels_mix_writes_the_enhanced_mono_mix_to_every_channel(tmp_path, cli, small_checkpoint):
    stereo = noisy_tone(16000, 16000, 2)
    sf.write(str(tmp_path / "in.wav"), stereo, 16000, subtype="FLOAT")
    result = cli(tmp_path / "in.wav", "-o", tmp_path / "out.wav", "--method", "demucs",
                 "--weights", small_checkpoint[0], "--channels", "mix", "-j", "1")
    assert result.exit_code == 0, result.output
    out = sf.read(str(tmp_path / "out.wav"), dtype="float32")[0]
    assert out.shape == stereo.shape
    np.testing.assert_array_equal(out[:, 0], out[:, 1])
    with torch.no_grad():
        mono = torch.from_numpy(stereo.mean(axis=1))[None, None]
        expected = small_checkpoint[1](mono)[0, 0].numpy()
    assert snr_db(expected, out[:, 0]) > 60


@pytest.mark.parametrize("architecture, seconds, bound_db", [
    ({"hidden": 16}, 60, 40),
    # The non-causal model's LSTM runs at 1 kHz (stride 2): 20 s keeps it quick.
    ({"hidden": 16, "causal": False, "stride": 2, "resample": 2}, 20, 30)])
def test_chunked_run_matches_the_whole_file_forward(tmp_path, bench_data, architecture, seconds,
                                                    bound_db):
    """A long file at 16 kHz in 10 s chunks against one forward pass over the
    whole file (the reference's way, normalised by the whole file's deviation)."""
    speech, rate = sf.read(str(bench_data / "librispeech_ljspeech_ami_cv__lhotse"
                               / "libri-1088-134315-0000.wav"), dtype="float32")
    noisy = np.resize(speech, seconds * rate) + 0.02 * np.random.default_rng(0).standard_normal(
        seconds * rate).astype(np.float32)
    sf.write(str(tmp_path / "long.wav"), noisy, rate, subtype="FLOAT")
    torch.manual_seed(4)
    model = Demucs(**architecture).eval()
    torch.save({"kwargs": architecture, "state": model.state_dict()}, tmp_path / "m.th")
    with torch.no_grad():
        whole = model(torch.from_numpy(noisy)[None, None])[0, 0].numpy()
    jobs = plan_jobs([str(tmp_path / "long.wav")], str(tmp_path / "out.wav")).jobs
    options = BatchOptions(method="demucs", jobs=1, segment_s=10,
                           backend_options={"weights": tmp_path / "m.th"})
    batch = Batch(jobs, options)
    assert [r.status for r in batch.run()] == ["done"]
    assert batch.tasks["chunks"] == seconds // 10
    chunked = sf.read(str(tmp_path / "out.wav"), dtype="float32")[0]
    assert snr_db(whole, chunked) >= bound_db
