"""DEMUCS speed and memory: `denoise --method demucs` against the reference.

The reference (facebookresearch/denoiser 0.1.5, its sdist unpacked outside
this repository) enhances a file the way its `enhance.py` does offline: one
forward pass over the whole file under `torch.no_grad()`. Both run as whole
processes (imports, model load, reading and writing included) on the same
16 kHz input, with the same random weights (speed does not depend on the
weights' values; the official ones cannot be downloaded here), 2 torch
threads, and are measured in the same run:

  wall s   wall-clock seconds of the whole process
  s/s      wall seconds per second of audio (lower is faster)
  peak MB  peak summed RSS of the process and its children, sampled from /proc
  speed-up reference wall / ours

Each is run `--repeat` times, alternately; the table shows the median run.
With `--before DIR`, another build of denoise (`pip install --no-deps
--target DIR <checkout>`, run with `PYTHONPATH=DIR`) runs alternately too,
and the table gets its wall time and the speed-up over it.

    pip download --no-deps --no-binary :all: denoiser==0.1.5 -d /tmp/ref
    tar xzf /tmp/ref/denoiser-0.1.5.tar.gz -C /tmp/ref
    python bench/demucs_speed.py --reference /tmp/ref/denoiser-0.1.5
"""

from __future__ import annotations

import argparse
import os
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
from bench.pairs import default_bench_data, load_mono  # noqa: E402
from denoise.engine.backends.demucs import PRETRAINED  # noqa: E402
from denoise.engine.backends.demucs_model import Demucs  # noqa: E402

REFERENCE_SCRIPT = """
import sys, torch, soundfile as sf
sys.path.insert(0, sys.argv[1])
from denoiser.demucs import Demucs
torch.set_num_threads(int(sys.argv[5]))
model = Demucs(**eval(sys.argv[2]), sample_rate=16000)
model.load_state_dict(torch.load(sys.argv[3], map_location="cpu", weights_only=True))
model.eval()
noisy, rate = sf.read(sys.argv[4], dtype="float32")
with torch.no_grad():
    out = model(torch.from_numpy(noisy)[None, None])[0, 0]
sf.write(sys.argv[4] + ".ref.wav", out.numpy(), rate)
"""


def noisy_speech(path: Path, seconds: float) -> None:
    """Real speech from bench-data, tiled, plus white noise at about 10 dB SNR."""
    speech = load_mono(default_bench_data() / "librispeech_ljspeech_ami_cv__lhotse"
                       / "libri-1088-134315-0000.wav")
    clean = np.resize(speech, round(seconds * 16000))
    noise = np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32)
    noise *= np.sqrt(np.mean(clean**2) / 10) / noise.std()
    sf.write(str(path), clean + noise, 16000, subtype="PCM_16")


def _median(runs: list[tuple]) -> tuple:
    """The run with the median wall time."""
    return sorted(runs, key=lambda run: run[0])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--models", default="dns48,dns64")
    parser.add_argument("--durations", default="10,60", help="seconds, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each; the table shows the median wall time and peak")
    parser.add_argument("--before", type=Path, help="PYTHONPATH of a build to compare with")
    args = parser.parse_args()
    print(machine())
    rows = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        for name in args.models.split(","):
            architecture = PRETRAINED[name].architecture
            torch.manual_seed(0)
            weights = work / f"{name}.th"
            torch.save(Demucs(**architecture).state_dict(), weights)
            for seconds in map(float, args.durations.split(",")):
                source = work / f"noisy-{seconds:.0f}s.wav"
                noisy_speech(source, seconds)
                runs = {"reference": [], "ours": [], "before": []}
                ours = [sys.executable, "-m", "denoise.cli", str(source), "-o",
                        str(work / "out.wav"), "--method", "demucs", "--model", name,
                        "--weights", str(weights), "-j", "1", "--overwrite", "-q"]
                for _ in range(args.repeat):  # alternated, so drifts in machine speed hit all
                    runs["reference"].append(measure([
                        sys.executable, "-c", REFERENCE_SCRIPT, str(args.reference),
                        repr(architecture), str(weights), str(source), str(args.threads)]))
                    runs["ours"].append(measure(ours))
                    if args.before:
                        runs["before"].append(measure(
                            ours, env={**os.environ, "PYTHONPATH": str(args.before.resolve())}))
                rows.append((name, seconds, _median(runs["reference"]), _median(runs["ours"]),
                             _median(runs["before"]) if args.before else None))
    before = " | before wall s | speed-up over before" if args.before else ""
    print("\n| model | audio s | reference wall s | reference s/s | reference peak MB "
          f"| denoise wall s | denoise s/s | denoise peak MB | speed-up{before} |")
    print("|---" * (9 + 2 * bool(args.before)) + "|")
    for name, seconds, ref, ours, old in rows:
        extra = f" | {old[0]:.1f} | {old[0] / ours[0]:.2f}x" if old else ""
        print(f"| {name} | {seconds:.0f} | {ref[0]:.1f} | {ref[0] / seconds:.3f} | {ref[2]:.0f} "
              f"| {ours[0]:.1f} | {ours[0] / seconds:.3f} | {ours[2]:.0f} "
              f"| {ref[0] / ours[0]:.2f}x{extra} |")


if __name__ == "__main__":
    main()
