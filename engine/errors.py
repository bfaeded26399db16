"""Errors the command line turns into one-line messages.

The engine never prints or exits; it raises these, and their ``str()`` is the
whole message a user sees: the file, the cause and, where there is one, the fix.
"""

from __future__ import annotations

from pathlib import Path


class DenoiseError(Exception):
    """Base of every error that a user can act on."""


class UsageError(DenoiseError):
    """The request as a whole cannot be carried out (exit code 2)."""


class FileError(DenoiseError):
    """One file cannot be processed; the rest of the batch goes on."""

    def __init__(self, path: Path | str, cause: str):
        super().__init__(f"{path}: {cause}")
        self.path = str(path)
        self.cause = cause
