"""Live DEMUCS: real-time factor, latency and dropouts, ours against the reference.

Feeds the same 10 s of real noisy speech (Valentini p287, the noisy half of
its pairs, joined end to end, 16 kHz) to the reference's ``DemucsStreamer``
(facebookresearch/denoiser 0.1.5, its sdist unpacked outside this repository)
and to ``engine.backends.demucs_stream.DemucsStream``, one hop (``stride``
samples) per ``feed`` call, as a live source would, for each model, thread
count and hop size. Both have the same random weights (the reference model
built after ``torch.manual_seed``, its state_dict loaded into ours; speed does
not depend on the weights' values). Each measurement runs in a fresh process,
with the BLAS/OpenMP thread counts set in its environment before anything is
imported, and ``torch.set_num_threads``. Model construction is not timed.

Warm-up: one second of the input is streamed first through a throwaway
streamer, so that the first hops do not pay for allocation and lazy
initialisation. Before that, unless ``--cold``, the model runs once offline
over the whole input (under ``torch.no_grad``), as the reference's own
benchmark (``python -m denoiser.demucs``) does before it streams: in PyTorch
2.11 on one thread that halves the time of the reference's LSTM steps for
the rest of the process (dns48: 8.8 ms a step instead of 15.6 ms; one second
of offline input is not enough, four are), so without it the reference runs
about twice as slow as it can. Ours runs its torch model offline too, for
symmetry, though its stream does not use torch.

  RTF            seconds spent in ``feed`` / seconds of audio fed (``flush``,
                 which only pads the end with silence, is not counted)
  algorithmic    ``latency_samples`` (the reference's ``total_length``): the
                 frame, the receptive field and the resampler's look-ahead
  hop p50/p99/max  compute time of the feeds that produced a hop
  RTF / reference  the RTF over the reference's (same model, threads and hop)
                 in the same round of runs; with --repeat, the median of
                 those ratios: the host's load drifts, and moves both sides
                 of a round alike
  measured       algorithmic + p99 hop compute time
  dropouts       hops that would come out late from a live source: hop k's
                 input arrives at k * hop; its processing starts when it has
                 arrived and the previous hop is done, and it is late if it
                 ends after k * hop + hop (one hop of output buffering). The
                 measured compute times are replayed on that schedule; the
                 hops themselves ran back to back.

``ours-fp16`` is ours with ``--fp16``: the large weight matrices in float16
(fbgemm), the rest as ``ours``. Both set torch's own threads to one, as every
denoise stream does, so the thread count of their rows goes to the BLAS.

Goals: issue 13 asks, at a 16 ms hop on one thread, for dns48 at most RTF
0.25 and dns64 at most 0.5, where the reference ran at 1.15 and 2.07 on the
issue's machine. Speeds differ between machines, so the last table checks
the same fractions of the reference's RTF measured in this run (0.217 and
0.242).

``--repeat N`` runs each row N times, the implementations alternating in
rounds, and shows the run with the median RTF and the median of the
rounds' ratios: this host's load moves single runs by 10 % or more.

On the 1-thread runs the outputs (fed, then flushed) are compared with the
reference's: the largest difference relative to the reference output's peak
must be within 1e-4.

    pip download --no-deps --no-binary :all: denoiser==0.1.5 -d /tmp/ref
    tar xzf /tmp/ref/denoiser-0.1.5.tar.gz -C /tmp/ref
    python bench/streaming.py --reference /tmp/ref/denoiser-0.1.5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.memory import machine as machine_load  # noqa: E402
from bench.pairs import default_bench_data, load_mono  # noqa: E402
from denoise.engine.backends.demucs import PRETRAINED  # noqa: E402

SAMPLE_RATE = 16_000
NOISY_SPEECH = "valentini_train_p287__facebookresearch_denoiser/noisy"
MODELS = {name: PRETRAINED[name].architecture for name in ("dns48", "dns64")}
SEEDS = {"dns48": 48, "dns64": 64}  # those of bench/make_demucs_golden.py
WARM_UP_S = 1.0
OURS = ("ours", "ours-fp16")
MATCH_TOLERANCE = 1e-4  # of the output's peak
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# Issue 13's goals, 16 ms hop, 1 thread: (at most this RTF, where the
# reference streamer ran at this RTF on the machine). Machines
# differ, so a run checks the same fraction of its own reference's RTF.
GOALS = {"dns48": (0.25, 1.15), "dns64": (0.5, 2.07)}


# -- the input --------------------------------------------------------------

def noisy_speech(seconds: float) -> np.ndarray:
    """``seconds`` of real noisy speech at 16 kHz: the p287 noisy files joined
    in order (tiled if that is too short)."""
    pieces = [load_mono(path, SAMPLE_RATE)
              for path in sorted((default_bench_data() / NOISY_SPEECH).glob("*.wav"))]
    return np.resize(np.concatenate(pieces), round(seconds * SAMPLE_RATE)).astype(np.float32)


# -- one measurement, in its own process --------------------------------------

def build_stream(reference: Path, model_name: str, implementation: str, hop_frames: int):
    """A factory of fresh streamers, with the model built once; the
    streamer's latency in samples; and the torch model."""
    import torch

    sys.path.insert(0, str(reference))
    from denoiser.demucs import Demucs as ReferenceDemucs
    from denoiser.demucs import DemucsStreamer

    from denoise.engine.backends.demucs_model import Demucs
    from denoise.engine.backends.demucs_stream import DemucsStream

    torch.manual_seed(SEEDS[model_name])
    reference_model = ReferenceDemucs(**MODELS[model_name], sample_rate=SAMPLE_RATE).eval()
    if implementation == "reference":
        make = lambda: DemucsStreamer(reference_model, num_frames=hop_frames)  # noqa: E731
        return make, make().total_length, reference_model
    model = Demucs(**MODELS[model_name])
    model.load_state_dict(reference_model.state_dict())
    model.eval()
    half = implementation == "ours-fp16"
    make = lambda: DemucsStream(model, hop_frames=hop_frames, dry=0.0, half=half)  # noqa: E731
    return make, make().latency_samples, model


