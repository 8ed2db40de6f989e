"""The project installs into a virtual environment, and its CLIs then work from any folder.

A throw-away venv (no pip of its own) sees this interpreter's packages through a ``.pth`` file, so
nothing is downloaded; ``pip install --no-deps --no-build-isolation -e .`` (what
scripts/_install_project.sh runs) installs this checkout into it. The CLIs then run from ``/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def throwaway_venv(path: Path) -> Path:
    """A venv at ``path`` that imports this interpreter's site-packages (pip, setuptools, torch, ...)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "_shared_site_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _env() -> dict[str, str]:
    # what a user's shell has: no PYTHONPATH pointing at the checkout
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}


def test_editable_install_makes_the_clis_work_from_any_folder(tmp_path):
    python = throwaway_venv(tmp_path / "venv")
    before = subprocess.run([str(python), "-c", "import ctdiff"], cwd="/", capture_output=True, text=True, env=_env())
    assert before.returncode == 1 and "No module named 'ctdiff'" in before.stderr  # the failure users saw
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(REPO)],
        check=True,
        capture_output=True,
        env=_env(),
    )
    where = subprocess.run(
        [str(python), "-c", "import ctdiff, eval; print(ctdiff.__file__); print(eval.__file__)"],
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
        env=_env(),
    ).stdout.split()
    assert where == [str(REPO / "ctdiff" / "__init__.py"), str(REPO / "eval" / "__init__.py")]
    for module, expected in (("ctdiff", "usage: python -m ctdiff"), ("eval", "usage: python -m eval")):
        out = subprocess.run(
            [str(python), "-m", module, "--help"], cwd="/", capture_output=True, text=True, timeout=120, env=_env()
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(expected), out.stdout[:200]
    # the project's metadata is what pyproject.toml says, and its extras are there
    meta = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m; d = m.distribution('ctdiff');"
            "print(d.version); print(sorted(set(d.metadata.get_all('Provides-Extra'))))",
        ],
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
        env=_env(),
    ).stdout.splitlines()
    assert meta == ["0.1.0", "['app', 'eval', 'test']"]


def test_scripts_app_options():
    out = subprocess.run(["scripts/app", "--help"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert "--port N" in out.stdout and "fileWatcherType" in out.stdout and "docs/first-run.md" in out.stdout
    for bad in (["--port"], ["--port", "abc"], ["--port=x"]):
        out = subprocess.run(["scripts/app", *bad], cwd=REPO, capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and "--port needs a port number" in out.stderr, bad
