"""Repair on real speech: hum removal (how far each audible harmonic comes
down) and dereverberation (PESQ and STOI against the dry speech).

Clean speech of the shared recordings (VCTK p225 and p226, joined to a
minute at 16 kHz) gets a mains hum: 50 or 60 Hz, the fundamental drifting
±0.3 Hz over the minute (a sine), 8 harmonics (amplitudes 1/k) or a buzz
of 40 (1/sqrt k), its RMS 20 to 45 dB below the speech's active level
(ITU-T P.56). Each harmonic's amplitude is the coherent projection of a
signal on that harmonic's true phase track over the whole file; the
reduction is that of the hum (input less clean) over that of the residual
(output less clean). "plain notch" is what a notch that takes everything
on the track would reach: the hum over the clean speech's own projection
(the stage weights pauses over words, so it does better). "audible"
harmonics are those the detector finds.

Reverberation: the same speech (12 s) in a simulated shoebox room
(pyroomacoustics' image method, 6 x 5 x 3 m, the source 0.7 m from the
microphone, about the critical distance, so the direct-to-reverberant
ratio is near 0 dB at RT60 0.6 s), without noise and with a real noise
(the crowd, 10 dB below); scored against the dry speech delayed by the
direct path. "dry" rows: dereverberation of the dry speech, scored
against the output without it.

Hum and noise: 20 s of the same speech with a hum (50 Hz and 8 harmonics,
60 Hz and 40) 20 dB below it and the crowd 10 dB below it, the default
method with and without ``--dehum auto``.

Stream: the same hums through the causal stage of ``--stream`` and
``--live``, each harmonic scored from when its removal is complete.

    python bench/repair.py [--seconds 60] [--only hum|hum+noise|reverb|stream]
"""

from __future__ import annotations

import argparse
import glob
import os
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from denoise.engine import enhance_array
from denoise.engine.hum import find_hums, remove_hum
from denoise.engine.level import speech_levels
from denoise.engine.metrics import pesq_score

RATE = 16000
DRIFT_HZ = 0.3


def bench_data() -> Path:
    return Path(os.environ.get("DENOISE_BENCH_DATA",
                               Path(__file__).resolve().parents[2] / "shared" / "bench-data"))


def clean_speech(seconds: float, data: Path | None = None) -> np.ndarray:
    """VCTK utterances one after another, ``seconds`` long, at 16 kHz."""
    files = sorted(glob.glob(str((data or bench_data()) / "vctk__auspicious3000_autovc/p22[56]/*.wav")))
    parts, total = [], 0
    for name in files:
        samples, rate = sf.read(name, dtype="float32")
        assert rate == RATE, name
        parts.append(samples)
        total += len(samples)
        if total >= seconds * RATE:
            break
    return np.concatenate(parts)[: round(seconds * RATE)]


