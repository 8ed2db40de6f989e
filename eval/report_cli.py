"""Compare generated CT with real CT: metrics with CIs -> report.json, report.md, report.html.

Thin argparse layer over :func:`eval.report.build_report`; progress goes to tqdm bars on stderr.
"""

from __future__ import annotations

import json
import sys

from eval.report.build import DEFAULTS, build_report
from eval.report.registry import FAMILIES, METRICS

EXAMPLES = """\
  python -m eval report --real data/real --generated runs/r1/samples --out reports/r1
  python -m eval report --real data/heldout --generated samples --train data/train --out rep --force
  python -m eval report --real data/real --generated samples --out rep --metrics noise,frd,kid --json
  python -m eval report --real R --generated G --out rep --inception-weights ~/pt_inception-2015-12-05-6726825d.pth
"""


def add_arguments(parser) -> None:
    parser.add_argument("--real", required=True, help="folder of real CT scans (NIfTI, DICOM folders, .npy/.npz)")
    parser.add_argument("--generated", required=True, help="folder of generated scans")
    parser.add_argument(
        "--train", default=None, help="the generator's training scans (memorisation test, reference floor)"
    )
    parser.add_argument("--out", required=True, help="report folder (report.json, report.md, report.html, figures/)")
    parser.add_argument(
        "--metrics",
        default=None,
        help=f"comma-separated subset: metric names ({', '.join(METRICS)}) or families ({', '.join(FAMILIES)}); default all",
    )
    parser.add_argument("--json", action="store_true", help="also print report.json to stdout")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    parser.add_argument(
        "--cache-dir", default=None, help="feature cache folder (default $CTDIFF_CACHE_DIR or ~/.cache/ctdiff/features)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes for feature extraction (default: all cores)"
    )
    parser.add_argument(
        "--executor",
        choices=("local", "dask"),
        default="local",
        help="where radiomics features are extracted: local worker processes or a Dask cluster",
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        help="Dask scheduler address (tcp://host:8786) for --executor dask; default a local cluster of --workers",
    )
    parser.add_argument(
        "--device", default="auto", help="torch device for SSIM and InceptionV3: auto, cpu, cuda, cuda:1"
    )
    parser.add_argument(
        "--inception-weights", default=None, help="InceptionV3 FID weights file for fid_inception_2d (never downloaded)"
    )
    parser.add_argument(
        "--fid2d-weights",
        default=None,
        help="weights for the multi-plane FID (torchvision-format ResNet-50, e.g. RadImageNet); never downloaded",
    )
    parser.add_argument(
        "--fid2d-extractor",
        default=DEFAULTS["fid2d_extractor"],
        help="registered slice feature extractor for the multi-plane FID (default RadImageNet ResNet-50)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULTS["n_bootstrap"],
        help="case resamples per confidence interval (0: none)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seed of the bootstrap and the real split")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty --out folder")


class _Bars:
    """One tqdm bar per stage of :func:`build_report` (stderr, with ETA).

    What a stage reports as already done when it starts (cached features) is the bar's ``initial``,
    so it never counts into the rate; later progress goes through ``update`` (tqdm's smoothed rate),
    and a report without progress (a heartbeat) only redraws, so elapsed time and ETA keep moving.
    """

    def __init__(self, file=None):
        self.bar = None
        self.stage = None
        self.file = file

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, initial=done, desc=stage, unit="it", file=self.file or sys.stderr, leave=True)
            return
        self.bar.total = total
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)
        else:
            self.bar.refresh()

    def write(self, line: str) -> None:
        """A line above the bars (tqdm.write keeps an open bar intact)."""
        from tqdm import tqdm

        tqdm.write(line, file=self.file or sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def check_args(args) -> None:
    """Every option checked here, before any scan is read (ConfigError/InputError, one line)."""
    from ctdiff import validate

    validate.integer(args.bootstrap, "--bootstrap", low=0, high=1_000_000)
    validate.seed(args.seed)
    validate.metric_list(args.metrics)
    if args.workers is not None:
        validate.integer(args.workers, "--workers", low=1, high=1024)
    validate.device(args.device)


def run(args) -> int:
    check_args(args)
    bars = _Bars()
    try:
        report = build_report(
            args.real,
            args.generated,
            train=args.train,
            out=args.out,
            metrics=args.metrics,
            progress_callback=bars,
            cache_dir=args.cache_dir,
            use_cache=not args.no_cache,
            workers=args.workers,
            device=args.device,
            inception_weights=args.inception_weights,
            force=args.force,
            executor=args.executor,
            scheduler=args.scheduler,
            settings={
                "n_bootstrap": args.bootstrap,
                "seed": args.seed,
                "fid2d_weights": args.fid2d_weights,
                "fid2d_extractor": args.fid2d_extractor,
            },
            notice=bars.write,
        )
    finally:
        bars.close()
    if args.json:
        print(json.dumps(report, indent=2))
    skipped = report["inputs"]["skipped"]
    if skipped:
        print(f"skipped {len(skipped)} file(s):", file=sys.stderr)
        for s in skipped:
            print(f"  {s['file']}: {s['reason']}", file=sys.stderr)
    print(f"report written to {args.out}/report.html", file=sys.stderr)
    return 0
