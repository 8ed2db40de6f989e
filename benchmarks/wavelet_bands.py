#!/usr/bin/env python3
"""Where in the volume do a cohort's wavelet bands differ from the real scans' (issue 20)?

``radiomics_gap.py`` says which frd-score features are far (on the demo's samples, the mixed wavelet
bands: ``wavelet-LHH`` kurtosis and GLCM cluster prominence, ``wavelet-HHL`` run variance). This
script says where in the volume those bands' extremes sit. It builds the wavelet images exactly as
frd-score v1 hands them to pyradiomics (the image normalised, x 100, resampled to 2 mm with a
B-spline, one level of ``coif1`` stationary wavelet: ``radiomics.imageoperations``) and reports
per band and cohort (mean over scans):

- ``sd`` and ``kurtosis`` of the whole band, and ``kurtosis_inner`` without the 4 resampled slices
  at each end;
- ``end_sd`` and ``inner_sd``: the band's SD over the last 2 resampled slices (where the stationary
  wavelet's periodic extension sets the last slice against the first) and over the inner slices;
- ``top_rows``: where along y (anterior-posterior, 8 bins) the band's 0.1 % largest |values| lie,
  inner slices only.

and per scan, in HU on the original grid: ``ring_sd``, the SD of the outermost in-plane ring of
voxels, and ``ring2_sd``, the next ring's (a decoder's zero padding shows up in the first); and
``edge_p99``, the 99th percentile of |the difference between neighbouring voxels| along x, y and z
over all but the first and last 4 slices: how sharp edges are along each axis (anatomy that
starts or ends between two slices shows in z).

    python benchmarks/wavelet_bands.py --real data/ph128-held --cohort demo=ctdiff_app/demo/assets/samples \\
        --json bands.json

Not in eval: a diagnostic for whoever trains the generator, with no CI or floor of its own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

END_SLICES = 2  # resampled slices at the end that the periodic extension sets against the first
INNER_MARGIN = 4  # resampled slices left out at each end for the inner statistics
ROW_BINS = 8
TOP_SHARE = 0.001


def wavelet_images(path: Path) -> dict[str, np.ndarray]:
    """pyradiomics' wavelet images of ``path`` under frd-score v1's settings, as (z, y, x) arrays.

    frd-score's extractor does the same steps inside ``execute``; they are called one by one here
    because it returns features, not images."""
    import SimpleITK as sitk
    from radiomics import imageoperations

    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    mask = sitk.GetImageFromArray(np.ones(sitk.GetArrayViewFromImage(image).shape, np.uint8))
    mask.CopyInformation(image)
    image = imageoperations.normalizeImage(image, scale=100)
    image, mask = imageoperations.resampleImage(
        image, mask, resampledPixelSpacing=[2, 2, 2], interpolator=sitk.sitkBSpline, padDistance=10
    )
    return {name: sitk.GetArrayFromImage(im) for im, name, _ in imageoperations.getWaveletImage(image, mask)}


def band_stats(band: np.ndarray) -> dict[str, float | list[int]]:
    """The statistics above for one (z, y, x) band."""
    from scipy import stats

    inner = band[INNER_MARGIN:-INNER_MARGIN] if band.shape[0] > 2 * INNER_MARGIN + 1 else band
    a = np.abs(inner)
    top = np.argwhere(a > np.quantile(a, 1.0 - TOP_SHARE))
    rows = np.histogram(top[:, 1], bins=ROW_BINS, range=(0, inner.shape[1]))[0] if top.size else np.zeros(ROW_BINS)
    return {
        "sd": float(band.std()),
        "kurtosis": float(stats.kurtosis(band.ravel())),
        "kurtosis_inner": float(stats.kurtosis(inner.ravel())),
        "end_sd": float(band[-END_SLICES:].std()),
        "inner_sd": float(inner.std()),
        "top_rows": [int(r) for r in rows],
    }


def ring_sd(array: np.ndarray) -> tuple[float, float]:
    """SD of the outermost in-plane ring of an (x, y, z) array, and of the ring inside it."""

    def ring(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a[0].ravel(), a[-1].ravel(), a[1:-1, 0].ravel(), a[1:-1, -1].ravel()])

    return float(ring(array).std()), float(ring(array[1:-1, 1:-1]).std())


def edge_p99(array: np.ndarray, margin: int = 4) -> list[float]:
    """99th percentile of |neighbour differences| along x, y, z of an (x, y, z) array, end slices left out."""
    a = array[..., margin:-margin] if array.shape[2] > 2 * margin + 1 else array
    return [float(np.quantile(np.abs(np.diff(a, axis=k)), 0.99)) for k in range(3)]


def cohort(folder: Path, limit: int | None = None) -> dict:
    import nibabel as nib

    paths = sorted(p for p in folder.iterdir() if p.name.endswith((".nii", ".nii.gz")))[:limit]
    if not paths:
        raise SystemExit(f"{folder}: no NIfTI scans")
    per_band: dict[str, list[dict]] = {}
    rings, edges = [], []
    for p in paths:
        for name, band in wavelet_images(p).items():
            per_band.setdefault(name, []).append(band_stats(band))
        hu = np.asarray(nib.load(p).dataobj, dtype=np.float32)
        rings.append(ring_sd(hu))
        edges.append(edge_p99(hu))
    bands = {}
    for name, rows in sorted(per_band.items()):
        bands[name] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "top_rows"}
        bands[name]["top_rows"] = [int(v) for v in np.sum([r["top_rows"] for r in rows], axis=0)]
    r = np.asarray(rings)
    return {
        "folder": str(folder),
        "n": len(paths),
        "ring_sd": float(r[:, 0].mean()),
        "ring2_sd": float(r[:, 1].mean()),
        "edge_p99": dict(zip("xyz", np.mean(edges, axis=0).tolist())),
        "bands": bands,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--real", required=True, type=Path, help="the real scans (NIfTI folder)")
    p.add_argument("--cohort", action="append", default=[], help="NAME=FOLDER, repeatable")
    p.add_argument("--limit", type=int, default=None, help="at most this many scans per folder")
    p.add_argument("--json", type=Path, default=None, help="write every cohort's result here")
    p.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    a = p.parse_args(argv)
    if a.json and a.json.exists() and not a.force:
        raise SystemExit(f"{a.json}: already exists; pass --force to overwrite")
    out = {"real": cohort(a.real, a.limit), "cohorts": {}}
    for spec in a.cohort:
        name, _, folder = spec.partition("=")
        if not name or not folder:
            raise SystemExit(f"--cohort {spec!r}: expected NAME=FOLDER")
        out["cohorts"][name] = cohort(Path(folder), a.limit)
    for name, c in [("real", out["real"]), *out["cohorts"].items()]:
        e = c["edge_p99"]
        print(
            f"{name} ({c['n']} scans): in-plane ring SD {c['ring_sd']:.1f} HU, next ring {c['ring2_sd']:.1f} HU; "
            f"edges (p99 |neighbour difference|) x {e['x']:.0f}, y {e['y']:.0f}, z {e['z']:.0f} HU"
        )
        for band, s in c["bands"].items():
            if band.endswith("LLL"):
                continue
            print(
                f"  {band:13s} kurtosis {s['kurtosis']:7.1f} (inner {s['kurtosis_inner']:6.1f})  "
                f"SD at the end {s['end_sd']:.4f}, inner {s['inner_sd']:.4f}  top rows {s['top_rows']}"
            )
    if a.json:
        from ctdiff.atomic import write_json

        write_json(a.json, out, force=a.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
