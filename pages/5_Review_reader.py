"""Review reader: blinded reading of real and synthetic CT, one case at a time.

The reader signs in with their access code and reads their own random order of cases. Every image
is a same-sized, windowed 8-bit PNG cut from the session's cached display grid (see
``eval.review.render``); nothing the browser receives names a file, a folder or a cohort. Each
answer is committed to the database on submit, so closing the tab loses nothing and signing in
again resumes at the first unanswered case.
"""

from __future__ import annotations

import json
import logging
import time

import streamlit as st
import streamlit.components.v1 as components

from ctdiff.data.display import ORIENTATION_LABELS, WINDOW_PRESETS
from ctdiff.errors import CTDiffError
from eval.review import render, store
from eval.review.db import default_db_url
from pages.components.viewer import ViewerVolume, ct_viewer

log = logging.getLogger("ctdiff.review.reader")

CALLS = ("Real", "Synthetic")
LIKERT_HELP = {
    "confidence": "1 = a guess, 5 = certain",
    "realism": "1 = clearly artificial, 3 = some doubts, 5 = indistinguishable from a clinical scan",
}
GENERIC_ERROR = (
    "This case cannot be shown right now. Your submitted answers are saved. "
    "Please reload the page, or tell the study organiser."
)
ss = st.session_state

# Keyboard answers and scroll-to-top. Runs in a zero-height component iframe (same origin as the
# page, so it may reach the parent document); Streamlit has no hotkey API. Keys: R / S choose
# real / synthetic, 1-5 set the confidence and then the realism rating, Enter submits; in a
# forced-choice pair the left / right arrow keys pick the scan taken for real. Keys typed
# into a text field are left alone. Each case's iframe replaces the listener and scrolls the page back
# to the top.
HOTKEYS_JS = """
<script>
const doc = window.parent.document;
const caseId = %s;
for (const el of doc.querySelectorAll('[data-testid="stMain"], [data-testid="stAppViewContainer"], section.main')) { el.scrollTop = 0; }
window.parent.scrollTo(0, 0);
{
  const group = (name) => doc.querySelector(`[role="radiogroup"][aria-label="${name}"]`);
  const pick = (name, text) => {
    const g = group(name);
    if (!g) return false;
    for (const label of g.querySelectorAll('label')) {
      if (label.innerText.trim() === text) { label.click(); return true; }
    }
    return false;
  };
  const checked = (name) => { const g = group(name); return g && g.querySelector('input:checked'); };
  const onKey = (ev) => {
    const t = ev.target;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (t && (t.tagName === 'TEXTAREA' || (t.tagName === 'INPUT' && t.type !== 'radio' && t.type !== 'checkbox'))) return;
    const k = ev.key;
    if (k === 'ArrowLeft' || k === 'ArrowRight') { if (pick('Which scan is real?', k === 'ArrowLeft' ? 'Left' : 'Right')) ev.preventDefault(); }
    else if (k === 'r' || k === 'R') { if (pick('This scan is', 'Real')) ev.preventDefault(); }
    else if (k === 's' || k === 'S') { if (pick('This scan is', 'Synthetic')) ev.preventDefault(); }
    else if ('12345'.includes(k) && k.length === 1) {
      const target = (group('Confidence in that call') && !checked('Confidence in that call')) ? 'Confidence in that call' : 'How realistic does it look?';
      if (pick(target, k)) ev.preventDefault();
    } else if (k === 'Enter') {
      const b = Array.from(doc.querySelectorAll('[data-testid="stFormSubmitButton"] button, button'))
        .find((x) => ['Submit and next', 'Save changes'].includes(x.innerText.trim()));
      if (b) { ev.preventDefault(); ev.stopPropagation(); b.click(); }
    }
  };
  // one listener at a time, from the newest iframe (an old case's iframe is gone with its code);
  // capture phase, because the radio buttons' own key handling stops Enter from bubbling
  if (window.parent.__ctdiffHotkeys) doc.removeEventListener('keydown', window.parent.__ctdiffHotkeys, true);
  window.parent.__ctdiffHotkeys = onKey;
  doc.addEventListener('keydown', onKey, true);
}
</script>
"""
# less space above the first element, so image and form fit a 900 px high screen
COMPACT_CSS = "<style>.block-container{padding-top:1.2rem;padding-bottom:1rem}</style>"


