"""The spectral backend beats the classical baselines on real speech and noise,
keeps intelligibility, and leaves clean speech alone.

A small version of ``bench/quality.py``: every fourth pair of its set (real
clean speech + real noises at 0/5/10 dB, and real noisy recordings).
"""

import sys

import numpy as np
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO))
from bench.pairs import build_pairs  # noqa: E402
from bench.quality import METHODS, score_pair, transparency  # noqa: E402


@pytest.fixture(scope="module")
def scores(bench_data):
    pairs = build_pairs(bench_data)[::4]
    names = ["unprocessed", "noisereduce stationary", "noisereduce non-stationary",
             "logmmse", "denoise spectral"]
    table = {}
    for name in names:
        enhance = METHODS[name]()
        rows = [score_pair(name, enhance, pair) for pair in pairs]
        table[name] = {metric: float(np.nanmean([getattr(r, metric) for r in rows]))
                       for metric in ("pesq_wb", "stoi", "estoi", "si_sdr_db")}
    table["transparency"] = transparency(METHODS["denoise spectral"](), pairs)
    print({name: row for name, row in table.items() if name != "transparency"})
    return table


def test_spectral_pesq_beats_noisereduce_and_logmmse(scores):
    ours = scores["denoise spectral"]["pesq_wb"]
    for baseline in ("unprocessed", "noisereduce stationary", "noisereduce non-stationary",
                     "logmmse"):
        assert ours > scores[baseline]["pesq_wb"], (baseline, scores)


def test_spectral_does_not_lose_intelligibility(scores):
    assert scores["denoise spectral"]["stoi"] >= scores["unprocessed"]["stoi"], scores


def test_spectral_is_transparent_on_clean_speech(scores):
    """PESQ of the output against clean input: 4.0 on average; no file below
    3.5 (the lowest are speakers whose "clean" recording has a noise floor,
    which the tracker lowers)."""
    assert np.mean(scores["transparency"]) >= 4.0, scores["transparency"]
    assert min(scores["transparency"]) >= 3.5, scores["transparency"]
