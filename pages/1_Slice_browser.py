"""Slice browser: real and generated CT side by side (or A/B), like a DICOM viewer.

By default the volumes go to the browser once and are shown by the NiiVue viewer component
(``pages/components/viewer``): wheel/arrow/PageUp scrolling, right-drag window/level, zoom and pan,
three planes and a multiplanar layout, HU under the cursor, all in the browser without reruns, with
linked panes synced in mm. The server-rendered viewer (one plotly image per slice move) stays as a
choice for browsers without WebGL, and is what AppTest checks pixel by pixel.

Report facts (nearest real scan, SSIM, memorisation flag) are matched to the shown scans by content
hash (``eval.report.provenance``), never by file name.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ctdiff.data.display import PLANES, WINDOW_PRESETS, mosaic, n_slices, pixel_aspect
from ctdiff.data.io import case_name
from ctdiff_app.browse import (
    CUSTOM_WINDOW,
    aspect_correct,
    clamp_index,
    display_slice_hu,
    hu_readout,
    linked_index,
    middle_slice,
    mosaic_indices,
    nearest_real,
    path_with_hash,
    report_hash_of,
    window_choice,
)
from eval.report.provenance import binding
from pages.components.data import (
    content_hashes,
    list_cases,
    load_display_array,
    load_report_cached,
    load_viewer_volumes,
    load_volume,
)
from pages.components.figures import slice_figure
from pages.components.state import ensure_selection, keep, nav_link, no_data_message, page_setup, remember, set_widget
from pages.components.viewer import ct_viewer

page_setup("Slice browser")
st.title("Slice browser")

ss = st.session_state
sel = ensure_selection()
SIDES = {"real": "Real", "gen": "Generated"}
VIEWS = ("slices", "mosaic", "nearest real")
LAYOUTS = ("side by side", "A/B toggle")
RENDERERS = {"browser": "in the browser (NiiVue)", "server": "server-rendered"}
MULTIPLANAR = "multiplanar"
KEPT = [
    "renderer",
    "plane",
    "window",
    "win_width",
    "win_level",
    "layout",
    "view",
    "linked",
    "every",
    "ab_show",
    "real_case",
    "gen_case",
    "real_slice",
    "gen_slice",
    "probe_row",
    "probe_col",
]

cases = {}
for side, key in (("real", "real_dir"), ("gen", "generated_dir")):
    cases[side], err = list_cases(sel[key])
    if err:
        st.error(f"{SIDES[side]} folder: {err}")
if not cases["real"] and not cases["gen"]:
    no_data_message("real or generated volumes")
    st.stop()

report, report_err = load_report_cached(sel["report_dir"])
if report_err:
    st.warning(f"Report not loaded: {report_err}")
# content hashes only matter next to a report (which records the hashes of the scans it measured)
hashes = {side: content_hashes(cases[side]) if report is not None else {} for side in SIDES}
if report is not None:
    bound = binding(report, {"real": set(hashes["real"].values()), "generated": set(hashes["gen"].values())})
    if bound["status"] != "same":
        st.warning(
            bound["message"] + " Facts from it are shown only for scans it measured (matched by content).",
            icon=":material/link_off:",
        )
        nav_link(
            "pages/2_Metrics_dashboard.py", "Recompute the report on the Metrics dashboard", ":material/query_stats:"
        )

# a request from another page (the dashboard's memorisation list): which cases and view to open
request = ss.pop("browse_request", None)
if request:
    for side, name in (("real", request.get("real")), ("gen", request.get("generated"))):
        path = path_with_hash(report_hash_of(report, name), hashes[side]) if report is not None else None
        if path:
            set_widget(f"{side}_case", path)
    if request.get("view") in VIEWS:
        set_widget("view", request["view"])


# --------------------------------------------------------------------------------- controls
def follow(side: str) -> None:
    """Linked scrolling: move the other side's slider to the same relative position."""
    other = "gen" if side == "real" else "real"
    n_from, n_to = ss.get(f"_n_{side}"), ss.get(f"_n_{other}")
    if not ss.get("linked") or not n_from or not n_to or f"{side}_slice" not in ss:
        return
    ss[f"{other}_slice"] = linked_index(ss[f"{side}_slice"] - 1, n_from, n_to) + 1