@st.cache_resource(max_entries=4, show_spinner=False)
def case_array(db: str, reader_id: int, case_code: str):
    """The case's display-grid array (same shape and dtype for every case of a session)."""
    return store.load_case_array(db, reader_id, case_code)


@st.cache_data(max_entries=256, show_spinner=False)
def slice_png(db: str, reader_id: int, case_code: str, plane: str, index: int, window: str) -> bytes:
    array, grid = case_array(db, reader_id, case_code)
    return render.render_png(array, grid, plane, index, window)


def sign_out() -> None:
    for key in [k for k in ss if str(k).startswith("review_reader_")]:
        del ss[key]


def client_key() -> str:
    """Who is signing in, for the attempt limit: the browser's IP address where Streamlit knows it."""
    try:
        ip = st.context.ip_address
    except Exception:  # no request context (e.g. a bare script run)
        ip = None
    return ip if isinstance(ip, str) and ip else "unknown"  # AppTest hands out a mock object


def sign_in(db: str) -> None:
    st.write("Enter the access code you received from the study organiser.")
    with st.form("review_reader_signin"):
        code = st.text_input("Access code", type="password", key="review_code_input")
        go = st.form_submit_button("Start reading", type="primary")
    if not go:
        return
    client = client_key()
    wait = store.signin_wait(db, "reader", client)
    if wait > 0:
        st.error(f"Too many unknown codes. Try again in {wait:.0f} s.")
        return
    reader = store.find_reader(db, code or "")
    store.record_signin(db, "reader", client, reader is not None)
    if reader is None:
        st.error("Unknown access code. Check it for typos, or ask the organiser for a new one.")
        return
    try:
        with st.spinner("Preparing the cases ..."):
            # every case of the session is cached before the first is shown: no cohort loads lazily
            store.ensure_cache(db, reader.session_id)
    except CTDiffError:  # names a source file: for the server log, never for the reader's browser
        log.exception("review reader: cannot prepare session %s", reader.session_id)
        st.error("The images of this study are not ready. Please tell the study organiser.")
        return
    ss.review_reader_view = reader
    ss.review_reader_pos = None
    st.rerun()


def plane_and_window(reader: store.ReaderView, plane_col, window_col) -> tuple[str, str]:
    """The session's plane and window, with a choice where the organiser allowed more than one."""
    plane = reader.planes[0]
    if len(reader.planes) > 1:
        plane = plane_col.selectbox("Plane", reader.planes, key="review_reader_plane")
    window = reader.windows[0]
    if len(reader.windows) > 1:
        window = window_col.selectbox(
            "Window",
            reader.windows,
            key="review_reader_window",
            format_func=lambda w: f"{w} (W{WINDOW_PRESETS[w][0]:.0f} L{WINDOW_PRESETS[w][1]:.0f})",
        )
    return plane, window


def viewer(db: str, reader: store.ReaderView, case: store.ReaderCase) -> None:
    grid = reader.grid
    plane_col, window_col = st.columns(2)
    plane, window = plane_and_window(reader, plane_col, window_col)
    n = grid.n_slices(plane)
    index = grid.middle(plane)
    if reader.scroll == "all" and n > 1:
        index = st.slider("Slice", 1, n, index + 1, key=f"review_reader_slice_{case.code}_{plane}") - 1
    left, right, top, bottom = ORIENTATION_LABELS[plane]
    st.caption(f"{plane} · slice {index + 1} of {n} · left {left}, right {right}, top {top}, bottom {bottom}")
    # PNG as rendered: "auto" would let Streamlit re-encode it as JPEG
    st.image(slice_png(db, reader.reader_id, case.code, plane, index, window), output_format="PNG")


