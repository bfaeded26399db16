"""Many short files against one long file: is per-file overhead small?

Builds N files of 3 to 5 s (real speech from bench-data, in real noise, at
16 kHz) and one file as long as all of them together, then runs `denoise` on
each set as a whole process and prints the throughput (seconds of audio per
wall second) of both and their ratio, for 1 and 2 workers. DEMUCS runs with
random dns48 weights (speed does not depend on the values).

    python bench/many_files.py --spectral-files 500 --demucs-files 100
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.memory import machine, measure  # noqa: E402
from bench.pairs import (SAMPLE_RATE, clean_utterances, default_bench_data,  # noqa: E402
                         load_mono, mix_at_snr, random_segment)
from denoise.engine.backends.demucs import PRETRAINED  # noqa: E402
from denoise.engine.backends.demucs_model import Demucs  # noqa: E402

NOISE = "cmu_arctic_and_speechcommands_noise__LCAV_pyroomacoustics/running_tap.wav"


def corpus(folder: Path, count: int, seed: int = 0) -> float:
    """``count`` files of 3-5 s in ``folder/many`` and their concatenation in
    ``folder/long``; returns the total seconds."""
    rng = np.random.default_rng(seed)
    bench_data = default_bench_data()
    speech = np.concatenate([load_mono(path) for path in clean_utterances(bench_data)])
    noise = load_mono(bench_data / NOISE)
    (folder / "many").mkdir(parents=True)
    (folder / "long").mkdir()
    pieces = []
    for index in range(count):
        length = round(rng.uniform(3, 5) * SAMPLE_RATE)
        _, noisy = mix_at_snr(random_segment(speech, length, rng),
                              random_segment(noise, length, rng), 10)
        sf.write(str(folder / "many" / f"{index:04d}.wav"), noisy, SAMPLE_RATE, subtype="PCM_16")
        pieces.append(noisy)
    whole = np.concatenate(pieces)
    sf.write(str(folder / "long" / "long.wav"), whole, SAMPLE_RATE, subtype="PCM_16")
    return len(whole) / SAMPLE_RATE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectral-files", type=int, default=500)
    parser.add_argument("--demucs-files", type=int, default=100)
    parser.add_argument("--jobs", default="1,2")
    args = parser.parse_args()
    print(machine())
    rows = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        torch.manual_seed(0)
        weights = work / "dns48.th"
        torch.save(Demucs(**PRETRAINED["dns48"].architecture).state_dict(), weights)
        for method, count in (("spectral", args.spectral_files), ("demucs", args.demucs_files)):
            folder = work / method
            seconds = corpus(folder, count)
            extra = ["--weights", str(weights)] if method == "demucs" else []
            for jobs in map(int, args.jobs.split(",")):
                walls = {}
                for kind in ("long", "many"):
                    walls[kind] = measure([
                        sys.executable, "-m", "denoise.cli", str(folder / kind), "-o",
                        str(folder / f"out-{kind}-{jobs}"), "--method", method, "-j", str(jobs),
                        "-q", *extra])[0]
                rows.append((method, count, seconds, jobs, walls["long"], walls["many"]))
    print("\n| method | files | audio s | jobs | one long file: wall s | audio s per wall s "
          "| many files: wall s | audio s per wall s | many / long |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method, count, seconds, jobs, long_wall, many_wall in rows:
        print(f"| {method} | {count} | {seconds:.0f} | {jobs} | {long_wall:.1f} "
              f"| {seconds / long_wall:.1f} | {many_wall:.1f} | {seconds / many_wall:.1f} "
              f"| {long_wall / many_wall:.0%} |")


if __name__ == "__main__":
    main()
