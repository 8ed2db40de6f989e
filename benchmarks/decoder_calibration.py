#!/usr/bin/env python3
"""Post-hoc corrections of a latent model's decoded estimate, fitted on its training data (issue 20).

The demo's samples are short of the phantoms' soft-tissue/fat contrast (CNR 5.08 against the real
CI [5.19, 5.70]) and their soft tissue's mean HU jumps from slice to slice in the same places as the
decoder's reconstructions of the training phantoms do (docs/benchmarks.md, "Slice banding"). This
benchmark asks whether a correction of the decoded (noise-free) estimate, fitted on the training
volumes only, fixes either. Each variant maps the estimate, then gets its own noise model fitted
against the mapped samples (``noise_resynthesis.fit_unpaired``, as ``fit-noise --samples`` does), and
writes ``--n`` samples (seeds ``--seed``.., the same latents for every variant) under ``OUT/VARIANT``:

- ``shipped``: the model as it is (its own noise model); the cohort ``ctdiff sample --z-margin``
  writes with the same margin (``--z-margin``, default 0: the demo model's sampling when measured);
- ``identity``: no map, the noise model refitted (the control for the refit);
- ``global``: E[original HU | reconstructed HU] over all training voxels, by scikit-learn's
  isotonic regression of the originals on the reconstructions (monotone, least squares);
- ``per-slice``: the same, one isotonic map per axial slice (for the training depth only);
- ``linear``: a 3 x 5 x 5 linear filter plus offset, least squares over body voxels (scipy applies it).

    python benchmarks/decoder_calibration.py --model ctdiff_app/demo/assets/model.pt \\
        --train-data data/ph128-train --n 12 --seed 1000 --out runs/calibration
    python -m eval report --real data/ph128-held --generated runs/calibration/per-slice --out rep-ps \\
        --metrics intensity,noise_sd
    python benchmarks/radiomics_gap.py --real data/ph128-held --cohort ps=runs/calibration/per-slice

None of them is a ``ctdiff`` option: on the demo model none brought the CNR inside the real CI
(docs/benchmarks.md, "Slice banding, and corrections of the decoded estimate").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

VARIANTS = ("shipped", "identity", "global", "per-slice", "linear")
GRID_STEP_HU = 2.0  # the isotonic maps are stored as lookup tables on this HU grid
MAX_FIT_VOXELS = 3_000_000  # voxels the global map is fitted on (a seeded random subset)
KERNEL = (1, 2, 2)  # half-widths (z, y, x) of the linear filter


def fit_isotonic(rec: np.ndarray, orig: np.ndarray, grid: np.ndarray, n: int, rng) -> np.ndarray:
    """E[orig | rec] on ``grid`` (scikit-learn isotonic regression on up to ``n`` random voxel pairs)."""
    from sklearn.isotonic import IsotonicRegression

    r, o = rec.ravel(), orig.ravel()
    i = rng.choice(r.size, min(r.size, n), replace=False)
    return IsotonicRegression(out_of_bounds="clip").fit(r[i], o[i]).predict(grid)


def fit_linear(rec: np.ndarray, orig: np.ndarray, per_volume: int, rng) -> tuple[np.ndarray, float]:
    """A (3, 5, 5) correlation kernel and an offset minimising the squared error on body voxels."""
    from scipy import ndimage

    offs = [(a, b, c) for a in range(-KERNEL[0], KERNEL[0] + 1) for b in range(-KERNEL[1], KERNEL[1] + 1)
            for c in range(-KERNEL[2], KERNEL[2] + 1)]  # fmt: skip
    rows, target = [], []
    for r, o in zip(rec, orig):
        body = ndimage.gaussian_filter(o, 1.0) > -500.0
        inner = np.zeros_like(body)
        inner[KERNEL[0] : -KERNEL[0], KERNEL[1] : -KERNEL[1], KERNEL[2] : -KERNEL[2]] = True
        idx = np.argwhere(body & inner)
        idx = idx[rng.choice(len(idx), min(len(idx), per_volume), replace=False)]
        rows.append(np.stack([r[idx[:, 0] + a, idx[:, 1] + b, idx[:, 2] + c] for a, b, c in offs], 1))
        target.append(o[tuple(idx.T)])
    x = np.concatenate([np.concatenate(rows), np.ones((sum(len(t) for t in target), 1))], 1)
    w, *_ = np.linalg.lstsq(x, np.concatenate(target), rcond=None)
    return w[:-1].reshape([2 * k + 1 for k in KERNEL]), float(w[-1])


def make_maps(variants, rec: np.ndarray, orig: np.ndarray, window, seed: int = 0) -> dict:
    """``{variant: fn(estimate (z, y, x) HU) -> HU}`` fitted on the training pairs ``rec``/``orig``
    (``(n, z, y, x)`` HU), with a JSON-able summary of each under ``"summary"``."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    grid = np.arange(window[0], window[1] + GRID_STEP_HU, GRID_STEP_HU)
    maps, summary = {}, {}
    for v in variants:
        if v in ("shipped", "identity"):
            maps[v] = lambda e: e
        elif v == "global":
            table = fit_isotonic(rec, orig, grid, MAX_FIT_VOXELS, rng)
            maps[v] = lambda e, t=table: np.interp(e, grid, t)
            summary[v] = {h: round(float(np.interp(h, grid, table)), 1) for h in (-900, -86, -50, 0, 40, 100, 600)}
        elif v == "per-slice":
            tables = np.stack([fit_isotonic(rec[:, k], orig[:, k], grid, 200_000, rng) for k in range(rec.shape[1])])

            def per_slice(e, t=tables):
                if e.shape[0] != len(t):
                    raise ValueError(f"per-slice maps for {len(t)} slices, estimate has {e.shape[0]}")
                return np.stack([np.interp(e[k], grid, t[k]) for k in range(len(t))])

            maps[v] = per_slice
            at40 = [float(np.interp(40.0, grid, t)) for t in tables]
            summary[v] = {"40_hu_maps_to_min": round(min(at40), 1), "40_hu_maps_to_max": round(max(at40), 1)}
        elif v == "linear":
            kernel, offset = fit_linear(rec, orig, 40_000, rng)
            maps[v] = lambda e, k=kernel, c=offset: ndimage.correlate(e, k, mode="nearest") + c
            summary[v] = {"kernel_sum": float(kernel.sum()), "centre": float(kernel[KERNEL]), "offset_hu": offset}
        else:
            raise ValueError(f"unknown variant {v!r}; known: {', '.join(VARIANTS)}")
    maps["summary"] = summary
    return maps


