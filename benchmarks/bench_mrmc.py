"""Benchmark: coverage of the OR-Hillis 95 % CI of the reader-averaged AUC in simulated studies.

Each simulated study has ``--readers`` readers and ``--cases`` real + ``--cases`` synthetic cases.
A case's latent value is N(separation x truth, 1) and shared by all readers (case effect); each
reader adds a skill shift N(0, 0.2) on synthetic cases and own noise N(0, 0.7), and rates on a
5-point scale. The model's true reader-averaged AUC comes from 200 readers x 20000 cases. The
benchmark counts how often the readers-random CI covers it (nominal 95 %) and, at separation 0,
how often the test against 0.5 rejects (nominal 5 %). Coverage is a measurement over ``--studies``
studies; its binomial standard error is printed next to it.

    .venv/bin/python benchmarks/bench_mrmc.py [--studies 300] [--readers 5] [--cases 40]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eval.review import mrmc


def ratings(rng, latent, truth):
    score = latent + rng.normal(0, 0.2) * truth + rng.normal(0, 0.7, truth.size)
    return np.clip(np.round(score * 1.5 + 3), 1, 5)


def study(rng, separation, n_readers, n_cases):
    truth = np.repeat([0, 1], n_cases)
    latent = rng.normal(separation * truth, 1.0)
    r = np.stack([ratings(rng, latent, truth) for _ in range(n_readers)])[None]
    return mrmc.StudyRatings(
        ("study",),
        tuple(f"r{i}" for i in range(n_readers)),
        tuple(f"c{i}" for i in range(truth.size)),
        truth.astype(np.int8),
        r,
        np.full_like(r, np.nan),
    )


def population_auc(separation):
    rng = np.random.default_rng(99)
    truth = np.repeat([0, 1], 10000)
    return float(
        np.mean([roc_auc_score(truth, ratings(rng, rng.normal(separation * truth, 1.0), truth)) for _ in range(200)])
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=300)
    ap.add_argument("--readers", type=int, default=5)
    ap.add_argument("--cases", type=int, default=40, help="cases per class")
    ap.add_argument("--separations", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    print("| separation | true AUC | mean estimate | CI coverage (SE) | rejects AUC = 0.5 | mean CI width | mean ddf |")
    print("|---|---|---|---|---|---|---|")
    for sep in args.separations:
        truth_auc = 0.5 if sep == 0 else population_auc(sep)
        rng = np.random.default_rng([args.seed, int(sep * 100)])
        est = [
            mrmc.analyse(study(rng, sep, args.readers, args.cases)).conditions[0].auc
            for _ in tqdm(range(args.studies), desc=f"separation {sep}", file=sys.stderr)
        ]
        cover = np.mean([e.ci_low <= truth_auc <= e.ci_high for e in est])
        reject = np.mean([e.p < 0.05 for e in est])
        se = math.sqrt(cover * (1 - cover) / len(est))
        print(
            f"| {sep:g} | {truth_auc:.4f} | {np.mean([e.value for e in est]):.4f} | {100 * cover:.1f} % ({100 * se:.1f}) | "
            f"{100 * reject:.1f} % | {np.mean([e.ci_high - e.ci_low for e in est]):.3f} | {np.mean([e.df for e in est]):.1f} |"
        )
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = main()
    print(f"\n({args_time:.0f} s)" if (args_time := time.perf_counter() - t0) else "")
    sys.exit(rc)
