"""Noise re-synthesis: give a latent space's decoded volumes back the CT noise the autoencoder drops.

A KL autoencoder with a 4x downsampled latent keeps only a few numbers per 64 voxels, and CT noise
(FBP noise: stationary, most of its power at mid and high frequencies) is incompressible, so every
autoencoder ctdiff trained decodes smooth volumes: noise SD 16-18 HU against the phantoms' 24, and
the latent diffusion samples are as smooth (docs/benchmarks.md, "The latent space's ceiling").

The noise the autoencoder drops is measured once, on training volumes, where CT physicists measure
noise: in homogeneous soft-tissue ROIs (16 x 16 voxels, every axial slice, quadratic trend removed).
In-plane it is the radial noise power spectrum (NPS) of the originals minus that of their
reconstructions in the same ROIs, ring by ring, corrected for the small ROIs' spectral leakage
and kept non-negative (:func:`deconvolve_rings`); along z, the correlation of the originals' noise
between neighbouring slices (lags 1 and 2; the per-class model's body takes the air's, see
MIN_AIR_NOISE_HU). After decoding,
stationary Gaussian noise with that NPS (white noise shaped in Fourier space: the rings
interpolated to the volume's in-plane grid, times the z spectrum of the slice correlations) is
added. The noise is drawn from a generator seeded per volume, so a sample repeats itself. The
model travels in the autoencoder file (``noise_model``) and with it in every latent diffusion
checkpoint that carries the autoencoder.

The spectrum is per voxel (cycles per voxel), so the model belongs to the voxel grid the
autoencoder was trained on, as the autoencoder does.

Written here because neither MONAI nor scipy has an NPS estimator or a noise synthesiser for a
given spectrum; the FFTs are torch's and numpy's. This model assumes the noise is stationary and
the same everywhere (it is also added to air, then clipped to the HU window), true of the phantoms'
noise and a first-order model of real CT, whose noise is stronger in the body centre. What a decoder
drops is not: the per-class model (``class-nps-1``, :func:`fit_classes`, ``fit-noise --per-class``)
measures air and body apart and scales the body's noise by the decoded intensity;
:func:`noise_for` draws the noise of either kind for a decoded volume.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

FORMAT = "radial-nps-1"
ROI = 16  # in-plane side (voxels) of the square ROIs the NPS is measured in
# An ROI counts when the original, smoothed in-plane (Gaussian, sigma STRUCTURE_SIGMA voxels), stays in
# soft tissue and varies by at most MAX_STRUCTURE_HU inside it: anatomy, not noise, makes it vary
# more. The same absolute rule as the eval report's noise ROIs (eval.metrics.noise; ctdiff may not
# import eval, see the layers in pyproject.toml).
SOFT_TISSUE_HU = (-150.0, 150.0)
MAX_STRUCTURE_HU = 10.0
STRUCTURE_SIGMA = 3.0
Z_LAGS = 2  # slice-to-slice correlations of the dropped noise kept (lags 1 and 2)
MAX_VOLUMES = 8  # ROIs from at most this many training volumes (hundreds of ROIs)


def _detrend(stack: np.ndarray) -> np.ndarray:
    """Subtract each ROI's least-squares quadratic surface (slow anatomy), as the AAPM NPS procedure does."""
    k, r, _ = stack.shape
    u, v = np.meshgrid(np.linspace(-1, 1, r), np.linspace(-1, 1, r), indexing="ij")
    design = np.stack([(u**i * v**j).ravel() for i in range(3) for j in range(3 - i)], axis=1)
    values = stack.reshape(k, -1).T
    coef, *_ = np.linalg.lstsq(design, values, rcond=None)
    return (values - design @ coef).T.reshape(stack.shape)


def _radial_bins(shape_yx: Sequence[int], n_bins: int, bin_width: float) -> np.ndarray:
    fy = np.fft.fftfreq(int(shape_yx[0]))[:, None]
    fx = np.fft.fftfreq(int(shape_yx[1]))[None, :]
    return np.minimum((np.sqrt(fy**2 + fx**2) / bin_width + 0.5).astype(int), n_bins - 1)


