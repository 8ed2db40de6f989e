#!/usr/bin/env python3
"""Where do the decoder's reconstructions leave the phantoms' k-NN balls (issue 20)?

The tuned decoder's reconstructions of the held-out phantoms, with the noise model added, sit outside
the phantoms' radiomics k-NN balls (precision 0), though they have the phantoms' own anatomy. Two
suspects: the noise model (stationary Gaussian noise with a fitted spectrum) and the decoder's
structure (edges, air, bone, the first and last slices). A phantom cohort can be rebuilt without its
noise from its manifest's seeds (``make_phantom(..., noise_method="none")`` keeps the anatomy and
gives the tissue labels), so both suspects can be taken apart:

- ``anatomy, new phantom noise``: the noise-free phantom plus new noise of the phantoms' own kind
  (another seed). The reference: how near a generator that gets this anatomy and noise right sits.
- ``anatomy``: the noise-free phantom plus the noise model's noise. The noise model alone.
- ``decoded``: the decoder's reconstruction (no noise) plus the same noise. The ceiling, as
  ``bench_ae_ceiling.py`` measures it.
- ``decoded, REGION from the anatomy``: the reconstruction with one region's voxels taken from the
  noise-free phantom, plus the same noise. How much nearer that region's decoding error would bring
  the reconstructions.

Regions (from the phantom's labels): ``air`` (outside the body and table), ``bone`` (cortical and
trabecular, one voxel dilated), ``border`` (the first and last ``--border-slices`` axial slices),
``edges`` (voxels with another tissue among their 6 neighbours), ``fat`` (the fat classes); and
unions of them, written with ``+`` (``air+bone``).

Each cohort is scored against the held-out phantoms as ``radiomics_gap.py`` scores one: precision,
the distance to the nearest phantom ball in radius units (below 1 counts for precision) and the
median |z| of the feature gaps. The radiomics features come from the eval report's cache, so cohorts
extracted before cost nothing; about a minute per new scan on 2 cores.

    python benchmarks/decoder_attribution.py --held-out data/ph128-held \\
        --model runs/run-w1200/best-tuned-snoise.pt --work runs/attribution \\
        --regions air,border,bone --json attribution.json

The noise goes on the decoder's output as it is, without the air floor that sampling applies since
2026-12-02 (``ctdiff.model.autoencoder.add_noise``), so the air's whole share is measured.
``--errors-only`` prints and writes only the decoder's errors by region (no radiomics, no noise model
needed): how a decoder tuning changed them.

Not in eval: it needs a phantom cohort (its seeds) and an autoencoder with a noise model.
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REGIONS = ("air", "bone", "border", "edges", "fat")
FAT_CLASSES = ("subcutaneous_fat", "pelvic_fat", "intermuscular_fat")
BONE_CLASSES = ("cortical_bone", "trabecular_bone")
REFERENCE = "anatomy, new phantom noise"


def _script(name: str) -> dict:
    return runpy.run_path(str(HERE / f"{name}.py"), run_name=name)


def features(folder: Path, cache_dir: Path, workers: int) -> tuple[list[str], np.ndarray]:
    """The frd-score v1 radiomics features of a folder's scans, through the eval report's cache
    (``radiomics_gap.features``)."""
    return _script("radiomics_gap")["features"](folder, cache_dir, workers)


def region_masks(labels: np.ndarray, ids: dict[str, int], border_slices: int = 2) -> dict[str, np.ndarray]:
    """Boolean ``(x, y, z)`` masks of :data:`REGIONS` for one phantom's label map."""
    from scipy import ndimage

    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise ValueError(f"expected an (x, y, z) label map, got shape {lab.shape}")
    if not 0 < 2 * int(border_slices) < lab.shape[2]:
        raise ValueError(f"border_slices must be >= 1 and leave slices between, got {border_slices}")
    border = np.zeros(lab.shape, dtype=bool)
    border[:, :, :border_slices] = True
    border[:, :, -border_slices:] = True
    # a voxel is on an edge when a 6-neighbour has another label (the grey dilation and erosion of
    # the label map differ there); scipy has no "differs from a neighbour" filter
    cross = ndimage.generate_binary_structure(3, 1)
    edges = ndimage.grey_dilation(lab, footprint=cross) != ndimage.grey_erosion(lab, footprint=cross)
    bone = ndimage.binary_dilation(np.isin(lab, [ids[c] for c in BONE_CLASSES]), structure=cross)
    return {
        "air": lab == ids["air"],
        "bone": bone,
        "border": border,
        "edges": edges,
        "fat": np.isin(lab, [ids[c] for c in FAT_CLASSES if c in ids]),
    }


