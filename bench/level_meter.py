"""Which speech level should the level stage use: ITU-T P.56's active level
over the whole file (what engine/level.py does), or P.56 over the regions
Silero VAD calls speech (a candidate, built here and not in the engine)?

Two measurements on the shared pairs (bench/pairs.py):

1. Level error: each meter on the noisy file against P.56 on its clean
   speech (dB; the pairs are trimmed utterances, speech nearly throughout).
2. A loud sound before quiet speech (a field recorder with headroom, then a
   door, applause, a music sting): 4 s of real applause at -12 dBFS RMS, then
   the pair scaled down by LEVEL dB; ``denoise dfn3`` with each meter, STOI
   of the speech part against the clean speech, and how many files end below
   their input's STOI (0.005 of slack).

The candidate's detector sees the signal through a slow boost (trailing
0.5 s power brought up toward -30 dBFS, at most +40 dB, never cut): Silero's
recall falls to 0.76 at -66 dBFS speech without it.

    python bench/level_meter.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import denoise.engine.pipeline as pipeline  # noqa: E402
from bench.pairs import NOISES, build_pairs, default_bench_data, load_mono, random_segment  # noqa: E402
from denoise.engine import enhance_array, level  # noqa: E402
from denoise.engine.metrics import stoi_score  # noqa: E402
from denoise.engine.vad import WINDOW_S, VoiceActivity, speech_regions  # noqa: E402

RATE = 16000
EVENT_S = 4.0
EVENT_DBFS = -12.0
DETECTOR_TARGET_DBFS = -30.0
DETECTOR_MAX_BOOST_DB = 40.0
DETECTOR_TRAIL_S = 0.5
MIN_SPEECH_S = 1.0  # less found: the whole file's P.56 level
STOI_SLACK = 0.005
whole_file_levels = level.speech_levels


def detector_input(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """``[n]`` with every 32 ms window boosted by the trailing power's
    shortfall from the target."""
    window = round(WINDOW_S * sample_rate)
    count = len(x) // window
    powers = np.square(x[: count * window].astype(np.float64)).reshape(count, window).mean(1)
    trail = max(1, round(DETECTOR_TRAIL_S / WINDOW_S))
    cumulative = np.concatenate([[0.0], np.cumsum(powers)])
    starts = np.maximum(np.arange(count) + 1 - trail, 0)
    trailing = (cumulative[1:] - cumulative[starts]) / (np.arange(count) + 1 - starts)
    boost_db = np.clip(DETECTOR_TARGET_DBFS - 10 * np.log10(np.maximum(trailing, 1e-20)),
                       0, DETECTOR_MAX_BOOST_DB)
    gains = np.repeat(10 ** (boost_db / 20), window)
    return np.concatenate([x[: count * window] * gains, x[count * window:]]).astype(np.float32)


def speech_region_levels(blocks, sample_rate: int, channels: int) -> np.ndarray:
    """P.56's active level over the frames inside Silero's speech regions."""
    signal = np.concatenate([np.asarray(b, np.float64) for b in blocks], axis=-1)
    meter = level.FrameMeter(sample_rate, channels)
    envelopes, energies = meter.feed(signal)
    levels = []
    for c in range(channels):
        activity = VoiceActivity(sample_rate, 1)
        activity.add(detector_input(signal[c], sample_rate)[None])
        speech = speech_regions(activity.probability()[0])
        frames = np.arange(envelopes.shape[-1])
        inside = (speech[np.minimum(((frames + 0.5) * level.FRAME_S / WINDOW_S).astype(int),
                                    len(speech) - 1)] if len(speech) else frames < 0)
        if inside.sum() * level.FRAME_S < MIN_SPEECH_S:
            levels.append(whole_file_levels([signal[c:c + 1]], sample_rate, 1)[0])
        else:
            levels.append(level.active_level_db(envelopes[c][inside], energies[c][inside],
                                                meter.frame_samples))
    return np.array(levels)


METERS = {"P.56, whole file": whole_file_levels, "P.56 in speech regions": speech_region_levels}


def main() -> None:
    data = default_bench_data()
    pairs = build_pairs(data)
    clean_levels = np.array([whole_file_levels([p.clean[None]], RATE, 1)[0] for p in pairs])
    input_stois = [stoi_score(p.clean, p.noisy, RATE) for p in pairs]
    print(f"{len(pairs)} pairs\n\n| meter | level error, mean (dB) | mean absolute | sd |\n|---|---|---|---|")
    for name, meter in METERS.items():
        errors = np.array([meter([p.noisy[None]], RATE, 1)[0] for p in pairs]) - clean_levels
        print(f"| {name} | {errors.mean():+.2f} | {np.abs(errors).mean():.2f} | {errors.std():.2f} |")
    applause = load_mono(data / NOISES[1].path)
    print("\n| meter | speech level | STOI | lowest | files below the input's STOI |\n|---|---|---|---|---|")
    for name, meter in METERS.items():
        pipeline.speech_levels = meter
        for level_db in (0, -20, -30, -40):
            rng = np.random.default_rng(1)
            scale = 10 ** (level_db / 20)
            scores, below = [], 0
            for pair, input_stoi in zip(pairs, input_stois):
                event = random_segment(applause, round(EVENT_S * RATE), rng)
                event = event * 10 ** (EVENT_DBFS / 20) / np.sqrt(np.mean(np.square(event)))
                x = np.concatenate([event, pair.noisy * scale]).astype(np.float32)
                enhanced = np.asarray(enhance_array(x, RATE, method="dfn3"))[len(event):] / scale
                score = stoi_score(pair.clean, enhanced, RATE)
                scores.append(score)
                below += score < input_stoi - STOI_SLACK
            print(f"| {name} | {level_db:+d} dB | {np.mean(scores):.3f} | {np.min(scores):.3f} | "
                  f"{below} of {len(pairs)} |", flush=True)
    pipeline.speech_levels = whole_file_levels


if __name__ == "__main__":
    main()
