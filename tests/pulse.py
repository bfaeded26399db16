"""A private PulseAudio server for end-to-end tests of live audio, with no mocks.

A test starts its own ``pulseaudio`` in a temporary folder, adds null sinks
(virtual speakers whose ``<sink>.monitor`` source hears what is played into
them), plays a known signal into one sink in real time, lets the program under
test read and write through PortAudio, and records another sink's monitor::

    with PulseServer() as server:
        server.add_null_sink("mic")
        server.add_null_sink("speaker")
        with server.record("speaker") as recording:
            program = subprocess.Popen(cmd, env=server.env(PULSE_SOURCE="mic.monitor",
                                                           PULSE_SINK="speaker"))
            server.play("mic", signal).wait()
            program.wait()
        heard = recording.samples          # [T, C] float32

Two recorders started one after the other begin 20-50 ms apart, so to measure
a latency, ``add_channel_sinks`` makes mono sinks that are channels of one
null sink: a single recording of it holds all of them, sample-aligned.

Measured on Debian 12 (PulseAudio 16.1, PortAudio 19.6), the reason for each
setting below:

- The server runs as root in user mode (``--system=no``); system mode wants a
  dedicated ``pulse`` user. ``-n`` skips ``default.pa``, so no hardware is
  probed and the server holds only what a test adds. The server gets private
  ``XDG_RUNTIME_DIR`` and ``HOME`` folders and its clients ``PULSE_SERVER``,
  so a developer's own sound session is never touched.
- Null sinks need ``norewinds=1``: with rewinds, a stream that joins a running
  sink loses its first 2-85 ms.
- An idle null sink renders in 2 s blocks until a client asks for low latency,
  and a change only takes effect at the next block. So each sink gets a
  low-latency recorder on its monitor for its whole life, and nothing is played
  or recorded until ``SINK_SETTLE_S`` after the last sink was added.
- Sinks hold float32, the format the tests play and record, so a pass-through
  comes back bit-identical rather than quantised to 16 bits.
- ``PULSE_SOURCE``/``PULSE_SINK`` in a client's environment choose its source
  and sink; PortAudio reaches the server through its ALSA ``pulse`` device.
- libpulse starts a server of its own when it finds none (autospawn); the
  client configuration turns that off, so a client that outlives the server
  cannot leave a stray daemon behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

SAMPLE_FORMAT = "float32le"  # pacat and module-null-sink name for np.float32, little-endian
LOW_LATENCY_MS = 10  # what recorders ask for; a sink renders in blocks of its lowest request
# A player asking for 10 ms underran in 2 of 5 runs with both CPUs busy,
# leaving gaps in what it played; asking for 200 ms, in none of 5. Its buffer
# does not slow the sink, which still renders in LOW_LATENCY_MS blocks for the
# recorders.
PLAYER_BUFFER_MS = 200
SINK_SETTLE_S = 2.0  # one idle null-sink block: the low latency is in force after it
STOP_TIMEOUT_S = 5.0  # per process, after SIGTERM, before SIGKILL
DEBIAN_PACKAGES = "pulseaudio pulseaudio-utils libportaudio2 libasound2-plugins"
SOUNDDEVICE = "the Python package sounddevice"
_PULSE_VARIABLES = ("PULSE_SERVER", "PULSE_SINK", "PULSE_SOURCE", "PULSE_COOKIE",
                    "PULSE_CLIENTCONFIG", "PULSE_RUNTIME_PATH", "PULSE_STATE_PATH")


def missing() -> list[str]:
    """What this machine lacks for the PulseAudio tests; empty when nothing."""
    lacking = [tool for tool in ("pulseaudio", "pacat", "pactl") if shutil.which(tool) is None]
    if not _portaudio_loads():
        lacking.append("libportaudio")
    # The tests drive PortAudio through sounddevice, as the live mode does.
    if importlib.util.find_spec("sounddevice") is None:
        lacking.append(SOUNDDEVICE)
    return lacking


def available() -> bool:
    """Whether ``pulseaudio``, ``pacat``, ``pactl``, libportaudio and sounddevice are all here."""
    return not missing()


def require_pulse() -> None:
    """Skip the calling test where PulseAudio is missing; fail instead when ``CI`` is set.

    A developer's laptop may lack the audio stack; CI installs it (``.ci/run``),
    so there a missing piece is a broken environment, not a reason to skip.
    """
    lacking = missing()
    if not lacking:
        return
    fixes = []
    if any(piece != SOUNDDEVICE for piece in lacking):
        fixes.append(f"apt-get install {DEBIAN_PACKAGES} (Debian)")
    if SOUNDDEVICE in lacking:
        fixes.append("pip install sounddevice")
    reason = f"PulseAudio end-to-end tests need {', '.join(lacking)}: {' and '.join(fixes)}"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def _portaudio_loads() -> bool:
    # The same look-up sounddevice makes; on Linux its wheel brings no PortAudio.
    name = ctypes.util.find_library("portaudio")
    try:
        ctypes.CDLL(name or "libportaudio.so.2")
    except OSError:
        return False
    return True


class PulseServer:
    """A ``pulseaudio`` of its own in a temporary folder, stopped with all its helpers on exit.

    Args:
        start_timeout_s: how long ``start`` waits for ``pactl info`` to answer.
    """

    def __init__(self, start_timeout_s: float = 10.0):
        if start_timeout_s <= 0:
            raise ValueError(f"start_timeout_s must be positive, not {start_timeout_s}")
        self.start_timeout_s = start_timeout_s
        self.folder: Path | None = None
        self._daemon: subprocess.Popen | None = None
        self._helpers: list[subprocess.Popen] = []
        self._settled_at = 0.0  # time.monotonic() when the newest sink runs at low latency
        self._file_count = 0

    def __enter__(self) -> PulseServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> PulseServer:
        """Start the server and return once it answers; stop everything if it does not."""
        if self.folder is not None:
            raise RuntimeError("this PulseServer is already started")
        self.folder = Path(tempfile.mkdtemp(prefix="pulse-"))  # mode 0700, as pulseaudio wants
        try:
            for sub in ("runtime", "home", "files"):
                (self.folder / sub).mkdir(mode=0o700)
            (self.folder / "client.conf").write_text("autospawn = no\n")
            self._daemon = _spawn(
                ["pulseaudio", "-n", "--daemonize=no", "--system=no", "--disallow-exit",
                 "--exit-idle-time=-1", "--load=module-native-protocol-unix",
                 "--log-target=stderr"],
                env=self._server_env(), log=self.folder / "server.log")
            self._wait_until_answering()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the helpers, then the server, then delete the folder; safe to call twice."""
        # Helpers first, so that none of them sees the server vanish and complains.
        _terminate(*self._helpers)
        if self._daemon is not None:
            _terminate(self._daemon)
        self._helpers.clear()
        self._daemon = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def env(self, **extra: str) -> dict[str, str]:
        """This process's environment pointed at this server, plus ``extra`` (e.g. ``PULSE_SINK``)."""
        folder = self._started_folder()
        env = {key: value for key, value in os.environ.items() if key not in _PULSE_VARIABLES}
        env.update(
            PULSE_SERVER=f"unix:{folder / 'runtime' / 'pulse' / 'native'}",
            PULSE_COOKIE=str(folder / "home" / ".config" / "pulse" / "cookie"),
            PULSE_CLIENTCONFIG=str(folder / "client.conf"),
        )
        env.update(extra)
        return env

    def pactl(self, *args: str) -> str:
        """Run ``pactl`` against this server and return its output; raise if it fails."""
        done = subprocess.run(["pactl", *args], env=self.env(), capture_output=True,
                              text=True, timeout=10)
        if done.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def add_null_sink(self, name: str, sample_rate: int = 48000, channels: int = 1) -> str:
        """Add a float32 null sink ``name`` (its monitor is ``name.monitor``) and return ``name``.

        It is usable once ``wait_until_settled`` returns; ``play`` and ``record``
        wait for that themselves.
        """
        self.pactl("load-module", "module-null-sink", f"sink_name={name}",
                   f"rate={sample_rate}", f"channels={channels}", f"format={SAMPLE_FORMAT}",
                   "norewinds=1")
        self._keep_low_latency(name, sample_rate, channels)
        return name

    def add_channel_sinks(self, names: list[str], joined: str = "joined",
                          sample_rate: int = 48000) -> str:
        """Add a mono sink per name, each one channel of a null sink ``joined``; return ``joined``.

        ``record(joined, channels=len(names))`` hears sink ``names[i]`` in
        channel ``i``, all on one clock, so the delay from one sink to another
        is exact to the sample. Each sink has its own monitor, ``name.monitor``.
        """
        if not names or len(set(names)) != len(names) or joined in names:
            raise ValueError(f"need distinct sink names other than {joined!r}, not {names}")
        # PulseAudio's auxiliary channels: positions with no speaker meaning,
        # so nothing up- or down-mixes them.
        positions = [f"aux{index}" for index in range(len(names))]
        self.pactl("load-module", "module-null-sink", f"sink_name={joined}",
                   f"rate={sample_rate}", f"channels={len(names)}",
                   f"channel_map={','.join(positions)}", f"format={SAMPLE_FORMAT}",
                   "norewinds=1")
        for name, position in zip(names, positions):
            self.pactl("load-module", "module-remap-sink", f"sink_name={name}",
                       f"master={joined}", "channels=1", "channel_map=mono",
                       f"master_channel_map={position}", "remix=no")
        # The remap sinks render when their master does, so one keeper serves all.
        self._keep_low_latency(joined, sample_rate, len(names))
        return joined

    def wait_until_settled(self) -> None:
        """Sleep until every sink added so far runs at low latency."""
        time.sleep(max(0.0, self._settled_at - time.monotonic()))

    def record(self, sink: str, sample_rate: int = 48000, channels: int = 1) -> Recording:
        """Start recording ``sink``'s monitor; ``Recording.stop`` returns the samples.

        Channel ``i`` of the recording is channel ``i`` of the sink, never a mix.
        """
        self.wait_until_settled()
        path = self._new_file(f"{sink}.monitor", ".f32")
        log = path.with_suffix(".log")
        recorder = _spawn(_pacat("--record", f"{sink}.monitor", sample_rate, channels,
                                 LOW_LATENCY_MS),
                          env=self.env(), log=log, stdout_path=path)
        self._helpers.append(recorder)
        return Recording(recorder, path, log, channels)

    def play(self, sink: str, samples: np.ndarray, sample_rate: int = 48000) -> Playback:
        """Start playing ``samples`` (``[T]`` or ``[T, C]``) into ``sink`` in real time.

        ``pacat`` reads them from a file as the sink asks for them, so they are
        paced by the server's clock; ``Playback.wait`` returns once they have
        been played to the end. Channel ``i`` goes to the sink's channel ``i``.
        """
        frames = np.asarray(samples, dtype="<f4")
        if frames.ndim == 1:
            frames = frames[:, None]
        if frames.ndim != 2:
            raise ValueError(f"samples must be [T] or [T, C], not shape {np.shape(samples)}")
        self.wait_until_settled()
        path = self._new_file(sink, ".f32")
        path.write_bytes(np.ascontiguousarray(frames).tobytes())
        log = path.with_suffix(".log")
        player = _spawn(_pacat("--playback", sink, sample_rate, frames.shape[1],
                               PLAYER_BUFFER_MS),
                        env=self.env(), log=log, stdin_path=path)
        self._helpers.append(player)
        return Playback(player, log)

    def _keep_low_latency(self, sink: str, sample_rate: int, channels: int) -> None:
        # A recorder held for the sink's life, so that it never falls back to 2 s blocks.
        self._helpers.append(_spawn(
            _pacat("--record", f"{sink}.monitor", sample_rate, channels, LOW_LATENCY_MS),
            env=self.env(), log=self._new_file(f"{sink}.monitor-keeper", ".log")))
        self._settled_at = time.monotonic() + SINK_SETTLE_S

    def _server_env(self) -> dict[str, str]:
        folder = self._started_folder()
        env = {key: value for key, value in os.environ.items() if key not in _PULSE_VARIABLES}
        # HOME holds the server's cookie and state; XDG_RUNTIME_DIR its socket.
        env.update(XDG_RUNTIME_DIR=str(folder / "runtime"), HOME=str(folder / "home"),
                   PULSE_CLIENTCONFIG=str(folder / "client.conf"))
        return env

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self._daemon.poll() is not None:
                raise RuntimeError(f"pulseaudio exited with {self._daemon.returncode}:\n"
                                   f"{self._log_tail()}")
            answer = subprocess.run(["pactl", "info"], env=self.env(), capture_output=True,
                                    timeout=self.start_timeout_s)
            if answer.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"pulseaudio did not answer within {self.start_timeout_s} s:\n"
                                   f"{self._log_tail()}")
            time.sleep(0.05)

    def _log_tail(self) -> str:
        log = self._started_folder() / "server.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-20:])

    def _new_file(self, label: str, suffix: str) -> Path:
        self._file_count += 1
        return self._started_folder() / "files" / f"{self._file_count:03d}-{label}{suffix}"

    def _started_folder(self) -> Path:
        if self.folder is None:
            raise RuntimeError("PulseServer is not started; use it as a context manager")
        return self.folder


