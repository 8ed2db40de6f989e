"""Multi-plane 2D FID (as MAISI reports it): FID of axial, coronal and sagittal slice features, and their mean.

Features come from a registered slice extractor (default ``radimagenet-resnet50-2d``, see
:mod:`eval.features.radimagenet`; any extractor whose feature names start with the plane works,
e.g. ``inception-v3-fid-2d`` gives only the mean). Per plane, every slice of every scan of a cohort
is one sample of a Gaussian; FID = squared Fréchet distance between the real and generated
Gaussians (:func:`eval.metrics.distribution.frechet_distance_squared_lowrank`). Bootstrap CIs
resample whole scans; the reference floor is the same FID between the two real sets.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from ctdiff.data.display import PLANES
from eval.metrics import distribution
from eval.report.entries import _entry, _two_sample

PLANE_METRICS = {plane: f"fid_radimagenet_{plane}" for plane in PLANES}
MEAN_METRIC = "fid_radimagenet_2d"
METRIC_NAMES = (*PLANE_METRICS.values(), MEAN_METRIC)


def multiplane_fid(a: np.ndarray, b: np.ndarray, planes: dict[str, np.ndarray]) -> dict[str, float]:
    """Per-plane FIDs and their mean; ``a``, ``b``: (scans, slices, features); ``planes``: slice indices per plane."""
    out = {}
    for plane, idx in planes.items():
        fa = a[:, idx].reshape(-1, a.shape[-1])
        fb = b[:, idx].reshape(-1, b.shape[-1])
        out[PLANE_METRICS.get(plane, plane)] = distribution.frechet_distance_squared_lowrank(fa, fb)
    per_plane = [out[m] for m in PLANE_METRICS.values() if m in out]
    out[MEAN_METRIC] = (
        float(np.mean(per_plane))
        if len(per_plane) == len(PLANE_METRICS)
        else (distribution.frechet_distance_squared_lowrank(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])))
    )
    return out


def plane_indices(names: list[str]) -> dict[str, np.ndarray]:
    """Slice indices of each plane from feature names ``<plane><i>``; one group ``all`` otherwise."""
    groups = {p: np.array([i for i, n in enumerate(names) if n.startswith(p)], dtype=int) for p in PLANES}
    if all(len(g) for g in groups.values()) and sum(len(g) for g in groups.values()) == len(names):
        return groups
    return {"all": np.arange(len(names))}


def make_extractor(cfg: dict[str, Any], device: str):
    from eval.features import create
    from eval.features.registry import _REGISTRY, _load_builtins

    _load_builtins()
    name = cfg["fid2d_extractor"]
    if name not in _REGISTRY:
        raise KeyError(name)
    wanted = {
        "weights": cfg["fid2d_weights"],
        "device": device,
        "slices_per_plane": cfg["fid2d_slices_per_plane"],
        "image_size": cfg["fid2d_image_size"],
    }
    params = inspect.signature(_REGISTRY[name].__init__).parameters
    return create(name, **{k: v for k, v in wanted.items() if k in params})


def cohort_slice_features(
    extractor, cohorts, cache, progress, label: str
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, int]], list[str] | None, str | None]:
    """Slice features of every cohort present (real, generated, train) with a 2D slice extractor.

    Returns ``(features, cache statistics, slice names, failure)``: per cohort a (scans, slices,
    features) array, cached under the real cohort's display grid (so the same scan on another grid
    is a cache miss), or, as ``failure``, the first failed scan's reason (the arrays are then
    incomplete). ``label`` names the extractor in the progress stages.
    """
    from eval.report.extract import extract_features

    grid = {
        "grid_shape": list(cohorts["real"][0].volume.shape),
        "grid_spacing": [round(s, 4) for s in cohorts["real"][0].volume.spacing],
    }
    feats, stats, slice_names = {}, {}, None
    for k in ("real", "generated", "train"):
        if not cohorts[k]:
            continue
        ex = extract_features(
            extractor,
            [(c.path, c.volume) for c in cohorts[k]],
            cache,
            workers=1,
            progress=progress(f"{label} features ({k})"),
            key_extra=grid,
        )
        if ex.failed:
            return feats, stats, slice_names, ex.failed[0][1]
        stats[k] = {"cached": ex.n_cached, "extracted": ex.n_extracted}
        slice_names = slice_names or ex.names
        feats[k] = ex.matrix(sorted(ex.vectors)).reshape(len(cohorts[k]), len(ex.names), -1)
    return feats, stats, slice_names, None


def fid2d_metrics(
    selected, cohorts, ref, cfg, cache, device, progress
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The selected multi-plane FID metrics (report entries) and the feature cache statistics."""
    names = [m for m in METRIC_NAMES if m in selected]
    try:
        extractor = make_extractor(cfg, device)
    except KeyError:
        return {m: _entry(m, reason=f"unknown feature extractor {cfg['fid2d_extractor']!r}") for m in names}, {}
    reason = extractor.unavailable_reason()
    if reason:
        return {m: _entry(m, reason=reason) for m in names}, {}
    feats, stats, slice_names, failure = cohort_slice_features(extractor, cohorts, cache, progress, extractor.name)
    if failure:
        return {m: _entry(m, reason=f"{extractor.name} failed: {failure}") for m in names}, {}
    planes = plane_indices(slice_names)
    out = _two_sample(names, lambda a, b: multiplane_fid(a, b, planes), feats, ref, cfg["n_bootstrap"], cfg["seed"])
    if "all" in planes:
        for plane_metric in PLANE_METRICS.values():
            if plane_metric in out:
                out[plane_metric] = _entry(
                    plane_metric, reason=f"{extractor.name} does not name the plane of its slices"
                )
    return out, stats
