"""Self-test of the metric suite on the user's own real scans: do the numbers move when they should?

``python -m eval selftest --real DIR [--train DIR] --out DIR`` splits the real cohort into two
random halves: A plays "real", B plays "generated". B unchanged is the *baseline* (two sets of
real scans); then each controlled degradation of B (:data:`DEGRADATIONS`) is compared with A by
the ordinary report builder (:func:`eval.report.build_report`), and for every metric the self-test
says whether it detected the degradation:

- ``distance`` of a value from the ideal as in :mod:`eval.report.gap` (``lower``: the value;
  ``higher``: ``1 - value``; ``closer-to-real``: ``|generated - real|``);
- ``z`` = (degraded distance - baseline distance) / sqrt(SE_baseline^2 + SE_degraded^2), the SEs
  from the bootstrap intervals of the two reports;
- **detected** when ``z > 1.96``: the degradation moved the metric away from real by more than
  its sampling noise (two-sided 95 %); ``direction`` says whether the value went up or down.

Each degradation names the metrics that *should* detect it (``expected``); ``missed`` lists the
ones that did not. The sensitivity table is written as selftest.json, selftest.md and
selftest.html. Fast families by default (intensity, noise, texture, similarity); radiomics with
``--metrics``. Degradations are pure functions of arrays (no I/O); the runner owns the files.
"""

from __future__ import annotations

import dataclasses
import html as _html
import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ctdiff.atomic import plain_json, write_json, write_text
from ctdiff.data.io import write_nifti
from ctdiff.errors import ConfigError, InputError
from ctdiff.outputs import check_output, register_output, staged_output
from eval.report.build import build_report
from eval.report.cases import common_grid, put_on_grid, read_cohort
from eval.report.gap import Z95, bootstrap_se
from eval.report.registry import FAST_FAMILIES, METRICS, parse_metric_names

SCHEMA = "ctdiff-eval-selftest/1"
SELFTEST_JSON = "selftest.json"


