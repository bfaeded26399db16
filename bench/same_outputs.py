"""Whether this build writes the same outputs as another one.

Runs both builds on ``samples/`` (and a DEMUCS model with random weights,
since the official ones cannot be downloaded everywhere) with several
settings, writing float WAV files (so that 16-bit rounding does not hide or
magnify a difference), and prints, per setting and file, the largest
difference between the two outputs relative to the output's peak.

    python bench/same_outputs.py --before DIR

``DIR`` holds the other build (``pip install --no-deps --target DIR
<checkout>``); it runs with ``PYTHONPATH=DIR``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {
    "spectral": [],
    "spectral, podcast": ["--preset", "podcast"],
    "spectral, linked, atten 10": ["--channels", "linked", "--atten-lim", "10"],
    "demucs": ["--method", "demucs", "--weights", "{weights}"],
    "demucs, podcast, residue": ["--method", "demucs", "--weights", "{weights}", "--preset",
                                 "podcast", "--residue"],
}


def write_weights(path: Path) -> None:
    import torch

    from denoise.engine.backends.demucs_model import Demucs

    torch.manual_seed(0)
    architecture = {"hidden": 16, "depth": 4}
    torch.save({"kwargs": architecture, "state": Demucs(**architecture).state_dict()}, path)


def run(build: Path | None, out: Path, extra: list[str]) -> None:
    env = dict(os.environ)
    if build is not None:
        env["PYTHONPATH"] = str(build)
    command = [sys.executable, "-m", "denoise.cli", str(REPO / "samples"), "-o", str(out),
               "-j", "1", "-q", "--no-log", "--format", "WAV", "--subtype", "FLOAT", *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:  # an older build may not know --no-log
        command.remove("--no-log")
        done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--before", type=Path, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        weights = work / "weights.th"
        write_weights(weights)
        print("| settings | file | max difference / peak |")
        print("|---|---|---:|")
        for name, extra in SETTINGS.items():
            extra = [part.format(weights=weights) for part in extra]
            outputs = {}
            for build, path in (("this", None), ("before", args.before.resolve())):
                outputs[build] = work / f"{build}-{len(extra)}-{name.replace(' ', '')}"
                run(path, outputs[build], extra)
            for this in sorted(outputs["this"].glob("*.*")):
                a = sf.read(str(this), dtype="float64", always_2d=True)[0]
                b = sf.read(str(outputs["before"] / this.name), dtype="float64",
                            always_2d=True)[0]
                difference = np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)
                print(f"| {name} | {this.name} | {difference:.1e} |")


if __name__ == "__main__":
    main()
