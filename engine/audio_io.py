"""Reading and writing audio files in blocks, safely.

Reading: :func:`probe` checks a file once (soundfile/libsndfile) and
:func:`read_span` reads any span of it, so a chunk never needs the whole
file in memory. Writing: :class:`AtomicWriter` writes to a hidden temporary
name in the target folder and renames it only when complete, so an
interrupted run never leaves a partial file under a real name.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from denoise.engine.errors import FileError

try:
    import fcntl
except ImportError:  # not POSIX: temporary files of killed runs stay
    fcntl = None

# The containers libsndfile decodes that people use for speech; folder walks
# take only these, and skip anything else quietly.
AUDIO_SUFFIXES = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff",
     ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64"}
)
LOSSY_SUBTYPES = frozenset({"VORBIS", "OPUS", "MPEG_LAYER_I", "MPEG_LAYER_II",
                            "MPEG_LAYER_III"})
FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"}) | LOSSY_SUBTYPES
# Where an output container cannot hold the input's sample format, the
# nearest one it can: lossy codecs decode to 16-bit-quality PCM; float keeps
# its resolution in 24 bits.
NEAREST_SUBTYPES = {"FLOAT": ("PCM_24", "PCM_16"), "DOUBLE": ("FLOAT", "PCM_24", "PCM_16"),
                    "PCM_32": ("PCM_24", "PCM_16"), "PCM_24": ("PCM_16",)}
# libsndfile's log line for a data chunk whose size the header gets wrong.
_DATA_SIZE_MISMATCH = re.compile(r"^(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.M)
# Sizes a writer puts in a header when it cannot know the length (a stream).
_UNKNOWN_SIZES = (0, 0xFFFFFFFF, 0x7FFFFFFF)
STDIO = "-"


def _file_mode() -> int:
    """Permissions a new file gets from open(): 0o666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, as its header says."""

    samples: int  # per channel
    sample_rate: int
    channels: int
    format: str
    subtype: str
    warning: str | None = None  # what is wrong with the file that does not stop it

    @property
    def duration_s(self) -> float:
        return self.samples / self.sample_rate


def _libsndfile_cause(error: Exception) -> str:
    """libsndfile's reason without the file name it repeats."""
    text = str(error).strip()
    if ": " in text and text.startswith("Error opening"):
        text = text.rsplit(": ", 1)[-1]
    return text.rstrip(".").lower() or type(error).__name__


def probe(path: Path) -> AudioInfo:
    """Open ``path`` once and describe it, or raise a :class:`FileError`."""
    if path.is_dir():
        raise FileError(path, "is a folder, not an audio file")
    try:
        if path.stat().st_size == 0:
            raise FileError(path, "file is empty (0 bytes)")
        info = sf.info(str(path))
    except FileError:
        raise
    except FileNotFoundError:
        raise FileError(path, "no such file")
    except PermissionError:
        raise FileError(path, "permission denied")
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise FileError(path, f"not a readable audio file ({_libsndfile_cause(error)})")
    if info.frames <= 0:
        raise FileError(path, "contains no audio samples (zero length)")
    return AudioInfo(info.frames, info.samplerate, info.channels, info.format, info.subtype,
                     _truncation(info.extra_info, info.frames))


def _truncation(log: str, samples: int) -> str | None:
    """A warning when the header promises more audio than the file holds (a
    recording cut short). libsndfile then reads what is there, and says so
    only in its log."""
    mismatch = _DATA_SIZE_MISMATCH.search(log)
    if mismatch is None:
        return None
    promised, held = (int(group) for group in mismatch.groups())
    if promised in _UNKNOWN_SIZES or held >= promised or held == 0:
        return None
    return (f"file is truncated: its header promises {round(samples * promised / held)} "
            f"samples, the file holds {samples}; enhanced what is there")


