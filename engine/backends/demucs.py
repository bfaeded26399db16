"""The DEMUCS backend: pretrained models, safe checkpoint loading, inference.

Pretrained models are a table (name, URL, architecture). A named model is
downloaded once over HTTPS from the official address into torch's hub cache
(``$TORCH_HOME/hub/checkpoints`` or ``$XDG_CACHE_HOME/torch/hub/checkpoints``,
where ``torch.hub`` and the original ``denoiser`` keep them too), under a
temporary name renamed when complete, and used offline afterwards.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain
containers only. Training packages name their model class; that one name is
mapped to an inert marker, so no code from a checkpoint ever runs.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import urllib.request
import zipfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from denoise.engine.audio_io import replacing
from denoise.engine.backends.demucs_model import Demucs
from denoise.engine.errors import FileError, UsageError

ROOT = "https://dl.fbaipublicfiles.com/adiyoss/denoiser/"


@dataclass(frozen=True)
class PretrainedModel:
    name: str
    file_name: str
    architecture: dict
    trained_on: str
    parameters_m: float

    @property
    def url(self) -> str:
        return ROOT + self.file_name

    @property
    def causal(self) -> bool:
        return self.architecture.get("causal", True)


PRETRAINED = {model.name: model for model in [
    PretrainedModel("dns48", "dns48-11decc9d8e3f0998.th", {"hidden": 48}, "DNS challenge",
                    18.9),
    PretrainedModel("dns64", "dns64-a7761ff99a7d5bb6.th", {"hidden": 64}, "DNS challenge",
                    33.5),
    PretrainedModel("master64", "master64-8a5dfb4bb92753dd.th", {"hidden": 64},
                    "DNS challenge and Valentini", 33.5),
    PretrainedModel("valentini_nc", "valentini_nc-93fc4337.th",
                    {"hidden": 64, "causal": False, "stride": 2, "resample": 2}, "Valentini",
                    60.8),
]}
SAMPLE_RATE = 16_000
# facebookresearch/denoiser's LICENSE covers its code and its released models.
OFFICIAL_LICENCE = ("the official DEMUCS weights are licensed CC BY-NC 4.0: "
                    "non-commercial use only")


class ModelError(UsageError):
    """The model cannot be had or loaded: the whole run stops (exit 2)."""


class _PickledClassName:
    """Stands in for ``denoiser.demucs.Demucs`` when a training package names
    it: unpickling yields this marker instead of importing anything."""


_CLASS_NAMES = ["denoiser.demucs.Demucs", "demucs.Demucs", "__main__.Demucs"]


def cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_path(name: str) -> Path:
    return cache_dir() / PRETRAINED[name].file_name


def download(name: str, on_progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Fetch the named model into the cache (once); returns its path.

    The hex suffix of the official file names looks like a SHA-256 prefix
    (torch.hub's convention); a mismatch is reported as a warning, since it
    cannot be confirmed that they are. The SHA-256 of what was downloaded is
    written beside the file (``.sha256``).
    """
    model = PRETRAINED[name]
    target = cached_path(name)
    if target.exists():
        return target
    digest = hashlib.sha256()
    try:
        with replacing(target) as temporary, open(temporary, "wb") as out, \
                urllib.request.urlopen(model.url, timeout=60) as src:
            total = int(src.headers.get("Content-Length") or 0) or None
            done = 0
            while block := src.read(1 << 20):
                out.write(block)
                digest.update(block)
                done += len(block)
                if on_progress is not None:
                    on_progress(done, total)
    except (OSError, FileError) as error:
        reason = getattr(error, "reason", None) or error
        raise ModelError(f"cannot download model {name} from {model.url} ({reason}); pass "
                         f"--weights PATH, or run `denoise --download-model {name}` on a "
                         "machine with network access and copy "
                         f"{target} into the same place here") from None
    sha256 = digest.hexdigest()
    Path(f"{target}.sha256").write_text(f"{sha256}  {target.name}\n")
    check_name_hash(target.name, sha256)
    return target


