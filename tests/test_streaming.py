"""Streaming: DEMUCS equals the reference's streamer, spectral equals its
offline self, and ``--stream`` runs over real pipes as data arrives.

The DEMUCS fixtures (``bench/make_demucs_golden.py``) hold the output of the
reference ``DemucsStreamer`` (denoiser 0.1.5, one and two frames per step)
for the fixture's input and weights.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from conftest import REPO
from denoise.engine.backends import BackendSpec
from denoise.engine.backends.demucs_model import Demucs
from denoise.engine.backends.spectral import SpectralBackend, SpectralOptions, SpectralStream, \
    initial_noise
from denoise.engine.dsp import frame_length
from denoise.engine.errors import UsageError
from denoise.engine.pipe import SAMPLE_FORMATS, StreamFormat
from denoise.engine.streaming import AtRate, StreamResampler, open_stream

FIXTURES = Path(__file__).parent / "fixtures"
CAUSAL = ["dns48", "dns64", "master64"]
SAMPLES = REPO / "samples"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The fixtures' reference weights on disk, made when first asked for:
    ``name -> (path, fixture data)``."""
    folder = tmp_path_factory.mktemp("golden")
    made = {}

    def checkpoint(name):
        if name not in made:
            data = np.load(FIXTURES / f"demucs_{name}.npz")
            torch.manual_seed(int(data["seed"]))
            state = Demucs(**json.loads(str(data["config"]))).state_dict()
            path = folder / f"{name}.th"
            torch.save(state, path)
            made[name] = path, data
        return made[name]

    return checkpoint


def _stream_through(stream, signal: np.ndarray, seed: int = 0) -> np.ndarray:
    """Feed ``signal`` ``[C, T]`` in blocks of random sizes (1 to 700), then flush."""
    sizes = np.random.default_rng(seed).integers(1, 700, signal.shape[1])
    pieces, start = [], 0
    for size in sizes:
        if start >= signal.shape[1]:
            break
        pieces.append(stream.feed(signal[:, start:start + size]))
        start += size
    pieces.append(stream.flush())
    return np.concatenate(pieces, axis=1)


def _close(out: np.ndarray, expected: np.ndarray, tolerance: float = 1e-4) -> float:
    """The largest difference relative to the expected peak; asserts shapes."""
    assert out.shape == expected.shape
    difference = np.abs(out - expected).max() / np.abs(expected).max()
    assert difference <= tolerance, difference
    return difference


@pytest.mark.parametrize("name", CAUSAL)
@pytest.mark.parametrize("hop_ms, golden, latency", [
    (16, "stream_output", 661),  # 41.3 ms: one 16 ms hop and the receptive field
    (32, "stream_output_2", 661 + 256),  # the reference's num_frames=2
])
def test_demucs_stream_equals_the_reference_streamer(checkpoints, name, hop_ms, golden, latency):
    path, data = checkpoints(name)
    stream = open_stream(BackendSpec("demucs", {"model": name, "weights": path}), 16_000, 1,
                         hop_ms=hop_ms)
    assert stream.latency_samples == latency
    out = _stream_through(stream, data["input"][0])
    _close(out, data[golden])


@pytest.mark.parametrize("name", CAUSAL)
def test_demucs_stream_with_float16_weights_stays_within_the_reference_tolerance(
        checkpoints, name):
    path, data = checkpoints(name)
    outputs = {}
    for fp16 in (False, True):
        options = {"model": name, "weights": path, "stream_fp16": fp16}
        outputs[fp16] = _stream_through(open_stream(BackendSpec("demucs", options), 16_000, 1),
                                        data["input"][0])
    _close(outputs[True], data["stream_output"])
    # and it did run in float16: the weights' rounding shows, far below the tolerance
    assert np.abs(outputs[True] - outputs[False]).max() / np.abs(outputs[False]).max() > 1e-7


def test_a_model_that_looks_ahead_is_refused_for_streaming(tmp_path):
    weights = tmp_path / "nc.th"
    torch.save({}, weights)  # refused on its architecture, before any weight is read
    with pytest.raises(UsageError, match="model valentini_nc .* is not causal"):
        open_stream(BackendSpec("demucs", {"model": "valentini_nc", "weights": weights}),
                    16_000, 1)