def marks_panel(db: str, reader: store.ReaderView, case: store.ReaderCase) -> None:
    """Giveaway marks: the case in the NiiVue viewer; each click stores the clicked voxel (display
    grid x, y, z). The volume travels as a fixed-size int16 NIfTI (its byte size depends on the grid
    only), labelled and identified by the opaque case code alone."""
    marks = store.reader_marks(db, reader.reader_id, case.code)
    with st.expander(
        f"Mark what gives it away ({len(marks)} mark{'s' if len(marks) != 1 else ''})",
        expanded=bool(ss.get("review_reader_marking")),
    ):
        st.caption("Click where the scan looks wrong; each click is one mark. Scroll with the wheel or arrow keys.")
        array, grid = case_array(db, reader.reader_id, case.code)
        click = ct_viewer(
            [ViewerVolume(array, grid.spacing, label=f"case {case.code}", id=case.code)],
            plane="axial",
            height=380,
            return_clicks=True,
            key=f"review_reader_marks_{case.code}",
        )
        seen = ss.setdefault("review_reader_marks_seen", {})
        if click and click.get("event") == "click" and seen.get(case.code) != click.get("n"):
            seen[case.code] = click.get("n")
            try:
                store.add_mark(db, reader.reader_id, case.code, click["voxel"])
            except CTDiffError:
                st.warning("That click was outside the scan.")
            ss.review_reader_marking = True
            st.rerun()
        if marks:
            st.caption("Marks (voxel x, y, z): " + "; ".join(f"({x}, {y}, {z})" for x, y, z in marks))
            if st.button("Undo last mark", key=f"review_reader_undo_{case.code}"):
                store.remove_last_mark(db, reader.reader_id, case.code)
                ss.review_reader_marking = True
                st.rerun()


def rating_form(db: str, reader: store.ReaderView, case: store.ReaderCase) -> None:
    """Realism-only design: a 1-5 rating, what looks wrong, a comment; no real/synthetic question."""
    with st.form(f"review_reader_rating_{case.code}"):
        realism = st.radio(
            "How realistic does it look?", [1, 2, 3, 4, 5], index=None, horizontal=True, help=LIKERT_HELP["realism"]
        )
        st.write("What looks wrong? (tick any)")
        ticked = [f for f in store.FLAGS if st.checkbox(store.FLAG_LABELS[f])]
        comment = st.text_area("Comment (optional)")
        submitted = st.form_submit_button("Submit and next", type="primary")
    if not submitted:
        return
    if realism is None:
        st.warning("Please choose a realism rating.")
        return
    seconds = time.monotonic() - ss.get("review_reader_t0", time.monotonic())
    try:
        store.submit_rating(
            db, reader.reader_id, case.code, realism=realism, flags=ticked, comment=comment, seconds=seconds
        )
    except store.AnswerLockedError:
        st.warning("This case was already rated.")
        return
    ss.review_reader_pos = None
    ss.review_reader_t0_case = None
    ss.review_reader_marking = False
    ss.review_reader_flash = f"Answer to case {case.position + 1} saved."
    if case.practice:
        ss.review_reader_feedback = f"Practice case {case.position + 1}: this scan was **{case.practice_truth}**. Practice answers are not scored."
    st.rerun()


def answer_form(db: str, reader: store.ReaderView, case: store.ReaderCase) -> None:
    if reader.design == "rating":
        rating_form(db, reader, case)
        return
    prev = case.answer
    if prev is not None and not reader.allow_change:
        st.info("You have answered this case; this study does not allow changing an answer.")
        return
    with st.form(f"review_reader_answer_{case.code}"):
        call = st.radio(
            "This scan is",
            CALLS,
            index=None if prev is None else int(prev.said_synthetic),
            horizontal=True,
        )
        confidence = st.radio(
            "Confidence in that call",
            [1, 2, 3, 4, 5],
            index=None if prev is None else prev.confidence - 1,
            horizontal=True,
            help=LIKERT_HELP["confidence"],
        )
        realism = st.radio(
            "How realistic does it look?",
            [1, 2, 3, 4, 5],
            index=None if prev is None else prev.realism - 1,
            horizontal=True,
            help=LIKERT_HELP["realism"],
        )
        st.write("What looks wrong? (tick any)")
        ticked = [
            f for f in store.FLAGS if st.checkbox(store.FLAG_LABELS[f], value=prev is not None and f in prev.flags)
        ]
        comment = st.text_area("Comment (optional)", value="" if prev is None else prev.comment)
        submitted = st.form_submit_button("Save changes" if prev else "Submit and next", type="primary")
    if not submitted:
        return
    if call is None or confidence is None or realism is None:
        st.warning("Please choose real or synthetic, a confidence and a realism rating.")
        return
    seconds = time.monotonic() - ss.get("review_reader_t0", time.monotonic())
    try:
        store.submit_answer(
            db,
            reader.reader_id,
            case.code,
            said_synthetic=call == "Synthetic",
            confidence=confidence,
            realism=realism,
            flags=ticked,
            comment=comment,
            seconds=seconds,
        )
    except store.AnswerLockedError:
        st.warning("This case was already answered and cannot be changed.")
        return
    ss.review_reader_pos = None  # go on at the first unanswered case
    ss.review_reader_t0_case = None
    ss.review_reader_marking = False
    ss.review_reader_flash = f"Answer to case {case.position + 1} saved."
    if case.practice:  # feedback on practice cases only; they are never scored
        ss.review_reader_feedback = (
            f"Practice case {case.position + 1}: this scan was **{case.practice_truth}**; you said "
            f"{'synthetic' if call == 'Synthetic' else 'real'}. Practice answers are not scored."
        )
    st.rerun()