def check_name_hash(file_name: str, sha256: str) -> bool:
    """Warn when the file name's hex suffix is not a prefix of its SHA-256."""
    suffix = Path(file_name).stem.rsplit("-", 1)[-1]
    if sha256.startswith(suffix.lower()):
        return True
    warnings.warn(f"{file_name}: SHA-256 {sha256[:16]}... does not start with the name's "
                  f"suffix {suffix}; the official names may not follow torch.hub's convention",
                  stacklevel=2)
    return False


def read_checkpoint(path: Path, mmap: bool = False) -> tuple[dict, dict | None]:
    """(state_dict, architecture from the file or None) from ``path``; with
    ``mmap`` the tensors are mapped, not read (for the architecture alone)."""
    try:
        with torch.serialization.safe_globals(
                [(_PickledClassName, name) for name in _CLASS_NAMES]):
            package = torch.load(path, map_location="cpu", weights_only=True,
                                 mmap=mmap and zipfile.is_zipfile(path))
    except FileNotFoundError:
        raise ModelError(f"{path}: no such checkpoint file") from None
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError...
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "weights_only" in str(error) or "Unsupported global" in str(error):
            raise ModelError(f"{path}: refused: the checkpoint needs arbitrary code to load "
                             f"({first_line}); only plain state_dicts and training packages "
                             "of tensors are read") from None
        raise ModelError(f"{path}: not a readable checkpoint ({first_line})") from None
    if not isinstance(package, dict):
        raise ModelError(f"{path}: not a checkpoint (a {type(package).__name__}, not a dict)")
    if "model" in package and isinstance(package["model"], dict):
        model = dict(package["model"])
        if "best_state" in package:
            model["state"] = package["best_state"]
        package = model
    if "state" in package and "kwargs" in package:
        return package["state"], dict(package["kwargs"])
    return package, None


def read_architecture(path: Path) -> dict | None:
    """The architecture a checkpoint states (a training package's
    ``kwargs``), read with its tensors mapped, not loaded; ``None`` for a
    plain state_dict."""
    return read_checkpoint(path, mmap=True)[1]


def _known(architecture: dict) -> dict:
    """The architecture's arguments that :class:`Demucs` takes (training
    packages carry others, such as the sample rate's name in the trainer)."""
    known = inspect.signature(Demucs).parameters
    return {key: value for key, value in architecture.items() if key in known}


def build_model(state: dict, architecture: dict, source: str) -> Demucs:
    """A :class:`Demucs` with ``state`` loaded strictly, in eval mode."""
    kwargs = _known(architecture)
    try:
        # Every weight comes from the checkpoint: build without memory or
        # initialisation (0.25 s for dns64), then take the checkpoint's tensors.
        with torch.device("meta"):
            model = Demucs(**{**kwargs, "rescale": 0})
        # Assigned tensors keep their dtype; half-precision checkpoints exist.
        state = {name: value.float() if torch.is_tensor(value) and value.is_floating_point()
                 else value for name, value in state.items()}
        model.load_state_dict(state, strict=True, assign=True)
    except (RuntimeError, TypeError, ValueError) as error:
        detail = " ".join(str(error).split())
        if len(detail) > 300:
            detail = detail[:300] + "..."
        raise ModelError(f"{source}: weights do not fit the DEMUCS architecture {kwargs} "
                         f"({detail})") from None
    return model.eval()


def load_model(model_name: str, weights: Path | None = None) -> Demucs:
    """The named pretrained model, or the local ``weights`` file (whose own
    architecture wins; ``model_name`` gives it for a plain state_dict)."""
    if model_name not in PRETRAINED:
        raise ModelError(f"unknown model {model_name!r}; choose from {', '.join(PRETRAINED)}")
    path = Path(weights) if weights is not None else cached_path(model_name)
    if weights is None and not path.exists():
        path = download(model_name)
    state, architecture = read_checkpoint(path)
    return build_model(state, architecture or PRETRAINED[model_name].architecture, str(path))


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise UsageError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device} asked for, but CUDA is not available here")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"device {device} asked for, but there are "
                         f"{torch.cuda.device_count()} CUDA devices")
    return resolved


