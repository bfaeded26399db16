"""Audio in any container FFmpeg reads, and video in, video out (PyAV).

libsndfile stays the reader and writer of what it handles (WAV, FLAC, Ogg,
MP3, AIFF...). Everything else (M4A/AAC, WebM/Opus, WMA, and the sound of
MP4, MOV, MKV video) goes through the FFmpeg that PyAV's wheels bundle, in
three steps around the usual pipeline:

1. :func:`probe_media` (planning): the audio tracks, from the header.
2. :func:`decode_tracks` (a pool task): the chosen tracks, in one pass over
   the file, each to a hidden float W64 copy that the pipeline reads in
   chunks, so memory stays bounded however long the file is.
3. :func:`write_media` (a pool task): the output, under a temporary name.
   Every stream that is not enhanced is copied packet for packet (video,
   other audio tracks, subtitles, cover art), with the container's
   metadata and chapters; each enhanced track is encoded with the input's
   codec, sample rate, layout and bitrate, timed so that decoding it gives
   the input's samples back, sample for sample: the same count, from the
   same timestamp (lip sync).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import numpy as np
import soundfile as sf
from scipy.signal import correlate

from denoise.engine.errors import FileError

# Output suffixes that FFmpeg muxes (the rest are libsndfile's), and the
# muxer each one means.
MUXERS = {".m4a": "ipod", ".m4b": "ipod", ".mp4": "mp4", ".m4v": "mp4", ".mov": "mov",
          ".3gp": "3gp", ".mkv": "matroska", ".mka": "matroska", ".webm": "webm",
          ".wma": "asf", ".wmv": "asf", ".asf": "asf", ".aac": "adts", ".ac3": "ac3",
          ".avi": "avi", ".ts": "mpegts", ".mpg": "mpeg", ".mpeg": "mpeg"}
# Suffixes of containers that hold sound only: a video written to one of
# these keeps just its enhanced audio.
AUDIO_ONLY_SUFFIXES = frozenset({".m4a", ".m4b", ".mka", ".wma", ".aac", ".ac3"})
# With --audio-only, a video's output suffix: the audio flavour of its container.
AUDIO_SUFFIX_OF = {".mp4": ".m4a", ".m4v": ".m4a", ".mov": ".m4a", ".3gp": ".m4a",
                   ".wmv": ".wma", ".asf": ".wma", ".webm": ".webm"}
# The first bytes of the containers FFmpeg reads that libsndfile does not: a
# folder walk takes a file by these when its extension is unknown or lies.
_SIGNATURES = ((4, b"ftyp"), (0, b"\x1a\x45\xdf\xa3"), (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"),
               (0, b"\xff\xf1"), (0, b"\xff\xf9"), (0, b"\x0b\x77"), (0, b"\x00\x00\x01\xba"))
# FFmpeg's decoders by the encoder that writes their codec, where the names differ.
_ENCODER_OF = {"mp3float": "libmp3lame", "mp3": "libmp3lame", "opus": "libopus",
               "wmav1": "wmav2"}
# FFmpeg's default layout for a channel count, for inputs that give only the
# count (WAV, WMA): encoders such as AAC need to know which channel is which.
_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1",
                    8: "7.1"}
# Encoders with no bitrate to keep.
_LOSSLESS = ("flac", "alac", "pcm_", "wavpack", "tta")
# A frame size for encoders that take any (FLAC, PCM).
_ANY_FRAME = 4096
# A gap in an input track's timestamps longer than this is filled with silence.
_GAP_S = 0.001


@dataclass(frozen=True)
class Track:
    """One audio track of a media file, as its header describes it."""

    index: int  # the stream's index in the container
    number: int  # 1-based among the audio tracks: what --audio-track counts
    codec: str
    sample_rate: int
    channels: int
    samples: int  # estimated from the header; exact once decoded


@dataclass(frozen=True)
class MediaInfo:
    container: str  # FFmpeg's name of the demuxer
    tracks: tuple[Track, ...]  # the audio tracks FFmpeg decodes
    video: bool
    undecodable: tuple[int, ...] = ()  # numbers of the audio tracks it cannot

    def describe(self) -> str:
        kind = "video" if self.video else "audio"
        codecs = ", ".join(track.codec for track in self.tracks)
        return f"{self.container.split(',')[0]} {kind} ({codecs})"


@dataclass(frozen=True)
class Decoded:
    """A track decoded to ``path``: its samples, the timestamp of the first
    (seconds) and its measured bitrate."""

    path: str
    samples: int
    start: Fraction
    bit_rate: int | None


def is_media(path: Path) -> bool:
    """Whether ``path`` starts like a container FFmpeg reads and libsndfile does not."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return False
    return any(head[offset:offset + len(magic)] == magic for offset, magic in _SIGNATURES)


