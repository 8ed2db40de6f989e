"""Reading an eval report (``report.json``) for the app's metrics dashboard.

The report is written by ``python -m eval report`` (schema ``ctdiff-eval-report/1``); this module
only reads it: it checks the structure, turns metrics into table rows with a traffic-light
*gap* (how far generated is from real, relative to the real-vs-real reference), and flattens
per-case values and curves. Nothing here computes a metric.

Gap and status (dimensionless, 1 = as far apart as two sets of real scans are) come from
``eval.report.gap``, the one rule for every metric (floor = max(real-vs-real reference, bootstrap
SE, resolution)); report.json carries them, and older reports get them computed on reading.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ctdiff.errors import InputError
from eval.report import gap as _gap
from eval.report.registry import SCHEMA

CLOSE, APART = _gap.CLOSE, _gap.APART
STATUS_COLOURS = {"close": "#1b7f3b", "apart": "#b7791f", "far": "#c53030", "n/a": "#718096"}


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    """report.json (a file or the report dir holding it), checked for the parts the app reads."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    try:
        report = json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError("no report.json here", p) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"is not readable JSON ({type(exc).__name__})", p) from None
    if not isinstance(report, dict):
        raise InputError("is not a JSON object", p)
    schema = report.get("schema")
    if schema is not None and not str(schema).startswith(SCHEMA.rsplit("/", 1)[0]):
        raise InputError(f"has schema {schema!r}, not {SCHEMA!r}", p)
    if not isinstance(report.get("metrics"), dict):
        raise InputError("has no 'metrics' object", p)
    return report


def gap(metric: Mapping[str, Any]) -> float | None:
    """How far generated is from real relative to its floor (eval.report.gap); None if unknown."""
    return _gap.gap(metric)


def status(g: float | None) -> str:
    """close / apart / far for a finite gap; "n/a" otherwise (a status is never shown without its gap)."""
    if g is None or not math.isfinite(g):
        return "n/a"
    return _gap.status_of(g)


def metric_table(report: Mapping[str, Any]) -> pd.DataFrame:
    """One row per metric: value, CI, real, generated, reference, better, unit, gap, status, notes."""
    rows = []
    for name, m in (report.get("metrics") or {}).items():
        if not isinstance(m, Mapping):
            continue
        ci = m.get("ci95")
        g = gap(m)
        rows.append(
            {
                "metric": name,
                "value": _gap.finite_number(m.get("value")),
                "ci95": f"{ci[0]:.4g} .. {ci[1]:.4g}"
                if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci
                else "",
                "real": _gap.finite_number(m.get("real")),
                "generated": _gap.finite_number(m.get("generated")),
                "reference": _gap.finite_number(m.get("reference")),
                "better": m.get("better") or "",
                "unit": m.get("unit") or "",
                "gap": None if g is None or math.isinf(g) else round(g, 3),
                "status": status(g),
                "notes": m.get("reason") or m.get("description") or "",
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "metric",
            "value",
            "ci95",
            "real",
            "generated",
            "reference",
            "better",
            "unit",
            "gap",
            "status",
            "notes",
        ],
    )


def per_case_table(report: Mapping[str, Any]) -> pd.DataFrame:
    """The per-case records as a DataFrame (empty when the report has none)."""
    rows = [r for r in report.get("per_case") or [] if isinstance(r, Mapping)]
    return pd.DataFrame(rows)


def numeric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and df[c].notna().any()]


def curve(report: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """``report["curves"][name]`` when present and non-empty."""
    c = (report.get("curves") or {}).get(name)
    return c if isinstance(c, Mapping) and c else None
