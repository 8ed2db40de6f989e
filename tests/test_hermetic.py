"""The session-end cleanliness check (tests/hermetic.py): a run that writes into the checkout or the
real home directory fails; the temporary HOME, workspace and caches are what the tests see."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import hermetic

REPO = Path(__file__).resolve().parents[1]


def test_this_session_runs_in_a_temporary_home():
    for name in ("HOME", "XDG_CACHE_HOME", "CTDIFF_WORKSPACE", "CTDIFF_CACHE_DIR"):
        assert Path(os.environ[name]).is_relative_to(hermetic.TMP_ROOT), name
    assert Path.home() != hermetic.REAL_HOME
    from ctdiff.cachedir import user_cache_dir
    from eval.report.cache import default_cache_dir
    from eval.review.store import cache_root

    assert user_cache_dir() == hermetic.TMP_ROOT / "home" / ".cache" / "ctdiff"
    assert default_cache_dir().is_relative_to(hermetic.TMP_ROOT)
    # the review store's array cache for a database that is not a SQLite file: the user cache, not the workspace
    assert cache_root("sqlite://") == user_cache_dir() / "review-cache"


def _git_repo(path: Path) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "tracked.txt").write_text("a\n")
    subprocess.run(["git", "-C", str(path), "add", "tracked.txt"], check=True)
    subprocess.run(
        ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], check=True
    )
    return path


def test_checkout_differences_name_each_new_or_changed_path(tmp_path):
    repo = _git_repo(tmp_path / "repo")
    (repo / "was-untracked.txt").write_text("before\n")
    before = hermetic.checkout_state(repo)
    # allowed: the venv (and the real-CT test cache inside it), Python's and pytest's caches
    (repo / ".venv" / "test-cache").mkdir(parents=True)
    (repo / ".venv" / "test-cache" / "scan.nii.gz").write_bytes(b"x")
    (repo / "pkg" / "__pycache__").mkdir(parents=True)
    (repo / "pkg" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"x")
    (repo / ".pytest_cache").mkdir()
    assert hermetic.differences(before, hermetic.checkout_state(repo)) == []
    # not allowed: a new file (even a git-ignored one), a changed tracked file, a changed untracked file
    (repo / ".gitignore").write_text("workspace/\n")
    (repo / "workspace" / "demo" / "review-cache").mkdir(parents=True)
    (repo / "workspace" / "demo" / "review-cache" / "a.npy").write_bytes(b"x")
    (repo / "tracked.txt").write_text("b\n")
    (repo / "was-untracked.txt").write_text("after, longer\n")
    assert hermetic.differences(before, hermetic.checkout_state(repo)) == [
        "new: .gitignore",
        "new: tracked.txt",
        "changed: was-untracked.txt",
        "new: workspace/",
    ]


def test_home_differences(tmp_path):
    home = tmp_path / "home"
    (home / ".cache" / "ctdiff").mkdir(parents=True)
    before = hermetic.home_state(home)
    (home / ".cache" / "pip").mkdir()  # not a place of ours, and not top-level: ignored
    assert hermetic.differences(before, hermetic.home_state(home)) == []
    (home / ".cache" / "ctdiff" / "features").mkdir()
    (home / ".streamlit").mkdir()
    assert hermetic.differences(before, hermetic.home_state(home)) == [
        "changed: ~ (new: .streamlit; gone: -)",
        "changed: ~/.cache/ctdiff",
        "changed: ~/.streamlit",
    ]


INNER_TESTS = """
import os
from pathlib import Path

def test_writes_into_the_temporary_home():
    (Path.home() / ".cache" / "ctdiff" / "x").parent.mkdir(parents=True, exist_ok=True)
    (Path.home() / ".cache" / "ctdiff" / "x").write_text("fine")
    (Path(os.environ["CTDIFF_WORKSPACE"]) / "y").write_text("fine")

def test_maybe_leaks():
    if os.environ.get("LEAK") == "checkout":
        Path("leaked-into-checkout.txt").write_text("bad")
    if os.environ.get("LEAK") == "home":
        # the outer session's HOME: the inner session's real home (hermetic.REAL_HOME in one process;
        # an xdist worker's own REAL_HOME is already its main process's temporary home)
        real_home = Path(os.environ["OUTER_HOME"])
        (real_home / ".cache" / "ctdiff").mkdir(parents=True, exist_ok=True)
        (real_home / ".cache" / "ctdiff" / "leaked").write_text("bad")
"""


def _inner_run(repo: Path, leak: str, workers: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "LEAK": leak, "OUTER_HOME": str(Path.home())}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.hermetic",
            "-p",
            "no:cacheprovider",
            *workers,
            "-q",
            "test_inner.py",
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_a_session_that_leaks_fails(tmp_path, workers):
    """A whole pytest session with the plugin: passing tests that leak make the run fail, naming the leak,
    in one process and with pytest-xdist workers (as scripts/test runs), where the main process checks.

    Inside it, the "real" home is this session's temporary HOME, so nothing real is touched."""
    repo = _git_repo(tmp_path / "repo")
    (repo / "test_inner.py").write_text(INNER_TESTS)
    clean = _inner_run(repo, "", workers)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "2 passed" in clean.stdout and "not hermetic" not in clean.stdout

    leak = _inner_run(repo, "checkout", workers)
    assert leak.returncode == 1, leak.stdout + leak.stderr
    assert "2 passed" in leak.stdout
    assert "tests were not hermetic" in leak.stdout and "new: leaked-into-checkout.txt" in leak.stdout
    (repo / "leaked-into-checkout.txt").unlink()

    leak = _inner_run(repo, "home", workers)
    assert leak.returncode == 1, leak.stdout + leak.stderr
    assert f"real home {Path.home().resolve()}: changed: ~/.cache/ctdiff" in leak.stdout