class Recording:
    """A running ``pacat`` recording one monitor to a file of raw float32 frames."""

    def __init__(self, recorder: subprocess.Popen, path: Path, log: Path, channels: int):
        self._recorder = recorder
        self.path = path
        self._log = log
        self.channels = channels
        self.samples: np.ndarray | None = None

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> np.ndarray:
        """Stop recording and return what was heard, ``[T, C]`` float32.

        Call it before the server stops: the server deletes its folder.
        """
        if self.samples is None:
            # pacat stops cleanly on SIGTERM; what it recorded is already in the file.
            _terminate(self._recorder)
            if self._recorder.returncode not in (0, -signal.SIGTERM):
                raise RuntimeError(f"pacat --record failed with {self._recorder.returncode}: "
                                   f"{self._log.read_text(errors='replace').strip()}")
            raw = np.fromfile(self.path, dtype="<f4")
            usable = raw.size - raw.size % self.channels  # a frame cut short by the stop
            self.samples = raw[:usable].reshape(-1, self.channels).astype(np.float32)
        return self.samples


class Playback:
    """A running ``pacat`` playing samples into one sink."""

    def __init__(self, player: subprocess.Popen, log: Path):
        self._player = player
        self._log = log

    def wait(self, timeout_s: float = 60.0) -> None:
        """Return once all samples have been played; raise if ``pacat`` failed."""
        try:
            self._player.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _terminate(self._player)
            raise
        if self._player.returncode != 0:
            raise RuntimeError(f"pacat --playback failed with {self._player.returncode}: "
                               f"{self._log.read_text(errors='replace').strip()}")


