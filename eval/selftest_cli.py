"""``python -m eval selftest``: controlled degradations of your real cohort and which metrics detect them.

Thin argparse layer over :func:`eval.selftest.run_selftest`; progress goes to a tqdm bar on stderr.
"""

from __future__ import annotations

import json
import sys

from eval.report.registry import FAMILIES
from eval.selftest import DEGRADATIONS, FAST_METRICS, run_selftest

EXAMPLES = """\
  python -m eval selftest --real data/real --out selftest
  python -m eval selftest --real data/heldout --train data/train --out selftest --force
  python -m eval selftest --real data/real --out st --metrics noise,intensity --degradations blur,added_noise
"""


def add_arguments(parser) -> None:
    parser.add_argument(
        "--real", required=True, help="folder of real CT scans (at least 4): split into a reference and a degraded half"
    )
    parser.add_argument(
        "--train",
        default=None,
        help="training scans: the 'copies of training scans' degradation and the reference floor",
    )
    parser.add_argument("--out", required=True, help="folder for selftest.json, selftest.md, selftest.html")
    parser.add_argument(
        "--metrics",
        default=FAST_METRICS,
        help=f"metric names or families ({', '.join(FAMILIES)}); default the fast families {FAST_METRICS}",
    )
    parser.add_argument(
        "--degradations", default=None, help=f"comma-separated subset of {', '.join(DEGRADATIONS)} (default all)"
    )
    parser.add_argument(
        "--bootstrap", type=int, default=100, help="case resamples per confidence interval (at least 2)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the bootstrap and the degradations")
    parser.add_argument(
        "--max-train",
        type=int,
        default=8,
        help="use at most this many training scans (SSIM pairs grow quadratically; 0: all)",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes for per-scan measurements")
    parser.add_argument("--cache-dir", default=None, help="feature cache folder for radiomics (default: no cache)")
    parser.add_argument("--json", action="store_true", help="also print selftest.json to stdout")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty --out folder")


def check_args(args) -> None:
    """Every option checked here, before any scan is read (ConfigError, one line)."""
    from ctdiff import validate
    from ctdiff.errors import ConfigError

    validate.integer(args.bootstrap, "--bootstrap", low=2, high=1_000_000)
    validate.seed(args.seed, count=2)  # the training subset is drawn with seed + 1
    validate.metric_list(args.metrics)
    if args.degradations is not None and not any(d.strip() for d in args.degradations.split(",")):
        raise ConfigError("--degradations is empty; leave it out to run every degradation")
    validate.integer(args.max_train, "--max-train", low=0, high=100_000)
    validate.integer(args.workers, "--workers", low=1, high=1024)


def run(args) -> int:
    from tqdm import tqdm

    check_args(args)

    bar = tqdm(total=None, desc="selftest", unit="report", file=sys.stderr)

    def progress(stage: str, done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(stage)
        bar.refresh()

    try:
        result = run_selftest(
            args.real,
            out=args.out,
            train=args.train,
            metrics=args.metrics,
            degradations=[d.strip() for d in args.degradations.split(",") if d.strip()] if args.degradations else None,
            n_bootstrap=args.bootstrap,
            seed=args.seed,
            max_train=args.max_train,
            workers=args.workers,
            cache_dir=args.cache_dir,
            force=args.force,
            progress=progress,
        )
    finally:
        bar.close()
    if args.json:
        print(json.dumps(result, indent=2))
    for name, d in result["degradations"].items():
        print(
            f"{name}: detected by {', '.join(d['detected_by']) or 'nothing'}"
            + (f"; missed {', '.join(d['missed'])}" if d["missed"] else ""),
            file=sys.stderr,
        )
    print(f"self-test written to {args.out}/selftest.html", file=sys.stderr)
    return 0