def region_errors(decoded: np.ndarray, clean: np.ndarray, masks: dict[str, np.ndarray]) -> dict:
    """The decoder's errors by region: ``decoded`` (a reconstruction without noise) against ``clean``
    (the noise-free phantom), both HU, with :func:`region_masks`' masks. The body is all but air."""
    err = decoded - clean
    air = masks["air"]
    body = ~air
    border, bone, edges = masks["border"], masks["bone"], masks["edges"]
    return {
        "air_bias_hu": float(err[air].mean()),
        "air_sd_hu": float(err[air].std()),  # of the error: the clean air is not one value
        "air_below_-1040": int((decoded[air] < -1040.0).sum()),
        "air_min_hu": float(decoded[air].min()),
        "body_mae_border_hu": float(np.abs(err[body & border]).mean()),
        "body_mae_inner_hu": float(np.abs(err[body & ~border]).mean()),
        "bone_bias_hu": float(err[bone].mean()),
        "bone_p99_recon": float(np.percentile(decoded[bone], 99)),
        "bone_p99_clean": float(np.percentile(clean[bone], 99)),
        "edges_mae_hu": float(np.abs(err[edges]).mean()),
        "nonedge_body_mae_hu": float(np.abs(err[body & ~edges]).mean()),
        "share": {k: float(m.mean()) for k, m in masks.items()},
    }


def mean_errors(cases: list[dict]) -> dict:
    """The mean of :func:`region_errors` over cases (``share`` too)."""
    keys = [k for k in cases[0] if k not in ("case", "share")]
    out = {k: float(np.mean([c[k] for c in cases])) for k in keys}
    out["share"] = {k: float(np.mean([c["share"][k] for c in cases])) for k in cases[0]["share"]}
    return out


def hybrid(decoded: np.ndarray, anatomy: np.ndarray, mask: np.ndarray | None, noise: np.ndarray, window) -> np.ndarray:
    """``decoded`` with ``mask``'s voxels from ``anatomy`` (None: none), plus ``noise``, clipped to ``window`` (HU)."""
    base = decoded if mask is None else np.where(mask, anatomy, decoded)
    return np.clip(base + noise, float(window[0]), float(window[1])).astype(np.float32)


def read_manifest(folder: Path) -> dict:
    """A ctdiff phantom cohort's ``manifest.json``; SystemExit naming it when it is not one."""
    manifest = folder / "manifest.json"
    try:
        m = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(
            f"{manifest}: not readable ({type(exc).__name__}); a ctdiff phantom cohort is needed"
        ) from None
    if m.get("kind") != "ctdiff phantom cohort" or not m.get("cases"):
        raise SystemExit(f"{manifest}: not a ctdiff phantom cohort manifest")
    return m