def stream_live(stream, blocks: list) -> tuple[list, np.ndarray, float]:
    """Each block through ``stream.feed``: the outputs, each feed's seconds,
    and the seconds of the whole loop."""
    seconds = np.empty(len(blocks))
    outputs = []
    begin = time.perf_counter()
    for index, block in enumerate(blocks):
        start = time.perf_counter()
        outputs.append(stream.feed(block))
        seconds[index] = time.perf_counter() - start
    return outputs, seconds, time.perf_counter() - begin


def late_hops(compute_s: np.ndarray, hop_s: float) -> int:
    """Hops that end after their deadline when block k arrives at k * hop_s
    and each waits for the one before it."""
    finished, late = 0.0, 0
    for index, seconds in enumerate(compute_s):
        arrival = index * hop_s
        finished = max(arrival, finished) + seconds
        late += int(finished > arrival + hop_s)
    return late


def measure(spec: dict) -> dict:
    """One implementation, model, thread count and hop size; ``spec`` as
    written by :func:`run_measurement`."""
    import torch

    torch.set_num_threads(spec["threads"])
    make, latency_samples, model = build_stream(
        Path(spec["reference"]), spec["model"], spec["implementation"], spec["hop_frames"])
    stride = make().stride
    audio = np.load(spec["input"])
    if not spec["cold"]:
        with torch.no_grad():
            model(torch.from_numpy(audio)[None, None])
    if spec["implementation"] == "reference":  # its feed takes torch tensors
        audio = torch.from_numpy(audio)
    blocks = [audio[None, start:start + stride] for start in range(0, len(audio), stride)]
    warm_up = blocks[:round(WARM_UP_S * SAMPLE_RATE / stride)]
    with torch.no_grad():
        stream_live(make(), warm_up)
        stream = make()
        outputs, seconds, wall_s = stream_live(stream, blocks)
        outputs.append(stream.flush())
    if spec["output"]:
        np.save(spec["output"], np.concatenate([np.asarray(out)[0] for out in outputs]))
    hop_s = stride / SAMPLE_RATE
    hop_ms = 1000 * seconds[[out.shape[-1] > 0 for out in outputs[:-1]]]
    return dict(rtf=wall_s / (len(audio) / SAMPLE_RATE),
                latency_ms=1000 * latency_samples / SAMPLE_RATE, hop_ms=1000 * hop_s,
                hop_p50_ms=float(np.percentile(hop_ms, 50)),
                hop_p99_ms=float(np.percentile(hop_ms, 99)), hop_max_ms=float(hop_ms.max()),
                hops=len(blocks), late=late_hops(seconds, hop_s))


