"""Streaming over pipes: a WAV or raw PCM stream in, the same format out,
enhanced block by block as it arrives.

The input is read with ``os.read``, which returns what the pipe holds
without waiting for more, so each block is enhanced and written (and
flushed) as soon as the stream has a hop's worth of it: ``arecord | denoise
--stream | aplay`` runs live. A WAV stream's header gives its format; its
sizes are trusted only when they are real ones (pipes carry 0 or
0xFFFFFFFF, as ``ffmpeg -f wav -`` writes). The output is a WAV stream of
the same format whose sizes say "unknown" the same way, or raw PCM for raw
PCM.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

import numpy as np

from denoise.engine import backends
from denoise.engine.errors import DenoiseError
from denoise.engine.streaming import open_stream

UNKNOWN_SIZE = 0xFFFFFFFF
PCM, IEEE_FLOAT, EXTENSIBLE = 1, 3, 0xFFFE
# A read takes what the pipe holds, up to this: a larger block only means
# the input was waiting, and then one call catches up.
READ_BYTES = 1 << 16


class StreamFormatError(DenoiseError):
    """The input is not a stream this reads."""


@dataclass(frozen=True)
class SampleFormat:
    """How samples are stored: ffmpeg's names (``s16le``, ``f32le``, ...)."""

    name: str
    width: int  # bytes per sample
    floating: bool

    @property
    def dtype(self) -> np.dtype:
        if self.floating:
            return np.dtype(f"<f{self.width}")
        return np.dtype("u1") if self.width == 1 else np.dtype(f"<i{self.width}")

    def decode(self, data: bytes, channels: int) -> np.ndarray:
        """``[C, n]`` float32 in [-1, 1) from interleaved samples."""
        if self.width == 3:
            raw = np.frombuffer(data, np.uint8).reshape(-1, 3)
            wide = (raw[:, 0].astype(np.int32) | (raw[:, 1].astype(np.int32) << 8)
                    | (raw[:, 2].astype(np.int8).astype(np.int32) << 16))
            samples = wide / np.float32(1 << 23)
        else:
            samples = np.frombuffer(data, self.dtype).astype(np.float32)
            if self.width == 1:
                samples = (samples - 128) / np.float32(128)
            elif not self.floating:
                samples /= np.float32(1 << (8 * self.width - 1))
        return samples.reshape(-1, channels).T.astype(np.float32)

    def encode(self, audio: np.ndarray) -> bytes:
        """Interleaved samples from ``[C, n]`` floats; integers are rounded
        and clipped at full scale."""
        frames = np.ascontiguousarray(audio.T)
        if self.floating:
            return frames.astype(self.dtype).tobytes()
        top = 1 << (8 * self.width - 1)
        ints = np.clip(np.rint(frames * top), -top, top - 1).astype(np.int32)
        if self.width == 1:
            return (ints + 128).astype(np.uint8).tobytes()
        if self.width == 3:
            return ints.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
        return ints.astype(self.dtype).tobytes()


SAMPLE_FORMATS = {f.name: f for f in [
    SampleFormat("u8", 1, False), SampleFormat("s16le", 2, False),
    SampleFormat("s24le", 3, False), SampleFormat("s32le", 4, False),
    SampleFormat("f32le", 4, True), SampleFormat("f64le", 8, True)]}


@dataclass(frozen=True)
class StreamFormat:
    """A stream's rate, channel count and sample format; ``wav``: whether it
    came with (and so goes out with) a WAV header."""

    sample_rate: int
    channels: int
    sample: SampleFormat
    wav: bool

    def __post_init__(self) -> None:
        if not 1 <= self.channels <= 64:
            raise StreamFormatError(f"{self.channels} channels: a stream has 1 to 64")
        if not 1000 <= self.sample_rate <= 768_000:
            raise StreamFormatError(f"sample rate {self.sample_rate} Hz: not an audio rate")

    @property
    def frame_bytes(self) -> int:
        return self.sample.width * self.channels

    def describe(self) -> str:
        kind = "WAV" if self.wav else "raw"
        return f"{kind} {self.sample.name}, {self.sample_rate} Hz, {self.channels} ch"

    def wav_header(self) -> bytes:
        """A header whose sizes say "unknown", as ``ffmpeg -f wav -`` writes."""
        tag = IEEE_FLOAT if self.sample.floating else PCM
        fmt = struct.pack("<HHIIHH", tag, self.channels, self.sample_rate,
                          self.sample_rate * self.frame_bytes, self.frame_bytes,
                          8 * self.sample.width)
        return (b"RIFF" + struct.pack("<I", UNKNOWN_SIZE) + b"WAVE"
                + b"fmt " + struct.pack("<I", len(fmt)) + fmt
                + b"data" + struct.pack("<I", UNKNOWN_SIZE))


