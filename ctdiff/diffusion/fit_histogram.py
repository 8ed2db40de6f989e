"""Record the training scans' body histogram in a copy of a checkpoint, which then samples with histogram matching.

``--data``'s volumes are read in HU (clipped to the model's HU window, as its samples are), and the
quantiles of their voxels above ``--body-above`` HU (default -500: the body) are recorded
(:func:`ctdiff.diffusion.histogram.fit`). ``--out`` gets the same checkpoint (weights unchanged)
carrying them, with ``sample.histogram_match`` on: ``ctdiff sample`` and the app's Generate form then
map each volume's body onto that histogram, on the decoder's noise-free estimate with the noise added
back unchanged (:func:`ctdiff.diffusion.histogram.match`; ``ctdiff sample --no-histogram-match``:
without). Nothing is sampled; it takes seconds. The input is never changed; ``--out`` must be a new
file unless ``--force``, which replaces only a ctdiff checkpoint.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ctdiff.errors import ConfigError, InputError

EXAMPLES = """\
  python -m ctdiff fit-histogram --model runs/latent/best-noise.pt --data data/phantom-128 --out runs/latent/best-hist.pt
  python -m ctdiff sample --checkpoint runs/latent/best-hist.pt --n 4 --out samples/latent-hist
  python -m ctdiff sample --checkpoint runs/latent/best-hist.pt --no-histogram-match --n 4 --out samples/latent-plain
"""


def fit_histogram(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    body_above: float | None = None,
    force: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Write ``out``: ``model`` carrying the body histogram of ``data``'s volumes, with
    ``sample.histogram_match`` on; returns the record's summary."""
    from ctdiff.data.dataset import dataset_files
    from ctdiff.data.io import read_volume
    from ctdiff.diffusion import histogram
    from ctdiff.diffusion.fit_start import check_new_checkpoint_file, write_with_record
    from ctdiff.model.checkpoint import checkpoint_config, load_checkpoint, resolve_checkpoint
    from ctdiff.progress import counted

    model, out = resolve_checkpoint(model), Path(out)
    check_new_checkpoint_file(model, out, force)
    lo, hi = (float(v) for v in checkpoint_config(load_checkpoint(model), model).data.hu_window)
    thr = histogram.BODY_ABOVE_HU if body_above is None else float(body_above)
    if not lo < thr < hi:
        raise ConfigError(f"--body-above {thr:g} must lie inside the model's HU window ({lo:g}, {hi:g})")
    files = dataset_files(data)

    def volumes():
        for f in counted(files, progress, "fit-histogram: read", "scan"):
            a = np.asarray(read_volume(f).array, dtype=np.float32)
            if not np.isfinite(a).all():
                raise InputError("holds NaN or infinite values", f)
            yield np.clip(a, lo, hi)

    try:
        record = histogram.fit(volumes(), thr)
    except ValueError as exc:  # too few body voxels in all of data
        raise InputError(str(exc), data) from None
    record["fitted_on"] = [Path(f).name for f in files]
    write_with_record(model, out, "histogram_reference", record, {"histogram_match": True})
    return histogram.summary(record)


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="a checkpoint file or run dir")
    parser.add_argument(
        "--data", required=True, help="the volumes whose body histogram is recorded (the training data)"
    )
    parser.add_argument("--out", required=True, help="the new checkpoint file (the input is never changed)")
    parser.add_argument(
        "--body-above",
        type=float,
        help="HU above which a voxel is body (matched); at or below, air (left as drawn). Default -500",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out (never the input)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from ctdiff import validate

    body_above = None if args.body_above is None else validate.number(args.body_above, "--body-above")
    result = fit_histogram(args.model, args.data, args.out, body_above, force=args.force, progress=not args.no_progress)
    print(json.dumps(result))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
