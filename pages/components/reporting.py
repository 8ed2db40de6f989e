"""Computing an eval report from the app: a thin call into the ``eval`` report builder.

The dashboard never computes a metric itself: it calls the same builder as
``python -m eval report`` and then reads the report.json it wrote (cached by path and mtime).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ctdiff.errors import OverwriteError


def default_report_dir(selection: dict) -> Path:
    """A report folder next to the generated folder: ``<parent>/report`` (or ``report-app`` if taken)."""
    gen = Path(selection.get("generated_dir") or selection.get("real_dir") or ".")
    for name in ("report", "report-app"):
        candidate = gen.parent / name
        if not (candidate / "report.json").exists():
            return candidate
    return gen.parent / "report-app"


def compute_report(
    real: str | os.PathLike,
    generated: str | os.PathLike,
    out: str | os.PathLike,
    *,
    train: str | os.PathLike | None = None,
    metrics: str | None = None,
    force: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Build and write a report of ``generated`` vs ``real`` into ``out``; returns ``out``.

    Refuses (OverwriteError) an ``out`` that already holds a report unless ``force`` (checked
    before the builder and its heavy imports load). ``progress(stage, done, total)``.
    """
    out = Path(out)
    if (out / "report.json").exists() and not force:
        raise OverwriteError("already holds a report; tick overwrite to replace it", out)
    from eval.report import build_report  # imported here: pulls in torch and feature extractors

    build_report(real, generated, train=train, out=out, metrics=metrics, progress_callback=progress, force=force)
    return out
