"""Ready to publish: loudness targets, the true-peak limiter, clipping that is
never silent, and the residue."""

import json

import numpy as np
import pytest
import soundfile as sf
from bench.pairs import load_mono, mix_at_snr
from denoise.engine.dsp import FULL_SCALE
from denoise.engine.finishing import Limiter, true_peak
from denoise.engine.metrics import measure_file
from denoise.engine.runlog import LOG_NAME


def _dbtp(path) -> float:
    data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    return float(20 * np.log10(true_peak(data.T).max()))


@pytest.fixture
def speech_48k(bench_data, tmp_path):
    """Real 48 kHz speech with real crowd noise at 15 dB SNR, as a stereo
    interview (the second voice channel 6 dB lower), and its mono mix."""
    rate = 48000
    speech = load_mono(bench_data / "valentini_p286__iver56_audiomentations" / "p286_011.wav",
                       rate)
    noise = load_mono(bench_data / "freesound_noise__IBM_MAX-Audio-Classifier"
                      / "crowd_cheering.wav", rate)
    noisy = 0.3 * mix_at_snr(speech, np.resize(noise, speech.shape), 15)[1]
    stereo = np.stack([noisy, 0.5 * np.roll(noisy, 480)], axis=1)
    sf.write(str(tmp_path / "stereo.wav"), stereo, rate, subtype="PCM_24")
    sf.write(str(tmp_path / "mono.wav"), noisy, rate, subtype="PCM_24")
    return tmp_path


@pytest.mark.parametrize("preset, name, lufs", [("podcast", "stereo.wav", -16.0),
                                                ("podcast", "mono.wav", -19.0),
                                                ("broadcast", "stereo.wav", -23.0)])
def test_presets_reach_their_loudness_under_the_true_peak_ceiling(speech_48k, cli, preset,
                                                                  name, lufs):
    out = speech_48k / "out" / name
    result = cli(speech_48k / name, "-o", out, "--preset", preset, "-j", "1")
    assert result.exit_code == 0, result.output
    assert measure_file(out).loudness_lufs == pytest.approx(lufs, abs=0.5)
    assert _dbtp(out) <= -1.0
    assert sf.info(str(out)).frames == sf.info(str(speech_48k / name)).frames


def test_loud_target_makes_the_limiter_work_and_keeps_the_target(speech_48k, cli):
    out = speech_48k / "loud.wav"
    result = cli(speech_48k / "stereo.wav", "-o", out, "--loudness", "-10", "--true-peak", "-2",
                 "-j", "1")
    assert result.exit_code == 0, result.output
    before = measure_file(speech_48k / "stereo.wav")
    assert before.peak_dbfs - before.loudness_lufs > 10  # speech peaks stand well above -10
    assert measure_file(out).loudness_lufs == pytest.approx(-10.0, abs=0.5)
    assert _dbtp(out) <= -2.0


def _peaky(rate=48000, seconds=6.0):
    t = np.arange(round(rate * seconds)) / rate
    signal = 0.5 * np.sin(2 * np.pi * 997 * t) * (1 + np.sin(2 * np.pi * 0.7 * t))
    signal[rate: rate + 30] = 1.6
    return np.stack([signal, 0.25 * signal]).astype(np.float32)


def test_limiter_is_the_same_in_any_blocks_keeps_length_and_one_gain():
    x = _peaky()
    ceiling = 10 ** (-1 / 20)
    whole = Limiter(48000, ceiling)
    expected = np.concatenate([whole.process(x), whole.flush()], axis=1)
    pieces = Limiter(48000, ceiling)
    blocks = [pieces.process(x[:, start:start + 4999]) for start in range(0, x.shape[1], 4999)]
    streamed = np.concatenate(blocks + [pieces.flush()], axis=1)
    assert streamed.shape == x.shape == expected.shape
    np.testing.assert_allclose(streamed, expected, atol=1e-6)
    assert true_peak(streamed).max() <= ceiling
    gain = streamed[0] / np.where(np.abs(x[0]) > 1e-3, x[0], np.nan)
    other = streamed[1] / np.where(np.abs(x[1]) > 1e-3, x[1], np.nan)
    both = ~np.isnan(gain) & ~np.isnan(other)
    np.testing.assert_allclose(gain[both], other[both], rtol=1e-4)
    assert np.nanmin(gain) < 0.5  # it did limit, the 1.6 spike by 4 dB and more


