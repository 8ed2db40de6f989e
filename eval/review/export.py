"""Exports of a review session: every answer as CSV/JSON, and a Markdown + HTML summary for a
paper's supplement (one set of sections rendered twice, so both always say the same).

Exports are for the organiser (unblinded: they name each case's cohort and file name). They hold
case file names but never folders or full paths, which may contain site or patient information.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from ctdiff.atomic import plain_json, write_text
from ctdiff.errors import OverwriteError
from eval.review import stats
from eval.review.store import FLAG_LABELS, SessionInfo, answer_records, session_info, session_progress

ANSWER_COLUMNS = (
    "session_id", "session", "reader", "position", "case_id", "case_name", "cohort", "said", "correct",
    "confidence", "realism", *(f"flag_{f}" for f in stats.FLAGS), "comment", "seconds",
    "submitted_utc", "updated_utc", "changes",
)
REPORT_FILES = ("answers.csv", "answers.json", "summary.json", "summary.md", "summary.html")


def answers_csv(records: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=ANSWER_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({k: r[k] for k in ANSWER_COLUMNS})
    return buf.getvalue()


def answers_json(records: list[dict]) -> str:
    return json.dumps(plain_json(records), indent=2) + "\n"


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
        rows.append([
            name, str(m["n"]), fmt_prop(m["accuracy"]), fmt_prop(m["sensitivity"]), fmt_prop(m["specificity"]),
            fmt_auc(m["auc"]), f"{fmt_num(rl['real']['mean'], 2)} / {fmt_num(rl['synthetic']['mean'], 2)}",
            fmt_p(rl["p"]), fmt_num(m["mean_seconds"], 1),
        ])
    return Table(
        ["reader", "answers", "accuracy", "sensitivity", "specificity", "ROC AUC", "realism real / synthetic", "Mann-Whitney p", "s per case"],
        rows,
    )


def report_sections(info: SessionInfo, summary: dict, progress: list[dict]) -> list[Section]:
    grid = info.grid
    design = Section(
        "Study design",
        [
            f"Session **{info.name}** (id {info.id}), created {info.created_at:%Y-%m-%d %H:%M} UTC. "
            f"{info.n_real} real and {info.n_synthetic} synthetic cases, {info.n_readers} reader(s); "
            f"each reader saw every case once, in their own random order (seed {info.seed}).",
            f"Cases were shown under opaque IDs, all resampled to one display grid of "
            f"{grid.shape[0]} x {grid.shape[1]} x {grid.shape[2]} voxels "
            f"({grid.spacing[0]:.2f} x {grid.spacing[1]:.2f} x {grid.spacing[2]:.2f} mm) and rendered as "
            f"identical-size 8-bit images. Planes: {', '.join(info.planes)}; window presets: "
            f"{', '.join(info.windows)}; slices: {'all' if info.scroll == 'all' else 'middle slice only'}; "
            f"changing a rating after submit {'allowed' if info.allow_change else 'not allowed'}.",
        ],
        [Table(["reader", "answered", "of"], [[p["reader"], str(p["answered"]), str(p["total"])] for p in progress])],
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
        [Table(
            ["case ID", "file", "taken for real", "mean realism"],
            [[f["case_id"], f["case_name"], f"{f['taken_for_real']}/{f['n']} ({100 * f['fraction']:.0f} %)", fmt_num(f["mean_realism"], 2)] for f in summary["fooled"]],
        )] if summary["fooled"] else [],
    )
    art = summary["artefacts"]
    artefacts = Section(
        "What looks wrong (checkbox frequencies)",
        ["Share of answers that ticked each box, per true cohort."],
        [Table(
            ["finding", f"real (n={art['real']['n']})", f"synthetic (n={art['synthetic']['n']})"],
            [
                [FLAG_LABELS[f]] + [
                    f"{art[c][f]['count']} ({fmt_num(100 * art[c][f]['fraction'], 1)} %)" if art[c]["n"] else "n/a"
                    for c in ("real", "synthetic")
                ]
                for f in stats.FLAGS
            ],
        )],
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


def render_html(title: str, sections: list[Section]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for sec in sections:
        body.append(f"<h2>{html.escape(sec.title)}</h2>")
        body += [f"<p>{_html_inline(p)}</p>" for p in sec.paragraphs]
        for t in sec.tables:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in t.headers)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in t.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;line-height:1.45;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bbb;padding:.3em .6em;text-align:left}"
        "th{background:#f0f0f0}"
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def build_report(db: str | Engine | None, session_id: int) -> dict[str, str]:
    """File name -> text of every export of a session (see :data:`REPORT_FILES`)."""
    info = session_info(db, session_id)
    records = answer_records(db, session_id)
    summary = stats.session_summary(records)
    sections = report_sections(info, summary, session_progress(db, session_id))
    title = f"Reader study: {info.name}"
    return {
        "answers.csv": answers_csv(records),
        "answers.json": answers_json(records),
        "summary.json": json.dumps(plain_json({"session": {"id": info.id, "name": info.name}, **summary}), indent=2) + "\n",
        "summary.md": render_markdown(title, sections),
        "summary.html": render_html(title, sections),
    }


def write_report(db: str | Engine | None, session_id: int, out_dir: str | os.PathLike, force: bool = False, only: tuple[str, ...] = REPORT_FILES) -> list[Path]:
    """Write the exports into ``out_dir`` atomically; refuses to overwrite without ``force``."""
    out = Path(out_dir)
    files = {k: v for k, v in build_report(db, session_id).items() if k in only}
    existing = [out / n for n in files if (out / n).exists()]
    if existing and not force:
        raise OverwriteError("already exists; pass --force to overwrite", existing[0])
    return [write_text(out / name, text, force=True) for name, text in files.items()]