def run_measurement(spec: dict) -> dict:
    """:func:`measure` in a fresh interpreter whose thread counts are set
    before numpy and torch are imported."""
    env = {**os.environ, **{name: str(spec["threads"]) for name in THREAD_VARIABLES}}
    done = subprocess.run([sys.executable, __file__, "--measure", json.dumps(spec)],
                          env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"measurement {spec} failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


# -- the whole bench ------------------------------------------------------------

def machine() -> str:
    import torch

    return (f"{machine_load()}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, numpy {np.__version__}")


def comma_list(text: str, kind: type, allowed=None) -> list:
    values = [kind(value) for value in text.split(",")]
    bad = [value for value in values if (allowed is not None and value not in allowed)
           or (kind is int and value < 1)]
    if bad:
        raise argparse.ArgumentTypeError(f"{bad} not allowed"
                                         + (f"; choose from {', '.join(allowed)}" if allowed
                                            else "; give positive integers"))
    return values


def median_run(results: list[dict]) -> dict:
    """The run with the median RTF (the lower middle one of an even count)."""
    return sorted(results, key=lambda result: result["rtf"])[(len(results) - 1) // 2]


def goal_lines(rows: list) -> list[str]:
    """Lines of a table: the issue's goals against the 16 ms, 1-thread rows,
    as fractions of the reference's RTF."""
    lines = ["\nGoals (16 ms hop, 1 thread). The issue measured the reference on another "
             "machine; a goal here is the same fraction of the reference's RTF.\n",
             "| model | goal there | goal / reference | "
             + " | ".join(f"{implementation} / reference" for implementation in OURS)
             + " | met by |",
             "|---|---|---:|" + "---:|" * len(OURS) + "---|"]
    ratios = {(model, implementation): ratio
              for model, threads, implementation, result, ratio in rows
              if threads == 1 and result["hop_ms"] == 16}
    for model, (goal, reference_there) in GOALS.items():
        if (model, "reference") not in ratios:
            continue
        fraction = goal / reference_there
        ours = [ratios[model, implementation] for implementation in OURS]
        met = [implementation for implementation, ratio in zip(OURS, ours) if ratio <= fraction]
        lines.append(f"| {model} | RTF {goal} where the reference took {reference_there} "
                     f"| {fraction:.3f} | " + " | ".join(f"{ratio:.3f}" for ratio in ours)
                     + f" | {', '.join(met) or 'none'} |")
    return lines if len(lines) > 3 else []


def compare(outputs: dict[tuple, dict[str, Path]]) -> list[str]:
    """Lines of a table: ours against the reference, per model and hop."""
    lines = ["| model | hop ms | implementation | max abs(ours - reference) / reference peak "
             "| difference, dB below the reference output | within 1e-4 |",
             "|---|---:|---|---:|---:|---|"]
    for (model, hop_ms), paths in outputs.items():
        reference = np.load(paths["reference"])
        for implementation in OURS:
            ours = np.load(paths[implementation])
            if reference.shape != ours.shape:
                lines.append(f"| {model} | {hop_ms:g} | {implementation} | lengths differ: "
                             f"reference {len(reference)}, ours {len(ours)} | | no |")
                continue
            relative = np.abs(ours - reference).max() / np.abs(reference).max()
            below = 10 * np.log10(np.sum(reference ** 2) / np.sum((ours - reference) ** 2))
            lines.append(f"| {model} | {hop_ms:g} | {implementation} | {relative:.2e} "
                         f"| {below:.0f} | {'yes' if relative <= MATCH_TOLERANCE else 'NO'} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True,
                        help="unpacked denoiser-0.1.5 sdist (the folder holding denoiser/)")
    parser.add_argument("--models", default="dns48,dns64",
                        type=lambda text: comma_list(text, str, MODELS))
    parser.add_argument("--threads", default="1,2", type=lambda text: comma_list(text, int))
    parser.add_argument("--hops", default="1,2", type=lambda text: comma_list(text, int),
                        help="hop sizes in model frames (one frame is 16 ms)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of audio fed")
    parser.add_argument("--repeat", type=lambda text: comma_list(text, int)[0], default=1,
                        help="runs of each row, alternating implementations; the median shown")
    parser.add_argument("--cold", action="store_true",
                        help="no offline pass before streaming (see the docstring)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # one measurement, as JSON
    if "--measure" in sys.argv:  # the child process: --reference is in the spec
        print(json.dumps(measure(json.loads(sys.argv[sys.argv.index("--measure") + 1]))))
        return
    args = parser.parse_args()
    if not (args.reference / "denoiser" / "demucs.py").is_file():
        parser.error(f"{args.reference} does not hold denoiser/demucs.py; unpack the "
                     "denoiser-0.1.5 sdist there (see the commands in this script's docstring)")
    began = time.perf_counter()
    print(f"Machine: {machine()}")
    print(f"Command: python {shlex.join(['bench/streaming.py', *sys.argv[1:]])}")
    rows, outputs = [], {}
    with tempfile.TemporaryDirectory() as work:
        source = Path(work) / "noisy.npy"
        np.save(source, noisy_speech(args.seconds))
        for model in args.models:
            for threads in args.threads:
                for hop_frames in args.hops:
                    runs = {implementation: [] for implementation in ("reference", *OURS)}
                    for repeat in range(args.repeat):  # alternately, so that load hits all
                        for implementation in runs:
                            output = (Path(work) / f"{model}-{hop_frames}-{implementation}.npy"
                                      if threads == 1 and not repeat else None)
                            result = run_measurement(dict(
                                reference=str(args.reference.resolve()), model=model,
                                implementation=implementation, threads=threads,
                                hop_frames=hop_frames, input=str(source), cold=args.cold,
                                output=str(output) if output else None))
                            print(f"  {model} hop {hop_frames} threads {threads} "
                                  f"{implementation}: RTF {result['rtf']:.3f}",
                                  file=sys.stderr, flush=True)
                            runs[implementation].append(result)
                            if output:
                                outputs.setdefault((model, result["hop_ms"]), {})[
                                    implementation] = output
                    for implementation, results in runs.items():
                        ratios = [result["rtf"] / reference["rtf"]
                                  for result, reference in zip(results, runs["reference"])]
                        rows.append((model, threads, implementation, median_run(results),
                                     float(np.median(ratios))))
        matches = compare(outputs) if outputs else ["(no 1-thread run: outputs not compared)"]
    offline = "" if args.cold else "the model offline over the input, then "
    print(f"\n{args.seconds:g} s of noisy speech ({NOISY_SPEECH}), fed one hop per call; "
          f"random weights; warm-up: {offline}{WARM_UP_S:g} s streamed\n")
    if args.repeat > 1:
        print(f"Each row: the run with the median RTF of {args.repeat}, the implementations "
              "alternating in rounds; RTF / reference: the median over the rounds of the RTF "
              "divided by the reference's in the same round\n")
    else:
        print("RTF / reference: the RTF divided by the reference's\n")
    print("| model | hop ms | threads | implementation | RTF | RTF / reference "
          "| hop compute p50 / p99 / max ms | algorithmic latency ms | measured latency ms "
          "| dropouts |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for model, threads, implementation, r, ratio in rows:
        print(f"| {model} | {r['hop_ms']:g} | {threads} | {implementation} | {r['rtf']:.3f} "
              f"| {ratio:.3f} "
              f"| {r['hop_p50_ms']:.2f} / {r['hop_p99_ms']:.2f} / {r['hop_max_ms']:.2f} "
              f"| {r['latency_ms']:.1f} | {r['latency_ms'] + r['hop_p99_ms']:.1f} "
              f"| {r['late']} / {r['hops']} |")
    print("\n".join(goal_lines(rows)))
    print("\nOutputs on the 1-thread runs (fed, then flushed):\n")
    print("\n".join(matches))
    print(f"\nTotal wall time: {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
