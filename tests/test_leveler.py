"""The leveler on conversations of real speech (VCTK p225 and p226 of the
shared recordings in turns, a real running tap beneath): uneven turns come
out even, even ones stay as they are, pauses are not lifted, and a file
without speech is not touched."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from bench.leveler import RATE, conversation, evenness, loudness
from denoise.engine.leveler import plan_leveling

pytest.importorskip("silero_vad", reason="voice activity comes from silero-vad")

SECONDS = 60.0


def _run(cli, tmp_path, signal, *options, name="talk.wav"):
    source, target = tmp_path / name, tmp_path / f"out-{len(options)}-{name}"
    sf.write(source, signal, RATE, subtype="FLOAT")
    result = cli(source, "-o", target, "--overwrite", "--method", "spectral", "--subtype",
                 "FLOAT", "--json", *options)
    assert result.exit_code == 0, result.output
    return sf.read(target, dtype="float32")[0], json.loads(result.stdout.strip().splitlines()[-1])


def test_a_guest_12_db_under_the_host_comes_out_as_loud_and_pauses_are_not_lifted(cli, tmp_path,
                                                                                  bench_data):
    talk = conversation(12.0, SECONDS, bench_data)
    levelled, record = _run(cli, tmp_path, talk.signal, "--preset", "podcast")
    plain, _ = _run(cli, tmp_path, talk.signal, "--preset", "podcast", "--no-leveler")
    found = evenness(talk, levelled, plain)
    assert found.spread_in > 5  # the turns were uneven
    assert found.spread_out <= 1.5, found
    assert found.pause_excess_db <= 1.5, found
    assert any(line.startswith("leveler: speech in") for line in record["repairs"])


def test_an_even_conversation_is_left_nearly_as_it_is(cli, tmp_path, bench_data):
    talk = conversation(0.0, SECONDS, bench_data)
    levelled, _ = _run(cli, tmp_path, talk.signal, "--leveler")
    plain, _ = _run(cli, tmp_path, talk.signal)
    assert evenness(talk, levelled, plain).moved_lu <= 1.0


def test_noise_without_speech_gets_no_gain_and_says_so(cli, tmp_path, bench_data):
    tap, rate = sf.read(bench_data / "cmu_arctic_and_speechcommands_noise__LCAV_pyroomacoustics"
                        / "running_tap.wav", dtype="float32", frames=20 * RATE)
    signal = np.concatenate([np.zeros(5 * RATE, np.float32), 0.05 * tap])
    levelled, record = _run(cli, tmp_path, signal, "--leveler")
    plain, _ = _run(cli, tmp_path, signal)
    assert np.array_equal(levelled, plain)
    assert "leveler: no speech found, no gain change" in record["repairs"]


def test_speakers_on_different_channels_are_evened_and_keep_their_sides(cli, tmp_path,
                                                                       bench_data):
    talk = conversation(12.0, SECONDS, bench_data, noise=False)
    left, right = np.zeros_like(talk.signal), np.zeros_like(talk.signal)
    for start, stop, speaker in talk.turns:
        (right if speaker else left)[start:stop] = talk.signal[start:stop]
    stereo = np.stack([left, right], axis=1)
    levelled, _ = _run(cli, tmp_path, stereo, "--leveler", name="stereo.wav")
    turns = np.array([loudness(levelled[start:stop, speaker])
                      for start, stop, speaker in talk.turns])
    assert np.abs(turns - np.median(turns)).max() <= 1.5, turns
    # each voice stays on its own channel
    for start, stop, speaker in talk.turns:
        assert np.abs(levelled[start:stop, 1 - speaker]).max() < 1e-3


def test_the_gain_is_smooth_and_the_same_whatever_the_blocks(bench_data):
    talk = conversation(12.0, 40.0, bench_data)
    whole = plan_leveling([talk.signal[None]], RATE, 1)
    step = 7 * RATE + 123  # blocks that do not meet the 32 ms windows
    blocks = plan_leveling([talk.signal[None, i: i + step] for i in range(0, len(talk.signal), step)],
                           RATE, 1)
    gains = 20 * np.log10(whole.gains(0, len(talk.signal), RATE))
    assert np.abs(gains - 20 * np.log10(blocks.gains(0, len(talk.signal), RATE))).max() < 0.5
    # no step anywhere: at most 1 dB over any 50 ms
    span = RATE // 20
    assert np.abs(gains[span:] - gains[:-span]).max() < 1.0


def test_voice_activity_from_threads_at_once_is_what_it_is_alone(bench_data):
    # one network serves every meter; two threads once crashed the process
    from concurrent.futures import ThreadPoolExecutor

    from denoise.engine.vad import speech_probability

    talk = conversation(12.0, 20.0, bench_data)
    blocks = [talk.signal[None, i: i + RATE * 3] for i in range(0, len(talk.signal), RATE * 3)]
    alone = speech_probability(blocks, RATE, 1)
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda _: speech_probability(blocks, RATE, 1), range(4)))
    for found in together:
        assert np.array_equal(found, alone)
