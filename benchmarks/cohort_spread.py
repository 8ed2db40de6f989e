#!/usr/bin/env python3
"""How much do cohorts of the same phantom generator differ on the targets' own measures (issue 20)?

Issue 20's noise-SD and CNR targets ask for the generated scans' mean inside the held-out cohort's
95 % CI, and its memorisation target for no generated scan closer (1 - SSIM) to a training scan than
95 % of the held-out scans are. Both are set by one draw of 12 phantoms. This script says what other
draws of the same generator score on those measures, so a miss can be read against them:

1. ``--report R`` (an eval report whose per-case rows hold the cohorts; e.g. ``--real`` a fresh
   cohort, ``--generated`` the held-out one, ``--train`` the training one): per cohort and per-case
   measure (``--keys``), the mean and its bootstrap 95 % CI (resampled cases), and for cohorts larger
   than ``--subset`` the 2.5-97.5 % range of the mean of ``--subset`` cases drawn without
   replacement: where the mean of another 12-scan draw falls.
2. ``--train T --held H --cohort NAME=DIR``: each scan's 1 - SSIM to its nearest training scan, the
   eval report's metric and threshold (:func:`eval.metrics.memorization.memorisation_threshold` of the
   held-out scans' nearest distances), how many of each cohort fall below it, and which training scans
   are nearest (a training scan nearest to many generated scans is a hub the generator favours).

    python benchmarks/cohort_spread.py --report runs/cohorts/report.json --subset 12 \\
        --train data/ph128-train --held data/ph128-held --cohort fresh=data/ph128-s2 \\
        --cohort samples=runs/gen --json spread.json

Not in eval: a diagnostic of the benchmark's own cohorts. The CI, the SSIM and the threshold are
eval's (:func:`eval.stats.bootstrap_ci`, the report's interval); only the draws without replacement
are made here, as neither eval nor scipy offers the range of a subset's mean.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

KEYS = ("noise_sd", "cnr_soft_tissue_fat", "mean_hu_soft_tissue", "mean_hu_fat")


def cohort_stats(values, subset: int | None = None, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean, bootstrap 95 % CI of the mean, and (when there are more than ``subset`` finite values)
    the 2.5-97.5 % range of the mean of ``subset`` of them drawn without replacement."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0, "mean": None, "sd": None, "ci95": None, "subset": None}
    from eval.stats import bootstrap_ci

    out = {
        "n": int(v.size),
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if v.size > 1 else None,
        # the eval report's own case-resampling percentile interval (None below 2 cases)
        "ci95": bootstrap_ci(lambda idx: float(v[idx].mean()), [v.size], n_boot=n_boot, seed=seed),
        "subset": None,
    }
    rng = np.random.default_rng(seed)
    if subset is not None and v.size > subset:
        means = np.array([rng.choice(v, subset, replace=False).mean() for _ in range(n_boot)])
        out["subset"] = {"size": int(subset), "range95": [float(x) for x in np.percentile(means, [2.5, 97.5])]}
    return out


def report_spread(report: dict, keys=KEYS, subset: int | None = None, seed: int = 0) -> dict:
    """:func:`cohort_stats` of every per-case ``keys`` value, per cohort of an eval report's rows."""
    rows = report["per_case"]
    cohorts = sorted({r["cohort"] for r in rows})
    return {
        c: {k: cohort_stats([r.get(k) for r in rows if r["cohort"] == c], subset, seed=seed) for k in keys}
        for c in cohorts
    }


def nearest_train(distances: np.ndarray, threshold: float) -> dict:
    """Per scan (rows of a 1 - SSIM matrix against the training scans): the nearest distance and
    training index, how many fall below ``threshold``, and how often each training scan is nearest."""
    d = np.asarray(distances, dtype=np.float64)
    near, idx = d.min(axis=1), d.argmin(axis=1)
    counts = np.bincount(idx, minlength=d.shape[1])
    return {
        "n": int(d.shape[0]),
        "nearest_distance": [round(float(x), 4) for x in near],
        "nearest_train_index": [int(i) for i in idx],
        "below_threshold": int((near < threshold).sum()),
        "share_below_threshold": float((near < threshold).mean()),
        "most_often_nearest": {int(i): int(counts[i]) for i in np.argsort(-counts, kind="stable")[:3] if counts[i]},
    }


