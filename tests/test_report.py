"""Metrics on known signals, missing-metric reasons, and the report files."""

import csv
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from conftest import write_audio
from denoise.engine.dsp import resample
from denoise.engine import metrics
from denoise.engine.metrics import measure_file, reference_scores, si_sdr


def _sine(path, amplitude, rate=48000, seconds=5.0, channels=1, frequency=997.0):
    t = np.arange(round(seconds * rate)) / rate
    tone = (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    sf.write(str(path), np.repeat(tone[:, None], channels, axis=1), rate, subtype="FLOAT")
    return path


def test_calibrated_sine_reads_its_level_and_loudness(tmp_path):
    # BS.1770: a 997 Hz sine at 0 dBFS on one channel is -3.01 LKFS, so at
    # -20 dBFS it is -23.01; AES17: a sine's RMS in dBFS equals its peak's.
    levels = measure_file(_sine(tmp_path / "sine.wav", 0.1))
    assert levels.loudness_lufs == pytest.approx(-23.01, abs=0.1)
    assert levels.peak_dbfs == pytest.approx(-20.0, abs=0.01)
    assert levels.rms_dbfs == pytest.approx(-20.0, abs=0.01)
    assert levels.clipped == 0
    # a steady tone never dies away and is not speech: no reverberation
    # indicator, no speech loudness, and why
    assert levels.missing == {"decay_s": "too few decays of speech",
                              "speech_lufs": "no speech found"}
    assert levels.speech_ratio == 0.0


def test_speech_with_pauses_reads_its_share_and_the_loudness_of_its_speech(tmp_path, bench_data):
    speech, rate = sf.read(bench_data / "vctk__auspicious3000_autovc/p225/p225_003.wav",
                           dtype="float32")
    pause = np.zeros(len(speech), np.float32)
    sf.write(tmp_path / "half.wav", np.concatenate([speech, pause]), rate)
    levels = measure_file(tmp_path / "half.wav")
    assert 0.3 < levels.speech_ratio < 0.55  # the utterance, its own pauses aside
    # on clean speech BS.1770's gates leave out what the detector leaves out
    assert abs(levels.speech_lufs - levels.loudness_lufs) < 1.0


@pytest.mark.parametrize("rate, channels", [(48000, 2), (44100, 1), (16000, 2)])
def test_loudness_read_in_blocks_equals_torchaudio_on_speech(bench_data, tmp_path, monkeypatch,
                                                             rate, channels):
    speech, source_rate = sf.read(str(bench_data / "pesq_pair__ludlows_python-pesq"
                                      / "speech_bab_0dB.wav"), dtype="float32")
    speech = resample(speech, source_rate, rate)
    stereo = np.stack([speech, 0.5 * np.roll(speech, 123)], axis=1)[:, :channels]
    sf.write(str(tmp_path / "speech.wav"), stereo, rate, subtype="FLOAT")
    monkeypatch.setattr(metrics, "BLOCK_S", 0.77)  # many blocks, edges inside gating blocks
    levels = measure_file(tmp_path / "speech.wav")
    expected = float(AF.loudness(torch.from_numpy(stereo.T.copy()), rate))
    assert levels.loudness_lufs == pytest.approx(expected, abs=0.05)
    assert levels.peak_dbfs == pytest.approx(20 * np.log10(np.abs(stereo).max()), abs=1e-3)


def test_clipped_samples_are_counted(tmp_path):
    signal = np.zeros(16000, dtype=np.float32)
    signal[100:110] = 1.0
    signal[200:203] = -1.0
    sf.write(str(tmp_path / "clip.wav"), signal, 16000, subtype="PCM_16")
    assert measure_file(tmp_path / "clip.wav").clipped == 13


def test_noise_floor_and_snr_follow_the_noise(tmp_path):
    rng = np.random.default_rng(0)
    rate = 16000
    speech_like = np.zeros(rate * 4, dtype=np.float32)
    speech_like[rate:2 * rate] = 0.3 * np.sin(2 * np.pi * 300 * np.arange(rate) / rate)
    floors = []
    for noise_level in (0.01, 0.001):
        noisy = speech_like + noise_level * rng.standard_normal(len(speech_like)).astype(np.float32)
        sf.write(str(tmp_path / "n.wav"), noisy, rate, subtype="FLOAT")
        floors.append(measure_file(tmp_path / "n.wav"))
    # white noise of RMS 0.01 is -40 dBFS, plus 3 dB (AES17 scale)
    assert floors[0].noise_floor_dbfs == pytest.approx(-37, abs=1.5)
    assert floors[0].noise_floor_dbfs - floors[1].noise_floor_dbfs == pytest.approx(20, abs=1.5)
    assert floors[1].snr_db - floors[0].snr_db == pytest.approx(20, abs=1.5)


def test_silent_and_short_files_say_why_metrics_are_missing(tmp_path):
    sf.write(str(tmp_path / "silent.wav"), np.zeros(16000, dtype=np.float32), 16000)
    silent = measure_file(tmp_path / "silent.wav")
    assert silent.loudness_lufs is None and silent.missing["loudness_lufs"] == "silent"
    assert silent.peak_dbfs is None and silent.missing["peak_dbfs"] == "silent"
    write_audio(tmp_path / "short.wav", frames=3000)
    short = measure_file(tmp_path / "short.wav")
    assert short.loudness_lufs is None
    assert "400 ms" in short.missing["loudness_lufs"]
    assert short.peak_dbfs is not None


def test_si_sdr_of_a_scaled_copy_is_unbounded_and_of_noise_is_its_snr():
    rng = np.random.default_rng(1)
    clean = rng.standard_normal(16000)
    assert si_sdr(clean, 0.25 * clean) > 100
    noise = rng.standard_normal(16000)
    noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2)) / np.sqrt(10)  # 10 dB below
    assert si_sdr(clean, clean + noise) == pytest.approx(10, abs=0.3)


