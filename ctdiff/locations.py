"""Where ctdiff's default folders are: from the environment, never from the code's own location.

The workspace is ``$CTDIFF_WORKSPACE``, else ``workspace/demo`` under the current folder (the
checkout, when started by ``scripts/app`` or the commands shown in the docs). It holds ``real/``,
``generated/``, ``report/``, ``run/`` and ``reviews.sqlite``. The app (``ctdiff_app.workspace``) and
the review store (``eval.review.db``) both take it from here, so neither computes a repo root.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

WORKSPACE_ENV = "CTDIFF_WORKSPACE"
DEFAULT_WORKSPACE = Path("workspace") / "demo"  # relative: resolved against the current folder


def workspace_path(
    environ: Mapping[str, str] | None = None, default: str | os.PathLike = DEFAULT_WORKSPACE
) -> tuple[Path, bool]:
    """(workspace folder, whether the user configured it via ``CTDIFF_WORKSPACE``)."""
    env = os.environ if environ is None else environ
    value = (env.get(WORKSPACE_ENV) or "").strip()
    if value:
        return Path(value).expanduser(), True
    return Path(default), False
