"""A fresh clone runs the README's two commands in the order that used to break, and shows the demo.

The repository (its committed state) is cloned into a temporary folder with a throw-away ``.venv``
that sees this interpreter's packages through a ``.pth`` file (installing the pinned requirements is
what CI's own fresh-machine run of ``scripts/test`` does), so the scripts' own steps run for real:
``pip install -e .`` of the clone into that venv, ``scripts/test``'s pytest on one PostgreSQL
review-store test (which used to leave ``workspace/demo/review-cache/`` behind and an empty app), then
``scripts/app``. Headless Debian chromium checks that Home lists the demo cohorts (built on this first
start from the shipped assets) and that the slice browser draws a generated slice. In between, the
venv's Python runs the CLI from ``/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.test_install import throwaway_venv

REPO = Path(__file__).resolve().parents[1]
# what a user's shell does not have: the test session's own isolation and this checkout on the path
USER_UNSET = (
    "CTDIFF_WORKSPACE",
    "CTDIFF_ORGANISER_CODE",
    "CTDIFF_CACHE_DIR",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "PYTHONPATH",
)


def _user_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in USER_UNSET}


def _fresh_clone(tmp_path: Path) -> Path:
    clone = tmp_path / "ctdiff"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    assert not (clone / "workspace").exists()  # nothing pre-built travels with the repository
    throwaway_venv(clone / ".venv")
    # the requirements are "installed" (visible through the .pth): the scripts' stamps say so
    reqs = (clone / "requirements.txt").read_bytes() + (clone / "requirements-test.txt").read_bytes()
    (clone / ".venv" / ".requirements-test.sha256").write_text(hashlib.sha256(reqs).hexdigest() + "\n")
    return clone


def _leftovers(clone: Path) -> list[str]:
    out = subprocess.run(
        ["git", "status", "--porcelain", "--ignored"], cwd=clone, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return [line for line in out if not re.search(r"(^|/)(\.venv|\.pytest_cache|__pycache__)/", line[3:])]


@pytest.mark.browser
@pytest.mark.slow
def test_fresh_clone_test_then_app_shows_the_demo(tmp_path, streamlit_server, browser_page, artifact_dir):
    clone = _fresh_clone(tmp_path)
    # 1. scripts/test first, on one review-store test on PostgreSQL
    test = subprocess.run(
        ["scripts/test", "tests/eval/review/test_store_postgres.py", "-k", "round_trip", "-q"],
        cwd=clone,
        env=_user_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert test.returncode == 0, test.stdout[-3000:] + test.stderr[-3000:]
    assert "1 passed" in test.stdout and "not hermetic" not in test.stdout
    assert "installing this checkout into .venv" in test.stderr
    assert not (clone / "workspace").exists() and _leftovers(clone) == []
    # 2. the CLI from any folder with the venv's Python
    for module in ("ctdiff", "eval"):
        cli = subprocess.run(
            [str(clone / ".venv" / "bin" / "python"), "-m", module, "--help"],
            cwd="/",
            env=_user_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cli.returncode == 0 and cli.stdout.startswith(f"usage: python -m {module}"), cli.stderr
    where = subprocess.run(
        [str(clone / ".venv" / "bin" / "python"), "-c", "import ctdiff; print(ctdiff.__file__)"],
        cwd="/",
        env=_user_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where == str(clone / "ctdiff" / "__init__.py")
    # 3. then scripts/app: builds the demo and serves it
    url = streamlit_server(cwd=clone, launcher=["scripts/app"], timeout=180, unset=USER_UNSET)
    page = browser_page
    page.set_default_timeout(240_000)  # the first start builds workspace/demo
    page.goto(url)
    page.get_by_text("Real volumes").wait_for()
    page.get_by_text("Generated volumes").wait_for()
    # the page renders top to bottom while its script runs: wait for the last block (the demo
    # session's reader code), not for the running indicator, which may not have appeared yet
    page.get_by_text("demo-reader").first.wait_for()  # the demo review session's reader code is shown
    page.wait_for_function("() => !document.querySelector(\"[data-testid='stStatusWidget']\")")
    info = json.loads((clone / "workspace" / "demo" / "workspace.json").read_text())
    assert info["complete"] is True
    page.wait_for_function(  # both cohorts counted (a metric may still show its previous run's value)
        "() => { const t = [...document.querySelectorAll(\"[data-testid='stMetric']\")].map(m => m.innerText);"
        " return t.some(x => /Real volumes\\s+12/.test(x)) && t.some(x => /Generated volumes\\s+12/.test(x)); }",
        timeout=60_000,
    )
    metrics = page.locator("[data-testid='stMetric']").all_inner_texts()
    assert any(re.search(r"Real volumes\s+12", m) for m in metrics), metrics
    assert any(re.search(r"Generated volumes\s+12", m) for m in metrics), metrics
    page.screenshot(path=str(artifact_dir / "fresh-clone-home.png"), full_page=True)

    page.goto(url + "/Slice_browser")
    shape = json.loads((clone / "ctdiff_app" / "demo" / "assets" / "assets.json").read_text())["train_cohort"]["shape"]
    x, y, z = shape  # the demo model's volumes (128x128x32 since issue 20)
    page.get_by_text(re.compile(rf"Generated: case_\d{{3}} · shape {x}×{y}×{z}")).first.wait_for()
    page.wait_for_selector("iframe[src*='ct_viewer']")
    viewer = next(f for f in page.frames if "ct_viewer" in f.url)  # the NiiVue viewer, both volumes drawn
    viewer.wait_for_function("() => window.ctViewer && window.ctViewer.ready", timeout=120_000)
    assert f"axial {z // 2 + 1}/{z}" in viewer.locator(".status").nth(1).inner_text()  # the middle slice, from 1
    page.screenshot(path=str(artifact_dir / "fresh-clone-slice-browser.png"), full_page=True)