def _pacat(direction: str, device: str, sample_rate: int, channels: int,
           latency_ms: int) -> list[str]:
    # --no-remap: channel i is the device's channel i. By name, pacat's
    # front-left/front-right would hear nothing of add_channel_sinks' aux0/aux1.
    return ["pacat", direction, "--raw", "--no-remap", f"--latency-msec={latency_ms}",
            f"--format={SAMPLE_FORMAT}", f"--rate={sample_rate}", f"--channels={channels}",
            f"--device={device}"]


def _spawn(args: list[str], env: dict[str, str], log: Path, stdin_path: Path | None = None,
           stdout_path: Path | None = None) -> subprocess.Popen:
    """Start a helper that dies with this process, even if this process is killed.

    Its stderr goes to ``log``, so a failure can be explained and a chatty
    helper can never block on a full pipe; stdin and stdout are files or nothing.
    """
    with contextlib.ExitStack() as files:
        stdin = files.enter_context(open(stdin_path, "rb")) if stdin_path else subprocess.DEVNULL
        stdout = (files.enter_context(open(stdout_path, "wb")) if stdout_path
                  else subprocess.DEVNULL)
        stderr = files.enter_context(open(log, "wb"))
        # The child holds its own copies of these files; ours close on leaving.
        return subprocess.Popen(args, env=env, stdin=stdin, stdout=stdout, stderr=stderr,
                                preexec_fn=_die_with_parent(os.getpid()))


def _die_with_parent(parent_pid: int):
    # A SIGKILLed pytest runs no `finally`; the kernel then sends its children
    # SIGTERM (Linux prctl PR_SET_PDEATHSIG), so no server or pacat outlives it.
    # Caveat: "parent" is the thread that spawned the child, so spawn from a
    # thread that lives as long as the server.
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    pr_set_pdeathsig = 1

    def in_child() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before prctl took hold
            os._exit(1)

    return in_child


def _terminate(*processes: subprocess.Popen) -> None:
    """SIGTERM to all, then SIGKILL to any still there after ``STOP_TIMEOUT_S``; all reaped."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
