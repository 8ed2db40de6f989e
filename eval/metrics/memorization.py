"""Memorisation: is a generated scan closer to a training scan than real unseen scans ever are?

Inputs are distance matrices (rows = queries, columns = training scans); the report uses
1 - SSIM. A generated scan is flagged when its nearest-training distance is below the
``quantile`` (default 5 %) of the held-out real scans' nearest-training distances — closer to a
training scan than 95 % of unseen real scans are. Without a separate training set the real cohort
plays both roles with leave-one-out (each real scan's nearest *other* real scan).
"""

from __future__ import annotations

import numpy as np


def nearest(distances: np.ndarray, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Index and distance of each row's nearest column (the diagonal ignored with ``exclude_self``)."""
    d = np.array(distances, dtype=np.float64)
    if exclude_self:
        if d.shape[0] != d.shape[1]:
            raise ValueError("exclude_self needs a square matrix")
        np.fill_diagonal(d, np.inf)
    idx = np.argmin(d, axis=1)
    return idx, d[np.arange(d.shape[0]), idx]


def memorisation_threshold(null_distances: np.ndarray, quantile: float = 0.05) -> float:
    """The ``quantile`` of held-out real nearest-training distances (linear interpolation)."""
    null = np.asarray(null_distances, dtype=np.float64)
    null = null[np.isfinite(null)]
    if null.size < 2:
        return float("nan")
    return float(np.quantile(null, quantile))


def memorisation_flags(generated_distances: np.ndarray, threshold: float) -> np.ndarray:
    """True where a generated scan's nearest-training distance is below ``threshold``."""
    return np.asarray(generated_distances, dtype=np.float64) < threshold