def _cause(error: Exception) -> str:
    """FFmpeg's reason: its last log line where it gave one (``moov atom not
    found``), else the error's text, without the file name it repeats."""
    text = str(error)
    if "last error log:" in text:
        return text.split("last error log:", 1)[1].split("]", 1)[-1].strip()
    return (getattr(error, "strerror", None) or text).strip().rstrip(".").lower()


def _open(path: Path | str):
    # FFmpeg says why it cannot read a file only in its log: caught here
    # (not printed), so that the error can name the cause.
    quiet = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture():
            return av.open(str(path), metadata_errors="replace")
    except av.FFmpegError as error:
        raise FileError(path, f"not a readable audio or video file ({_cause(error)})") from None
    finally:
        av.logging.set_level(quiet)


def _is_picture(stream) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def probe_media(path: Path) -> MediaInfo:
    """The audio tracks of ``path`` (from its header); a :class:`FileError`
    when FFmpeg cannot read it or it has no sound."""
    with _open(path) as container:
        video = any(not _is_picture(stream) for stream in container.streams.video)
        if not container.streams.audio:
            raise FileError(path, "has no audio track" + (" (a video without sound)"
                                                           if video else ""))
        tracks, undecodable = [], []
        for number, stream in enumerate(container.streams.audio, 1):
            context = stream.codec_context
            if context is None or not context.sample_rate or not context.channels:
                undecodable.append(number)  # copied as it is, if the output keeps it
            else:
                tracks.append(_track(container, stream, number))
        if not tracks:
            raise FileError(path, f"its audio (track {', '.join(map(str, undecodable))}) is in "
                                  "a codec FFmpeg cannot decode")
        return MediaInfo(container.format.name, tuple(tracks), video, tuple(undecodable))


def _track(container, stream, number: int) -> Track:
    context = stream.codec_context
    rate = context.sample_rate
    if stream.duration is not None:
        seconds = float(stream.duration * stream.time_base)
    else:
        seconds = (container.duration or 0) / av.time_base
    return Track(stream.index, number, context.codec.name, rate, context.channels,
                 max(1, round(seconds * rate)))


def decode_tracks(path: Path | str, tracks: list[Track], folder: Path) -> list[Decoded]:
    """Decode ``tracks`` in one pass over ``path``, each to a float W64 file
    in ``folder``; gaps in the timestamps are filled with silence so the samples
    stay on the file's timeline."""
    with _open(path) as container:
        streams = [container.streams[track.index] for track in tracks]
        sinks = {stream.index: _TrackDecoder(stream, track, folder / f"track{track.number}.w64")
                 for stream, track in zip(streams, tracks)}
        try:
            for packet in container.demux(*streams):
                sinks[packet.stream.index].add(packet)
            return [sinks[stream.index].finish() for stream in streams]
        except av.FFmpegError as error:
            raise FileError(path, f"cannot decode its audio ({_cause(error)})") from None
        finally:
            for sink in sinks.values():
                sink.close()


