"""Shared helpers: write test audio, run the CLI in-process, find bench data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from denoise.cli.main import app

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


@pytest.fixture
def cli():
    """Run ``denoise`` in this process; returns click's result (exit_code, stdout, stderr)."""
    runner = CliRunner()

    def invoke(*args: str, stdin: bytes | None = None):
        return runner.invoke(app, [str(a) for a in args], input=stdin)

    return invoke


@pytest.fixture(scope="session")
def bench_data() -> Path:
    if not (BENCH_DATA / "manifest.csv").exists():
        pytest.fail(f"bench data not found at {BENCH_DATA}; set DENOISE_BENCH_DATA")
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
