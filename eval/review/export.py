"""Exports of a review session: every answer as CSV/JSON, and a Markdown + HTML summary for a
paper's supplement (one set of sections rendered twice, so both always say the same).

Exports are for the organiser (unblinded: they name each case's cohort and file name). They hold
case file names but never folders or full paths, which may contain site or patient information.
Every exported file is created owner-only (0600), and every CSV text cell that a spreadsheet would
run as a formula (starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return) gets a leading
``'`` (OWASP's CSV-injection rule).

Besides the answers, a session exports ``mrmc.csv`` (reader, case, truth, rating, condition, call:
the input of ``python -m eval review mrmc``), ``imrmc.csv`` (the same ratings in the input format of
the FDA's iMRMC program) and the MRMC analysis with a per-reader ROC plot in the summary.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import Engine

from ctdiff.atomic import plain_json
from ctdiff.errors import ConfigError, OverwriteError
from eval.review import mrmc, plots, stats
from eval.review.store import (
    CASE_COLUMNS,
    DESIGN_LABELS,
    FLAG_LABELS,
    HEAD_COLUMNS,
    TIME_COLUMNS,
    SessionInfo,
    answer_records,
    events,
    log_event,
    mark_records,
    pair_records,
    rating_records,
    session_info,
    session_progress,
)
from eval.review.store import session_case_array as store_case_array

ANSWER_COLUMNS = (
    *HEAD_COLUMNS,
    *CASE_COLUMNS,
    "said",
    "correct",
    "confidence",
    "realism",
    *(f"flag_{f}" for f in stats.FLAGS),
    "comment",
    *TIME_COLUMNS,
    "updated_utc",
    "changes",
)
AFC_COLUMNS = (
    *HEAD_COLUMNS,
    "left_case_id",
    "left_name",
    "right_case_id",
    "right_name",
    "real_side",
    "chose",
    "correct",
    "confidence",
    *TIME_COLUMNS,
)
RATING_COLUMNS = (
    *HEAD_COLUMNS,
    *CASE_COLUMNS,
    "realism",
    *(f"flag_{f}" for f in stats.FLAGS),
    "comment",
    *TIME_COLUMNS,
)
MRMC_COLUMNS = ("reader", "case", "truth", "rating", "condition", "call")
REPORT_FILES = (
    "answers.csv",
    "answers.json",
    "mrmc.csv",
    "imrmc.csv",
    "events.json",
    "marks.json",
    "summary.json",
    "summary.md",
    "summary.html",
    "roc.png",
)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A text cell a spreadsheet would evaluate as a formula is prefixed with ``'`` (OWASP)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _csv(columns: tuple[str, ...], rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: csv_cell(r[k]) for k in columns})
    return buf.getvalue()


def answers_csv(records: list[dict]) -> str:
    return _csv(ANSWER_COLUMNS, records)


def complete_mrmc_rows(records: list[dict]) -> list[dict]:
    """MRMC rows (:func:`eval.review.mrmc.rows_for_mrmc`) of the cases every reader answered: the
    OR method needs each reader to rate the same cases (a session in progress has gaps)."""
    rows = mrmc.rows_for_mrmc(records)
    readers = {r["reader"] for r in rows}
    by_case: dict[str, set] = {}
    for r in rows:
        by_case.setdefault(r["case"], set()).add(r["reader"])
    return [r for r in rows if by_case[r["case"]] == readers]


def mrmc_csv(rows: list[dict]) -> str:
    return _csv(MRMC_COLUMNS, rows)


def imrmc_text(rows: list[dict]) -> str:
    """Ratings in iMRMC's input format: a header (N0, N1, NR, NM), ``BEGIN DATA:``, one truth row
    per case (reader -1, modality "truth", score 0 = real / 1 = synthetic), then one row per rating
    (reader, case, modality, score); the layout RJafroc writes for iMRMC."""
    if not rows:
        return ""
    truth = {r["case"]: int(r["truth"]) for r in rows}
    readers = sorted({r["reader"] for r in rows})
    conditions = sorted({r["condition"] for r in rows})
    lines = [
        "ctdiff reader study exported for iMRMC (synthetic = 1 is the positive class)",
        f"N0:{sum(v == 0 for v in truth.values())}",
        f"N1:{sum(v == 1 for v in truth.values())}",
        f"NR:{len(readers)}",
        f"NM:{len(conditions)}",
        "BEGIN DATA:",
    ]
    lines += [f"-1,{csv_cell(case)},truth,{t}" for case, t in sorted(truth.items())]
    lines += [f"{csv_cell(r['reader'])},{csv_cell(r['case'])},{csv_cell(r['condition'])},{r['rating']}" for r in rows]
    return "\n".join(lines) + "\n"


def mrmc_section(result: mrmc.MrmcResult | None, note: str) -> Section:
    """The MRMC analysis in words and one table."""
    if result is None:
        return Section("MRMC analysis (readers and cases random)", [note])
    rows = []
    for c in result.conditions:
        acc = c.accuracy
        rows.append(
            [
                c.name,
                f"{c.n_real} + {c.n_synthetic}",
                f"{c.auc.value:.3f} [{c.auc.ci_low:.3f}, {c.auc.ci_high:.3f}]",
                fmt_p(c.auc.p),
                "n/a" if acc is None else f"{acc.value:.3f} [{acc.ci_low:.3f}, {acc.ci_high:.3f}]",
                "n/a" if acc is None else fmt_p(acc.p),
                ", ".join(f"{r} {v:.3f}" for r, v in c.reader_auc.items()),
            ]
        )
    paras = [
        f"Obuchowski-Rockette analysis with Hillis' denominator degrees of freedom and jackknife covariances, "
        f"readers and cases random: the results speak for readers and cases like these, not only for the "
        f"{len(result.readers)} reader(s) and {result.n_cases} case(s) of this study. The figure of merit is the empirical "
        f"(trapezoidal) ROC AUC of telling synthetic from real, from each answer's rating (+confidence if called "
        f"synthetic, -confidence if called real); 0.5 = chance. p tests against 0.5. {note}",
    ]
    for cmp in result.comparisons:
        d = cmp.difference
        paras.append(
            f"AUC {cmp.first} - {cmp.second}: {d.value:+.3f} [{d.ci_low:.3f}, {d.ci_high:.3f}], p {fmt_p(d.p)} "
            f"(lower AUC = harder to tell from real)."
        )
    return Section(
        "MRMC analysis (readers and cases random)",
        paras,
        [
            Table(
                [
                    "condition",
                    "real + synthetic cases",
                    "AUC [95 % CI]",
                    "p vs 0.5",
                    "accuracy [95 % CI]",
                    "p vs 0.5",
                    "reader AUCs",
                ],
                rows,
            )
        ],
    )


def plain_words(result: mrmc.MrmcResult | None) -> Section:
    """What the study shows and what it cannot, in plain words."""
    if result is None:
        return Section("What this study shows", ["Not enough complete readings yet for a conclusion."])
    paras = []
    for c in result.conditions:
        a = c.auc
        if not math.isfinite(a.ci_low):
            paras.append(
                f"{c.name}: the readers' AUC is {a.value:.2f}; its uncertainty cannot be estimated from these answers."
            )
        elif a.ci_low > 0.5:
            paras.append(
                f"{c.name}: readers told synthetic from real better than chance (AUC {a.value:.2f}, CI {a.ci_low:.2f}-{a.ci_high:.2f})."
            )
        else:
            paras.append(
                f"{c.name}: readers did not tell synthetic from real better than chance (AUC {a.value:.2f}, CI "
                f"{a.ci_low:.2f}-{a.ci_high:.2f}). This does not prove the scans indistinguishable: a study this size cannot "
                f"exclude an AUC up to {a.ci_high:.2f}."
            )
    paras.append(
        "What it cannot show: the result holds for these viewing conditions (display grid, windows, planes, time) and "
        "for readers like these; it says nothing about whether synthetic scans are anatomically correct or useful for training."
    )
    return Section("What this study shows", paras)


def _json_text(obj) -> str:
    return json.dumps(plain_json(obj), indent=2) + "\n"


def answers_json(records: list[dict]) -> str:
    return _json_text(records)


# ------------------------------------------------------------------------------ report sections
@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


def fmt_num(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def fmt_prop(d: dict) -> str:
    """``75.0 % [40.9, 92.9] (6/8)``: percentage, Wilson CI, counts."""
    if not d["n"]:
        return "n/a (0/0)"
    return f"{100 * d['value']:.1f} % [{100 * d['ci_low']:.1f}, {100 * d['ci_high']:.1f}] ({d['k']}/{d['n']})"


def fmt_auc(d: dict) -> str:
    if math.isnan(d["value"]):
        return "n/a"
    return f"{d['value']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]"


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def metrics_table(summary: dict) -> Table:
    """One row per reader and a pooled row."""
    rows = []
    groups = [(name, m) for name, m in summary["per_reader"].items()] + [("pooled", summary["pooled"])]
    for name, m in groups:
        rl = m["realism"]
        rows.append(
            [
                name,
                str(m["n"]),
                fmt_prop(m["accuracy"]),
                fmt_prop(m["sensitivity"]),
                fmt_prop(m["specificity"]),
                fmt_auc(m["auc"]),
                f"{fmt_num(rl['real']['mean'], 2)} / {fmt_num(rl['synthetic']['mean'], 2)}",
                fmt_p(rl["p"]),
                fmt_num(m["mean_seconds"], 1),
            ]
        )
    return Table(
        [
            "reader",
            "answers",
            "accuracy",
            "sensitivity",
            "specificity",
            "ROC AUC",
            "realism real / synthetic",
            "Mann-Whitney p",
            "s per case",
        ],
        rows,
    )


def progress_table(progress: list[dict]) -> Table:
    """Every design's "answered of" table, from :func:`eval.review.store.session_progress`."""
    return Table(["reader", "answered", "of"], [[p["reader"], str(p["answered"]), str(p["total"])] for p in progress])


