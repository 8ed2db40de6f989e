#!/usr/bin/env python3
"""The latent space's ceiling with the stationary and the per-class noise model (issue 20).

Reconstructs (encode, decode, no diffusion) up to 8 training scans and the held-out scans through a
latent checkpoint's autoencoder, fits both noise models on the training pairs (paired:
``noise_resynthesis.fit`` and ``noise_resynthesis.fit_classes``), adds each to the held-out
reconstructions (floored at air, scan i drawn from noise seed 1000 + i, as ``add_noise`` does) and
scores the two cohorts against the held-out scans as ``radiomics_gap.py`` does: how far outside the
scans' k-NN balls the reconstructions lie, with their own anatomy. Resumable: reconstructions and
cohorts already written are kept; radiomics features come from eval's feature cache.

    python benchmarks/noise_classes.py --checkpoint runs/lr5/checkpoints/best.pt \\
        --train data/ph128-train --held-out data/ph128-held --work runs/noise-classes \\
        --cache-dir ~/.cache/ctdiff/features --json noise-classes.json
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _zyx(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from ctdiff.data.io import read_volume

    vol = read_volume(path)
    return np.asarray(vol.array, dtype=np.float64).transpose(2, 1, 0), vol.affine


def cohorts(checkpoint: Path, train: Path, held_out: Path, work: Path) -> tuple[dict, dict]:
    """Reconstruct, fit both models on the training pairs and write the held-out reconstructions plus
    each model's noise; returns ``({label: folder}, {label: model})``. Files already there are kept."""
    from ctdiff.data.io import write_nifti
    from ctdiff.data.volume import Volume
    from ctdiff.model import noise_resynthesis as nr

    bench = runpy.run_path(str(REPO / "benchmarks" / "bench_ae_ceiling.py"))
    record, _ = bench["load_record"](checkpoint)
    train_scans = sorted(train.glob("*.nii.gz"))[: nr.MAX_VOLUMES]
    held = sorted(held_out.glob("*.nii.gz"))
    for name, scans in (("recon-train", train_scans), ("recon-held", held)):
        if not all((work / name / s.name).exists() for s in scans):
            bench["reconstruct"](record, scans, work / name, noise=False)
    originals = [_zyx(s)[0] for s in train_scans]
    recons = [np.maximum(_zyx(work / "recon-train" / s.name)[0], -1000.0) for s in train_scans]
    models = {
        "stationary": nr.fit(list(zip(originals, recons))),
        "per-class": nr.fit_classes(originals, recons, paired=True),
    }
    folders = {}
    for label, model in models.items():
        folder = folders[label] = work / label
        folder.mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(held):
            if (folder / s.name).exists():
                continue
            decoded, affine = _zyx(work / "recon-held" / s.name)
            decoded = np.maximum(decoded, -1000.0)  # the air floor, as add_noise
            noisy = decoded + nr.noise_for(model, decoded, nr.noise_generator(1000 + i)).numpy()
            write_nifti(Volume(noisy.astype(np.float32).transpose(2, 1, 0), affine), folder / s.name)
    return folders, models


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="a latent checkpoint (or autoencoder.pt)")
    p.add_argument("--train", type=Path, required=True, help="training scans (the first 8 fit the models)")
    p.add_argument("--held-out", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    gap = runpy.run_path(str(REPO / "benchmarks" / "radiomics_gap.py"))
    folders, models = cohorts(a.checkpoint, a.train, a.held_out, a.work)
    out = {"checkpoint": str(a.checkpoint), "held_out": str(a.held_out), "models": {}, "cohorts": {}}
    cache = a.cache_dir
    if cache is None:
        from eval.report.cache import default_cache_dir

        cache = default_cache_dir()
    names, real = gap["features"](a.held_out, cache, a.workers)
    for label, folder in folders.items():
        _, x = gap["features"](folder, cache, a.workers)
        r, m = gap["gap"](names, real, x), gap["manifold"](real, x)
        out["models"][label] = {k: v for k, v in models[label].items() if k != "fitted_on"}
        out["cohorts"][label] = {"folder": str(folder), **r, "manifold": m}
        print(
            f"{label}: nearest real ball at {m['generated_ratio_median']:.2f}x its radius (median, range "
            f"{min(m['generated_ratio']):.2f}-{max(m['generated_ratio']):.2f}), precision {m['precision']:.2f}, "
            f"recall {m['recall']:.2f}; median |z| {r['median_abs_z']:.2f}"
        )
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