with st.sidebar:
    st.header("View")
    renderer = st.radio(
        "Viewer",
        list(RENDERERS),
        key=keep("renderer", "browser"),
        format_func=RENDERERS.get,
        horizontal=True,
        help="in the browser: scroll, window and zoom without waiting for the server "
        "(needs WebGL); server-rendered: one image per slice move, for browsers without WebGL",
    )
    interactive = renderer == "browser"
    plane_options = (*PLANES, MULTIPLANAR) if interactive else PLANES
    if ss.get("plane") not in plane_options:
        ss.pop("plane", None)
    plane = st.radio(
        "Plane",
        plane_options,
        key=keep("plane", "axial"),
        horizontal=True,
        format_func=lambda p: "3 planes" if p == MULTIPLANAR else p,
    )
    presets = [*WINDOW_PRESETS, CUSTOM_WINDOW]
    preset = st.selectbox(
        "Window (both sides)",
        presets,
        key=keep("window", "soft tissue"),
        format_func=lambda n: (
            f"{n}  W{WINDOW_PRESETS[n][0]:g} / L{WINDOW_PRESETS[n][1]:g}" if n in WINDOW_PRESETS else "custom W/L"
        ),
    )
    if preset == CUSTOM_WINDOW:
        st.number_input("Width W (HU)", min_value=1.0, max_value=10000.0, step=10.0, key=keep("win_width", 400.0))
        st.number_input("Level L (HU)", min_value=-2000.0, max_value=4000.0, step=10.0, key=keep("win_level", 40.0))
    width, level = window_choice(preset, ss.get("win_width"), ss.get("win_level"))
    layout = st.radio("Layout", LAYOUTS, key=keep("layout", LAYOUTS[0]), horizontal=True)
    view = st.radio(
        "Show",
        VIEWS,
        key=keep("view", VIEWS[0]),
        horizontal=True,
        help="slices: one slice per side; mosaic: every Nth slice; nearest real: a generated case next to the real scan most similar to it (from the report)",
    )
    st.checkbox(
        "Link scrolling",
        key=keep("linked", True),
        on_change=follow,
        args=("real",),
        help="Scroll both sides together, keeping the same relative position in each stack",
    )
    if view == "mosaic":
        every = st.slider("Every Nth slice", 1, 10, key=keep("every", 2))
    st.caption(
        f"Window W{width:g} / L{level:g}: grey from {level - width / 2:g} to {level + width / 2:g} HU, "
        "the same on both sides. Hover an image for the HU and voxel under the cursor."
    )
    if interactive:
        st.caption(
            "In the viewer: wheel or ↑/↓ one slice, PageUp/PageDown ten; right-drag window/level; "
            "ctrl+wheel or +/− zoom, 0 resets; middle- or shift-drag pans; T toggles A/B. "
            "Linked panes share slice position (mm), zoom, pan and window."
        )

in_browser = interactive and view != "mosaic"
viewer_plane = plane
if plane == MULTIPLANAR and not in_browser:
    plane = "axial"  # a mosaic shows one plane

# nearest-real view: the generated case decides the real one
near = None
locked_real = False  # the nearest-real view picks the real case itself
if view == "nearest real":
    if not cases["gen"]:
        st.info("The nearest-real view needs generated volumes.")
        st.stop()
    if report is None:
        st.info(
            "The nearest-real view needs a report with nearest-real results: choose a report folder on Home, "
            "or compute one on the Metrics dashboard."
        )
        st.stop()
    gen_now = ss.get("gen_case", ss.get("_keep_gen_case"))
    gen_now = gen_now if gen_now in cases["gen"] else cases["gen"][0]
    near = nearest_real(report, hashes["gen"].get(str(gen_now)))
    if not near or not near.get("file"):
        st.warning(
            f"The report has no nearest-real scan for {case_name(gen_now)}: it did not measure this scan "
            "(matched by content, not by name)."
        )
    else:
        path = path_with_hash(near.get("sha256"), hashes["real"])
        if path is None:
            st.warning(
                f"The nearest real scan the report found ({case_name(Path(str(near['file'])))}) is not in the "
                "selected real folder (matched by content)."
            )
        else:
            set_widget("real_case", path)
            locked_real = True


