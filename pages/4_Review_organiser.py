"""Review organiser: create blinded reader studies, add readers, follow progress, read results.

Protected by the organiser code from ``$CTDIFF_ORGANISER_CODE`` or Streamlit secrets
(``organiser_code`` in ``.streamlit/secrets.toml``); without one the page refuses to start.
Everything it does goes through ``eval.review`` (the same functions as ``python -m eval review``).
"""

from __future__ import annotations

import hashlib
import hmac
import os

import pandas as pd
import streamlit as st

from ctdiff.data.display import PLANES, WINDOW_PRESETS
from ctdiff.errors import CTDiffError
from eval.review import export, store
from eval.review.db import default_db_url, get_engine, workspace_dir
from eval.review.stats import afc_summary as stats_afc
from eval.review.stats import rating_summary as stats_rating
from eval.review.stats import session_summary

ORGANISER_ENV = "CTDIFF_ORGANISER_CODE"
SECRET_KEY = "organiser_code"
ss = st.session_state


def organiser_code() -> str | None:
    code = os.environ.get(ORGANISER_ENV)
    if code:
        return code
    try:
        return st.secrets.get(SECRET_KEY) or None
    except Exception:  # no secrets.toml at all: Streamlit raises its own not-found error
        return None


def client_key() -> str:
    """Who is signing in, for the attempt limit: the browser's IP address where Streamlit knows it."""
    try:
        ip = st.context.ip_address
    except Exception:  # no request context (e.g. a bare script run)
        ip = None
    return ip if isinstance(ip, str) and ip else "unknown"  # AppTest hands out a mock object


def gate(db: str) -> bool:
    """True once the organiser has entered the right code; refuses to start without one. Failed
    attempts are counted per client in the database and slow down (see store.signin_wait)."""
    expected = organiser_code()
    if not expected:
        st.error(
            "The organiser page is locked because no organiser code is set. Set one before starting "
            f"the app, either as an environment variable (`export {ORGANISER_ENV}=your-secret`) or in "
            f'`.streamlit/secrets.toml` as `{SECRET_KEY} = "your-secret"`, then reload this page.'
        )
        return False
    if ss.get("review_org_ok"):
        return True
    with st.form("review_org_signin"):
        given = st.text_input("Organiser code", type="password", key="review_org_code")
        go = st.form_submit_button("Open", type="primary")
    if go:
        client = client_key()
        wait = store.signin_wait(db, "organiser", client)
        if wait > 0:
            st.error(f"Too many wrong codes. Try again in {wait:.0f} s.")
            return False
        # compare digests of equal length: compare_digest is constant-time only for equal lengths
        ok = hmac.compare_digest(
            hashlib.sha256((given or "").encode()).digest(),
            hashlib.sha256(str(expected).encode()).digest(),
        )
        store.record_signin(db, "organiser", client, ok)
        if ok:
            ss.review_org_ok = True
            st.rerun()
        st.error("Wrong organiser code.")
    return False


def sign_out() -> None:
    for key in [k for k in ss if str(k).startswith("review_org_")]:
        del ss[key]


def table(t: export.Table) -> None:
    st.dataframe(pd.DataFrame(t.rows, columns=t.headers), hide_index=True, width="stretch")


