#!/usr/bin/env python3
"""What precision, recall and FRD a perfect sampler scores against the held-out scans (issue 20).

Issue 20 asks the demo's 12 samples for precision and recall of at least 0.5 and FRD of at most 1.5x
the reference floor, against 12 held-out phantoms. This script asks what scans drawn from the
phantom distribution itself score on those targets, and how much that depends on which 12 are
drawn. For each pool of real scans (``--pool NAME=FOLDER``: e.g. fresh phantoms of another seed, or
the training phantoms) it draws ``--draws`` random subsets of ``--n`` scans without replacement and
scores each subset against ``--real`` exactly as ``python -m eval report`` scores generated scans:

- precision, recall, density, coverage: features standardised on both sets pooled, the k-NN
  k = min(5, n // 5) (``eval.metrics.distribution.standardise`` and ``prdc``);
- FRD: frd-score v1 (``eval.metrics.distribution.frd_v1``, the low-rank identity the report's
  bootstrap uses), also as a multiple of the floor when ``--floor-train`` is given (the report's
  reference: the held-out scans against all training scans, the training scans in the real role).

It prints each pool's median and 2.5-97.5 % range of every metric, and the share of draws that meet
the targets. The radiomics features come from eval's feature cache (cached scans cost nothing,
others are extracted as the report extracts them).

    python benchmarks/prdc_reference.py --real data/ph128-held --pool fresh=data/ph128-s2 \\
        --pool train=data/ph128-train --n 12 --draws 2000 --floor-train data/ph128-train \\
        --cache-dir ~/.cache/ctdiff/features --json ref.json

Not in eval: the report has no access to a second draw of the real distribution. Its own bootstrap
CI resamples the 12 generated scans with replacement (ties in a k-NN count), which is not what a new
draw of 12 distinct scans does.
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

# the radiomics features of a folder, as radiomics_gap.py reads them (eval's feature cache)
features = runpy.run_path(str(REPO / "benchmarks" / "radiomics_gap.py"), run_name="radiomics_gap")[
    "features_with_files"
]

METRICS = ("precision", "recall", "density", "coverage", "frd")
TARGET = 0.5  # issue 20: precision and recall at least 0.5
FRD_TARGET = 1.5  # issue 20: FRD at most 1.5x its reference floor


def score(real: np.ndarray, generated: np.ndarray, nearest_k: int = 5) -> dict[str, float]:
    """The report's precision, recall, density, coverage and FRD of ``generated`` against ``real``
    (rows: scans, columns: raw radiomics features)."""
    from eval.metrics.distribution import frd_v1, prdc, standardise

    out = prdc(*standardise(real, generated), nearest_k=nearest_k)
    out["frd"] = frd_v1(real, generated, exact=False)
    return out


def draws(real: np.ndarray, pool: np.ndarray, n: int, n_draws: int, seed: int, floor: float | None = None) -> dict:
    """Score ``n_draws`` random ``n``-subsets of ``pool`` (without replacement) against ``real``.

    Returns every draw's indices and metrics, each metric's median and 2.5 / 97.5 % quantiles, and
    the share of draws meeting issue 20's targets (precision and recall at least 0.5; FRD at most
    1.5x ``floor``, when given). With ``n`` equal to the pool's size every draw is the whole pool."""
    pool = np.asarray(pool, dtype=np.float64)
    if not 3 <= n <= len(pool):
        raise ValueError(f"--n must be between 3 and the pool's {len(pool)} scans, got {n}")
    if n_draws < 1:
        raise ValueError(f"--draws must be at least 1, got {n_draws}")
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_draws):
        idx = np.sort(rng.choice(len(pool), size=n, replace=False))
        rows.append({"cases": [int(i) for i in idx], **score(real, pool[idx])})
    summary = {}
    for m in METRICS:
        v = np.array([r[m] for r in rows], dtype=np.float64)
        lo, med, hi = np.quantile(v, [0.025, 0.5, 0.975])
        summary[m] = {"median": float(med), "q025": float(lo), "q975": float(hi)}
    p = np.array([r["precision"] for r in rows])
    r_ = np.array([r["recall"] for r in rows])
    meets = {
        "precision": float(np.mean(p >= TARGET)),
        "recall": float(np.mean(r_ >= TARGET)),
        "precision_and_recall": float(np.mean((p >= TARGET) & (r_ >= TARGET))),
    }
    if floor is not None:
        f = np.array([r["frd"] for r in rows])
        summary["frd_over_floor"] = {k: v / floor for k, v in summary["frd"].items()}
        meets["frd"] = float(np.mean(f <= FRD_TARGET * floor))
        meets["all_three"] = float(np.mean((p >= TARGET) & (r_ >= TARGET) & (f <= FRD_TARGET * floor)))
    return {"n": n, "draws": n_draws, "seed": seed, "summary": summary, "meets": meets, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    from eval.report.cache import default_cache_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--real", required=True, type=Path, help="the held-out scans the targets are measured against")
    p.add_argument("--pool", action="append", required=True, help="NAME=FOLDER of real scans to draw from, repeatable")
    p.add_argument(
        "--n", type=int, default=None, help="scans per draw (default: as many as --real; at most the pool's size)"
    )
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--floor-train", type=Path, default=None, help="training scans: the FRD floor, as the report computes it"
    )
    p.add_argument("--cache-dir", type=Path, default=None, help="eval's feature cache (default: the user cache)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    cache = a.cache_dir or default_cache_dir()
    names, real_files, real = features(a.real, cache, a.workers)
    n = a.n or len(real)
    out: dict = {"real": str(a.real), "real_files": real_files, "pools": {}}
    floor = None
    if a.floor_train is not None:
        from eval.metrics.distribution import frd_v1

        tnames, _, train = features(a.floor_train, cache, a.workers)
        if tnames != names:
            raise SystemExit(f"{a.floor_train}: its feature names differ from the real scans' (another frd-score?)")
        from eval.report.entries import _make_reference

        # the report's own reference, its roles and its FRD function: FRD v1 z-scores both sets by the
        # statistics of the set in the real role, so the order matters (the report puts the training
        # scans there: 6.74, against 6.96 the other way round, on the 28 training and 12 held-out phantoms)
        ref = _make_reference(len(real), len(train), seed=0)
        rows = {"real": real, "train": train}
        floor = frd_v1(rows[ref.a[0]][ref.a[1]], rows[ref.b[0]][ref.b[1]], exact=False)
        out["floor"] = {"frd": floor, "train": str(a.floor_train), "n_train": len(train)}
        print(f"FRD floor (real vs {len(train)} training scans): {floor:.2f}")
    for spec in a.pool:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"--pool {spec!r}: expected NAME=FOLDER")
        pnames, files, x = features(Path(folder), cache, a.workers)
        if pnames != names:
            raise SystemExit(f"{folder}: its feature names differ from the real scans' (another frd-score?)")
        try:
            r = draws(real, x, min(n, len(x)), a.draws, a.seed, floor)
        except ValueError as e:
            raise SystemExit(f"{folder}: {e}") from None
        first = score(real, x[: r["n"]])
        out["pools"][name] = {"folder": folder, "files": files, "first_n": first, **r}
        s = r["summary"]
        line = ", ".join(
            f"{m} {s[m]['median']:.2f} [{s[m]['q025']:.2f}, {s[m]['q975']:.2f}]" for m in ("precision", "recall", "frd")
        )
        print(f"{name}: {r['draws']} draws of {r['n']} of {len(x)} scans: {line}")
        meets = r["meets"]
        print(
            f"  share of draws with precision >= {TARGET}: {meets['precision']:.2f}, recall: {meets['recall']:.2f}, "
            f"both: {meets['precision_and_recall']:.2f}"
            + (
                f", FRD <= {FRD_TARGET}x floor: {meets['frd']:.2f}, all three: {meets['all_three']:.2f}"
                if floor is not None
                else ""
            )
        )
        print(
            f"  its first {r['n']} scans: precision {first['precision']:.2f}, recall {first['recall']:.2f}, "
            f"FRD {first['frd']:.2f}"
        )
    if a.json:
        from ctdiff.atomic import write_text

        write_text(a.json, json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
