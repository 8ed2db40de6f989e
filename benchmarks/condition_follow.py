#!/usr/bin/env python3
"""Does a latent_pcs model's sample land where its condition says (issue 20)?

A model trained with ``model.condition: latent_pcs`` is told, for every sample, the coordinates of a
training case's latent along the training latents' first principal axes (``ctdiff sample`` draws one
vector per seed). If the network follows its condition, a sample's own latent lies at those
coordinates; if it leans on the condition for some axes only, the samples vary less along the others
than the training scans do, whatever the draw.

The script rebuilds the model's principal axes from its training scans (the checkpoint keeps the
coordinates, not the axes; the rebuilt coordinates are checked against the checkpoint's record, so
the wrong scans are refused), samples ``--n`` latents with the model's own sampler and steps at the
seeds ``ctdiff sample`` would use (its Gaussian start and spread correction too, where the model
carries them), each with its seed's drawn vector, and projects each sample on the
axes. For each axis it reports the slope and correlation of the sample's coordinate on the drawn
one (1 and 1: followed exactly; slope 0: ignored), and the SD of both.

``--condition-gain g1,g2,...`` feeds the network each drawn coordinate times its gain (a diagnostic:
does a louder condition move the samples further along an axis the network under-follows?); slopes
are still taken against the drawn, un-amplified coordinates. ``--guidance W`` samples with
classifier-free guidance at scale W (``ctdiff sample --guidance``; default: the model's
``sample.guidance``), which moves a sample further the way its condition points without changing
what the network is fed.

    python benchmarks/condition_follow.py --model runs/f2g/checkpoints/best.pt --train runs/f2g/split.json \\
        --n 12 --seed 1000 --json follow.json

``--train`` is the run's ``split.json`` (its training cases) or a folder holding exactly those scans.
Not in eval: a diagnostic for whoever trains the generator.
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

_diversity = runpy.run_path(str(REPO / "benchmarks" / "latent_diversity.py"), run_name="latent_diversity")
encode_folder = _diversity["encode_folder"]  # the scans encoded as training caches them
sample_latents = _diversity["sample_latents"]  # the latents ctdiff sample would decode
RECORD_TOLERANCE = 1e-3  # relative: the rebuilt coordinates against the checkpoint's record


def training_paths(train: Path) -> list[Path]:
    """The training scans: a run's split.json's "train" list, or the NIfTI files in a folder."""
    if not train.exists():
        raise SystemExit(f"{train}: no such file or folder")
    if train.is_file():
        try:
            paths = [Path(p) for p in json.loads(train.read_text()).get("train", [])]
        except (ValueError, AttributeError):
            raise SystemExit(f"{train}: not a run's split.json") from None
    else:
        paths = sorted(p for p in train.iterdir() if p.name.endswith((".nii", ".nii.gz")))
    if not paths:
        raise SystemExit(f"{train}: no training scans")
    return paths


def rebuild_basis(bundle, record: dict, latents: torch.Tensor) -> tuple[dict, np.ndarray]:
    """The model's principal axes from its training latents, each axis' sign set to the record's,
    and the rebuilt coordinates; SystemExit when they are not the record's (other scans, other coder)."""
    from ctdiff.model import condition as conditions

    want = np.asarray(record["values"], dtype=np.float64)
    k = want.shape[1]
    if len(latents) != len(want):
        raise SystemExit(f"{len(latents)} training scans given; the model was trained on {len(want)}")
    basis = conditions.pca_basis(list(latents), k, bundle.config.model.condition_grid)
    got = np.array([conditions.project(basis, z) for z in latents])
    sign = np.where((got * want).sum(0) < 0, -1.0, 1.0)  # a principal axis' sign is arbitrary
    basis["components"] = basis["components"] * torch.from_numpy(sign)[:, None]
    got = got * sign
    err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-12)
    if err > RECORD_TOLERANCE:
        raise SystemExit(
            f"the training scans' coordinates differ from the model's record by {err:.2g} (relative): "
            "not the scans (or the order) this model was trained on"
        )
    return basis, got