def create_form(db: str) -> None:
    ws = workspace_dir()
    with st.form("review_org_create"):
        name = st.text_input("Session name", value="", key="review_new_name")
        c1, c2 = st.columns(2)
        real_dir = c1.text_input("Real scans folder", value=str(ws / "real"), key="review_new_real")
        gen_dir = c2.text_input(
            "Generated scans folder (several: separate with ;)",
            value=str(ws / "generated"),
            key="review_new_gen",
            help="Several folders (e.g. two models) are each read against the same real scans and compared.",
        )
        c1, c2 = st.columns(2)
        n = c1.number_input(
            "Cases per cohort (0 = balanced: as many as the smaller folder has)",
            min_value=0,
            value=0,
            step=1,
            key="review_new_n",
        )
        seed = c2.number_input("Random seed", min_value=0, value=0, step=1, key="review_new_seed")
        practice = st.number_input(
            "Practice cases per cohort (shown first with feedback, never scored)",
            min_value=0,
            value=0,
            step=1,
            key="review_new_practice",
        )
        design = st.radio(
            "Study design",
            store.DESIGNS,
            key="review_new_design",
            format_func=lambda d: store.DESIGN_LABELS[d],
        )
        planes = st.multiselect("Planes readers may use", list(PLANES), default=list(PLANES), key="review_new_planes")
        windows = st.multiselect(
            "Window presets readers may use",
            list(WINDOW_PRESETS),
            default=list(WINDOW_PRESETS),
            key="review_new_windows",
        )
        scroll = st.radio(
            "Slices",
            store.SCROLL_MODES,
            horizontal=True,
            key="review_new_scroll",
            format_func=lambda m: {"all": "scroll through all slices", "middle": "middle slice only"}[m],
        )
        allow_change = st.checkbox("Readers may change a rating after submitting it", key="review_new_change")
        instructions = st.text_area("Instructions shown to readers (Markdown, optional)", key="review_new_instr")
        go = st.form_submit_button("Create session", type="primary")
    if not go:
        return
    bar = st.progress(0.0, text="reading and caching cases ...")
    try:
        sid = store.create_session(
            db,
            name,
            real_dir.strip(),
            [g.strip() for g in gen_dir.split(";") if g.strip()],
            n_per_cohort=int(n) or None,
            seed=int(seed),
            planes=planes,
            windows=windows,
            scroll=scroll,
            allow_change=allow_change,
            instructions=instructions,
            design=design,
            n_practice=int(practice),
            progress=lambda done, total: bar.progress(done / total, text=f"reading and caching cases: {done}/{total}"),
        )
    except CTDiffError as exc:
        bar.empty()
        st.error(str(exc))
        return
    ss.review_org_session = sid
    ss.review_org_flash = f"Session {sid} '{name.strip()}' created. Add readers below."
    st.rerun()


def readers_panel(db: str, info: store.SessionInfo) -> None:
    new = ss.get("review_org_new_code")
    if new and new[0] == info.id:
        st.success(f"Access code for **{new[1]}** (shown only now; copy it and send it to the reader):")
        st.code(new[2], language=None)
    with st.form("review_org_add_reader", clear_on_submit=True):
        name = st.text_input("Reader name", key="review_reader_name")
        custom = st.text_input("Access code (leave empty for a random one)", key="review_reader_custom")
        go = st.form_submit_button("Add reader")
    if go:
        try:
            code = store.add_reader(db, info.id, name, code=custom.strip() or None)
        except CTDiffError as exc:
            st.error(str(exc))
        else:
            ss.review_org_new_code = (info.id, name.strip(), code)
            st.rerun()
    progress = store.session_progress(db, info.id)
    if progress:
        with st.expander("Lost code? Issue a new one"):
            who = st.selectbox("Reader", [p["reader"] for p in progress], key="review_org_reissue_who")
            if st.button("Issue new code", key="review_org_reissue"):
                ss.review_org_new_code = (info.id, who, store.new_reader_code(db, info.id, who))
                st.rerun()


LIVE_REFRESH_S = 10  # the progress tab re-reads the database this often while it is open


@st.fragment(run_every=LIVE_REFRESH_S)
def progress_panel(db: str, info: store.SessionInfo) -> None:
    """Live progress per reader: reruns on its own every LIVE_REFRESH_S seconds (only this part)."""
    progress = store.session_progress(db, info.id)
    if not progress:
        st.info("No readers yet.")
        return
    answered = sum(p["answered"] for p in progress)
    total = sum(p["total"] for p in progress)
    st.progress(answered / total if total else 0.0, text=f"{answered} of {total} readings done")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "reader": p["reader"],
                    "answered": p["answered"],
                    "of": p["total"],
                    "done": p["done"],
                    "last answer (UTC)": p["last_answer_utc"],
                }
                for p in progress
            ]
        ),
        hide_index=True,
        width="stretch",
    )


def show_sections(sections) -> None:
    """The export's report sections (title, paragraphs, tables) on the page."""
    for section in sections:
        st.subheader(section.title)
        for p in section.paragraphs:
            st.markdown(p)
        for t in section.tables:
            table(t)


def results_panel(db: str, info: store.SessionInfo) -> None:
    if info.design == "rating":
        records = store.rating_records(db, info.id)
        if not records:
            st.info("No answers yet.")
            return
        show_sections(export.rating_sections(info, stats_rating(records), store.session_progress(db, info.id))[1:])
        marks_panel(db, info)
        return
    if info.design == "2afc":
        records = store.pair_records(db, info.id)
        if not records:
            st.info("No answers yet.")
            return
        show_sections(export.afc_sections(info, stats_afc(records), store.session_progress(db, info.id))[1:])
        return
    records = store.answer_records(db, info.id)
    if not records:
        st.info("No answers yet.")
        return
    summary = session_summary(records)
    pooled = summary["pooled"]
    c = st.columns(4)
    c[0].metric("Accuracy (pooled)", f"{100 * pooled['accuracy']['value']:.1f} %")
    c[1].metric("Sensitivity", export.fmt_num(100 * pooled["sensitivity"]["value"], 1) + " %")
    c[2].metric("Specificity", export.fmt_num(100 * pooled["specificity"]["value"], 1) + " %")
    c[3].metric("ROC AUC", export.fmt_num(pooled["auc"]["value"]))
    show_sections(export.report_sections(info, summary, store.session_progress(db, info.id))[1:])
    marks_panel(db, info)


