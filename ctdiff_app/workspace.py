"""What the app looks at: a workspace folder, or folders the user typed, checked before use.

A workspace (``CTDIFF_WORKSPACE``, default ``workspace/demo`` in the current folder; see :mod:`ctdiff.locations`) is a folder with ``real/``
and ``generated/`` volumes, a ``report/`` dir (report.json/.md/.html), an optional training
``run/`` dir, ``reviews.sqlite`` and a free-form ``workspace.json``. The app keeps four paths —
real, generated, report and run dir — and every page reads them. Functions here never raise for a
missing optional part; checks of a path the user typed raise :class:`~ctdiff.errors.InputError`
with a message that names the path and says what is wrong.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctdiff.data.io import find_cases, read_volume
from ctdiff.errors import InputError
from ctdiff.locations import DEFAULT_WORKSPACE, WORKSPACE_ENV  # noqa: F401 (WORKSPACE_ENV: re-exported for the app)
from ctdiff.locations import workspace_path as _workspace_path
from ctdiff.training.rundir import RunDir

SELECTION_KEYS = ("real_dir", "generated_dir", "report_dir", "run_dir")
RUN_MARKERS = RunDir.MARKERS


def workspace_path(environ: Mapping[str, str] | None = None) -> tuple[Path, bool]:
    """(workspace folder, whether the user configured it via ``CTDIFF_WORKSPACE``)."""
    return _workspace_path(environ, default=DEFAULT_WORKSPACE)  # this module's default (tests patch it)


def read_workspace_info(workspace: str | os.PathLike) -> dict[str, Any]:
    """The workspace's ``workspace.json`` (free-form), or ``{}`` when absent or unreadable."""
    path = Path(workspace) / "workspace.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def real_ct_folder(workspace: str | os.PathLike, info: Mapping[str, Any]) -> Path | None:
    """The real-CT folder a workspace's ``workspace.json`` (``info``) names, or None. Its path is
    relative to the workspace; an absolute one (workspaces built before paths were stored relative) is kept."""
    cohort = info.get("real_ct_cohort")
    folder = cohort.get("folder") if isinstance(cohort, Mapping) else None
    return Path(workspace) / str(folder) if folder else None


def is_run_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return RunDir(p).is_run_dir()


def sample_dirs(run_dir: str | os.PathLike) -> list[Path]:
    """Folders of ``run_dir/samples/`` that hold volumes, newest first."""
    root = RunDir(run_dir).samples
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        if d.is_dir() and not d.name.startswith("."):
            try:
                find_cases(d)
            except InputError:
                continue
            found.append(d)
    return sorted(found, key=lambda d: d.stat().st_mtime, reverse=True)


def _has_volumes(path: Path) -> bool:
    try:
        find_cases(path)
    except InputError:
        return False
    return True


def selection_from_workspace(workspace: str | os.PathLike) -> dict[str, str | None]:
    """The four app paths a workspace provides (``None`` for a part it lacks).

    ``generated`` falls back to the newest samples folder of ``run/`` when ``generated/`` is absent.
    """
    ws = Path(workspace)
    sel: dict[str, str | None] = dict.fromkeys(SELECTION_KEYS)
    if _has_volumes(ws / "real"):
        sel["real_dir"] = str(ws / "real")
    if is_run_dir(ws / "run"):
        sel["run_dir"] = str(ws / "run")
    if _has_volumes(ws / "generated"):
        sel["generated_dir"] = str(ws / "generated")
    elif sel["run_dir"] and sample_dirs(sel["run_dir"]):
        sel["generated_dir"] = str(sample_dirs(sel["run_dir"])[0])
    if (ws / "report" / "report.json").is_file():
        sel["report_dir"] = str(ws / "report")
    return sel


# ------------------------------------------------------------------------ checks of typed paths
def _check_exists(path: str | os.PathLike, what: str) -> Path:
    text = str(path).strip()
    if not text:
        raise InputError(f"no {what} given")
    p = Path(text).expanduser()
    if not p.exists():
        raise InputError(f"no such {what}", p)
    if not os.access(p, os.R_OK) or (p.is_dir() and not os.access(p, os.X_OK)):
        raise InputError(f"{what} is not readable (permission denied)", p)
    return p


def check_volume_folder(path: str | os.PathLike, what: str = "folder") -> list[Path]:
    """The volumes below a folder the user typed; InputError if it is missing, unreadable or empty."""
    p = _check_exists(path, what)
    cases = find_cases(p)  # raises "holds no NIfTI, .npy/.npz or DICOM volumes"
    unreadable = [c for c in cases if not os.access(c, os.R_OK)]
    if len(unreadable) == len(cases):
        raise InputError(f"none of its {len(cases)} volume(s) is readable (permission denied)", p)
    return cases


def check_generated(path: str | os.PathLike) -> tuple[str | None, str | None]:
    """Interpret a typed "generated" path: a folder of volumes, or a run dir.

    Returns ``(generated_dir, run_dir)``. For a run dir, ``generated_dir`` is its newest samples
    folder, or None when it has not been sampled yet.
    """
    p = _check_exists(path, "generated folder or run dir")
    if is_run_dir(p):
        samples = sample_dirs(p)
        return (str(samples[0]) if samples else None), str(p)
    check_volume_folder(p, "generated folder")
    return str(p), None


def check_report_dir(path: str | os.PathLike) -> Path:
    """A report dir (or report.json file) whose report.json is readable JSON."""
    p = _check_exists(path, "report folder")
    report = p if p.is_file() else p / "report.json"
    if not report.is_file():
        raise InputError("holds no report.json (write one with: python -m eval report ...)", p)
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"is not readable JSON ({type(exc).__name__})", report) from None
    if not isinstance(data, dict) or "metrics" not in data:
        raise InputError("is not a ctdiff eval report (no 'metrics')", report)
    return report.parent


def check_run_dir(path: str | os.PathLike) -> Path:
    p = _check_exists(path, "run dir")
    if not is_run_dir(p):
        raise InputError(f"is not a training run dir (none of {', '.join(RUN_MARKERS)} found)", p)
    return p


# ------------------------------------------------------------------------------- summaries
def volume_facts(path: str | os.PathLike) -> dict[str, Any]:
    """Shape, spacing and HU range of one volume, or ``{"error": ...}`` when it cannot be read."""
    try:
        vol = read_volume(path)
    except InputError as exc:
        return {"file": str(path), "error": exc.problem}
    return {
        "file": str(path),
        "shape": list(vol.shape),
        "spacing": [round(s, 3) for s in vol.spacing],
        "hu_min": float(np.min(vol.array)),
        "hu_max": float(np.max(vol.array)),
    }


def cohort_summary(facts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts, distinct shapes/spacings and the HU range over a list of :func:`volume_facts`."""
    good = [f for f in facts if "error" not in f]
    bad = [(f["file"], f["error"]) for f in facts if "error" in f]
    shapes = sorted({tuple(f["shape"]) for f in good})
    spacings = sorted({tuple(f["spacing"]) for f in good})
    return {
        "count": len(good),
        "unreadable": bad,
        "shapes": [list(s) for s in shapes],
        "spacings": [list(s) for s in spacings],
        "hu_range": [min(f["hu_min"] for f in good), max(f["hu_max"] for f in good)] if good else None,
    }
