"""``python -m eval extract``: fill the content-addressed feature cache ahead of reports, locally or on Dask.

Radiomics extraction costs about 40 s per 256x256x26 volume per core; a cohort of thousands of
scans is extracted here once, on as many machines as a Dask cluster has, and every later
``python -m eval report`` on those files (renamed or moved too: the key is the file content)
reads the cache. The features equal a local run's (same extractor, same settings, same key).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ctdiff.data.io import find_cases
from ctdiff.errors import ConfigError, InputError

EXAMPLES = """\
  python -m eval extract data/real runs/r1/samples
  python -m eval extract data/real --executor dask --scheduler tcp://10.0.0.5:8786
  python -m eval extract data/real --executor dask --workers 8 --cache-dir /shared/ctdiff-cache
"""


def add_arguments(parser) -> None:
    parser.add_argument("folders", nargs="+", help="folders of CT scans whose features to extract and cache")
    parser.add_argument(
        "--extractor", default="radiomics-frd-v1", help="feature extractor (file-based: radiomics-frd-v1)"
    )
    parser.add_argument(
        "--cache-dir", default=None, help="feature cache folder (default $CTDIFF_CACHE_DIR or ~/.cache/ctdiff/features)"
    )
    parser.add_argument(
        "--executor", choices=("local", "dask"), default="local", help="local worker processes or a Dask cluster"
    )
    parser.add_argument(
        "--scheduler", default=None, help="Dask scheduler address; default a local cluster of --workers"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="local worker processes / local Dask workers (default: all cores)"
    )


def extract_folders(
    folders,
    extractor_name="radiomics-frd-v1",
    cache_dir=None,
    executor="local",
    scheduler=None,
    workers=None,
    progress=None,
) -> dict:
    """Extract and cache the features of every case below ``folders``; returns counts and failures."""
    from eval.features import create
    from eval.features.radiomics import image_dim_of_shape
    from eval.report.cache import FeatureCache, default_cache_dir
    from eval.report.extract import extract_features

    if executor not in ("local", "dask"):
        raise ConfigError(f"unknown executor {executor!r}; choose local or dask")
    paths: list[Path] = []
    for f in folders:
        if not Path(f).exists():
            raise InputError("folder does not exist", f)
        found = find_cases(f)
        if not found:
            raise InputError("holds no CT volume files", f)
        paths += found
    workers = max(1, int(workers or os.cpu_count() or 1))
    if extractor_name != "radiomics-frd-v1":
        raise ConfigError(
            f"extract fills the cache for the file-based extractor radiomics-frd-v1; {extractor_name!r} runs "
            "inside python -m eval report (its features depend on the report's common grid)"
        )
    from ctdiff.data.io import read_volume

    first = read_volume(paths[0])
    extractor = create(
        extractor_name, image_dim=image_dim_of_shape(first.shape), single_thread=workers > 1 or executor == "dask"
    )
    cache = FeatureCache(cache_dir or default_cache_dir())
    items = [(p, p) for p in paths]
    if executor == "dask":
        from eval.report.executor import dask_client

        with dask_client(scheduler, workers) as client:
            ex = extract_features(extractor, items, cache, progress=progress, client=client)
    else:
        ex = extract_features(extractor, items, cache, workers=workers, progress=progress)
    return {
        "cases": len(paths),
        "cached": ex.n_cached,
        "extracted": ex.n_extracted,
        "failed": ex.failed,
        "cache_dir": str(cache.root),
    }


def run(args) -> int:
    from tqdm import tqdm

    bar = tqdm(total=None, desc="extract", unit="scan", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        out = extract_folders(
            args.folders, args.extractor, args.cache_dir, args.executor, args.scheduler, args.workers, progress
        )
    finally:
        bar.close()
    for f, why in out["failed"]:
        print(f"  skipped {f}: {why}", file=sys.stderr)
    print(
        f"{out['cases']} scans: {out['cached']} already cached, {out['extracted']} extracted, {len(out['failed'])} failed "
        f"(cache {out['cache_dir']})",
        file=sys.stderr,
    )
    return 0
