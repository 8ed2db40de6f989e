"""Where ctdiff keeps caches it can rebuild: one folder per user, never inside a checkout.

``$XDG_CACHE_HOME/ctdiff``, else ``~/.cache/ctdiff``. Sub-folders name what they hold (eval's
``features/``, the review store's ``review-cache/`` for databases that are not a SQLite file).
Deleting the folder loses nothing but time.
"""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ctdiff``, else ``~/.cache/ctdiff`` (read at call time, so tests can isolate it)."""
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base).expanduser() / "ctdiff"
