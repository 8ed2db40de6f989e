"""The metrics dashboard's self-test tab: the sensitivity table of ``python -m eval selftest``.

Reads ``selftest.json`` (schema ``ctdiff-eval-selftest/1``) from a folder (by default
``<report dir>/selftest`` or a ``selftest`` folder beside the report) and shows, per controlled
degradation of the real cohort, which metrics detected it. Nothing here computes a metric.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

SELFTEST_SCHEMA = "ctdiff-eval-selftest/1"


def load_selftest(path: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(result, None)`` or ``(None, why)`` for a selftest folder or selftest.json."""
    p = Path(path)
    if p.is_dir():
        p = p / "selftest.json"
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        return None, f"no selftest.json at {p}"
    except (OSError, ValueError) as exc:
        return None, f"{p}: not readable JSON ({type(exc).__name__})"
    if (
        not isinstance(data, dict)
        or data.get("schema") != SELFTEST_SCHEMA
        or not isinstance(data.get("degradations"), dict)
    ):
        return None, f"{p}: not a {SELFTEST_SCHEMA} file"
    return data, None


def _cell(d: dict[str, Any]) -> str:
    if not isinstance(d, dict) or d.get("detected") is None:
        return "—"
    arrow = {"up": "▲", "down": "▼"}.get(d.get("direction"), "=")
    z = d.get("z")
    return (
        f"{arrow} {z:+.1f}σ{' ✓' if d['detected'] else ''}"
        if isinstance(z, (int, float))
        else f"{arrow}{' ✓' if d['detected'] else ''}"
    )


def sensitivity_table(result: dict[str, Any]) -> pd.DataFrame:
    """One row per degradation: a cell per metric (direction, z, ✓ when detected), then missed metrics."""
    metrics = (result.get("settings") or {}).get("metrics") or []
    rows = []
    for name, d in result["degradations"].items():
        row = {"degradation": name}
        row.update({m: _cell((d.get("metrics") or {}).get(m)) for m in metrics})
        row["missed"] = ", ".join(d.get("missed") or []) or "—"
        rows.append(row)
    return pd.DataFrame(rows, columns=["degradation", *metrics, "missed"])


def default_selftest_dir(report_dir: str | None) -> str:
    if not report_dir:
        return ""
    r = Path(report_dir)
    for cand in (r / "selftest", r.parent / "selftest"):
        if (cand / "selftest.json").is_file():
            return str(cand)
    return str(r / "selftest")


def selftest_tab(report_dir: str | None) -> None:
    """The tab's content (call inside ``with tab:``)."""
    folder = st.text_input(
        "Self-test folder (python -m eval selftest --out)", value=default_selftest_dir(report_dir), key="selftest_dir"
    )
    result, err = load_selftest(folder) if folder else (None, "no folder given")
    if result is None:
        st.info(
            f"No self-test to show ({err}). Run `python -m eval selftest --real REAL --out {folder or 'DIR'}` "
            "to see which metrics detect controlled degradations of your real scans."
        )
        return
    inp = result.get("inputs") or {}
    st.caption(
        f"{inp.get('n_real', '?')} real scans: {inp.get('n_reference', '?')} as reference, {inp.get('n_degraded', '?')} degraded. "
        "Cell: value up ▲ / down ▼, z = change of the distance from real in bootstrap SEs, ✓ detected (z > 1.96)."
    )
    st.dataframe(sensitivity_table(result), hide_index=True, width="stretch", key="selftest_table")
    missed = {n: d["missed"] for n, d in result["degradations"].items() if d.get("missed")}
    if missed:
        st.warning("Expected but not detected: " + "; ".join(f"{n}: {', '.join(m)}" for n, m in missed.items()))
