"""Atomic file writing: every output is written to a temporary file and renamed into place.

A crash or Ctrl-C therefore never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ctdiff.errors import OverwriteError


def _suffix(path: Path) -> str:
    # keep double suffixes such as ".nii.gz" so libraries that infer the format still do
    name = path.name
    for double in (".nii.gz", ".tar.gz"):
        if name.endswith(double):
            return double
    return path.suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, force: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    With ``force=False`` an existing ``path`` raises :class:`OverwriteError` before anything is written.
    """
    final = Path(path)
    if final.exists() and not force:
        raise OverwriteError("already exists; pass --force to overwrite", final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp" + _suffix(final), dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            # mkstemp makes private (0600) files; give outputs the mode a plain open() would
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes, force: bool = True) -> Path:
    with atomic_path(path, force=force) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, force: bool = True) -> Path:
    return write_bytes(path, text.encode("utf-8"), force=force)


def write_json(path: str | os.PathLike, obj: Any, force: bool = True) -> Path:
    return write_text(path, json.dumps(plain_json(obj), indent=2, sort_keys=False, allow_nan=False) + "\n", force=force)


def plain_json(obj: Any) -> Any:
    """``obj`` in plain JSON types: numpy scalars/arrays converted, NaN/inf -> None (JSON has no NaN),
    tuples -> lists, paths -> str, dict keys -> str. The one JSON sanitiser: manifests, the eval
    report and the review exports all go through it. Anything else is left for ``json`` to refuse."""
    if isinstance(obj, dict):
        return {str(k): plain_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_json(v) for v in obj]
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy array or scalar
        return plain_json(obj.tolist())
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def prepare_output_dir(path: str | os.PathLike, force: bool) -> Path:
    """Create an output folder; refuse a non-empty existing one unless ``force`` (then empty it)."""
    out = Path(path)
    if out.exists():
        if not out.is_dir():
            raise OverwriteError("exists and is not a folder", out)
        if any(out.iterdir()):
            if not force:
                raise OverwriteError("output folder exists and is not empty; pass --force to overwrite", out)
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out
