"""Live enhancement between audio devices, through PortAudio (sounddevice).

One duplex stream reads a hop of the input device and writes the hop that
is ready; the enhancement runs between, in the same thread, so there is no
queue to grow: if a hop takes longer than its duration, PortAudio's output
runs dry and reports an underflow, and the loop says so (with what to
change) rather than glitching silently.

On Linux, :class:`VirtualMicrophone` makes the output a microphone that
call apps can pick, as the original denoiser's README does by hand: a
PulseAudio (or PipeWire-Pulse) null sink that the enhanced audio is written
to, and a source remapped from its monitor (apps list monitors apart from
microphones, or not at all). Both are removed when the run ends, however it
ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from denoise.engine import backends
from denoise.engine.errors import UsageError
from denoise.engine.streaming import open_stream

# How often the status is reported, and over how many hops "cannot keep up"
# is judged (a single slow hop is absorbed by the device buffers).
STATUS_S = 1.0
LOAD_WINDOW = 50
# Hops of silence written ahead of the first output, so that jitter in the
# compute time and the sound server's scheduling does not underflow it:
# through PulseAudio on 2 busy CPUs, 2 hops lost audio in 1 of 8 runs, 3 in
# none of 14.
SLACK_HOPS = 3


def sounddevice():
    """The sounddevice module, or a one-line UsageError naming what to install."""
    try:
        import sounddevice as sd
    except ImportError:
        raise UsageError("live audio needs the sounddevice package: "
                         "pip install 'denoise-speech[live]'") from None
    except OSError as error:  # the module is there, libportaudio is not
        raise UsageError(f"live audio needs the PortAudio library ({error}); on Debian and "
                         "Ubuntu: apt install libportaudio2") from None
    return sd


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    host_api: str
    inputs: int
    outputs: int
    sample_rate: float
    default_input: bool
    default_output: bool


def list_devices() -> list[Device]:
    """The audio devices PortAudio sees."""
    sd = sounddevice()
    apis = [api["name"] for api in sd.query_hostapis()]
    default_in, default_out = sd.default.device
    return [Device(index, info["name"], apis[info["hostapi"]], info["max_input_channels"],
                   info["max_output_channels"], info["default_samplerate"],
                   index == default_in, index == default_out)
            for index, info in enumerate(sd.query_devices())]


@dataclass
class LiveStatus:
    """What the run has measured so far.

    ``latency_ms``: input to output, end to end, at most: the devices'
    buffers as PortAudio reports them (through PulseAudio's ALSA plugin,
    more than they hold: tests/test_live.py measured 84 ms where this said
    180), the enhancement's own algorithmic latency, and
    ``waiting_ms``: that latency rounded up to whole hops (the input comes
    in hops), the output's reserve (:class:`Ready`) and the hop of slack
    written ahead. ``compute_ms``: the slowest of the recent hops'
    enhancement times, beside ``hop_ms``, their duration; ``gaps``: hops the
    output had to pad with silence.
    """

    sample_rate: int
    hop_ms: float
    algorithmic_ms: float
    waiting_ms: float
    device_ms: float = 0.0
    hops: int = 0
    overflows: int = 0
    underflows: int = 0
    gaps: int = 0
    compute_ms: float = 0.0
    hum: str | None = None  # with --dehum, once found
    recent: deque = field(default_factory=lambda: deque(maxlen=LOAD_WINDOW))

    @property
    def latency_ms(self) -> float:
        return self.device_ms + self.algorithmic_ms + self.waiting_ms

    @property
    def keeping_up(self) -> bool:
        """Whether the recent hops took, on average, less than 90 % of their time."""
        return not self.recent or np.mean(self.recent) < 0.9 * self.hop_ms


def run_live(spec: backends.BackendSpec, input_device=None, output_device=None,
             sample_rate: int | None = None, channel_mode: str = "each", dry: float = 0.0,
             hop_ms: float | None = None, dehum: str = "off",
             on_status: Callable[[LiveStatus], None] | None = None,
             seconds: float | None = None) -> LiveStatus:
    """Enhance ``input_device`` into ``output_device`` (names, parts of names
    or numbers; ``None``: the defaults) until Ctrl-C, or for ``seconds``.

    Mono in and out: a microphone is one channel, and a stereo device takes
    it on both. ``on_status`` is called about once a second.
    """
    sd = sounddevice()
    try:
        sd.query_devices(input_device, "input")
        sd.query_devices(output_device, "output")
    except ValueError as error:
        raise UsageError(f"{error} (see denoise --list-devices)") from None
    backend_rate = backends.build(spec).sample_rate
    # A model's own rate, where it has one: the sound server converts (it does
    # anyway, to the device's rate), and nothing is resampled twice.
    rate = int(sample_rate or backend_rate or 48_000)
    stream = open_stream(spec, rate, 1, channel_mode, dry, hop_ms, dehum)
    hop = stream.hop_samples
    latency = stream.latency_samples
    waiting = -latency % hop + hop // 4 + SLACK_HOPS * hop
    status = LiveStatus(rate, 1000 * hop / rate, 1000 * latency / rate, 1000 * waiting / rate)
    try:
        device = sd.Stream(samplerate=rate, blocksize=hop, device=(input_device, output_device),
                           channels=1, dtype="float32", latency="low")
    except sd.PortAudioError as error:
        raise UsageError(f"cannot open the audio devices at {rate} Hz: {error}") from None
    with device:
        try:
            _run(device, stream, status, hop, on_status, seconds,
                 (lambda: stream.found()[0]) if dehum != "off" else (lambda: None))
        finally:
            status.compute_ms = max(status.recent, default=0.0)
            if on_status is not None:
                on_status(status)
    return status


def _run(device, stream, status: LiveStatus, hop: int, on_status, seconds: float | None,
         hum: Callable[[], str | None]) -> None:
    """The loop: read a hop, enhance it, write the hop that is ready."""
    status.device_ms = 1000 * sum(device.latency)
    device.write(np.zeros((hop * SLACK_HOPS, 1), dtype=np.float32))
    ready = Ready(hop)
    if on_status is not None:
        on_status(status)  # running: the devices are open
    started = last_report = time.monotonic()
    while seconds is None or time.monotonic() - started < seconds:
        block, overflowed = device.read(hop)
        began = time.perf_counter()
        ready.add(stream.feed(block.T)[0])
        status.recent.append(1000 * (time.perf_counter() - began))
        status.underflows += bool(device.write(ready.next_hop()[:, None]))
        status.hops += 1
        status.gaps = ready.gaps
        status.overflows += bool(overflowed)
        if on_status is not None and time.monotonic() - last_report >= STATUS_S:
            status.compute_ms = max(status.recent)
            status.hum = hum()
            on_status(status)
            last_report = time.monotonic()


class Ready:
    """Enhanced samples waiting for the output, written a hop per input hop.

    Until the stream's first output the device plays silence; that output is
    then preceded by as much silence as makes a hop and a quarter, so that
    a stream whose hops vary by a few samples (resampled at a rate that is
    not a whole multiple) never leaves the device a sample short. A hop that
    is short anyway is padded with silence and counted in ``gaps``.
    """

    def __init__(self, hop: int):
        self.hop = hop
        self.samples = np.zeros(0, dtype=np.float32)
        self.started = False
        self.gaps = 0

    def add(self, samples: np.ndarray) -> None:
        if not self.started and len(samples):
            self.started = True
            samples = np.pad(samples, (max(0, self.hop + self.hop // 4 - len(samples)), 0))
        self.samples = np.concatenate([self.samples, samples])

    def next_hop(self) -> np.ndarray:
        if not self.started:
            return np.zeros(self.hop, dtype=np.float32)
        out, self.samples = self.samples[:self.hop], self.samples[self.hop:]
        self.gaps += len(out) < self.hop
        return np.pad(out, (0, self.hop - len(out)))


class VirtualMicrophone:
    """A PulseAudio/PipeWire microphone named ``description`` that plays what
    is written to its sink, for the duration of a ``with`` block.

    Entering it loads a null sink and a source remapped from the sink's
    monitor, and points this process's PortAudio output at the sink
    (``PULSE_SINK``, read when PortAudio starts, so enter it before any
    device is opened); leaving it unloads both.
    """

    def __init__(self, name: str = "denoise", description: str = "Denoise microphone",
                 sample_rate: int = 48_000):
        self.name, self.description, self.sample_rate = name, description, sample_rate
        self.modules: list[str] = []

    def __enter__(self) -> VirtualMicrophone:
        if shutil.which("pactl") is None:
            raise UsageError("--virtual-mic needs PulseAudio or PipeWire's pactl; on Debian "
                             "and Ubuntu: apt install pulseaudio-utils")
        label = self.description.replace(" ", "\\ ")
        try:
            self._load("module-null-sink", f"sink_name={self.name}", f"rate={self.sample_rate}",
                       "channels=1", f"sink_properties=device.description={label}\\ (sink)")
            self._load("module-remap-source", f"master={self.name}.monitor",
                       f"source_name={self.name}_mic", "channels=1",
                       f"source_properties=device.description={label}")
        except BaseException:
            self.__exit__()
            raise
        os.environ["PULSE_SINK"] = self.name
        return self

    def __exit__(self, *_exc) -> None:
        while self.modules:
            subprocess.run(["pactl", "unload-module", self.modules.pop()],
                           capture_output=True, timeout=10)

    def _load(self, module: str, *arguments: str) -> None:
        done = subprocess.run(["pactl", "load-module", module, *arguments],
                              capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            reason = (done.stderr or done.stdout).strip().splitlines()
            raise UsageError(f"cannot create the virtual microphone: pactl load-module "
                             f"{module}: {reason[-1] if reason else 'failed'}")
        self.modules.append(done.stdout.strip())