def _is_selftest_folder(folder: Path) -> bool:
    try:
        info = json.loads((folder / SELFTEST_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("schema") == SCHEMA


register_output("selftest", "a selftest folder", _is_selftest_folder)
FAST_METRICS = ",".join(FAST_FAMILIES)  # intensity,noise,texture,similarity
BODY_HU = -500.0  # voxels above this are the patient (air stays air under contrast changes)


@dataclasses.dataclass
class Context:
    """What a degradation may use besides the arrays it degrades."""

    rng: np.random.Generator
    spacing: tuple[float, float, float]
    nps: tuple[np.ndarray, np.ndarray] | None  # (frequency mm^-1, mean radial NPS HU^2 mm^2) of the cohort
    noise_sd: float | None  # the cohort's ROI noise SD (HU)
    train: list[np.ndarray]  # training scans (or the reference half when no --train)


@dataclasses.dataclass(frozen=True)
class Degradation:
    description: str
    expected: tuple[str, ...]  # metrics that should detect it
    apply: Callable[[list[np.ndarray], Context], list[np.ndarray]]


def noise_like(
    shape: tuple[int, ...], spacing, nps: tuple[np.ndarray, np.ndarray] | None, sd: float, rng: np.random.Generator
) -> np.ndarray:
    """Noise of SD ``sd`` (HU) whose in-plane power spectrum follows the radial ``nps`` (white if None).

    Each axial slice: white noise filtered in the 2D Fourier domain by sqrt(NPS(|f|)), the radial
    NPS interpolated linearly (0 beyond its last frequency), then scaled to ``sd``.
    """
    white = rng.standard_normal(shape)
    if nps is not None:
        freq, power = (np.asarray(a, dtype=np.float64) for a in nps)
        ok = np.isfinite(power)
        fx = np.fft.fftfreq(shape[0], spacing[0])[:, None]
        fy = np.fft.fftfreq(shape[1], spacing[1])[None, :]
        amp = np.sqrt(np.maximum(np.interp(np.sqrt(fx**2 + fy**2), freq[ok], power[ok], right=0.0), 0.0))
        white = np.real(np.fft.ifft2(np.fft.fft2(white, axes=(0, 1)) * amp[:, :, None], axes=(0, 1)))
    sd_now = float(white.std())
    return (white * (sd / sd_now if sd_now > 0 else 0.0)).astype(np.float32)


def _added_noise(arrays, ctx: Context):
    sd = ctx.noise_sd if ctx.noise_sd and math.isfinite(ctx.noise_sd) else 20.0
    return [a + noise_like(a.shape, ctx.spacing, ctx.nps, sd, ctx.rng) for a in arrays]


def _blur(arrays, ctx):
    return [ndimage.gaussian_filter(a, sigma=(1.0, 1.0, 0.0)).astype(np.float32) for a in arrays]


def _contrast(arrays, ctx, factor=0.7, centre=40.0):
    return [np.where(a > BODY_HU, centre + factor * (a - centre), a).astype(np.float32) for a in arrays]


def _offset(arrays, ctx, hu=30.0):
    return [(a + np.float32(hu)).astype(np.float32) for a in arrays]


def _copies(arrays, ctx):
    # half of the scans replaced by training scans (same grid), the rest unchanged
    n = len(arrays)
    k = max(1, n // 2)
    picks = ctx.rng.choice(len(ctx.train), size=min(k, len(ctx.train)), replace=False)
    out = list(arrays)
    for j, i in enumerate(picks):
        out[j] = ctx.train[int(i)].copy()
    return out


def _mode_collapse(arrays, ctx, sd=5.0):
    return [arrays[0] + ctx.rng.normal(0.0, sd, arrays[0].shape).astype(np.float32) for _ in arrays]


def _shift(arrays, ctx, px=3):
    out = []
    for a in arrays:
        b = np.full_like(a, a.min())
        b[px:, px:] = a[:-px, :-px]
        out.append(b)
    return out


def _flip(arrays, ctx):
    return [np.ascontiguousarray(a[::-1]) for a in arrays]


def _thick_slices(arrays, ctx, factor=3):
    # slices `factor` times thicker, on the same grid: the mean over `factor` neighbouring slices
    return [ndimage.uniform_filter1d(a, size=factor, axis=2, mode="nearest").astype(np.float32) for a in arrays]


def _slice_offsets(arrays, ctx, sd=5.0):
    # every axial slice shifted by its own random offset (SD ``sd`` HU) inside the patient: the
    # slice-to-slice banding a decoder or a slice-wise generator can leave
    out = []
    for a in arrays:
        offsets = ctx.rng.normal(0.0, sd, a.shape[2]).astype(np.float32)
        out.append(np.where(a > BODY_HU, a + offsets[None, None, :], a).astype(np.float32))
    return out


DEGRADATIONS: dict[str, Degradation] = {
    "added_noise": Degradation(
        "noise added with the cohort's own NPS, SD = the cohort's noise SD (total SD x1.41)",
        ("noise_sd", "cnr_soft_tissue_fat"),
        _added_noise,
    ),
    "blur": Degradation(
        "Gaussian blur, sigma 1 voxel in-plane",
        ("noise_sd", "nps_peak_frequency", "nps_mean_frequency", "nps_distance"),
        _blur,
    ),
    "contrast": Degradation(
        "contrast compressed to 70 % around 40 HU inside the patient", ("contrast_rms", "hu_wasserstein"), _contrast
    ),
    "hu_offset": Degradation("+30 HU everywhere (calibration offset)", ("hu_wasserstein",), _offset),
    "train_copies": Degradation(
        "half of the scans replaced by exact copies of training scans", ("memorization",), _copies
    ),
    "mode_collapse": Degradation(
        "one scan repeated, each copy with 5 HU white noise", ("ms_ssim_diversity",), _mode_collapse
    ),
    "shift": Degradation("in-plane misregistration: shifted by 3 voxels in x and y", ("ssim_nearest_real",), _shift),
    "flip": Degradation("left-right flip", (), _flip),
    "thick_slices": Degradation(
        "slices 3x thicker (mean of 3 neighbouring slices, same grid)", ("noise_sd", "glcm_distance"), _thick_slices
    ),
    "slice_offsets": Degradation(
        "each axial slice shifted by a random offset (SD 5 HU) inside the patient", ("slice_banding",), _slice_offsets
    ),
}


def distance(entry: dict[str, Any]) -> float | None:
    """The entry's distance from the ideal (see the module doc); None when not computed."""

    def num(x):
        return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None

    better = entry.get("better")
    if better == "closer-to-real":
        real, gen = num(entry.get("real")), num(entry.get("generated"))
        return None if real is None or gen is None else abs(gen - real)
    v = num(entry.get("value"))
    if v is None:
        return None
    if better == "higher":
        return 1.0 - v
    return v


def detection(baseline: dict[str, Any], degraded: dict[str, Any]) -> dict[str, Any]:
    """Did a metric detect a degradation? (direction, effect, z against the CIs, detected)."""
    d0, d1 = distance(baseline), distance(degraded)
    v0, v1 = baseline.get("value"), degraded.get("value")
    out: dict[str, Any] = {
        "baseline": v0,
        "value": v1,
        "ci95": degraded.get("ci95"),
        "status": degraded.get("status"),
        "direction": None,
        "effect": None,
        "z": None,
        "detected": None,
    }
    if d0 is None or d1 is None or v0 is None or v1 is None:
        out["reason"] = degraded.get("reason") or baseline.get("reason") or "not computed"
        return out
    out["effect"] = v1 - v0
    out["direction"] = "up" if v1 > v0 else "down" if v1 < v0 else "none"
    se = math.hypot(bootstrap_se(baseline.get("ci95")) or 0.0, bootstrap_se(degraded.get("ci95")) or 0.0)
    change = d1 - d0
    if se > 0:
        out["z"] = change / se
        out["detected"] = bool(out["z"] > Z95)
    else:  # no interval (e.g. a constant): any increase of the distance is a detection
        out["detected"] = bool(change > 0)
    return out


def _write_cohort(folder: Path, volumes) -> Path:
    folder.mkdir(parents=True)
    for i, v in enumerate(volumes):
        write_nifti(v, folder / f"case_{i:03d}.nii.gz")
    return folder


def run_selftest(
    real: str | os.PathLike,
    out: str | os.PathLike | None = None,
    train: str | os.PathLike | None = None,
    metrics: str | Sequence[str] | None = FAST_METRICS,
    degradations: Sequence[str] | None = None,
    *,
    n_bootstrap: int = 100,
    seed: int = 0,
    max_train: int = 8,
    workers: int | None = 1,
    cache_dir: str | os.PathLike | None = None,
    force: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the self-test (see the module doc); with ``out`` write selftest.json / .md / .html.

    At most ``max_train`` training scans (a seeded random subset) are used: every report compares
    them pairwise with SSIM (memorisation, floor), which grows with the square of their number.
    """
    names = list(degradations) if degradations else list(DEGRADATIONS)
    unknown = [d for d in names if d not in DEGRADATIONS]
    if unknown:
        raise ConfigError(f"unknown degradation(s) {unknown}; choose from {', '.join(DEGRADATIONS)}")
    try:
        selected = parse_metric_names(metrics)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if n_bootstrap < 2:
        raise ConfigError(f"--bootstrap must be at least 2 for the detection test (got {n_bootstrap})")
    out_inputs = {"--real": real, "--train": train, "--cache-dir": cache_dir}
    if out is not None:
        # before minutes of work and before anything is deleted: --out must not overlap an input, and
        # --force replaces only a selftest folder
        check_output(out, command="selftest", force=force, inputs=out_inputs)
    cases, skipped = read_cohort(real, "real")
    if len(cases) < 4:
        raise InputError(
            f"the self-test needs at least 4 readable real scans to split into two halves (have {len(cases)})", real
        )
    train_cases, bad_train = read_cohort(train, "train") if train is not None else ([], [])
    skipped += bad_train
    n_train_read = len(train_cases)
    if len(train_cases) > max_train > 0:
        keep = np.random.default_rng(seed + 1).choice(len(train_cases), size=max_train, replace=False)
        train_cases = [train_cases[i] for i in sorted(keep)]
    shape, spacing = common_grid(cases)
    put_on_grid([cases, train_cases], shape, spacing)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(cases))
    half = len(cases) // 2
    ref_cases = [cases[i] for i in sorted(perm[:half])]
    base_cases = [cases[i] for i in sorted(perm[half:])]
    steps = 1 + len(names)
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "inputs": {
            "real": str(real),
            "train": None if train is None else str(train),
            "n_real": len(cases),
            "n_reference": len(ref_cases),
            "n_degraded": len(base_cases),
            "n_train": len(train_cases),
            "n_train_read": n_train_read,
            "skipped": skipped,
            "reference_files": [str(c.path) for c in ref_cases],
            "degraded_files": [str(c.path) for c in base_cases],
        },
        "settings": {
            "metrics": selected,
            "n_bootstrap": n_bootstrap,
            "seed": seed,
            "detected_when": "z > 1.96",
            "grid": {"shape": list(shape), "spacing": list(spacing)},
        },
        "degradations": {},
    }
    settings = {"n_bootstrap": n_bootstrap, "seed": seed}
    with tempfile.TemporaryDirectory(prefix="ctdiff-selftest-") as tmp:
        tmp = Path(tmp)
        ref_dir = _write_cohort(tmp / "reference", [c.volume for c in ref_cases])
        train_dir = _write_cohort(tmp / "train", [c.volume for c in train_cases]) if train_cases else None

        def report_for(name: str, volumes) -> dict[str, Any]:
            gen_dir = _write_cohort(tmp / name, volumes)
            return build_report(
                ref_dir,
                gen_dir,
                train=train_dir,
                metrics=selected,
                workers=workers,
                cache_dir=cache_dir,
                use_cache=cache_dir is not None,
                settings=settings,
            )

        if progress:
            progress("baseline (real half vs real half)", 0, steps)
        baseline = report_for("baseline", [c.volume for c in base_cases])
        result["baseline"] = baseline["metrics"]
        nps_curve = baseline["curves"].get("nps") or {}
        nps = None
        if nps_curve.get("generated_hu2mm2") and all(x is not None for x in nps_curve["generated_hu2mm2"]):
            nps = (np.asarray(nps_curve["frequency_mm"]), np.asarray(nps_curve["generated_hu2mm2"], dtype=np.float64))
        ctx = Context(
            rng=rng,
            spacing=tuple(spacing),
            nps=nps,
            noise_sd=(baseline["metrics"].get("noise_sd") or {}).get("generated"),
            train=[c.volume.array for c in (train_cases or ref_cases)],
        )
        result["settings"]["added_noise_shape"] = (
            "the cohort's mean NPS" if nps is not None else "white (no NPS measurable)"
        )
        for k, name in enumerate(names, start=1):
            if progress:
                progress(name, k, steps)
            deg = DEGRADATIONS[name]
            arrays = deg.apply([c.volume.array.astype(np.float32) for c in base_cases], ctx)
            volumes = [c.volume.with_array(a, c.volume.affine) for c, a in zip(base_cases, arrays)]
            rep = report_for(name, volumes)
            per_metric = {m: detection(baseline["metrics"][m], rep["metrics"][m]) for m in selected}
            detected = [m for m, d in per_metric.items() if d["detected"]]
            result["degradations"][name] = {
                "description": deg.description,
                "expected": [m for m in deg.expected if m in selected],
                "detected_by": detected,
                "missed": [m for m in deg.expected if m in selected and m not in detected],
                "metrics": per_metric,
            }
        if progress:
            progress("done", steps, steps)
    result = plain_json(result)
    if out is not None:
        with staged_output(out, command="selftest", force=force, inputs=out_inputs) as o:
            write_text(o / "selftest.md", render_markdown(result))
            write_text(o / "selftest.html", render_html(result))
            write_json(o / SELFTEST_JSON, result)  # the completion mark, last
    return result


# ------------------------------------------------------------------------------------- render
def _cell(d: dict[str, Any]) -> str:
    if d.get("detected") is None:
        return "—"
    arrow = {"up": "▲", "down": "▼", "none": "="}[d["direction"]]
    z = f"{d['z']:+.1f}σ" if d.get("z") is not None else "no CI"
    return f"{arrow} {z}{' ✓' if d['detected'] else ''}"


def table_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the sensitivity table: one row per degradation, one column per metric."""
    metrics = result["settings"]["metrics"]
    head = ["degradation", *metrics, "missed"]
    rows = []
    for name, d in result["degradations"].items():
        cells = []
        for m in metrics:
            c = _cell(d["metrics"][m])
            cells.append(f"**{c}**" if m in d["expected"] and c != "—" else c)
        rows.append([name, *cells, ", ".join(d["missed"]) or "—"])
    return head, rows


def render_markdown(result: dict[str, Any]) -> str:
    inp, st = result["inputs"], result["settings"]
    head, rows = table_rows(result)
    lines = [
        "# ctdiff metric self-test",
        "",
        f"Real cohort `{inp['real']}`: {inp['n_real']} scans split into a reference half ({inp['n_reference']}) and a half that is "
        f"degraded ({inp['n_degraded']}); training scans: {inp['n_train'] or 'none (copies come from the reference half)'}. "
        f"Bootstrap {st['n_bootstrap']} resamples, seed {st['seed']}.",
        "",
        "Cell: direction of the value (▲/▼), z = change of the distance from real / its bootstrap SE, ✓ detected (z > 1.96); "
        "**bold** = a metric that should detect it; — = not computed.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        "## Degradations",
        "",
        *(
            f"- **{n}**: {d['description']}; should be detected by {', '.join(d['expected']) or '(nothing in particular)'}"
            for n, d in result["degradations"].items()
        ),
        "",
    ]
    return "\n".join(lines)


def render_html(result: dict[str, Any]) -> str:
    e = _html.escape
    head, rows = table_rows(result)

    def cell(c: str) -> str:
        bold = c.startswith("**")
        c = c.strip("*")
        colour = "#c6f6d5" if "✓" in c else ("#fed7d7" if bold else "")
        return f"<td style='background:{colour}'>{'<b>' if bold else ''}{e(c)}{'</b>' if bold else ''}</td>"

    body = "".join(
        "<tr><td><b>" + e(r[0]) + "</b></td>" + "".join(cell(c) for c in r[1:-1]) + f"<td>{e(r[-1])}</td></tr>"
        for r in rows
    )
    md = render_markdown(result).split("\n")
    intro = e(md[2])
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>ctdiff metric self-test</title><style>"
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px}th{background:#eee}</style></head><body>"
        f"<h1>ctdiff metric self-test</h1><p>{intro}</p><p>{e(md[4])} Green: detected; red: expected but missed.</p>"
        "<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + f"</tr></thead><tbody>{body}</tbody></table>"
        "<h2>Degradations</h2><ul>"
        + "".join(f"<li><b>{e(n)}</b>: {e(d['description'])}</li>" for n, d in result["degradations"].items())
        + "</ul></body></html>"
    )


__all__ = ["DEGRADATIONS", "FAST_METRICS", "SCHEMA", "detection", "distance", "noise_like", "run_selftest", "METRICS"]