def test_pesq_and_stoi_of_identical_speech_are_at_their_top(bench_data):
    clean = bench_data / "pesq_pair__ludlows_python-pesq" / "speech.wav"
    noisy = bench_data / "pesq_pair__ludlows_python-pesq" / "speech_bab_0dB.wav"
    scores, missing = reference_scores(clean, noisy, clean)
    assert missing == {}
    assert scores["pesq_out"] == pytest.approx(4.64, abs=0.05)
    assert scores["stoi_out"] > 0.99 and scores["estoi_out"] > 0.99
    assert scores["pesq_in"] < 2.0 and scores["stoi_in"] < 0.9
    assert scores["pesq_delta"] == pytest.approx(scores["pesq_out"] - scores["pesq_in"])


def test_silent_reference_gives_reasons_not_numbers(tmp_path):
    write_audio(tmp_path / "noisy.wav", frames=32000)
    sf.write(str(tmp_path / "clean.wav"), np.zeros(32000, dtype=np.float32), 16000)
    scores, missing = reference_scores(tmp_path / "clean.wav", tmp_path / "noisy.wav",
                                       tmp_path / "noisy.wav")
    assert scores == {}
    assert missing["pesq_out"] == "reference silent" and missing["si_sdr_in"] == "reference silent"


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_report_run_writes_json_csv_html_and_plots(bench_data, tmp_path, cli):
    source = bench_data / "pesq_pair__ludlows_python-pesq"
    inputs, clean = tmp_path / "in", tmp_path / "clean"
    (inputs / "talk").mkdir(parents=True)
    clean.joinpath("talk").mkdir(parents=True)
    noisy, rate = sf.read(str(source / "speech_bab_0dB.wav"), dtype="float32")
    speech, _ = sf.read(str(source / "speech.wav"), dtype="float32")
    sf.write(str(inputs / "talk" / "a.wav"), noisy, rate)
    sf.write(str(clean / "talk" / "a.flac"), speech, rate)  # matched by stem
    write_audio(inputs / "b.wav", frames=48000, sample_rate=48000, channels=2)
    (inputs / "broken.wav").write_bytes(b"not audio")
    report = tmp_path / "report"

    result = cli(inputs, "-o", tmp_path / "out", "-r", "-j", "1", "--report", report, "--plot",
                 "--reference", clean)

    assert result.exit_code == 1, result.output  # the broken file fails; the rest goes on
    document = json.loads((report / "report.json").read_text())
    assert set(document) == {"schema", "created", "settings", "versions", "summary", "files"}
    assert document["settings"]["method"] == "dfn3"  # the default
    assert document["settings"]["model licence"] == "MIT or Apache-2.0"
    assert document["versions"]["torch"] == torch.__version__
    summary = document["summary"]
    assert (summary["files"], summary["done"], summary["failed"]) == (3, 2, 1)
    records = {Path(record["input"]).name: record for record in document["files"]}
    assert records["broken.wav"]["status"] == "failed" and records["broken.wav"]["error"]
    talk = records["a.wav"]["metrics"]
    assert talk["pesq_out"] > talk["pesq_in"] - 0.1 and 0 < talk["stoi_in"] <= 1
    assert talk["noise_reduction_db"] > 3
    assert talk["loudness_lufs_in"] < 0 and talk["peak_dbfs_out"] <= 0
    other = records["b.wav"]
    assert other["metrics"]["pesq_in"] is None
    assert "no reference file" in other["missing"]["pesq_in"]

    rows = list(csv.DictReader((report / "report.csv").open()))
    header = list(rows[0])
    assert header[:2] == ["input", "output"]
    for column in ("pesq_in", "pesq_out", "stoi_in", "stoi_out", "estoi_in", "si_sdr_out",
                   "loudness_lufs_in", "loudness_lufs_out", "noise_reduction_db"):
        assert column in header
    assert {Path(row["input"]).name for row in rows} == {"a.wav", "b.wav", "broken.wav"}

    page = (report / "report.html").read_text()
    for record in document["files"]:
        assert Path(record["input"]).name in page
        if record["status"] == "failed":
            assert "failed: " in page
            continue
        for key in ("input", "output", "plot"):
            link = Path(record[key]).resolve().relative_to(tmp_path.resolve())
            assert link.name in page
        png = Path(record["plot"])
        relative = Path(record["output"]).relative_to(tmp_path / "out")
        assert png == report / "plots" / f"{relative}.png" and png.stat().st_size > 10_000
        assert _png_size(png) == (1400, 700)
    for src in __import__("re").findall(r'(?:src|href)="([^"#]+)"', page):
        assert (report / src).exists(), src
    assert page.count("<audio") == 4 and "sortable" in page


def test_plot_alone_goes_next_to_the_output(tmp_path, cli):
    write_audio(tmp_path / "a.wav", frames=32000)
    result = cli(tmp_path / "a.wav", "-o", tmp_path / "out" / "a.wav", "--plot", "-j", "1")
    assert result.exit_code == 0, result.output
    assert _png_size(tmp_path / "out" / "a.wav.png") == (1400, 700)
    assert not (tmp_path / "out" / "report.json").exists()


def test_plots_shade_where_there_is_speech(tmp_path, bench_data):
    from denoise.engine.plots import plot_data

    speech, rate = sf.read(bench_data / "vctk__auspicious3000_autovc/p225/p225_003.wav",
                           dtype="float32")
    sf.write(tmp_path / "talk.wav", np.concatenate([np.zeros(2 * rate, np.float32), speech]),
             rate)
    shade = plot_data(tmp_path / "talk.wav").speech  # 32 ms windows
    assert not shade[: round(1.9 / 0.032)].any()  # the silence first
    assert shade[round(2.0 / 0.032):].mean() > 0.5  # then the utterance