def test_a_hop_that_is_not_whole_frames_is_refused(checkpoints):
    path, _ = checkpoints("dns48")
    with pytest.raises(UsageError, match="multiple of this model's 16 ms frame"):
        open_stream(BackendSpec("demucs", {"weights": path}), 16_000, 1, hop_ms=20)


@pytest.mark.parametrize("sample", ["librispeech_2412_crowd_5dB_44k.wav",
                                    "jfk_inaugural_44k_stereo.flac",
                                    "vctk_p225_023_typing_5dB_16k.wav"])
def test_spectral_stream_equals_offline_from_the_same_start(sample):
    audio, rate = sf.read(SAMPLES / sample, dtype="float32", always_2d=True)
    audio = audio.T[:, :rate * 6]
    backend = SpectralBackend()
    offline = backend.enhance(torch.from_numpy(audio), rate).numpy()
    n_fft = frame_length(rate)
    window = torch.hann_window(n_fft, periodic=True).sqrt()
    spectrum = torch.stft(torch.from_numpy(audio), n_fft, n_fft // 2, window=window,
                          center=True, pad_mode="constant", return_complex=True)
    start = initial_noise(spectrum.abs() ** 2, rate, n_fft // 2)
    stream = SpectralStream(backend, rate, audio.shape[0], initial_noise=start)
    _close(_stream_through(stream, audio), offline)


def test_spectral_stream_settles_on_offline_when_it_starts_causally():
    """The live stream cannot look a second ahead for its first noise
    estimate; the difference fades as the tracker settles (README)."""
    audio, rate = sf.read(SAMPLES / "librispeech_2412_crowd_5dB_44k.wav", dtype="float32",
                          always_2d=True)
    audio = audio.T
    offline = SpectralBackend().enhance(torch.from_numpy(audio), rate).numpy()
    out = _stream_through(open_stream(BackendSpec("spectral"), rate, 1), audio)
    assert out.shape == offline.shape
    peak = np.abs(offline).max()
    first_second = np.abs(out - offline)[:, :rate].max() / peak
    after_six = np.abs(out - offline)[:, 6 * rate:].max() / peak
    assert first_second > 1e-3  # it does differ at the start: the test can fail
    assert after_six < 1e-3


def test_spectral_stream_with_a_noise_profile_equals_offline_throughout():
    audio, rate = sf.read(SAMPLES / "vctk_p225_023_typing_5dB_16k.wav", dtype="float32",
                          always_2d=True)
    audio = audio.T
    from denoise.engine.audio_io import Recording

    noise = Recording(audio[0, :rate], rate, "first second")
    options = {"noise": noise, "atten_lim_db": 20.0}
    offline = SpectralBackend(SpectralOptions(**options)).enhance(torch.from_numpy(audio),
                                                                  rate).numpy()
    out = _stream_through(open_stream(BackendSpec("spectral", options), rate, 1), audio)
    _close(out, offline)


@pytest.mark.parametrize("rates", [(48_000, 16_000), (16_000, 48_000), (44_100, 16_000),
                                   (16_000, 44_100)])
def test_stream_resampler_equals_whole_signal_resampling(rates):
    from_rate, to_rate = rates
    signal = np.random.default_rng(1).standard_normal((2, from_rate // 2)).astype(np.float32)
    out = _stream_through(StreamResampler(from_rate, to_rate, 2), signal)
    expected = resample_poly(signal, to_rate, from_rate, axis=1, window=("kaiser", 5.0))
    _close(out, expected.astype(np.float32), 1e-5)


class _Delay:
    """A stream that enhances nothing and answers ``delay`` samples late."""

    hop_samples = 100

    def __init__(self, delay: int):
        self.latency_samples = delay
        self.held = np.zeros((1, 0), dtype=np.float32)
        self.received = 0

    def feed(self, block):
        self.held = np.concatenate([self.held, block], axis=1)
        self.received += block.shape[1]
        ready = max(0, self.received - self.latency_samples) - (self.received - self.held.shape[1])
        out, self.held = self.held[:, :ready], self.held[:, ready:]
        return out

    def flush(self):
        out, self.held = self.held, self.held[:, :0]
        return out


def test_a_stream_at_another_rate_comes_back_aligned_and_as_long():
    rate = 44_100
    t = np.arange(rate) / rate
    signal = (0.5 * np.sin(2 * np.pi * 440 * t) * np.sin(2 * np.pi * 3 * t))[None]
    signal = signal.astype(np.float32)[:, :rate - 7]
    out = _stream_through(AtRate(_Delay(300), rate, 16_000, 1), signal)
    assert out.shape == signal.shape
    middle = slice(1000, -1000)  # the filters' edges aside
    assert np.abs(out[:, middle] - signal[:, middle]).max() < 1e-3


# -- over pipes ---------------------------------------------------------------

def _wav_stream_header(rate: int, channels: int, sample: str) -> bytes:
    """A WAV header with "unknown" sizes, as ``ffmpeg -f wav -`` writes to a pipe."""
    return StreamFormat(rate, channels, SAMPLE_FORMATS[sample], wav=True).wav_header()


def _denoise(*args, **popen):
    return subprocess.Popen([sys.executable, "-m", "denoise.cli", *map(str, args)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **popen)


def _read_wav_stream(data: bytes) -> tuple[np.ndarray, StreamFormat]:
    """Samples and format of a WAV stream, read by the engine's own reader."""
    import tempfile

    from denoise.engine.pipe import InputStream, read_wav_header

    with tempfile.TemporaryFile() as file:
        file.write(data)
        file.seek(0)
        source = InputStream(file.fileno())
        fmt = read_wav_header(source)
        body = b""
        while chunk := source.available():
            body += chunk
    return fmt.sample.decode(body, fmt.channels), fmt


def test_pipe_from_a_real_time_producer_comes_out_before_it_ends(checkpoints):
    """A producer writes the fixture's input at real-time pace, 20 ms at a
    time; the enhanced stream starts coming out while it is still writing,
    and all of it equals the reference streamer's output."""
    path, data = checkpoints("dns48")
    signal = data["input"][0, 0]
    process = _denoise("--stream", "--weights", path)
    first_output, pieces = [], []

    def read_output():
        while chunk := os.read(process.stdout.fileno(), 1 << 16):
            first_output or first_output.append(time.monotonic())
            pieces.append(chunk)

    import threading

    reader = threading.Thread(target=read_output)
    reader.start()
    process.stdin.write(_wav_stream_header(16_000, 1, "f32le"))
    process.stdin.flush()
    # The input is 1.5 s: start the clock once the model is loaded (the
    # line that says so), as a live source does not wait for Python.
    assert process.stderr.readline().startswith(b"streaming WAV f32le, 16000 Hz, 1 ch")
    block = 320
    for start in range(0, len(signal), block):
        process.stdin.write(signal[start:start + block].astype("<f4").tobytes())
        process.stdin.flush()
        time.sleep(block / 16_000)
    producer_done = time.monotonic()
    process.stdin.close()
    reader.join(timeout=120)
    assert process.wait(timeout=60) == 0, process.stderr.read().decode()
    assert first_output and first_output[0] < producer_done - 0.5
    out, fmt = _read_wav_stream(b"".join(pieces))
    assert (fmt.sample_rate, fmt.channels, fmt.sample.name) == (16_000, 1, "f32le")
    _close(out, data["stream_output"])


def test_fp16_over_a_pipe_equals_the_reference_streamer(checkpoints):
    path, data = checkpoints("dns64")
    signal = data["input"][0, 0]
    process = _denoise("--stream", "--fp16", "--weights", path, "--model", "dns64", "-q")
    out, err = process.communicate(_wav_stream_header(16_000, 1, "f32le")
                                   + signal.astype("<f4").tobytes(), timeout=120)
    assert process.returncode == 0 and err == b"", err.decode()
    _close(_read_wav_stream(out)[0], data["stream_output"])


def test_raw_pcm_in_gives_raw_pcm_out_of_the_same_length_and_format():
    audio, rate = sf.read(SAMPLES / "jfk_inaugural_44k_stereo.flac", dtype="int16")
    raw = audio[:rate * 2].tobytes()
    process = _denoise("--stream", "--raw", "s16le", "--rate", rate, "--channels", 2, "-q")
    out, err = process.communicate(raw, timeout=120)
    assert process.returncode == 0, err.decode()
    assert len(out) == len(raw) and err == b""
    enhanced = np.frombuffer(out, np.int16).reshape(-1, 2).astype(np.float32)
    original = audio[:rate * 2].astype(np.float32)
    assert np.sqrt(np.mean(enhanced ** 2)) < np.sqrt(np.mean(original ** 2))  # noise taken out


@pytest.mark.parametrize("sample", ["s16le", "s24le", "s32le", "f32le", "u8"])
def test_wav_streams_keep_their_sample_format(sample):
    rate = 22_050
    audio = 0.3 * np.sin(2 * np.pi * 300 * np.arange(rate) / rate)[None].astype(np.float32)
    fmt = SAMPLE_FORMATS[sample]
    process = _denoise("--stream", "--strength", "0", "-q")
    out, err = process.communicate(_wav_stream_header(rate, 1, sample) + fmt.encode(audio),
                                   timeout=60)
    assert process.returncode == 0, err.decode()
    enhanced, got = _read_wav_stream(out)
    assert (got.sample_rate, got.channels, got.sample.name) == (rate, 1, sample)
    assert enhanced.shape == audio.shape
    step = 2.0 ** -(8 * fmt.width - 1) if not fmt.floating else 1e-6
    # Strength 0 changes nothing but the STFT's rounding: what comes out is
    # what went in, to the format's resolution.
    assert np.abs(enhanced - fmt.decode(fmt.encode(audio), 1)).max() <= 2 * step + 1e-6


def test_a_reader_that_goes_away_ends_the_stream_quietly():
    import threading

    audio = np.zeros(16_000 * 30, dtype="<i2").tobytes()
    process = _denoise("--stream")

    def produce():
        try:
            process.stdin.write(_wav_stream_header(16_000, 1, "s16le") + audio)
            process.stdin.close()
        except BrokenPipeError:
            pass

    producer = threading.Thread(target=produce)
    producer.start()
    assert len(process.stdout.read(100)) == 100
    process.stdout.close()  # as `| head -c 100` does
    assert process.wait(timeout=60) == 141
    err = process.stderr.read().decode()
    assert "Traceback" not in err and "error" not in err
    producer.join(timeout=10)


def test_input_that_is_not_a_wav_stream_is_one_line_naming_standard_input():
    process = _denoise("--stream")
    _, err = process.communicate(b"ID3\x03 this is an mp3", timeout=60)
    assert process.returncode == 1
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: standard input: not a WAV stream")
    assert "--raw" in lines[0]


@pytest.mark.parametrize("args, message", [
    (["--stream", "--report", "r"], "--report: not with --stream"),
    (["--stream", "--raw", "s16le"], "--raw needs --rate HZ and --channels N"),
    (["--stream", "--channels", "linked"], "--channels linked cannot stream"),
    (["--stream", "--hop-ms", "24", "--weights", "W"], "multiple of this model's 16 ms"),
    (["in.wav", "-o", "out.wav", "--hop-ms", "32"], "--hop-ms: only with --stream or --live"),
    (["in.wav", "-o", "out.wav", "--fp16", "--weights", "W"],
     "--fp16: only with --stream or --live"),
    (["--stream", "--fp16"], "--fp16: only for --method demucs"),
    (["--stream", "--live"], "--stream and --live cannot be used together"),
])
def test_stream_usage_errors_are_one_line(tmp_path, checkpoints, args, message):
    weights, _ = checkpoints("dns48")
    args = [str(weights) if a == "W" else a for a in args]
    (tmp_path / "in.wav").write_bytes(b"")
    process = _denoise(*args, cwd=tmp_path)
    _, err = process.communicate(_wav_stream_header(16_000, 1, "s16le") + bytes(3200),
                                 timeout=60)
    assert process.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