def follow(drawn: np.ndarray, got: np.ndarray) -> list[dict]:
    """Per axis: the least-squares slope and the correlation of the samples' coordinates on the drawn
    ones (numpy's polyfit and corrcoef), and both SDs."""
    out = []
    for a in range(drawn.shape[1]):
        x, y = drawn[:, a], got[:, a]
        out.append(
            {
                "slope": float(np.polyfit(x, y, 1)[0]),
                "correlation": float(np.corrcoef(x, y)[0, 1]),
                "drawn_sd": float(x.std(ddof=1)),
                "sample_sd": float(y.std(ddof=1)),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    from ctdiff.config import CONDITION_DRAWS
    from ctdiff.diffusion.sample import condition_values, load_bundle
    from ctdiff.model import condition as conditions

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path, help="a latent_pcs checkpoint (a run's best.pt)")
    p.add_argument("--train", required=True, type=Path, help="the run's split.json, or a folder of its training scans")
    p.add_argument("--n", type=int, default=12, help="latents to sample (default 12)")
    p.add_argument("--seed", type=int, default=1000, help="sample i uses seed + i (default 1000)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    p.add_argument("--condition-gain", default=None, help="g1,g2,...: feed each drawn coordinate times its gain")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the model's)")
    p.add_argument(
        "--condition-draw",
        choices=CONDITION_DRAWS,
        default=None,
        help="how conditions are drawn (default: the model's)",
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.n < 3:
        raise SystemExit("--n must be at least 3")
    if not a.model.is_file():
        raise SystemExit(f"{a.model}: no such checkpoint")
    bundle = load_bundle(a.model, device="cpu")
    if bundle.config.model.condition != conditions.LATENT_PCS:
        raise SystemExit(f"{a.model}: model.condition is {bundle.config.model.condition}; this needs latent_pcs")
    record = bundle.geometry["condition"]
    k = conditions.dims(record)
    gains = np.ones(k)
    if a.condition_gain is not None:
        try:
            gains = np.array([float(g) for g in a.condition_gain.split(",")])
        except ValueError:
            gains = np.array([])
        if len(gains) != k or not np.isfinite(gains).all():
            raise SystemExit(f"--condition-gain needs {k} finite numbers, got {a.condition_gain!r}")
    from ctdiff.diffusion.sample import check_guidance
    from ctdiff.errors import ConfigError

    try:
        guidance = check_guidance(bundle, bundle.config.sample.guidance if a.guidance is None else a.guidance)
    except ConfigError as exc:
        raise SystemExit(f"--guidance: {exc}") from None
    started = time.perf_counter()
    latents = _encode_paths(bundle, training_paths(a.train))
    basis, _ = rebuild_basis(bundle, record, latents)
    mean = np.asarray(record["mean"], dtype=np.float64)
    seeds = list(range(a.seed, a.seed + a.n))
    method = a.condition_draw or bundle.config.sample.condition_draw
    drawn = np.asarray(condition_values(bundle, seeds, method=method), dtype=np.float64).reshape(len(seeds), k)
    fed = mean + gains * (drawn - mean)
    steps = a.steps or bundle.config.sample.steps
    samples, level, corrected = sample_latents(  # as ctdiff sample: its Gaussian start, spread correction
        bundle, seeds, steps, fed.tolist(), bundle.config.sample.gaussian_start, guidance=guidance
    )
    got = np.array([conditions.project(basis, z) for z in samples])
    axes = follow(drawn, got)
    result = {
        "model": str(a.model),
        "weights": bundle.weights,
        "grid": bundle.config.model.condition_grid and list(bundle.config.model.condition_grid),
        "sampler": bundle.config.sample.sampler,
        "steps": steps,
        "gaussian_start": level,
        "spread_correction": corrected,
        "seeds": seeds,
        "condition_gain": gains.tolist(),
        "guidance": guidance,
        "condition_draw": method,
        "record_sd": np.asarray(record["values"]).std(0, ddof=1).tolist(),
        "axes": axes,
        "drawn": drawn.tolist(),
        "samples": got.tolist(),
        "seconds": time.perf_counter() - started,
    }
    for i, r in enumerate(axes, 1):
        print(
            f"axis {i}: slope {r['slope']:.2f}, correlation {r['correlation']:.2f}; "
            f"SD drawn {r['drawn_sd']:.3f}, samples {r['sample_sd']:.3f} (training {result['record_sd'][i - 1]:.3f})"
        )
    if a.json:
        a.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def _encode_paths(bundle, paths: list[Path]) -> torch.Tensor:
    """The scans at ``paths``, in this order, encoded as training caches them (through a folder of links,
    since :func:`encode_folder` reads a folder)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for i, p in enumerate(paths):  # numbered, so that the folder's sorted order is the given order
            (Path(tmp) / f"{i:05d}_{p.name}").symlink_to(p.resolve())
        return encode_folder(bundle, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
