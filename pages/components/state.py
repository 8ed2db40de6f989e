"""Session state shared by every page: the selected folders and widget values that survive page switches.

The selection lives in ``st.session_state`` under ``real_dir``, ``generated_dir``, ``report_dir``
and ``run_dir`` (paths as strings, or None). A page opened directly (without Home) fills any key
that is not set yet from the workspace (``CTDIFF_WORKSPACE`` or the demo workspace).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.errors import StreamlitAPIException

from ctdiff_app.workspace import SELECTION_KEYS, read_workspace_info, selection_from_workspace, workspace_path

SOURCE_KEY = "selection_source"
KEEP_PREFIX = "_keep_"


def page_setup(title: str, icon: str = ":material/radiology:") -> None:
    st.set_page_config(page_title=f"{title} · ctdiff", page_icon=icon, layout="wide")


def ensure_selection() -> dict[str, str | None]:
    """The current selection; keys not set yet are taken from the workspace when it exists."""
    ss = st.session_state
    if SOURCE_KEY not in ss:
        ws, configured = workspace_path()
        if ws.is_dir():
            from_ws = selection_from_workspace(ws)
            for key in SELECTION_KEYS:
                if ss.get(key) is None:
                    ss[key] = from_ws[key]
            info = read_workspace_info(ws)
            name = info.get("name") or ws.name
            how = "CTDIFF_WORKSPACE" if configured else "built-in demo workspace"
            ss[SOURCE_KEY] = f"workspace '{name}' ({ws}, {how})"
        else:
            for key in SELECTION_KEYS:
                ss.setdefault(key, None)
            if any(ss.get(k) for k in SELECTION_KEYS):
                ss[SOURCE_KEY] = "paths set for this session"
    return {key: ss.get(key) for key in SELECTION_KEYS}


def no_data_message(what: str) -> None:
    """One clear message when a page has nothing to show, pointing at Home."""
    ws, configured = workspace_path()
    if configured and not ws.exists():
        st.error(f"CTDIFF_WORKSPACE points to {ws}, which does not exist. Fix it, or type folders on the Home page.")
    else:
        st.info(f"No {what} selected. Choose folders on the **Home** page (app), or set CTDIFF_WORKSPACE.")
    nav_link("app.py", "Go to Home", ":material/home:")


def nav_link(page: str, label: str, icon: str | None = None) -> None:
    """``st.page_link`` that degrades to plain text where the page is unknown.

    Under ``streamlit run app.py`` every page is known; a page script run on its own (AppTest of one
    page) has no navigation, and a link must not turn into a traceback there.
    """
    try:
        st.page_link(page, label=label, icon=icon)
    except StreamlitAPIException:
        st.markdown(f"{icon or ''} {label} (sidebar)")


def go_to(page: str) -> None:
    """``st.switch_page`` with a message instead of a traceback where navigation is unavailable."""
    try:
        st.switch_page(page)
    except StreamlitAPIException:
        st.info(f"Open {page} from the sidebar.")


def keep(key: str, default: Any) -> str:
    """Give a widget key its last value (also after visiting another page), or ``default``.

    Streamlit forgets a widget's value when a page without it runs; :func:`remember` stores a
    shadow copy that this restores. Returns ``key`` so it reads ``st.slider(..., key=keep("k", 3))``.
    """
    ss = st.session_state
    if key not in ss:
        ss[key] = ss.get(KEEP_PREFIX + key, default)
    return key


def remember(keys: Iterable[str]) -> None:
    ss = st.session_state
    for key in keys:
        if key in ss:
            ss[KEEP_PREFIX + key] = ss[key]


def set_widget(key: str, value: Any) -> None:
    """Set a widget's value from code (e.g. a link from another page); also updates its shadow."""
    st.session_state[key] = value
    st.session_state[KEEP_PREFIX + key] = value


def short_path(path: str | Path | None) -> str:
    if not path:
        return "—"
    p = Path(path)
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)
