"""Checking a path typed into the app before any file system call sees it.

A text field accepts anything: 5000 characters, a NUL byte, a line break, ``~someone``. Passed
straight to ``Path.exists()`` such text raises OSError/ValueError deep in the standard library, and
Streamlit would show that as a traceback with server paths. :func:`checked_path` turns every such
input into a one-line :class:`ctdiff.errors.InputError` that quotes (a shortened form of) what the
user typed and nothing of the server.
"""

from __future__ import annotations

from pathlib import Path

from ctdiff.errors import InputError

MAX_PATH = 4096  # PATH_MAX on Linux
MAX_NAME = 255  # NAME_MAX: one folder or file name, in bytes


def shorten(text: str, keep: int = 40) -> str:
    """``text`` for a message: at most ``keep`` characters, with the length when cut."""
    text = text.replace("\n", "⏎")
    return text if len(text) <= keep else f"{text[:keep]}… ({len(text)} characters)"


def checked_path(text: str | None, what: str) -> Path:
    """The typed ``text`` as a Path (``~`` expanded), or InputError naming ``what`` and the problem."""
    raw = (text or "").strip()
    if not raw:
        raise InputError(f"{what}: no path given")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in raw):
        raise InputError(f"{what}: the path holds control characters (a line break, tab or NUL): {shorten(raw)!r}")
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_PATH:
        raise InputError(f"{what}: the path is {len(raw)} characters long; paths have at most {MAX_PATH}")
    long_names = [part for part in raw.split("/") if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME]
    if long_names:
        raise InputError(
            f"{what}: a folder or file name in the path is {len(long_names[0])} characters long; "
            f"names have at most {MAX_NAME} bytes ({shorten(raw)!r})"
        )
    try:
        path = Path(raw).expanduser()
    except RuntimeError:  # ~user that does not exist
        raise InputError(f"{what}: {shorten(raw)!r} names a home folder that does not exist") from None
    try:
        path.exists()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise InputError(f"{what}: {shorten(raw)!r} cannot be checked ({reason})") from None
    return path


def os_problem(exc: BaseException) -> str:
    """One line for an OSError/ValueError from the file system, without the server paths it carries."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
