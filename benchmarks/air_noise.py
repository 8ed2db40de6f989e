#!/usr/bin/env python
"""Prototype (issue 20): the noise model's amplitude by intensity class, air apart from the body.

The noise model (``ctdiff.model.noise_resynthesis``) adds stationary noise whose spectrum it measures
in soft-tissue ROIs: what the decoder drops *there*. A decoder that keeps a noise-like texture in
soft tissue but decodes air flat (an autoencoder trained at a higher learning rate, tuned on whole
volumes: docs/benchmarks.md, "A faster-trained autoencoder") then gets too little noise in the air,
13.6 HU against the phantoms' 20, and air is 58 % of a phantom's voxels.

This script takes noise-free decoded samples (``ctdiff sample --no-noise``), floors them at air
(-1000 HU, as ``add_noise`` does), adds the checkpoint's noise model (volume i: seed 1000 + i), and a
second draw of the same model scaled per voxel by the decoded intensity: in air (decoded below
-950 HU, a linear ramp to -850) so that the air's noise SD reaches ``--air-sd`` (the training
phantoms' air: 20.0 HU), and in the body by ``--body-extra-sd`` HU (added in quadrature).

    python -m ctdiff sample --checkpoint RUN/best-snoise.pt --n 12 --seed 1000 --no-noise --out CLEAN
    python benchmarks/air_noise.py --checkpoint RUN/best-snoise.pt --clean CLEAN --out NOISY \\
        --air-sd 20 --body-extra-sd 5.5 --json air-noise.json
    python benchmarks/radiomics_gap.py --real data/ph128-held --cohort air=NOISY

Written by hand: no library models CT noise whose amplitude depends on the decoded intensity; the
noise itself is ``noise_resynthesis.synthesize``'s.
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
AIR_FULL, AIR_NONE = -950.0, -850.0  # air weight 1 below AIR_FULL, 0 above AIR_NONE, linear between


def air_weight(decoded: np.ndarray) -> np.ndarray:
    """1 where the decoded estimate is air, 0 in the body, a linear ramp at the border."""
    return np.clip((AIR_NONE - decoded) / (AIR_NONE - AIR_FULL), 0.0, 1.0)


def air_mask(decoded: np.ndarray) -> np.ndarray:
    """Air far from the body (4 voxels eroded), where the air's noise SD is measured."""
    from scipy import ndimage

    return ndimage.binary_erosion(air_weight(decoded) >= 1.0, iterations=4)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="a latent checkpoint with a noise model")
    p.add_argument("--clean", type=Path, required=True, help="noise-free decoded samples (sample --no-noise)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--air-sd", type=float, required=True, help="target noise SD in air (HU)")
    p.add_argument("--body-extra-sd", type=float, default=0.0, help="extra noise SD in the body (HU)")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    if not (np.isfinite(a.air_sd) and a.air_sd > 0 and np.isfinite(a.body_extra_sd) and a.body_extra_sd >= 0):
        p.error("--air-sd must be > 0 and --body-extra-sd >= 0 (finite)")

    import nibabel as nib

    from ctdiff.model import noise_resynthesis as nr
    from ctdiff.model.checkpoint import load_checkpoint

    model = ((load_checkpoint(a.checkpoint).get("space") or {}).get("autoencoder") or {}).get("noise_model")
    if model is None:
        raise SystemExit(f"air_noise: {a.checkpoint}: no noise model (run 'python -m ctdiff fit-noise')")
    if model.get("format") == nr.CLASS_FORMAT:
        raise SystemExit(
            f"air_noise: {a.checkpoint}: a per-class noise model (fit-noise --per-class) already gives the air "
            "its own noise; this prototype takes a stationary one"
        )
    files = sorted(a.clean.glob("*.nii.gz"))
    if not files:
        raise SystemExit(f"air_noise: {a.clean}: no .nii.gz files")

    def noise(shape, seed: int) -> np.ndarray:  # NIfTI arrays are (x, y, z); the model draws (z, y, x)
        return nr.synthesize(model, shape[::-1], nr.noise_generator(seed)).numpy().transpose(2, 1, 0)

    volumes = [(f, nib.load(f)) for f in files]
    decoded = [np.maximum(img.get_fdata(dtype=np.float32), AIR_HU) for _, img in volumes]
    # the air's noise SD with the noise model alone, then the second draw's scale that reaches the target
    air_now = float(np.mean([(d + noise(d.shape, 1000 + i))[air_mask(d)].std() for i, d in enumerate(decoded)]))
    model_sd = float(noise(decoded[-1].shape, 5).std())  # the model's SD, one draw (seed 5)
    air_scale = float(np.sqrt(max(a.air_sd**2 - air_now**2, 0.0)) / model_sd)
    body_scale = a.body_extra_sd / model_sd
    a.out.mkdir(parents=True, exist_ok=True)
    air_after = []
    for i, ((f, img), d) in enumerate(zip(volumes, decoded)):
        w = air_weight(d)
        x = d + noise(d.shape, 1000 + i) + (air_scale * w + body_scale * (1.0 - w)) * noise(d.shape, 50000 + i)
        air_after.append(float(x[air_mask(d)].std()))
        nib.save(nib.Nifti1Image(x.astype(np.float32), img.affine), a.out / f.name)
    result = {
        "checkpoint": str(a.checkpoint),
        "n": len(files),
        "noise_model_sd_hu": model_sd,
        "air_sd_noise_model_only_hu": air_now,
        "air_sd_target_hu": a.air_sd,
        "air_sd_after_hu": float(np.mean(air_after)),
        "air_scale": air_scale,
        "body_extra_sd_hu": a.body_extra_sd,
    }
    print(json.dumps(result))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