def noise_free_cohort(folder: Path):
    """Yield ``(name, original, noise-free Volume, labels)`` per case of a ctdiff phantom cohort.

    Raises SystemExit naming the folder or file when it is not a phantom cohort, or when the
    manifest's seeds do not give back the scans (the noise-free phantom must differ from the file by
    noise of the manifest's SD and no bias)."""
    from ctdiff.data.io import read_volume
    from ctdiff.data.phantom.cohort import make_phantom

    m = read_manifest(folder)
    sd = float(m.get("noise_hu", 0.0))
    for case in m["cases"]:
        path = folder / case["file"]
        original = read_volume(path).array
        clean, _, labels = make_phantom(
            tuple(m["shape"]),
            seed=int(case["seed"]),
            noise_hu=0.0,
            fov_mm=m["fov_mm"],
            noise_method="none",
            table=bool(m.get("table", True)),
            return_labels=True,
        )
        diff = original - clean.array
        # the files are int16: rounding adds 1/12 HU^2 of variance
        if abs(float(diff.mean())) > 1.0 or abs(float(diff.std()) - sd) > 0.1 * sd + 0.5:
            raise SystemExit(
                f"{path}: the manifest's seed does not give back this scan (difference {diff.mean():+.1f} "
                f"+- {diff.std():.1f} HU, expected noise of SD {sd:g})"
            )
        yield case["file"], original, clean, labels


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--held-out", type=Path, required=True, help="a ctdiff phantom cohort (its manifest.json)")
    p.add_argument("--model", type=Path, required=True, help="a latent checkpoint or autoencoder.pt with a noise model")
    p.add_argument(
        "--work", type=Path, required=True, help="WORK/reconstructions (reused when complete) and WORK/cohorts"
    )
    p.add_argument(
        "--regions",
        default="air,border,bone",
        help=f"comma-separated, of {','.join(REGIONS)}, or unions of them (air+bone)",
    )
    p.add_argument("--border-slices", type=int, default=2)
    p.add_argument("--cache-dir", type=Path, default=None, help="eval's feature cache (default: eval's)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument(
        "--errors-only",
        action="store_true",
        help="only the decoder's errors by region (reconstructions against the noise-free phantoms); no radiomics",
    )
    a = p.parse_args(argv)
    regions = [r for r in a.regions.split(",") if r]
    bad = [part for r in regions for part in r.split("+") if part not in REGIONS]
    if bad:
        p.error(f"--regions: unknown {', '.join(bad)} (choose from {', '.join(REGIONS)})")
    torch.set_num_threads(max(1, a.workers))
    ceiling, gap = _script("bench_ae_ceiling"), _script("radiomics_gap")
    from ctdiff.data.io import case_name, read_volume, write_nifti
    from ctdiff.data.phantom.noise import correlated_noise
    from ctdiff.data.volume import Volume
    from ctdiff.model import noise_resynthesis
    from eval.report.cache import default_cache_dir

    manifest = read_manifest(a.held_out)  # before any work: a folder that is not a phantom cohort ends here
    ids = ids_of(manifest)
    record, facts = ceiling["load_record"](a.model)
    noise_model = record.get("noise_model")
    if noise_model is None and not a.errors_only:  # the errors are of the decoder alone
        raise SystemExit(f"{a.model}: its autoencoder has no noise model (run 'python -m ctdiff fit-noise')")
    window = record["config"]["hu_window"]
    scans = sorted(a.held_out.glob("case_*.nii*"))
    decoded_dir = a.work / "reconstructions"
    t0 = time.perf_counter()
    if sorted(p.name for p in decoded_dir.glob("*.nii.gz")) != [f"{case_name(s)}.nii.gz" for s in scans]:
        ceiling["reconstruct"](record, scans, decoded_dir, noise=False)
    decode_s = time.perf_counter() - t0
    reference = manifest.get("noise_method") == "correlated" and float(manifest.get("noise_hu", 0)) > 0
    cohorts = {
        **({REFERENCE: None} if reference else {}),
        "anatomy": None,
        "decoded": None,
        **{f"decoded, {r} from the anatomy": r for r in regions},
    }
    folders = {name: a.work / "cohorts" / name.replace(", ", "_").replace(" ", "-") for name in cohorts}
    for folder in [] if a.errors_only else folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    errors = []
    for i, (name, _, clean, labels) in enumerate(noise_free_cohort(a.held_out)):
        decoded = read_volume(decoded_dir / name).array
        masks = region_masks(labels, ids, a.border_slices)
        errors.append({"case": name, **region_errors(decoded, clean.array, masks)})
        if a.errors_only:
            continue
        # noise of volume i as the ceiling adds it: drawn in (z, y, x), seed i
        z, y, x = decoded.shape[::-1]
        noise = noise_resynthesis.synthesize(noise_model, (z, y, x), noise_resynthesis.noise_generator(i))
        noise = noise.numpy().transpose(2, 1, 0)
        for region in regions:
            if region not in masks:  # a union
                masks[region] = np.logical_or.reduce([masks[part] for part in region.split("+")])
        for cohort, region in cohorts.items():
            if cohort == REFERENCE:  # the phantom's own noise model, drawn anew (seed 1000 + i)
                fresh = correlated_noise(
                    clean.array.shape, clean.spacing, float(manifest["noise_hu"]), np.random.default_rng(1000 + i)
                )
                write_nifti(Volume(clean.array + fresh, clean.affine), folders[cohort] / name, force=True)
                continue
            base = clean.array if cohort == "anatomy" else decoded
            vol = hybrid(base, clean.array, None if region is None else masks[region], noise, window)
            write_nifti(Volume(vol, clean.affine), folders[cohort] / name, force=True)
    summary = mean_errors(errors)
    print("the decoder's errors by region (means over the cases):")
    for k, v in summary.items():
        if k != "share":
            print(f"  {k:22s} {v:9.2f}")
    decoder_errors = {
        "what": "reconstructions without noise against the noise-free phantoms; region masks of region_masks "
        f"(border: {a.border_slices} slices each end)",
        "summary": summary,
        "cases": errors,
    }
    if a.errors_only:
        if a.json:
            a.json.write_text(
                json.dumps({"model": str(a.model), **facts, "decoder_errors_by_region": decoder_errors}, indent=1)
                + "\n"
            )
        return 0
    cache = a.cache_dir or default_cache_dir()
    names, real = features(a.held_out, cache, a.workers)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "held_out": str(a.held_out),
        "model": str(a.model),
        **facts,
        "noise_sd_hu": noise_model.get("sd_hu"),
        "decode_s": round(decode_s, 1),
        "decoder_errors_by_region": decoder_errors,
        "cohorts": {},
    }
    print(f"{'cohort':40s} precision  to the nearest phantom ball (median, range)  median |z|")
    for cohort in cohorts:
        cnames, x = features(folders[cohort], cache, a.workers)
        if cnames != names:
            raise SystemExit(f"{folders[cohort]}: its feature names differ from the held-out scans'")
        m, g = gap["manifold"](real, x), gap["gap"](names, real, x, 10)
        result["cohorts"][cohort] = {"folder": str(folders[cohort]), "manifold": m, "gap": g}
        r = m["generated_ratio"]
        print(
            f"{cohort:40s} {m['precision']:9.2f}  {m['generated_ratio_median']:.2f}x ({min(r):.2f}-{max(r):.2f})"
            f"{'':22s}{g['median_abs_z']:.2f}",
            flush=True,
        )
    if a.json:
        a.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def ids_of(manifest: dict) -> dict[str, int]:
    """The label ids a phantom cohort's manifest names (``labels``), or the phantom's own."""
    labels = manifest.get("labels")
    if labels:
        return {str(k): int(v) for k, v in labels.items()}
    from ctdiff.data.phantom.anatomy import LABELS

    return dict(LABELS)


if __name__ == "__main__":
    sys.exit(main())