def controls(side: str, where) -> dict | None:
    """Case picker and slice scroller of one side; returns what to draw, or None."""
    label = SIDES[side]
    with where:
        if not cases[side]:
            st.info(f"No {label.lower()} volumes selected.")
            return None
        key = f"{side}_case"
        if ss.get(key) not in cases[side]:
            ss.pop(key, None)
            ss.pop("_keep_" + key, None)
        case = st.selectbox(
            f"{label} case ({len(cases[side])})",
            cases[side],
            key=keep(key, cases[side][0]),
            format_func=case_name,
            disabled=(side == "real" and locked_real),
        )
        if in_browser:
            # the viewer's bytes are read later, every side's at once (viewer_files)
            return {"side": side, "label": label, "case": case, "viewer": None, "index": None, "n": None}
        vol, err = load_volume(case)
        if err:
            st.error(err)
            return None
        n = n_slices(vol.shape, plane)
        ss[f"_n_{side}"] = n
        skey = f"{side}_slice"
        if ss.get(f"_ctx_{side}") != (case, plane):
            # a new case or plane opens at the middle slice, as viewers do
            ss[f"_ctx_{side}"] = (case, plane)
            set_widget(skey, middle_slice(vol.shape, plane) + 1)
        current = ss.get(skey, ss.get("_keep_" + skey, 0))
        ss[skey] = clamp_index(current - 1, n, middle_slice(vol.shape, plane)) + 1
        if n > 1:
            st.slider(f"{label} {plane} slice", 1, n, key=skey, on_change=follow, args=(side,))
        index = ss[skey] - 1
        st.caption(
            f"{label}: **{case_name(case)}** · {plane} slice **{index + 1}/{n}** · "
            f"shape {'×'.join(map(str, vol.shape))} · spacing {' × '.join(f'{s:.3g}' for s in vol.spacing)} mm"
        )
        return {"side": side, "label": label, "case": case, "volume": vol, "index": index, "n": n}


def draw(pane: dict, where, height: int) -> None:
    vol = pane["volume"]
    with where:
        if view == "mosaic":
            idx = mosaic_indices(pane["n"], every)
            img = aspect_correct(mosaic(vol.array, plane, every, width, level), pixel_aspect(vol.spacing, plane))
            st.image(
                img,
                caption=f"{pane['label']} {case_name(pane['case'])}: {plane} slices "
                + ", ".join(str(i + 1) for i in idx),
                width="stretch",
            )
            return
        fig = slice_figure(
            display_slice_hu(load_display_array(pane["case"]), plane, pane["index"]),
            plane=plane,
            index=pane["index"],
            shape=vol.shape,
            spacing=vol.spacing,
            width=width,
            level=level,
            title=f"{pane['label']}: {case_name(pane['case'])}",
            height=height,
        )
        st.plotly_chart(fig, key=f"fig_{pane['side']}", config={"scrollZoom": True, "displaylogo": False})


def viewer_files(panes: dict, cols: dict) -> dict:
    """Each chosen side's viewer bytes, the files read in parallel (int16 only, no float copy)."""
    chosen = [s for s in order if panes.get(s)]
    loaded = load_viewer_volumes(
        [(panes[s]["case"], f"{panes[s]['label']}: {case_name(panes[s]['case'])}") for s in chosen]
    )
    out = {}
    for side, (viewer_vol, err) in zip(chosen, loaded):
        with cols[side]:
            if err:
                st.error(err)
                continue
            st.caption(
                f"{panes[side]['label']}: **{case_name(panes[side]['case'])}** · shape "
                f"{'×'.join(map(str, viewer_vol.shape))} · spacing {' × '.join(f'{s:.3g}' for s in viewer_vol.spacing)} mm"
            )
        out[side] = {**panes[side], "viewer": viewer_vol}
    return out