class _TrackDecoder:
    """One track's packets decoded into a float W64 file, with the
    timestamp of its first sample and the bytes its packets held."""

    def __init__(self, stream, track: Track, target: Path):
        self.stream, self.track, self.target = stream, track, target
        self.rate = track.sample_rate
        self.file = sf.SoundFile(str(target), "w", self.rate, track.channels, "FLOAT",
                                 format="W64")
        self.resampler = av.AudioResampler(format="fltp", layout=stream.codec_context.layout,
                                           rate=self.rate)
        self.start: Fraction | None = None
        self.written = 0
        self.bytes = 0

    def add(self, packet) -> None:
        self.bytes += packet.size
        for frame in packet.decode():
            if self.start is None:
                self.start = Fraction(frame.pts * frame.time_base) if frame.pts is not None \
                    else Fraction(0)
            elif frame.pts is not None:
                self._fill_gap(round((frame.pts * frame.time_base - self.start) * self.rate))
            for converted in self.resampler.resample(frame):
                self._write(_samples(converted))

    def _fill_gap(self, position: int) -> None:
        missing = position - self.written
        if missing > _GAP_S * self.rate:
            self._write(np.zeros((self.track.channels, missing), np.float32))

    def _write(self, samples: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(samples.T, dtype=np.float32))
        self.written += samples.shape[-1]

    def finish(self) -> Decoded:
        for converted in self.resampler.resample(None):
            self._write(_samples(converted))
        self.file.close()
        if self.written == 0:
            raise FileError(self.stream.container.name,
                            f"audio track {self.track.number} holds no samples (zero length)")
        seconds = self.written / self.rate
        return Decoded(str(self.target), self.written, self.start or Fraction(0),
                       round(self.bytes * 8 / seconds) if self.bytes else None)

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()


def write_media(source: Path | str, target: Path, muxer: str,
                enhanced: dict[int, tuple[Decoded, str]], audio_only: bool) -> None:
    """Write ``target`` (already a temporary name) in the ``muxer``'s format
    from ``source``: the tracks in ``enhanced`` (stream index -> (the
    decoded input, the enhanced W64 file)) encoded anew, every other stream
    copied packet for packet; with ``audio_only``, only the enhanced tracks
    (and cover art)."""
    with _open(source) as container:
        if muxer == "ipod" and any(_is_picture(stream) for stream in container.streams.video):
            muxer = "mp4"  # the iPod flavour of MP4 cannot hold cover art
        with av.open(str(target), "w", format=muxer) as output:
            _write(container, output, source, muxer, enhanced, audio_only)


def _write(container, output, source, muxer: str, enhanced: dict[int, tuple[Decoded, str]],
           audio_only: bool) -> None:
    output.metadata.update(container.metadata)
    encoders: dict[int, _TrackEncoder] = {}
    copies = {}
    chapters = container.chapters()
    try:
        for stream in container.streams:
            if stream.index in enhanced:
                encoders[stream.index] = _TrackEncoder(output, stream, *enhanced[stream.index],
                                                       muxer)
            elif chapters and stream.type == "data" and stream.codec_context is None:
                continue  # MP4's chapter track: the muxer makes it anew from the chapters
            elif not audio_only or (stream.type == "video" and _is_picture(stream)):
                copies[stream.index] = _copy_of(output, stream, source, muxer)
        output.set_chapters(chapters)
        output.start_encoding()
        wanted = [container.streams[index] for index in (*copies, *encoders)]
        for packet in container.demux(*wanted):
            index = packet.stream.index
            if index in encoders:
                if packet.pts is not None:
                    end = (packet.pts + (packet.duration or 0)) * packet.time_base
                    encoders[index].encode_until(end)
            elif packet.size:  # not the demuxer's empty end-of-stream packet
                packet.stream = copies[index]
                output.mux(packet)
        for encoder in encoders.values():
            encoder.finish()
    except av.FFmpegError as error:
        raise FileError(source, f"cannot write it as {muxer} ({_cause(error)})") from None
    finally:
        for encoder in encoders.values():
            encoder.close()


