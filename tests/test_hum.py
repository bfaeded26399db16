"""Hum removal on real speech (VCTK from the shared recordings) with a
drifting mains hum added: found, taken down, and nothing touched where
there is none."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from bench.repair import RATE, clean_speech, reductions_db, with_hum
from denoise.engine import enhance_array
from denoise.engine.hum import find_hums, remove_hum

SECONDS = 20.0


@pytest.fixture(scope="module")
def clean(bench_data):
    return clean_speech(SECONDS, bench_data)


def _dehummed(noisy):
    found = find_hums(lambda: [noisy[None]], RATE, 1)
    return found[0], remove_hum(noisy[None], 0, found)[0]


def test_speech_without_hum_is_found_to_have_none_and_passes_bit_for_bit(clean):
    assert find_hums(lambda: [clean[None]], RATE, 1) == [None]
    out = enhance_array(clean, RATE, method="spectral", strength=0.0, dehum="auto")
    assert np.array_equal(out, clean)


@pytest.mark.parametrize("name", ["freesound_noise__IBM_MAX-Audio-Classifier/piano.wav",
                                  "freesound_noise__IBM_MAX-Audio-Classifier/jazz_guitar.wav",
                                  "librosa_data/Hungarian_Dance_number_5_-_Allegro_in_F_sharp"
                                  "_minor_(string_orchestra).hq.ogg"])
def test_music_whose_notes_meet_mains_harmonics_is_not_taken_for_hum(bench_data, name):
    # the piano's F4 is 7 x 49.9 Hz, the orchestra's G1 49.5 Hz: both were once
    music, rate = sf.read(bench_data / name, dtype="float32", always_2d=True, frames=30 * 44100)
    music = music.T
    assert find_hums(lambda: [music], rate, music.shape[0]) == [None] * music.shape[0]


@pytest.mark.parametrize("mains_hz", [50.0, 60.0])
def test_a_drifting_hum_is_found_and_each_audible_harmonic_comes_down(clean, mains_hz):
    noisy, hum, phase = with_hum(clean, -25.0, mains_hz, 8)
    found, out = _dehummed(noisy)
    assert found is not None and abs(found.fundamental_hz - mains_hz) < 0.35
    assert {1, 2} <= set(found.harmonics)
    reduction = reductions_db(clean, noisy, out, hum, phase, found.harmonics)
    # the fundamental and the second, the loudest, come down the most; the
    # weakest audible ones less (20 s gives the tracker little to go on)
    assert reduction[:2].min() > 25, reduction
    assert reduction.min() > 12, reduction
    # asked for the other mains frequency, it finds nothing
    other = "50" if mains_hz == 60.0 else "60"
    assert find_hums(lambda: [noisy[None]], RATE, 1, other) == [None]


def test_a_hum_that_starts_halfway_is_taken_out_from_there_and_nothing_before(clean):
    onset = len(clean) // 2
    noisy, hum, phase = with_hum(clean, -25.0, 50.0, 8, start=onset)
    found, out = _dehummed(noisy)
    assert found is not None and found.present_s < SECONDS * 0.75
    # detection frames are a second long and scored over five: the model
    # may reach back into the last seconds before the hum, and no further
    early = onset - 3 * RATE
    assert np.array_equal(out[:early], noisy[:early])
    change = out[early:onset] - noisy[early:onset]
    assert np.mean(change**2) < 1e-4 * np.mean(clean[early:onset] ** 2)  # -40 dB
    after = slice(onset + RATE, None)
    reduction = reductions_db(clean[after], noisy[after], out[after], hum[after], phase[after],
                              found.harmonics)
    assert reduction.min() > 25, reduction


def test_chunks_of_a_file_give_what_the_whole_file_gives(clean, tmp_path, cli):
    noisy, _, _ = with_hum(clean, -25.0, 60.0, 8)
    source = tmp_path / "in" / "hum talk.wav"
    source.parent.mkdir()
    sf.write(source, noisy, RATE, subtype="FLOAT")
    result = cli(source.parent, "-o", tmp_path / "out", "--method", "spectral", "--strength", "0",
                 "--dehum", "auto", "--segment-s", "3", "--json")
    assert result.exit_code == 0, result.output
    chunked, _ = sf.read(tmp_path / "out" / "hum talk.wav", dtype="float32")
    whole = enhance_array(noisy, RATE, method="spectral", strength=0.0, dehum="auto")
    assert np.max(np.abs(chunked - whole)) < 1e-6
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["repairs"] and record["repairs"][0].startswith("hum at 60.")
    lower_db = float(record["repairs"][0].split(" dB lower in the pauses")[0].rsplit(" ", 1)[1])
    assert lower_db > 15, record["repairs"]


def test_dehum_is_refused_with_a_stream(cli):
    result = cli("--stream", "-", "-o", "-", "--dehum", "auto")
    assert result.exit_code == 2
    assert "--dehum" in result.output


def test_the_podcast_preset_looks_for_hum_and_dehum_off_overrides_it(clean, tmp_path, cli):
    noisy, _, _ = with_hum(clean, -25.0, 50.0, 8)
    sf.write(tmp_path / "talk.wav", noisy, RATE, subtype="FLOAT")
    for extra, expected in (((), "hum at 50."), (("--dehum", "off"), None)):
        result = cli(tmp_path / "talk.wav", "-o", tmp_path / "out.wav", "--overwrite",
                     "--method", "spectral", "--preset", "podcast", "--json", *extra)
        assert result.exit_code == 0, result.output
        repairs = json.loads(result.stdout.strip().splitlines()[-1])["repairs"]
        hum_lines = [line for line in repairs if "hum" in line]
        assert (hum_lines[0].startswith(expected) if expected else hum_lines == []), repairs
