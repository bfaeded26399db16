"""What the command needs from the installation, checked before any work.

The numeric stack (torch, torchaudio, soundfile's libsndfile and PyAV's
FFmpeg) is loaded here first, so that a broken install is one line that says what is broken
and how to repair it, not a traceback from deep inside the engine. A common
case: torchaudio's compiled library fits one torch release only, and pip
will happily install another next to it (torchaudio 2.11.1 beside torch
2.11.0 fails with ``undefined symbol``).
"""

from __future__ import annotations

import re
import shlex
import sys
import tempfile
import time
import traceback
from importlib import import_module
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

from denoise.engine import DISTRIBUTION

STACK = ("numpy", "torch", "torchaudio", "soundfile", "av")


def installed_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def denoise_version() -> str | None:
    """The installed version of denoise itself."""
    return installed_version(DISTRIBUTION)


def pinned(name: str) -> str:
    """The requirement denoise declares for ``name`` (``torch==2.11.0``)."""
    for requirement in requires(DISTRIBUTION) or []:
        if re.match(rf"{name}\b", requirement) and ";" not in requirement:
            return requirement.replace(" ", "")
    return name


def stack_problem() -> str | None:
    """One line saying which part of the numeric stack cannot load and how
    to repair it; ``None`` when it all loads."""
    pip = f"{shlex.quote(sys.executable)} -m pip install"
    for name in STACK:
        try:
            import_module(name)
        except (ImportError, OSError) as error:
            cause = _short(error)
            have = installed_version(name)
            if have is None:
                return f"{name} is not installed; install it with: {pip} '{pinned(name)}'"
            if name == "soundfile":
                return (f"soundfile {have} cannot load libsndfile ({cause}); repair with: "
                        f"{pip} --force-reinstall soundfile (its wheels include "
                        "libsndfile), or install libsndfile1 from your system")
            if name in ("torch", "torchaudio"):
                pair = f"'{pinned('torch')}' '{pinned('torchaudio')}'"
                beside = f" with torch {installed_version('torch')}" if name == "torchaudio" else ""
                return (f"{name} {have} cannot load{beside} ({cause}); denoise needs the "
                        f"torch and torchaudio it was tested with: {pip} {pair}")
            return f"{name} {have} cannot load ({cause}); repair with: {pip} --force-reinstall {name}"
    return None


def _short(error: BaseException) -> str:
    """The gist of a loader error: the first cause (an undefined symbol, a
    missing library), libraries named without their long paths."""
    while error.__cause__ or error.__context__:
        error = error.__cause__ or error.__context__
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return re.sub(r"/\S*/([^/\s]+)", r"\1", text)


def save_traceback(error: BaseException) -> Path | None:
    """Write the full traceback of an unexpected error to a file and
    return its path (``None`` if it cannot be written)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        with tempfile.NamedTemporaryFile("w", prefix=f"denoise-crash-{stamp}-", suffix=".txt",
                                         delete=False, encoding="utf-8") as handle:
            handle.write(f"denoise {denoise_version()}, python {sys.version}\n")
            handle.write(f"command: {' '.join(sys.argv)}\n\n")
            handle.write("".join(traceback.format_exception(error)))
        return Path(handle.name)
    except OSError:
        return None