@dataclass(frozen=True)
class DemucsOptions:
    """Settings of the DEMUCS backend.

    Args:
        model: a pretrained model name (``PRETRAINED``); with ``weights``, the
            architecture to use when the file is a plain state_dict.
        weights: a local checkpoint instead of the named model's download.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        warmup_s: real signal fed before each chunk and discarded, so that the
            LSTM state has settled as it would have in a whole-file run.
        stream_fp16: streams (:meth:`DemucsBackend.stream`) keep the large
            weight matrices in float16 (:class:`~.demucs_stream.Matrix`),
            and torch runs on one thread; files are always enhanced in float32.
    """

    model: str = "dns48"
    weights: Path | None = None
    device: str = "cpu"
    warmup_s: float = 3.0
    stream_fp16: bool = False

    def describe(self) -> dict[str, str]:
        """These settings as a person reads them."""
        text = {"model": str(self.weights or self.model), "device": self.device}
        if self.weights is None:
            text["model licence"] = "CC BY-NC 4.0 (non-commercial use only)"
        return text


class DemucsBackend:
    """DEMUCS at 16 kHz; chunks are normalised by the whole file's deviation.

    The network's shape comes from the pretrained table (or the checkpoint's
    own, read without its tensors); its weights load on the first
    :meth:`enhance`, downloading a pretrained model then if it is not cached.
    """

    Options = DemucsOptions
    name = "demucs"
    sample_rate = SAMPLE_RATE
    # 60 s chunks: the warm-up repeated before each costs 5 % rather than 10 %,
    # for about 1.2 GB (dns48) per worker rather than 0.9 GB.
    segment_s = 60.0
    owns_gain_floor = False
    parallel_in_threads = False  # torch's own threads already share its layers out
    needs_file_std = True
    # DEMUCS divides by the signal's deviation plus 1e-3 (the reference's
    # floor): below a deviation of about 0.03 the floor starts to show, so a
    # quieter recording is raised to that; no louder one is changed.
    level_range_dbfs = (-30.0, math.inf)

    def __init__(self, options: DemucsOptions = DemucsOptions()):
        self.options = options
        if options.model not in PRETRAINED:
            raise ModelError(f"unknown model {options.model!r}; choose from "
                             f"{', '.join(PRETRAINED)}")
        self.device = resolve_device(options.device)
        self.architecture = (read_architecture(Path(options.weights)) if options.weights
                             else None) or PRETRAINED[options.model].architecture
        with torch.device("meta"):  # the shape alone: no memory, no weights
            self.shape = Demucs(**{**_known(self.architecture), "rescale": 0})
        self.causal = self.shape.causal
        # One CPU thread: dns48 0.12 s per second of audio, dns64 0.24 (the
        # work grows with the square of the width).
        self.width = self.shape.encoder[0][0].out_channels
        self.compute_s_per_audio_s = 0.12 * (self.width / 48) ** 2
        self._model: Demucs | None = None

    def prepare(self) -> None:
        """Download the pretrained model once, if it is not cached (a local
        ``weights`` file was read for its architecture already)."""
        if self.options.weights is None and not cached_path(self.options.model).exists():
            download(self.options.model)

    @property
    def model(self) -> Demucs:
        """The network with its weights, loaded on first use."""
        if self._model is None:
            self._model = load_model(self.options.model, self.options.weights).to(self.device)
        return self._model

    def context_samples(self, sample_rate: int) -> tuple[int, int]:
        """Warm-up before a chunk; after it, the look-ahead of the convolutions
        and resampling filters (the LSTM of a non-causal model sees both ways,
        so it gets the warm-up on both sides)."""
        before = round(self.options.warmup_s * sample_rate)
        after = before if not self.causal else round(0.1 * sample_rate)
        return before, after

    def alignment(self, sample_rate: int) -> int:
        """Input samples (at ``sample_rate``) per LSTM step of the model."""
        stride = self.shape.total_stride * sample_rate
        return stride // math.gcd(stride, SAMPLE_RATE)

    def chunks_per_call(self, chunk_s: float) -> int:
        """On a GPU, as many chunks as fit in half its free memory (at most
        32); on a CPU one, since the worker pool already uses every core."""
        if self.device.type != "cuda":
            return 1
        free, _ = torch.cuda.mem_get_info(self.device)
        return int(max(1, min(32, 0.5 * free // self.activation_bytes(chunk_s))))

    def activation_bytes(self, chunk_s: float) -> float:
        """Peak activation memory of one chunk, estimated from the layer
        sizes: the first layers at ``resample`` times 16 kHz dominate, about
        2.5 kB per input sample for dns48, in proportion to ``hidden``."""
        return 2.5e3 * self.width / 48 * chunk_s * SAMPLE_RATE * self.shape.resample / 4

    def stream(self, sample_rate: int, channels: int, hop_ms: float | None = None):
        """Live DEMUCS (:class:`~.demucs_stream.DemucsStream`), one stream per
        channel, resampled from and to ``sample_rate``; on the CPU whatever
        ``device`` says, since one hop is far too little work for a GPU.
        ``hop_ms``: a multiple of the model's frame (16 ms); longer hops cost
        less per second of audio and add their length to the latency."""
        from denoise.engine.backends.demucs_stream import DemucsStream, half_available
        from denoise.engine.streaming import AtRate, PerChannel

        frame_ms = 1000 * self.shape.total_stride / SAMPLE_RATE
        hop_frames = 1 if hop_ms is None else round(hop_ms / frame_ms)
        if hop_ms is not None and (hop_frames < 1 or abs(hop_frames * frame_ms - hop_ms) > 1e-6):
            raise UsageError(f"--hop-ms {hop_ms:g}: must be a multiple of this model's "
                             f"{frame_ms:g} ms frame")
        if not self.causal:
            weights = f" ({Path(self.options.weights).name})" if self.options.weights else ""
            raise UsageError(f"DEMUCS model {self.options.model}{weights} is not causal (it "
                             "looks ahead in time), so it cannot stream; use dns48, dns64 or "
                             "master64")
        if self.options.stream_fp16 and not half_available():
            raise UsageError("--fp16 needs PyTorch's fbgemm kernels (x86-64 CPUs), which "
                             "this PyTorch does not have")
        model = load_model(self.options.model, self.options.weights)
        first = DemucsStream(model, hop_frames, half=self.options.stream_fp16)
        stream = PerChannel([first] + [DemucsStream(model, hop_frames, weights_of=first)
                                       for _ in range(channels - 1)])
        if sample_rate != SAMPLE_RATE:
            stream = AtRate(stream, sample_rate, SAMPLE_RATE, channels)
        return stream

    def enhance(self, audio: torch.Tensor, sample_rate: int,
                file_std: np.ndarray | None = None) -> torch.Tensor:
        """``[N, T] -> [N, T]`` at 16 kHz; ``file_std`` ``[N]`` normalises.

        A batch that does not fit on the GPU is split in halves and retried.
        """
        x = audio.to(self.device)[:, None]
        std = None
        if file_std is not None:
            std = torch.as_tensor(file_std, dtype=x.dtype, device=self.device).view(-1, 1, 1)
        try:
            return self.model(x, std=std)[:, 0]
        except torch.OutOfMemoryError:
            if x.shape[0] == 1:
                raise
            torch.cuda.empty_cache()
            half = x.shape[0] // 2
            parts = [(audio[:half], None if file_std is None else file_std[:half]),
                     (audio[half:], None if file_std is None else file_std[half:])]
            return torch.cat([self.enhance(part, sample_rate, std_part)
                              for part, std_part in parts])