def reading(db: str, reader: store.ReaderView) -> None:
    progress = store.reader_progress(db, reader.reader_id)
    flash = ss.pop("review_reader_flash", None)
    if flash:
        st.toast(flash, icon="✅")
    st.progress(progress.answered / progress.total, text=f"{progress.answered} of {progress.total} cases answered")
    pos = ss.get("review_reader_pos")
    if pos is None:
        pos = progress.next_position
    if pos is None:
        st.success("All cases are answered. Thank you!")
        if reader.allow_change and st.button("Review my answers", key="review_reader_revisit"):
            ss.review_reader_pos = 0
            st.rerun()
        return
    case = store.reader_case(db, reader.reader_id, pos)
    feedback = ss.pop("review_reader_feedback", None)
    if feedback:
        st.info(feedback)
    if ss.get("review_reader_t0_case") != case.code:  # time on a case starts when it is first shown
        ss.review_reader_t0_case = case.code
        ss.review_reader_t0 = time.monotonic()
    components.html(HOTKEYS_JS % json.dumps(case.code), height=0)
    view_col, answer_col = st.columns([3, 2], gap="large")
    with view_col:
        head, ident = st.columns([1, 3], vertical_alignment="bottom")
        head.markdown(f"**Case {case.position + 1} of {case.total}**" + (" · practice" if case.practice else ""))
        keys = (
            "1-5 realism, Enter submits"
            if reader.design == "rating"
            else "R / S, 1-5 (confidence, then realism), Enter submits"
        )
        ident.caption(f"case ID {case.code} · keys: {keys}")
    with view_col:
        try:
            viewer(db, reader, case)
            marks_panel(db, reader, case)
        except Exception:  # a traceback would print server paths into the reader's browser
            log.exception("review reader: cannot render case %s", case.code)
            st.error(GENERIC_ERROR)
    with answer_col:
        answer_form(db, reader, case)
        if reader.allow_change:
            back, forward = st.columns(2)
            if back.button("Previous case", disabled=pos == 0, key="review_reader_prev"):
                ss.review_reader_pos = pos - 1
                st.rerun()
            can_forward = case.answer is not None and pos + 1 < case.total
            if forward.button("Next case", disabled=not can_forward, key="review_reader_next"):
                ss.review_reader_pos = pos + 1
                st.rerun()


def pair_controls(reader: store.ReaderView, pair: store.PairView) -> tuple[str, int, str]:
    """Plane, slice and window, shared by both scans of a pair (same place in both)."""
    grid = reader.grid
    plane_col, window_col, slice_col = st.columns([1, 1, 2])
    plane, window = plane_and_window(reader, plane_col, window_col)
    n = grid.n_slices(plane)
    index = grid.middle(plane)
    if reader.scroll == "all" and n > 1:
        index = slice_col.slider("Slice", 1, n, index + 1, key=f"review_reader_pair_slice_{pair.position}_{plane}") - 1
    return plane, index, window


