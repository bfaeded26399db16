"""DNSMOS P.835: speech quality (SIG), background quality (BAK) and overall
quality (OVRL) on a 1-5 scale, predicted without a clean reference.

Reddy, Gopal and Cutler, "DNSMOS P.835", ICASSP 2022. The network is
Microsoft's ONNX model as shipped in the ``speechmos`` package, run with
onnxruntime (``pip install 'denoise-speech[dnsmos]'``); only the model file is used,
so neither librosa nor the package's other dependencies are needed. As in
Microsoft's ``dnsmos_local.py``: 16 kHz mono, 9.01 s windows every second
(a shorter file is repeated to fill one), each window's raw scores mapped by
the published polynomials, and the mapped scores averaged.

A window costs about 0.2 s on two cores, so a long file is scored on at
most ``MAX_WINDOWS`` windows spread evenly over it (every 9 s or so for a
10-minute file), read one at a time: memory stays small however long the file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import numpy as np
import soundfile as sf

from denoise.engine.errors import UsageError

RATE = 16_000
WINDOW = 144_160  # 9.01 s at 16 kHz, the model's input
HOP_S = 1.0
MAX_WINDOWS = 60
MIN_S = 1.0
# Raw model output -> P.835 MOS, non-personalised (np.polyval order).
FITS = {
    "sig": (-0.08397278, 1.22083953, 0.0052439),
    "bak": (-0.13166888, 1.60915514, -0.39604546),
    "ovrl": (-0.06766283, 1.11546468, 0.04602535),
}
SCORES = tuple(FITS)

_session = None


def check_available() -> None:
    """Raise a one-line :class:`UsageError` unless the extra is installed."""
    _model_session()


def _model_session():
    global _session
    if _session is None:
        try:
            import onnxruntime
            model = files("speechmos") / "dnsmos_models" / "sig_bak_ovr.onnx"
        except ImportError as error:
            raise UsageError(f"--dnsmos needs onnxruntime and speechmos ({error.name} is not "
                             f"installed): pip install 'denoise-speech[dnsmos]'") from None
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # its warnings are about the graph, not the user's audio
        _session = onnxruntime.InferenceSession(str(model), options,
                                                providers=["CPUExecutionProvider"])
    return _session


def window_starts(samples: int, sample_rate: int) -> list[int]:
    """Where the windows start, in samples of a signal at least one window
    long: every second while a whole window fits, as Microsoft scores, or
    ``MAX_WINDOWS`` spread evenly when that would be more."""
    every_second = int(math.floor(samples / sample_rate) - WINDOW / RATE) + 1
    if every_second <= MAX_WINDOWS:
        return [index * sample_rate for index in range(every_second)]
    last = samples - round(WINDOW * sample_rate / RATE)
    return [round(start) for start in np.linspace(0, last, MAX_WINDOWS)]


def dnsmos(path: str | Path) -> tuple[dict[str, float], str | None]:
    """``({"sig": .., "bak": .., "ovrl": ..}, None)`` for an audio file, or
    ``({}, reason)`` when it cannot be scored (too short, silent)."""
    session = _model_session()
    mapped = {name: [] for name in SCORES}
    heard = False
    for window in _windows(path):
        heard = heard or bool(np.any(window))
        raw = session.run(None, {"input_1": np.clip(window, -1, 1)[None]})[0][0]
        for name, value in zip(SCORES, raw):
            mapped[name].append(float(np.polyval(FITS[name], value)))
    if not mapped["sig"]:
        return {}, f"shorter than {MIN_S:g} s"
    if not heard:
        return {}, "silent"
    return {name: float(np.mean(values)) for name, values in mapped.items()}, None


def _windows(path: str | Path) -> Iterator[np.ndarray]:
    """The file's 16 kHz mono windows of ``WINDOW`` samples. A file shorter
    than a window is repeated, doubling, until it fills one, and windows are
    then taken every second of the repeated signal, as Microsoft's script does."""
    with sf.SoundFile(str(path)) as audio:
        sample_rate, samples = audio.samplerate, audio.frames
        if samples < MIN_S * sample_rate:
            return
        window = round(WINDOW * sample_rate / RATE)
        if samples < window:
            signal = _mono_16k(audio.read(dtype="float32", always_2d=True), sample_rate)
            while len(signal) < WINDOW:
                signal = np.concatenate([signal, signal])
            for start in window_starts(len(signal), RATE):
                yield signal[start:start + WINDOW]
            return
        for start in window_starts(samples, sample_rate):
            audio.seek(start)
            data = _mono_16k(audio.read(window, dtype="float32", always_2d=True), sample_rate)
            yield np.resize(data, WINDOW)  # resampling may leave a sample more or less


def _mono_16k(data: np.ndarray, sample_rate: int) -> np.ndarray:
    from denoise.engine.dsp import resample

    return resample(data.mean(axis=1), sample_rate, RATE)
