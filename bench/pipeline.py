"""How much finishing and measuring cost next to enhancement itself.

Runs the same batch (16 files of 40 s, 48 kHz stereo: real speech in real
crowd noise, at levels from -38 to -18 dBFS so that the podcast preset has
work to do) three ways, as whole processes: plain, ``--preset podcast``, and
``--preset podcast --report DIR --plot``, with the spectral method and
``-j 2``. Prints the wall time, its ratio to the plain run's, and the
parent process's peak RSS (VmHWM of the ``denoise`` process itself; the
workers are separate processes).

    python bench/pipeline.py [--before DIR] [--repeat 3]

``--before DIR`` runs every command a second time with ``PYTHONPATH=DIR``,
where DIR holds another build of denoise (``pip install --no-deps --target
DIR <wheel or checkout>``), alternating with this one, for a before/after
table measured in one run. Each figure is the median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import machine, memory_kb, process_tree  # noqa: E402
from pairs import default_bench_data, load_mono  # noqa: E402

RATE = 48_000
FILES = 16
SECONDS = 40
SAMPLE_S = 0.02
RUNS = {"plain": [], "--preset podcast": ["--preset", "podcast"],
        "--preset podcast --report DIR --plot": ["--preset", "podcast", "--report", "{report}",
                                                 "--plot"]}


def make_batch(folder: Path, bench_data: Path) -> None:
    """The 16 files: speech tiled to 40 s, crowd noise 10 dB under it, the two
    channels slightly different, each file at its own level."""
    speech = load_mono(bench_data / "valentini_p286__iver56_audiomentations" / "p286_011.wav",
                       RATE)
    noise = load_mono(bench_data / "freesound_noise__IBM_MAX-Audio-Classifier" / "crowd_cheering.wav",
                      RATE)
    frames = SECONDS * RATE
    speech, noise = np.resize(speech, frames), np.resize(noise, frames + RATE)
    noise_gain = np.sqrt(np.mean(speech**2) / np.mean(noise**2)) / 10 ** (10 / 20)
    folder.mkdir(parents=True)
    for index in range(FILES):
        left = speech + noise_gain * noise[:frames]
        right = 0.9 * speech + noise_gain * noise[RATE // 2:RATE // 2 + frames]
        stereo = np.stack([left, right], axis=1)
        level_db = -38 + 20 * index / (FILES - 1)
        stereo *= 10 ** (level_db / 20) / np.sqrt(np.mean(stereo**2))
        sf.write(str(folder / f"take{index:02d}.wav"), stereo.astype(np.float32), RATE,
                 subtype="PCM_16")


def run(command: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and the root process's peak RSS in MB."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    parent_peak = 0
    while True:
        for pid in process_tree(process.pid)[:1]:
            parent_peak = max(parent_peak, memory_kb(pid)[1])
        if process.poll() is not None:
            break
        time.sleep(SAMPLE_S)
    wall = time.perf_counter() - started
    stderr = process.stderr.read().decode()
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({process.returncode}):\n{stderr}")
    return wall, parent_peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--before", type=Path, help="PYTHONPATH of the build to compare with")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    builds = {"this": None} | ({"before": args.before.resolve()} if args.before else {})
    print(f"machine: {machine()}")
    print(f"command: {' '.join([sys.executable, *sys.argv])}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="denoise-pipeline-"))
    try:
        make_batch(work / "in", default_bench_data())
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for repeat in range(args.repeat):
            for name, extra in RUNS.items():
                for build, path in builds.items():
                    env = dict(os.environ)
                    if path is not None:
                        env["PYTHONPATH"] = str(path)
                    out, report = work / "out", work / "report"
                    shutil.rmtree(out, ignore_errors=True)
                    shutil.rmtree(report, ignore_errors=True)
                    command = [sys.executable, "-m", "denoise.cli", str(work / "in"), "-o",
                               str(out), "--method", "spectral", "-j", str(args.jobs), "-q",
                               *[part.format(report=report) for part in extra]]
                    wall, peak = run(command, env)
                    results.setdefault((build, name), []).append((wall, peak))
                    print(f"  {build:6} {name:40} {wall:6.1f} s {peak:6.0f} MB", flush=True)
    finally:
        shutil.rmtree(work)
    print()
    print("| build | run | wall s | x plain | parent peak RSS MB |")
    print("|---|---|---:|---:|---:|")
    for build in builds:
        plain = statistics.median(w for w, _ in results[(build, "plain")])
        for name in RUNS:
            walls, peaks = zip(*results[(build, name)])
            wall = statistics.median(walls)
            print(f"| {build} | {name} | {wall:.1f} | {wall / plain:.2f} "
                  f"| {statistics.median(peaks):.0f} |")
    print(f"\n{machine()}")


if __name__ == "__main__":
    main()
