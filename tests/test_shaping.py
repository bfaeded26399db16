"""--atten-lim for every backend and --channels linked, measured on real speech."""

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.nn import functional as F

from bench.pairs import load_mono, mix_at_snr
from denoise.engine.bands import stft


@pytest.fixture
def interview(bench_data, tmp_path):
    """16 kHz speech in typing noise at 5 dB, as a spaced stereo pair: the
    right channel 6 dB down and 1 ms late."""
    rate = 16000
    speech = load_mono(bench_data / "vctk__auspicious3000_autovc" / "p225" / "p225_003.wav",
                       rate)
    noise = load_mono(bench_data / "freesound_noise__IBM_MAX-Audio-Classifier" / "typing.wav",
                      rate)
    left = 0.5 * mix_at_snr(speech, np.resize(noise, speech.shape), 5)[1]
    stereo = np.stack([left, 0.5 * np.roll(left, round(0.001 * rate))], axis=1)
    path = tmp_path / "interview.wav"
    sf.write(str(path), stereo, rate, subtype="FLOAT")
    return path


def _attenuation_db(before: np.ndarray, after: np.ndarray, rate: int):
    """Per STFT bin, and per 3x3-bin region, of the bins within 60 dB of the loudest."""
    noisy = stft(torch.from_numpy(np.ascontiguousarray(before.T)), rate).abs() ** 2
    out = stft(torch.from_numpy(np.ascontiguousarray(after.T)), rate).abs() ** 2
    heard = noisy > noisy.max() * 1e-6
    per_bin = 10 * torch.log10(noisy[heard] / out[heard].clamp(min=1e-20))
    region = lambda power: F.avg_pool2d(power, 3, 1, 1)  # noqa: E731
    per_region = 10 * torch.log10(region(noisy)[heard] / region(out)[heard].clamp(min=1e-20))
    return per_bin, per_region


@pytest.mark.parametrize("method", ["spectral", "demucs"])
def test_atten_lim_bounds_the_attenuation_of_every_bin(interview, tmp_path, cli,
                                                       small_checkpoint, method):
    extra = ["--weights", small_checkpoint[0]] if method == "demucs" else []
    source, rate = sf.read(str(interview), dtype="float32")
    attenuation = {}
    for limit in ("0", "6"):
        out = tmp_path / f"out-{limit}.wav"
        result = cli(interview, "-o", out, "--method", method, "--atten-lim", limit,
                     "-j", "1", *extra)
        assert result.exit_code == 0, result.output
        attenuation[limit] = _attenuation_db(source, sf.read(str(out), dtype="float32")[0], rate)
    unlimited, _ = attenuation["0"]
    assert (unlimited > 9).float().mean() > 0.05  # without a limit, much more is removed
    per_bin, per_region = attenuation["6"]
    # A modified STFT is not the STFT of any signal, so after resynthesis a
    # few bins land under the floor; regions of 3x3 bins do not.
    assert (per_bin <= 7).float().mean() >= 0.995
    assert per_region.max() <= 7.5
    assert (per_bin > 3).float().mean() > 0.05  # and the limit still lets it work


@pytest.mark.parametrize("method", ["spectral", "demucs"])
def test_linked_channels_keep_the_stereo_image(interview, tmp_path, cli, small_checkpoint,
                                               method):
    extra = ["--weights", small_checkpoint[0]] if method == "demucs" else []
    out = tmp_path / "out.wav"
    result = cli(interview, "-o", out, "--method", method, "--channels", "linked", "-j", "1",
                 *extra)
    assert result.exit_code == 0, result.output
    source, rate = sf.read(str(interview), dtype="float32")
    enhanced, _ = sf.read(str(out), dtype="float32")
    assert enhanced.shape == source.shape

    def frame_power(signal):
        """Power per 100 ms frame and channel."""
        frames = signal[: len(signal) // 1600 * 1600].reshape(-1, 1600, 2)
        return np.square(frames.astype(np.float64)).mean(axis=1) + 1e-20

    before, after = frame_power(source), frame_power(enhanced)
    audible = (before.sum(axis=1) > before.sum(axis=1).max() * 1e-4) \
        & (after.sum(axis=1) > after.sum(axis=1).max() * 1e-4)
    difference_before = 10 * np.log10(before[audible, 0] / before[audible, 1])
    difference_after = 10 * np.log10(after[audible, 0] / after[audible, 1])
    overall = lambda power: 10 * np.log10(power[:, 0].sum() / power[:, 1].sum())  # noqa: E731
    assert abs(overall(after) - overall(before)) <= 0.5
    assert np.percentile(np.abs(difference_after - difference_before), 90) <= 0.5
    assert not np.allclose(enhanced, source, atol=1e-3)  # it did enhance