def _copy_of(output, stream, source, muxer: str):
    """A stream of ``output`` that takes ``stream``'s packets as they are."""
    try:
        copy = output.add_stream_from_template(stream)
    except (av.FFmpegError, ValueError) as error:
        codec = stream.codec_context.name if stream.codec_context else "unknown codec"
        raise FileError(source, f"cannot copy its {stream.type} stream {stream.index} "
                                f"({codec}) into {muxer} ({_cause(error)})") from None
    copy.metadata.update(stream.metadata)
    copy.disposition = stream.disposition
    return copy


def round_trip_lag(muxer: str, encoder: str, rate: int, layout, bit_rate: int | None,
                   start: int = 0) -> int:
    """How many samples later than fed (negative: earlier) a decoder of
    ``muxer``'s files gives an ``encoder``'s output back, beyond the delay
    the container signals, for a track starting at sample ``start`` of the
    file's timeline (an MP4 track that starts late keeps its priming):
    measured on a short noise burst in memory."""
    rng = np.random.default_rng(0)
    channels = layout.nb_channels
    burst = np.zeros((channels, 8 * _ANY_FRAME), np.float32)
    noisy = slice(3 * _ANY_FRAME, 5 * _ANY_FRAME)
    burst[:, noisy] = 0.3 * rng.standard_normal(2 * _ANY_FRAME)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=muxer) as output:
        stream = _add_encoder(output, encoder, rate, layout, bit_rate)
        output.start_encoding()
        size = stream.codec_context.frame_size or _ANY_FRAME
        for offset in range(0, burst.shape[-1], size):
            _encode(output, stream, burst[:, offset: offset + size], start + offset)
        _encode(output, stream, None, 0)
    buffer.seek(0)
    with av.open(buffer, "r", format=muxer) as container:
        decoded = np.concatenate([_samples(frame)[0] for frame in container.decode(audio=0)])
    reach = _ANY_FRAME
    decoded = np.pad(decoded, (0, max(0, burst.shape[-1] - len(decoded))))
    scores = correlate(decoded[noisy.start - reach: noisy.stop + reach], burst[0, noisy],
                       mode="valid")
    return int(np.argmax(scores)) - reach


def _samples(frame) -> np.ndarray:
    """A decoded frame as ``[C, T]``, planar or packed."""
    channels = frame.layout.nb_channels
    data = frame.to_ndarray()
    return data.reshape(channels, -1) if frame.format.is_planar else data.reshape(-1, channels).T


def _add_encoder(output, encoder: str, rate: int, layout, bit_rate: int | None):
    stream = output.add_stream(encoder, rate=rate, layout=layout)
    if bit_rate:
        stream.bit_rate = bit_rate
    if encoder == "vorbis":
        stream.codec_context.options = {"strict": "experimental"}
    return stream


def _encode(output, stream, samples: np.ndarray | None, pts: int) -> None:
    frame = None
    if samples is not None:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.float32),
                                           format="fltp", layout=stream.codec_context.layout)
        frame.sample_rate = stream.codec_context.sample_rate
        frame.pts = pts
        frame.time_base = Fraction(1, frame.sample_rate)
    for packet in stream.encode(frame):
        output.mux(packet)


def encoder_for(codec: str, muxer: str) -> str:
    """The encoder that writes ``codec`` into ``muxer``'s files; the muxer's
    own default where this FFmpeg has no encoder for it or the container
    cannot hold it."""
    name = _ENCODER_OF.get(codec, codec)
    with av.open(io.BytesIO(), "w", format=muxer) as probe:
        try:
            probe.add_stream(name, rate=48000)
            return name
        except (av.FFmpegError, ValueError):  # no such encoder, or not in this container
            return probe.default_audio_codec


# Muxers whose edit list makes any number of leading samples skipped: there
# the output's length is made exact by feeding silence before the start.
_EDIT_LISTS = frozenset({"mp4", "mov", "ipod", "3gp"})


