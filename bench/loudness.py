"""Loudness presets on `samples/`: loudness and true peak before and after.

Runs `denoise --preset NAME` (spectral by default) over the samples and
prints, per file, the integrated loudness (ITU-R BS.1770) and true peak
(4x oversampled) of the input and of the output.

    python bench/loudness.py --presets podcast,broadcast
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from denoise.engine.finishing import true_peak  # noqa: E402
from denoise.engine.metrics import measure_file  # noqa: E402


def dbtp(path: Path) -> float:
    data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    return float(20 * np.log10(true_peak(data.T).max()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, default=REPO_ROOT / "samples")
    parser.add_argument("--presets", default="podcast,broadcast")
    parser.add_argument("--method", default="spectral")
    args = parser.parse_args()
    print("| preset | file | channels | loudness in LUFS | loudness out LUFS "
          "| true peak in dBTP | true peak out dBTP |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for preset in args.presets.split(","):
            out = Path(work) / preset
            subprocess.run([sys.executable, "-m", "denoise.cli", str(args.samples), "-o", str(out),
                            "--method", args.method, "--preset", preset, "-q"],
                           cwd=REPO_ROOT, check=True)
            for source in sorted(args.samples.iterdir()):
                if not (out / source.name).exists():
                    continue
                before, after = measure_file(source), measure_file(out / source.name)
                print(f"| {preset} | {source.name} | {sf.info(str(source)).channels} "
                      f"| {before.loudness_lufs:.1f} | {after.loudness_lufs:.1f} "
                      f"| {dbtp(source):.1f} | {dbtp(out / source.name):.1f} |")


if __name__ == "__main__":
    main()
