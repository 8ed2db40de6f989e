"""Write a report dict to a folder: report.json, report.md, a self-contained report.html, figures/.

report.html works offline: plotly's JavaScript is embedded once (``include_plotlyjs=True``) and
the slice mosaics are inline base64 PNGs. The mosaics go through ctdiff.data.display (radiological
orientation, soft-tissue window, physical aspect), the same pipeline as the app's viewer.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from ctdiff.atomic import write_bytes, write_json, write_text
from ctdiff.data.display import PLANES, WINDOW_PRESETS, apply_window, n_slices, pixel_aspect, plane_slice
from ctdiff.outputs import staged_output

MOSAIC_CASES = 4
MOSAIC_TILE = 160  # px, width of one tile


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, float):
        if not math.isfinite(x):
            return "—"
        return f"{x:.{digits}g}"
    return str(x)


def _ci(ci) -> str:
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "—"


# ---------------------------------------------------------------------------------- mosaics
def mosaic_png(cohorts: dict[str, list], plane: str, n_cases: int = MOSAIC_CASES) -> bytes:
    """PNG: middle ``plane`` slice of the first ``n_cases`` real (top row) and generated (bottom) scans."""
    from PIL import Image, ImageDraw

    width, level = WINDOW_PRESETS["soft tissue"]
    rows = []
    for cohort in ("real", "generated"):
        tiles = []
        for case in cohorts.get(cohort, [])[:n_cases]:
            arr = case.volume.array
            img = apply_window(plane_slice(arr, plane, n_slices(arr.shape, plane) // 2), width, level)
            h = max(1, round(MOSAIC_TILE * img.shape[0] / img.shape[1] * pixel_aspect(case.volume.spacing, plane)))
            tiles.append(Image.fromarray(img).resize((MOSAIC_TILE, h), Image.BILINEAR))
        rows.append((cohort, tiles))
    label_w = 90
    height = sum(max((t.height for t in tiles), default=20) + 4 for _, tiles in rows)
    canvas = Image.new("L", (label_w + n_cases * (MOSAIC_TILE + 4), height), 0)
    draw = ImageDraw.Draw(canvas)
    y = 0
    for cohort, tiles in rows:
        draw.text((4, y + 4), cohort, fill=255)
        for j, t in enumerate(tiles):
            canvas.paste(t, (label_w + j * (MOSAIC_TILE + 4), y))
        y += max((t.height for t in tiles), default=20) + 4
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------------- markdown
def _real(m: dict[str, Any]) -> str:
    """The real cohort's value, with its own 95 % CI where the metric has one (per-scan properties)."""
    return _fmt(m["real"]) + (f" {_ci(m['real_ci95'])}" if m.get("real_ci95") else "")