def report_sections(info: SessionInfo, summary: dict, progress: list[dict]) -> list[Section]:
    grid = info.grid
    design = Section(
        "Study design",
        [
            f"Session **{info.name}** (id {info.id}), created {info.created_at:%Y-%m-%d %H:%M} UTC. "
            f"{info.n_real} real and {info.n_synthetic} synthetic cases"
            + (
                f" from {len(info.conditions)} generated cohorts ({', '.join(n for n, _ in info.conditions)}), each read against the same real scans"
                if len(info.conditions) > 1
                else ""
            )
            + f", {info.n_readers} reader(s); "
            f"each reader saw every case once, in their own random order (seed {info.seed}).",
            f"Cases were shown under opaque IDs, all resampled to one display grid of "
            f"{grid.shape[0]} x {grid.shape[1]} x {grid.shape[2]} voxels "
            f"({grid.spacing[0]:.2f} x {grid.spacing[1]:.2f} x {grid.spacing[2]:.2f} mm) and rendered as "
            f"identical-size 8-bit images. Planes: {', '.join(info.planes)}; window presets: "
            f"{', '.join(info.windows)}; slices: {'all' if info.scroll == 'all' else 'middle slice only'}; "
            f"changing a rating after submit {'allowed' if info.allow_change else 'not allowed'}.",
        ],
        [progress_table(progress)],
    )
    results = Section(
        "Detection of synthetic scans",
        [
            f"{summary['n_answers']} answers. Synthetic is the positive class. Percentages with the "
            f"{summary['ci_method']} in brackets and counts in parentheses; ROC AUC from confidence-weighted "
            f"calls (+confidence if called synthetic, -confidence if called real) with the {summary['auc_ci_method']}. "
            "Realism is the mean 1-5 Likert rating; p from a two-sided Mann-Whitney U test.",
        ],
        [metrics_table(summary)],
    )
    ag = summary["agreement"]
    if ag["method"]:
        ag_text = (
            f"{ag['method']} over the {ag['n_cases']} case(s) all {ag['n_readers']} readers answered: "
            f"{fmt_num(ag['kappa'])}; all readers gave the same call on {fmt_num(100 * ag['all_agree'], 1)} % of them."
        )
    else:
        ag_text = "Agreement needs at least two readers who answered the same cases."
    agreement = Section("Inter-reader agreement", [ag_text])
    fooled = Section(
        "Synthetic cases most often taken for real",
        [] if summary["fooled"] else ["No synthetic case has been answered yet."],
        [
            Table(
                ["case ID", "file", "taken for real", "mean realism"],
                [
                    [
                        f["case_id"],
                        f["case_name"],
                        f"{f['taken_for_real']}/{f['n']} ({100 * f['fraction']:.0f} %)",
                        fmt_num(f["mean_realism"], 2),
                    ]
                    for f in summary["fooled"]
                ],
            )
        ]
        if summary["fooled"]
        else [],
    )
    art = summary["artefacts"]
    artefacts = Section(
        "What looks wrong (checkbox frequencies)",
        ["Share of answers that ticked each box, per true cohort."],
        [
            Table(
                ["finding", f"real (n={art['real']['n']})", f"synthetic (n={art['synthetic']['n']})"],
                [
                    [FLAG_LABELS[f]]
                    + [
                        f"{art[c][f]['count']} ({fmt_num(100 * art[c][f]['fraction'], 1)} %)" if art[c]["n"] else "n/a"
                        for c in ("real", "synthetic")
                    ]
                    for f in stats.FLAGS
                ],
            )
        ],
    )
    return [design, results, agreement, fooled, artefacts]


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    for sec in sections:
        out += [f"## {sec.title}", ""]
        for p in sec.paragraphs:
            out += [p, ""]
        for t in sec.tables:
            out.append("| " + " | ".join(_md_cell(h) for h in t.headers) + " |")
            out.append("|" + "|".join("---" for _ in t.headers) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def _html_inline(s: str) -> str:
    # the only Markdown the sections use is **bold**
    parts = html.escape(s).split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def render_html(title: str, sections: list[Section], images: list[tuple[str, bytes]] = ()) -> str:
    """Offline HTML: no external resource; images are embedded as data URIs."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for sec in sections:
        body.append(f"<h2>{html.escape(sec.title)}</h2>")
        body += [f"<p>{_html_inline(p)}</p>" for p in sec.paragraphs]
        for t in sec.tables:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in t.headers)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in t.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    for caption, png in images:
        data = base64.b64encode(png).decode("ascii")
        body.append(
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>'
        )
    style = (
        "body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;line-height:1.45;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bbb;padding:.3em .6em;text-align:left}"
        "th{background:#f0f0f0}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def heatmap_images(db: str | Engine | None, session_id: int, marks: list[dict]) -> dict[str, bytes]:
    """PNG heat maps of the giveaway marks: pooled over the synthetic cohort on the mean of the
    synthetic cases' middle axial slices (``marks-synthetic.png``), and one per marked case on that
    case's axial slice at the marks' median z (``marks-<case ID>.png``). Soft-tissue window."""
    from ctdiff.data.display import WINDOW_PRESETS, apply_window

    if not marks:
        return {}
    ww, wl = WINDOW_PRESETS["soft tissue"]
    out: dict[str, bytes] = {}
    syn_cases = sorted({m["case_id"] for m in marks if m["cohort"] == "synthetic"})
    arrays = {c: store_case_array(db, session_id, c) for c in sorted({m["case_id"] for m in marks})}
    if syn_cases:
        mean = np.mean([arrays[c][:, :, arrays[c].shape[2] // 2].astype(np.float64) for c in syn_cases], axis=0)
        syn_marks = [m["voxel"] for m in marks if m["cohort"] == "synthetic"]
        heat = stats.mark_heatmap(syn_marks, mean.shape)
        out["marks-synthetic.png"] = plots.png_of(
            plots.heatmap_figure(
                apply_window(mean, ww, wl),
                heat,
                f"synthetic cohort: {len(syn_marks)} marks on {len(syn_cases)} case(s)",
            )
        )
    for case, array in arrays.items():
        vox = [m["voxel"] for m in marks if m["case_id"] == case]
        z = int(np.median([v[2] for v in vox]))
        heat = stats.mark_heatmap(vox, array.shape[:2])
        cohort = next(m["cohort"] for m in marks if m["case_id"] == case)
        out[f"marks-{case}.png"] = plots.png_of(
            plots.heatmap_figure(
                apply_window(array[:, :, z].astype(np.float64), ww, wl),
                heat,
                f"case {case} ({cohort}): {len(vox)} marks, slice z={z + 1}",
            )
        )
    return out


def session_mrmc(records: list[dict]) -> tuple[list[dict], mrmc.MrmcResult | None, str]:
    """MRMC rows of the complete cases, the analysis (None when it cannot run yet) and a note."""
    rows = complete_mrmc_rows(records)
    n_cases = len({r["case"] for r in rows})
    note = f"Based on the {n_cases} case(s) every reader has answered."
    readers = {r["reader"] for r in rows}
    if len(readers) < 2:
        return (
            rows,
            None,
            "The MRMC analysis needs at least two readers who answered the same real and synthetic cases.",
        )
    try:
        return rows, mrmc.analyse(mrmc.ratings_from_rows(rows)), note
    except ConfigError as exc:
        return rows, None, f"The MRMC analysis cannot run yet: {exc}."


def afc_sections(info: SessionInfo, summary: dict, progress: list[dict]) -> list[Section]:
    """Report of a two-alternative forced-choice session."""
    design = Section(
        "Study design",
        [
            f"Session **{info.name}** (id {info.id}), created {info.created_at:%Y-%m-%d %H:%M} UTC: "
            f"{DESIGN_LABELS['2afc']}. {info.n_real} real and {info.n_synthetic} synthetic cases, {info.n_readers} reader(s). "
            f"Each pair shows one real and one synthetic scan side by side (never two of one cohort), which side is real "
            f"decided by a fair coin per pair, each case at most once per reader, pairs in each reader's own random order (seed {info.seed}).",
        ],
        [progress_table(progress)],
    )
    rows = [
        [name, str(m["n"]), fmt_prop(m), fmt_p(m["p"]), fmt_num(m["mean_seconds"], 1)]
        for name, m in [*summary["per_reader"].items(), ("pooled", summary["pooled"])]
    ]
    result = Section(
        "Which scan is real? (two-alternative forced choice)",
        [
            f"Proportion of pairs where the reader picked the real scan, with the {summary['ci_method']}; p from a two-sided "
            "exact binomial test against 50 % (guessing). 50 % means readers could not tell which scan is real."
        ],
        [Table(["reader", "pairs", "picked the real scan", "p vs 50 %", "s per pair"], rows)],
    )
    pooled = summary["pooled"]
    if not pooled["n"]:
        words = "No pair has been answered yet."
    elif pooled["ci_low"] > 0.5:
        words = (
            f"Readers picked the real scan more often than chance ({100 * pooled['value']:.0f} %, CI "
            f"{100 * pooled['ci_low']:.0f}-{100 * pooled['ci_high']:.0f} %): the synthetic scans can be told apart."
        )
    else:
        words = (
            f"Readers did not pick the real scan more often than chance ({100 * pooled['value']:.0f} %, CI "
            f"{100 * pooled['ci_low']:.0f}-{100 * pooled['ci_high']:.0f} %). The pooled interval treats answers as "
            "independent; with several readers it is somewhat too narrow."
        )
    return [design, result, Section("What this study shows", [words])]


def rating_sections(info: SessionInfo, summary: dict, progress: list[dict]) -> list[Section]:
    """Report of a realism-only session: distributions per cohort and Mann-Whitney tests."""
    design = Section(
        "Study design",
        [
            f"Session **{info.name}** (id {info.id}), created {info.created_at:%Y-%m-%d %H:%M} UTC: {DESIGN_LABELS['rating']}. "
            f"{info.n_real} real and {info.n_synthetic} synthetic cases, {info.n_readers} reader(s), each case once per reader "
            f"in their own random order (seed {info.seed}). 1 = clearly artificial, 3 = some doubts, 5 = indistinguishable "
            "from a clinical scan."
        ],
        [progress_table(progress)],
    )

    def row(name: str, d: dict, p: str) -> list[str]:
        return [
            name,
            str(d["n"]),
            *(str(d["counts"][str(k)]) for k in range(1, 6)),
            fmt_num(d["mean"], 2),
            fmt_num(d["median"], 1),
            p,
        ]

    rows = [row("real", summary["real"], "")] + [row(n, g, fmt_p(g["p"])) for n, g in summary["groups"].items()]
    result = Section(
        "Realism ratings",
        [
            "Number of ratings at each level, mean and median; p from a two-sided Mann-Whitney U test against the real "
            "scans' ratings (answers pooled over readers, treated as independent)."
        ],
        [Table(["cohort", "ratings", "1", "2", "3", "4", "5", "mean", "median", "Mann-Whitney p vs real"], rows)],
    )
    syn = summary["groups"].get("synthetic")
    if not syn or not syn["n"] or not summary["real"]["n"]:
        words = "Not enough ratings of both cohorts yet."
    elif syn["p"] < 0.05:
        words = (
            f"Synthetic scans were rated {'less' if syn['mean'] < summary['real']['mean'] else 'more'} realistic than real ones "
            f"(mean {syn['mean']:.2f} vs {summary['real']['mean']:.2f}, p {fmt_p(syn['p'])})."
        )
    else:
        words = (
            f"Realism ratings of synthetic and real scans did not differ detectably (mean {syn['mean']:.2f} vs "
            f"{summary['real']['mean']:.2f}, p {fmt_p(syn['p'])}); this bounds, but does not exclude, a difference."
        )
    return [design, result, Section("What this study shows", [words])]


def build_report(db: str | Engine | None, session_id: int) -> dict[str, str | bytes]:
    """File name -> text (bytes for PNGs) of every export of a session, in :data:`REPORT_FILES` order,
    then the per-case heat maps. Every design writes the answers (CSV, JSON), the audit trail and the
    summary (JSON, Markdown, HTML); the one-case design adds MRMC tables, marks and the ROC plot."""
    info = session_info(db, session_id)
    progress = session_progress(db, session_id)
    files: dict[str, str | bytes] = {"events.json": _json_text(events(db, session_id))}
    heatmaps: dict[str, bytes] = {}
    images: list[tuple[str, bytes]] = []
    md_tail = ""
    if info.design == "rating":
        records = rating_records(db, session_id)
        summary = stats.rating_summary(records)
        sections = rating_sections(info, summary, progress)
        files["answers.csv"] = _csv(RATING_COLUMNS, records)
        summary_json = {"design": "rating", **summary}
    elif info.design == "2afc":
        records = pair_records(db, session_id)
        summary = stats.afc_summary(records)
        sections = afc_sections(info, summary, progress)
        files["answers.csv"] = _csv(AFC_COLUMNS, records)
        summary_json = {"design": "2afc", **summary}
    else:
        records = answer_records(db, session_id)
        summary = stats.session_summary(records)
        rows, result, note = session_mrmc(records)
        marks = mark_records(db, session_id)
        heatmaps = heatmap_images(db, session_id, marks)
        sections = report_sections(info, summary, progress)
        sections.insert(2, mrmc_section(result, note))
        sections.append(
            Section(
                "Giveaway marks",
                [
                    f"{len(marks)} mark(s) where readers clicked what looked wrong"
                    + (
                        f" ({sum(m['cohort'] == 'synthetic' for m in marks)} on synthetic cases); heat maps in marks-*.png."
                        if marks
                        else "."
                    )
                ],
            )
        )
        sections.append(plain_words(result))
        files["answers.csv"] = answers_csv(records)
        files["mrmc.csv"] = mrmc_csv(rows)
        files["imrmc.csv"] = imrmc_text(rows)
        files["marks.json"] = json.dumps(marks, indent=2) + "\n"
        summary_json = {**summary, "mrmc": None if result is None else result.as_dict()}
        if result is not None:
            roc_png = plots.png_of(plots.roc_figure(mrmc.reader_roc_curves(mrmc.ratings_from_rows(rows)), result))
            if roc_png:
                files["roc.png"] = roc_png
                md_tail = "\n![Per-reader ROC curves](roc.png)\n"
                images.append(("Per-reader ROC curves", roc_png))
        images += [(f"Giveaway marks: {n}", b) for n, b in heatmaps.items()]
    title = f"Reader study: {info.name}"
    files["answers.json"] = answers_json(records)
    files["summary.json"] = _json_text({"session": {"id": info.id, "name": info.name}, **summary_json})
    files["summary.md"] = render_markdown(title, sections) + md_tail
    files["summary.html"] = render_html(title, sections, images=images)
    return {**{name: files[name] for name in REPORT_FILES if name in files}, **heatmaps}


def write_private(path: Path, data: bytes) -> Path:
    """Write atomically and owner-only (0600): mkstemp already makes the temp file 0600, and the
    rename keeps that mode (ctdiff.atomic would widen it to the umask's default)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_report(
    db: str | Engine | None,
    session_id: int,
    out_dir: str | os.PathLike,
    force: bool = False,
    only: tuple[str, ...] = REPORT_FILES,
) -> list[Path]:
    """Write the exports into ``out_dir`` atomically and 0600; refuses to overwrite without ``force``."""
    out = Path(out_dir)
    files = {
        k: v
        for k, v in build_report(db, session_id).items()
        if k in only or (k.startswith("marks-") and "marks.json" in only)
    }
    existing = [out / n for n in files if (out / n).exists()]
    if existing and not force:
        raise OverwriteError("already exists; pass --force to overwrite", existing[0])
    log_event(db, "organiser", "exported", int(session_id), files=sorted(files))
    return [write_private(out / name, v if isinstance(v, bytes) else v.encode("utf-8")) for name, v in files.items()]
