"""Fit a spread correction to a checkpoint's own samples and write a copy that samples with it.

The checkpoint draws ``--samples`` tensors in its own space as ``ctdiff sample`` draws them (the
config's sampler and steps, its Gaussian start if it has one; never an earlier spread correction) and
encodes ``--data``'s volumes as training did; :func:`ctdiff.diffusion.spread.fit` fits the
shift and gain along the training latents' first ``--components`` principal axes that give the samples
the training scans' mean and variance there. ``--out`` gets the same checkpoint (weights unchanged)
carrying the correction, with ``sample.spread_correction`` on: ``ctdiff sample`` and the app's Generate
form apply it before decoding (``ctdiff sample --no-spread-correction``: without). A noise model fitted
to the model's own samples (``fit-noise --samples``) was fitted without the correction; refit it on the
new file. The correction holds the training scans' mean and principal axes: share the file as you
would share them. The input is never changed; ``--out`` must be a new file unless ``--force``, which
replaces only a ctdiff checkpoint.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from ctdiff.diffusion.spread import DEFAULT_COMPONENTS, DEFAULT_SAMPLES
from ctdiff.errors import ConfigError, InputError

DEFAULT_SEED = 200_000  # apart from fit-noise's 100000.. and the demo's 1000..

EXAMPLES = """\
  python -m ctdiff fit-spread --model runs/latent/checkpoints/best.pt --data data/phantom-128 --out runs/latent/best-spread.pt
  python -m ctdiff fit-spread --model runs/latent/checkpoints/best.pt --data data/phantom-128 --components 8 --samples 32 --out runs/latent/best-spread8.pt
  python -m ctdiff sample --checkpoint runs/latent/best-spread.pt --n 4 --out samples/latent-spread
  python -m ctdiff sample --checkpoint runs/latent/best-spread.pt --no-spread-correction --n 4 --out samples/latent-plain
"""


def draw(bundle, n: int, seed: int, progress: bool = False) -> torch.Tensor:
    """``n`` of the checkpoint's samples in its own space (seeds ``seed``..), as ``sample`` draws them at
    the training geometry, before decoding and before any spread correction."""
    from ctdiff.diffusion.sample import check_gaussian_start, condition_values, evaluations
    from ctdiff.diffusion.schedule import run_sampler

    cfg = bundle.config.sample
    level = check_gaussian_start(bundle, cfg.sampler, cfg.steps, cfg.gaussian_start)
    x, y, _ = bundle.shape
    shape = bundle.space.encoded_shape((int(bundle.geometry["depth"]), y, x))
    per = evaluations(bundle, cfg.sampler, cfg.steps, level)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n * per, desc="fit-spread: sample", unit="eval")
    out = []
    try:
        with torch.no_grad():
            for i in range(n):
                cb = None if bar is None else (lambda k, _t, d=i * per: bar.update(d + k - bar.n))
                start = None if level is None else (bundle.gaussian_start, level)
                z = run_sampler(
                    cfg.sampler,
                    bundle.model,
                    shape,
                    bundle.diffusion,
                    cfg.steps,
                    [seed + i],
                    bundle.device,
                    cb,
                    gaussian_start=start,
                    condition=condition_values(bundle, [seed + i]),  # as sample draws them (model.condition)
                    guidance=cfg.guidance,
                )
                out.append(z[0].float().cpu().contiguous())
    finally:
        if bar is not None:
            bar.close()
    return torch.stack(out)


def fit_spread(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    components: int = DEFAULT_COMPONENTS,
    samples: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
    force: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Write ``out``: ``model`` carrying a spread correction fitted on ``samples`` of its own samples and
    ``data``'s volumes, with ``sample.spread_correction`` on; returns the fit's summary."""
    from ctdiff.data.dataset import dataset_files
    from ctdiff.diffusion import spread
    from ctdiff.diffusion.fit_start import (
        check_components,
        check_new_checkpoint_file,
        encode_training_data,
        write_with_record,
    )
    from ctdiff.diffusion.sample import load_bundle
    from ctdiff.model.checkpoint import resolve_checkpoint

    model, out = resolve_checkpoint(model), Path(out)
    check_new_checkpoint_file(model, out, force)
    if samples < 2:
        raise ConfigError(f"--samples must be at least 2 (a variance needs two), got {samples}")
    bundle = load_bundle(model, device="cpu")
    files = dataset_files(data)
    check_components(components, files, data)  # before minutes of sampling and encoding
    drawn = draw(bundle, samples, seed, progress)
    latents = encode_training_data(bundle, files, progress)
    try:
        record = spread.fit(latents, drawn, components)
    except ValueError as exc:  # NaN samples or latents: a diverged model or autoencoder
        raise InputError(str(exc), model) from None
    cfg = bundle.config.sample
    record["sampling"] = {
        "n": samples,
        "seed": seed,
        "sampler": cfg.sampler,
        "steps": cfg.steps,
        "gaussian_start": cfg.gaussian_start,
    }
    record["fitted_on"] = [Path(f).name for f in files]
    write_with_record(model, out, "spread_correction", record, {"spread_correction": True})
    return spread.summary(record)


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="a checkpoint file or run dir")
    parser.add_argument("--data", required=True, help="the volumes to fit on (the model's training data)")
    parser.add_argument("--out", required=True, help="the new checkpoint file (the input is never changed)")
    parser.add_argument(
        "--components",
        type=int,
        default=DEFAULT_COMPONENTS,
        help=f"principal axes corrected, at most the scans less one (default {DEFAULT_COMPONENTS}; each costs "
        "2 bytes per latent voxel in the file)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=DEFAULT_SAMPLES,
        help=f"the model's own samples the correction is fitted on (default {DEFAULT_SAMPLES})",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"first seed of those samples (default {DEFAULT_SEED})"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out (never the input)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=int, help="torch CPU threads")


def run(args) -> int:
    from ctdiff import validate

    if validate.threads(args.threads):
        torch.set_num_threads(args.threads)
    components = validate.integer(args.components, "--components", low=1, high=100_000)
    samples = validate.integer(args.samples, "--samples", low=2, high=10_000)
    validate.seed(args.seed, count=samples)
    result = fit_spread(
        args.model,
        args.data,
        args.out,
        components,
        samples,
        args.seed,
        force=args.force,
        progress=not args.no_progress,
    )
    result.pop("fitted_on", None)
    print(json.dumps(result))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