def test_limiter_gain_moves_smoothly_and_recovers_without_pumping():
    rate = 48000
    t = np.arange(2 * rate) / rate
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
    x[0, rate // 2: rate // 2 + 48] *= 3  # a 1 ms burst to 1.5
    limiter = Limiter(rate, 10 ** (-1 / 20), oversample=False)
    y = np.concatenate([limiter.process(x), limiter.flush()], axis=1)
    gain = (y / np.where(np.abs(x) > 0.05, x, np.nan))[0]
    steady = ~np.isnan(gain)
    steps = np.abs(np.diff(gain[steady]))
    assert steps.max() < 0.01  # no click: the gain slides, it never jumps
    assert np.nanmin(gain) < 0.6  # it did come down for the burst
    assert np.nanmax(gain[rate // 2 + 48: rate // 2 + 48 + rate // 100]) < 0.7  # held 10 ms
    assert np.nanmin(gain[rate:]) > 0.98  # released over 150 ms: nearly back after 0.5 s
    assert np.nanmin(gain[3 * rate // 2:]) > 0.999
    assert np.all(gain[: rate // 2 - 300][steady[: rate // 2 - 300]] == 1)  # untouched before


def test_limiter_leaves_a_signal_under_its_ceiling_exactly_alone():
    x = 0.5 * _peaky()[:, 2 * 48000:]  # no spike, peaks at 0.5
    limiter = Limiter(48000, 10 ** (-1 / 20))
    out = np.concatenate([limiter.process(x), limiter.flush()], axis=1)
    np.testing.assert_array_equal(out, x)


def _loud_input(tmp_path):
    path = tmp_path / "loud.wav"
    sf.write(str(path), _peaky().T * 0.6, 48000, subtype="PCM_16")
    return path


def test_clipping_is_limited_by_default(tmp_path, cli):
    out = tmp_path / "out.wav"
    result = cli(_loud_input(tmp_path), "-o", out, "--loudness", "-3", "-j", "1")
    assert result.exit_code == 0, result.output
    data, _ = sf.read(str(out), dtype="float32")
    assert np.abs(data).max() <= FULL_SCALE
    assert "clipped" not in result.output


def test_clipping_is_reported_when_asked(tmp_path, cli):
    out = tmp_path / "out.wav"
    result = cli(_loud_input(tmp_path), "-o", out, "--loudness", "-3", "--clip", "report",
                 "--json", "-j", "1")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.splitlines()[0])
    assert record["clipped_samples"] > 100
    text = cli(_loud_input(tmp_path), "-o", out, "--loudness", "-3", "--clip", "report",
               "--overwrite", "-j", "1")
    assert f"warning: {out}: {record['clipped_samples']} samples clipped" in text.output
    assert "clipped" not in cli(_loud_input(tmp_path), "-o", out, "--loudness", "-3",
                                "--overwrite", "-j", "1").output  # limited instead


def test_clipping_fails_the_file_when_asked(tmp_path, cli):
    out = tmp_path / "out.wav"
    result = cli(_loud_input(tmp_path), "-o", out, "--loudness", "-3", "--clip", "error",
                 "-j", "1")
    assert result.exit_code == 1
    assert "would clip" in result.output and str(out) in result.output
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        LOG_NAME, "loud.wav"]  # no output, no temporary; the log says it failed


def test_float_outputs_keep_samples_beyond_full_scale(tmp_path, cli):
    out = tmp_path / "out.wav"
    result = cli(_loud_input(tmp_path), "-o", out, "--loudness", "-3", "--subtype", "FLOAT",
                 "-j", "1")
    assert result.exit_code == 0, result.output
    assert np.abs(sf.read(str(out), dtype="float32")[0]).max() > 1.0


@pytest.mark.parametrize("method", ["spectral", "demucs"])
def test_residue_plus_output_is_the_input(speech_48k, cli, small_checkpoint, method):
    out = speech_48k / "out" / "stereo.wav"
    extra = ["--weights", small_checkpoint[0]] if method == "demucs" else []
    result = cli(speech_48k / "stereo.wav", "-o", out, "--residue", "--subtype", "FLOAT",
                 "--method", method, "--dry", "0.2", "-j", "1", "--segment-s", "2", *extra)
    assert result.exit_code == 0, result.output
    residue = speech_48k / "out" / "stereo.residue.wav"
    source, _ = sf.read(str(speech_48k / "stereo.wav"), dtype="float32")
    enhanced, _ = sf.read(str(out), dtype="float32")
    removed, rate = sf.read(str(residue), dtype="float32")
    assert rate == 48000 and removed.shape == source.shape
    np.testing.assert_allclose(enhanced + removed, source, atol=1e-6)
    assert np.abs(removed).max() > 1e-3  # something was removed


def test_residue_needs_files(tmp_path, cli):
    sf.write(str(tmp_path / "a.wav"), np.zeros(1600, np.float32), 16000)
    result = cli(tmp_path / "a.wav", "-o", "-", "--residue")
    assert result.exit_code == 2 and "--residue" in result.output
