"""Shared helpers: write test audio, run the CLI in-process, find bench data."""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from denoise.cli.main import run

REPO = Path(__file__).resolve().parents[1]
BENCH_DATA = Path(os.environ.get("DENOISE_BENCH_DATA", REPO.parent / "shared" / "bench-data"))


def noisy_tone(frames: int, sample_rate: int, channels: int = 1, seed: int = 0,
               level: float = 0.3) -> np.ndarray:
    """A 440 Hz tone, amplitude-modulated like syllables, plus white noise: ``[T, C]``."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / sample_rate
    syllables = 0.5 * (1 + np.sin(2 * np.pi * 3 * t))
    tone = level * syllables * np.sin(2 * np.pi * 440 * t)
    noise = 0.05 * rng.standard_normal((frames, channels))
    return (tone[:, None] + noise).astype(np.float32)


def write_audio(path: Path, frames: int = 16000, sample_rate: int = 16000, channels: int = 1,
                subtype: str | None = None, fmt: str | None = None, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), noisy_tone(frames, sample_rate, channels, seed), sample_rate,
             subtype=subtype, format=fmt)
    return path


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    error = np.sum((reference - estimate) ** 2)
    return float(10 * np.log10(np.sum(reference**2) / max(error, 1e-30)))


@dataclass
class Ran:
    """What one in-process run of ``denoise`` did."""

    exit_code: int
    stdout: str
    stderr: str
    stdout_bytes: bytes

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def cli(monkeypatch):
    """Run ``denoise`` in this process, as the console script does, with
    standard input, output and error captured (neither is a terminal)."""

    def invoke(*args, stdin: bytes | None = None) -> Ran:
        out, err = io.BytesIO(), io.BytesIO()
        streams = {"stdin": io.TextIOWrapper(io.BytesIO(stdin or b"")),
                   "stdout": io.TextIOWrapper(out, write_through=True),
                   "stderr": io.TextIOWrapper(err, write_through=True)}
        with monkeypatch.context() as patch:
            for name, stream in streams.items():
                patch.setattr(sys, name, stream)
            code = run([str(a) for a in args])
            sys.stdout.flush()
            sys.stderr.flush()
        return Ran(code, out.getvalue().decode(errors="replace"),
                   err.getvalue().decode(errors="replace"), out.getvalue())

    return invoke


@pytest.fixture(scope="session")
def bench_data() -> Path:
    """The shared real recordings; a test that needs them is skipped, saying
    where they were looked for, when they are not there."""
    if not (BENCH_DATA / "manifest.csv").exists():
        pytest.skip(f"needs the real recordings of shared/bench-data, not found at "
                    f"{BENCH_DATA} (set DENOISE_BENCH_DATA to their folder)")
    return BENCH_DATA


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory):
    """A small random DEMUCS saved as a training package (the file states its
    architecture): ``(path, model)``."""
    import torch

    from denoise.engine.backends.demucs_model import Demucs

    small = {"hidden": 8, "depth": 4}
    torch.manual_seed(3)
    model = Demucs(**small)
    path = tmp_path_factory.mktemp("weights") / "small.th"
    torch.save({"class": None, "args": [], "kwargs": small, "state": model.state_dict()}, path)
    return path, model.eval()


LONG_RUN_S = 900  # long enough that the run is still going when signalled


def answer_ctrl_c() -> None:
    """For a test's child process: Ctrl-C as at a terminal, even where the
    test itself runs with SIGINT ignored (a job started with ``&`` from a
    script), which the child would otherwise inherit."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_long_run(tmp_path: Path, jobs: int, *extra: str):
    """Start ``denoise`` on a 15-minute 48 kHz file in a subprocess and return
    it and the output folder once its first temporary output exists."""
    import subprocess
    import sys
    import time

    rate = 48000
    source = tmp_path / "in" / "long.wav"
    source.parent.mkdir()
    block = 0.1 * np.random.default_rng(0).standard_normal((rate * 10, 1)).astype(np.float32)
    with sf.SoundFile(str(source), "w", rate, 1, "PCM_16") as handle:
        for _ in range(LONG_RUN_S // 10):
            handle.write(block)
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "denoise.cli", str(source.parent), "-o",
                                str(out), "-j", str(jobs), "--segment-s", "5", *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=answer_ctrl_c)
    deadline = time.monotonic() + 120
    while not any(out.glob(".long.wav.*.partial")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no temporary output appeared"
        time.sleep(0.05)
    return process, out