class InputStream:
    """Bytes of a file descriptor as they come: :meth:`exactly` for a header,
    :meth:`available` for samples."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buffer = b""
        self.ended = False
        self.limit: int | None = None  # bytes of audio left, where the header says

    def exactly(self, count: int) -> bytes:
        while len(self.buffer) < count and not self.ended:
            self._read()
        if len(self.buffer) < count:
            raise StreamFormatError("the stream ended inside its WAV header")
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def available(self) -> bytes:
        """What has arrived (waiting for at least a byte); empty at the end."""
        if not self.buffer and not self.ended:
            self._read()
        data, self.buffer = self.buffer, b""
        if self.limit is not None:
            data = data[:self.limit]
            self.limit -= len(data)
            self.ended |= self.limit == 0
        return data

    def _read(self) -> None:
        data = os.read(self.fd, READ_BYTES)
        if data:
            self.buffer += data
        else:
            self.ended = True


def read_wav_header(source: InputStream) -> StreamFormat:
    """The format of a WAV stream, read up to its samples."""
    riff = source.exactly(12)
    if riff[:4] not in (b"RIFF", b"RF64") or riff[8:12] != b"WAVE":
        raise StreamFormatError(f"not a WAV stream (it starts with {riff[:4]!r}); for raw "
                                "PCM give --raw FORMAT --rate HZ --channels N")
    fmt = None
    while True:
        chunk, size = struct.unpack("<4sI", source.exactly(8))
        if chunk == b"data":
            break
        body = source.exactly(size + size % 2)
        if chunk == b"fmt ":
            fmt = body
        elif chunk == b"ds64" and len(body) >= 24:
            data_size = struct.unpack("<Q", body[8:16])[0]
            source.limit = data_size or None
    if fmt is None or len(fmt) < 16:
        raise StreamFormatError("the WAV stream has no format chunk before its samples")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack("<H", fmt[24:26])[0]
    floating = tag == IEEE_FLOAT
    name = {(8, False): "u8", (16, False): "s16le", (24, False): "s24le",
            (32, False): "s32le", (32, True): "f32le", (64, True): "f64le"}.get((bits, floating))
    if tag not in (PCM, IEEE_FLOAT) or name is None:
        raise StreamFormatError(f"WAV stream of format {tag:#x} with {bits}-bit samples: "
                                "only PCM (8, 16, 24, 32 bit) and float (32, 64 bit) stream")
    if riff[:4] == b"RIFF" and size not in (0, UNKNOWN_SIZE):
        source.limit = size
    return StreamFormat(rate, channels, SAMPLE_FORMATS[name], wav=True)


@dataclass
class PipeResult:
    """What a pipe run did: its format, samples in and out, and the latency
    that the enhancement adds (the first output sample is the first input
    sample's enhancement; it comes out this much later)."""

    format: StreamFormat
    samples_in: int = 0
    samples_out: int = 0
    latency_samples: int = 0
    hum: list[str | None] = field(default_factory=list)  # per channel, with --dehum


def run_pipe(input_fd: int, output: BinaryIO, spec: backends.BackendSpec,
             raw: StreamFormat | None = None, channel_mode: str = "each", dry: float = 0.0,
             hop_ms: float | None = None, dehum: str = "off",
             on_start: Callable[[PipeResult], None] | None = None) -> PipeResult:
    """Enhance the stream on ``input_fd`` into ``output`` until it ends.

    ``raw``: the input's format when it has no header. ``dehum``: mains hum
    looked for and taken out (:mod:`~denoise.engine.hum_stream`). ``on_start`` is told
    the format once the model is ready. A reader of ``output`` that goes
    away raises :class:`BrokenPipeError`.
    """
    source = InputStream(input_fd)
    fmt = raw or read_wav_header(source)
    stream = open_stream(spec, fmt.sample_rate, fmt.channels, channel_mode, dry, hop_ms, dehum)
    result = PipeResult(fmt, latency_samples=stream.latency_samples)
    if on_start is not None:
        on_start(result)
    if fmt.wav:
        output.write(fmt.wav_header())
        output.flush()
    partial = b""
    while data := source.available():
        data = partial + data
        whole = len(data) - len(data) % fmt.frame_bytes
        partial = data[whole:]
        if whole:
            block = fmt.sample.decode(data[:whole], fmt.channels)
            result.samples_in += block.shape[1]
            _write(output, fmt, stream.feed(block), result)
    _write(output, fmt, stream.flush(), result)
    if dehum != "off":
        result.hum = stream.found()
    return result


def _write(output: BinaryIO, fmt: StreamFormat, block: np.ndarray, result: PipeResult) -> None:
    if block.shape[1]:
        output.write(fmt.sample.encode(block))
        output.flush()
        result.samples_out += block.shape[1]