class _TrackEncoder:
    """One enhanced track, encoded into ``output`` as the demuxer's packets
    of the original track come by (so the streams stay interleaved)."""

    def __init__(self, output, stream, decoded: Decoded, path: str, muxer: str):
        context = stream.codec_context
        self.rate = context.sample_rate
        layout = context.layout
        if layout.name.endswith(" channels") and layout.nb_channels in _DEFAULT_LAYOUTS:
            layout = av.AudioLayout(_DEFAULT_LAYOUTS[layout.nb_channels])
        encoder = encoder_for(context.codec.name, muxer)
        # The input's bitrate, where its codec is kept and has one.
        kept = encoder == _ENCODER_OF.get(context.codec.name, context.codec.name)
        bit_rate = (context.bit_rate or decoded.bit_rate) \
            if kept and not encoder.startswith(_LOSSLESS) else None
        self.stream = _add_encoder(output, encoder, self.rate, layout, bit_rate)
        self.stream.metadata.update(stream.metadata)
        self.stream.disposition = stream.disposition
        self.start = round(decoded.start * self.rate)
        self.lag = round_trip_lag(muxer, encoder, self.rate, layout, bit_rate, self.start)
        self.file = sf.SoundFile(path)
        self.left = self.file.frames
        self.muxer = muxer
        self.size = None  # the encoder's frame, known once it is open

    def _begin(self) -> None:
        """Line the enhanced samples up with the input's. A decoder that
        drops the start (a negative lag) is fed silence before it; one that
        keeps an encoder delay the container does not declare (a positive
        lag: raw ADTS, an MP4 track that starts late) gives it the first
        samples, as the input's own decoding did. In an MP4 whose edit
        list trims the start, the silence fed first is made long enough
        that the output ends on a frame boundary, so nothing is added at
        the end."""
        self.size = self.stream.codec_context.frame_size or _ANY_FRAME
        lead, skip = max(0, -self.lag), max(0, self.lag)
        if self.muxer in _EDIT_LISTS and self.lag == 0 and self.stream.codec_context.frame_size:
            lead += -self.left % self.size
        self.queue = np.zeros((self.file.channels, lead), np.float32)
        if skip:
            self.file.seek(min(skip, self.left))
            self.left -= min(skip, self.left)
        self.pts = self.start + skip - lead  # each sample at its own time

    def encode_until(self, seconds: Fraction | None) -> None:
        """Encode whole frames up to ``seconds`` on the track's timeline (all: ``None``)."""
        if self.size is None:
            self._begin()
        limit = None if seconds is None else round(seconds * self.rate)
        while self.left or self.queue.shape[-1]:
            if limit is not None and self.pts >= limit:
                return
            while self.queue.shape[-1] < self.size and self.left:
                block = self.file.read(min(self.left, 16 * self.size), dtype="float32",
                                       always_2d=True).T
                self.left = self.left - block.shape[-1] if block.shape[-1] else 0
                self.queue = np.concatenate([self.queue, block], axis=-1)
            frame, self.queue = self.queue[:, : self.size], self.queue[:, self.size:]
            _encode(self.stream.container, self.stream, frame, self.pts)
            self.pts += frame.shape[-1]

    def finish(self) -> None:
        self.encode_until(None)
        _encode(self.stream.container, self.stream, None, 0)

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()


def muxer_for(target: str | Path, source_container: str, video: bool) -> str:
    """The muxer that writes ``target``: by its suffix, else (standard
    output, a spooled input) the container the input came in."""
    suffix = Path(str(target)).suffix.lower()
    if suffix in MUXERS:
        return MUXERS[suffix]
    family = source_container.split(",")[0]
    return {"mov": "mp4" if video else "ipod", "matroska": "matroska", "asf": "asf",
            "aac": "adts", "ogg": "ogg", "avi": "avi", "mpegts": "mpegts",
            "ac3": "ac3"}.get(family, "matroska")