def reading_2afc(db: str, reader: store.ReaderView) -> None:
    """Two-alternative forced choice: a real and a synthetic scan side by side; which is real?"""
    progress = store.reader_pair_progress(db, reader.reader_id)
    flash = ss.pop("review_reader_flash", None)
    if flash:
        st.toast(flash, icon="✅")
    st.progress(progress.answered / progress.total, text=f"{progress.answered} of {progress.total} pairs answered")
    if progress.next_position is None:
        st.success("All pairs are answered. Thank you!")
        return
    pair = store.reader_pair(db, reader.reader_id, progress.next_position)
    feedback = ss.pop("review_reader_feedback", None)
    if feedback:
        st.info(feedback)
    key = f"pair-{pair.position}"
    if ss.get("review_reader_t0_case") != key:
        ss.review_reader_t0_case = key
        ss.review_reader_t0 = time.monotonic()
    components.html(HOTKEYS_JS % json.dumps(key), height=0)
    st.markdown(
        f"**Pair {pair.position + 1} of {pair.total}**"
        + (" · practice" if pair.practice else "")
        + " · one of these two scans is real, the other synthetic"
    )
    plane, index, window = pair_controls(reader, pair)
    left_col, right_col, form_col = st.columns([2, 2, 1.3])  # images and form side by side: all above the fold
    try:
        for col, side, code in ((left_col, "Left", pair.left), (right_col, "Right", pair.right)):
            col.image(slice_png(db, reader.reader_id, code, plane, index, window), output_format="PNG", caption=side)
    except Exception:  # a traceback would print server paths into the reader's browser
        log.exception("review reader: cannot render pair %s", pair.position)
        st.error(GENERIC_ERROR)
    with form_col, st.form(f"review_reader_pair_{pair.position}"):
        choice = st.radio("Which scan is real?", ["Left", "Right"], index=None, horizontal=True)
        confidence = st.radio(
            "Confidence in that call", [1, 2, 3, 4, 5], index=None, horizontal=True, help=LIKERT_HELP["confidence"]
        )
        submitted = st.form_submit_button("Submit and next", type="primary")
        st.caption("keys: ← / → pick the real scan, 1-5 confidence, Enter submits")
    if not submitted:
        return
    if choice is None or confidence is None:
        st.warning("Please choose the real scan and a confidence.")
        return
    seconds = time.monotonic() - ss.get("review_reader_t0", time.monotonic())
    try:
        store.submit_pair_answer(
            db, reader.reader_id, pair.position, chose_left=choice == "Left", confidence=confidence, seconds=seconds
        )
    except store.AnswerLockedError:
        st.warning("This pair was already answered.")
        return
    ss.review_reader_t0_case = None
    ss.review_reader_flash = f"Answer to pair {pair.position + 1} saved."
    if pair.practice:  # feedback on practice pairs only; they are never scored
        ss.review_reader_feedback = (
            f"Practice pair {pair.position + 1}: the **{pair.practice_real_side}** scan was real; you said "
            f"{choice.lower()}. Practice answers are not scored."
        )
    st.rerun()


def main() -> None:
    st.set_page_config(page_title="Review reader · ctdiff", page_icon="🩻", layout="wide")
    st.markdown(COMPACT_CSS, unsafe_allow_html=True)
    db = default_db_url()
    reader = ss.get("review_reader_view")
    if reader is None:
        st.title("Blinded review")
        sign_in(db)
        return
    with st.sidebar:
        st.write(f"Reader: **{reader.reader_name}**")
        st.write(f"Study: {reader.session_name}")
        if st.button("Stop for now (sign out)", key="review_reader_signout"):
            sign_out()
            st.rerun()
        st.caption("Every answer is saved when you submit it; sign in again to continue where you left off.")
        if reader.instructions:  # in the sidebar, so the case itself starts at the top of the page
            with st.expander("Instructions", expanded=store.reader_progress(db, reader.reader_id).answered == 0):
                st.markdown(reader.instructions)
    if reader.design == "2afc":
        reading_2afc(db, reader)
    else:
        reading(db, reader)


try:
    main()
except CTDiffError as exc:  # database or configuration problems: one line, no traceback
    st.error(f"The review database cannot be used: {exc}")
