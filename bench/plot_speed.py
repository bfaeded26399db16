"""Time and peak memory of `--plot` on a long file (default: 2 hours, 48 kHz
stereo, 16-bit; the same file as before and after, as a worst case: both are
read in full).

    python bench/plot_speed.py --hours 2
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from denoise.engine.plots import plot_data, plot_file  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--rate", type=int, default=48000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        source = Path(work) / "long.wav"
        minute = (0.1 * np.random.default_rng(0).standard_normal((args.rate * 60, 2))
                  ).astype(np.float32)
        with sf.SoundFile(str(source), "w", args.rate, 2, "PCM_16") as out:
            for _ in range(round(args.hours * 60)):
                out.write(minute)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        data = plot_data(source)  # a run gathers this while it reads or writes the file
        plot_file(data, data, Path(work) / "long.png", "long")
        elapsed = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{args.hours:g} h, {args.rate} Hz stereo: plot in {elapsed:.1f} s; peak RSS "
          f"{peak / 1024:.0f} MB (was {before / 1024:.0f} MB before plotting)")


if __name__ == "__main__":
    main()
