"""Full-band output at 48 kHz: what the band handling does on its own.

DEMUCS works at 16 kHz; on a 48 kHz file `denoise` restores the band above
the model's reach from the input through the model's gain (`--band-limit`
turns that off). The official weights cannot be downloaded here, so this
measures the band handling with two stand-in 16 kHz backends on real speech
(Valentini p286, 48 kHz) in real crowd noise at 10 dB SNR:

  unchanged  returns its input: the output should be the input, band by band
  oracle     returns the clean speech: the upper band should come back at
             the clean speech's level, and the 16 kHz band should score no
             worse (PESQ wb, STOI) than with the plain path

    python bench/full_band.py
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.pairs import default_bench_data, load_mono, mix_at_snr  # noqa: E402
from denoise.engine import Batch, BatchOptions, backends, plan_jobs  # noqa: E402
from denoise.engine.dsp import resample  # noqa: E402
from denoise.engine.metrics import pesq_score, stoi_score  # noqa: E402

BANDS_HZ = ((4000, 6000), (6000, 7200), (7200, 8000), (8000, 12000), (12000, 24000))


@dataclass(frozen=True)
class ProbeOptions:
    clean: str | None = None  # the clean recording, for the oracle

    def describe(self) -> dict[str, str]:
        return {"oracle": self.clean or "no"}


class BandProbe:
    """A 16 kHz backend that returns its input, or with ``clean`` the clean
    recording (an oracle); single-chunk files only."""

    Options = ProbeOptions
    name = "band-probe"
    sample_rate = 16000
    segment_s = 3600.0
    compute_s_per_audio_s = 0.001
    owns_gain_floor = False
    needs_file_std = False
    level_range_dbfs = None
    causal = False

    def __init__(self, options: ProbeOptions):
        self.clean = None
        if options.clean:
            clean, rate = sf.read(options.clean, dtype="float32")
            self.clean = resample(torch.from_numpy(clean), rate, 16000)

    def context_samples(self, sample_rate: int) -> tuple[int, int]:
        return 0, 0

    def alignment(self, sample_rate: int) -> int:
        return 1

    def chunks_per_call(self, chunk_s: float) -> int:
        return 1

    def prepare(self) -> None:
        pass

    def enhance(self, audio, sample_rate, file_std=None):
        if self.clean is None:
            return audio
        return self.clean[: audio.shape[-1]].expand_as(audio).clone()


def enhance_file(source: Path, out: Path, clean: str | None = None,
                 full_band: bool = True) -> np.ndarray:
    """``source`` through :class:`BandProbe` to a float file; returns it."""
    jobs = plan_jobs([str(source)], str(out), overwrite=True).jobs
    backends.REGISTRY[BandProbe.name] = f"{__name__}:BandProbe"
    try:
        batch = Batch(jobs, BatchOptions(method=BandProbe.name, jobs=1, subtype="FLOAT",
                                         full_band=full_band, backend_options={"clean": clean}))
        results = list(batch.run())
    finally:
        del backends.REGISTRY[BandProbe.name]
    if [result.status for result in results] != ["done"]:
        raise RuntimeError(f"{source}: {results}")
    return sf.read(str(out), dtype="float32")[0]


def band_db(signal: np.ndarray, rate: int, low: float, high: float) -> float:
    """Energy of ``signal`` between ``low`` and ``high`` Hz, in dB."""
    spectrum = np.abs(np.fft.rfft(signal, axis=0)) ** 2
    freqs = np.fft.rfftfreq(len(signal), 1 / rate)
    return float(10 * np.log10(spectrum[(freqs >= low) & (freqs < high)].sum() + 1e-30))


def noisy_pair(bench_data: Path, folder: Path) -> int:
    """``folder/clean.wav`` and ``folder/noisy.wav``; returns the rate."""
    rate = 48000
    speech = load_mono(bench_data / "valentini_p286__iver56_audiomentations" / "p286_011.wav",
                       rate)
    noise = load_mono(bench_data / "freesound_noise__IBM_MAX-Audio-Classifier"
                      / "crowd_cheering.wav", rate)
    clean, noisy = mix_at_snr(speech, np.resize(noise, speech.shape), 10)
    sf.write(str(folder / "clean.wav"), 0.5 * clean, rate, subtype="FLOAT")
    sf.write(str(folder / "noisy.wav"), 0.5 * noisy, rate, subtype="FLOAT")
    return rate


def scores_16k(clean: np.ndarray, signal: np.ndarray, rate: int) -> tuple[float, float]:
    """PESQ (wide-band) and STOI of ``signal`` against ``clean``, at 16 kHz."""
    reference, estimate = (resample(x.astype(np.float64), rate, 16000) for x in (clean, signal))
    return pesq_score(reference, estimate, 16000), stoi_score(reference, estimate, 16000)


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        rate = noisy_pair(default_bench_data(), folder)
        noisy = sf.read(str(folder / "noisy.wav"), dtype="float32")[0]
        clean = sf.read(str(folder / "clean.wav"), dtype="float32")[0]
        oracle = str(folder / "clean.wav")
        outputs = {
            "unchanged, full band": enhance_file(folder / "noisy.wav", folder / "a.wav"),
            "unchanged, --band-limit": enhance_file(folder / "noisy.wav", folder / "b.wav",
                                                    full_band=False),
            "oracle, full band": enhance_file(folder / "noisy.wav", folder / "c.wav", oracle),
            "oracle, --band-limit": enhance_file(folder / "noisy.wav", folder / "d.wav", oracle,
                                                 full_band=False),
        }
    heading = " | ".join(f"{low / 1000:g}-{high / 1000:g} kHz" for low, high in BANDS_HZ)
    print("energy per band in dB relative to the input (unchanged) or the clean speech "
          "(oracle); 16 kHz scores against the clean speech\n")
    print(f"| output | {heading} | PESQ wb | STOI |")
    print("|---|" + "---|" * (len(BANDS_HZ) + 2))
    for name, signal in outputs.items():
        reference = noisy if name.startswith("unchanged") else clean
        levels = " | ".join(f"{band_db(signal, rate, low, high) - band_db(reference, rate, low, high):+.2f}"
                            for low, high in BANDS_HZ)
        pesq_wb, stoi_score = scores_16k(clean, signal, rate)
        print(f"| {name} | {levels} | {pesq_wb:.3f} | {stoi_score:.4f} |")
    print("| noisy input | " + " | ".join(
        f"{band_db(noisy, rate, low, high) - band_db(clean, rate, low, high):+.2f}"
        for low, high in BANDS_HZ) + " | %.3f | %.4f |" % scores_16k(clean, noisy, rate))


if __name__ == "__main__":
    main()
