"""DeepFilterNet3 speed: ``denoise``'s two dfn3 engines against the reference runtime.

In one process (BLAS/OpenMP threads set to 1 before anything is imported,
one torch and ONNX Runtime thread), on the same 48 kHz input (real noisy
speech from samples/, tiled to ``--seconds``), alternating for ``--rounds``
rounds (the median is printed), it times

  reference offline   the bundled libDF over the whole signal, frame by
                      frame from its C API (bench/dfn3_reference.py)
  runtime engine      ``enhance_array(..., method="dfn3", engine="runtime")``
  onnx engine         ``enhance_array(..., method="dfn3")``, the default:
                      whole process, and its three networks alone
  streaming           ``open_stream(dfn3)`` (the runtime) fed one 10 ms hop at
                      a time, as a live source does; RTF, and the p50/p99/max
                      compute time of a hop against its 10 ms

and checks that the outputs agree (each engine against the reference, SNR in
dB; streamed against the runtime engine offline, within 1e-4 of peak).

``--cli-seconds S`` also times the command as a user meets it: ``denoise IN
-o OUT --method dfn3 -j 1`` on S seconds of the same speech, pinned to one
core (``taskset -c 0``), whole process with its imports, each engine.

``--batch N`` times a folder of N files (45 s each at 44.1 kHz, the same
speech from different points) through ``denoise IN/ -o OUT/ --method dfn3``
with the default ``-j``, pinned to two cores (``taskset -c 0,1``), each
engine, alternating, best of 2.

    python bench/dfn3_speed.py --seconds 60 --cli-seconds 300 --batch 8
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from scipy.signal import resample_poly  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from bench.dfn3_reference import reference  # noqa: E402
from denoise.engine import enhance_array  # noqa: E402
from denoise.engine.backends import BackendSpec, dfn3_onnx  # noqa: E402
from denoise.engine.streaming import open_stream  # noqa: E402

RATE = 48000
HOP = 480


SAMPLE = REPO_ROOT / "samples" / "librispeech_2412_crowd_5dB_44k.wav"


def noisy_speech(seconds: float) -> np.ndarray:
    audio, rate = sf.read(str(SAMPLE), dtype="float32")
    return np.resize(resample_poly(audio, 160, 147), round(seconds * RATE)).astype(np.float32)


class NetworkClock:
    """Time spent in the onnx engine's three networks."""

    def __init__(self):
        self.seconds = 0.0
        self._run = dfn3_onnx.Networks.run
        clock = self

        def timed_run(networks, *args):
            began = time.perf_counter()
            try:
                return clock._run(networks, *args)
            finally:
                clock.seconds += time.perf_counter() - began

        dfn3_onnx.Networks.run = timed_run


def snr_db(reference_signal: np.ndarray, estimate: np.ndarray) -> float:
    error = np.sum((reference_signal - estimate) ** 2)
    return float(10 * np.log10(np.sum(reference_signal**2) / max(error, 1e-30)))