def memorisation_spread(train: list, held: list, cohorts: dict[str, list]) -> dict:
    """The eval report's memorisation threshold from ``held`` against ``train`` (lists of HU arrays of
    one shape) and :func:`nearest_train` for the held-out scans and each of ``cohorts``."""
    import torch

    from eval.metrics.memorization import memorisation_threshold, nearest
    from eval.metrics.similarity import similarity_matrix, to_unit

    t = to_unit(train, dtype=torch.float32)

    def dist(vols):
        return 1.0 - similarity_matrix(to_unit(vols, dtype=torch.float32), t, scales=1)

    dh = dist(held)
    threshold = memorisation_threshold(nearest(dh)[1])
    out = {"threshold": float(threshold), "held": nearest_train(dh, threshold)}
    for name, vols in cohorts.items():
        out[name] = nearest_train(dist(vols), threshold)
    return out


def _read(folder: str, what: str) -> list:
    """The HU arrays of a folder's readable scans (eval's reader); the skipped ones are listed."""
    from ctdiff.errors import InputError
    from eval.report.cases import read_cohort

    try:
        cases, bad = read_cohort(Path(folder), what)
    except InputError as exc:
        raise SystemExit(str(exc)) from None
    for b in bad:
        print(f"{b['file']}: skipped: {b['reason']}", file=sys.stderr)
    if not cases:
        raise SystemExit(f"{folder}: no readable scan")
    return [c.volume.array for c in cases]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--report", type=Path, help="an eval report.json: per-cohort means of --keys")
    p.add_argument("--keys", default=",".join(KEYS), help=f"per-case measures (default {','.join(KEYS)})")
    p.add_argument("--subset", type=int, default=12, help="size of the draws whose mean range is given (default 12)")
    p.add_argument("--train", help="training scans (memorisation distances)")
    p.add_argument("--held", help="held-out scans (they set the memorisation threshold)")
    p.add_argument("--cohort", action="append", default=[], metavar="NAME=DIR", help="a cohort to measure")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the results here (a new file unless --force)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --json")
    a = p.parse_args(argv)
    if a.report is None and not (a.train and a.held):
        p.error("give --report, or --train and --held (with --cohort NAME=DIR)")
    if a.subset < 2:
        p.error("--subset must be at least 2")
    if a.json is not None and a.json.exists() and not a.force:
        p.error(f"{a.json}: already exists; pass --force to overwrite")
    out: dict = {}
    if a.report is not None:
        if not a.report.is_file():
            p.error(f"{a.report}: no such report.json")
        keys = [k for k in a.keys.split(",") if k]
        out["cohorts"] = report_spread(json.loads(a.report.read_text()), keys, a.subset, a.seed)
        for c, stats in out["cohorts"].items():
            for k, s in stats.items():
                if s["ci95"]:
                    sub = (
                        f", {s['subset']['size']}-scan draws {s['subset']['range95'][0]:.2f}-{s['subset']['range95'][1]:.2f}"
                        if s["subset"]
                        else ""
                    )
                    print(f"{c} {k}: {s['mean']:.2f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}] (n {s['n']}{sub})")
    if a.train and a.held:
        cohorts = {}
        for spec in a.cohort:
            name, sep, folder = spec.partition("=")
            if not sep or not name or not folder:
                p.error(f"--cohort {spec!r}: expected NAME=DIR")
            if name in ("held", "threshold") or name in cohorts:
                p.error(f"--cohort {spec!r}: the name {name!r} is taken; choose another")
            cohorts[name] = _read(folder, name)
        out["memorisation"] = memorisation_spread(_read(a.train, "train"), _read(a.held, "held"), cohorts)
        m = out["memorisation"]
        print(f"memorisation threshold (1 - SSIM) {m['threshold']:.4f}")
        for name, r in m.items():
            if name != "threshold":
                print(
                    f"{name}: {r['below_threshold']} of {r['n']} below; nearest {min(r['nearest_distance']):.3f}; "
                    f"most often nearest train {r['most_often_nearest']}"
                )
    if a.json is not None:
        from ctdiff.atomic import atomic_path

        with atomic_path(a.json, force=True) as tmp:
            Path(tmp).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
