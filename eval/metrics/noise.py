"""Noise where CT physicists measure it: homogeneous soft-tissue ROIs, their SD and noise power spectrum.

Pipeline for one volume (arrays are (x, y, z) HU, ROIs are square in the axial (x, y) plane):

1. :func:`roi_sizes` — the ROI sides to try: the preferred 40 mm, then 30, 20, 15, 10 mm, down to
   8 px, so that small fields of view (a 96 mm phantom, a chest slab) still get ROIs;
2. :func:`find_homogeneous_rois` — candidate squares inside the body whose *smoothed* mean lies in
   the soft-tissue range and whose smoothed SD (anatomy, not noise) is at most an *absolute*
   :data:`MAX_STRUCTURE_HU`, never a threshold relative to what the scan offers;
3. :func:`roi_stack` + :func:`detrend_rois` — cut them out and remove a 2nd-order polynomial
   (slow anatomy / beam hardening), as in the AAPM/ICRU NPS procedure;
4. :func:`noise_sd_from_rois`, :func:`nps_radial`, :func:`nps_peak_frequency` (sub-bin, parabolic)
   and :func:`nps_mean_frequency` (f_avg, AAPM TG-233);
5. :func:`measure_noise` — all of it at every size, each size cross-checked against an independent
   estimate (:func:`local_sd_noise`, the mode of the local SD in soft tissue, as in the global noise
   index of Christianson et al. 2015) and refused when they differ by more than
   :data:`CROSS_CHECK_FACTOR`; :func:`choose_roi_size` then picks ONE size for a whole comparison so
   that real and generated scans are measured alike (the ROI SD depends on the ROI size).

scikit-image has a wavelet noise estimator (:func:`wavelet_noise_sd` wraps it) but no ROI-based
noise, NPS or local-SD estimate, so these are written here. The wavelet estimate is reported but
is not the cross-check: it sees only the finest diagonal band, so it reads correlated CT noise
about 3x low and blurred noise about 9x low (phantoms, docs/metrics.md), where the local-SD mode
stays within 1.5x of the ROI SD.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np
from scipy import ndimage

from ctdiff.data.hu import TISSUE_RANGES

SOFT_TISSUE_HU = TISSUE_RANGES["soft_tissue"]
ROI_SIZES_MM = (40.0, 30.0, 20.0, 15.0, 10.0)  # tried in this order, then MIN_ROI_PX
MIN_ROI_PX, MAX_ROI_PX = 8, 64
# Absolute homogeneity: SD of the smoothed (sigma STRUCTURE_SIGMA px) image inside an ROI. Soft-tissue
# organs vary by a few HU; an ROI across a vessel, an organ border or fat/muscle reaches tens of HU.
# The smoothing leaves about 0.14x of CT noise (5.4 HU of 40 HU, phantom FBP-like noise), so
# scans with up to ~60 HU noise still find ROIs.
MAX_STRUCTURE_HU = 10.0
STRUCTURE_SIGMA = 3.0
# ROI noise SD vs the local-SD mode: refused beyond this factor either way. The two agree within
# 1.5x on phantoms (white, correlated, blurred noise; 1.5 to 6.6 mm pixels); the chest slab that
# gave 122 HU against ~10 HU is 10x off.
CROSS_CHECK_FACTOR = 2.5
# A scan is measurable at an ROI size with at least this many accepted ROIs: a size where only one
# or two squares fit is where they brush against anatomy (phantoms: 24-32 HU instead of 20).
MIN_ROIS = 4
LOCAL_SD_KERNEL = 5  # px, side of the in-plane window of the local-SD estimate
MIN_SOFT_TISSUE_VOXELS = 200


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
    max_structure_hu: float = MAX_STRUCTURE_HU,
    smooth_sigma: float = STRUCTURE_SIGMA,
    max_rois: int = 32,
    max_per_slice: int = 4,
    smooth: np.ndarray | None = None,
) -> list[tuple[int, int, int]]:
    """Corners ``(x0, y0, z)`` of up to ``max_rois`` non-overlapping homogeneous soft-tissue ROIs.

    A candidate lies fully inside ``body``, its in-plane smoothed mean is within ``hu_range`` and
    the SD of the smoothed image inside it (structure, largely free of noise) is at most the
    absolute ``max_structure_hu``; the most homogeneous are taken first. ``smooth`` (the in-plane
    Gaussian-smoothed array) may be passed to reuse it across ROI sizes.
    """
    if array.ndim != 3 or array.shape != body.shape:
        raise ValueError("array and body mask must be 3D and of the same shape")
    r = int(roi_size)
    if r < 4 or r > min(array.shape[:2]):
        return []
    if smooth is None:
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
    ok &= structure <= max_structure_hu
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
    """Frequency (mm^-1) of the NPS maximum, ignoring the zero-frequency bin, refined below one bin.

    The vertex of the parabola through the highest bin and its two neighbours (clipped to half a
    bin either way), so that a blur that shifts the peak by less than one bin still moves it.
    """
    if nps.size < 2 or not np.isfinite(nps[1:]).any():
        return float("nan")
    i = 1 + int(np.nanargmax(nps[1:]))
    f = float(freq[i])
    if 1 <= i - 1 and i + 1 < nps.size and np.isfinite(nps[i - 1 : i + 2]).all():
        y0, y1, y2 = (float(v) for v in nps[i - 1 : i + 2])
        curvature = y0 - 2.0 * y1 + y2
        if curvature < 0:
            shift = float(np.clip(0.5 * (y0 - y2) / curvature, -0.5, 0.5))
            f += shift * float(freq[1] - freq[0])
    return f


def nps_mean_frequency(freq: np.ndarray, nps: np.ndarray) -> float:
    """NPS mean frequency f_avg = integral f NPS(f) df / integral NPS(f) df (AAPM TG-233), mm^-1."""
    ok = np.isfinite(nps)
    total = float(np.sum(nps[ok]))
    if not ok.any() or total <= 0:
        return float("nan")
    return float(np.sum(freq[ok] * nps[ok]) / total)


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


def local_sd_noise(
    array: np.ndarray, body: np.ndarray, kernel: int = LOCAL_SD_KERNEL, hu_range: tuple[float, float] = SOFT_TISSUE_HU
) -> float:
    """Noise SD as the mode of the local SD in soft tissue (a global noise index), in HU.

    The SD (unbiased) of every ``kernel`` x ``kernel`` in-plane window fully inside the body whose
    centre is soft tissue (smoothed HU in ``hu_range``), histogrammed in 0.5 HU bins (lightly
    smoothed); the most frequent value is the noise, as edges only add a tail. Independent of the
    ROI search (no ROI, no detrending), hence the cross-check. NaN with fewer than
    :data:`MIN_SOFT_TISSUE_VOXELS` such windows.
    """
    a = np.asarray(array, dtype=np.float64)
    k = int(kernel)
    mean = ndimage.uniform_filter(a, size=(k, k, 1))
    mean2 = ndimage.uniform_filter(a * a, size=(k, k, 1))
    sd = np.sqrt(np.maximum(mean2 - mean * mean, 0.0) * (k * k / (k * k - 1.0)))
    smooth = ndimage.gaussian_filter(a, sigma=(1.0, 1.0, 0))
    inner = ndimage.binary_erosion(body, structure=np.ones((k, k, 1), bool))
    values = sd[inner & (smooth >= hu_range[0]) & (smooth <= hu_range[1])]
    if values.size < MIN_SOFT_TISSUE_VOXELS:
        return float("nan")
    counts, edges = np.histogram(values, bins=np.arange(0.0, min(float(values.max()), 1000.0) + 1.0, 0.5))
    counts = ndimage.gaussian_filter1d(counts.astype(np.float64), 2.0)
    i = int(np.argmax(counts))
    return float(0.5 * (edges[i] + edges[i + 1]))


def roi_sizes(spacing_xy, preferred_mm: float = ROI_SIZES_MM[0], shape_xy=None) -> list[int]:
    """ROI sides in voxels to try, largest first: ``preferred_mm``, the smaller of
    :data:`ROI_SIZES_MM`, then :data:`MIN_ROI_PX`; each within 8..64 px and the field of view."""
    d = max(float(spacing_xy[0]), float(spacing_xy[1]))
    limit = min(shape_xy) if shape_xy is not None else MAX_ROI_PX
    mms = [float(preferred_mm)] + [m for m in ROI_SIZES_MM if m < preferred_mm]
    sizes = [int(np.clip(round(m / d), MIN_ROI_PX, MAX_ROI_PX)) for m in mms] + [MIN_ROI_PX]
    return sorted({s for s in sizes if s <= limit}, reverse=True)


@dataclasses.dataclass
class NoiseMeasurement:
    """Noise of one volume at one ROI size; ``reason`` says why it is not measurable (else None)."""

    roi_px: int
    n_rois: int
    sd: float
    frequency: np.ndarray
    nps: np.ndarray
    peak_frequency: float
    mean_frequency: float
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def measure_noise(
    array: np.ndarray,
    body: np.ndarray,
    spacing,
    preferred_mm: float = ROI_SIZES_MM[0],
    max_structure_hu: float = MAX_STRUCTURE_HU,
    cross_check: float | None = None,
    factor: float = CROSS_CHECK_FACTOR,
) -> tuple[dict[int, NoiseMeasurement], str | None]:
    """:class:`NoiseMeasurement` at every size of :func:`roi_sizes`, and why none is possible.

    ``cross_check`` is the independent estimate (default :func:`local_sd_noise`); a size whose
    pooled ROI SD differs from it by more than ``factor`` either way is refused with that reason.
    The second value is a volume-level reason (field of view too small, no soft tissue) or None.
    """
    sp = (float(spacing[0]), float(spacing[1]))
    sizes = roi_sizes(sp, preferred_mm, array.shape[:2])
    if not sizes:
        return (
            {},
            f"field of view too small: {array.shape[0]}x{array.shape[1]} px in-plane, an ROI needs {MIN_ROI_PX} px",
        )
    smooth = ndimage.gaussian_filter(np.asarray(array, dtype=np.float32), sigma=(STRUCTURE_SIGMA, STRUCTURE_SIGMA, 0))
    soft = body & (smooth >= SOFT_TISSUE_HU[0]) & (smooth <= SOFT_TISSUE_HU[1])
    if int(soft.sum()) < MIN_SOFT_TISSUE_VOXELS:
        return {}, f"no soft tissue ({SOFT_TISSUE_HU[0]:g}..{SOFT_TISSUE_HU[1]:g} HU) in the body"
    if cross_check is None:
        cross_check = local_sd_noise(array, body)
    out: dict[int, NoiseMeasurement] = {}
    for r in sizes:
        rois = find_homogeneous_rois(array, body, r, max_structure_hu=max_structure_hu, smooth=smooth)
        detrended = detrend_rois(roi_stack(array, rois, r))
        sd = noise_sd_from_rois(detrended)
        freq, nps = nps_radial(detrended, sp)
        reason = None
        if len(rois) < MIN_ROIS:
            reason = (
                f"{len(rois)} homogeneous soft-tissue ROIs of {r} px ({r * max(sp):.0f} mm), need {MIN_ROIS}: inside the body, "
                f"mean {SOFT_TISSUE_HU[0]:g}..{SOFT_TISSUE_HU[1]:g} HU, structure <= {max_structure_hu:g} HU"
            )
        elif not (np.isfinite(cross_check) and cross_check > 0):
            reason = "no independent noise estimate (too little soft tissue for the local-SD cross-check)"
        elif not (1.0 / factor <= sd / cross_check <= factor):
            reason = (
                f"ROI noise {sd:.1f} HU disagrees with the local-SD estimate {cross_check:.1f} HU "
                f"by more than {factor:g}x (ROIs not homogeneous?)"
            )
        out[r] = NoiseMeasurement(
            roi_px=r,
            n_rois=len(rois),
            sd=sd if reason is None else float("nan"),
            frequency=freq,
            nps=nps if reason is None else np.full_like(nps, np.nan),
            peak_frequency=nps_peak_frequency(freq, nps) if reason is None else float("nan"),
            mean_frequency=nps_mean_frequency(freq, nps) if reason is None else float("nan"),
            reason=reason,
        )
    return out, None


def choose_roi_size(
    cohorts: dict[str, list[dict[int, NoiseMeasurement]]], min_fraction: float = 0.5
) -> tuple[int | None, dict]:
    """ONE ROI size for a comparison, so every cohort is measured alike.

    ``cohorts`` maps a cohort name to its scans' :func:`measure_noise` results. The largest size at
    which at least ``min_fraction`` (and at least 2, or all if fewer) of the scans of *every*
    cohort are measurable; failing that, the size with the most measurable scans in the worst
    cohort (ties: the larger). Returns ``(size or None, details)`` with the counts per cohort.
    """
    cohorts = {k: v for k, v in cohorts.items() if v}
    sizes = sorted({r for scans in cohorts.values() for m in scans for r in m}, reverse=True)
    counts = {r: {k: sum(1 for m in scans if r in m and m[r].ok) for k, scans in cohorts.items()} for r in sizes}
    need = {k: min(len(scans), max(2, math.ceil(min_fraction * len(scans)))) for k, scans in cohorts.items()}
    chosen = next((r for r in sizes if all(counts[r][k] >= need[k] for k in cohorts)), None)
    if chosen is None and sizes:
        best = max(min(counts[r].values()) for r in sizes)
        chosen = next(r for r in sizes if min(counts[r].values()) == best) if best > 0 else None
    details = {
        "roi_sizes_tried_px": sizes,
        "measurable_per_size": {str(r): counts[r] for r in sizes},
        "n_scans": {k: len(v) for k, v in cohorts.items()},
    }
    return chosen, details


def why_not_measurable(scans: list[tuple[dict[int, NoiseMeasurement], str | None]], size: int | None) -> str | None:
    """The most common reason among ``scans`` (``measure_noise`` results) for no value at ``size``."""
    reasons = []
    for per_size, volume_reason in scans:
        if volume_reason:
            reasons.append(volume_reason)
        elif size is None or size not in per_size:
            reasons.append("no ROI size fits every cohort")
        elif per_size[size].reason:
            reasons.append(per_size[size].reason)
    return Counter(reasons).most_common(1)[0][0] if reasons else None
