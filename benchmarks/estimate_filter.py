#!/usr/bin/env python
"""Prototype (issue 20): filter the decoded noise-free estimate before the noise model's noise.

A latent model's sample is the decoder's noise-free estimate plus the noise model's noise
(``ctdiff.model.noise_resynthesis``), fitted as what the estimate lacks against the training scans.
The decoder leaves a texture of its own in the estimate (about 9-10 HU in soft tissue), and the
finest wavelet band's texture features are what sets the demo's samples furthest from the phantoms
(``radiomics_gap.py``: wavelet-HHH GLCM). This script replaces that texture by the noise model's:
it draws the model's samples without noise (``sample(..., noise=False)``), floors them at air
(-1000 HU, as ``add_noise`` does), filters each axial slice (a median, which keeps edges, or a
Gaussian), refits the unpaired stationary noise model on ``--fit-n`` filtered samples against the
training volumes (as ``fit-noise --samples`` does), and adds its noise to ``--n`` filtered samples
(volume i: seed ``--seed`` + i, the noise from the same seed, as ``ctdiff sample`` seeds it).
Variant ``none`` skips the filter: it reproduces ``ctdiff sample`` of a ``fit-noise --samples``
model (to 1 HU of int16 rounding), the control.

    python benchmarks/estimate_filter.py --model ctdiff_app/demo/assets/model.pt --train data/ph128-train \\
        --variants none,median3,gauss0.7 --out runs/estimate-filter --json estimate-filter.json
    python benchmarks/radiomics_gap.py --real data/ph128-held --cohort median3=runs/estimate-filter/median3

Written by hand: the filters are scipy's; what is new is only where they sit (between the decoder
and the noise) and the refit of the noise model after them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

AIR_HU = -1000.0


def apply_filter(hu: np.ndarray, variant: str) -> np.ndarray:
    """``hu`` ((x, y, z), HU) floored at air, then filtered in each axial slice: ``none``,
    ``medianK`` (K x K median) or ``gaussS`` (Gaussian of S voxels)."""
    from scipy import ndimage

    a = np.maximum(np.asarray(hu, np.float64), AIR_HU)
    if variant == "none":
        return a
    if variant.startswith("median"):
        k = int(variant[len("median") :])
        return ndimage.median_filter(a, size=(k, k, 1), mode="nearest")
    if variant.startswith("gauss"):
        s = float(variant[len("gauss") :])
        return ndimage.gaussian_filter(a, sigma=(s, s, 0), mode="nearest")
    raise ValueError(f"unknown variant {variant!r} (none, medianK, gaussS)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="a latent checkpoint")
    p.add_argument("--train", type=Path, required=True, help="the training volumes (the noise model's target)")
    p.add_argument("--variants", default="none,median3", help="comma-separated: none, medianK, gaussS")
    p.add_argument("--out", type=Path, required=True, help="one folder of NIfTI per variant")
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--fit-n", type=int, default=8, help="samples the noise model is fitted on")
    p.add_argument("--fit-seed", type=int, default=100000, help="first seed of those (fit-noise's default)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the checkpoint's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    import torch

    from ctdiff.data.dataset import dataset_files
    from ctdiff.data.io import read_volume, write_nifti
    from ctdiff.data.volume import Volume
    from ctdiff.diffusion.sample import load_bundle, sample
    from ctdiff.model import noise_resynthesis as nr

    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        apply_filter(np.zeros((4, 4, 2)), v)  # an unknown variant fails before the sampling
    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.model, device="cpu")
    cfg = bundle.config.sample
    kw = {
        "sampler": cfg.sampler,
        "steps": args.steps or cfg.steps,
        "noise": False,
        "z_margin": cfg.z_margin,
        "decode_z_pad": cfg.decode_z_pad,
    }
    fit_vols = sample(bundle, args.fit_n, seed=args.fit_seed, **kw)
    eval_vols = sample(bundle, args.n, seed=args.seed, **kw)
    files = dataset_files(args.train)[: nr.MAX_VOLUMES]
    train = [np.asarray(read_volume(f).array, np.float64).transpose(2, 1, 0) for f in files]
    result = {"model": str(args.model), "sampling": kw, "variants": {}}
    for v in variants:
        decoded = [apply_filter(x.array, v).transpose(2, 1, 0) for x in fit_vols]
        model = nr.fit_unpaired(train, decoded)
        folder = args.out / v
        folder.mkdir(parents=True, exist_ok=True)
        removed = []
        for i, x in enumerate(eval_vols):
            floored = apply_filter(x.array, "none")
            est = apply_filter(x.array, v)
            removed.append(float(np.std(floored - est)))
            noise = nr.noise_for(
                model, torch.from_numpy(est.transpose(2, 1, 0)).float(), nr.noise_generator(args.seed + i)
            )
            hu = est + noise.numpy().transpose(2, 1, 0)
            write_nifti(Volume(hu.astype(np.float32), x.affine, {}), folder / f"case_{i:03d}.nii.gz")
        result["variants"][v] = {
            "noise_sd_hu": model["sd_hu"],
            "filter_removed_sd_hu": float(np.mean(removed)),
            "folder": str(folder),
            "noise_model": model,
        }
        print(v, json.dumps({k: w for k, w in result["variants"][v].items() if k != "noise_model"}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
