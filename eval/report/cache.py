"""On-disk cache of per-case feature vectors, keyed by file content and extractor settings.

Layout: ``ROOT/<extractor name>/<key[:2]>/<key>.npz`` holding ``names`` and ``values``. The key
is the SHA-256 of the case's content hash (file bytes, or every file of a DICOM folder) plus the
extractor's name and settings, so renaming or moving a file still hits the cache and a changed
file or setting never does. Entries are written atomically (ctdiff.atomic), so parallel reports
and interrupted runs never leave a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ctdiff.atomic import atomic_path
from ctdiff.cachedir import user_cache_dir

CACHE_ENV = "CTDIFF_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$CTDIFF_CACHE_DIR``, else ``$XDG_CACHE_HOME/ctdiff/features``, else ``~/.cache/ctdiff/features``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return user_cache_dir() / "features"


def content_hash(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, or of the relative names and bytes of every file below a folder."""
    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def cache_key(content: str, extractor_name: str, settings: dict[str, Any]) -> str:
    blob = json.dumps(
        {"content": content, "extractor": extractor_name, "settings": settings}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class FeatureCache:
    """Get/put feature vectors by key under ``root``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, extractor_name: str, key: str) -> Path:
        return self.root / extractor_name / key[:2] / f"{key}.npz"

    def load(self, extractor_name: str, key: str) -> tuple[list[str], np.ndarray] | None:
        p = self.path(extractor_name, key)
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                return [str(n) for n in z["names"]], np.asarray(z["values"], dtype=np.float64)
        except (OSError, ValueError, KeyError):
            return None  # unreadable entry: recompute and overwrite it

    def save(self, extractor_name: str, key: str, names: list[str], values: np.ndarray) -> Path:
        p = self.path(extractor_name, key)
        with atomic_path(p, force=True) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, names=np.asarray(names, dtype=str), values=np.asarray(values, dtype=np.float64))
        return p
