"""Quality bench: score enhancement methods on the noisy/clean pairs of `pairs.py`.

Metrics, each a mean over the pairs:
  PESQ-WB  ITU-T P.862.2 wide-band MOS-LQO (python-pesq), 1.04 to 4.64
  STOI     short-time objective intelligibility, 0 to 1 (pystoi)
  ESTOI    extended STOI, better for fluctuating noise, 0 to 1 (pystoi)
  SI-SDR   scale-invariant SDR in dB (Le Roux et al., ICASSP 2019)
  DNSMOS   Microsoft's non-intrusive P.835 overall quality (OVRL), 1 to 5
and the processing time in seconds per second of audio, on one thread.

"DeepFilterNet3 runtime" is the reference for ``denoise dfn3``: the libDF
runtime bundled with the weights, over each whole file from a fresh state
(bench/dfn3_reference.py), the 16 kHz pairs resampled to 48 kHz and back
with scipy's polyphase filter (``denoise`` uses torchaudio's).

A second table checks transparency: each method run on the clean speech alone
should give it back unharmed (PESQ-WB near 4.64).

A third, with ``--levels``, is the level sweep: the same pairs scaled to
other recording levels (float, nothing clipped; each output scaled back
before scoring), PESQ-WB and STOI means, how many files end with a lower
STOI than their input's (0.005 of slack), and how the noise in pauses
changed (output against input where the clean speech is silent). For
``denoise dfn3`` against ``DeepFilterNet3 runtime`` it shows what the level
stage (engine/level.py) does: the runtime alone has none.

    python bench/quality.py
    python bench/quality.py --methods "unprocessed,denoise spectral" --per-kind --per-snr
    python bench/quality.py --levels --methods "denoise spectral,denoise dfn3,DeepFilterNet3 runtime"
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # `engine` and `bench` without installing

from bench.pairs import Pair, build_pairs, default_bench_data  # noqa: E402
from denoise.engine.metrics import pesq_score, si_sdr, stoi_score  # noqa: E402

Enhancer = Callable[[np.ndarray, int], np.ndarray]


def _unprocessed() -> Enhancer:
    return lambda x, sample_rate: x


def _noisereduce(stationary: bool) -> Callable[[], Enhancer]:
    def factory() -> Enhancer:
        import noisereduce

        return lambda x, sample_rate: noisereduce.reduce_noise(
            y=x, sr=sample_rate, stationary=stationary
        )

    return factory


def _logmmse() -> Enhancer:
    saved_errstate = np.geterr()
    import logmmse  # its import runs np.seterr("raise") for the whole process

    np.seterr(**saved_errstate)

    def enhance(x: np.ndarray, sample_rate: int) -> np.ndarray:
        # float32 in, float32 out: logmmse mangles float64 (returns a tuple) and
        # drops the last partial frame, so pad back to the input length.
        y = logmmse.logmmse(x.astype(np.float32), sample_rate)
        return fit_length(y, len(x))

    return enhance


def _denoise(method: str, **options) -> Callable[[], Enhancer]:
    def factory() -> Enhancer:
        from denoise.engine import enhance_array

        return lambda x, sample_rate: enhance_array(x, sample_rate, method=method, **options)

    return factory


def _dfn3_reference() -> Enhancer:
    from scipy.signal import resample_poly

    from bench.dfn3_reference import reference

    def enhance(x: np.ndarray, sample_rate: int) -> np.ndarray:
        at_48k = resample_poly(x, 48000, sample_rate).astype(np.float32)
        return fit_length(resample_poly(reference(at_48k), sample_rate, 48000), len(x))

    return enhance


# Name -> factory. A factory imports its package, so a missing one only skips that method.
METHODS: dict[str, Callable[[], Enhancer]] = {
    "unprocessed": _unprocessed,
    "noisereduce stationary": _noisereduce(stationary=True),
    "noisereduce non-stationary": _noisereduce(stationary=False),
    "logmmse": _logmmse,
    "denoise spectral": _denoise("spectral"),
    "denoise dfn3": _denoise("dfn3"),
    "denoise dfn3 (runtime engine)": _denoise("dfn3", engine="runtime"),
    "DeepFilterNet3 runtime": _dfn3_reference,
}


@dataclass
class Score:
    """Metrics of one method on one pair."""

    method: str
    pair: str
    noise_kind: str
    snr_db: float | None
    duration_s: float
    seconds: float
    pesq_wb: float
    stoi: float
    estoi: float
    si_sdr_db: float
    dnsmos_ovrl: float


def fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """Trim or zero-pad the last axis of `x` to `length` samples."""
    if x.shape[-1] >= length:
        return x[..., :length]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, length - x.shape[-1])])


def pesq_wb(reference: np.ndarray, degraded: np.ndarray, sample_rate: int) -> float:
    """Wide-band PESQ, or NaN where PESQ finds no speech (one bad output
    must not end the whole run)."""
    score = pesq_score(reference, degraded, sample_rate)
    return math.nan if score is None else score


def timed(enhance: Enhancer, x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """Run `enhance`, check it kept the shape, return (output, seconds)."""
    start = time.perf_counter()
    y = np.asarray(enhance(x, sample_rate), dtype=np.float32)
    seconds = time.perf_counter() - start
    if y.shape != x.shape:
        raise ValueError(f"method returned shape {y.shape} for input {x.shape}")
    return y, seconds


def score_pair(method: str, enhance: Enhancer, pair: Pair) -> Score:
    enhanced, seconds = timed(enhance, pair.noisy, pair.sample_rate)
    rate = pair.sample_rate
    return Score(
        method=method,
        pair=pair.name,
        noise_kind=pair.noise_kind,
        snr_db=pair.snr_db,
        duration_s=len(pair.noisy) / rate,
        seconds=seconds,
        pesq_wb=pesq_wb(pair.clean, enhanced, rate),
        stoi=stoi_score(pair.clean, enhanced, rate),
        estoi=stoi_score(pair.clean, enhanced, rate, extended=True),
        si_sdr_db=si_sdr(pair.clean, enhanced),
        dnsmos_ovrl=dnsmos_ovrl(enhanced, rate),
    )


def dnsmos_ovrl(signal: np.ndarray, sample_rate: int) -> float:
    """DNSMOS OVRL of a signal (NaN where it cannot be scored)."""
    import tempfile

    import soundfile as sf

    from denoise.engine.dnsmos import dnsmos

    with tempfile.NamedTemporaryFile(suffix=".wav") as handle:
        sf.write(handle.name, signal, sample_rate, subtype="FLOAT")
        scores, _ = dnsmos(handle.name)
    return scores.get("ovrl", math.nan)


def transparency(enhance: Enhancer, pairs: list[Pair]) -> list[float]:
    """PESQ-WB of each clean utterance after enhancement, against itself."""
    return [
        pesq_wb(p.clean, timed(enhance, p.clean, p.sample_rate)[0], p.sample_rate) for p in pairs
    ]


def warm_up(enhance: Enhancer, pair: Pair) -> None:
    """One untimed call, so one-off set-up cost is not billed to the first pair."""
    enhance(pair.noisy[: pair.sample_rate], pair.sample_rate)


def load_methods(names: list[str]) -> dict[str, Enhancer]:
    """Build the selected methods, skipping (with a note) those whose import fails."""
    loaded = {}
    for name in names:
        try:
            loaded[name] = METHODS[name]()
        except ImportError as error:
            print(f"note: skipping {name!r}: {error}", file=sys.stderr)
    return loaded


def markdown_table(headers: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# Score field -> number format, in table column order.
METRIC_FORMATS = {"pesq_wb": ".2f", "stoi": ".3f", "estoi": ".3f", "si_sdr_db": ".1f",
                  "dnsmos_ovrl": ".2f"}
METRIC_HEADERS = ["PESQ-WB", "STOI", "ESTOI", "SI-SDR (dB)", "DNSMOS OVRL", "s per audio s"]


def metric_cells(scores: list[Score]) -> list[str]:
    """Metric means (NaN-skipping) and s per audio s (total time / total audio)."""
    cells = [
        format(np.nanmean([getattr(s, field) for s in scores]), fmt)
        for field, fmt in METRIC_FORMATS.items()
    ]
    speed = sum(s.seconds for s in scores) / sum(s.duration_s for s in scores)
    return [*cells, f"{speed:.4f}"]


def summary_table(scores: dict[str, list[Score]]) -> str:
    rows = [[method, *metric_cells(method_scores)] for method, method_scores in scores.items()]
    return markdown_table(["method", *METRIC_HEADERS], rows)


def breakdown_table(
    scores: dict[str, list[Score]], label: str, key: Callable[[Score], str]
) -> str:
    """One row per (group, method), groups in first-seen order."""
    rows = []
    groups = dict.fromkeys(key(s) for method_scores in scores.values() for s in method_scores)
    for group in groups:
        for method, method_scores in scores.items():
            in_group = [s for s in method_scores if key(s) == group]
            rows.append([group, method, str(len(in_group)), *metric_cells(in_group)])
    return markdown_table([label, "method", "n", *METRIC_HEADERS], rows)


def snr_label(score: Score) -> str:
    return "real" if score.snr_db is None else f"{score.snr_db:g} dB"


def transparency_table(results: dict[str, list[float]]) -> str:
    rows = []
    for method, values in results.items():
        failed = sum(math.isnan(v) for v in values)
        count = f"{len(values)} ({failed} PESQ failed)" if failed else str(len(values))
        rows.append([method, f"{np.nanmean(values):.2f}", f"{np.nanmin(values):.2f}", count])
    return markdown_table(["method (clean input)", "PESQ-WB mean", "PESQ-WB min", "n"], rows)


def pesq_failures(scores: dict[str, list[Score]]) -> list[str]:
    return [
        f"PESQ failed (NaN, left out of the mean) for {method!r} on: "
        + ", ".join(s.pair for s in method_scores if math.isnan(s.pesq_wb))
        for method, method_scores in scores.items()
        if any(math.isnan(s.pesq_wb) for s in method_scores)
    ]


def write_json(
    path: Path, scores: dict[str, list[Score]], clean_pesq: dict[str, list[float]]
) -> None:
    """Per-pair scores; NaN becomes null so the file is strict JSON."""

    def clean(value: object) -> object:
        return None if isinstance(value, float) and math.isnan(value) else value

    records = [{k: clean(v) for k, v in asdict(s).items()} for ss in scores.values() for s in ss]
    transparent = {m: [clean(v) for v in values] for m, values in clean_pesq.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pairs": records, "transparency_pesq_wb": transparent}, indent=1))


SWEEP_LEVELS_DB = (12, 0, -10, -20, -30, -40)
# STOI below the input's by more than this counts as a file made less intelligible.
STOI_SLACK = 0.005


@dataclass
class LevelScore:
    """One method on one pair at one recording level."""

    pesq_wb: float
    stoi: float
    input_stoi: float
    pause_change_db: float


def pause_change_db(clean: np.ndarray, noisy: np.ndarray, enhanced: np.ndarray,
                    sample_rate: int) -> float:
    """Output power against input power over the 20 ms frames where the
    clean speech is more than 40 dB below its loudest frame."""
    frame = sample_rate // 50
    count = len(clean) // frame

    def power(x):
        return np.square(x[: count * frame].astype(np.float64)).reshape(count, frame).sum(axis=1)

    speech = power(clean)
    pauses = speech < speech.max() * 1e-4
    if not pauses.any():
        return math.nan
    return float(10 * np.log10(power(enhanced)[pauses].sum() / power(noisy)[pauses].sum()))


def level_sweep(enhance: Enhancer, pairs: list[Pair], levels_db) -> dict[int, list[LevelScore]]:
    """Each pair at each level: scaled, enhanced, scaled back, scored."""
    sweep = {}
    for level_db in levels_db:
        scale = np.float32(10 ** (level_db / 20))
        sweep[level_db] = []
        for pair in pairs:
            rate = pair.sample_rate
            enhanced = np.asarray(enhance(pair.noisy * scale, rate), np.float32) / scale
            sweep[level_db].append(LevelScore(
                pesq_wb(pair.clean, enhanced, rate), stoi_score(pair.clean, enhanced, rate),
                stoi_score(pair.clean, pair.noisy, rate),
                pause_change_db(pair.clean, pair.noisy, enhanced, rate)))
    return sweep


def level_table(sweeps: dict[str, dict[int, list[LevelScore]]]) -> str:
    """One row per (method, level): means, their change from the as-recorded
    level, files made less intelligible, the noise in pauses."""
    rows = []
    for method, sweep in sweeps.items():
        as_recorded = sweep.get(0)
        for level_db, scores in sweep.items():
            pesq = np.nanmean([s.pesq_wb for s in scores])
            stoi = np.mean([s.stoi for s in scores])
            below = sum(s.stoi < s.input_stoi - STOI_SLACK for s in scores)
            delta = ("" if as_recorded is None else
                     f"{pesq - np.nanmean([s.pesq_wb for s in as_recorded]):+.3f} / "
                     f"{stoi - np.mean([s.stoi for s in as_recorded]):+.4f}")
            rows.append([method, f"{level_db:+d} dB", f"{pesq:.3f}", f"{stoi:.4f}", delta,
                         f"{below} of {len(scores)}",
                         f"{np.nanmean([s.pause_change_db for s in scores]):+.1f}"])
    return markdown_table(["method", "level", "PESQ-WB", "STOI",
                           "change from as recorded (PESQ / STOI)",
                           "files below the input's STOI", "pauses (dB)"], rows)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Score enhancement methods on the bench pairs.")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated, from: {', '.join(METHODS)} (default: all)",
    )
    parser.add_argument("--bench-data", type=Path, default=default_bench_data())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N pairs")
    parser.add_argument("--per-kind", action="store_true", help="also break down by noise kind")
    parser.add_argument("--per-snr", action="store_true", help="also break down by SNR")
    parser.add_argument("--json", type=Path, help="write per-pair scores here")
    parser.add_argument("--levels", action="store_true",
                        help="the level sweep (recording levels from +12 to -40 dB) instead of "
                             "the quality tables")
    args = parser.parse_args()
    args.methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = [name for name in args.methods if name not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    return args


def run(
    methods: dict[str, Enhancer], pairs: list[Pair]
) -> tuple[dict[str, list[Score]], dict[str, list[float]]]:
    """Score every method on every pair, one method at a time."""
    scores, clean_pesq = {}, {}
    for name, enhance in methods.items():
        started = time.perf_counter()
        warm_up(enhance, pairs[0])
        scores[name] = [score_pair(name, enhance, pair) for pair in pairs]
        clean_pesq[name] = transparency(enhance, pairs)
        print(f"scored {name!r} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return scores, clean_pesq


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)  # comparable timings; the bench's own choice, not the engine's
    started = time.perf_counter()
    pairs = build_pairs(args.bench_data, args.seed, args.limit)
    methods = load_methods(args.methods)
    if args.levels:
        sweeps = {}
        for name, enhance in methods.items():
            sweeps[name] = level_sweep(enhance, pairs, SWEEP_LEVELS_DB)
            print(f"swept {name!r} at {time.perf_counter() - started:.0f} s", file=sys.stderr)
        print(f"{len(pairs)} pairs at {len(SWEEP_LEVELS_DB)} levels\n")
        print(level_table(sweeps))
        return
    scores, clean_pesq = run(methods, pairs)
    audio_s = sum(len(p.noisy) / p.sample_rate for p in pairs)
    print(f"{len(pairs)} pairs, {audio_s:.0f} s of 16 kHz audio\n")
    print(summary_table(scores))
    for line in pesq_failures(scores):
        print(f"\n{line}")
    if args.per_kind:
        print("\n" + breakdown_table(scores, "noise", lambda s: s.noise_kind))
    if args.per_snr:
        print("\n" + breakdown_table(scores, "SNR", snr_label))
    print("\n" + transparency_table(clean_pesq))
    if args.json:
        write_json(args.json, scores, clean_pesq)
    print(f"\ntotal {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
