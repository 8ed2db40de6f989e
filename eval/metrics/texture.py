"""Texture: grey-level co-occurrence (GLCM) features in soft tissue (scikit-image) and their distance.

Each axial slice is quantised inside a fixed HU window into ``levels`` grey levels (1..levels);
voxels outside the soft-tissue mask get level 0, and co-occurrences involving level 0 are dropped
before the properties are computed, so only soft-tissue texture is measured.
"""

from __future__ import annotations

import numpy as np

from ctdiff.data.hu import window_range

GLCM_PROPERTIES = ("contrast", "dissimilarity", "homogeneity", "ASM", "energy", "correlation")
GLCM_WINDOW_HU = window_range("soft tissue")  # W 400, L 40: -160..240 HU


def glcm_features(
    array: np.ndarray,
    mask: np.ndarray,
    levels: int = 32,
    window: tuple[float, float] = GLCM_WINDOW_HU,
    distances: tuple[int, ...] = (1, 2),
    angles: tuple[float, ...] = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4),
    slice_step: int = 1,
    min_pairs: int = 50,
) -> dict[str, float]:
    """Mean GLCM properties over axial slices, distances and angles, inside ``mask``.

    Returns ``{property: value}`` (NaN for every property when no slice has ``min_pairs``
    co-occurrences inside the mask).
    """
    from skimage.feature import graycomatrix, graycoprops

    lo, hi = window
    q = (
        np.floor((np.clip(np.asarray(array, dtype=np.float64), lo, hi - 1e-6) - lo) / (hi - lo) * levels).astype(
            np.int64
        )
        + 1
    )
    q = np.where(mask, q, 0).astype(np.uint8)
    values: dict[str, list[float]] = {p: [] for p in GLCM_PROPERTIES}
    for z in range(0, q.shape[2], max(1, slice_step)):
        if mask[:, :, z].sum() < min_pairs:
            continue
        glcm = graycomatrix(
            q[:, :, z], distances=list(distances), angles=list(angles), levels=levels + 1, symmetric=True
        )
        glcm = glcm[1:, 1:].astype(np.float64)  # drop pairs that touch the outside of the mask
        totals = glcm.sum(axis=(0, 1))
        if totals.min() < min_pairs:
            continue
        glcm /= totals
        for p in GLCM_PROPERTIES:
            values[p].append(float(np.nanmean(graycoprops(glcm, p))))
    return {p: (float(np.mean(v)) if v else float("nan")) for p, v in values.items()}


def standardised_mean_distance(real: np.ndarray, generated: np.ndarray) -> float:
    """RMS over features of (mean_generated - mean_real) / SD_real, for (cases, features) arrays.

    Cases with no finite feature (GLCM of a scan without soft tissue, e.g. a lung crop) are left
    out: otherwise one such case would remove every feature. Features whose real SD is 0 use the
    pooled SD; features that stay constant or are not finite in either cohort are ignored. NaN if
    no feature is left or the real cohort has fewer than 2 measurable cases (generated: 1).
    """
    real = np.asarray(real, dtype=np.float64)
    generated = np.asarray(generated, dtype=np.float64)
    real = real[np.isfinite(real).any(axis=1)]
    generated = generated[np.isfinite(generated).any(axis=1)]
    if real.shape[0] < 2 or generated.shape[0] < 1:
        return float("nan")
    keep = np.isfinite(real).all(axis=0) & np.isfinite(generated).all(axis=0)
    real, generated = real[:, keep], generated[:, keep]
    sd = real.std(axis=0, ddof=1)
    pooled = np.concatenate([real, generated]).std(axis=0, ddof=1)
    sd = np.where(sd > 0, sd, pooled)
    ok = sd > 0
    if not ok.any():
        return float("nan")
    z = (generated[:, ok].mean(axis=0) - real[:, ok].mean(axis=0)) / sd[ok]
    return float(np.sqrt(np.mean(z**2)))