def marks_panel(db: str, info: store.SessionInfo) -> None:
    """Giveaway marks as heat maps: pooled over the synthetic cohort, and per marked case."""
    st.subheader("Giveaway marks")
    marks = store.mark_records(db, info.id)
    if not marks:
        st.info("No reader has marked anything yet.")
        return
    images = export.heatmap_images(db, info.id, marks)
    pooled = images.pop("marks-synthetic.png", None)
    cols = st.columns(2)
    if pooled:
        cols[0].image(pooled, caption="pooled over the synthetic cohort (mean middle slice)")
    if images:
        name = cols[1].selectbox(
            "Case",
            sorted(images),
            key="review_org_marks_case",
            format_func=lambda n: n.removeprefix("marks-").removesuffix(".png"),
        )
        cols[1].image(images[name], caption=name)


def export_panel(report: dict[str, str], info: store.SessionInfo) -> None:
    mimes = {
        "csv": "text/csv",
        "json": "application/json",
        "md": "text/markdown",
        "html": "text/html",
        "png": "image/png",
    }
    items = list(report.items())
    cols = [c for _ in range(0, len(items), 5) for c in st.columns(5)]  # rows of five buttons
    for col, (name, text) in zip(cols, items):
        col.download_button(
            name,
            text,
            file_name=f"review-{info.id}-{name}",
            mime=mimes[name.rsplit(".", 1)[1]],
            key=f"review_dl_{name}",
        )
    st.caption(f"Or from a shell: `python -m eval review report --session {info.id} --out DIR`")


def main() -> None:
    st.set_page_config(page_title="Review organiser · ctdiff", page_icon="🩻", layout="wide")
    st.title("Review organiser")
    db = default_db_url()
    if not gate(db):
        return
    with st.sidebar:
        if st.button("Sign out", key="review_org_signout"):
            store.log_event(db, "organiser", "organiser_signout")
            sign_out()
            st.rerun()
    st.caption(f"Database: `{get_engine(db).url.render_as_string(hide_password=True)}`")
    flash = ss.pop("review_org_flash", None)
    if flash:
        st.success(flash)
    sessions = store.list_sessions(db)
    with st.expander("Create a new session", expanded=not sessions):
        create_form(db)
    if not sessions:
        return
    ids = [s.id for s in sessions]
    chosen = ss.get("review_org_session")
    idx = ids.index(chosen) if chosen in ids else len(ids) - 1
    info = st.selectbox(
        "Session",
        sessions,
        index=idx,
        key=f"review_org_pick_{len(ids)}",
        format_func=lambda s: f"{s.id} · {s.name} ({s.n_real} real + {s.n_synthetic} synthetic, {s.n_readers} readers)",
    )
    ss.review_org_session = info.id
    st.caption(
        f"Real: `{info.real_dir}` · generated: {', '.join(f'`{d}`' + (f' ({n})' if n else '') for n, d in info.conditions)} · seed {info.seed} · display grid "
        f"{' x '.join(map(str, info.grid.shape))} · planes {', '.join(info.planes)} · windows {', '.join(info.windows)} · "
        f"{'all slices' if info.scroll == 'all' else 'middle slice only'} · changes {'allowed' if info.allow_change else 'not allowed'} · "
        f"design: {store.DESIGN_LABELS[info.design]}"
    )
    if info.skipped:
        with st.expander(f"{len(info.skipped)} unreadable file(s) skipped"):
            for path, reason in info.skipped:
                st.write(f"`{path}`: {reason}")
    report = export.build_report(db, info.id)
    readers, progress, results, downloads = st.tabs(["Readers", "Progress", "Results", "Export"])
    with readers:
        readers_panel(db, info)
    with progress:
        progress_panel(db, info)
    with results:
        results_panel(db, info)
    with downloads:
        export_panel(report, info)


try:
    main()
except CTDiffError as exc:
    st.error(str(exc))
