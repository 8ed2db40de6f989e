#!/usr/bin/env python3
"""Which radiomics features tell a cohort from the real scans (issue 20)?

FRD, KID and precision/recall say *that* generated scans sit apart from the real ones in radiomics
space, not *where*. This script reads the frd-score v1 features of each cohort (the eval report's
feature cache: cached scans cost nothing, others are extracted) and standardises every feature's
mean difference by the real cohort's SD:

    z = (mean over the cohort - mean over the real scans) / SD over the real scans

It prints, per cohort, the median |z|, the share of features with |z| > 2, the feature groups
(image type and class, e.g. ``wavelet-HHH_glcm``) by their median |z|, and the largest |z|. The
training cohort against the held-out one is the reference: there, no feature is far. It also says
how far outside the real scans' k-NN balls the cohort's scans sit (:func:`manifold`): precision and
recall are counts, and read 0 alike for scans just outside the balls and for scans far away.
And it says whether the cohort's location or its spread keeps it outside (:func:`counterfactuals`):
precision and recall again with every feature's mean, or SD, or both, set to the real scans'.

    python benchmarks/radiomics_gap.py --real data/ph128-held --cohort train=data/ph128-train \\
        --cohort samples=runs/gen --cache-dir ~/.cache/ctdiff/features --json gap.json

Not in eval: a diagnostic for whoever trains the generator, with no CI or floor of its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))


def feature_group(name: str) -> str:
    """``wavelet-HHH_glcm_Contrast`` -> ``wavelet-HHH_glcm``; ``glrlm_RunVariance`` -> ``original_glrlm``."""
    parts = name.split("_")
    return "_".join(parts[:2]) if len(parts) >= 3 else f"original_{parts[0]}"


def gap(names: list[str], real: np.ndarray, cohort: np.ndarray, top: int = 15) -> dict:
    """Standardised mean differences of ``cohort`` against ``real`` (rows: scans, columns: ``names``).
    Features constant or non-finite in the real scans are left out (no SD to divide by)."""
    real, cohort = np.asarray(real, dtype=np.float64), np.asarray(cohort, dtype=np.float64)
    sd = real.std(axis=0)
    keep = np.isfinite(sd) & (sd > 0) & np.isfinite(cohort).all(axis=0) & np.isfinite(real).all(axis=0)
    z = np.full(len(names), np.nan)
    z[keep] = (cohort[:, keep].mean(axis=0) - real[:, keep].mean(axis=0)) / sd[keep]
    groups: dict[str, list[float]] = defaultdict(list)
    for n, v, k in zip(names, z, keep):
        if k:
            groups[feature_group(n)].append(abs(float(v)))
    a = np.abs(z[keep])
    order = [i for i in np.argsort(-np.where(keep, np.abs(z), -1.0)) if keep[i]][:top]
    return {
        "n_features": int(keep.sum()),
        "median_abs_z": float(np.median(a)) if a.size else float("nan"),
        "share_abs_z_over_2": float(np.mean(a > 2)) if a.size else float("nan"),
        "groups": dict(
            sorted(
                ((g, {"median_abs_z": float(np.median(v)), "n": len(v)}) for g, v in groups.items()),
                key=lambda kv: -kv[1]["median_abs_z"],
            )
        ),
        "top": [{"feature": names[i], "z": float(z[i])} for i in order],
    }


def manifold(real: np.ndarray, cohort: np.ndarray, nearest_k: int = 5) -> dict:
    """How far outside each other's k-NN manifold the two sets sit, as the eval report measures it.

    The report's precision counts the generated scans that lie inside the k-NN ball of some real
    scan (features standardised on both sets pooled, k = min(``nearest_k``, n // 5), as
    ``eval.metrics.distribution.prdc``), and recall the real scans inside some generated scan's
    ball. Both are counts, so they read 0 whether the scans sit just outside the balls or far away.
    Here each generated scan gets ``min over real r of d(g, r) / radius(r)``: below 1 it is inside
    (it counts for precision), 1.2 means 20 % further than the nearest ball's edge. The same for
    each real scan against the generated balls (recall). The distances and radii are the ``prdc``
    package's own; it returns only the fractions, so the ratios are taken here.
    """
    from prdc.prdc import compute_nearest_neighbour_distances, compute_pairwise_distance

    from eval.metrics.distribution import standardise

    a, b = standardise(real, cohort)
    k = max(1, min(int(nearest_k), min(len(a), len(b)) // 5))
    d = compute_pairwise_distance(b, a)  # generated x real
    fidelity = (d / compute_nearest_neighbour_distances(a, k)[None, :]).min(axis=1)
    diversity = (d.T / compute_nearest_neighbour_distances(b, k)[None, :]).min(axis=1)
    return {
        "k": k,
        "precision": float(np.mean(fidelity < 1)),
        "recall": float(np.mean(diversity < 1)),
        "generated_ratio": [float(v) for v in fidelity],
        "real_ratio": [float(v) for v in diversity],
        "generated_ratio_median": float(np.median(fidelity)),
        "real_ratio_median": float(np.median(diversity)),
    }


def counterfactuals(real: np.ndarray, cohort: np.ndarray, nearest_k: int = 5) -> dict:
    """What stands between the cohort and the real scans' k-NN manifold: its location or its spread?

    :func:`manifold` of three altered copies of the cohort, each feature moved in its own units:
    ``location``: the cohort's mean replaced by the real scans' mean (its spread kept);
    ``spread``: its SD replaced by the real scans' SD about its own mean (its location kept);
    ``both``: both. A cohort whose precision and recall rise with ``location`` and not with ``spread``
    is held back by a systematic shift (every sample off in the same direction), not by too little
    variety. Features constant in the cohort keep their values under ``spread`` (no SD to scale).
    A diagnostic only: the altered features belong to no image.
    """
    real, cohort = np.asarray(real, dtype=np.float64), np.asarray(cohort, dtype=np.float64)
    mu_r, mu_c = real.mean(axis=0), cohort.mean(axis=0)
    sd_r, sd_c = real.std(axis=0), cohort.std(axis=0)
    gain = np.divide(sd_r, sd_c, out=np.ones_like(sd_c), where=sd_c > 0)
    variants = {
        "location": cohort - mu_c + mu_r,
        "spread": mu_c + (cohort - mu_c) * gain,
        "both": mu_r + (cohort - mu_c) * gain,
    }
    out = {}
    for name, x in variants.items():
        m = manifold(real, x, nearest_k)
        out[name] = {key: m[key] for key in ("precision", "recall", "generated_ratio_median", "real_ratio_median")}
    return out


def features(folder: Path, cache_dir: Path, workers: int) -> tuple[list[str], np.ndarray]:
    names, _, matrix = features_with_files(folder, cache_dir, workers)
    return names, matrix


def features_with_files(folder: Path, cache_dir: Path, workers: int) -> tuple[list[str], list[str], np.ndarray]:
    """The frd-score v1 features of a folder's NIfTI scans through eval's feature cache: feature
    names, the file names of the matrix's rows, and the matrix. Scans that fail are left out and
    listed on stderr."""
    from eval.features.radiomics import image_dim_of_shape
    from eval.report.build import radiomics_features
    from eval.report.cache import FeatureCache

    if not folder.is_dir():
        raise SystemExit(f"{folder}: not a folder")
    paths = sorted(p for p in folder.iterdir() if p.name.endswith((".nii", ".nii.gz")))
    if not paths:
        raise SystemExit(f"{folder}: no NIfTI scans")
    import nibabel as nib

    dim = image_dim_of_shape(nib.load(paths[0]).shape)
    ex = radiomics_features(paths, dim, FeatureCache(cache_dir), workers)
    for f, why in ex.failed:
        print(f"skipped {f}: {why}", file=sys.stderr)
    if not ex.vectors:
        raise SystemExit(f"{folder}: no scan could be read")
    order = sorted(ex.vectors)  # item indices into ``paths``
    return list(ex.names), [paths[i].name for i in order], ex.matrix(order)


def main(argv: list[str] | None = None) -> int:
    from eval.report.cache import default_cache_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--real", required=True, type=Path, help="the real scans (NIfTI folder)")
    p.add_argument("--cohort", action="append", required=True, help="NAME=FOLDER, repeatable")
    p.add_argument("--cache-dir", type=Path, default=None, help="eval's feature cache (default: the user cache)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--json", type=Path, default=None, help="write every cohort's result here")
    a = p.parse_args(argv)
    cache = a.cache_dir or default_cache_dir()
    names, real = features(a.real, cache, a.workers)
    out = {"real": str(a.real), "cohorts": {}}
    for spec in a.cohort:
        name, _, folder = spec.partition("=")
        cnames, x = features(Path(folder), cache, a.workers)
        if cnames != names:
            raise SystemExit(f"{folder}: its feature names differ from the real scans' (another frd-score?)")
        r = gap(names, real, x, a.top)
        m = manifold(real, x)
        cf = counterfactuals(real, x)
        out["cohorts"][name] = {"folder": folder, **r, "manifold": m, "counterfactuals": cf}
        print(
            f"{name}: median |z| {r['median_abs_z']:.2f}, |z| > 2 in {100 * r['share_abs_z_over_2']:.0f}% of {r['n_features']}"
        )
        print(
            f"  k-NN manifold (k={m['k']}): precision {m['precision']:.2f}, nearest real ball at "
            f"{m['generated_ratio_median']:.2f}x its radius (median, range "
            f"{min(m['generated_ratio']):.2f}-{max(m['generated_ratio']):.2f}); recall {m['recall']:.2f}, "
            f"{m['real_ratio_median']:.2f}x"
        )
        print(
            "  moved onto the real mean / given the real SD / both: precision "
            + " / ".join(f"{cf[v]['precision']:.2f}" for v in ("location", "spread", "both"))
            + ", recall "
            + " / ".join(f"{cf[v]['recall']:.2f}" for v in ("location", "spread", "both"))
        )
        print("  groups: " + ", ".join(f"{g} {v['median_abs_z']:.1f}" for g, v in list(r["groups"].items())[:8]))
        print("  top: " + ", ".join(f"{t['feature']} {t['z']:+.1f}" for t in r["top"]))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