def browser_viewer(panes: dict) -> None:
    """All panes in one NiiVue component: the volumes travel once, then scrolling stays in the browser."""
    shown = [panes[s] for s in order if panes.get(s)]
    if not shown:
        return
    ct_viewer(
        [p["viewer"] for p in shown],
        layout="A/B" if layout == LAYOUTS[1] else "side by side",
        linked=bool(ss.get("linked")),
        window=(width, level),
        plane=viewer_plane,
        height=560 if layout == LAYOUTS[0] else 720,
        key="ct_viewer",
    )


order = ("gen", "real") if view == "nearest real" else ("real", "gen")
if in_browser:
    cols = dict(zip(order, st.columns(2)))
    panes = viewer_files({side: controls(side, cols[side]) for side in order}, cols)
    browser_viewer(panes)
elif layout == "side by side":
    cols = dict(zip(order, st.columns(2)))
    panes = {side: controls(side, cols[side]) for side in order}
    for side in order:
        if panes[side]:
            draw(panes[side], cols[side], height=520)
else:
    cols = dict(zip(order, st.columns(2)))
    panes = {side: controls(side, cols[side]) for side in order}
    available = [s for s in order if panes[s]]
    if available:
        names = {s: f"{'A' if s == order[0] else 'B'} · {SIDES[s].lower()}" for s in order}
        if ss.get("ab_show") not in available:
            ss.pop("ab_show", None)
        shown = st.segmented_control(
            "Showing",
            available,
            key=keep("ab_show", available[0]),
            format_func=lambda s: names[s],
            required=True,
            help="Toggle between A and B at the same window; the slices stay where they are",
        )
        draw(panes[shown or available[0]], st.container(), height=720)

# nearest real / memorisation facts for the shown generated case
if report is not None and panes.get("gen"):
    info = near if view == "nearest real" else nearest_real(report, hashes["gen"].get(str(panes["gen"]["case"])))
    if info:
        facts = [
            f"nearest real scan **{case_name(Path(str(info['file'])))}**" if info.get("file") else None,
            f"SSIM {info['ssim']:.3f}" if isinstance(info.get("ssim"), (int, float)) else None,
        ]
        if any(facts):
            st.caption(
                f"{SIDES['gen']} {case_name(panes['gen']['case'])} in the report: " + " · ".join(f for f in facts if f)
            )
        if info.get("memorised"):
            st.warning(
                f"Flagged as a possible copy of training scan {case_name(Path(str(info.get('nearest_train'))))} "
                f"(distance {info.get('distance')} ≤ threshold {info.get('threshold')})."
            )

shown_panes = [p for p in panes.values() if p]
if shown_panes and not in_browser and view != "mosaic":
    with st.expander("HU probe: read one pixel exactly"):
        st.caption(
            "Pixel of the displayed image (row from the top, column from the left, from 0); "
            "the voxel index is (x, y, z) in the volume's RAS+ order."
        )
        c1, c2 = st.columns(2)
        c1.number_input("Row", min_value=0, step=1, key=keep("probe_row", 0))
        c2.number_input("Column", min_value=0, step=1, key=keep("probe_col", 0))
        for p in shown_panes:
            try:
                voxel, hu = hu_readout(p["volume"].array, plane, p["index"], int(ss["probe_row"]), int(ss["probe_col"]))
                st.markdown(
                    f"{p['label']} {case_name(p['case'])}: voxel ({voxel[0]}, {voxel[1]}, {voxel[2]}) = **{hu:g} HU**"
                )
            except IndexError as exc:
                st.markdown(f"{p['label']} {case_name(p['case'])}: {exc}")

remember(KEPT)