def read_span(path: Path, start: int, stop: int) -> np.ndarray:
    """Samples ``[start, stop)`` of every channel as float32 ``[channels, samples]``.

    Raises :class:`FileError` when the file ends early (a truncated file whose
    header promised more) or holds NaN or infinite samples.
    """
    try:
        with sf.SoundFile(str(path)) as handle:
            if start:
                handle.seek(start)
            block = handle.read(stop - start, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise FileError(path, f"read failed ({_libsndfile_cause(error)})")
    if block.shape[0] < stop - start:
        raise FileError(path, f"file is truncated: header promises {stop} samples, "
                              f"data ends at {start + block.shape[0]}")
    if not np.isfinite(block).all():
        bad = int(np.count_nonzero(~np.isfinite(block)))
        raise FileError(path, f"contains {bad} NaN or infinite samples")
    return np.ascontiguousarray(block.T)


def file_blocks(path: Path, info: AudioInfo, mix: bool = False,
                block_samples: int = 1 << 20) -> Iterator[np.ndarray]:
    """The whole file in ``[C, n]`` float32 blocks read one at a time (with
    ``mix``, its mono mix, ``[1, n]``)."""
    for start in range(0, info.samples, block_samples):
        block = read_span(path, start, min(info.samples, start + block_samples))
        yield block.mean(axis=0, keepdims=True) if mix else block


class Recording:
    """A short recording held in memory, mono: what a backend may be given
    besides the audio it enhances (the spectral method's noise sample), so
    that it never reads files itself. Its text (what run logs and reports
    show) names the file and a digest of the samples, so another recording
    under the same name counts as other settings."""

    __slots__ = ("samples", "sample_rate", "source")

    def __init__(self, samples: np.ndarray, sample_rate: int, source: str):
        self.samples, self.sample_rate, self.source = samples, sample_rate, source

    def __str__(self) -> str:
        digest = hashlib.sha256(self.samples.tobytes()).hexdigest()[:12]
        return (f"{self.source} ({len(self.samples) / self.sample_rate:.1f} s, "
                f"sha256 {digest})")

    __repr__ = __str__


def read_recording(path: Path | str, max_s: float = 20.0) -> Recording:
    """Up to ``max_s`` of a recording, mixed to mono; a :class:`FileError`
    names the file and the cause when it cannot be read."""
    info = probe(Path(path))
    samples = min(info.samples, round(max_s * info.sample_rate))
    return Recording(read_span(Path(path), 0, samples).mean(axis=0), info.sample_rate, str(path))


SUFFIX_FORMATS = {".wav": "WAV", ".wave": "WAV", ".flac": "FLAC", ".ogg": "OGG",
                  ".oga": "OGG", ".opus": "OGG", ".mp3": "MP3", ".aif": "AIFF",
                  ".aiff": "AIFF", ".aifc": "AIFF", ".au": "AU", ".snd": "AU",
                  ".caf": "CAF", ".w64": "W64", ".rf64": "RF64"}


def output_format(info: AudioInfo, target: Path | str, fmt: str | None,
                  subtype: str | None) -> tuple[str, str]:
    """The (format, subtype) to write: as asked, else as the target's suffix
    says, else as the input. The input's subtype is kept where the format
    holds it (a lossy codec only in its own container); else the nearest
    one the format holds (PCM_16 for a lossy source, PCM_24 for float), else
    the format's default. WAV when nothing else can be told.
    """
    fmt = (fmt or SUFFIX_FORMATS.get(Path(str(target)).suffix.lower()) or info.format).upper()
    if sf.default_subtype(fmt) is None:
        fmt = "WAV"
    if subtype is None and fmt == "OGG" and Path(str(target)).suffix.lower() == ".opus":
        subtype = "OPUS"  # an .opus file holds Opus, not the Ogg container's default Vorbis
    if subtype is None:
        subtype = _nearest_subtype(info, fmt)
    subtype = subtype.upper()
    if not sf.check_format(fmt, subtype):
        raise FileError(target, f"cannot write subtype {subtype} in format {fmt}")
    return fmt, subtype


def _nearest_subtype(info: AudioInfo, fmt: str) -> str:
    if info.subtype in LOSSY_SUBTYPES:
        candidates = (info.subtype,) if fmt == info.format else ("PCM_16",)
    else:
        candidates = (info.subtype, *NEAREST_SUBTYPES.get(info.subtype, ()))
    return next((subtype for subtype in candidates if sf.check_format(fmt, subtype)),
                sf.default_subtype(fmt))


class TemporaryFile:
    """A hidden, locked file beside ``target`` (``.NAME.XXXX.partial``),
    given the target's name by :meth:`publish` or removed by :meth:`discard`.

    Hidden, so folder walks skip it; in the target's folder, so the rename
    is atomic. While it exists it is locked (``flock``): a run that was
    killed leaves it unlocked, and the next writer of the same target
    removes it; one that a live run holds is left alone. A target of ``-``
    (standard output) gets its temporary file in the system's temporary
    folder.
    """

    def __init__(self, target: Path | str):
        self.target = target
        if str(target) == STDIO:
            folder, stem = Path(tempfile.gettempdir()), "stdout"
        else:
            folder, stem = Path(target).parent, Path(target).name
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise FileError(target, f"cannot create output folder {folder} "
                                        f"({error.strerror or error})")
        _remove_abandoned(folder, stem)
        try:
            self._lock, name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".partial",
                                                dir=folder)
        except OSError as error:
            raise FileError(target, f"output folder {folder} is not writable "
                                    f"({error.strerror or error})")
        self.path = Path(name)
        try:
            _claim(self._lock)
        except BaseException:  # Ctrl-C before the caller holds this file to discard it
            self.discard()
            raise

    def publish(self) -> None:
        """Give the file its target's name (and the mode new files get)."""
        os.chmod(self.path, _file_mode())  # mkstemp made it private (0o600)
        os.replace(self.path, self.target)
        self._release()

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


