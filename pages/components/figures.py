"""Plotly figures for the pages: CT slices with HU hover, loss curves, report curves.

A slice is drawn as a heatmap whose values are HU and whose grey colour scale spans the CT window
(``zmin``/``zmax`` = level -/+ width/2, clipped outside), which is the same linear window as
:func:`ctdiff.data.display.apply_window`. So the picture is windowed while the hover shows true HU and
the voxel index under the cursor.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ctdiff.data.display import ORIENTATION_LABELS, PLANE_AXIS, pixel_aspect, window_bounds
from ctdiff_app.browse import pixel_grid, slice_axes

LABEL_COLOUR = "#f6e05e"  # the yellow of DICOM viewer overlays
COHORT_COLOURS = {"real": "#3182ce", "generated": "#dd6b20", "train": "#718096"}


def typed_array(a: np.ndarray) -> dict[str, str]:
    """A 2D array in plotly.js's base64 typed-array form (``{"dtype", "bdata", "shape"}``).

    Written by hand because plotly.py validates and copies a numpy array element-wise when a trace
    is built (~35 ms for a 512x512 slice, most of a slider move); the encoded form is what plotly.py
    itself would send, and it passes validation untouched.
    """
    a = np.asarray(a)
    dtype = {np.dtype(np.int16): "i2", np.dtype(np.uint8): "u1", np.dtype(np.float32): "f4"}.get(a.dtype)
    if dtype is None or a.ndim != 2:
        raise ValueError(f"expected a 2D int16/uint8/float32 array, got {a.ndim}D {a.dtype}")
    data = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
    return {
        "dtype": dtype,
        "bdata": base64.b64encode(data.tobytes()).decode("ascii"),
        "shape": f"{a.shape[0]}, {a.shape[1]}",
    }


def slice_figure(
    image_hu: np.ndarray,
    *,
    plane: str,
    index: int,
    shape: Sequence[int],
    spacing: Sequence[float],
    width: float,
    level: float,
    title: str = "",
    height: int = 520,
) -> go.Figure:
    """One displayed slice (rows, cols) in HU from :func:`ctdiff_app.browse.display_slice_hu`.

    Built as one dict without plotly's default template: plotly.py validates a figure's template
    and every incremental update in Python, which cost more than all the rest of a slider move.
    """
    lo, hi = window_bounds(width, level)
    h_name, v_name, s_name = slice_axes(plane)
    n = int(shape[PLANE_AXIS[plane]])
    left, right, top, bottom = ORIENTATION_LABELS[plane]
    label = {"showarrow": False, "xref": "x domain", "yref": "y domain", "font": {"color": LABEL_COLOUR, "size": 16}}
    annotations = [
        {**label, "text": f"<b>{text}</b>", "x": x, "y": y, "xanchor": xa, "yanchor": ya}
        for text, x, y, xa, ya in (
            (left, 0.0, 0.5, "left", "middle"),
            (right, 1.0, 0.5, "right", "middle"),
            (top, 0.5, 1.0, "center", "top"),
            (bottom, 0.5, 0.0, "center", "bottom"),
        )
    ]
    annotations.append(
        {
            **label,
            "text": f"{plane} {index + 1}/{n}  W{width:g} L{level:g}",
            "x": 0.0,
            "y": 0.0,
            "xanchor": "left",
            "yanchor": "bottom",
            "font": {"color": LABEL_COLOUR, "size": 11},
        }
    )
    heatmap = {
        "type": "heatmap",
        "z": typed_array(image_hu),
        **pixel_grid(shape, plane),
        "zmin": lo,
        "zmax": hi,
        "zauto": False,
        "colorscale": [[0.0, "black"], [1.0, "white"]],
        "showscale": False,
        "hovertemplate": f"{h_name}=%{{x}} {v_name}=%{{y}} {s_name}={index}<br><b>%{{z}} HU</b><extra></extra>",
        "name": "HU",
    }
    layout = {
        "template": {},
        "title": {"text": title, "font": {"size": 14}} if title else None,
        "height": height,
        "margin": {"l": 4, "r": 4, "t": 32 if title else 4, "b": 4},
        "plot_bgcolor": "black",
        "paper_bgcolor": "rgba(0,0,0,0)",
        "dragmode": "pan",
        "hoverlabel": {"bgcolor": "#1a202c", "font": {"color": "white"}},
        "annotations": annotations,
        "xaxis": {"autorange": "reversed", "visible": False, "constrain": "domain"},
        # physical pixel height/width from the voxel spacing: correct anatomy in every plane
        "yaxis": {
            "visible": False,
            "scaleanchor": "x",
            "scaleratio": pixel_aspect(spacing, plane),
            "constrain": "domain",
        },
    }
    return go.Figure({"data": [heatmap], "layout": layout})


def loss_figure(history: pd.DataFrame, means: Mapping[str, pd.DataFrame], every: int, log_y: bool = True) -> go.Figure:
    """Train/val loss per epoch (thin) and their ``every``-epoch means (bold), as in the thesis."""
    fig = go.Figure()
    colours = {"train_loss": "#3182ce", "val_loss": "#dd6b20"}
    for col, colour in colours.items():
        if col not in history.columns or history[col].dropna().empty:
            continue
        d = history[["epoch", col]].dropna()
        label = "train" if col == "train_loss" else "validation"
        fig.add_trace(
            go.Scatter(
                x=d["epoch"],
                y=d[col],
                mode="lines",
                name=f"{label} (raw)",
                line={"color": colour, "width": 1},
                opacity=0.35,
            )
        )
        m = means.get(col)
        if m is not None and not m.empty:
            fig.add_trace(
                go.Scatter(
                    x=m["epoch"],
                    y=m[col],
                    mode="lines+markers",
                    name=f"{label} ({every}-epoch mean)",
                    line={"color": colour, "width": 3},
                )
            )
    fig.update_layout(
        height=420,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "y": -0.2},
        xaxis_title="epoch",
        yaxis_title="MSE loss" + (" (log)" if log_y else ""),
    )
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def lr_figure(history: pd.DataFrame) -> go.Figure:
    d = history[["epoch", "lr"]].dropna()
    fig = go.Figure(go.Scatter(x=d["epoch"], y=d["lr"], mode="lines", name="learning rate", line={"color": "#805ad5"}))
    fig.update_layout(
        height=260, margin={"l": 10, "r": 10, "t": 10, "b": 10}, xaxis_title="epoch", yaxis_title="learning rate"
    )
    fig.update_yaxes(exponentformat="e")
    return fig


def histogram_figure(curve: Mapping[str, Any]) -> go.Figure:
    """HU histograms of real and generated from ``report["curves"]["hu_histogram"]``.

    The HU axis spans the bins that hold voxels in either cohort (plus one bin each side), not the
    whole binning range: a histogram binned to 3000 HU whose data end near 700 HU shows -1024..700.
    """
    edges = np.asarray(curve["bin_edges"], dtype=float)
    centres = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure()
    used = np.zeros(len(centres), dtype=bool)
    for cohort in ("real", "generated"):
        if curve.get(cohort) is not None:
            counts = np.asarray(curve[cohort], dtype=float)
            n = min(len(counts), len(used))  # a report with one count too few or many still draws
            used[:n] |= np.nan_to_num(counts[:n]) > 0
            fig.add_trace(
                go.Scatter(
                    x=centres,
                    y=counts,
                    mode="lines",
                    name=cohort,
                    line_shape="hvh",
                    line={"color": COHORT_COLOURS[cohort]},
                )
            )
    fig.update_layout(
        height=340,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis_title="HU",
        yaxis_title="fraction of voxels",
        title="HU histogram",
    )
    if used.any():
        first, last = np.flatnonzero(used)[[0, -1]]
        fig.update_xaxes(range=[float(edges[max(first - 1, 0)]), float(edges[min(last + 2, len(edges) - 1)])])
    return fig


def nps_figure(curve: Mapping[str, Any]) -> go.Figure:
    """Noise power spectra from ``report["curves"]["nps"]`` (log y), without the zero-frequency bin.

    The 0 1/mm bin holds the (removed) mean, numerically ~1e-28: on a log axis it stretches the scale
    over 25 decades and flattens both curves. The y range spans the positive values of the other bins.
    """
    freq = np.asarray(curve["frequency_mm"], dtype=float)
    keep = freq > 0
    fig = go.Figure()
    positive = []
    for cohort in ("real", "generated"):
        if curve.get(cohort) is not None:
            y = np.asarray(curve[cohort], dtype=float)[keep]
            positive.append(y[np.isfinite(y) & (y > 0)])
            fig.add_trace(
                go.Scatter(x=freq[keep], y=y, mode="lines", name=cohort, line={"color": COHORT_COLOURS[cohort]})
            )
    fig.update_layout(
        height=340,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis_title="spatial frequency (1/mm)",
        yaxis_title="NPS (HU² mm²)",
        title="Noise power spectrum",
    )
    fig.update_yaxes(type="log")
    values = np.concatenate(positive) if positive else np.array([])
    if values.size:
        lo, hi = np.log10(values.min()), np.log10(values.max())
        pad = max(0.1 * (hi - lo), 0.1)
        fig.update_yaxes(range=[float(lo - pad), float(hi + pad)])
    if keep.any():
        fig.update_xaxes(range=[0.0, float(freq[keep].max())])
    return fig


def scatter_figure(per_case: pd.DataFrame, x: str, y: str) -> go.Figure:
    fig = go.Figure()
    for cohort, d in per_case.groupby("cohort", sort=False) if "cohort" in per_case else [("all", per_case)]:
        d = d[list(dict.fromkeys(c for c in (x, y, "file", "case") if c in d.columns))].dropna(subset=[x, y])
        if d.empty:
            continue
        labels = d["case"] if "case" in d.columns else d.get("file")
        fig.add_trace(
            go.Scatter(
                x=d[x],
                y=d[y],
                mode="markers",
                name=str(cohort),
                text=labels,
                marker={"color": COHORT_COLOURS.get(str(cohort)), "size": 9},
                hovertemplate=f"%{{text}}<br>{x}=%{{x:.4g}}<br>{y}=%{{y:.4g}}<extra>{cohort}</extra>",
            )
        )
    fig.update_layout(height=380, margin={"l": 10, "r": 10, "t": 30, "b": 10}, xaxis_title=x, yaxis_title=y)
    return fig