def time_command(engine: str, source: Path, out: Path, cores: str,
                 jobs: tuple[str, ...]) -> float:
    command = ["taskset", "-c", cores, shutil.which("denoise") or "denoise", str(source), "-o",
               str(out), "--method", "dfn3", "--dfn3-engine", engine, *jobs, "--overwrite",
               "--quiet"]
    began = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cli-seconds", type=float, default=0.0)
    parser.add_argument("--batch", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    signal = noisy_speech(args.seconds)
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
          f"python {platform.python_version()}; 1 thread; {args.seconds:g} s at 48 kHz, "
          f"median of {args.rounds} rounds")
    reference(signal[:RATE])  # loads the library: not billed to the first timing
    enhance_array(signal[:RATE], RATE, method="dfn3")  # loads the networks
    clock = NetworkClock()
    times = {"reference": [], "runtime": [], "onnx": [], "networks": []}
    for _ in range(args.rounds):
        started = time.perf_counter()
        theirs = reference(signal)
        times["reference"].append(time.perf_counter() - started)
        started = time.perf_counter()
        by_runtime = enhance_array(signal, RATE, method="dfn3", engine="runtime")
        times["runtime"].append(time.perf_counter() - started)
        clock.seconds = 0.0
        started = time.perf_counter()
        by_onnx = enhance_array(signal, RATE, method="dfn3")
        times["onnx"].append(time.perf_counter() - started)
        times["networks"].append(clock.seconds)
    rtf = {name: float(np.median(values)) / args.seconds for name, values in times.items()}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    stream = open_stream(BackendSpec("dfn3"), RATE, 1)
    hops, parts = [], []
    for start in range(0, len(signal), HOP):
        began = time.perf_counter()
        parts.append(stream.feed(signal[None, start: start + HOP]))
        hops.append(time.perf_counter() - began)
    parts.append(stream.flush())
    streamed = np.concatenate(parts, axis=-1)[0]
    hops = np.array(hops)
    streamed_error = np.max(np.abs(streamed - by_runtime)) / np.max(np.abs(by_runtime))

    print("\n| run | RTF | time against the reference | hop compute p50 / p99 / max (ms) |")
    print("|---|---:|---:|---|")
    for label, name in (("reference runtime, offline", "reference"),
                        ("denoise dfn3, runtime engine", "runtime"),
                        ("denoise dfn3, onnx engine (default)", "onnx"),
                        ("onnx engine, its three networks alone", "networks")):
        print(f"| {label} | {rtf[name]:.4f} | {rtf[name] / rtf['reference']:.2f} | - |")
    print(f"| denoise dfn3, streaming (runtime), 10 ms hop | {hops.sum() / args.seconds:.4f} "
          f"| {hops.sum() / args.seconds / rtf['reference']:.2f} "
          f"| {1000 * np.median(hops):.2f} / {1000 * np.percentile(hops, 99):.2f} "
          f"/ {1000 * hops.max():.2f} |")
    print(f"\nagainst the reference: onnx engine {snr_db(theirs, by_onnx):.1f} dB SNR, runtime "
          f"engine {snr_db(theirs, by_runtime):.1f} dB; streamed against the runtime engine "
          f"offline: largest difference {streamed_error:.1e} of peak; latency "
          f"{1000 * stream.latency_samples / RATE:.0f} ms; peak memory of this process "
          f"{peak_mb:.0f} MB")

    if args.cli_seconds:
        command_speed(args.cli_seconds)
    if args.batch:
        batch_speed(args.batch)


def best_of_two(source: Path, out: Path, cores: str, jobs: tuple[str, ...]) -> dict[str, float]:
    """Each engine's best wall time of two runs, alternating."""
    wall = {engine: [] for engine in ("runtime", "onnx")}
    for _ in range(2):
        for engine in wall:
            wall[engine].append(time_command(engine, source, out, cores, jobs))
    return {engine: min(values) for engine, values in wall.items()}


def command_speed(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "talk.wav"
        sf.write(str(source), noisy_speech(seconds), RATE, subtype="PCM_16")
        best = best_of_two(source, Path(folder) / "out.wav", "0", ("-j", "1"))
    print(f"\n`taskset -c 0 denoise talk.wav -o out.wav --method dfn3 -j 1` on "
          f"{seconds:g} s of 48 kHz speech, whole process, best of 2:")
    print("| engine | wall s | RTF |\n|---|---:|---:|")
    for engine, wall_s in best.items():
        print(f"| {engine} | {wall_s:.1f} | {wall_s / seconds:.4f} |")
    print(f"onnx engine: {best['runtime'] / best['onnx']:.1f}x faster")


def batch_speed(files: int) -> None:
    speech, rate = sf.read(str(SAMPLE), dtype="float32")
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "in"
        source.mkdir()
        for index in range(files):
            sf.write(str(source / f"talk {index}.wav"),
                     np.resize(np.roll(speech, index * 3 * rate), 45 * rate), rate,
                     subtype="PCM_16")
        best = best_of_two(source, Path(folder) / "out", "0,1", ())
    print(f"\n`taskset -c 0,1 denoise in/ -o out/ --method dfn3` (default -j), {files} files of "
          f"45 s at 44.1 kHz, best of 2:")
    print("| engine | wall s |\n|---|---:|")
    for engine, wall_s in best.items():
        print(f"| {engine} | {wall_s:.1f} |")
    print(f"onnx engine: {best['onnx'] / best['runtime']:.2f} of the runtime's wall time")


if __name__ == "__main__":
    main()
