"""Metrics dashboard: the eval report of generated vs real scans, read at a glance.

Loads ``report.json`` from the selected report folder, or computes a report on the selected real and
generated folders (``eval`` report builder, with a progress bar) and then reads it from disk. Shows
the metric table colour-coded by how far generated is from real relative to the real-vs-real
reference, HU histograms, noise power spectra, a per-case scatter, the memorisation list (each
entry opens the pair in the slice browser) and downloads.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from ctdiff.data.io import case_name
from ctdiff.errors import ConfigError, CTDiffError
from ctdiff_app.dashboard import APART, CLOSE, STATUS_COLOURS, curve, metric_table, numeric_columns, per_case_table
from eval.report.provenance import binding
from pages.components.data import content_hashes, list_cases, load_report_cached, report_file
from pages.components.figures import histogram_figure, nps_figure, scatter_figure
from pages.components.paths import checked_path, os_problem, shorten
from pages.components.reporting import compute_report, default_report_dir
from pages.components.selftest import selftest_tab
from pages.components.state import ensure_selection, go_to, keep, no_data_message, page_setup, remember, short_path

NUMBER_COLUMNS = ("value", "real", "generated", "reference", "gap")

page_setup("Metrics dashboard")
st.title("Metrics dashboard")

ss = st.session_state
sel = ensure_selection()
report, err = load_report_cached(sel["report_dir"])
if err:
    st.error(f"Report folder: {err}")


# ------------------------------------------------------------------------- compute a report
def compute_panel(expanded: bool) -> None:
    with st.expander("Compute a report on the selected folders", expanded=expanded):
        if not sel["real_dir"] or not sel["generated_dir"]:
            st.info("Select a real and a generated folder on the Home page first.")
            return
        st.markdown(f"Real: `{short_path(sel['real_dir'])}`  \nGenerated: `{short_path(sel['generated_dir'])}`")
        out = st.text_input("Write the report to", key=keep("report_out", str(default_report_dir(sel))))
        train = st.text_input(
            "Training scans folder (optional: memorisation check against them)", key=keep("report_train", "")
        )
        metrics = st.text_input(
            "Metrics: names or families, comma-separated (empty = all)",
            key=keep("report_metrics", ""),
            help="families: intensity, noise, texture, similarity, radiomics, inception; "
            "see `python -m eval report --help` for every name",
        )
        overwrite = st.checkbox("Overwrite an existing report there", key="report_overwrite")
        remember(["report_out", "report_train", "report_metrics"])
        if st.button("Compute report", type="primary", key="compute_report"):
            bar = st.progress(0.0, text="Starting…")

            def progress(stage: str, done: int, total: int) -> None:
                frac = min(max(done / total, 0.0), 1.0) if total else 0.0
                bar.progress(frac, text=f"{stage}: {done}/{total}")

            try:
                out_path = checked_path(out, "Write the report to")
                train_path = checked_path(train, "Training scans folder") if train.strip() else None
                if len(metrics) > 2000 or any(ord(ch) < 32 for ch in metrics):
                    raise ConfigError(f"Metrics: {shorten(metrics)!r} is not a list of metric names")
                written = compute_report(
                    sel["real_dir"],
                    sel["generated_dir"],
                    out_path,
                    train=train_path,
                    metrics=metrics.strip() or None,
                    force=overwrite,
                    progress=progress,
                )
            except CTDiffError as exc:
                bar.empty()
                st.error(str(exc))
                return
            except (OSError, ValueError) as exc:  # the file system refused a path: say why, not where
                bar.empty()
                st.error(f"The report could not be written ({os_problem(exc)}).")
                return
            except ImportError as exc:
                bar.empty()
                st.error(f"The report builder is not available in this installation ({exc}).")
                return
            bar.progress(1.0, text="Report written")
            ss["report_dir"] = str(written)
            st.rerun()


if report is None:
    if not sel["report_dir"] and not err:
        st.info("No report selected. Choose a report folder on the Home page, or compute one here.")
    compute_panel(expanded=True)
    if not sel["real_dir"] and not sel["generated_dir"]:
        no_data_message("data")
    st.stop()

# ------------------------------------------------------- is this report about the selected scans?
current = {}
for cohort, key in (("real", "real_dir"), ("generated", "generated_dir")):
    files, _ = list_cases(sel[key])
    if files:
        current[cohort] = set(content_hashes(files).values())
bound = binding(report, current) if current else {"status": "same", "message": ""}
if bound["status"] == "other":
    st.warning(
        bound["message"] + " Its numbers do not describe the scans selected on Home.", icon=":material/link_off:"
    )
    compute_panel(expanded=True)
    if not st.checkbox("Show this report anyway (for the scans it measured)", key="show_other_report"):
        st.stop()
elif bound["status"] == "unknown":
    st.info(bound["message"], icon=":material/help:")

# ---------------------------------------------------------------------------- header
inputs = report.get("inputs") or {}
st.caption(
    f"Report: `{short_path(report_file(sel['report_dir']))}` · schema {report.get('schema', '?')}"
    + "".join(f" · {k}: `{v}`" for k, v in inputs.items() if isinstance(v, (str, int, float)))
)

# ----------------------------------------------------------------------------- metric table
table = metric_table(report)
st.subheader("Metrics")
if table.empty:
    st.warning("The report holds no metrics.")
else:
    counts = table["status"].value_counts()
    c = st.columns(4)
    for col, name in zip(c, ("close", "apart", "far", "n/a")):
        col.metric(name, int(counts.get(name, 0)))

    def colour(row: pd.Series) -> list[str]:
        bg = STATUS_COLOURS[row["status"]]
        return [f"background-color: {bg}; color: white" if name in ("gap", "status") else "" for name in row.index]

    # numbers shown as text so a missing one reads "—" (st.dataframe draws a null cell as "None")
    shown = table.copy()
    for col in NUMBER_COLUMNS:
        shown[col] = table[col].map(lambda v: "—" if v is None or pd.isna(v) else f"{v:.4g}")
    styled = shown.style.apply(colour, axis=1)
    st.dataframe(
        styled,
        hide_index=True,
        width="stretch",
        key="metric_table",
        column_config={
            "real": st.column_config.TextColumn(
                "real",
                help="A property's value in the real scans. — for a distance "
                "(FRD, KID, precision, coverage, …): it compares the two sets as a whole; see value",
            ),
            "generated": st.column_config.TextColumn(
                "generated",
                help="A property's value in the generated scans. — for a "
                "distance: one number for the pair of sets, in value",
            ),
            "gap": st.column_config.TextColumn(
                "gap",
                help="generated vs real in units of the real-vs-real reference; "
                "— when there is no usable reference (status n/a)",
            ),
            "value": st.column_config.TextColumn(
                "value",
                help="the metric (a distance, or generated − real for a property); "
                "— when it was not computed (see notes)",
            ),
            "reference": st.column_config.TextColumn(
                "reference", help="the real-vs-real floor the gap is measured against"
            ),
        },
    )
    st.caption(
        f"**gap** = distance from real / floor, where the floor is the largest of the real-vs-real "
        f"reference, the value's bootstrap SE and the measurement's resolution (one rule for every metric, "
        f"docs/metrics.md). **close** ≤ {CLOSE}, **apart** ≤ {APART}, **far** above; "
        "**n/a**: no finite gap (no reference, or the metric was skipped: see notes)."
    )

# ----------------------------------------------------------------------------------- charts
st.subheader("Distributions")
per_case = per_case_table(report)
tabs = st.tabs(["HU histogram", "Noise power spectrum", "Per case", "Self-test"])
with tabs[3]:
    selftest_tab(sel["report_dir"])
with tabs[0]:
    hist = curve(report, "hu_histogram")
    if hist and hist.get("bin_edges"):
        st.plotly_chart(histogram_figure(hist), key="hu_hist")
    else:
        st.info("The report has no HU histogram.")
with tabs[1]:
    nps = curve(report, "nps")
    if nps and nps.get("frequency_mm"):
        st.plotly_chart(nps_figure(nps), key="nps")
    else:
        st.info("The report has no noise power spectra.")
with tabs[2]:
    numeric = numeric_columns(per_case)
    if per_case.empty or len(numeric) < 1:
        st.info("The report has no per-case values.")
    else:
        prefer_x = [c for c in ("noise_sd", *numeric) if c in numeric]
        prefer_y = [
            c for c in ("ssim_nearest_real", "contrast_rms", *numeric) if c in numeric and c != prefer_x[0]
        ] or prefer_x
        c1, c2 = st.columns(2)
        if ss.get("scatter_x") not in numeric:
            ss.pop("scatter_x", None)
        if ss.get("scatter_y") not in numeric:
            ss.pop("scatter_y", None)
        x = c1.selectbox("x", numeric, key=keep("scatter_x", prefer_x[0]))
        y = c2.selectbox("y", numeric, key=keep("scatter_y", prefer_y[0]))
        st.plotly_chart(scatter_figure(per_case, x, y), key="per_case_scatter")
        st.dataframe(per_case, hide_index=True, width="stretch", key="per_case_table")

# ------------------------------------------------------------------------------ memorisation
st.subheader("Memorisation check")
flagged = report.get("memorization_flagged") or []
n_gen = int((per_case["cohort"] == "generated").sum()) if "cohort" in per_case else 0
if not flagged:
    st.success(f"No generated case was flagged as a copy of a training scan ({n_gen} generated cases in the report).")
else:
    st.warning(f"{len(flagged)} of {n_gen or '?'} generated case(s) are closer to a training scan than the threshold.")
    for i, f in enumerate(flagged):
        c1, c2 = st.columns([4, 1])
        dist, thr = f.get("distance"), f.get("threshold")
        c1.markdown(
            f"**{case_name(Path(str(f.get('generated'))))}** ↔ training scan **{case_name(Path(str(f.get('nearest_train'))))}** "
            f"· distance {dist:.4g} (threshold {thr:.4g})"
            if isinstance(dist, (int, float)) and isinstance(thr, (int, float))
            else f"**{case_name(Path(str(f.get('generated'))))}** ↔ **{case_name(Path(str(f.get('nearest_train'))))}**"
        )
        if c2.button("Open in browser", key=f"open_flagged_{i}"):
            ss["browse_request"] = {
                "generated": f.get("generated"),
                "real": f.get("nearest_train"),
                "view": "nearest real",
            }
            go_to("pages/1_Slice_browser.py")

# --------------------------------------------------------------------------------- downloads
st.subheader("Downloads")
c1, c2, c3 = st.columns(3)
json_path = report_file(sel["report_dir"])
html_path = json_path.parent / "report.html"
c1.download_button(
    "report.json", json_path.read_bytes(), file_name="report.json", mime="application/json", key="dl_json"
)
if html_path.is_file():
    c2.download_button("report.html", html_path.read_bytes(), file_name="report.html", mime="text/html", key="dl_html")
else:
    c2.caption("No report.html next to report.json.")
if per_case.empty:
    c3.caption("No per-case values to download.")
else:
    c3.download_button(
        "per-case values (CSV)", per_case.to_csv(index=False), file_name="per_case.csv", mime="text/csv", key="dl_csv"
    )

with st.expander("Report inputs and settings"):
    st.json({"inputs": report.get("inputs"), "settings": report.get("settings")}, expanded=False)

if report is not None and bound["status"] != "other":  # (for other scans it is open at the top)
    compute_panel(expanded=False)
remember(["scatter_x", "scatter_y"])
