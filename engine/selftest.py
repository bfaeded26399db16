"""A short check that an installation works: ``denoise --self-test``.

Each method that needs no download enhances a second of a synthetic noisy
tone, through the same files, chunks and workers as a real run: spectral,
DEMUCS with a small randomly initialised checkpoint written here (the
official weights are downloaded on first use, which this check must not
need), and DeepFilterNet3 where its runtime is installed (its weights come
with it). Each check says what it measured; none needs the network.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from denoise.engine.backends import dfn3_missing

RATE = 16_000
# A small DEMUCS: the same code path as the official models, 50x less work.
SMALL_DEMUCS = {"hidden": 8, "depth": 4}


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def run_self_test() -> list[Check]:
    """Run every check; a failure is reported, never raised."""
    with tempfile.TemporaryDirectory(prefix="denoise-self-test-") as folder:
        folder = Path(folder)
        noisy = folder / "noisy.wav"
        sf.write(str(noisy), _noisy_tone(), RATE, subtype="PCM_16")
        weights = folder / "small-demucs.th"
        checks = [_check("spectral", noisy, folder, {}),
                  _check("demucs", noisy, folder, {"weights": weights}, weights)]
        if dfn3_missing() is None:
            checks.append(_check("dfn3", noisy, folder, {}))
    return checks


def _noisy_tone() -> np.ndarray:
    """1 s: white noise throughout, a 440 Hz tone in the middle half."""
    rng = np.random.default_rng(0)
    t = np.arange(RATE) / RATE
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) * ((t > 0.25) & (t < 0.75))
    return (tone + 0.03 * rng.standard_normal(RATE)).astype(np.float32)


def _check(method: str, noisy: Path, folder: Path, options: dict,
           weights: Path | None = None) -> Check:
    from denoise.engine import Batch, BatchOptions, plan_jobs

    try:
        if weights is not None:
            _write_small_demucs(weights)
        output = folder / f"{method}.wav"
        plan = plan_jobs([str(noisy)], str(output))
        batch = Batch(plan.jobs, BatchOptions(method=method, backend_options=options,
                                              jobs=1, log=None))
        result = next(iter(batch.run()))
        if result.status != "done":
            return Check(method, False, result.error or result.status)
        before, after = (sf.read(str(path), dtype="float32")[0] for path in (noisy, output))
        if after.shape != before.shape or not np.isfinite(after).all():
            return Check(method, False, f"wrote {after.shape[0]} samples for {before.shape[0]}")
        noise_only = slice(0, RATE // 5)
        change_db = _db(after[noise_only]) - _db(before[noise_only])
        detail = f"{after.shape[0]} samples in and out, noise {change_db:+.1f} dB"
        if weights is not None:  # random weights: the model runs, nothing more is known
            return Check(method, True, detail + " (small random-weight model)")
        return Check(method, change_db < -3, detail)
    except Exception as error:  # noqa: BLE001 - the check reports whatever breaks
        return Check(method, False, f"{type(error).__name__}: {error}")


def _write_small_demucs(path: Path) -> None:
    import torch

    from denoise.engine.backends.demucs_model import Demucs

    torch.manual_seed(0)
    model = Demucs(**SMALL_DEMUCS)
    torch.save({"class": None, "args": [], "kwargs": SMALL_DEMUCS,
                "state": model.state_dict()}, path)


def _db(signal: np.ndarray) -> float:
    return 10 * np.log10(max(float(np.mean(np.square(signal))), 1e-20))
