"""Cached access to files: volumes, case lists, reports, run histories.

Every cache is keyed by the path *and* its modification time, so a file rewritten on disk (a new
sample, a growing history.csv) is read again while an unchanged one is read once. Volumes sit in
``st.cache_resource`` (shared, never mutated: a 512x512x26 volume is not copied on each rerun);
small derived facts in ``st.cache_data``. Loaders return ``(value, error message)`` instead of
raising, so pages can show the message.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from ctdiff.data.io import find_cases, read_volume, read_volume_int16
from ctdiff.data.volume import Volume
from ctdiff.errors import CTDiffError
from ctdiff_app.browse import display_volume
from ctdiff_app.dashboard import load_report
from ctdiff_app.monitor import read_history, sampling_defaults
from ctdiff_app.workspace import volume_facts


def mtime_ns(path: str | os.PathLike) -> int:
    """Modification time of a file, or the newest of a folder and its direct entries (DICOM series)."""
    p = Path(path)
    try:
        t = p.stat().st_mtime_ns
        if p.is_dir():
            t = max([t] + [c.stat().st_mtime_ns for c in p.iterdir()])
        return t
    except (OSError, ValueError):
        return -1


@st.cache_resource(max_entries=16, show_spinner="Reading volume…")
def _volume(path: str, mtime: int) -> Volume:
    return read_volume(path)


def _os_message(path, exc: BaseException) -> str:
    """One line for a file-system refusal: the file's name and the reason, not the server path."""
    from pages.components.paths import os_problem, shorten

    return f"{shorten(Path(str(path)).name)}: cannot be read ({os_problem(exc)})"


def load_volume(path: str) -> tuple[Volume | None, str | None]:
    try:
        return _volume(str(path), mtime_ns(path)), None
    except CTDiffError as exc:
        return None, str(exc)
    except (OSError, ValueError) as exc:
        return None, _os_message(path, exc)


@st.cache_resource(max_entries=16, show_spinner=False)
def _display(path: str, mtime: int):
    return display_volume(_volume(path, mtime).array)


def load_display_array(path: str):
    """The volume as int16 HU for slicing on each slider move (see ctdiff_app.browse.display_volume)."""
    return _display(str(path), mtime_ns(path))


@st.cache_data(max_entries=64, show_spinner=False)
def _cases(folder: str, mtime: int) -> list[str]:
    return [str(p) for p in find_cases(folder)]


def list_cases(folder: str | None) -> tuple[list[str], str | None]:
    if not folder:
        return [], None
    try:
        return _cases(str(folder), mtime_ns(folder)), None
    except CTDiffError as exc:
        return [], str(exc)
    except (OSError, ValueError) as exc:
        return [], _os_message(folder, exc)


@st.cache_data(max_entries=512, show_spinner=False)
def _facts(path: str, mtime: int) -> dict[str, Any]:
    return volume_facts(path)


def facts_with_progress(paths: list[str], label: str) -> list[dict[str, Any]]:
    """Volume facts for many files; shows a progress bar while files are read the first time.

    Which files were read already is remembered per session (the values themselves are cached).
    """
    seen = st.session_state.setdefault("_facts_seen", set())
    keys = [(str(p), mtime_ns(p)) for p in paths]
    todo = [k for k in keys if k not in seen]
    bar = st.progress(0.0, text=f"Reading {len(todo)} {label} volume(s)…") if todo else None
    out = []
    for i, key in enumerate(keys):
        out.append(_facts(*key))
        seen.add(key)
        if bar is not None:
            bar.progress((i + 1) / len(keys), text=f"Reading {label} volumes: {i + 1}/{len(keys)}")
    if bar is not None:
        bar.empty()
    return out


@st.cache_data(max_entries=16, show_spinner=False)
def _report(path: str, mtime: int) -> dict[str, Any]:
    return load_report(path)


def report_file(report_dir: str | None) -> Path | None:
    if not report_dir:
        return None
    p = Path(report_dir)
    try:
        return p if p.is_file() else p / "report.json"
    except (OSError, ValueError):  # a path the file system refuses: load_report_cached says why
        return p / "report.json"


def load_report_cached(report_dir: str | None) -> tuple[dict | None, str | None]:
    f = report_file(report_dir)
    if f is None:
        return None, None
    try:
        return _report(str(f), mtime_ns(f)), None
    except CTDiffError as exc:
        return None, str(exc)
    except (OSError, ValueError) as exc:
        return None, _os_message(f, exc)


@st.cache_data(max_entries=8, show_spinner=False)
def _history(path: str, mtime: int):
    return read_history(path)


def load_history(run_dir: str):
    p = Path(run_dir) / "history.csv"
    try:
        if not p.exists():
            return None, None
    except (OSError, ValueError) as exc:
        return None, _os_message(p, exc)
    try:
        return _history(str(p), mtime_ns(p)), None
    except CTDiffError as exc:
        return None, str(exc)


@st.cache_data(max_entries=8, show_spinner=False)
def _sampling(run_dir: str, mtime: int) -> tuple[str, int]:
    return sampling_defaults(run_dir)


