"""Calibration of the phantom against real CT: tissue HU, noise SD and NPS, measured alike on both.

    python benchmarks/calibrate_phantom.py [--cache DIR] [--out docs/real-ct] [--seeds 3]

Real side: the chest/abdomen CT of ``python -m ctdiff real-ct`` (512x512x133, 0.703x0.703x2.5 mm),
tissue masks from its label map (fat: unlabelled body voxels in the fat HU range). Phantom side:
``make_phantom`` rendered at the same voxel spacing (512x512x16 over 360x360x40 mm), tissue masks
from its own label map. On both, every figure is measured per ROI (16x16 voxels = 11 mm squares
inside the eroded tissue mask); the real scan's ROI-to-ROI spread (5th-95th percentile) is the
target band, and the phantom's median ROI value must lie inside it. Noise SD and NPS come from
the ROIs of eval.metrics.noise (homogeneous, 2nd-order detrended) in soft tissue: liver for the
real scan, muscle and bladder for the phantom.

Writes ``calibration.json``, ``calibration.md`` (the table) and three figures into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ctdiff.data.body import body_mask
from ctdiff.data.io import read_volume
from ctdiff.data.phantom import LABELS as PHANTOM_LABELS
from ctdiff.data.phantom import REAL_CT_NOISE_HU_AT_0703MM, make_phantom
from ctdiff.data.realct import LABELS as REAL_LABELS
from ctdiff.data.realct import fetch
from eval.metrics import noise

ROI = 16
PHANTOM_SHAPE, PHANTOM_FOV = (512, 512, 16), (360.0, 360.0, 40.0)  # 0.703 x 0.703 x 2.5 mm
TISSUES = ("air", "fat", "muscle", "soft organ", "bone")
FAT_RANGE = (-190.0, -30.0)


def erode(mask, n=2):
    return ndimage.binary_erosion(mask, np.ones((3, 3, 1), bool), iterations=n)


def square_rois(mask, roi=ROI, per_slice=6, max_rois=120, seed=0):
    """Corners of ROI x ROI squares that lie fully inside ``mask`` (random, non-overlapping per slice)."""
    rng = np.random.default_rng(seed)
    inside = noise._box_sums(mask.astype(np.float32), roi) >= roi * roi - 0.5
    out = []
    for z in rng.permutation(mask.shape[2]):
        xs, ys = np.nonzero(inside[:, :, z])
        taken = []
        for k in rng.permutation(len(xs)):
            x, y = int(xs[k]), int(ys[k])
            if any(abs(x - a) < roi and abs(y - b) < roi for a, b in taken):
                continue
            taken.append((x, y))
            out.append((x, y, int(z)))
            if len(taken) >= per_slice:
                break
        if len(out) >= max_rois:
            break
    return out


def roi_means_sds(array, mask):
    rois = square_rois(mask)
    if not rois:
        return np.zeros(0), np.zeros(0)
    stack = noise.roi_stack(array, rois, ROI)
    return stack.reshape(len(rois), -1).mean(1), stack.reshape(len(rois), -1).std(1, ddof=1)


def noise_figures(array, mask, spacing):
    """Per-ROI noise SD, NPS peak and mean frequency, and the mean NPS curve (homogeneous ROIs)."""
    rois = noise.find_homogeneous_rois(array, mask, ROI, hu_range=(-50.0, 250.0), max_rois=60, max_per_slice=4)
    detrended = noise.detrend_rois(noise.roi_stack(array, rois, ROI))
    sd = np.sqrt(detrended.reshape(len(rois), -1).var(axis=1, ddof=1))
    peaks, means = [], []
    for k in range(len(rois)):
        f, p = noise.nps_radial(detrended[k : k + 1], spacing[:2])
        peaks.append(noise.nps_peak_frequency(f, p))
        means.append(float(np.nansum(f[1:] * p[1:]) / np.nansum(p[1:])))
    freq, nps = noise.nps_radial(detrended, spacing[:2])
    return {"noise_sd": sd, "nps_peak": np.array(peaks), "nps_mean_freq": np.array(means)}, freq, nps


def real_side(cache):
    paths = fetch(cache, network=True)
    vol = read_volume(paths["cxr.nii.gz"])
    labels = read_volume(paths["mask.nii.gz"]).array.round().astype(np.int16)
    a = vol.array
    body = body_mask(a)
    smooth = ndimage.gaussian_filter(a, sigma=(1, 1, 0))
    masks = {
        # air: inside the reconstruction circle, 10 voxels away from anything denser (body, table, cushions)
        "air": (a > -1500) & ~ndimage.binary_dilation(smooth > -500, np.ones((3, 3, 1), bool), iterations=10),
        "fat": erode(body & (labels == 0) & (smooth >= FAT_RANGE[0]) & (smooth <= FAT_RANGE[1])),
        "muscle": erode(np.isin(labels, REAL_LABELS["autochthon"])),
        "soft organ": erode(np.isin(labels, REAL_LABELS["liver"])),
        "bone": erode(np.isin(labels, REAL_LABELS["vertebrae"]), 1),
    }
    tissue = {t: roi_means_sds(a, m) for t, m in masks.items()}
    nf, freq, nps = noise_figures(a, np.isin(labels, REAL_LABELS["liver"]), vol.spacing)
    return vol, tissue, nf, freq, nps


def phantom_side(seeds):
    tissue = {t: ([], []) for t in TISSUES}
    nf_all = {"noise_sd": [], "nps_peak": [], "nps_mean_freq": []}
    curves = []
    first = None
    for seed in range(seeds):
        vol, _, lab = make_phantom(
            PHANTOM_SHAPE, seed=seed, fov_mm=PHANTOM_FOV, noise_hu=REAL_CT_NOISE_HU_AT_0703MM, return_labels=True
        )
        a = vol.array
        first = first or vol
        L = PHANTOM_LABELS
        masks = {
            "air": erode(lab == L["air"], 4) & ~ndimage.binary_dilation(lab > 0, iterations=8),
            "fat": erode(np.isin(lab, [L["subcutaneous_fat"], L["pelvic_fat"]])),
            "muscle": erode(lab == L["muscle"]),
            "soft organ": erode(lab == L["prostate"]),
            "bone": erode(lab == L["trabecular_bone"], 1),
        }
        for t, m in masks.items():
            means, sds = roi_means_sds(a, m)
            tissue[t][0].extend(means)
            tissue[t][1].extend(sds)
        nf, freq, nps = noise_figures(a, np.isin(lab, [L["muscle"], L["bladder"]]), vol.spacing)
        for k in nf_all:
            nf_all[k].extend(nf[k])
        curves.append(nps)
    tissue = {t: (np.array(m), np.array(s)) for t, (m, s) in tissue.items()}
    return first, tissue, {k: np.array(v) for k, v in nf_all.items()}, freq, np.nanmean(curves, axis=0)


def band(values):
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan"), 0
    return float(np.percentile(v, 5)), float(np.median(v)), float(np.percentile(v, 95)), int(v.size)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=None, help="real-CT cache (default: ctdiff.data.realct's)")
    ap.add_argument("--out", default=str(REPO / "docs" / "real-ct"))
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    real_vol, real_t, real_n, freq_r, nps_r = real_side(args.cache)
    ph_vol, ph_t, ph_n, freq_p, nps_p = phantom_side(args.seeds)

    rows = []
    for t in TISSUES:
        for what, idx, unit in (("mean HU", 0, "HU"), ("SD in ROI", 1, "HU")):
            r, p = band(real_t[t][idx]), band(ph_t[t][idx])
            # the phantom is a pelvis without a liver: its prostate is shown next to the contrast-enhanced
            # liver for orientation, not as a calibration target (an unenhanced organ cannot match it)
            target = t != "soft organ"
            rows.append(
                {
                    "figure": f"{t}: {what}",
                    "unit": unit,
                    "real_p5": r[0],
                    "real_median": r[1],
                    "real_p95": r[2],
                    "real_rois": r[3],
                    "phantom_median": p[1],
                    "phantom_rois": p[3],
                    "inside": (r[0] <= p[1] <= r[2]) if target else None,
                }
            )
    for key, label, unit in (
        ("noise_sd", "noise SD (detrended ROIs)", "HU"),
        ("nps_peak", "NPS peak frequency", "1/mm"),
        ("nps_mean_freq", "NPS mean frequency", "1/mm"),
    ):
        r, p = band(real_n[key]), band(ph_n[key])
        rows.append(
            {
                "figure": label,
                "unit": unit,
                "real_p5": r[0],
                "real_median": r[1],
                "real_p95": r[2],
                "real_rois": r[3],
                "phantom_median": p[1],
                "phantom_rois": p[3],
                "inside": r[0] <= p[1] <= r[2],
            }
        )

    (out / "calibration.json").write_text(
        json.dumps(
            {
                "rows": rows,
                "roi_voxels": ROI,
                "spacing_mm": list(real_vol.spacing),
                "phantom_spacing_mm": list(ph_vol.spacing),
            },
            indent=1,
        )
    )
    lines = [
        "| figure | real 5th pct | real median | real 95th pct | phantom median | inside |",
        "|---|---:|---:|---:|---:|:-:|",
    ]
    for r in rows:
        fmt = "{:.3f}" if r["unit"] == "1/mm" else "{:.1f}"
        lines.append(
            f"| {r['figure']} ({r['unit']}) | {fmt.format(r['real_p5'])} | {fmt.format(r['real_median'])} | "
            f"{fmt.format(r['real_p95'])} | {fmt.format(r['phantom_median'])} | {'n/a' if r['inside'] is None else 'yes' if r['inside'] else '**no**'} |"
        )
    (out / "calibration.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(freq_r, nps_r / np.nansum(nps_r), label="real CT (liver ROIs)")
    ax.plot(freq_p, nps_p / np.nansum(nps_p), label="phantom (muscle/bladder ROIs)")
    ax.set_xlabel("spatial frequency (1/mm)")
    ax.set_ylabel("NPS, normalised to unit sum")
    ax.legend()
    ax.set_title(f"Noise power spectra at {real_vol.spacing[0]:.3f} mm, {ROI}x{ROI} ROIs")
    fig.tight_layout()
    fig.savefig(out / "nps.png", dpi=100)

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.arange(-1024, 1500, 8)
    r_body, p_body = body_mask(real_vol.array), body_mask(ph_vol.array)
    ax.hist(real_vol.array[r_body], bins=bins, density=True, histtype="step", label="real CT (body)")
    ax.hist(ph_vol.array[p_body], bins=bins, density=True, histtype="step", label="phantom (body)")
    ax.set_yscale("log")
    ax.set_xlabel("HU")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "hu-histograms.png", dpi=100)

    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    z_real = int(
        np.nonzero(
            np.isin(
                read_volume(fetch(args.cache, network=False)["mask.nii.gz"]).array.round(), REAL_LABELS["liver"]
            ).any(axis=(0, 1))
        )[0].mean()
    )
    for ax, vol, z, title in (
        (axes[0], real_vol, z_real, "real CT (abdomen)"),
        (axes[1], ph_vol, ph_vol.shape[2] // 2, "phantom (pelvis)"),
    ):
        ax.imshow(vol.array[::-1, ::-1, z].T, cmap="gray", vmin=-160, vmax=240)
        ax.set_title(f"{title}, {vol.spacing[0]:.3f} mm, W400 L40")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "slices.png", dpi=80)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
