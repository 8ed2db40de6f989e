#!/usr/bin/env python3
"""Are a latent rectified-flow model's samples as varied as its training scans (issue 20)?

Recall counts the real scans that fall inside some generated scan's k-NN ball in radiomics space; the
demo's is 0. This script looks for the cause one step before the decoder, in the latent space the
diffusion model works in, where nothing but the diffusion model is involved:

1. **Spread.** The training and held-out scans are encoded (the autoencoder's posterior mean, times
   the model's scale factor, as training caches them) and ``--n`` latents are sampled with the
   model's own sampler and steps (what ``ctdiff sample`` decodes). Each latent is averaged down to a
   coarse grid (4 x 4 x 4 cells per channel), the scale of the body's outline and size. The coarse
   training latents' principal axes (PCA) are the directions in which the phantoms differ most; the
   script reports each cohort's variance along them and its total coarse variance. Samples as varied
   as the phantoms have ratios near 1.
2. **Gain.** For noise levels s (the rectified flow's x_s = (1 - s) x_0 + s noise), the training and
   held-out latents are noised and the network's estimate of x_0 (x_s + s v) is projected on the first
   principal axis. The gain is how much of a scan's deviation from the mean along that axis the
   estimate keeps (1: all of it; 0: it answers the mean). Beside it, the gain of the exact posterior
   mean if the coarse latents were Gaussian along that axis, SNR / (1 + SNR) with
   SNR = (1 - s)^2 lambda / (s^2 / m) (lambda: the training variance along the axis; m: latent
   elements per coarse cell, so s^2 / m is the noise variance per cell). A network that keeps less
   than that shrinks the scans toward the mean while the flow still decides their size, and the
   samples come out less varied.

    python benchmarks/latent_diversity.py --model ctdiff_app/demo/assets/model.pt \\
        --train data/ph128-train --held data/ph128-held --n 24 --seed 2000 --json diversity.json

``--images NAME=FOLDER`` (repeatable) adds, for NIfTI folders (the phantoms, ``ctdiff sample``'s
output), the mean and SD over scans of the body's share of the volume (voxels above -500 HU) and of
the mean HU: the spread in image space, decoder included.

3. **Detail.** Each cohort's detail energy per scale: the mean square of z minus its 2 x 2 x 2 block
   means, then of those block means minus theirs, for up to ``DETAIL_LEVELS`` levels (as many as the
   latent halves evenly; an averaging pyramid, so the levels and the coarsest block means add up to
   the whole mean square). The samples' ratio to the training latents' is 1 when the network draws
   as much fine structure as the coder puts there; below 1, the samples are smoother in the latents
   than the encoded scans.

Not in eval: a diagnostic for whoever trains the generator. Rectified-flow latent models only (the
x_0 estimate above is the flow's).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

GRID = (4, 4, 4)  # coarse cells per (z, y, x): the body's outline, not its texture
NOISE_LEVELS = (0.99, 0.97, 0.95, 0.92, 0.9, 0.85, 0.7, 0.5)
BODY_HU = -500.0  # a voxel above this is body (or table), below it air or lung
DETAIL_LEVELS = 3  # 2x, 4x and 8x blocks: the demo's 16 x 8 x 32 x 32 latents have 1 slice left below that


def detail_energy(z: torch.Tensor, levels: int = DETAIL_LEVELS) -> list[float]:
    """Mean square per element of ``z`` (N, C, D, H, W) minus its 2 x 2 x 2 block means, then of the block
    means minus theirs, ``levels`` times (a Haar-like averaging pyramid; written here because ptwt's DWT
    splits each level into 7 oriented bands, and this asks only how much structure each scale holds).
    Each level's mean is over its own grid, the same as over z's grid with the level upsampled, and the
    levels are orthogonal, so sum(levels) + mean(coarsest block means^2) = mean(z^2)."""
    if any(n % 2**levels for n in z.shape[2:]):
        raise ValueError(f"latent shape {tuple(z.shape[2:])} does not halve {levels} times")
    out, x = [], z.double()
    for _ in range(levels):
        lo = F.avg_pool3d(x, 2)
        d = x - F.interpolate(lo, scale_factor=2, mode="nearest")
        out.append(float((d**2).mean()))
        x = lo
    return out


def coarse(z: torch.Tensor, grid: tuple[int, int, int] = GRID) -> torch.Tensor:
    """``(N, C, D, H, W)`` latents averaged to ``grid`` cells per channel, flattened: ``(N, C * cells)``."""
    g = tuple(min(int(a), int(b)) for a, b in zip(grid, z.shape[2:]))
    return F.adaptive_avg_pool3d(z.double(), g).flatten(1)


def elements_per_cell(shape: tuple[int, ...], grid: tuple[int, int, int] = GRID) -> float:
    """Latent elements averaged into one coarse cell (``shape``: (C, D, H, W) or (D, H, W))."""
    spatial = shape[-3:]
    return float(np.prod([s / min(g, s) for s, g in zip(spatial, grid)]))


def principal_axes(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and the first ``k`` principal axes (rows, unit length) of the rows of ``x``."""
    mean = x.mean(0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    return mean, vh[: min(k, vh.shape[0])]


def spread(x: torch.Tensor, mean: torch.Tensor, axes: torch.Tensor) -> dict:
    """Variance (ddof 0) of ``x`` along each axis, its mean offset along them, and its total variance."""
    p = (x - mean) @ axes.T
    return {
        "n": int(x.shape[0]),
        "axis_variance": [float(v) for v in p.var(0, unbiased=False)],
        "axis_mean": [float(v) for v in p.mean(0)],
        "total_variance": float(((x - x.mean(0)) ** 2).sum(1).mean()),
    }


def gaussian_gain(s: float, lam: float, m: float) -> float:
    """Gain of the exact posterior mean along an axis of variance ``lam`` (coarse cells of ``m`` elements)."""
    if s <= 0:
        return 1.0
    snr = (1 - s) ** 2 * lam / (s**2 / m)
    return snr / (1 + snr)


def x0_estimate(model, x: torch.Tensor, s: float, timesteps: int, batch: int = 4) -> torch.Tensor:
    """The rectified flow's estimate of x_0 from x_s: x_s + s v (MONAI's convention, v = x_0 - noise)."""
    t = torch.full((x.shape[0],), int(round(s * timesteps)), dtype=torch.long).clamp_(0, timesteps - 1)
    with torch.no_grad():
        v = torch.cat([model(x[i : i + batch], t[i : i + batch]).float() for i in range(0, len(x), batch)])
    return x + s * v


def axis_gain(
    model,
    latents: torch.Tensor,
    s: float,
    mean: torch.Tensor,
    axis: torch.Tensor,
    timesteps: int,
    seeds: tuple[int, ...] = (11, 12, 13),
    draw=None,
) -> float:
    """How much of each latent's deviation from ``mean`` along ``axis`` (coarse space) the network's x_0
    estimate keeps at noise level ``s``: sum(estimate * truth) / sum(truth^2) over latents and draws.
    ``draw(shape, generator)``: the flow's source noise (the model's ``diffusion.noise``; white by default)."""
    draw = draw or (lambda shape, g: torch.randn(shape, generator=g))
    truth = (coarse(latents) - mean) @ axis
    num = den = 0.0
    for seed in seeds:
        noise = draw(latents.shape, torch.Generator().manual_seed(seed))
        x = ((1 - s) * latents + s * noise).float()
        est = (coarse(x0_estimate(model, x, s, timesteps)) - mean) @ axis
        num += float((est * truth).sum())
        den += float((truth * truth).sum())
    return num / den if den > 0 else float("nan")


def encode_folder(bundle, folder: Path) -> torch.Tensor:
    """Each NIfTI scan in ``folder`` encoded as training caches it (model window, padded to the network's
    depth as the run pads, posterior mean, scale)."""
    from ctdiff.data.dataset import pad_slices
    from ctdiff.data.io import read_volume
    from ctdiff.data.tensors import array_to_tensor, hu_to_model

    depth, mode = int(bundle.geometry["depth"]), bundle.config.data.pad_mode

    paths = sorted(p for p in Path(folder).iterdir() if p.name.endswith((".nii", ".nii.gz")))
    if not paths:
        raise SystemExit(f"{folder}: no NIfTI scans")
    out = []
    for p in paths:
        t = hu_to_model(array_to_tensor(read_volume(p).array), bundle.config.data.hu_window)  # (1, D, H, W)
        with torch.no_grad():  # padded in model units, as training pads ("constant" adds -1: air)
            out.append(bundle.space.encode(pad_slices(t, depth, mode)[None])[0])
    return torch.stack(out)


def sample_latents(
    bundle, seeds, steps: int, condition, gaussian_start, spread_correction: bool = True, guidance: float | None = None
):
    """The latents ``ctdiff sample`` would decode for ``seeds``: the model's sampler at ``steps``, its
    Gaussian start at level ``gaussian_start`` (None or 1: none), its classifier-free guidance
    (``guidance``; None: the config's ``sample.guidance``) and, unless ``spread_correction`` is False,
    the spread correction its config turns on. Returns (latents, the start's level, corrected)."""
    from ctdiff.diffusion.sample import check_gaussian_start, check_guidance
    from ctdiff.diffusion.schedule import run_sampler

    cfg = bundle.config.sample
    depth, y, x = int(bundle.geometry["depth"]), *bundle.shape[1::-1]
    shape = bundle.space.encoded_shape((depth, y, x))
    level = check_gaussian_start(bundle, cfg.sampler, steps, gaussian_start)
    start = None if level is None else (bundle.gaussian_start, level)
    samples = run_sampler(
        cfg.sampler,
        bundle.model,
        shape,
        bundle.diffusion,
        steps,
        list(seeds),
        gaussian_start=start,
        condition=condition,
        guidance=check_guidance(bundle, cfg.guidance if guidance is None else guidance),
    )
    corrected = bool(cfg.spread_correction and spread_correction)
    if corrected:
        from ctdiff.diffusion.spread import apply

        samples = apply(bundle.spread, samples)
    return samples, level, corrected


def image_spread(folder: Path) -> dict:
    """Mean and SD over the scans in ``folder`` of the body's share of the volume and of the mean HU."""
    from ctdiff.data.io import read_volume

    paths = sorted(p for p in Path(folder).iterdir() if p.name.endswith((".nii", ".nii.gz")))
    if not paths:
        raise SystemExit(f"{folder}: no NIfTI scans")
    body, mean = [], []
    for p in paths:
        a = read_volume(p).array
        body.append(float((a > BODY_HU).mean()))
        mean.append(float(a.mean()))
    return {
        "n": len(paths),
        "body_fraction_mean": float(np.mean(body)),
        "body_fraction_sd": float(np.std(body)),
        "mean_hu_mean": float(np.mean(mean)),
        "mean_hu_sd": float(np.std(mean)),
    }


def measure(
    bundle, train: torch.Tensor, held: torch.Tensor | None, samples: torch.Tensor, k: int = 4, levels=NOISE_LEVELS
) -> dict:
    """Spread of each latent cohort along the training latents' principal axes, and the network's gain
    along the first one by noise level next to the Gaussian posterior's."""
    ct = coarse(train)
    mean, axes = principal_axes(ct, k)
    cohorts = {"train": train, **({"held": held} if held is not None else {}), "samples": samples}
    out = {name: spread(coarse(z), mean, axes) for name, z in cohorts.items()}
    ref = out["train"]
    out["samples"]["axis_variance_ratio"] = [
        g / r if r > 0 else float("nan") for g, r in zip(out["samples"]["axis_variance"], ref["axis_variance"])
    ]
    out["samples"]["total_variance_ratio"] = out["samples"]["total_variance"] / ref["total_variance"]
    # as many levels as the latent halves evenly along every axis, up to DETAIL_LEVELS
    n_levels = min(DETAIL_LEVELS, *((d & -d).bit_length() - 1 for d in train.shape[2:]))
    for name, z in cohorts.items():
        out[name]["detail_energy"] = detail_energy(z, n_levels)
    out["samples"]["detail_energy_ratio"] = [
        g / r if r > 0 else float("nan") for g, r in zip(out["samples"]["detail_energy"], ref["detail_energy"])
    ]
    lam = ref["axis_variance"][0]
    m = elements_per_cell(tuple(train.shape[1:]))
    # white noise varies by 1/m along a unit axis of cell means; other source noise (diffusion.noise
    # pyramid) by what 64 draws of it measure, so the Gaussian posterior's gain is the one for that noise
    noise_m = m
    if bundle.diffusion.cfg.noise != "gaussian":
        draws = torch.stack(
            [bundle.diffusion.noise(tuple(train.shape[1:]), torch.Generator().manual_seed(s)) for s in range(64)]
        )
        noise_m = 1.0 / float((coarse(draws) @ axes[0]).var())
    T = bundle.diffusion.timesteps
    gain = []
    for s in levels:
        row = {"s": float(s), "gaussian": gaussian_gain(float(s), lam, noise_m)}
        for name, z in (("train", train), ("held", held)):
            if z is not None:
                row[name] = axis_gain(bundle.model, z, float(s), mean, axes[0], T, draw=bundle.diffusion.noise)
        gain.append(row)
    return {
        "cohorts": out,
        "pc1_gain": gain,
        "elements_per_cell": m,
        "source_noise": bundle.diffusion.cfg.noise,
        "axis_noise_variance": 1.0 / noise_m,
        "grid": list(GRID),
    }


def main(argv: list[str] | None = None) -> int:
    from ctdiff.diffusion.sample import load_bundle

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", required=True, type=Path, help="a latent rectified-flow checkpoint (e.g. the demo's model.pt)"
    )
    p.add_argument("--train", required=True, type=Path, help="the training scans (NIfTI folder)")
    p.add_argument("--held", type=Path, default=None, help="held-out scans (NIfTI folder)")
    p.add_argument("--n", type=int, default=24, help="latents to sample (default 24)")
    p.add_argument("--seed", type=int, default=2000, help="sample i uses seed + i (default 2000)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    p.add_argument("--axes", type=int, default=4, help="principal axes reported (default 4)")
    p.add_argument("--levels", default=",".join(map(str, NOISE_LEVELS)), help="noise levels s for the gain")
    p.add_argument("--images", action="append", default=[], help="NAME=FOLDER of NIfTI scans, repeatable")
    p.add_argument(
        "--gaussian-start",
        type=float,
        default=None,
        help="sample from a Gaussian start at this level (default: the model's sample.gaussian_start; 1: none)",
    )
    p.add_argument(
        "--no-spread-correction",
        action="store_true",
        help="leave out the spread correction the model carries (fit-spread; applied when its config's "
        "sample.spread_correction is on, as ctdiff sample does)",
    )
    p.add_argument("--no-ema", action="store_true", help="the raw weights (a run's checkpoint), not the EMA's")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    levels = tuple(float(v) for v in a.levels.split(","))
    if a.n < 2 or not all(0 < s < 1 for s in levels):
        raise SystemExit("--n must be at least 2 and every noise level in (0, 1)")
    bundle = load_bundle(a.model, device="cpu", use_ema=not a.no_ema)
    if bundle.space.kind != "latent" or bundle.diffusion.kind != "rflow":
        raise SystemExit(f"{a.model}: a {bundle.space.kind}/{bundle.diffusion.kind} model; this needs latent/rflow")
    cfg = bundle.config.sample
    steps = a.steps or cfg.steps
    started = time.perf_counter()
    train = encode_folder(bundle, a.train)
    held = encode_folder(bundle, a.held) if a.held else None
    seeds = range(a.seed, a.seed + a.n)
    from ctdiff.diffusion.sample import condition_values

    samples, level, corrected = sample_latents(
        bundle,
        list(seeds),
        steps,
        condition_values(bundle, list(seeds)),  # a conditioned model: each seed's own draw
        cfg.gaussian_start if a.gaussian_start is None else a.gaussian_start,
        spread_correction=not a.no_spread_correction,
    )
    result = measure(bundle, train, held, samples, a.axes, levels)
    result.update(
        model=str(a.model),
        weights=bundle.weights,
        sampler=cfg.sampler,
        steps=steps,
        gaussian_start=level,
        spread_correction=corrected,
        seed=a.seed,
        seconds=time.perf_counter() - started,
    )
    result["images"] = {}
    for spec in a.images:
        name, _, folder = spec.partition("=")
        result["images"][name] = image_spread(Path(folder))
    for name, c in result["cohorts"].items():
        ratio = f", {c['total_variance_ratio']:.2f}x train's" if "total_variance_ratio" in c else ""
        print(
            f"{name}: n={c['n']}, coarse variance {c['total_variance']:.2f}{ratio}; along the principal axes "
            + ", ".join(f"{v:.2f}" for v in c["axis_variance"])
        )
    for name, c in result["cohorts"].items():
        ratio = c.get("detail_energy_ratio")
        print(
            f"{name}: detail energy at "
            + "/".join(f"{2**i}x" for i in range(1, len(c["detail_energy"]) + 1))
            + " blocks "
            + ", ".join(f"{v:.4f}" for v in c["detail_energy"])
            + (" (" + ", ".join(f"{v:.2f}" for v in ratio) + "x train's)" if ratio else "")
        )
    for row in result["pc1_gain"]:
        got = ", ".join(f"{k} {row[k]:.2f}" for k in ("train", "held") if k in row)
        print(f"s={row['s']:.2f}: first-axis gain {got} (Gaussian posterior {row['gaussian']:.2f})")
    for name, r in result["images"].items():
        print(
            f"{name}: body share {r['body_fraction_mean']:.3f} (SD {r['body_fraction_sd']:.3f}), "
            f"mean HU {r['mean_hu_mean']:.1f} (SD {r['mean_hu_sd']:.1f}), n={r['n']}"
        )
    if a.json:
        a.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