def load_sampling_defaults(run_dir: str) -> tuple[str, int]:
    """:func:`ctdiff_app.monitor.sampling_defaults`, re-read only when the run's config.yaml changes."""
    p = Path(run_dir) / "config.yaml"
    return _sampling(str(run_dir), mtime_ns(p) if p.exists() else 0)


@st.cache_data(max_entries=4096, show_spinner=False)
def _hash(path: str, mtime: int) -> str | None:
    from eval.report.provenance import scan_hash

    try:
        return scan_hash(path)
    except (OSError, ValueError):
        return None


def content_hashes(paths: list[str]) -> dict[str, str]:
    """{path: content hash} (eval.report.provenance.scan_hash), each file hashed once per mtime."""
    out = {}
    for p in paths:
        h = _hash(str(p), mtime_ns(p))
        if h:
            out[str(p)] = h
    return out


def file_signature(path: str | os.PathLike) -> tuple[int, ...]:
    """What tells a rewritten file from the cached one: modification time, size and inode.

    The inode catches an atomic rewrite (temp file + rename, as ctdiff writes) that lands within the
    file system's timestamp granularity. A folder (DICOM series) is its newest entry's time.
    """
    p = Path(path)
    try:
        st_ = p.stat()
        if p.is_dir():
            return (mtime_ns(p),)
        return (st_.st_mtime_ns, st_.st_size, st_.st_ino)
    except (OSError, ValueError):
        return (-1,)


@st.cache_resource(max_entries=8, show_spinner=False)  # one spinner for all panes: load_viewer_volumes
def _viewer_volume(path: str, signature: tuple[int, ...]):
    """The viewer's bytes of one file, built once per file version and shared by every session."""
    from pages.components.viewer import NIFTI_HEADER_BYTES, ViewerVolume

    array, affine = read_volume_int16(path)  # int16 straight from an int16 NIfTI: no float copy
    spacing = [float(s) for s in np.linalg.norm(affine[:3, :3], axis=0)]
    v = ViewerVolume(array, spacing, label="", origin=tuple(affine[:3, 3]))
    payload = v.payload("centre")
    v.content_id("centre")
    # keep the voxels once: the array becomes a read-only view into the bytes sent
    v.array = np.frombuffer(payload, np.int16, offset=NIFTI_HEADER_BYTES).reshape(v.shape, order="F")
    return v


def load_viewer_volume(path: str, label: str):
    """``(ViewerVolume, None)`` or ``(None, error)``: a file as the viewer's int16 HU bytes.

    Read and prepared once per file version (:func:`file_signature`) for every session and label;
    a rerun, another pane or another browser showing the same file re-reads nothing.
    """
    try:
        v = _viewer_volume(str(path), file_signature(path))
    except CTDiffError as exc:
        return None, str(exc)
    except (OSError, ValueError) as exc:
        return None, _os_message(path, exc)
    return dataclasses.replace(v, label=label), None


_prefetch_lock = threading.Lock()
_prefetched: set[tuple[str, tuple[int, ...]]] = set()  # started once per file version and server process


def prefetch_viewer_volume(path: str | os.PathLike) -> threading.Thread | None:
    """Prepare one file's viewer bytes in a background thread, once per file version (None: done before).

    Home calls it for the first case of each cohort, the pair the slice browser opens with: reading a
    512x512x133 ``.nii.gz`` and preparing its bytes took 0.6 s per file, which a first visit of the
    slice browser then does not wait for. Errors are left to the slice browser, which reads the file
    again and shows them.
    """
    from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

    key = (str(path), file_signature(path))
    with _prefetch_lock:
        if key in _prefetched:  # Home reruns on every interaction: no thread for what is under way or done
            return None
        _prefetched.add(key)

    def run() -> None:
        try:
            _viewer_volume(*key)
        except Exception:  # noqa: BLE001 - shown by the slice browser when it reads the file itself
            pass

    thread = threading.Thread(target=run, name="ctdiff-viewer-prefetch", daemon=True)
    add_script_run_ctx(thread, get_script_run_ctx())
    thread.start()
    return thread


def load_viewer_volumes(items: list[tuple[str, str]]) -> list[tuple[Any, str | None]]:
    """:func:`load_viewer_volume` for every ``(path, label)``, the files read at the same time.

    A cold visit of a pair reads two files, 0.6 s each for a 512x512x133 ``.nii.gz`` on an idle
    machine (gzip inflate, int16 copy, content hash: mostly outside the GIL); at once they took 0.84 s
    instead of 1.26 s for the real CT pair. Threads carry the page's script context, as Streamlit's
    caches and spinner need it.
    """
    from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

    if not items:
        return []
    ctx = get_script_run_ctx()

    def one(item: tuple[str, str]):
        add_script_run_ctx(threading.current_thread(), ctx)
        return load_viewer_volume(*item)

    with st.spinner("Preparing the volumes for the viewer…"):
        if len(items) == 1:
            return [load_viewer_volume(*items[0])]
        with ThreadPoolExecutor(max_workers=len(items), thread_name_prefix="ctdiff-viewer-read") as pool:
            return list(pool.map(one, items))