def mains_hum(samples: int, mains_hz: float, harmonics: int, seed: int = 0,
              start: int = 0, period_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A drifting hum of unit RMS (zero before ``start``) and its phase
    track; the drift's period is ``period_s`` (the signal's length)."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / RATE
    period_s = period_s or max(samples / RATE, 1.0)
    fundamental = mains_hz + DRIFT_HZ * np.sin(2 * np.pi * t / period_s + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(fundamental) / RATE
    hum = np.zeros(samples)
    for k in range(1, harmonics + 1):
        if k * (mains_hz + DRIFT_HZ) < 0.45 * RATE:
            amplitude = 1 / k if harmonics <= 8 else 1 / np.sqrt(k)
            hum += amplitude * np.cos(k * phase + rng.uniform(0, 2 * np.pi))
    hum[:start] = 0
    return hum / np.sqrt(np.mean(hum[start:] ** 2)), phase


def with_hum(clean: np.ndarray, relative_db: float, mains_hz: float, harmonics: int,
             start: int = 0, period_s: float | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``clean`` plus a hum ``relative_db`` below its active speech level:
    the sum (float32), the hum and its phase track."""
    hum, phase = mains_hum(len(clean), mains_hz, harmonics, start=start, period_s=period_s)
    level = speech_levels([clean[None]], RATE, 1)[0]
    hum = hum * 10 ** ((level + relative_db) / 20)
    return (clean + hum).astype(np.float32), hum, phase


def harmonic_amplitudes(signal: np.ndarray, phase: np.ndarray, harmonics) -> np.ndarray:
    """Each harmonic's amplitude in ``signal``: its coherent projection on
    the harmonic's phase track."""
    return np.array([2 * abs(np.mean(signal * np.exp(-1j * k * phase))) for k in harmonics])


def reductions_db(clean, noisy, out, hum, phase, harmonics) -> np.ndarray:
    return 20 * np.log10(harmonic_amplitudes(hum, phase, harmonics)
                         / harmonic_amplitudes(out - clean, phase, harmonics))


def room_response(rt60_s: float) -> np.ndarray:
    """A simulated room's impulse response at 16 kHz (see the docstring)."""
    import pyroomacoustics as pra

    dimensions = [6.0, 5.0, 3.0]
    absorption, order = pra.inverse_sabine(rt60_s, dimensions)
    room = pra.ShoeBox(dimensions, fs=RATE, materials=pra.Material(absorption), max_order=order)
    room.add_source([2.0, 3.0, 1.6])
    room.add_microphone([2.6, 2.65, 1.5])
    room.compute_rir()
    return np.asarray(room.rir[0][0])


def in_room(dry: np.ndarray, rt60_s: float, noise: np.ndarray | None = None,
            snr_db: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """``dry`` as heard in the room (and over ``noise``), and the reference
    it is scored against: the dry speech delayed by the direct path."""
    response = room_response(rt60_s)
    wet = np.convolve(dry, response)[: len(dry)]
    delay = int(np.argmax(np.abs(response)))
    reference = np.concatenate([np.zeros(delay), dry])[: len(dry)]
    if noise is not None:
        noise = np.resize(noise, len(wet))
        wet = wet + noise * np.sqrt(np.mean(wet**2) / np.mean(noise**2)) * 10 ** (-snr_db / 20)
    return wet.astype(np.float32), reference.astype(np.float32)


def crowd_noise(data: Path | None = None) -> np.ndarray:
    import torch

    from denoise.engine.dsp import resample
    samples, rate = sf.read((data or bench_data())
                            / "freesound_noise__IBM_MAX-Audio-Classifier/crowd_cheering.wav",
                            dtype="float32", always_2d=True)
    return resample(torch.from_numpy(samples.mean(axis=1)[None]), rate, RATE).numpy()[0]


def reverb_table() -> None:
    from denoise.engine.metrics import stoi_score

    dry = clean_speech(12.0)
    noise = crowd_noise()
    print("12 s of VCTK speech at 16 kHz in a simulated room; PESQ / STOI against the dry speech")
    print("| RT60 | noise | input | dfn3 | --dereverb 1 + dfn3 | change | seconds (WPE) |")
    print("|---|---|---|---|---|---|---|")
    for rt60_s in (0.3, 0.6, 1.0):
        for noisy in (None, noise):
            wet, reference = in_room(dry, rt60_s, noisy)
            started = time.perf_counter()
            dereverbed = enhance_array(wet, RATE, method="spectral", strength=0.0, dereverb=1.0)
            seconds = time.perf_counter() - started
            scores = []
            for signal in (wet, enhance_array(wet, RATE), enhance_array(dereverbed, RATE)):
                scores.append((pesq_score(reference, signal, RATE), stoi_score(reference, signal, RATE)))
            (pi, si), (p0, s0), (p1, s1) = scores
            print(f"| {rt60_s:g} s | {'crowd 10 dB' if noisy is not None else 'none'} | "
                  f"{pi:.2f} / {si:.3f} | {p0:.2f} / {s0:.3f} | {p1:.2f} / {s1:.3f} | "
                  f"{p1 - p0:+.2f} / {s1 - s0:+.3f} | {seconds:.1f} |", flush=True)
    alone = enhance_array(dry, RATE)
    both = enhance_array(dry, RATE, dereverb=1.0)
    wpe_only = enhance_array(dry, RATE, method="spectral", strength=0.0, dereverb=1.0)
    print(f"dry speech: --dereverb 1 + dfn3 against dfn3 PESQ {pesq_score(alone, both, RATE):.2f}; "
          f"dereverberation alone against the input {pesq_score(dry, wpe_only, RATE):.2f}")


def hum_and_noise_table(seconds: float) -> None:
    """Hum and a real noise together: the default method alone against
    ``--dehum auto`` before it."""
    from denoise.engine.metrics import stoi_score

    clean = clean_speech(seconds)
    noise = np.resize(crowd_noise(), len(clean))
    level = speech_levels([clean[None]], RATE, 1)[0]
    noise = noise / np.sqrt(np.mean(noise**2)) * 10 ** ((level - 10.0) / 20)
    print(f"{seconds:g} s of VCTK speech at 16 kHz, a hum 20 dB and the crowd 10 dB below it; "
          "PESQ / STOI against the clean speech; worst / median reduction of the harmonics "
          "the detector finds (the first 8 where it finds none)")
    print("| mains | harmonics | input | dfn3 | --dehum auto + dfn3 | reduction dfn3 "
          "| reduction --dehum auto + dfn3 |")
    print("|---|---|---|---|---|---|---|")
    for mains_hz, harmonics in ((50.0, 8), (60.0, 40)):
        with_both, hum, phase = with_hum(clean, -20.0, mains_hz, harmonics)
        noisy = (with_both + noise).astype(np.float32)
        found = find_hums(lambda: [noisy[None]], RATE, 1)[0]
        audible = found.harmonics if found is not None else np.arange(1, 9)
        cells = [f"{pesq_score(clean, noisy, RATE):.2f} / {stoi_score(clean, noisy, RATE):.3f}"]
        reductions = []
        for dehum in ("off", "auto"):
            out = enhance_array(noisy, RATE, dehum=dehum)
            cells.append(f"{pesq_score(clean, out, RATE):.2f} / {stoi_score(clean, out, RATE):.3f}")
            reduction = reductions_db(clean, noisy, out, hum, phase, audible)
            reductions.append(f"{reduction.min():.1f} / {np.median(reduction):.1f}")
        print(f"| {mains_hz:g} | {harmonics} | " + " | ".join(cells + reductions) + " |",
              flush=True)


def stream_table(seconds: float) -> None:
    """The causal stage of ``--stream`` and ``--live`` on the hums of the
    offline table, fed in blocks of 20 ms: when it finds the hum, how many
    of its harmonics it follows in the end, each one's reduction from the
    moment its removal is complete (it learns, then fades in) to the end,
    and the loudest line it takes out where the hum has none (speech's
    harmonics, found by chance), against the speech's active level."""
    from denoise.engine.hum_stream import HumCanceller

    clean = clean_speech(seconds)
    level = speech_levels([clean[None]], RATE, 1)[0]
    block = RATE // 50
    print(f"{seconds:g} s of VCTK speech at 16 kHz through the stream's hum stage, in blocks of "
          "20 ms; each followed harmonic's reduction (dB, coherent) from when its removal is "
          "complete")
    print("| mains | harmonics | hum below speech | found at | followed | reduction min / median "
          "| other lines taken out | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for mains_hz in (50.0, 60.0):
        for harmonics in (8, 40):
            for relative_db in (-20.0, -30.0, -45.0):
                noisy, hum, phase = with_hum(clean, relative_db, mains_hz, harmonics)
                canceller = HumCanceller(RATE, 1)
                started = time.perf_counter()
                out = np.concatenate([canceller.feed(noisy[None, at: at + block])[0]
                                      for at in range(0, len(noisy), block)])
                took = time.perf_counter() - started
                tracker = canceller.trackers[0]
                if tracker is None:
                    print(f"| {mains_hz:g} | {harmonics} | {-relative_db:g} dB | none | | | | "
                          f"{took:.1f} |")
                    continue
                reduction, others = [], []
                for harmonic, joined in zip(tracker.harmonics.astype(int), tracker.joined):
                    first = (round(canceller.found_at[0] * RATE + joined) + tracker.learn
                             + tracker.fade)
                    if harmonic <= harmonics:
                        reduction.append(reductions_db(clean[first:], noisy[first:],
                                                       out[first:], hum[first:], phase[first:],
                                                       [harmonic])[0])
                    else:
                        line = harmonic_amplitudes((out - noisy)[first:], phase[first:],
                                                   [harmonic])[0] / np.sqrt(2)
                        others.append(20 * np.log10(line + 1e-12) - level)
                other = f"{len(others)}, at most {max(others):.0f} dB" if others else "none"
                print(f"| {mains_hz:g} | {harmonics} | {-relative_db:g} dB | "
                      f"{canceller.found_at[0]:.0f} s | {len(reduction)} | "
                      f"{min(reduction):.1f} / {np.median(reduction):.1f} | {other} | "
                      f"{took:.1f} |", flush=True)
    canceller = HumCanceller(RATE, 1)
    untouched = np.concatenate([canceller.feed(clean[None, at: at + block])[0]
                                for at in range(0, len(clean), block)])
    print(f"clean speech alone: bit for bit {np.array_equal(untouched, clean)}")
    for relative_db, harmonics in ((None, 0), (-20.0, 40)):
        signal = clean if relative_db is None else with_hum(clean, relative_db, 60.0,
                                                            harmonics)[0]
        signal = resample_poly(signal, 3, 1).astype(np.float32)
        canceller, hop, longest, total = HumCanceller(3 * RATE, 1), 3 * RATE // 100, 0.0, 0.0
        for at in range(0, len(signal), hop):
            started = time.perf_counter()
            canceller.feed(signal[None, at: at + hop])
            took = time.perf_counter() - started
            longest, total = max(longest, took), total + took
        what = "no hum" if relative_db is None else f"60 Hz, {harmonics} harmonics"
        print(f"48 kHz, {what}: {total:.1f} s for {seconds:g} s ({100 * total / seconds:.1f} % "
              f"of a core), the longest 10 ms hop {1000 * longest:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--only", choices=("hum", "hum+noise", "reverb", "stream"))
    args = parser.parse_args()
    if args.only in (None, "reverb"):
        reverb_table()
    if args.only in (None, "hum+noise"):
        hum_and_noise_table(min(args.seconds, 20.0))
    if args.only in (None, "stream"):
        stream_table(args.seconds)
    if args.only not in (None, "hum"):
        return
    clean = clean_speech(args.seconds)
    print(f"{args.seconds:g} s of VCTK speech at 16 kHz; reduction of each audible harmonic "
          "(dB, coherent over the file)")
    print("| mains | harmonics | hum below speech | found | audible | reduction min / median "
          "| plain notch min | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for mains_hz in (50.0, 60.0):
        for harmonics in (8, 40):
            for relative_db in (-20.0, -30.0, -45.0):
                noisy, hum, phase = with_hum(clean, relative_db, mains_hz, harmonics)
                started = time.perf_counter()
                found = find_hums(lambda: [noisy[None]], RATE, 1)
                out = remove_hum(noisy[None], 0, found)[0]
                seconds = time.perf_counter() - started
                if found[0] is None:
                    print(f"| {mains_hz:g} | {harmonics} | {-relative_db:g} dB | none | | | | "
                          f"{seconds:.1f} |")
                    continue
                audible = found[0].harmonics
                reduction = reductions_db(clean, noisy, out, hum, phase, audible)
                bound = 20 * np.log10(harmonic_amplitudes(hum, phase, audible)
                                      / harmonic_amplitudes(clean, phase, audible))
                print(f"| {mains_hz:g} | {harmonics} | {-relative_db:g} dB | "
                      f"{found[0].fundamental_hz:.2f} Hz | {len(audible)} | "
                      f"{reduction.min():.1f} / {np.median(reduction):.1f} | {bound.min():.1f} | "
                      f"{seconds:.1f} |", flush=True)
    untouched = remove_hum(clean[None], 0, find_hums(lambda: [clean[None]], RATE, 1))[0]
    print(f"clean speech alone: bit for bit {np.array_equal(untouched, clean)}, "
          f"PESQ out vs in {pesq_score(clean, untouched, RATE):.2f}")


if __name__ == "__main__":
    main()
