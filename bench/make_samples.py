"""Make the short noisy recordings in `samples/` from bench-data, reproducibly.

Each sample exercises a different input path of `denoise`: a real noisy 16 kHz
recording, a 16 kHz mix with clicky non-stationary noise, a 44.1 kHz mix (needs
resampling) with crowd noise, and real archival stereo FLAC. Sources, SNRs and
licences are listed in `samples/README.md`; rerun this after changing them:

    python bench/make_samples.py            # writes <repo>/samples/
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # `bench` without installing

from bench.pairs import default_bench_data, load_mono, mix_at_snr, trim_silence  # noqa: E402

FREESOUND = "freesound_noise__IBM_MAX-Audio-Classifier"
SNR_DB = 5.0


def copy_valentini(bench_data: Path, out: Path) -> None:
    """A real noisy Valentini recording, byte for byte."""
    source = bench_data / "valentini_train_p287__facebookresearch_denoiser/noisy/p287_003.wav"
    shutil.copyfile(source, out / "valentini_p287_003_noisy_16k.wav")


def mix_sample(
    bench_data: Path,
    speech: str,
    noise: str,
    sample_rate: int,
    noise_start_s: float,
    max_s: float,
) -> np.ndarray:
    """Trimmed speech (at most `max_s`) plus the noise from `noise_start_s`, at SNR_DB.

    Both sources are brought to `sample_rate` mono first; returns the noisy mix.
    """
    clean = trim_silence(load_mono(bench_data / speech, sample_rate), sample_rate)
    clean = clean[: int(max_s * sample_rate)]
    start = int(noise_start_s * sample_rate)
    noise_part = load_mono(bench_data / noise, sample_rate)[start : start + len(clean)]
    _, noisy = mix_at_snr(clean, noise_part, SNR_DB)
    return noisy


def write_mixes(bench_data: Path, out: Path) -> None:
    """VCTK + typing at 16 kHz, LibriSpeech + crowd at 44.1 kHz, both mono PCM_16."""
    typing = mix_sample(
        bench_data,
        speech="vctk__auspicious3000_autovc/p225/p225_023.wav",
        noise=f"{FREESOUND}/typing.wav",
        sample_rate=16000,
        noise_start_s=0.0,
        max_s=12.0,
    )
    sf.write(out / "vctk_p225_023_typing_5dB_16k.wav", typing, 16000, subtype="PCM_16")
    crowd = mix_sample(
        bench_data,
        speech="librispeech_ljspeech_ami_cv__lhotse/2412-153948-0000.flac",
        noise=f"{FREESOUND}/crowd_cheering.wav",
        sample_rate=44100,
        noise_start_s=0.5,
        max_s=10.0,
    )
    sf.write(out / "librispeech_2412_crowd_5dB_44k.wav", crowd, 44100, subtype="PCM_16")


def write_jfk(bench_data: Path, out: Path) -> None:
    """The archival JFK recording, stereo 44.1 kHz, re-encoded 24 -> 16 bit to halve its size."""
    audio, sample_rate = sf.read(bench_data / "jfk__openai_whisper/jfk.flac", dtype="float32")
    sf.write(out / "jfk_inaugural_44k_stereo.flac", audio, sample_rate, subtype="PCM_16")


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the samples/ folder from bench-data.")
    parser.add_argument("--bench-data", type=Path, default=default_bench_data())
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "samples")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    copy_valentini(args.bench_data, args.out)
    write_mixes(args.bench_data, args.out)
    write_jfk(args.bench_data, args.out)
    for path in sorted(args.out.glob("*.*")):
        if path.suffix != ".md":
            info = sf.info(path)
            print(f"{path.name}: {info.samplerate} Hz, {info.channels} ch, {info.duration:.2f} s")


if __name__ == "__main__":
    main()
