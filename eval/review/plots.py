"""Figures of a reader study for the report (matplotlib; no file I/O here: callers save).

Kept apart from :mod:`eval.review.mrmc` and :mod:`eval.review.stats`, which stay pure numbers.
Figures are built as ``matplotlib.figure.Figure`` objects, not through pyplot, so no GUI backend or
global figure state is involved.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure

from eval.review.mrmc import MrmcResult


def roc_figure(curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], result: MrmcResult) -> Figure:
    """One panel per condition: each reader's empirical ROC curve (synthetic = positive) with its
    AUC in the legend, the reader-averaged AUC with its CI in the title, and the chance diagonal."""
    n = len(curves)
    fig = Figure(figsize=(4.2 * n, 4.2), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    by_name = {c.name: c for c in result.conditions}
    for ax, (cond, readers) in zip(axes, curves.items()):
        res = by_name[cond]
        for reader, (fpr, tpr) in readers.items():
            ax.plot(
                fpr, tpr, drawstyle="default", marker=".", lw=1.2, label=f"{reader} (AUC {res.reader_auc[reader]:.3f})"
            )
        ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="chance")
        a = res.auc
        ax.set_title(f"{cond}: AUC {a.value:.3f} [{a.ci_low:.3f}, {a.ci_high:.3f}]", fontsize=9)
        ax.set_xlabel("real called synthetic (1 - specificity)")
        ax.set_ylabel("synthetic called synthetic (sensitivity)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.legend(fontsize=7, loc="lower right")
    return fig


def heatmap_figure(background: np.ndarray, heat: np.ndarray, title: str) -> Figure:
    """A greyscale slice with a translucent heat map of giveaway marks over it."""
    fig = Figure(figsize=(4.2, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.imshow(background.T, cmap="gray", origin="lower")
    if heat.max() > 0:
        ax.imshow(np.ma.masked_less_equal(heat.T, 0), cmap="hot", alpha=0.6, origin="lower")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return fig


def png_of(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()
