"""DeepFilterNet3 speed: ``denoise``'s dfn3 against its reference runtime, one thread.

In one process (BLAS/OpenMP threads set to 1 before anything is imported),
on the same 48 kHz input (real noisy speech from samples/, tiled to
``--seconds``), it times

  reference offline   the bundled libDF over the whole signal, frame by
                      frame from its C API (bench/dfn3_reference.py)
  denoise offline     ``enhance_array(..., method="dfn3")``: the engine's
                      backend, state creation and delay handling included
  denoise streaming   ``open_stream(dfn3)`` fed one 10 ms hop at a time, as a
                      live source does; RTF, and the p50/p99/max compute time
                      of a hop against its 10 ms

and checks that the three outputs agree (streamed against offline, within
1e-4 of peak; offline against the reference, SNR in dB).

    python bench/dfn3_speed.py --seconds 60
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
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
from denoise.engine.backends import BackendSpec  # noqa: E402
from denoise.engine.streaming import open_stream  # noqa: E402

RATE = 48000
HOP = 480


def noisy_speech(seconds: float) -> np.ndarray:
    audio, rate = sf.read(str(REPO_ROOT / "samples" / "librispeech_2412_crowd_5dB_44k.wav"),
                          dtype="float32")
    return np.resize(resample_poly(audio, 160, 147), round(seconds * RATE)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    signal = noisy_speech(args.seconds)
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
          f"python {platform.python_version()}; 1 thread; {args.seconds:g} s at 48 kHz")
    reference(signal[:RATE])  # loads the library: not billed to the first timing
    started = time.perf_counter()
    theirs = reference(signal)
    reference_s = time.perf_counter() - started

    started = time.perf_counter()
    ours = enhance_array(signal, RATE, method="dfn3")
    offline_s = time.perf_counter() - started

    stream = open_stream(BackendSpec("dfn3"), RATE, 1)
    hops, parts = [], []
    for start in range(0, len(signal), HOP):
        began = time.perf_counter()
        parts.append(stream.feed(signal[None, start: start + HOP]))
        hops.append(time.perf_counter() - began)
    parts.append(stream.flush())
    streamed = np.concatenate(parts, axis=-1)[0]
    hops = np.array(hops)

    error = np.sum((theirs - ours) ** 2)
    snr = 10 * np.log10(np.sum(theirs**2) / max(error, 1e-30))
    streamed_error = np.max(np.abs(streamed - ours)) / np.max(np.abs(ours))
    print("\n| run | RTF | hop compute p50 / p99 / max (ms) |")
    print("|---|---:|---|")
    print(f"| reference runtime, offline | {reference_s / args.seconds:.3f} | - |")
    print(f"| denoise dfn3, offline | {offline_s / args.seconds:.3f} | - |")
    print(f"| denoise dfn3, streaming, 10 ms hop | {hops.sum() / args.seconds:.3f} "
          f"| {1000 * np.median(hops):.2f} / {1000 * np.percentile(hops, 99):.2f} "
          f"/ {1000 * hops.max():.2f} |")
    print(f"\noffline against the reference: {snr:.1f} dB SNR; streamed against offline: "
          f"largest difference {streamed_error:.1e} of peak; latency "
          f"{1000 * stream.latency_samples / RATE:.0f} ms")


if __name__ == "__main__":
    main()
