"""Distances between two sets of per-case feature vectors (rows = cases, columns = features).

* :func:`frd_v1` — Fréchet Radiomics Distance v1 from per-case radiomics features, using the
  ``frd-score`` package's own normalisation and Fréchet functions, so that cached per-volume
  features give the number ``python -m frd_score REAL GEN`` prints;
* :func:`standardise` — joint z-score of both sets, the feature space of the other metrics;
* :func:`kid_polynomial` — unbiased MMD^2 with the cubic polynomial kernel (KID);
* :func:`mmd_rbf` — unbiased MMD^2 with a Gaussian kernel (median-distance bandwidth);
* :func:`prdc` — precision / recall / density / coverage (the ``prdc`` package).
"""

from __future__ import annotations

import contextlib
import io
import logging

import numpy as np


def _frd():
    from frd_score import frd

    return frd


def frd_v1_normalise(
    real: np.ndarray, generated: np.ndarray, reference: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """frd-score's v1 preprocessing of raw features, step for step.

    Mirrors ``frd_score.frd.calculate_feature_statistics`` for ``frd_version="v1"`` with the
    default ``norm_ref="d1"``: drop cases with any NaN feature, cast to float32, z-score both sets
    with the real (first) set's mean/SD through frd-score's ``z_score_normalize`` (range [0, 1],
    no guards, as v1 does), then drop feature columns that are NaN/inf in either set. Returns the
    two normalised arrays and the boolean mask of kept columns.

    ``reference=False`` does the z-score with :func:`_z_score_v1` (the same float32 operations,
    vectorised; equal to frd-score's to the bit, see the tests) instead of frd-score's own function.
    """
    frd = _frd()
    feats = []
    for f in (real, generated):
        f = np.asarray(f, dtype=np.float64)
        feats.append(f[~np.isnan(f).any(axis=1)].astype(np.float32))
    base = feats[0]
    if not reference:
        normed = [_z_score_v1(f, base) for f in feats]
        return _drop_bad_columns(normed)
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # frd-score logs one line per constant feature
    try:
        normed = [
            frd.z_score_normalize(
                f, new_min=0.0, new_max=1.0, base_distribution=base, replace_nan=False, handle_std_zero=False
            )
            for f in feats
        ]
    finally:
        logger.setLevel(level)
    return _drop_bad_columns(normed)


def _drop_bad_columns(normed: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bad = np.zeros(normed[0].shape[1], dtype=bool)
    for nf in normed:
        bad |= np.isnan(nf).any(axis=0) | np.isinf(nf).any(axis=0)
    keep = ~bad
    return normed[0][:, keep], normed[1][:, keep], keep


def _z_score_v1(features: np.ndarray, base: np.ndarray) -> np.ndarray:
    """frd-score's ``z_score_normalize(features, 0, 1, base_distribution=base, replace_nan=False,
    handle_std_zero=False)`` without its per-column Python loop.

    Written by hand because frd-score has no vectorised form: its loop formats a debug message for
    each of the ~464 features on every call, ~30 ms, which the report's 200+ bootstrap replicates
    (two calls each) turn into seconds. Same float32 arithmetic column by column: (x - mean) / SD
    * 1.0 + 0.0 with the base set's nanmean/nanstd; columns whose mean or SD is NaN stay raw, as
    there. The headline FRD still goes through frd-score's own function.
    """
    mean = np.nanmean(base, axis=0)
    std = np.nanstd(base, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = ((features - mean) / std) * (1.0 - 0.0) + 0.0
    skip = np.isnan(mean) | np.isnan(std)
    return np.where(skip, features, scaled).astype(features.dtype, copy=False)


def frechet_distance_squared(a: np.ndarray, b: np.ndarray) -> float:
    """Squared Fréchet distance between Gaussians fitted to the rows of ``a`` and ``b``.

    frd-score's ``calculate_frechet_distance`` (scipy ``sqrtm`` of the d x d covariance product:
    the reference number, about 1.5 s for d = 464).
    """
    frd = _frd()
    mu1, mu2 = np.mean(a, axis=0), np.mean(b, axis=0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return float(frd.calculate_frechet_distance(mu1, s1, mu2, s2))


def frechet_distance_squared_lowrank(a: np.ndarray, b: np.ndarray) -> float:
    """The same squared Fréchet distance through the n1 x n2 cross-Gram matrix (exact, fast).

    With centred rows X1, X2 the covariances are S_i = X_i^T X_i / (n_i - 1); the non-zero
    eigenvalues of S1 S2 are the squared singular values of M = X1 X2^T / sqrt((n1-1)(n2-1)), so
    tr sqrtm(S1 S2) = sum of the singular values of M. Used for bootstrap replicates, where a
    d x d matrix square root per replicate would dominate the report's run time.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    x1, x2 = a - a.mean(axis=0), b - b.mean(axis=0)
    n1, n2 = a.shape[0], b.shape[0]
    diff = a.mean(axis=0) - b.mean(axis=0)
    tr1 = float((x1**2).sum() / (n1 - 1))
    tr2 = float((x2**2).sum() / (n2 - 1))
    sv = np.linalg.svd(x1 @ x2.T / np.sqrt((n1 - 1) * (n2 - 1)), compute_uv=False)
    return float(diff @ diff + tr1 + tr2 - 2.0 * sv.sum())


def frd_v1(real: np.ndarray, generated: np.ndarray, exact: bool = True) -> float:
    """FRD v1 = log(Fréchet distance^2) of the v1-normalised radiomics features (frd-score's default).

    ``exact`` uses frd-score's own normalisation and Fréchet functions (the number its CLI prints);
    otherwise the vectorised normalisation and the low-rank identity
    (:func:`frechet_distance_squared_lowrank`), for bootstrap replicates. NaN when either set has fewer
    than 2 usable cases; -inf for identical statistics (as frd-score).
    """
    r, g, keep = frd_v1_normalise(real, generated, reference=exact)
    if r.shape[0] < 2 or g.shape[0] < 2 or not keep.any():
        return float("nan")
    d2 = (
        frechet_distance_squared(r, g)
        if exact
        else frechet_distance_squared_lowrank(r.astype(np.float64), g.astype(np.float64))
    )
    return float(np.log(d2)) if d2 > 0 else float("-inf")


def standardise(*arrays: np.ndarray) -> list[np.ndarray]:
    """Z-score every array by the per-feature mean and SD of all of them pooled.

    Pooled (joint) statistics keep z-scores bounded when a feature barely varies in one cohort
    (with the real cohort's SD alone, a feature constant in a few real scans would get z-scores of
    thousands and dominate the cubic KID kernel). Features non-finite anywhere or constant in
    the pool are dropped.
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    keep = np.ones(arrays[0].shape[1], dtype=bool)
    for a in arrays:
        keep &= np.isfinite(a).all(axis=0)
    pool = np.concatenate([a[:, keep] for a in arrays])
    mean, sd = pool.mean(axis=0), pool.std(axis=0)
    ok = sd > 1e-12 * np.maximum(1.0, np.abs(mean))
    return [(a[:, keep][:, ok] - mean[ok]) / sd[ok] for a in arrays]


def _unbiased_mmd2(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    m, n = k_xx.shape[0], k_yy.shape[0]
    if m < 2 or n < 2:
        return float("nan")
    sxx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    syy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * k_xy.mean())


def kid_polynomial(
    x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef: float = 1.0
) -> float:
    """Unbiased MMD^2 with k(a, b) = (gamma a.b + coef)^degree, gamma = 1/dim (KID, Binkowski 2018).

    Equals torchmetrics' ``poly_mmd`` for equal set sizes; also defined for unequal sizes.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    g = 1.0 / x.shape[1] if gamma is None else gamma

    def k(a, b):
        return (a @ b.T * g + coef) ** degree

    return _unbiased_mmd2(k(x, x), k(y, y), k(x, y))


def median_bandwidth(x: np.ndarray, y: np.ndarray) -> float:
    """Median pairwise Euclidean distance of the pooled sets (the usual RBF bandwidth heuristic)."""
    z = np.concatenate([x, y])
    d = np.sqrt(np.maximum(((z[:, None, :] - z[None, :, :]) ** 2).sum(-1), 0))
    iu = np.triu_indices(len(z), 1)
    med = float(np.median(d[iu])) if len(iu[0]) else 1.0
    return med if med > 0 else 1.0


def mmd_rbf(x: np.ndarray, y: np.ndarray, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 with k(a, b) = exp(-|a - b|^2 / (2 h^2)), h = median pooled distance by default."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    h = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)

    def k(a, b):
        d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
        return np.exp(-np.maximum(d2, 0) / (2 * h * h))

    return _unbiased_mmd2(k(x, x), k(y, y), k(x, y))


def prdc(real: np.ndarray, generated: np.ndarray, nearest_k: int = 5) -> dict[str, float]:
    """Precision, recall, density, coverage (Naeem et al. 2020) via the ``prdc`` package.

    ``nearest_k`` is capped at n // 5 (n = the smaller set size, at least 1): a k-NN ball should
    hold a small part of a set — with k = 5 of 6 scans every ball spans most of the cohort and a
    single repeated scan "covers" it. n = 25 and more keep prdc's recommended k = 5. NaN values if
    a set has fewer than 3 cases.
    """
    import joblib
    from prdc import compute_prdc

    n = min(len(real), len(generated))
    if n < 3:
        return {k: float("nan") for k in ("precision", "recall", "density", "coverage")}
    k = max(1, min(int(nearest_k), n // 5))
    # prdc prints set sizes to stdout (would corrupt --json); sklearn's n_jobs=8 thread pool costs
    # ~30 ms per call, which 200 bootstrap replicates notice: run it sequentially
    with contextlib.redirect_stdout(io.StringIO()), joblib.parallel_config(backend="sequential"):
        out = compute_prdc(np.asarray(real, np.float64), np.asarray(generated, np.float64), nearest_k=k)
    return {name: float(v) for name, v in out.items()}
