"""DNSMOS P.835 scores: what they say about real speech, where a file's
windows fall, why a file has no score, and ``--dnsmos`` in a run."""

import csv
import sys

import numpy as np
import pytest
import soundfile as sf

from denoise.engine import dnsmos as dnsmos_module
from denoise.engine.dnsmos import RATE, WINDOW, dnsmos, window_starts


@pytest.fixture
def pair(bench_data):
    folder = bench_data / "pesq_pair__ludlows_python-pesq"
    return folder / "speech.wav", folder / "speech_bab_0dB.wav"


def test_clean_speech_scores_well_and_babble_badly(pair):
    scores, reason = dnsmos(pair[0])
    assert reason is None
    assert 3.0 < scores["sig"] < 4.5 and 3.5 < scores["bak"] < 4.5 and 2.8 < scores["ovrl"] < 4
    babble, reason = dnsmos(pair[1])
    assert reason is None
    assert babble["bak"] < scores["bak"] - 2 and babble["ovrl"] < scores["ovrl"] - 1.5
    assert all(1 <= value <= 5 for value in (*scores.values(), *babble.values()))


def test_rate_and_channels_do_not_change_the_score_much(pair, tmp_path):
    from denoise.engine.dsp import resample

    speech, rate = sf.read(str(pair[0]), dtype="float32")
    at_48k = resample(speech, rate, 48000)
    sf.write(str(tmp_path / "stereo48.wav"), np.stack([at_48k, at_48k], axis=1), 48000)
    expected, _ = dnsmos(pair[0])
    scores, reason = dnsmos(tmp_path / "stereo48.wav")
    assert reason is None
    for name in expected:
        assert scores[name] == pytest.approx(expected[name], abs=0.1)


def test_windows_every_second_then_spread_evenly_over_long_files():
    # 25 s: a 9.01 s window starting at every whole second it fits, 16 of them.
    assert window_starts(25 * RATE, RATE) == [second * RATE for second in range(16)]
    two_hours = 2 * 3600 * 48000
    starts = window_starts(two_hours, 48000)
    assert len(starts) == dnsmos_module.MAX_WINDOWS and starts[0] == 0
    assert starts[-1] + WINDOW * 3 == two_hours  # the last window ends at the end
    assert window_starts(WINDOW, RATE) == [0]


def test_short_and_silent_files_have_reasons_not_scores(tmp_path):
    sf.write(str(tmp_path / "short.wav"), np.full(8000, 0.1, np.float32), 16000)
    sf.write(str(tmp_path / "silent.wav"), np.zeros(3 * 16000, np.float32), 16000)
    assert dnsmos(tmp_path / "short.wav") == ({}, "shorter than 1 s")
    assert dnsmos(tmp_path / "silent.wav") == ({}, "silent")


def test_dnsmos_option_adds_columns_and_scores_the_cleaner_background(pair, tmp_path, cli):
    inputs = tmp_path / "in"
    inputs.mkdir()
    speech, rate = sf.read(str(pair[0]), dtype="float32")
    noise = np.random.default_rng(0).standard_normal(len(speech)).astype(np.float32)
    noise *= np.sqrt(np.mean(speech**2) / 10**0.5) / noise.std()  # 5 dB SNR
    sf.write(str(inputs / "a.wav"), speech + noise, rate)
    sf.write(str(inputs / "short.wav"), np.full(4000, 0.1, np.float32), 16000)
    report = tmp_path / "report"

    result = cli(inputs, "-o", tmp_path / "out", "--dnsmos", "--report", report, "-j", "1")

    assert result.exit_code == 0, result.output
    rows = {row["input"].rsplit("/", 1)[-1]: row
            for row in csv.DictReader((report / "report.csv").open())}
    for score in ("sig", "bak", "ovrl"):
        for side in ("in", "out", "delta"):
            assert f"dnsmos_{score}_{side}" in rows["a.wav"]
    talk = rows["a.wav"]
    # measured: BAK 1.97 -> 2.22 with the default spectral filter
    assert float(talk["dnsmos_bak_out"]) > float(talk["dnsmos_bak_in"]) + 0.1
    assert float(talk["dnsmos_bak_delta"]) == pytest.approx(
        float(talk["dnsmos_bak_out"]) - float(talk["dnsmos_bak_in"]))
    assert rows["short.wav"]["dnsmos_ovrl_in"] == ""
    assert "shorter than 1 s" in (report / "report.json").read_text()
    assert "DNSMOS" in result.output  # the terminal table has the column


def test_without_the_extra_the_error_is_one_line(tmp_path, cli, monkeypatch):
    monkeypatch.setattr(dnsmos_module, "_session", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    sf.write(str(tmp_path / "a.wav"), np.full(16000, 0.1, np.float32), 16000)

    result = cli(tmp_path / "a.wav", "-o", tmp_path / "out.wav", "--dnsmos")

    assert result.exit_code == 2
    message = result.output.strip()
    assert "pip install 'denoise-speech[dnsmos]'" in message and "\n" not in message
    assert not (tmp_path / "out.wav").exists()
