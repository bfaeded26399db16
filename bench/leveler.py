"""The leveler on a conversation of real speech: how even the turns come
out, and what the pauses get.

Two speakers of the shared recordings (VCTK p225 and p226, each brought to
the same active speech level, ITU-T P.56) take turns of 5 to 15 s of
their utterances, the second ``--gap`` dB below the first (0 dB: an even
conversation), over a real room noise (the running tap of the shared
noises, 35 dB below the louder voice), at 16 kHz. Each is run
through ``denoise --preset podcast`` with and without ``--no-leveler``.

Per turn: its loudness (ITU-R BS.1770-4, integrated over the turn) in and
out, and how far it lies from the median turn. Per pause (the silence
between a turn's utterances and between turns, at least 0.3 s): the gain
the leveler gave it against the gains of the turns either side (each the
output with the leveler over the output without it, so the loudness
target's gain cancels).

    python bench/leveler.py [--gap 12] [--seconds 90] [--seeds 1,2,3,4] [--plot leveler.png]
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16000
NOISE_BELOW_DB = 35.0
PAUSE_S = 0.3


def bench_data() -> Path:
    return Path(os.environ.get("DENOISE_BENCH_DATA",
                               Path(__file__).resolve().parents[2] / "shared" / "bench-data"))


@dataclass
class Conversation:
    signal: np.ndarray  # float32 at RATE
    turns: list[tuple[int, int, int]]  # (start, stop, speaker)
    pauses: list[tuple[int, int]]  # silent spans of the clean speech


def conversation(gap_db: float, seconds: float = 90.0, data: Path | None = None,
                 seed: int = 1, noise: bool = True) -> Conversation:
    """Two speakers in turns, the second ``gap_db`` below the first."""
    from denoise.engine.level import speech_levels

    data = data or bench_data()
    rng = np.random.default_rng(seed)
    voices = []
    for speaker in ("p225", "p226"):
        utterances = [sf.read(name, dtype="float32")[0] for name in
                      sorted(glob.glob(str(data / f"vctk__auspicious3000_autovc/{speaker}/*.wav")))]
        level = speech_levels([np.concatenate(utterances)[None]], RATE, 1)[0]
        voices.append([u * 10 ** ((-26.0 - level) / 20) for u in utterances])
    parts, turns, position, used = [], [], 0, [0, 0]
    speaker = 0
    while position < seconds * RATE:
        length = rng.uniform(5.0, 15.0) * RATE
        start = position
        while position - start < length:
            utterance = voices[speaker][used[speaker] % len(voices[speaker])]
            used[speaker] += 1
            parts.append(utterance * (10 ** (-gap_db / 20) if speaker else 1.0))
            position += len(utterance)
        turns.append((start, position, speaker))
        speaker = 1 - speaker
    clean = np.concatenate(parts)
    signal = clean.copy()
    if noise:
        tap, rate = sf.read(data / "cmu_arctic_and_speechcommands_noise__LCAV_pyroomacoustics"
                                   "/running_tap.wav", dtype="float32")
        assert rate == RATE
        tap = np.resize(tap, len(clean))
        signal += tap / np.sqrt(np.mean(tap**2)) * 10 ** ((-26.0 - NOISE_BELOW_DB) / 20)
    return Conversation(signal.astype(np.float32), turns, _silences(clean))


def _silences(clean: np.ndarray) -> list[tuple[int, int]]:
    """Spans of at least ``PAUSE_S`` where the clean speech is 50 dB under its
    peak (10 ms frames)."""
    frame = RATE // 100
    count = len(clean) // frame
    power = np.mean(clean[: count * frame].reshape(count, frame) ** 2, axis=1)
    quiet = power < power.max() * 1e-5
    edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]])))
    return [(start * frame, stop * frame) for start, stop in zip(edges[::2], edges[1::2])
            if (stop - start) * frame >= PAUSE_S * RATE]


def loudness(signal: np.ndarray) -> float:
    from denoise.engine.metrics import LoudnessMeter

    meter = LoudnessMeter(RATE, 1)
    meter.add(signal[:, None])
    return meter.loudness()[0]


def gain_db(with_it: np.ndarray, without: np.ndarray, span: tuple[int, int]) -> float:
    start, stop = span
    return 10 * np.log10(np.mean(with_it[start:stop] ** 2) / np.mean(without[start:stop] ** 2))


def run_denoise(signal: np.ndarray, *options: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "talk.wav", Path(folder) / "out.wav"
        sf.write(source, signal, RATE, subtype="FLOAT")
        subprocess.run([sys.executable, "-m", "denoise.cli", str(source), "-o", str(target),
                        "-q", "--subtype", "FLOAT", *options], check=True)
        return sf.read(target, dtype="float32")[0]


@dataclass
class Evenness:
    spread_in: float  # the worst turn's distance from the median turn, LU
    spread_out: float
    span_in: float  # loudest turn less quietest
    span_out: float
    pause_excess_db: float  # the most a pause got above the more-boosted turn beside it
    moved_lu: float  # the most a turn moved against the median turn's move


def evenness(talk: Conversation, levelled: np.ndarray, plain: np.ndarray) -> Evenness:
    turn_in = np.array([loudness(talk.signal[a:b]) for a, b, _ in talk.turns])
    turn_out = np.array([loudness(levelled[a:b]) for a, b, _ in talk.turns])
    turn_plain = np.array([loudness(plain[a:b]) for a, b, _ in talk.turns])
    turn_gain = [gain_db(levelled, plain, (a, b)) for a, b, _ in talk.turns]
    excess = -np.inf
    for start, stop in talk.pauses:
        around = [g for (a, b, _), g in zip(talk.turns, turn_gain)
                  if a <= start < b or a < stop <= b or b == start or a == stop]
        if around:
            excess = max(excess, gain_db(levelled, plain, (start, stop)) - max(around))
    moved = turn_out - turn_plain
    return Evenness(float(np.abs(turn_in - np.median(turn_in)).max()),
                    float(np.abs(turn_out - np.median(turn_out)).max()),
                    float(np.ptp(turn_in)), float(np.ptp(turn_out)), float(excess),
                    float(np.abs(moved - np.median(moved)).max()))


def plot(talk: Conversation, levelled: np.ndarray, plain: np.ndarray, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = RATE // 2
    def short_term(signal):  # BS.1770 short-term loudness (3 s), every 0.5 s
        return [loudness(signal[max(0, i - 3 * RATE): i]) if i >= RATE else np.nan
                for i in range(step, len(signal), step)]
    times = np.arange(step, len(talk.signal), step) / RATE
    figure, axis = plt.subplots(figsize=(10, 3.2))
    axis.plot(times, short_term(plain), label="--preset podcast --no-leveler", color="#999")
    axis.plot(times, short_term(levelled), label="--preset podcast", color="#c33")
    for start, stop, speaker in talk.turns:
        if speaker:
            axis.axvspan(start / RATE, stop / RATE, color="#eef", zorder=0)
    axis.set_xlabel("seconds (shaded: the quieter speaker's turns)")
    axis.set_ylabel("short-term loudness, LUFS")
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gap", type=float, default=None,
                        help="one conversation with this gap (default: 12 and 0 dB)")
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--seeds", default="1,2,3,4",
                        help="conversations: each seed draws other turn lengths")
    parser.add_argument("--plot", help="a loudness-over-time picture of the first conversation")
    args = parser.parse_args()
    print("| second voice below the first | seed | turns | worst turn from the median, in / out (LU) "
          "| loudest less quietest turn, in / out | most a pause got above the turns around it "
          "| most a turn moved against the others |")
    print("|---|---|---|---|---|---|---|")
    cases = [(gap, int(seed)) for gap in ([args.gap] if args.gap is not None else [12.0, 0.0])
             for seed in args.seeds.split(",")]
    for index, (gap, seed) in enumerate(cases):
        talk = conversation(gap, args.seconds, seed=seed)
        levelled = run_denoise(talk.signal, "--preset", "podcast")
        plain = run_denoise(talk.signal, "--preset", "podcast", "--no-leveler")
        found = evenness(talk, levelled, plain)
        print(f"| {gap:g} dB | {seed} | {len(talk.turns)} | {found.spread_in:.1f} / {found.spread_out:.1f} "
              f"| {found.span_in:.1f} / {found.span_out:.1f} | {found.pause_excess_db:+.1f} dB "
              f"| {found.moved_lu:.1f} LU |", flush=True)
        if args.plot and index == 0:
            plot(talk, levelled, plain, args.plot)


if __name__ == "__main__":
    main()
