"""Fit a Gaussian start to a rectified-flow checkpoint's training data and write a copy that samples from it.

The checkpoint's space encodes each of ``--data``'s volumes as training did (the model's HU window,
padded to the network's depth, the latent scale), :func:`ctdiff.diffusion.gaussian_start.fit` fits
the mean and ``--components`` principal components (probabilistic PCA) to them, and ``--out`` gets
the same checkpoint (weights unchanged) carrying that Gaussian, with ``sample.gaussian_start`` set to
``--level``. ``ctdiff sample`` and the app's Generate form then start Euler sampling at that noise
level from the Gaussian's closed-form flow (``ctdiff sample --gaussian-start 1``: from pure noise).
The Gaussian's components span the training scans' latents: share the file as you would share
them. A checkpoint that carries a noise model fitted to its own samples (``fit-noise --samples``) was
fitted to samples drawn without the start; refit it on the new file. The input is never changed;
``--out`` must be a new file unless ``--force``, which replaces only a ctdiff checkpoint.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from ctdiff.diffusion.gaussian_start import DEFAULT_COMPONENTS
from ctdiff.errors import ConfigError, InputError

DEFAULT_LEVEL = (
    0.8  # of 0.8 and 0.6 on the demo model, the nearer the phantoms (docs/benchmarks.md, "A Gaussian start")
)

EXAMPLES = """\
  python -m ctdiff fit-start --model runs/latent/checkpoints/best.pt --data data/phantom-128 --out runs/latent/best-start.pt
  python -m ctdiff fit-start --model runs/latent/checkpoints/best.pt --data data/phantom-128 --components 8 --level 0.6 --out runs/latent/best-start06.pt
  python -m ctdiff sample --checkpoint runs/latent/best-start.pt --n 4 --out samples/latent-start
  python -m ctdiff sample --checkpoint runs/latent/best-start.pt --gaussian-start 1 --n 4 --out samples/latent-noise-start
"""


def check_new_checkpoint_file(model: Path, out: Path, force: bool) -> None:
    """``out`` may be written: not the input, not a folder, new or (``force``) a ctdiff checkpoint."""
    from ctdiff.diffusion.fit_noise import check_new_model_file
    from ctdiff.model.checkpoint import load_checkpoint

    check_new_model_file(model, out, force, reader=load_checkpoint, what="ctdiff checkpoint")


def encode_training_data(bundle, files: list[str], progress: bool = False) -> torch.Tensor:
    """The latents of the volumes ``files``, encoded as the checkpoint's run cached them."""
    from ctdiff.config import DataConfig
    from ctdiff.data.dataset import load_cases, pad_slices
    from ctdiff.progress import counted

    cfg = bundle.config.data
    cases = load_cases(files, DataConfig(hu_window=cfg.hu_window), expected_shape=bundle.shape)
    depth = int(bundle.geometry["depth"])
    latents = []
    with torch.no_grad():
        for t in counted(cases.tensors, progress, "fit-start: encode", "scan"):
            # padded in model units, as training pads ("constant" adds -1: air)
            latents.append(bundle.space.encode(pad_slices(t, depth, cfg.pad_mode)[None].to(bundle.device))[0].cpu())
    return torch.stack(latents)


def check_components(components: int, files: list[str], data) -> None:
    """ConfigError unless 1 <= ``components`` <= the scans less one (checked before minutes of encoding)."""
    if not 1 <= components <= len(files) - 1:
        raise ConfigError(
            f"--components must be between 1 and {len(files) - 1} (the {len(files)} scans of {data} less one), "
            f"got {components}"
        )


def write_with_record(model: Path, out: Path, key: str, record: dict[str, Any], sample: dict[str, Any]) -> None:
    """``out``: the checkpoint ``model`` with ``record`` under ``key`` and ``sample`` merged into its config's
    sample section (validated first: a bad combination is a ConfigError before anything is written)."""
    from ctdiff.atomic import atomic_path
    from ctdiff.config import config_from_dict
    from ctdiff.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(model)
    config = {**ckpt["config"], "sample": {**(ckpt["config"].get("sample") or {}), **sample}}
    config_from_dict(config)
    with atomic_path(out, force=True) as tmp:
        torch.save({**ckpt, "config": config, key: record}, tmp)


def fit_start(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    components: int = DEFAULT_COMPONENTS,
    level: float = DEFAULT_LEVEL,
    force: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Write ``out``: ``model`` carrying a Gaussian fitted to ``data`` and ``sample.gaussian_start = level``;
    returns the fit's summary."""
    from ctdiff.data.dataset import dataset_files
    from ctdiff.diffusion import gaussian_start as gs
    from ctdiff.diffusion.sample import load_bundle
    from ctdiff.model.checkpoint import resolve_checkpoint
    from ctdiff.samplers import gaussian_start_error

    model, out = resolve_checkpoint(model), Path(out)
    check_new_checkpoint_file(model, out, force)
    bundle = load_bundle(model, device="cpu")
    problem = gaussian_start_error(
        level, bundle.diffusion.kind, bundle.config.sample.sampler, bundle.diffusion.cfg.noise
    )
    if problem:
        raise ConfigError(f"--level: {problem}")
    files = dataset_files(data)
    check_components(components, files, data)
    latents = encode_training_data(bundle, files, progress)
    try:
        record = gs.fit(latents, components)
    except ValueError as exc:  # NaN latents: a diverged autoencoder
        raise InputError(str(exc), model) from None
    record["fitted_on"] = [Path(f).name for f in files]
    write_with_record(model, out, "gaussian_start", record, {"gaussian_start": float(level)})
    return {**gs.summary(record), "level": float(level)}


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="a rectified-flow checkpoint file or run dir")
    parser.add_argument("--data", required=True, help="the volumes to fit on (the model's training data)")
    parser.add_argument("--out", required=True, help="the new checkpoint file (the input is never changed)")
    parser.add_argument(
        "--components",
        type=int,
        default=DEFAULT_COMPONENTS,
        help=f"principal components kept, at most the scans less one (default {DEFAULT_COMPONENTS}; each costs "
        "2 bytes per latent voxel in the file)",
    )
    parser.add_argument(
        "--level",
        type=float,
        default=DEFAULT_LEVEL,
        help=f"--out's sample.gaussian_start: the noise level in (0, 1] at which Euler sampling takes over "
        f"(default {DEFAULT_LEVEL})",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out (never the input)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=int, help="torch CPU threads")


def run(args) -> int:
    from ctdiff import validate

    if validate.threads(args.threads):
        torch.set_num_threads(args.threads)
    components = validate.integer(args.components, "--components", low=1, high=100_000)
    level = validate.number(args.level, "--level", low=0.0, high=1.0, low_open=True)
    result = fit_start(
        args.model, args.data, args.out, components, level, force=args.force, progress=not args.no_progress
    )
    result.pop("fitted_on", None)
    print(json.dumps(result))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
