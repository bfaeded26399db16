"""What ``--fp16`` does to a DEMUCS stream's quality, on the shared pairs.

Each noisy file of `pairs.py` is streamed through DEMUCS twice, with the
weights in float32 and with ``--fp16`` (the large matrices in float16), and
both outputs are scored against the clean speech: PESQ-WB and STOI, their
differences, and how far below the float32 output the difference between
the two lies (dB, over all pairs). The model is the one ``--weights`` names
(a checkpoint, e.g. the official dns48), else dns48 with random weights from
a fixed seed: the official checkpoints cannot be downloaded everywhere, and
float16's rounding is relative to each weight, whatever its value.

    python bench/fp16_effect.py
    python bench/fp16_effect.py --weights ~/.cache/torch/hub/checkpoints/dns48-11decc9d8e3f0998.th
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.pairs import build_pairs, default_bench_data  # noqa: E402
from denoise.engine.backends import BackendSpec  # noqa: E402
from denoise.engine.backends.demucs import PRETRAINED  # noqa: E402
from denoise.engine.backends.demucs_model import Demucs  # noqa: E402
from denoise.engine.metrics import pesq_score, stoi_score  # noqa: E402
from denoise.engine.streaming import open_stream  # noqa: E402

RANDOM_SEED = 48  # that of dns48's golden fixture (bench/make_demucs_golden.py)


def streamed(options: dict, noisy: np.ndarray, rate: int) -> np.ndarray:
    stream = open_stream(BackendSpec("demucs", options), rate, 1)
    return np.concatenate([stream.feed(noisy[None]), stream.flush()], axis=1)[0]


def nan_mean(values: list[float]) -> float:
    kept = [value for value in values if not math.isnan(value)]
    return sum(kept) / len(kept) if kept else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path,
                        help="a DEMUCS checkpoint [default: dns48 with random weights]")
    parser.add_argument("--model", default="dns48", choices=["dns48", "dns64", "master64"],
                        help="the architecture, where --weights is a plain state_dict")
    args = parser.parse_args()
    torch.set_num_threads(1)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        weights = args.weights
        if weights is None:
            torch.manual_seed(RANDOM_SEED)
            weights = Path(work) / "random.th"
            torch.save(Demucs(**PRETRAINED[args.model].architecture).state_dict(), weights)
        rows = []
        for pair in build_pairs(default_bench_data()):
            rate = pair.sample_rate
            outputs = [streamed({"model": args.model, "weights": weights, "stream_fp16": fp16},
                                pair.noisy, rate) for fp16 in (False, True)]
            single, half = outputs
            rows.append(dict(
                pesq=[pesq_score(pair.clean, out, rate) for out in outputs],
                stoi=[stoi_score(pair.clean, out, rate) for out in outputs],
                signal=float(np.sum(single.astype(np.float64) ** 2)),
                error=float(np.sum((half - single).astype(np.float64) ** 2)),
                peak_error=float(np.abs(half - single).max() / np.abs(single).max())))
    pesq = {index: [math.nan if row["pesq"][index] is None else row["pesq"][index]
                    for row in rows] for index in (0, 1)}
    pesq_change = [b - a for a, b in zip(pesq[0], pesq[1])]
    stoi_change = [row["stoi"][1] - row["stoi"][0] for row in rows]
    below = 10 * math.log10(sum(row["signal"] for row in rows) / sum(row["error"] for row in rows))
    print(f"Command: python {' '.join(['bench/fp16_effect.py', *sys.argv[1:]])}")
    print(f"Model: {args.weights or f'{args.model}, random weights (seed {RANDOM_SEED})'}; "
          f"{len(rows)} pairs from {default_bench_data()}, streamed at a 16 ms hop\n")
    print("| weights | PESQ-WB | STOI |")
    print("|---|---:|---:|")
    for index, name in ((0, "float32"), (1, "--fp16")):
        print(f"| {name} | {nan_mean(pesq[index]):.4f} "
              f"| {nan_mean([row['stoi'][index] for row in rows]):.5f} |")
    print(f"\nPESQ-WB change, --fp16 minus float32: mean {nan_mean(pesq_change):+.4f}, "
          f"largest {max((abs(c) for c in pesq_change if not math.isnan(c)), default=0):.4f} "
          f"({sum(math.isnan(c) for c in pesq_change)} pairs without a PESQ score)")
    print(f"STOI change: mean {nan_mean(stoi_change):+.5f}, "
          f"largest {max(abs(c) for c in stoi_change):.5f}")
    print(f"The difference between the outputs: {below:.0f} dB below the float32 output; "
          f"at most {max(row['peak_error'] for row in rows):.1e} of its peak")
    print(f"\nTotal wall time: {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