def metric_table_lines(report: dict[str, Any]) -> list[str]:
    """The Markdown metric table (value, CI, real, generated, reference floor, ...) as lines."""
    lines = [
        "| metric | value | 95% CI | real | generated | reference | floor | gap | status | better | unit | meaning / reason |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["metrics"].items():
        note = m["reason"] or m["description"]
        lines.append(
            f"| {name} | {_fmt(m['value'])} | {_ci(m['ci95'])} | {_real(m)} | {_fmt(m['generated'])} | "
            f"{_fmt(m['reference'])} | {_fmt(m.get('floor'))} | {_fmt(m.get('gap'), 3)} | {m.get('status') or 'n/a'} | "
            f"{m['better']} | {m['unit']} | {note} |"
        )
    return lines


def render_markdown(report: dict[str, Any], figures: dict[str, str]) -> str:
    inp = report["inputs"]
    lines = [
        "# ctdiff evaluation report",
        "",
        f"- real: `{inp['real']}` ({inp['n_real']} scans)",
        f"- generated: `{inp['generated']}` ({inp['n_generated']} scans)",
        f"- train: `{inp['train']}` ({inp['n_train']} scans)"
        if inp["train"]
        else "- train: none (memorisation uses leave-one-out inside real)",
        f"- reference floor: {report['settings'].get('reference') or 'none (too few real scans)'}",
    ]
    if inp.get("resampled_to"):
        r = inp["resampled_to"]
        lines.append(f"- resampled to shape {r['shape']} spacing {r['spacing']} mm: {len(r['files'])} file(s)")
    lines += ["", "## Metrics", "", *metric_table_lines(report)]
    if figures:
        lines += ["", "## Slices (middle slice, soft-tissue window; top real, bottom generated)", ""]
        lines += [f"![{plane}]({path})" for plane, path in figures.items()]
    lines += ["", "## Memorisation", ""]
    if report["memorization_flagged"]:
        lines += ["| generated | nearest training scan | distance (1 - SSIM) | threshold |", "|---|---|---|---|"]
        lines += [
            f"| {f['generated']} | {f['nearest_train']} | {_fmt(f['distance'])} | {_fmt(f['threshold'])} |"
            for f in report["memorization_flagged"]
        ]
    else:
        lines.append("No generated scan flagged." if "memorization" in report["metrics"] else "Not computed.")
    if inp["skipped"]:
        lines += ["", "## Skipped files", ""] + [f"- `{s['file']}`: {s['reason']}" for s in inp["skipped"]]
    lines += ["", "## Per case", ""]
    cols = _per_case_columns(report)
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in report["per_case"]:
        lines.append("| " + " | ".join(_fmt(row.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _per_case_columns(report) -> list[str]:
    preferred = [
        "cohort",
        "case",
        "noise_sd",
        "noise_sd_local",
        "noise_sd_wavelet",
        "noise_roi_px",
        "contrast_rms",
        "cnr_soft_tissue_fat",
        "slice_banding",
        "nps_peak_frequency",
        "nps_mean_frequency",
        "ssim_nearest_real",
        "nearest_real_file",
        "train_distance",
        "memorized",
    ]
    present = {k for row in report["per_case"] for k in row}
    return [c for c in preferred if c in present]


# --------------------------------------------------------------------------------------- html
def _plots(report) -> list[str]:
    import plotly.graph_objects as go
    import plotly.io as pio

    figs = []
    h = report["curves"].get("hu_histogram")
    if h:
        edges = np.asarray(h["bin_edges"])
        centres = 0.5 * (edges[:-1] + edges[1:])
        fig = go.Figure()
        for k in ("real", "generated", "train"):
            if k in h:
                fig.add_trace(go.Scatter(x=centres, y=h[k], mode="lines", name=k))
        fig.update_layout(
            title="HU histogram of body voxels (pooled, each scan weighs the same)",
            xaxis_title="HU",
            yaxis_title="probability per bin",
            xaxis_range=[-1024, 1500],
            height=380,
        )
        figs.append(fig)
    nps = report["curves"].get("nps")
    if nps:
        fig = go.Figure()
        for k in ("real", "generated", "train"):
            if k in nps:
                fig.add_trace(go.Scatter(x=nps["frequency_mm"], y=nps[k], mode="lines+markers", name=k))
        fig.update_layout(
            title="Noise power spectrum (radial, unit area)",
            xaxis_title="spatial frequency (mm⁻¹)",
            yaxis_title="normalised NPS (mm)",
            height=380,
        )
        figs.append(fig)
    out = []
    for i, fig in enumerate(figs):
        out.append(pio.to_html(fig, include_plotlyjs=(i == 0), full_html=False))
    return out


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: dict[str, Any], mosaics: dict[str, bytes]) -> str:
    e = html.escape
    inp = report["inputs"]
    metric_rows = [
        [
            f"<b>{e(n)}</b>",
            _fmt(m["value"]),
            _ci(m["ci95"]),
            _real(m),
            _fmt(m["generated"]),
            _fmt(m["reference"]),
            _fmt(m.get("floor")),
            _fmt(m.get("gap"), 3),
            e(m.get("status") or "n/a"),
            e(m["better"]),
            e(m["unit"]),
            e(m["description"]) + (f"<br><i>{e(m['reason'])}</i>" if m["reason"] else ""),
        ]
        for n, m in report["metrics"].items()
    ]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>ctdiff evaluation report</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:1400px}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}th{background:#eee}img{max-width:100%}</style></head><body>",
        "<h1>ctdiff evaluation report</h1>",
        f"<p>real: <code>{e(inp['real'])}</code> ({inp['n_real']} scans) &middot; generated: <code>{e(inp['generated'])}</code> "
        f"({inp['n_generated']} scans) &middot; train: {('<code>' + e(inp['train']) + '</code> (' + str(inp['n_train']) + ' scans)') if inp['train'] else 'none'}</p>",
        f"<p>Reference floor: {e(report['settings'].get('reference') or 'none (too few real scans)')}. "
        "CIs: bootstrap over scans (cases), 95 % percentile intervals. gap = distance / floor, floor = "
        "max(real-vs-real reference, bootstrap SE, resolution); close &le; 1.25 &lt; apart &le; 2 &lt; far (docs/metrics.md).</p>",
    ]
    if inp.get("resampled_to"):
        r = inp["resampled_to"]
        parts.append(
            f"<p><b>Resampled</b> to shape {r['shape']}, spacing {r['spacing']} mm: {len(r['files'])} file(s).</p>"
        )
    parts += [
        "<h2>Metrics</h2>",
        _table(
            [
                "metric",
                "value",
                "95% CI",
                "real",
                "generated",
                "reference",
                "floor",
                "gap",
                "status",
                "better",
                "unit",
                "meaning",
            ],
            metric_rows,
        ),
    ]
    parts += ["<h2>Curves</h2>"] + _plots(report)
    if mosaics:
        parts.append(
            "<h2>Slices</h2><p>Middle slice per plane, soft-tissue window (W400 L40); top row real, bottom row generated.</p>"
        )
        for plane, png in mosaics.items():
            parts.append(
                f"<h3>{e(plane)}</h3><img alt='{e(plane)} mosaic' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
            )
    parts.append("<h2>Memorisation</h2>")
    if report["memorization_flagged"]:
        parts.append(
            _table(
                ["generated", "nearest training scan", "distance (1 - SSIM)", "threshold"],
                [
                    [e(f["generated"]), e(f["nearest_train"]), _fmt(f["distance"]), _fmt(f["threshold"])]
                    for f in report["memorization_flagged"]
                ],
            )
        )
    else:
        parts.append(
            "<p>No generated scan flagged.</p>" if "memorization" in report["metrics"] else "<p>Not computed.</p>"
        )
    if inp["skipped"]:
        parts.append(
            "<h2>Skipped files</h2><ul>"
            + "".join(f"<li><code>{e(s['file'])}</code>: {e(s['reason'])}</li>" for s in inp["skipped"])
            + "</ul>"
        )
    cols = _per_case_columns(report)
    parts += ["<h2>Per case</h2>", _table(cols, [[e(_fmt(r.get(c))) for c in cols] for r in report["per_case"]])]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    report: dict[str, Any],
    out,
    cohorts: dict[str, list] | None = None,
    force: bool = False,
    inputs: dict[str, Any] | None = None,
) -> Path:
    """Write everything into ``out`` (refuses a non-empty folder without ``force``, and with it one
    that is not a report, and an ``out`` overlapping ``inputs``). The folder appears complete in one
    rename, report.json last inside it, or not at all."""
    with staged_output(out, command="report", force=force, inputs=inputs) as tmp:
        _write_report_into(report, tmp, cohorts)
    return Path(out)


def _write_report_into(report: dict[str, Any], out: Path, cohorts: dict[str, list] | None) -> None:
    mosaics = {plane: mosaic_png(cohorts, plane) for plane in PLANES} if cohorts else {}
    figures = {}
    for plane, png in mosaics.items():
        write_bytes(out / "figures" / f"mosaic_{plane}.png", png)
        figures[plane] = f"figures/mosaic_{plane}.png"
    write_text(out / "report.md", render_markdown(report, figures))
    write_text(out / "report.html", render_html(report, mosaics))
    write_json(out / "report.json", report)  # the completion mark: written last
