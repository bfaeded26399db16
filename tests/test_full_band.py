"""Full-band output for a backend that works at 16 kHz on 44.1/48 kHz files:
the crossover adds no level or phase error, the upper band comes back at the
clean speech's level, and the 16 kHz band scores no worse than the plain path.
The stand-in backends and the measurements are the bench's (bench/full_band.py)."""

import numpy as np
import pytest
import soundfile as sf

from bench.full_band import band_db, enhance_file, noisy_pair, scores_16k


@pytest.fixture
def pair(bench_data, tmp_path):
    return tmp_path, noisy_pair(bench_data, tmp_path)


def test_an_unchanging_backend_gives_the_input_back_across_the_crossover(pair):
    folder, rate = pair
    noisy = sf.read(str(folder / "noisy.wav"), dtype="float32")[0]
    full = enhance_file(folder / "noisy.wav", folder / "full.wav")
    plain = enhance_file(folder / "noisy.wav", folder / "plain.wav", full_band=False)
    assert full.shape == noisy.shape
    for low, high in ((4000, 5000), (5500, 6500), (6500, 7500), (7500, 8500), (8500, 12000),
                      (12000, 24000)):
        assert band_db(full, rate, low, high) == pytest.approx(
            band_db(noisy, rate, low, high), abs=0.5), (low, high)
    error = 10 * np.log10(np.sum(noisy**2) / np.sum((full - noisy) ** 2))
    assert error > 25  # no phase error either: the difference is 25 dB down
    assert band_db(plain, rate, 9000, 24000) < band_db(noisy, rate, 9000, 24000) - 20


def test_upper_band_comes_back_at_the_clean_level_without_hurting_the_16k_scores(pair):
    folder, rate = pair
    clean = sf.read(str(folder / "clean.wav"), dtype="float32")[0]
    oracle = str(folder / "clean.wav")
    full = enhance_file(folder / "noisy.wav", folder / "full.wav", oracle)
    plain = enhance_file(folder / "noisy.wav", folder / "plain.wav", oracle, full_band=False)
    clean_high = band_db(clean, rate, 8000, 24000)
    assert band_db(full, rate, 8000, 24000) == pytest.approx(clean_high, abs=3)
    assert band_db(plain, rate, 8000, 24000) < clean_high - 15  # the dull plain path
    full_pesq, full_stoi = scores_16k(clean, full, rate)
    plain_pesq, plain_stoi = scores_16k(clean, plain, rate)
    assert full_pesq >= plain_pesq - 0.05 and full_stoi >= plain_stoi - 0.005
