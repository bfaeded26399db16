"""Media files for the tests and the bench, made with PyAV from real noisy
speech: an H.264 + AAC MP4 with two audio tracks and a subtitle track, an
Opus WebM, an M4A with cover art and tags, a stereo WMA.

Each maker takes ``[C, T]`` float audio and writes it the way a phone,
browser or editor would; the video is a moving gradient, small and quick
to encode.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
NOISY_SPEECH = REPO / "samples" / "librispeech_2412_crowd_5dB_44k.wav"
STEREO_SPEECH = REPO / "samples" / "jfk_inaugural_44k_stereo.flac"
NOISY_16K = REPO / "samples" / "vctk_p225_023_typing_5dB_16k.wav"


def _audio_stream(output, codec: str, rate: int, channels: int, bit_rate: int | None,
                  language: str | None = None):
    stream = output.add_stream(codec, rate=rate, layout="mono" if channels == 1 else "stereo")
    if bit_rate:
        stream.bit_rate = bit_rate
    if language:
        stream.metadata["language"] = language
    return stream


def _frames(stream, audio: np.ndarray, start: int = 0):
    """``audio`` cut into the encoder's frames, timed from sample ``start``."""
    size = stream.codec_context.frame_size or 4096
    layout = stream.codec_context.layout
    rate = stream.codec_context.sample_rate
    for offset in range(0, audio.shape[-1], size):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[:, offset: offset + size],
                                                                dtype=np.float32),
                                           format="fltp", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, start + offset, Fraction(1, rate)
        yield frame
    yield None


def _encode_audio(output, stream, audio: np.ndarray) -> None:
    for frame in _frames(stream, audio):
        for packet in stream.encode(frame):
            output.mux(packet)


def write_audio_file(path: Path, audio: np.ndarray, rate: int, fmt: str, codec: str,
                     bit_rate: int | None = 64000, tags: dict | None = None,
                     cover: bool = False) -> Path:
    """An audio-only file (M4A, WebM, WMA...), optionally with tags and a cover picture."""
    with av.open(str(path), "w", format=fmt) as output:
        output.metadata.update(tags or {})
        stream = _audio_stream(output, codec, rate, audio.shape[0], bit_rate)
        picture = None
        if cover:
            picture = output.add_stream("png", rate=1)
            picture.width, picture.height, picture.pix_fmt = 64, 64, "rgb24"
            picture.disposition = av.stream.Disposition.attached_pic
        output.start_encoding()
        if picture is not None:
            image = np.zeros((64, 64, 3), np.uint8)
            image[:, :, 0] = np.arange(64)[None, :] * 4
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = 0
            for packet in [*picture.encode(frame), *picture.encode(None)]:
                output.mux(packet)
        _encode_audio(output, stream, audio)
    return path


def write_video(path: Path, tracks: list[np.ndarray], rate: int, seconds: float,
                fmt: str = "mp4", audio_codec: str = "aac", size=(320, 240), fps: int = 25,
                subtitles: list[tuple[float, float, str]] = (), languages=("eng", "fra"),
                bit_rate: int = 96000, chapters: list[tuple[float, float, str]] = (),
                audio_start: float = 0.0, audio_gap: tuple[float, float] | None = None) -> Path:
    """A video (H.264, ``size`` at ``fps``) with one audio track per entry
    of ``tracks`` and, in MP4, a mov_text subtitle track; streams interleaved
    as a camera or editor writes them; ``chapters`` are (start s, end s,
    title); the sound starts ``audio_start`` seconds after the picture, and
    ``audio_gap`` (start s, end s) is missing from it, as when a recorder
    drops packets."""
    width, height = size
    with av.open(str(path), "w", format=fmt) as output:
        output.metadata["title"] = "denoise test video"
        video = output.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio_streams = [_audio_stream(output, audio_codec, rate, track.shape[0], bit_rate,
                                       languages[i % len(languages)])
                         for i, track in enumerate(tracks)]
        text = output.add_mux_stream("mov_text") if subtitles else None
        output.set_chapters([{"id": number, "start": round(start * 1000),
                              "end": round(end * 1000), "time_base": Fraction(1, 1000),
                              "metadata": {"title": title}}
                             for number, (start, end, title) in enumerate(chapters, 1)])
        output.start_encoding()
        def kept(frame) -> bool:
            return (frame is None or audio_gap is None
                    or not audio_gap[0] * rate <= frame.pts < audio_gap[1] * rate)

        pending = [[frame for frame in _frames(stream, track, round(audio_start * rate))
                    if kept(frame)] for stream, track in zip(audio_streams, tracks)]
        frames = round(seconds * fps)
        x = np.arange(width)[None, :]
        for index in range(frames + 1):
            if index < frames:
                image = np.zeros((height, width, 3), np.uint8)
                image[:, :, 1] = (x + 4 * index) % 256
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = index
                packets = video.encode(frame)
            else:
                packets = video.encode(None)
            for packet in packets:
                output.mux(packet)
            until = (index + 1) / fps
            for stream, queue in zip(audio_streams, pending):
                while queue and (queue[0] is None or queue[0].pts / rate < until
                                 or index == frames):
                    for packet in stream.encode(queue.pop(0)):
                        output.mux(packet)
        for start, end, words in subtitles:
            body = words.encode()
            packet = av.Packet(len(body).to_bytes(2, "big") + body)
            packet.stream = text
            packet.time_base = Fraction(1, 1000)
            packet.pts = packet.dts = round(start * 1000)
            packet.duration = round((end - start) * 1000)
            output.mux(packet)
    return path


def decode(path: Path, track: int = 0) -> tuple[np.ndarray, float]:
    """Audio track ``track`` of ``path`` decoded: ``[C, T]`` float32 and the
    timestamp (s) of its first sample."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[track]
        parts, start = [], None
        for frame in container.decode(stream):
            if start is None:
                start = float(frame.pts * frame.time_base)
            parts.append(frame.to_ndarray().reshape(frame.layout.nb_channels, -1)
                         if frame.format.is_planar else
                         frame.to_ndarray().reshape(-1, frame.layout.nb_channels).T)
        return np.concatenate(parts, axis=-1).astype(np.float32), start


def timeline(path: Path, track: int = 0) -> np.ndarray:
    """The first channel of an audio track placed by its frames' timestamps
    (silence where none is), from time 0: what a player plays."""
    placed = {}
    with av.open(str(path)) as container:
        stream = container.streams.audio[track]
        rate = stream.codec_context.sample_rate
        for frame in container.decode(stream):
            placed[round(frame.pts * frame.time_base * rate)] = frame.to_ndarray()[0]
    end = max(start + len(samples) for start, samples in placed.items())
    out = np.zeros(end, np.float32)
    for start, samples in placed.items():
        out[start: start + len(samples)] = samples
    return out


def packets(path: Path, kind: str) -> list[tuple[int, int | None, int | None, bytes]]:
    """Every packet of every ``kind`` stream (video, subtitle, audio):
    (stream index, pts, dts, bytes), timestamps in microseconds."""
    found = []
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type == kind]
        for packet in container.demux(*streams):
            if packet.size == 0:
                continue
            micro = (lambda t: None if t is None else round(t * packet.time_base * 1_000_000))
            found.append((packet.stream.index, micro(packet.pts), micro(packet.dts),
                          bytes(packet)))
    return found