def homogeneous_rois(
    hu: np.ndarray, roi: int = ROI, hu_range: tuple[float, float] | None = None
) -> list[tuple[int, int, int]]:
    """Corners ``(z, y0, x0)`` of the homogeneous ROIs of a ``(z, y, x)`` HU volume (a half-overlapping
    grid in every slice) whose blurred original stays inside ``hu_range`` (default: soft tissue,
    ``SOFT_TISSUE_HU``)."""
    from scipy import ndimage

    low, high = SOFT_TISSUE_HU if hu_range is None else hu_range

    smooth = ndimage.gaussian_filter(hu.astype(np.float64), (0.0, STRUCTURE_SIGMA, STRUCTURE_SIGMA))
    out = []
    step = max(roi // 2, 1)
    for z in range(hu.shape[0]):
        for y0 in range(0, hu.shape[1] - roi + 1, step):
            for x0 in range(0, hu.shape[2] - roi + 1, step):
                s = smooth[z, y0 : y0 + roi, x0 : x0 + roi]
                if s.min() >= low and s.max() <= high and s.std() <= MAX_STRUCTURE_HU:
                    out.append((z, y0, x0))
    return out


def _roi_stats(
    volumes: Sequence[np.ndarray], roi: int, corners_of: Sequence[list]
) -> tuple[np.ndarray, int, np.ndarray]:
    """Over the ROIs ``corners_of[i]`` of ``volumes[i]`` (detrended): the summed radial NPS, the ROI
    count, and per slice lag the sums over ROI pairs (same square, ``lag`` slices apart, both ROIs)
    of ``d_a * d_b`` and ``(d_a^2 + d_b^2) / 2``."""
    bins = _radial_bins((roi, roi), roi, 1.0 / roi)  # ring k: |f| within half a ring of k / roi
    n_bins = int(bins.max()) + 1
    counts = np.bincount(bins.ravel(), minlength=n_bins).astype(np.float64)
    total = np.zeros(n_bins)
    lags = np.zeros((Z_LAGS, 2))
    n = 0
    for vol, corners in zip(volumes, corners_of):
        if not corners:
            continue
        d = _detrend(np.stack([vol[z, y : y + roi, x : x + roi] for z, y, x in corners]).astype(np.float64))
        power = np.abs(np.fft.fft2(d)) ** 2 / (roi * roi)
        total += np.stack([np.bincount(bins.ravel(), p.ravel(), n_bins) for p in power]).sum(0) / counts
        n += len(corners)
        index = {c: i for i, c in enumerate(corners)}
        for (z, y, x), i in index.items():
            for lag in range(1, Z_LAGS + 1):
                j = index.get((z + lag, y, x))
                if j is not None:
                    lags[lag - 1] += ((d[i] * d[j]).sum(), ((d[i] ** 2).sum() + (d[j] ** 2).sum()) / 2)
    return total, n, lags


def _no_rois(roi: int, what: str, kind: str = "soft-tissue", hu_range: tuple[float, float] | None = None) -> ValueError:
    low, high = SOFT_TISSUE_HU if hu_range is None else hu_range
    return ValueError(
        f"no homogeneous {roi}x{roi} {kind} ROI ({low:g}..{high:g} HU, "
        f"structure <= {MAX_STRUCTURE_HU:g} HU) in the {what} to measure the noise in"
    )


@functools.lru_cache(maxsize=8)
def leakage_matrix(roi: int, oversample: int = 8) -> np.ndarray:
    """``K[i, j]``: the expected ring-``i`` estimate of :func:`_roi_stats` (the periodogram of a
    quadratic-detrended ``roi`` x ``roi`` ROI, averaged over ring ``i``) for stationary noise whose
    in-plane spectrum is 1 HU^2 on ring ``j`` and 0 elsewhere; the estimate of any spectrum ``S``
    (constant on each ring) is ``K @ S``.

    A 16 x 16 periodogram smears each frequency over about 1/16 cycle per voxel (the Fejér kernel of
    the square ROI) and the detrend removes the lowest rings. The ROI rings beyond the in-plane
    Nyquist radius (the grid's corners) therefore hold power leaked from inside it: on FBP noise
    band-limited at Nyquist the raw estimate put 47 and 19 HU^2 in rings 8 and 9 (true: 7 and 0), and
    noise synthesised from it had the wrong finest texture (radiomics' wavelet-HHH GLCM off by 70 SDs
    of the phantoms, docs/benchmarks.md). Computed exactly: each complex exponential of a fine
    frequency grid (``oversample`` x the ROI's), detrended, transformed and ring-averaged like an ROI,
    summed into the ring of its frequency. Written here: scipy and numpy have periodograms, not the
    leakage of this ring estimator.
    """
    bins = _radial_bins((roi, roi), roi, 1.0 / roi)
    n_bins = int(bins.max()) + 1
    counts = np.maximum(np.bincount(bins.ravel(), minlength=n_bins), 1).astype(np.float64)
    m = roi * oversample
    f = np.fft.fftfreq(m)
    fine_ring = np.minimum((np.hypot(f[:, None], f[None, :]) * roi + 0.5).astype(int), n_bins - 1).ravel()
    wave = np.exp(2j * np.pi * f[:, None] * np.arange(roi)[None, :])  # (m, roi): one axis' exponentials
    waves = (wave[:, None, :, None] * wave[None, :, None, :]).reshape(m * m, roi, roi)
    detrended = _detrend(waves.real) + 1j * _detrend(waves.imag)  # the detrend is real and linear
    # each fine frequency carries 1/m^2 of a unit spectrum's variance
    power = np.abs(np.fft.fft2(detrended)) ** 2 / (roi * roi) / (m * m)
    response = np.stack([np.bincount(bins.ravel(), p.ravel(), n_bins) for p in power]) / counts
    k = np.zeros((n_bins, n_bins))
    np.add.at(k.T, fine_ring, response)
    return k


def deconvolve_rings(nps: np.ndarray, roi: int) -> np.ndarray:
    """The non-negative ring spectrum whose expected :func:`_roi_stats` estimate is closest to ``nps``
    (least squares through :func:`leakage_matrix`, scipy's NNLS). Ring 0 (DC), which the detrend
    removes and nothing measures, is 0."""
    from scipy.optimize import nnls

    nps = np.asarray(nps, dtype=np.float64)
    k = leakage_matrix(int(roi))[: nps.size, : nps.size]
    solution, _ = nnls(k[:, 1:], nps)
    return np.concatenate([[0.0], solution])


def _model(nps_x, nps_y, lags, roi: int, extra: dict[str, Any]) -> dict[str, Any]:
    counts = np.bincount(_radial_bins((roi, roi), roi, 1.0 / roi).ravel()).astype(np.float64)
    # the dropped part: the difference of the two ring estimates, corrected for the ROIs' leakage
    nps = deconvolve_rings(nps_x - nps_y, roi)
    # the slice correlation of the originals' noise, given to the dropped part of it. (The difference
    # of covariances over the difference of variances, as for the spectrum, divides two small
    # differences: on the phantoms it swung from -0.5 to +0.2 with the ROI size.)
    corr = [float(np.clip(a / c, -1.0, 1.0)) if c > 0 else 0.0 for a, c in lags]
    model = {
        "format": FORMAT,
        "roi": roi,
        "bin_width": 1.0 / roi,  # cycles per voxel
        "nps_xy_hu2": nps.tolist(),
        "nps_estimate": "leakage-corrected",  # models before 2026-12-01 hold the raw ring difference
        "z_correlation": corr,
        **extra,
        "original_sd_hu": float(np.sqrt((nps_x * counts).sum() / counts.sum())),
        "decoded_sd_hu": float(np.sqrt((nps_y * counts).sum() / counts.sum())),
    }
    model["sd_hu"] = float(synthesize(model, (16, 64, 64), noise_generator(0)).std())
    return model


def fit(pairs: Sequence[tuple[np.ndarray, np.ndarray]], roi: int = ROI) -> dict[str, Any]:
    """The noise model from ``(original, reconstruction)`` pairs of ``(z, y, x)`` HU arrays.

    In-plane: the radial NPS of the quadratic-detrended original ROIs minus that of the same
    ROIs of the reconstruction, ring by ring, leakage-corrected and non-negative
    (:func:`deconvolve_rings`; HU^2, periodogram scaling: the mean over frequencies is the
    variance). Along z: the correlation of the original's detrended noise between an ROI and the same square ``lag`` slices away (when that one is homogeneous too), which
    the dropped part is given. ValueError when no ROI qualifies.
    """
    roi = int(min(roi, *(min(o.shape[1:]) for o, _ in pairs)))
    model = _stationary([o for o, _ in pairs], [r for _, r in pairs], True, roi, SOFT_TISSUE_HU, "soft-tissue")
    return {**model, "method": "paired", "volumes": len(pairs)}


def fit_unpaired(originals: Sequence[np.ndarray], decoded: Sequence[np.ndarray], roi: int = ROI) -> dict[str, Any]:
    """The noise model from two cohorts of ``(z, y, x)`` HU arrays, each measured in its own
    homogeneous ROIs: the originals' radial NPS minus that of ``decoded`` (e.g. a latent model's
    samples, decoded without noise), leakage-corrected and non-negative; the slice correlation is the
    originals'.

    Where :func:`fit` measures what the autoencoder drops from a scan, this measures what a whole
    model's samples lack against the training scans, the noise the eval report compares.
    """
    roi = int(min(roi, *(min(v.shape[1:]) for v in [*originals, *decoded])))
    model = _stationary(originals, decoded, False, roi, SOFT_TISSUE_HU, "soft-tissue")
    return {**model, "method": "unpaired", "volumes": len(originals), "decoded": len(decoded)}


def check(model: dict[str, Any]) -> None:
    """ValueError unless ``model`` is a noise model this version can use (stationary or per class)."""
    if not isinstance(model, dict) or model.get("format") not in (FORMAT, CLASS_FORMAT):
        raise ValueError(f"not a noise model of format {FORMAT} or {CLASS_FORMAT}")
    if model["format"] == FORMAT:
        _check_stationary(model)
        return
    for part in ("air", "body"):
        if not isinstance(model.get(part), dict):
            raise ValueError(f"noise model: no {part} spectrum")
        _check_stationary(model[part])
    amp = model.get("amplitude") or {}
    hu, gain = np.asarray(amp.get("hu"), dtype=np.float64), np.asarray(amp.get("gain"), dtype=np.float64)
    if hu.ndim != 1 or hu.size < 1 or hu.shape != gain.shape or not (np.isfinite(hu).all() and np.isfinite(gain).all()):
        raise ValueError("noise model: the amplitude needs as many finite gains as intensities")
    if (gain < 0).any() or (np.diff(hu) <= 0).any():
        raise ValueError("noise model: gains must be >= 0 at increasing intensities")
    low, high = (float(v) for v in model.get("air_blend_hu", (np.nan, np.nan)))
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError("noise model: air_blend_hu must be two increasing numbers")


def spectrum(model: dict[str, Any], shape: Sequence[int]) -> torch.Tensor:
    """The model's NPS (HU^2) on the FFT grid of a ``(z, y, x)`` volume of ``shape``: the radial
    in-plane spectrum (linear between rings) times the z spectrum of the slice correlations."""
    nz, ny, nx = (int(s) for s in shape)
    nps = np.asarray(model["nps_xy_hu2"], dtype=np.float64)
    fy = np.fft.fftfreq(ny)[:, None]
    fx = np.fft.fftfreq(nx)[None, :]
    ring = np.sqrt(fy**2 + fx**2) / float(model["bin_width"])
    sxy = np.interp(ring, np.arange(nps.size), nps)
    fz = np.fft.fftfreq(nz)
    sz = np.ones(nz)
    for lag, c in enumerate(model["z_correlation"], start=1):
        if lag < nz:
            sz = sz + 2.0 * float(c) * np.cos(2.0 * np.pi * lag * fz)
    sz = np.clip(sz, 0.0, None)
    sz = sz / sz.mean() if sz.mean() > 0 else np.ones(nz)
    return torch.from_numpy(sz[:, None, None] * sxy[None])


def synthesize(model: dict[str, Any], shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """Stationary Gaussian noise (HU, float32, ``(z, y, x)`` ``shape``) with the model's NPS."""
    s = spectrum(model, shape)
    white = torch.randn(tuple(int(v) for v in shape), generator=generator, dtype=torch.float64)
    return torch.fft.ifftn(torch.fft.fftn(white) * s.sqrt()).real.float()


def noise_generator(seed: int) -> torch.Generator:
    """The generator of the noise added to the volume of sampling seed ``seed`` (its own stream)."""
    return torch.Generator().manual_seed(int(seed) * 2 + 1_000_000_007)


# ---------------------------------------------------------------------------------------------------
# Per-class noise (format "class-nps-1"): air and body get noise of their own spectrum and amplitude.
#
# The stationary model above measures the dropped noise in soft tissue only and adds it everywhere.
# What a decoder drops depends on the tissue: it decodes air flat (all of the phantoms' 20 HU of air
# noise is gone), keeps part of the soft tissue's texture and little of bone's (the phantoms' tissue
# texture is 6-8 HU in fat, 15 in muscle and 40-45 in bone, on top of the noise). On the 12 held-out
# phantoms decoded by the faster-trained coder, the stationary model left the reconstructions at 1.30x
# the radius of the nearest phantom's k-NN ball in radiomics space, the class model at 1.09x
# (docs/benchmarks.md, "Noise per tissue class"). A class model holds:
#   - ``air``: a stationary model (the dict above) measured in homogeneous air ROIs (AIR_ROI_HU);
#   - ``body``: one measured in homogeneous soft-tissue ROIs, as the stationary model is;
#   - ``amplitude``: the body noise's gain per intensity bin (AMPLITUDE_BINS_HU: fat, soft tissue, dense
#     tissue, bone): the SD the decoded volumes lack in the bin over the SD the body noise has there,
#     both of a high-pass (the volume minus its Gaussian blur, LOCAL_SIGMA) inside the bin (its mask
#     eroded by one voxel, so that tissue edges count less), robust (1.4826 x MAD); divided by the
#     soft-tissue bin's, so that soft tissue gets the body noise as measured (REFERENCE_BIN).
# Both fields are shaped from the same white noise, so they join without a seam. At each voxel the
# decoded volume's local intensity (Gaussian blur, LOCAL_SIGMA) sets the mix: air below
# AIR_BLEND_HU[0], body above AIR_BLEND_HU[1], linear between; the body field is multiplied by the
# gain of the intensity's bin (ramped across the bins' edges, GAIN_RAMP_HU; constant beyond the outer bins).
# Written here for the same reason as the stationary model: no library synthesises noise per class.

CLASS_FORMAT = "class-nps-1"
AIR_ROI_HU = (-1100.0, -900.0)
AIR_BLEND_HU = (-950.0, -850.0)
AMPLITUDE_BINS_HU = (-200.0, -50.0, 150.0, 400.0, 3000.0)
# Bone's bins are a few voxels thick: even inside the eroded masks their high-pass is mostly the
# partial-volume edge, and the gain measured there (2.6-8.3 on the phantoms, with or without a second
# erosion) is not the texture's. On the 12 held-out phantoms the cap of 3 put the reconstructions at
# 1.09x the ball radius (median |z| of the feature gaps 0.96), no cap at 1.10x with median |z| 1.55
# (docs/benchmarks.md).
MAX_AMPLITUDE = 3.0
# The slice-to-slice correlation of CT noise is the reconstruction's (slice profile, slice interval),
# the same in air as in the body. Measured in the body's soft-tissue ROIs it also holds the anatomy's
# own texture, which continues from slice to slice: on the phantoms, whose noise is independent
# between slices, the soft-tissue ROIs gave 0.10-0.11 and 0.07-0.08 at lags 1 and 2 (their texture
# alone: 0.66 at lag 1), the air ROIs 0.00. On 12 noise-free phantoms given noise by a model fitted
# against their noisy twins, the body's estimate put the finest wavelet band's (HHH) GLCM 13.9 of the
# phantoms' SDs away and precision at 0.75; the true 0 gave 11.6 and 1.00 (docs/benchmarks.md,
# "Denoise and re-noise"). So the body noise takes the air ROIs' correlation,
# where the air carries noise to measure it in (its SD at least MIN_AIR_NOISE_HU; a scanner that
# writes air outside its field of view as one constant value gives none) and keeps its own otherwise.
MIN_AIR_NOISE_HU = 1.0
MIN_BIN_VOXELS = 200
LOCAL_SIGMA = 1.0
# The gain is constant inside a bin and ramps linearly over +-GAIN_RAMP_HU around the bins' edges.
# Interpolating between the bins' median intensities instead (43 and 272 HU on the shipped demo's
# samples) raised the gain of muscle and organs at 60-150 HU towards bone's: the samples' noise SD in
# the report's soft-tissue ROIs went to 26.3 HU against the phantoms' 23.9 (docs/benchmarks.md).
GAIN_RAMP_HU = 25.0
# The gains are relative to the soft-tissue bin's (AMPLITUDE_BINS_HU[1:3]), whose gain is 1 by
# construction: the body spectrum was measured in soft-tissue ROIs, so it already is what soft tissue
# lacks, in SD (its noise power spectrum) and in spectrum. The high-pass measure above says more: on
# the shipped demo's decoder 1.09 in soft tissue, on the faster-trained coder 1.47 (it counts the
# texture the decoder smoothed away too), and that put the samples' noise SD above the phantoms' 95% CI
# (25.4 HU against [23.0, 24.9]) and their CNR below it. With soft tissue at 1 and the other bins in
# proportion, the shipped decoder's samples kept noise SD and CNR inside their CIs (docs/benchmarks.md).
REFERENCE_BIN = 1


def _highpass(v: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return v - ndimage.gaussian_filter(v, LOCAL_SIGMA)


def _local(v: np.ndarray, sigma: float = LOCAL_SIGMA) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(np.asarray(v, dtype=np.float64), sigma)


def _robust_var(x: np.ndarray) -> float:
    return float((1.4826 * np.median(np.abs(x - np.median(x)))) ** 2)


def _bin_masks(local: np.ndarray) -> list[np.ndarray]:
    """The intensity bins' masks of a volume's local intensity, each eroded by one voxel."""
    from scipy import ndimage

    edges = AMPLITUDE_BINS_HU
    return [ndimage.binary_erosion((local >= lo) & (local < hi)) for lo, hi in zip(edges[:-1], edges[1:])]


def _amplitudes(
    originals: Sequence[np.ndarray],
    decoded: Sequence[np.ndarray],
    body: dict[str, Any],
    max_gain: float = MAX_AMPLITUDE,
) -> dict[str, Any]:
    """The body noise's gain per intensity bin (see the comment above CLASS_FORMAT), at most ``max_gain``."""
    n_bins = len(AMPLITUDE_BINS_HU) - 1
    hp_o: list[list[np.ndarray]] = [[] for _ in range(n_bins)]
    hp_d: list[list[np.ndarray]] = [[] for _ in range(n_bins)]
    hp_n: list[list[np.ndarray]] = [[] for _ in range(n_bins)]
    level: list[list[np.ndarray]] = [[] for _ in range(n_bins)]
    for v in originals:
        h = _highpass(np.asarray(v, dtype=np.float64))
        for b, m in enumerate(_bin_masks(_local(v))):
            hp_o[b].append(h[m])
    for i, v in enumerate(decoded):
        v = np.asarray(v, dtype=np.float64)
        h = _highpass(v)
        n = _highpass(synthesize(body, v.shape, noise_generator(i)).numpy().astype(np.float64))
        local = _local(v)
        for b, m in enumerate(_bin_masks(local)):
            hp_d[b].append(h[m])
            hp_n[b].append(n[m])
            level[b].append(local[m])
    raw: dict[int, float] = {}
    voxels, medians = [], []
    for b in range(n_bins):
        o, d, n, lv = (np.concatenate(x[b]) if x[b] else np.zeros(0) for x in (hp_o, hp_d, hp_n, level))
        if min(o.size, d.size) < MIN_BIN_VOXELS:
            continue
        lacking = max(_robust_var(o) - _robust_var(d), 0.0)
        raw[b] = float(np.sqrt(lacking / max(_robust_var(n), 1e-12)))
        voxels.append([int(o.size), int(d.size)])
        medians.append(float(np.median(lv)))
    # relative to the soft-tissue bin (see REFERENCE_BIN); as measured when that bin is missing or lacks nothing
    ref = raw.get(REFERENCE_BIN, 0.0)
    scale = 1.0 / ref if ref > 1e-6 else 1.0
    hu, gain = [], []
    edges = AMPLITUDE_BINS_HU
    for b, g in raw.items():
        # a plateau over the bin, ramps of 2 x GAIN_RAMP_HU across its edges
        hu += [edges[b] + GAIN_RAMP_HU, edges[b + 1] - GAIN_RAMP_HU]
        gain += [float(min(g * scale, max_gain))] * 2
    if not hu:  # no bin with enough voxels on both sides: the body noise as measured
        hu, gain = [0.0], [1.0]
    return {
        "hu": hu,
        "gain": gain,
        "measured_gain": [raw[b] for b in raw],
        "relative_to_bin": REFERENCE_BIN if ref > 1e-6 else None,
        "voxels": voxels,
        "median_hu": medians,
        "bins_hu": list(AMPLITUDE_BINS_HU),
        "max_gain": float(max_gain),
    }


def _stationary(
    originals: Sequence[np.ndarray],
    decoded: Sequence[np.ndarray],
    paired: bool,
    roi: int,
    hu_range: tuple[float, float],
    what: str,
) -> dict[str, Any]:
    corners_o = [homogeneous_rois(v, roi, hu_range) for v in originals]
    corners_d = corners_o if paired else [homogeneous_rois(v, roi, hu_range) for v in decoded]
    sum_x, nx, lags = _roi_stats(originals, roi, corners_o)
    sum_y, ny, _ = _roi_stats(decoded, roi, corners_d)
    if nx == 0 or ny == 0:
        raise _no_rois(roi, "originals" if nx == 0 else "decoded volumes", what, hu_range)
    return _model(sum_x / nx, sum_y / ny, lags, roi, {"rois": nx, "decoded_rois": ny})


def fit_classes(
    originals: Sequence[np.ndarray],
    decoded: Sequence[np.ndarray],
    paired: bool = True,
    roi: int = ROI,
    max_gain: float | None = None,
) -> dict[str, Any]:
    """The per-class noise model (``class-nps-1``) of ``(z, y, x)`` HU arrays: ``decoded[i]`` is the
    reconstruction of ``originals[i]`` when ``paired`` (ROIs chosen on the original, as :func:`fit`),
    else any decoded cohort (each measured in its own ROIs, as :func:`fit_unpaired`). ``max_gain``
    caps the body noise's gain per intensity bin (>= 1, the soft-tissue bin's; None: MAX_AMPLITUDE).
    The body noise's slice correlation is the air ROIs' where the originals have noise in air
    (``z_correlation_from: "air"``; see MIN_AIR_NOISE_HU). ValueError when there is no homogeneous
    air or soft-tissue ROI, or ``max_gain`` is below 1."""
    max_gain = MAX_AMPLITUDE if max_gain is None else float(max_gain)
    if not (math.isfinite(max_gain) and max_gain >= 1.0):
        raise ValueError(f"the noise gain cap must be a finite number >= 1, got {max_gain}")
    originals = [np.asarray(v, dtype=np.float64) for v in originals]
    decoded = [np.maximum(np.asarray(v, dtype=np.float64), -1000.0) for v in decoded]  # the air floor
    if paired and len(originals) != len(decoded):
        raise ValueError(f"{len(originals)} originals and {len(decoded)} reconstructions")
    roi = int(min(roi, *(min(v.shape[1:]) for v in [*originals, *decoded])))
    body = _stationary(originals, decoded, paired, roi, SOFT_TISSUE_HU, "soft-tissue")
    air = _stationary(originals, decoded, paired, roi, AIR_ROI_HU, "air")
    if air["original_sd_hu"] >= MIN_AIR_NOISE_HU:
        body = {**body, "z_correlation": list(air["z_correlation"]), "z_correlation_from": "air"}
    model = {
        "format": CLASS_FORMAT,
        "air": air,
        "body": body,
        "amplitude": _amplitudes(originals, decoded, body, max_gain),
        "air_blend_hu": list(AIR_BLEND_HU),
        "local_sigma": LOCAL_SIGMA,
        "method": "paired" if paired else "unpaired",
        "volumes": len(originals),
        "decoded": len(decoded),
    }
    model["sd_hu"] = {"air": air["sd_hu"], "body": body["sd_hu"]}
    return model


def _check_stationary(model: dict[str, Any]) -> None:
    nps = np.asarray(model.get("nps_xy_hu2"), dtype=np.float64)
    corr = np.asarray(model.get("z_correlation"), dtype=np.float64)
    if nps.ndim != 1 or nps.size < 2 or not np.isfinite(nps).all() or (nps < 0).any():
        raise ValueError("noise model: the in-plane spectrum must be finite, non-negative numbers")
    if corr.ndim != 1 or not np.isfinite(corr).all() or (np.abs(corr) > 1).any():
        raise ValueError("noise model: the slice correlations must lie in [-1, 1]")
    if not (np.isfinite(model.get("bin_width", np.nan)) and model["bin_width"] > 0):
        raise ValueError("noise model: bin_width must be > 0")


def noise_for(model: dict[str, Any], decoded_hu: np.ndarray | torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The noise (HU, float32, the shape of the ``(z, y, x)`` volume ``decoded_hu``) to add to that
    decoded volume: stationary for a ``radial-nps-1`` model (:func:`synthesize`), per class for a
    ``class-nps-1`` one (see :func:`fit_classes`)."""
    shape = tuple(int(s) for s in decoded_hu.shape)
    if model.get("format") != CLASS_FORMAT:
        return synthesize(model, shape, generator)
    white = torch.fft.fftn(torch.randn(shape, generator=generator, dtype=torch.float64))
    air = torch.fft.ifftn(white * spectrum(model["air"], shape).sqrt()).real.numpy()
    body = torch.fft.ifftn(white * spectrum(model["body"], shape).sqrt()).real.numpy()
    hu = decoded_hu.detach().cpu().double().numpy() if isinstance(decoded_hu, torch.Tensor) else decoded_hu
    local = _local(hu, float(model.get("local_sigma", LOCAL_SIGMA)))
    low, high = model["air_blend_hu"]
    w_air = np.clip((high - local) / (high - low), 0.0, 1.0)
    gain = np.interp(local, model["amplitude"]["hu"], model["amplitude"]["gain"])
    return torch.from_numpy(w_air * air + (1.0 - w_air) * gain * body).float()
