"""Noise where CT physicists measure it: homogeneous soft-tissue ROIs, their SD and noise power spectrum.

Pipeline for one volume (arrays are (x, y, z) HU, ROIs are square in the axial (x, y) plane):

1. :func:`find_homogeneous_rois` — candidate squares inside the body whose *smoothed* mean lies in
   the soft-tissue range and whose smoothed SD (anatomy, not noise) is lowest;
2. :func:`roi_stack` + :func:`detrend_rois` — cut them out and remove a 2nd-order polynomial
   (slow anatomy / beam hardening), as in the AAPM/ICRU NPS procedure;
3. :func:`noise_sd_from_rois` and :func:`nps_radial` — pooled SD and radially averaged 2D NPS.

scikit-image has a wavelet noise estimator (:func:`wavelet_noise_sd` wraps it) but no ROI-based
noise or NPS, so these are written here.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ctdiff.data.hu import TISSUE_RANGES

SOFT_TISSUE_HU = TISSUE_RANGES["soft_tissue"]


def _box_sums(a: np.ndarray, size: int) -> np.ndarray:
    """Sums of every size x size in-plane box: out[x0, y0, z] = a[x0:x0+size, y0:y0+size, z].sum()."""
    c = np.zeros((a.shape[0] + 1, a.shape[1] + 1, a.shape[2]), dtype=np.float64)
    c[1:, 1:] = np.cumsum(np.cumsum(a, axis=0, dtype=np.float64), axis=1)
    return c[size:, size:] - c[:-size, size:] - c[size:, :-size] + c[:-size, :-size]


def find_homogeneous_rois(
    array: np.ndarray,
    body: np.ndarray,
    roi_size: int,
    hu_range: tuple[float, float] = SOFT_TISSUE_HU,
    max_structure_hu: float = 15.0,
    smooth_sigma: float = 2.0,
    max_rois: int = 32,
    max_per_slice: int = 4,
) -> list[tuple[int, int, int]]:
    """Corners ``(x0, y0, z)`` of up to ``max_rois`` non-overlapping homogeneous soft-tissue ROIs.

    A candidate lies fully inside ``body``, its in-plane smoothed mean is within ``hu_range`` and
    the SD of the smoothed image inside it (structure, largely free of noise) is at most
    ``max(max_structure_hu, 2 * lowest structure found)``; the most homogeneous are taken first.
    """
    if array.ndim != 3 or array.shape != body.shape:
        raise ValueError("array and body mask must be 3D and of the same shape")
    r = int(roi_size)
    if r < 4 or r > min(array.shape[:2]):
        return []
    smooth = ndimage.gaussian_filter(np.asarray(array, dtype=np.float32), sigma=(smooth_sigma, smooth_sigma, 0))
    n = float(r * r)
    inside = _box_sums(body.astype(np.float32), r) >= n - 0.5
    mean = _box_sums(smooth, r) / n
    var = np.maximum(_box_sums(smooth.astype(np.float64) ** 2, r) / n - mean**2, 0.0)
    stride = max(r // 2, 1)
    sub = (slice(None, None, stride), slice(None, None, stride), slice(None))
    ok = inside[sub] & (mean[sub] >= hu_range[0]) & (mean[sub] <= hu_range[1])
    if not ok.any():
        return []
    structure = np.sqrt(var[sub])
    threshold = max(max_structure_hu, 2.0 * float(structure[ok].min()))
    ok &= structure <= threshold
    ix, iy, iz = np.nonzero(ok)
    order = np.argsort(structure[ix, iy, iz], kind="stable")
    chosen: list[tuple[int, int, int]] = []
    per_slice: dict[int, list[tuple[int, int]]] = {}
    for k in order:
        x0, y0, z = int(ix[k]) * stride, int(iy[k]) * stride, int(iz[k])
        taken = per_slice.setdefault(z, [])
        if len(taken) >= max_per_slice:
            continue
        if any(abs(x0 - a) < r and abs(y0 - b) < r for a, b in taken):
            continue
        taken.append((x0, y0))
        chosen.append((x0, y0, z))
        if len(chosen) >= max_rois:
            break
    return chosen


def roi_stack(array: np.ndarray, rois: list[tuple[int, int, int]], roi_size: int) -> np.ndarray:
    """The ROIs as a (K, roi_size, roi_size) float64 stack."""
    r = int(roi_size)
    if not rois:
        return np.zeros((0, r, r))
    return np.stack([np.asarray(array[x0 : x0 + r, y0 : y0 + r, z], dtype=np.float64) for x0, y0, z in rois])


def detrend_rois(stack: np.ndarray, order: int = 2) -> np.ndarray:
    """Subtract the least-squares 2D polynomial of degree ``order`` from each ROI."""
    k, r, r2 = stack.shape
    if k == 0:
        return stack.copy()
    u, v = np.meshgrid(np.linspace(-1, 1, r), np.linspace(-1, 1, r2), indexing="ij")
    terms = [u**i * v**j for i in range(order + 1) for j in range(order + 1 - i)]
    design = np.stack([t.ravel() for t in terms], axis=1)
    values = stack.reshape(k, -1).T
    coef, *_ = np.linalg.lstsq(design, values, rcond=None)
    return (values - design @ coef).T.reshape(stack.shape)


def noise_sd_from_rois(detrended: np.ndarray) -> float:
    """Pooled noise SD (HU): sqrt of the mean of the per-ROI variances; NaN without ROIs."""
    if detrended.shape[0] == 0:
        return float("nan")
    return float(np.sqrt(np.mean(detrended.reshape(detrended.shape[0], -1).var(axis=1, ddof=1))))


def nps_radial(detrended: np.ndarray, spacing_xy: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged 2D noise power spectrum of detrended ROIs.

    NPS(fx, fy) = dx * dy / (Nx * Ny) * <|DFT(roi)|^2> (HU^2 mm^2), averaged over ROIs, then over
    rings of width 1 / (N * max(dx, dy)) up to the Nyquist frequency. Returns ``(frequency in
    mm^-1, NPS)``; the integral of the 2D NPS over frequency equals the ROI variance.
    """
    k, nx, ny = detrended.shape
    dx, dy = float(spacing_xy[0]), float(spacing_xy[1])
    n_bins = min(nx, ny) // 2 + 1
    df = 1.0 / (min(nx, ny) * max(dx, dy))
    freq = df * np.arange(n_bins)
    if k == 0:
        return freq, np.full(n_bins, np.nan)
    power = np.mean(np.abs(np.fft.fft2(detrended, axes=(1, 2))) ** 2, axis=0) * dx * dy / (nx * ny)
    fr = np.sqrt(np.fft.fftfreq(nx, dx)[:, None] ** 2 + np.fft.fftfreq(ny, dy)[None, :] ** 2)
    ring = np.rint(fr / df).astype(int)
    keep = ring < n_bins
    sums = np.bincount(ring[keep], weights=power[keep], minlength=n_bins)
    counts = np.bincount(ring[keep], minlength=n_bins)
    with np.errstate(invalid="ignore"):
        return freq, sums / counts


