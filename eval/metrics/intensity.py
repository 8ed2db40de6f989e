"""Intensity and contrast: HU histograms and their 1-Wasserstein distance, RMS contrast, tissue CNR,
slice-to-slice banding.

All functions take float HU arrays (any shape) and boolean masks of the same shape.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ctdiff.data.hu import TISSUE_RANGES

# Fixed HU binning shared by every cohort so histograms can be pooled and compared bin by bin.
HU_MIN, HU_MAX, HU_BIN_WIDTH = -1024.0, 3072.0, 4.0

# Tissue classes (ctdiff.data.hu.TISSUE_RANGES) are assigned on the lightly smoothed image.


def hu_bin_edges(lo: float = HU_MIN, hi: float = HU_MAX, width: float = HU_BIN_WIDTH) -> np.ndarray:
    n = int(round((hi - lo) / width))
    return lo + width * np.arange(n + 1, dtype=np.float64)


def hu_histogram(values: np.ndarray, bin_edges: np.ndarray) -> np.ndarray:
    """Probability of each HU bin (sums to 1); values outside the edges are clipped into the end bins."""
    v = np.clip(np.asarray(values, dtype=np.float64).ravel(), bin_edges[0], bin_edges[-1] - 1e-6)
    counts, _ = np.histogram(v, bins=bin_edges)
    total = counts.sum()
    if total == 0:
        raise ValueError("no values to histogram (empty mask?)")
    return counts / total


def wasserstein_histograms(p: np.ndarray, q: np.ndarray, bin_edges: np.ndarray) -> float:
    """1-Wasserstein distance (HU) between two histograms on the same bins, mass at bin centres.

    ``scipy.stats.wasserstein_distance`` with the bin centres as values and the histograms as
    weights (= sum_i |P(i) - Q(i)| * (c_{i+1} - c_i), P and Q the cumulative histograms).
    """
    from scipy import stats

    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.shape[0] != len(bin_edges) - 1:
        raise ValueError("histograms must share the same bins")
    centres = 0.5 * (bin_edges[:-1] + bin_edges[1:])
    return float(stats.wasserstein_distance(centres, centres, p, q))


def pooled_histogram(histograms: np.ndarray) -> np.ndarray:
    """Cohort histogram: the mean of per-case histograms (each case weighs the same)."""
    h = np.asarray(histograms, dtype=np.float64)
    return h.mean(axis=0)


def contrast_rms(array: np.ndarray, mask: np.ndarray) -> float:
    """RMS contrast (HU): the standard deviation of HU inside the body mask.

    (The textbook RMS contrast divides by the mean intensity; HU have a mean near 0 in soft tissue,
    so the undivided standard deviation is the stable, interpretable form.)
    """
    vals = np.asarray(array, dtype=np.float64)[mask]
    if vals.size < 2:
        return float("nan")
    return float(vals.std())


def tissue_masks(
    array: np.ndarray, body: np.ndarray, smooth_sigma: float = 1.0, erode: int = 1
) -> dict[str, np.ndarray]:
    """Masks of the tissue classes in :data:`TISSUE_RANGES`, inside the (eroded) body.

    Classification uses an in-plane Gaussian-smoothed copy (``smooth_sigma`` voxels), so that noise
    does not decide a voxel's class; statistics are then taken on the original HU.
    """
    smooth = ndimage.gaussian_filter(np.asarray(array, dtype=np.float32), sigma=(smooth_sigma, smooth_sigma, 0))
    inner = ndimage.binary_erosion(body, structure=np.ones((3, 3, 1), bool), iterations=erode) if erode else body
    return {name: inner & (smooth >= lo) & (smooth <= hi) for name, (lo, hi) in TISSUE_RANGES.items()}


def tissue_mean_hu(array: np.ndarray, masks: dict[str, np.ndarray], min_voxels: int = 20) -> dict[str, float]:
    """Mean HU of each tissue class (NaN where the class has fewer than ``min_voxels`` voxels)."""
    out = {}
    for name, m in masks.items():
        out[name] = float(np.asarray(array, dtype=np.float64)[m].mean()) if m.sum() >= min_voxels else float("nan")
    return out


def contrast_to_noise(mean_a: float, mean_b: float, noise_sd: float) -> float:
    """CNR = |mean_a - mean_b| / noise SD (dimensionless); NaN when any input is missing or SD is 0."""
    if not np.isfinite(mean_a) or not np.isfinite(mean_b) or not np.isfinite(noise_sd) or noise_sd <= 0:
        return float("nan")
    return float(abs(mean_a - mean_b) / noise_sd)


def slice_means(array: np.ndarray, mask: np.ndarray, min_voxels: int = 50) -> np.ndarray:
    """Mean HU of ``mask`` in each axial slice of an ``(x, y, z)`` array (NaN where a slice has fewer
    than ``min_voxels`` mask voxels)."""
    a = np.asarray(array, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if a.ndim != 3 or a.shape != m.shape:
        raise ValueError(f"expected an (x, y, z) array and a mask of its shape, got {a.shape} and {m.shape}")
    counts = m.sum(axis=(0, 1))
    sums = np.where(m, a, 0.0).sum(axis=(0, 1))
    return np.where(counts >= min_voxels, sums / np.maximum(counts, 1), np.nan)


def slice_banding(array: np.ndarray, mask: np.ndarray, min_voxels: int = 50) -> float:
    """Slice-to-slice banding (HU): how much the mean HU of ``mask`` (soft tissue) jumps between
    neighbouring axial slices, beyond a smooth trend along z.

    With m_k the mask's mean HU in slice k (:func:`slice_means`), the second differences
    d_k = m_(k-1) - 2 m_k + m_(k+1) over every run of three consecutive measurable slices remove any
    linear trend (anatomy changing gradually along z), and for independent per-slice offsets of SD s
    E[d_k^2] = 6 s^2. So the value sqrt(mean(d_k^2) / 6) reads as that SD: about 0 for a smooth profile,
    s for slices each shifted by a random offset of SD s. Noise adds its own share (the slice mean of
    n voxels carries roughly noise SD / sqrt(n / correlated area)), which is why a report compares it with
    the real scans'. NaN when fewer than three consecutive slices are measurable. No library computes
    this (CT number uniformity along z in phantom QA is read from ROIs by hand), hence written here.
    """
    m = slice_means(array, mask, min_voxels)
    d = m[:-2] - 2.0 * m[1:-1] + m[2:]
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean(d * d) / 6.0))
