"""Hermetic test sessions: a temporary home and caches for the whole run, and a check at its end.

Imported first by ``tests/conftest.py`` (it is also a pytest plugin on its own: ``-p tests.hermetic``).

- On import, before any test module (or matplotlib, streamlit, ...) reads them, ``HOME``,
  ``XDG_CACHE_HOME``, ``XDG_CONFIG_HOME``, ``XDG_DATA_HOME``, ``CTDIFF_WORKSPACE`` and
  ``CTDIFF_CACHE_DIR`` point into one temporary folder. Subprocesses the tests start inherit them.
- At the end of the session the run FAILS (exit status 1) when the checkout changed (``git status
  --porcelain --ignored``, where only ``.venv/`` and Python's/pytest's own caches may change) or when
  ctdiff's places in the real home directory (and its top-level listing) changed.

With pytest-xdist (``scripts/test`` runs ``-n auto``) every worker imports this module too and gets a
temporary folder of its own (its ``REAL_HOME`` is then the main process's temporary HOME); the main
process, whose session ends after every worker's, is the one that checks the real checkout and home
and fails the run.

``CTDIFF_TESTS_KEEP_TMP=1`` keeps the temporary folder for inspection.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

# Where a checkout may change during a test run: the virtual environment (which also holds the
# real-CT test data cache, .venv/test-cache/) and the caches Python and the test tools write.
ALLOWED_DIRS = frozenset({".venv", ".pytest_cache", "__pycache__", ".hypothesis", ".ruff_cache"})
ALLOWED_SUFFIXES = (".egg-info", ".pyc")
# What in the real home directory only this project (and the app it starts) writes to. Places that
# other programs share (~/.config/chromium, matplotlib's cache) change while the user works; the
# top-level listing of ~ catches a new folder of any kind.
HOME_WATCHED = (".cache/ctdiff", ".config/ctdiff", ".local/share/ctdiff", ".streamlit")

REAL_HOME = Path(os.path.expanduser("~")).resolve()
TMP_ROOT = Path(tempfile.mkdtemp(prefix="ctdiff-tests-")).resolve()
ISOLATED = {
    "HOME": TMP_ROOT / "home",
    "XDG_CACHE_HOME": TMP_ROOT / "home" / ".cache",
    "XDG_CONFIG_HOME": TMP_ROOT / "home" / ".config",
    "XDG_DATA_HOME": TMP_ROOT / "home" / ".local" / "share",
    "CTDIFF_WORKSPACE": TMP_ROOT / "workspace",
    "CTDIFF_CACHE_DIR": TMP_ROOT / "home" / ".cache" / "ctdiff" / "features",
}
for _name, _path in ISOLATED.items():
    _path.mkdir(parents=True, exist_ok=True)
    os.environ[_name] = str(_path)


def _allowed(rel: str) -> bool:
    parts = Path(rel.rstrip("/")).parts
    return any(p in ALLOWED_DIRS or p.endswith(ALLOWED_SUFFIXES) for p in parts)


def tree_signature(path: Path) -> tuple:
    """(relative path, size, mtime) of every file and folder below ``path`` (or of the file itself)."""
    if not path.exists() and not path.is_symlink():
        return ()
    if not path.is_dir() or path.is_symlink():
        st = path.lstat()
        return (("", st.st_size, st.st_mtime_ns),)
    found = [(".", -1, 0)]  # an existing (maybe empty) folder differs from a missing one
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = Path(root) / name
            try:
                st = p.lstat()
            except OSError:
                continue
            found.append((str(p.relative_to(path)), 0 if p.is_dir() else st.st_size, st.st_mtime_ns))
    return tuple(sorted(found))


def checkout_state(root: Path) -> dict[str, tuple] | None:
    """What ``git status --porcelain --ignored`` lists in ``root`` outside the allowed places, with a
    signature of each entry's content; None when ``root`` is not a git checkout."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain=v1", "-z", "--ignored=matching", "--untracked-files=all"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    state = {}
    entries = out.split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if not entry:
            continue
        code, rel = entry[:2], entry[3:]
        if code[0] in "RC":  # a rename/copy carries its source path as the next entry
            i += 1
        if _allowed(rel):
            continue
        state[rel] = (code, tree_signature(root / rel))
    return state


def home_state(home: Path) -> dict[str, tuple]:
    """The real home's top-level names, and a signature of each place in ``HOME_WATCHED``."""
    try:
        names = tuple(sorted(os.listdir(home)))
    except OSError:
        names = ()
    state: dict[str, tuple] = {"~ (listing)": names}
    for rel in HOME_WATCHED:
        state[f"~/{rel}"] = tree_signature(home / rel)
    return state


def differences(before: dict[str, tuple] | None, after: dict[str, tuple] | None) -> list[str]:
    """One line per entry that appeared, changed or disappeared between two states."""
    if before is None or after is None:
        return []
    lines = []
    for key in sorted(set(before) | set(after)):
        if key not in before:
            lines.append(f"new: {key}")
        elif key not in after:
            lines.append(f"gone: {key}")
        elif before[key] != after[key]:
            if key == "~ (listing)":
                added = sorted(set(after[key]) - set(before[key]))
                removed = sorted(set(before[key]) - set(after[key]))
                lines.append(f"changed: ~ (new: {', '.join(added) or '-'}; gone: {', '.join(removed) or '-'})")
            else:
                lines.append(f"changed: {key}")
    return lines


_BEFORE: dict[str, object] = {}


def pytest_configure(config):
    _BEFORE["root"] = Path(config.rootpath)
    _BEFORE["checkout"] = checkout_state(Path(config.rootpath))
    _BEFORE["home"] = home_state(REAL_HOME)


def pytest_sessionfinish(session, exitstatus):
    import pytest

    if "root" not in _BEFORE:
        return
    problems = [
        f"checkout {_BEFORE['root']}: {d}" for d in differences(_BEFORE["checkout"], checkout_state(_BEFORE["root"]))
    ]  # type: ignore[arg-type]
    problems += [f"real home {REAL_HOME}: {d}" for d in differences(_BEFORE["home"], home_state(REAL_HOME))]  # type: ignore[arg-type]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if problems:
        if reporter is not None:
            reporter.write_sep("=", "tests were not hermetic: they wrote outside tmp_path", red=True)
            for line in problems:
                reporter.write_line(line)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if not os.environ.get("CTDIFF_TESTS_KEEP_TMP"):
        shutil.rmtree(TMP_ROOT, ignore_errors=True)
