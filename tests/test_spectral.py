"""The spectral backend's options do what their help says, on signals with
known answers."""

import numpy as np
import soundfile as sf

from denoise.engine import enhance_array
from denoise.engine.audio_io import read_recording

RATE = 16000


def _rms_db(x):
    return 10 * np.log10(np.mean(np.square(x)) + 1e-20)


def _white(seconds, level, seed=0):
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


def test_strength_zero_changes_nothing():
    noisy = _white(2, 0.1)
    out = enhance_array(noisy, RATE, method="spectral", strength=0.0)
    np.testing.assert_allclose(out, noisy, atol=1e-5)


def test_noise_only_is_attenuated_within_the_limit():
    noise = _white(6, 0.05)
    reductions = {}
    for limit in (3.0, 6.0, 15.0):
        out = enhance_array(noise, RATE, method="spectral", atten_lim_db=limit)
        reductions[limit] = _rms_db(noise[RATE:]) - _rms_db(out[RATE:])
        assert reductions[limit] <= limit + 0.5, reductions
    assert reductions[3.0] > 2 and reductions[15.0] > 8, reductions


def test_noise_that_gets_louder_is_followed():
    """Noise steps up by 20 dB after 3 s: one learnt at the start would let it through."""
    noise = np.concatenate([_white(3, 0.005, seed=1), _white(5, 0.05, seed=2)])
    out = enhance_array(noise, RATE, method="spectral")
    late = slice(5 * RATE, 8 * RATE)
    assert _rms_db(noise[late]) - _rms_db(out[late]) > 6


def test_noise_file_profile_removes_steady_noise_and_keeps_speech(tmp_path):
    t = np.arange(4 * RATE) / RATE
    gate = (t % 0.8) < 0.4
    speech_like = (0.3 * gate * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t) ** 2)
    noise = _white(4, 0.03, seed=3)
    sf.write(str(tmp_path / "room.wav"), _white(3, 0.03, seed=4), RATE)
    out = enhance_array((speech_like + noise).astype(np.float32), RATE, method="spectral",
                        noise=read_recording(tmp_path / "room.wav"))
    gaps, syllables = ~gate, gate & (np.abs(np.sin(2 * np.pi * 3 * t)) > 0.7)
    assert _rms_db(noise[gaps]) - _rms_db(out[gaps]) > 10
    speech_error = _rms_db(out[syllables] - speech_like[syllables]) - _rms_db(speech_like[syllables])
    assert speech_error < -10


def test_speech_under_real_babble_keeps_its_intelligibility_and_pauses_their_floor(bench_data):
    """The speech-aware floor, on python-pesq's real babble recording (0 dB):
    with one floor everywhere the filter took its STOI 0.006 below the
    input's; raised where speech is, it stays within 0.005, while the
    babble in the pauses is cut by as much as before (9 dB)."""
    from bench.quality import pause_change_db

    from denoise.engine.metrics import stoi_score

    pair = bench_data / "pesq_pair__ludlows_python-pesq"
    clean, rate = sf.read(str(pair / "speech.wav"), dtype="float32")
    noisy, _ = sf.read(str(pair / "speech_bab_0dB.wav"), dtype="float32")
    out = enhance_array(noisy, rate, method="spectral")
    assert stoi_score(clean, out, rate) > stoi_score(clean, noisy, rate) - 0.005
    assert pause_change_db(clean, noisy, out, rate) < -8.5


def test_digital_silence_before_the_sound_gives_silence_then_a_denoised_sound():
    # Seconds of exact zeros (a recorder's pre-roll) once brought the noise
    # estimate to zero, and every sample after them came out NaN.
    rng = np.random.default_rng(0)
    signal = np.concatenate([np.zeros(5 * 16000, np.float32),
                             0.05 * rng.standard_normal(5 * 16000).astype(np.float32)])
    out = enhance_array(signal, 16000, method="spectral")
    assert np.isfinite(out).all()
    assert np.abs(out[: 5 * 16000]).max() < 1e-6
    assert 0 < np.sqrt(np.mean(out[6 * 16000:] ** 2)) < 0.05
