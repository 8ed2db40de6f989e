"""Errors that ctdiff raises for bad input, bad configuration or refused overwrites.

Every error names the file (or option) and the problem in one line, so a CLI can print
``str(error)`` and exit non-zero. Messages never contain DICOM patient identifiers.
"""

from __future__ import annotations

import os


class CTDiffError(Exception):
    """Base class: a problem the user can fix, described in one line."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.problem = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InputError(CTDiffError):
    """An input file or folder cannot be used (corrupt, wrong shape, not CT, ...)."""


class ConfigError(CTDiffError):
    """A configuration value or command-line option is invalid."""


class OverwriteError(CTDiffError):
    """An output exists and ``--force`` was not given."""
