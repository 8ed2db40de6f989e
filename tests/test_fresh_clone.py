"""A fresh clone runs the README's first command and shows the demo in a real browser.

The repository (its committed state) is cloned into a temporary folder, ``scripts/app`` is started
there exactly as the README says, and headless Debian chromium checks that the Home page lists the
demo cohorts (built on this first start from the shipped assets) and that the slice browser draws a
generated slice. The clone reuses this checkout's ``.venv`` (a symlink): installing the
requirements into a new environment is what CI's own fresh-machine run of ``scripts/test`` does.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.browser
def test_fresh_clone_shows_the_demo(tmp_path, streamlit_server, browser_page, artifact_dir):
    clone = tmp_path / "ctdiff"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    assert not (clone / "workspace").exists()  # nothing pre-built travels with the repository
    (clone / ".venv").symlink_to(REPO / ".venv")
    url = streamlit_server(cwd=clone, launcher=["scripts/app"], timeout=180,
                           unset=("CTDIFF_WORKSPACE", "CTDIFF_ORGANISER_CODE"))
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
    page.get_by_text(re.compile(r"Generated: case_\d{3} · axial slice \d+/32")).first.wait_for()
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .heatmaplayer image').length >= 2")
    page.screenshot(path=str(artifact_dir / "fresh-clone-slice-browser.png"), full_page=True)