def soft_tissue_profile(volumes, masks_from=None) -> list[float]:
    """Mean over volumes of each axial slice's mean soft-tissue HU; ``(z, y, x)`` HU volumes, the
    soft tissue found (as the eval report finds it) in ``masks_from`` (default: the volumes themselves)."""
    from ctdiff.data.body import body_mask
    from eval.metrics import intensity

    rows = []
    for i, v in enumerate(volumes):
        src = (v if masks_from is None else masks_from[i]).transpose(2, 1, 0)  # (x, y, z), as eval reads
        mask = intensity.tissue_masks(src, body_mask(src))["soft_tissue"]
        rows.append(intensity.slice_means(v.transpose(2, 1, 0), mask))
    return [round(float(x), 2) for x in np.nanmean(np.stack(rows), axis=0)]


def run(model, train_data, out, n, seed, fit_samples, fit_seed, variants, force=False, steps=None, z_margin=0) -> dict:
    import torch

    from ctdiff.config import DataConfig
    from ctdiff.data.dataset import dataset_files, load_cases
    from ctdiff.data.tensors import hu_to_model, model_to_hu
    from ctdiff.data.volume import Volume
    from ctdiff.diffusion.sample import load_bundle, sample, sample_meta, write_samples
    from ctdiff.model import noise_resynthesis
    from ctdiff.model.autoencoder import add_noise, reconstruct

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise SystemExit(f"decoder_calibration: unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    out = Path(out)
    if out.exists() and not force:
        raise SystemExit(f"decoder_calibration: {out} exists; pass --force to replace it")
    bundle = load_bundle(model, device="cpu")
    if bundle.space.kind != "latent" or bundle.space.noise_model is None:
        raise SystemExit(f"decoder_calibration: {model} is not a latent model with a noise model")
    sp, window = bundle.space, bundle.space.ae_config.hu_window
    files = dataset_files(train_data)
    if not files:
        raise SystemExit(f"decoder_calibration: no volumes in {train_data}")
    rec, orig = [], []
    with torch.no_grad():
        for v in load_cases(files, DataConfig(hu_window=window)).tensors:
            y = reconstruct(sp.ae, v[None].float(), sp.ae_config.downsampling, sp.tile).clamp(-1.0, 1.0)
            rec.append(model_to_hu(y, window)[0, 0].numpy())
            orig.append(model_to_hu(v, window)[0].numpy())
    rec, orig = np.stack(rec), np.stack(orig)
    flipped = []  # the same volumes upside down along z, reconstructed, turned back
    with torch.no_grad():
        for o in orig:
            x = hu_to_model(torch.from_numpy(np.ascontiguousarray(o[::-1], dtype=np.float32)), window)[None, None]
            y = reconstruct(sp.ae, x, sp.ae_config.downsampling, sp.tile).clamp(-1.0, 1.0)
            flipped.append(model_to_hu(y, window)[0, 0].numpy()[::-1])
    steps, sampler = steps or bundle.config.sample.steps, bundle.config.sample.sampler

    def estimates(count, first):  # noise-free decoded samples, (z, y, x) HU
        vols = sample(bundle, count, sampler=sampler, steps=steps, seed=first, noise=False, z_margin=z_margin)
        return [np.ascontiguousarray(v.array.transpose(2, 1, 0)) for v in vols]

    fit_est, eval_est = estimates(fit_samples, fit_seed), estimates(n, seed)
    maps = make_maps(variants, rec, orig, window)
    profiles = {  # soft tissue's mean HU per slice; where the phantoms' own soft tissue is, or the samples' own
        "training phantoms": soft_tissue_profile(orig),
        "their reconstructions (phantoms' soft tissue)": soft_tissue_profile(rec, orig),
        "reconstructed upside down, turned back (phantoms' soft tissue)": soft_tissue_profile(flipped, orig),
        "samples, noise-free (their own soft tissue)": soft_tissue_profile(eval_est),
    }
    originals = list(orig[: noise_resynthesis.MAX_VOLUMES])
    result = {
        "model": str(model),
        "train_data": str(train_data),
        "seed": seed,
        "n": n,
        "fit_samples": fit_samples,
        "fit_seed": fit_seed,
        "sampler": sampler,
        "steps": steps,
        "z_margin": z_margin,
        "maps": maps["summary"],
        "noise": {},
        "soft_tissue_by_slice": profiles,
    }
    for v in variants:
        f = maps[v]
        if v == "shipped":
            nm = sp.noise_model
        else:
            nm = noise_resynthesis.fit_unpaired(originals, [np.maximum(f(e), -1000.0) for e in fit_est])
        result["noise"][v] = {k: nm.get(k) for k in ("sd_hu", "original_sd_hu", "decoded_sd_hu")}
        vols = []
        for s, e in zip(range(seed, seed + n), eval_est):
            y = add_noise(hu_to_model(torch.from_numpy(f(e).astype(np.float32))[None, None], window), nm, window, [s])
            hu = model_to_hu(y, window)[0, 0].numpy().transpose(2, 1, 0)
            meta = {**sample_meta(bundle, sampler, steps, s, 0.0, True, z_margin), "decoder_calibration": v}
            vols.append(Volume(np.ascontiguousarray(hu), bundle.affine, meta))
        write_samples(vols, out / v, info={"decoder_calibration": v}, force=force)
    (out / "calibration.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a latent checkpoint with a noise model (e.g. the demo's model.pt)")
    p.add_argument("--train-data", required=True, help="the model's training volumes (the maps are fitted on them)")
    p.add_argument("--out", required=True, help="a new folder: one sample cohort per variant, calibration.json")
    p.add_argument("--n", type=int, default=12, help="samples per variant (default 12)")
    p.add_argument("--seed", type=int, default=1000, help="first seed of those samples (default 1000)")
    p.add_argument("--fit-samples", type=int, default=16, help="samples the noise models are refitted on")
    p.add_argument("--fit-seed", type=int, default=100_000, help="first seed of those (default 100000)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    p.add_argument("--steps", type=int, help="sampler steps (default: the model's own)")
    p.add_argument(
        "--z-margin",
        type=int,
        default=0,
        help="as ctdiff sample --z-margin (default 0, as measured: the demo model's own default is 16 since)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--force", action="store_true", help="replace the cohorts under an existing --out")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    if a.n < 2 or a.fit_samples < 1:
        raise SystemExit("decoder_calibration: --n must be >= 2 and --fit-samples >= 1")
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    result = run(
        a.model, a.train_data, a.out, a.n, a.seed, a.fit_samples, a.fit_seed, variants, a.force, a.steps, a.z_margin
    )
    print(json.dumps({"maps": result["maps"], "noise": result["noise"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
