"""Deterministic noisy/clean speech pairs for the quality bench, at 16 kHz mono.

Synthetic pairs mix real clean speech (VCTK, CMU ARCTIC, LibriSpeech) with real
recorded noise at 0, 5 and 10 dB SNR. The SNR is measured over the whole
trimmed utterance (speech power / noise power over the same span). Every noise
file is used once at each SNR; two thirds of the noise files are non-stationary
(music, applause, crowd, typing, dishes, snoring), because that is where simple
stationary-noise suppressors fail and where we most need to measure.

Real pairs (Valentini p287 and the python-pesq babble pair) are appended
unchanged, as a check that the synthetic mixtures do not flatter any method.

Run as a script to write the pairs as WAV files for listening:

    python bench/pairs.py --out /tmp/pairs
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf

from denoise.engine.dsp import resample

SAMPLE_RATE = 16000
SNRS_DB = (0.0, 5.0, 10.0)
MIN_UTTERANCE_S = 2.0
MAX_UTTERANCE_S = 6.0
PEAK_LIMIT = 0.99
BENCH_DATA_ENV = "DENOISE_BENCH_DATA"

_ARCTIC = "cmu_arctic_and_speechcommands_noise__LCAV_pyroomacoustics"
_FREESOUND = "freesound_noise__IBM_MAX-Audio-Classifier"
_LIBROSA = "librosa_data"
_VALENTINI = "valentini_train_p287__facebookresearch_denoiser"

CLEAN_GLOBS = (
    "vctk__auspicious3000_autovc/p22[56]/*.wav",
    f"{_ARCTIC}/*arctic_*.wav",
    "librispeech_ljspeech_ami_cv__lhotse/libri-*.wav",
    "librispeech_ljspeech_ami_cv__lhotse/2412-*.flac",
)


class NoiseSource(NamedTuple):
    """A real noise recording; `kind` is the row of the --per-kind breakdown."""

    kind: str
    label: str  # short name used in pair names
    path: str  # relative to bench-data


NOISES = (
    NoiseSource("music", "arcade", f"{_FREESOUND}/arcade_music.wav"),
    NoiseSource("applause", "applause", f"{_FREESOUND}/applause.wav"),
    NoiseSource("car", "car", f"{_FREESOUND}/car_engine.wav"),
    NoiseSource("crowd", "crowd", f"{_FREESOUND}/crowd_cheering.wav"),
    NoiseSource("typing", "typing", f"{_FREESOUND}/typing.wav"),
    NoiseSource("bike", "bike", f"{_ARCTIC}/exercise_bike.wav"),
    NoiseSource("music", "guitar", f"{_FREESOUND}/jazz_guitar.wav"),
    NoiseSource("dishes", "dishes", f"{_ARCTIC}/doing_the_dishes.wav"),
    NoiseSource("train", "train", f"{_FREESOUND}/train.wav"),
    NoiseSource("music", "piano", f"{_FREESOUND}/piano.wav"),
    NoiseSource("snoring", "snoring", f"{_FREESOUND}/snoring.wav"),
    NoiseSource("tap", "tap", f"{_ARCTIC}/running_tap.wav"),
    NoiseSource("music", "vibe-ace", f"{_LIBROSA}/Kevin_MacLeod_-_Vibe_Ace.hq.ogg"),
    NoiseSource("train", "train-interior", "ambient_noise__rafaelmardojai_blanket/train.ogg"),
    NoiseSource(
        "music",
        "strings",
        f"{_LIBROSA}/Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_"
        "(string_orchestra).hq.ogg",
    ),
)


@dataclass(frozen=True)
class Pair:
    """One bench item: a noisy signal and the clean speech it should become."""

    name: str
    noise_kind: str
    snr_db: float | None  # None for real recordings, whose SNR we do not control
    clean: np.ndarray  # float32, 1-D
    noisy: np.ndarray  # float32, 1-D, same length as clean
    sample_rate: int = SAMPLE_RATE


def default_bench_data() -> Path:
    """`$DENOISE_BENCH_DATA`, else the `shared/bench-data` folder beside the repo."""
    from_env = os.environ.get(BENCH_DATA_ENV)
    if from_env:
        return Path(from_env)
    return Path(__file__).resolve().parents[2] / "shared" / "bench-data"


@lru_cache(maxsize=None)
def load_mono(path: Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read any soundfile-readable file as float32 mono at `sample_rate`.

    Channels are averaged; cached because noise files are reused across pairs.
    """
    audio, file_rate = sf.read(path, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if file_rate != sample_rate:
        mono = resample(mono, file_rate, sample_rate)
    mono.setflags(write=False)
    return mono


def trim_silence(x: np.ndarray, sample_rate: int, floor_db: float = -40.0) -> np.ndarray:
    """Drop leading/trailing 20 ms frames quieter than `floor_db` below the loudest.

    Long silent edges would dilute the whole-utterance SNR and inflate scores.
    """
    frame = sample_rate // 50
    n_frames = len(x) // frame
    energy = (x[: n_frames * frame].reshape(n_frames, frame) ** 2).mean(axis=1)
    loud = np.flatnonzero(energy > energy.max() * 10 ** (floor_db / 10))
    margin = 5 * frame  # keep 100 ms around speech so onsets are not clipped
    start = max(loud[0] * frame - margin, 0)
    stop = min((loud[-1] + 1) * frame + margin, len(x))
    return x[start:stop]


def random_segment(x: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A `length`-sample window at a random offset; tiles `x` if it is too short.

    Retries a few offsets to avoid near-silent stretches (fades, pauses), which
    the SNR scaling would otherwise blow up into amplified hiss.
    """
    if len(x) < length:
        x = np.tile(x, length // len(x) + 1)
    for _ in range(10):
        start = int(rng.integers(0, len(x) - length + 1))
        segment = x[start : start + length]
        if np.sqrt(np.mean(segment**2)) > 1e-3:
            break
    return segment


def mix_at_snr(
    clean: np.ndarray, noise: np.ndarray, snr_db: float
) -> tuple[np.ndarray, np.ndarray]:
    """Scale `noise` to `snr_db` below `clean` (whole-signal powers) and add.

    Returns (clean, noisy), both scaled down together if the mix would clip,
    so the pair stays consistent.
    """
    speech_power = np.mean(clean.astype(np.float64) ** 2)
    noise_power = np.mean(noise.astype(np.float64) ** 2)
    gain = np.sqrt(speech_power / (noise_power * 10 ** (snr_db / 10)))
    noisy = clean + gain * noise
    peak = np.abs(noisy).max()
    scale = PEAK_LIMIT / peak if peak > PEAK_LIMIT else 1.0
    return (clean * scale).astype(np.float32), (noisy * scale).astype(np.float32)


def clean_utterances(bench_data: Path) -> list[Path]:
    """Sorted clean-speech files at 16 kHz, long enough once trimmed."""
    paths = sorted(p for pattern in CLEAN_GLOBS for p in bench_data.glob(pattern))
    if not paths:
        raise FileNotFoundError(
            f"no clean speech under {bench_data}; set {BENCH_DATA_ENV} or pass --bench-data"
        )
    min_samples = MIN_UTTERANCE_S * SAMPLE_RATE
    return [p for p in paths if len(trim_silence(load_mono(p), SAMPLE_RATE)) >= min_samples]


def synthetic_pairs(bench_data: Path, rng: np.random.Generator) -> list[Pair]:
    """Each noise file at each SNR once, with clean utterances cycled in shuffled order."""
    utterances = clean_utterances(bench_data)
    order = rng.permutation(len(utterances))
    pairs = []
    for index in range(len(SNRS_DB) * len(NOISES)):
        round_, noise_index = divmod(index, len(NOISES))
        noise_source = NOISES[noise_index]
        snr_db = SNRS_DB[(noise_index + round_) % len(SNRS_DB)]
        clean_path = utterances[order[index % len(utterances)]]
        speech = trim_silence(load_mono(clean_path), SAMPLE_RATE)
        speech = random_segment(speech, min(len(speech), int(MAX_UTTERANCE_S * SAMPLE_RATE)), rng)
        noise = random_segment(load_mono(bench_data / noise_source.path), len(speech), rng)
        clean, noisy = mix_at_snr(speech, noise, snr_db)
        name = f"{index:02d}_{clean_path.stem}_{noise_source.label}_{snr_db:g}dB"
        pairs.append(Pair(name, noise_source.kind, snr_db, clean, noisy))
    return pairs


def real_pairs(bench_data: Path) -> list[Pair]:
    """The recorded noisy/clean pairs, used as they are."""
    pairs = []
    for noisy_path in sorted((bench_data / _VALENTINI / "noisy").glob("*.wav")):
        clean_path = bench_data / _VALENTINI / "clean" / noisy_path.name
        name = f"valentini_{noisy_path.stem}"
        pairs.append(_real_pair(name, "valentini", clean_path, noisy_path))
    pesq_dir = bench_data / "pesq_pair__ludlows_python-pesq"
    babble = _real_pair(
        "pesq_babble_0dB", "babble", pesq_dir / "speech.wav", pesq_dir / "speech_bab_0dB.wav"
    )
    pairs.append(babble)
    return pairs


def _real_pair(name: str, kind: str, clean_path: Path, noisy_path: Path) -> Pair:
    clean, noisy = load_mono(clean_path), load_mono(noisy_path)
    length = min(len(clean), len(noisy))
    return Pair(name, kind, None, clean[:length].copy(), noisy[:length].copy())


def build_pairs(bench_data: Path, seed: int = 0, limit: int | None = None) -> list[Pair]:
    """All bench pairs, synthetic first then real; the same list for the same seed.

    `limit` keeps the first `limit` pairs (for quick runs).
    """
    pairs = synthetic_pairs(bench_data, np.random.default_rng(seed)) + real_pairs(bench_data)
    return pairs[:limit]


def write_pairs(pairs: list[Pair], out: Path) -> None:
    """Write `out/noisy/NAME.wav` and `out/clean/NAME.wav` (PCM_16) for listening."""
    for folder in ("noisy", "clean"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for pair in pairs:
        for folder, audio in (("noisy", pair.noisy), ("clean", pair.clean)):
            path = out / folder / f"{pair.name}.wav"
            sf.write(path, audio, pair.sample_rate, subtype="PCM_16")


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the bench's noisy/clean pairs.")
    parser.add_argument("--bench-data", type=Path, default=default_bench_data())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, help="write noisy/ and clean/ WAV folders here")
    args = parser.parse_args()
    pairs = build_pairs(args.bench_data, args.seed, args.limit)
    for pair in pairs:
        snr = "real" if pair.snr_db is None else f"{pair.snr_db:g} dB"
        duration_s = len(pair.clean) / pair.sample_rate
        print(f"{pair.name:40s} {pair.noise_kind:10s} {snr:>7s} {duration_s:5.2f} s")
    if args.out:
        write_pairs(pairs, args.out)
        print(f"wrote {len(pairs)} pairs to {args.out}")


if __name__ == "__main__":
    main()