def nps_peak_frequency(freq: np.ndarray, nps: np.ndarray) -> float:
    """Frequency (mm^-1) of the NPS maximum, ignoring the zero-frequency bin."""
    if nps.size < 2 or not np.isfinite(nps[1:]).any():
        return float("nan")
    return float(freq[1 + int(np.nanargmax(nps[1:]))])


def normalise_nps(freq: np.ndarray, nps: np.ndarray) -> np.ndarray:
    """NPS scaled to unit area over the radial frequency axis (shape only, not magnitude)."""
    df = float(freq[1] - freq[0])
    area = float(np.nansum(nps) * df)
    if not np.isfinite(area) or area <= 0:
        return np.full_like(nps, np.nan)
    return nps / area


def nps_distance(freq: np.ndarray, nps_a: np.ndarray, nps_b: np.ndarray) -> float:
    """L1 distance between two unit-area NPS curves, integral |a - b| df (0 = same shape, max 2)."""
    a = normalise_nps(freq, nps_a)
    b = normalise_nps(freq, nps_b)
    df = float(freq[1] - freq[0])
    return float(np.sum(np.abs(a - b)) * df)


def wavelet_noise_sd(array: np.ndarray, body: np.ndarray | None = None, n_slices: int = 8) -> float:
    """scikit-image's wavelet (MAD of the finest diagonal sub-band) Gaussian noise estimate, in HU.

    The median of 2D estimates on ``n_slices`` evenly spaced axial slices of the central half
    (in x and y) of the body's bounding box: clipped air and the skin edge would bias it, and 2D
    slices keep it fast on large volumes. A cross-check of the ROI noise SD: both agree for white noise, the wavelet
    estimate is lower for spatially correlated noise and higher where edges are dense.
    """
    from skimage.restoration import estimate_sigma

    a = np.asarray(array, dtype=np.float64)
    if body is not None and body.any():
        idx = [np.flatnonzero(body.any(axis=tuple(j for j in range(3) if j != i))) for i in range(3)]
        (x0, x1), (y0, y1) = [(i[0] + (i[-1] - i[0]) // 4, i[-1] - (i[-1] - i[0]) // 4 + 1) for i in idx[:2]]
        a = a[x0:x1, y0:y1, idx[2][0] : idx[2][-1] + 1]
    zs = np.unique(np.linspace(0, a.shape[2] - 1, min(n_slices, a.shape[2])).round().astype(int))
    return float(np.median([estimate_sigma(a[:, :, z], channel_axis=None) for z in zs]))