@contextmanager
def replacing(target: Path | str) -> Iterator[Path]:
    """A temporary path to write ``target``'s new contents to; it replaces
    ``target`` when the block completes, and is removed if it fails."""
    temporary = TemporaryFile(target)
    try:
        yield temporary.path
    except BaseException:
        temporary.discard()
        raise
    temporary.publish()


class AtomicWriter:
    """Write an audio file block by block under a :class:`TemporaryFile`;
    publish it on :meth:`commit` (for ``-``: copy it to ``stdout``)."""

    def __init__(self, target: Path | str, sample_rate: int, channels: int,
                 fmt: str, subtype: str, stdout: BinaryIO | None = None):
        self.target = target
        self._clip = subtype not in FLOAT_SUBTYPES
        self._stdout = stdout
        self._temporary = TemporaryFile(target)
        try:
            self.temporary = self._temporary.path
            self._file = sf.SoundFile(str(self.temporary), "w", sample_rate, channels, subtype,
                                      format=fmt)
        except (sf.LibsndfileError, RuntimeError, OSError) as error:
            self._temporary.discard()
            raise FileError(target, f"cannot write {fmt}/{subtype}: {_libsndfile_cause(error)}")
        except BaseException:  # Ctrl-C between creating the file and opening it
            self._temporary.discard()
            raise

    def write(self, block: np.ndarray) -> int:
        """Append ``[channels, frames]``; returns how many samples were clipped."""
        clipped = 0
        if self._clip:
            over = np.abs(block) > 1.0
            clipped = int(np.count_nonzero(over))
            if clipped:
                block = np.clip(block, -1.0, 1.0)
        self._file.write(np.ascontiguousarray(block.T))
        return clipped

    def close(self) -> None:
        """Finish writing, so the temporary file can be read back; it still
        has its temporary name until :meth:`commit`."""
        if not self._file.closed:
            self._file.close()

    def commit(self) -> None:
        """Finish the file and give it its real name (or send it to stdout)."""
        self.close()
        if self._stdout is not None:
            copy_to(self.temporary, self._stdout)
            self._temporary.discard()
        else:
            self._temporary.publish()

    def abort(self) -> None:
        """Drop the partial file; the target is left as it was."""
        self.close()
        self._temporary.discard()


def copy_to(path: Path, stream: BinaryIO) -> None:
    """A finished file's bytes to ``stream`` (standard output), flushed."""
    with open(path, "rb") as finished:
        shutil.copyfileobj(finished, stream)
    stream.flush()


def _claim(handle: int) -> bool:
    """Take the lock that marks a temporary file as being written; False if
    a live process holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def remove_abandoned(target: Path) -> None:
    """Remove what killed writers of ``target`` left (its temporary files
    that no live process holds)."""
    _remove_abandoned(target.parent, target.name)


def _remove_abandoned(folder: Path, stem: str) -> None:
    """Remove temporary files of this target that no live process holds:
    what a killed run left."""
    if fcntl is None:
        return
    for stale in folder.glob(f".{glob.escape(stem)}.*.partial"):
        try:
            handle = os.open(stale, os.O_RDONLY)
        except OSError:
            continue
        try:
            if _claim(handle):
                stale.unlink(missing_ok=True)
        finally:
            os.close(handle)


def spool_stdin(stream: BinaryIO | None = None) -> Path:
    """Copy standard input to a temporary file so it can be read in blocks."""
    stream = stream or sys.stdin.buffer
    handle = tempfile.NamedTemporaryFile(prefix="denoise-stdin-", suffix=".audio", delete=False)
    try:
        with handle:
            shutil.copyfileobj(stream, handle)
    except BaseException:  # Ctrl-C while the producer is still writing
        Path(handle.name).unlink(missing_ok=True)
        raise
    return Path(handle.name)
