"""The architecture is checked by the test command: import-linter's layer/cycle contracts and ruff.

The contracts live in pyproject.toml ([tool.importlinter]): ctdiff_app -> eval -> ctdiff, the core's
training -> diffusion -> model -> data, and no import cycle between sibling modules anywhere.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: pip install -r requirements-test.txt")
    return str(path)


def _run(cmd: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept():
    proc = _run([_tool("lint-imports"), "--no-cache"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in proc.stdout  # every contract was checked


def test_import_linter_catches_a_layer_violation(tmp_path):
    """The contracts bite: a core module importing the app breaks the layers contract."""
    shutil.copytree(
        REPO,
        tmp_path / "repo",
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "workspace", "test-artifacts", "*.nii.gz", "*.pt", "*.png", "*.html"
        ),
    )
    bad = tmp_path / "repo" / "ctdiff" / "data" / "io.py"
    bad.write_text(bad.read_text() + "\nimport ctdiff_app.workspace  # noqa\n")
    proc = _run([_tool("lint-imports"), "--no-cache"], cwd=tmp_path / "repo")
    assert proc.returncode == 1
    assert "ctdiff.data.io -> ctdiff_app.workspace" in proc.stdout


def test_ruff_check_is_clean():
    proc = _run([_tool("ruff"), "check", "--no-cache", "."])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-1000:]


def test_ruff_format_is_clean():
    proc = _run([_tool("ruff"), "format", "--check", "--no-cache", "."])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-1000:]
