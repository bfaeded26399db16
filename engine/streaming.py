"""Enhancement as the signal arrives: a backend's causal stream, at the
signal's own rate and channels, shaped like a batch run's output.

:func:`open_stream` gives a :class:`~denoise.engine.backends.Stream` for
``[C, n]`` blocks at any rate: a backend that works at one rate (DEMUCS,
16 kHz) is fed through :class:`StreamResampler` and its output brought back;
``channels="mix"`` enhances the mono mix and writes it to every channel;
the level stage (:class:`Levelled`) brings a backend's input to its speech
level with a causal gain and divides it out of the output; ``dry`` mixes
the input back, aligned sample for sample; ``dehum`` takes mains hum out
of the input first (:mod:`~denoise.engine.hum_stream`, no latency). The pipe and live
front ends (:mod:`~denoise.engine.pipe`, :mod:`~denoise.engine.live`) only
move blocks in and out of it.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from denoise.engine import backends
from denoise.engine.errors import UsageError
from denoise.engine.hum_stream import HumCanceller
from denoise.engine.level import CausalGain

# The channel modes a stream can do: "linked" applies the mix's gains per
# STFT bin, over the whole file, which a stream does not have.
STREAM_CHANNEL_MODES = ("each", "mix")


def open_stream(spec: backends.BackendSpec, sample_rate: int, channels: int,
                channel_mode: str = "each", dry: float = 0.0,
                hop_ms: float | None = None, dehum: str = "off") -> backends.Stream:
    """A live enhancement of ``channels`` at ``sample_rate`` with the backend
    ``spec`` names (loaded here: a model is read once, before the first block).

    Raises :class:`UsageError` for a backend or setting that cannot stream.
    """
    if channel_mode not in STREAM_CHANNEL_MODES:
        raise UsageError(f"--channels {channel_mode} cannot stream (it needs the whole file); "
                         f"use {' or '.join(STREAM_CHANNEL_MODES)}")
    backend = backends.build(spec)
    enhanced_channels = 1 if channel_mode == "mix" else channels
    stream = backend.stream(sample_rate, enhanced_channels, hop_ms=hop_ms)
    if backend.level_range_dbfs is not None:
        stream = Levelled(stream, sample_rate, enhanced_channels, backend.level_range_dbfs)
    if channel_mode == "mix":
        stream = MixStream(stream, channels)
    if dry:
        stream = DryMix(stream, dry)
    if dehum != "off":
        stream = Dehummed(stream, HumCanceller(sample_rate, channels, dehum))
    return stream


class Dehummed:
    """Mains hum taken out of each channel before the stream it feeds; the
    lines of what was found in ``found()``."""

    def __init__(self, inner: backends.Stream, canceller: HumCanceller):
        self.inner, self.canceller = inner, canceller
        self.latency_samples, self.hop_samples = inner.latency_samples, inner.hop_samples

    def feed(self, block: np.ndarray) -> np.ndarray:
        return self.inner.feed(self.canceller.feed(block))

    def flush(self) -> np.ndarray:
        return self.inner.flush()

    def found(self) -> list[str | None]:
        return self.canceller.found()


class MixStream:
    """The mono mix enhanced, written to every channel."""

    def __init__(self, inner: backends.Stream, channels: int):
        self.inner, self.channels = inner, channels
        self.latency_samples, self.hop_samples = inner.latency_samples, inner.hop_samples

    def feed(self, block: np.ndarray) -> np.ndarray:
        return self._spread(self.inner.feed(block.mean(axis=0, keepdims=True)))

    def flush(self) -> np.ndarray:
        return self._spread(self.inner.flush())

    def _spread(self, mono: np.ndarray) -> np.ndarray:
        return np.repeat(mono, self.channels, axis=0)


class _Waiting:
    """Samples put in as blocks, taken out in counts: what a stream's input
    (or its gain) was, for the output that matches it."""

    def __init__(self):
        self.blocks: deque[np.ndarray] = deque()

    def put(self, block: np.ndarray) -> None:
        self.blocks.append(block)

    def take(self, like: np.ndarray) -> np.ndarray:
        """The next ``like.shape[1]`` samples, shaped as ``like``."""
        taken = np.zeros_like(like)
        filled = 0
        while filled < like.shape[1]:
            head = self.blocks[0]
            count = min(head.shape[1], like.shape[1] - filled)
            taken[:, filled:filled + count] = head[:, :count]
            filled += count
            if count == head.shape[1]:
                self.blocks.popleft()
            else:
                self.blocks[0] = head[:, count:]
        return taken


class Levelled:
    """The level stage in a stream: each input sample multiplied by the gain
    :class:`~denoise.engine.level.CausalGain` gives it, and the output
    sample that is its enhancement divided by the same gain, so the
    output keeps the input's level whatever the backend's latency."""

    def __init__(self, inner: backends.Stream, sample_rate: int, channels: int,
                 level_range_dbfs: tuple[float, float]):
        self.inner = inner
        self.gain = CausalGain(sample_rate, channels, level_range_dbfs)
        self.latency_samples, self.hop_samples = inner.latency_samples, inner.hop_samples
        self.waiting = _Waiting()

    def feed(self, block: np.ndarray) -> np.ndarray:
        gains = self.gain.gains(block)
        self.waiting.put(gains)
        return self._undo(self.inner.feed(np.asarray(block, dtype=np.float32) * gains))

    def flush(self) -> np.ndarray:
        return self._undo(self.inner.flush())

    def _undo(self, out: np.ndarray) -> np.ndarray:
        return out / self.waiting.take(np.asarray(out, dtype=np.float32))


class DryMix:
    """``(1 - dry) * enhanced + dry * input``, the input delayed to match."""

    def __init__(self, inner: backends.Stream, dry: float):
        self.inner, self.dry = inner, np.float32(dry)
        self.latency_samples, self.hop_samples = inner.latency_samples, inner.hop_samples
        self.waiting = _Waiting()  # input not yet matched by output

    def feed(self, block: np.ndarray) -> np.ndarray:
        self.waiting.put(np.asarray(block, dtype=np.float32))
        return self._mix(self.inner.feed(block))

    def flush(self) -> np.ndarray:
        return self._mix(self.inner.flush())

    def _mix(self, out: np.ndarray) -> np.ndarray:
        return (1 - self.dry) * out + self.dry * self.waiting.take(out)


class StreamResampler:
    """Band-limited rate change of ``[C, n]`` blocks, with its state kept.

    A polyphase windowed-sinc filter (Kaiser, beta 5, ten zero crossings of
    the lower Nyquist each side: ``scipy.signal.resample_poly``'s design),
    centred, so output sample ``m`` is at input time ``m / ratio``; it needs
    ``latency_samples`` input samples after that time. Fed in any blocks, the
    output is the same; after :meth:`flush`, it is ``ceil(n * ratio)`` long.
    """

    def __init__(self, from_rate: int, to_rate: int, channels: int):
        from scipy.signal import firwin

        common = math.gcd(from_rate, to_rate)
        self.up, self.down = to_rate // common, from_rate // common
        self.half = 10 * max(self.up, self.down)
        taps = firwin(2 * self.half + 1, 1 / max(self.up, self.down),
                      window=("kaiser", 5.0)) * self.up
        self.taps_per_phase = -(-len(taps) // self.up)
        taps = np.pad(taps, (0, self.taps_per_phase * self.up - len(taps)))
        # phases[p, j] is the tap applied to input sample n_hi - j for output
        # positions p steps past n_hi on the upsampled grid.
        self.phases = taps.reshape(self.taps_per_phase, self.up).T.astype(np.float32)
        self.latency_samples = -(-self.half // self.up)
        # Input kept from ``start`` on; zeros before the signal begins.
        self.history = np.zeros((channels, self.taps_per_phase), dtype=np.float32)
        self.start = -self.taps_per_phase
        self.received = self.produced = 0

    def feed(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32)
        self.received += block.shape[1]
        self.history = np.concatenate([self.history, block], axis=1)
        # Output m needs input up to (m * down + half) // up.
        ready = (self.received * self.up - 1 - self.half) // self.down + 1
        return self._produce(max(ready, self.produced))

    def flush(self) -> np.ndarray:
        total = -(-self.received * self.up // self.down)
        self.history = np.pad(self.history, ((0, 0), (0, self.latency_samples + 1)))
        return self._produce(total)

    def _produce(self, until: int) -> np.ndarray:
        outputs = np.arange(self.produced, until)
        position = outputs * self.down + self.half
        newest, phase = np.divmod(position, self.up)
        index = newest[:, None] - np.arange(self.taps_per_phase)[None, :] - self.start
        out = np.einsum("cmk,mk->cm", self.history[:, index], self.phases[phase])
        self.produced = until
        # Keep what the next output's filter still reaches back to.
        oldest = (self.produced * self.down + self.half) // self.up - self.taps_per_phase + 1
        drop = max(0, min(oldest - self.start, self.history.shape[1]))
        self.history, self.start = self.history[:, drop:], self.start + drop
        return out.astype(np.float32, copy=False)


class AtRate:
    """A stream that works at ``model_rate`` run on a signal at ``sample_rate``:
    resampled in, enhanced, resampled back; as long as the input, aligned."""

    def __init__(self, inner: backends.Stream, sample_rate: int, model_rate: int,
                 channels: int):
        self.inner = inner
        self.to_model = StreamResampler(sample_rate, model_rate, channels)
        self.back = StreamResampler(model_rate, sample_rate, channels)
        self.latency_samples = (self.to_model.latency_samples + math.ceil(
            (inner.latency_samples + self.back.latency_samples) * sample_rate / model_rate))
        self.hop_samples = math.ceil(inner.hop_samples * sample_rate / model_rate)
        self.received = self.sent = 0

    def feed(self, block: np.ndarray) -> np.ndarray:
        self.received += block.shape[1]
        return self._count(self.back.feed(self.inner.feed(self.to_model.feed(block))))

    def flush(self) -> np.ndarray:
        model_tail = self.inner.feed(self.to_model.flush())
        out = np.concatenate([self.back.feed(model_tail),
                              self.back.feed(self.inner.flush()), self.back.flush()], axis=1)
        owed = self.received - self.sent
        out = np.pad(out, ((0, 0), (0, max(0, owed - out.shape[1]))))[:, :owed]
        return self._count(out)

    def _count(self, out: np.ndarray) -> np.ndarray:
        out = out[:, :max(0, self.received - self.sent)]
        self.sent += out.shape[1]
        return out


class PerChannel:
    """One mono stream per channel, fed and read together."""

    def __init__(self, streams: list[backends.Stream]):
        self.streams = streams
        self.latency_samples, self.hop_samples = streams[0].latency_samples, streams[0].hop_samples

    def feed(self, block: np.ndarray) -> np.ndarray:
        return np.concatenate([stream.feed(block[index:index + 1])
                               for index, stream in enumerate(self.streams)])

    def flush(self) -> np.ndarray:
        return np.concatenate([stream.flush() for stream in self.streams])
