"""Cohorts for a report: find and read the cases, put them on one grid, measure each case.

Reading skips unreadable files (listed with the reason). Volumes whose shape or spacing differs
from the common grid (the most frequent (shape, spacing) of the real cohort) are resampled
linearly to its spacing and centre-cropped/padded (with air) to its shape; the report lists them.
Per-case measurements (:func:`case_stats`) call the pure functions in ``eval.metrics``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ctdiff.data.body import BODY_THRESHOLD_HU, body_mask
from ctdiff.data.hu import AIR_HU
from ctdiff.data.io import case_name, find_cases, read_volume
from ctdiff.data.resample import resample_to_spacing
from ctdiff.data.volume import Volume
from ctdiff.errors import InputError
from eval.metrics import intensity, noise, texture


@dataclasses.dataclass
class Case:
    cohort: str
    path: Path
    volume: Volume

    @property
    def name(self) -> str:
        return case_name(self.path)


def read_cohort(
    root, cohort: str, progress: Callable[[int, int], None] | None = None
) -> tuple[list[Case], list[dict[str, str]]]:
    """All readable cases below ``root`` and the skipped ones as ``{"file", "reason"}``.

    Raises :class:`InputError` for a missing folder or one that holds no volume files.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(f"--{cohort} folder does not exist", root)
    if root.is_dir() and not any(root.iterdir()):
        raise InputError(f"--{cohort} folder is empty", root)
    paths = find_cases(root)
    good, bad = [], []
    for i, p in enumerate(paths):
        try:
            volume = read_volume(p)
            degenerate_reason(volume, p)
            good.append(Case(cohort, p, volume))
        except InputError as exc:
            bad.append({"file": str(p), "reason": exc.problem})
        except (ValueError, OSError, MemoryError) as exc:  # one odd file must not end the report
            bad.append({"file": str(p), "reason": f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"})
        if progress is not None:
            progress(i + 1, len(paths))
    return good, bad


def degenerate_reason(volume: Volume, path) -> None:
    """InputError for a scan no metric can use: constant, or no voxel of body (all air).

    Such a scan would drop out of some metrics (no ROI, no body) and not of others; skipping it for
    every metric, listed in ``inputs.skipped`` with this reason, keeps the cohorts the same everywhere.
    """
    array = volume.array
    lo, hi = float(array.min()), float(array.max())
    if lo == hi:
        raise InputError(f"degenerate scan: every voxel is {lo:g} HU (constant); skipped for all metrics", path)
    if hi <= BODY_THRESHOLD_HU:
        raise InputError(
            f"degenerate scan: no voxel above {BODY_THRESHOLD_HU:g} HU (all air, no body); skipped for all metrics",
            path,
        )


def _grid_of(v: Volume) -> tuple[tuple[int, ...], tuple[float, ...]]:
    return v.shape, tuple(round(s, 4) for s in v.spacing)


def common_grid(real: list[Case]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The most frequent (shape, spacing) of the real cohort (ties: the first in file order)."""
    counts = Counter(_grid_of(c.volume) for c in real)
    best = max(counts.values())
    return next(_grid_of(c.volume) for c in real if counts[_grid_of(c.volume)] == best)


def resample_to(volume: Volume, shape, spacing) -> Volume:
    """Resampling to ``spacing`` (:func:`ctdiff.data.resample.resample_to_spacing`: linear, Gaussian
    anti-aliasing when shrinking) then centre crop/pad (air) to ``shape``; centre kept."""
    # imported here: MONAI's transforms cost ~3 s to import, paid only when a case is off the grid
    from ctdiff.data.dataset import fit_centred

    arr = resample_to_spacing(volume, spacing).array
    out = np.ascontiguousarray(fit_centred(arr[None], shape, "constant", AIR_HU)[0])
    centre = volume.affine[:3, :3] @ ((np.asarray(volume.shape) - 1) / 2.0) + volume.affine[:3, 3]
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = centre - np.asarray(spacing) * (np.asarray(shape) - 1) / 2.0
    return volume.with_array(out, affine, resampled_from={"shape": list(volume.shape), "spacing": list(volume.spacing)})


def put_on_grid(cohorts: list[list[Case]], shape, spacing) -> list[str]:
    """Resample in place every case not on (shape, spacing); return their file names."""
    moved = []
    for cases in cohorts:
        for c in cases:
            if _grid_of(c.volume) != (tuple(shape), tuple(round(s, 4) for s in spacing)):
                c.volume = resample_to(c.volume, shape, spacing)
                moved.append(str(c.path))
    return moved


@dataclasses.dataclass
class CaseStats:
    """Everything measured on one case (all numbers are plain floats; NaN = not measurable).

    The noise fields hold the values at one ROI size (:meth:`select_roi_size`); ``noise_by_size``
    keeps every size tried, so a report can choose one size for all cohorts.
    """

    histogram: np.ndarray
    contrast_rms: float
    mean_hu_fat: float
    mean_hu_soft_tissue: float
    noise_sd: float
    noise_sd_wavelet: float
    n_noise_rois: int
    nps_frequency: np.ndarray
    nps: np.ndarray
    nps_peak_frequency: float
    cnr_soft_tissue_fat: float
    glcm: dict[str, float]
    body_fraction: float
    nps_mean_frequency: float = float("nan")
    noise_sd_local: float = float("nan")
    roi_px: int | None = None
    noise_reason: str | None = None  # why the noise is not measurable at this case's ROI size
    volume_noise_reason: str | None = None  # why not at any size (field of view, no soft tissue)
    noise_by_size: dict[int, noise.NoiseMeasurement] = dataclasses.field(default_factory=dict)
    slice_banding: float = float("nan")  # HU; soft tissue's slice-to-slice jumps (intensity.slice_banding)

    def select_roi_size(self, size: int | None) -> None:
        """Take the noise values (SD, NPS, peak, f_avg, CNR) at ROI side ``size`` (None: none)."""
        m = self.noise_by_size.get(size) if size is not None else None
        nan = float("nan")
        self.roi_px = size
        if m is None:
            self.noise_sd, self.n_noise_rois, self.nps_peak_frequency, self.nps_mean_frequency = nan, 0, nan, nan
            self.nps_frequency, self.nps = np.zeros(0), np.zeros(0)
            self.noise_reason = self.volume_noise_reason or (
                "no ROI size fits every cohort" if size is None else f"ROI size {size} px not tried"
            )
        else:
            self.noise_sd, self.n_noise_rois = m.sd, m.n_rois
            self.nps_frequency, self.nps = m.frequency, m.nps
            self.nps_peak_frequency, self.nps_mean_frequency = m.peak_frequency, m.mean_frequency
            self.noise_reason = m.reason
        self.cnr_soft_tissue_fat = intensity.contrast_to_noise(
            self.mean_hu_soft_tissue, self.mean_hu_fat, self.noise_sd
        )

    def row(self) -> dict[str, Any]:
        """The per-case values that go into report.json's ``per_case`` records."""
        return {
            "contrast_rms": self.contrast_rms,
            "mean_hu_fat": self.mean_hu_fat,
            "mean_hu_soft_tissue": self.mean_hu_soft_tissue,
            "slice_banding": self.slice_banding,
            "noise_sd": self.noise_sd,
            "noise_sd_wavelet": self.noise_sd_wavelet,
            "noise_sd_local": self.noise_sd_local,
            "n_noise_rois": self.n_noise_rois,
            "noise_roi_px": self.roi_px,
            "noise_reason": self.noise_reason,
            "nps_peak_frequency": self.nps_peak_frequency,
            "nps_mean_frequency": self.nps_mean_frequency,
            "cnr_soft_tissue_fat": self.cnr_soft_tissue_fat,
            **{f"glcm_{k}": v for k, v in self.glcm.items()},
        }


ALL_PARTS = frozenset({"intensity", "noise", "texture"})


def case_stats(array: np.ndarray, spacing, settings: dict[str, Any], parts=ALL_PARTS) -> CaseStats:
    """Measure one (x, y, z) HU volume; ``parts`` (metric families) limit the work.

    intensity: HU histogram, contrast, tissue means and CNR (which needs the ROI noise SD);
    noise: ROI noise SD, NPS, wavelet noise estimate; texture: GLCM. Values not measured are NaN.
    """
    nan = float("nan")
    body = body_mask(array)
    edges = intensity.hu_bin_edges(width=settings["hist_bin_hu"])
    hist = np.full(len(edges) - 1, np.nan)
    if "intensity" in parts and body.any():
        hist = intensity.hu_histogram(array[body], edges)
    masks = intensity.tissue_masks(array, body) if parts & {"intensity", "texture"} else None
    means = intensity.tissue_mean_hu(array, masks) if masks is not None else {"fat": nan, "soft_tissue": nan}
    by_size, volume_reason, local = {}, None, nan
    if parts & {"intensity", "noise"}:
        local = noise.local_sd_noise(array, body) if body.any() else nan
        by_size, volume_reason = noise.measure_noise(
            array, body, spacing, preferred_mm=settings["roi_mm"], cross_check=local
        )
    glcm = {p: nan for p in texture.GLCM_PROPERTIES}
    if "texture" in parts:
        glcm = texture.glcm_features(array, masks["soft_tissue"], levels=settings["glcm_levels"])
    stats = CaseStats(
        histogram=hist,
        contrast_rms=intensity.contrast_rms(array, body) if "intensity" in parts else nan,
        mean_hu_fat=means["fat"],
        mean_hu_soft_tissue=means["soft_tissue"],
        noise_sd=nan,
        noise_sd_wavelet=noise.wavelet_noise_sd(array, body) if "noise" in parts and body.any() else nan,
        n_noise_rois=0,
        nps_frequency=np.zeros(0),
        nps=np.zeros(0),
        nps_peak_frequency=nan,
        cnr_soft_tissue_fat=nan,
        glcm=glcm,
        body_fraction=float(body.mean()),
        noise_sd_local=local,
        volume_noise_reason=volume_reason,
        noise_by_size=by_size,
        slice_banding=intensity.slice_banding(array, masks["soft_tissue"]) if "intensity" in parts else nan,
    )
    if by_size:  # on its own a case takes its largest measurable size; a report picks one for all
        stats.select_roi_size(next((r for r, m in by_size.items() if m.ok), max(by_size)))
    else:
        stats.select_roi_size(None)
    return stats


def _stats_job(args):
    array, spacing, settings, parts = args
    return case_stats(array, spacing, settings, parts)


def all_case_stats(
    cases: list[Case], settings: dict[str, Any], workers: int = 1, progress=None, parts=ALL_PARTS
) -> list[CaseStats]:
    """:func:`case_stats` for every case, in ``workers`` processes, in input order."""
    jobs = [(c.volume.array, c.volume.spacing, settings, frozenset(parts)) for c in cases]
    out: list[CaseStats] = []
    if workers <= 1 or len(jobs) < 2:
        for i, job in enumerate(jobs):
            out.append(_stats_job(job))
            if progress is not None:
                progress(i + 1, len(jobs))
        return out
    import concurrent.futures as cf

    from eval.report.extract import _context

    with cf.ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=_context()) as pool:
        for i, stats in enumerate(pool.map(_stats_job, jobs, chunksize=1)):
            out.append(stats)
            if progress is not None:
                progress(i + 1, len(jobs))
    return out
