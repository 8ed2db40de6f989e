#!/usr/bin/env python3
"""Screenshot of the slice browser on real CT for the README: docs/screenshots/real-ct-slice-browser.png.

    scripts/real_ct_screenshot.py [--cache DIR]

Builds a throw-away workspace whose Real cohort is the real-CT folder of ``python -m ctdiff real-ct``
(chest/abdomen 512x512x133 and head) and whose Generated cohort is the demo model's shipped
samples, which is what the demo shows after "Show the real CT scans as the Real cohort" on Home,
then opens the slice browser in headless Debian chromium (as scripts/readme_demo.py does).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from readme_demo import CHROMIUM_ARGS, app_server  # scripts/ is on sys.path: this script's folder

from ctdiff.data.realct import install_cohort
from ctdiff_app.demo import ASSETS

OUT = REPO / "docs" / "screenshots" / "real-ct-slice-browser.png"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=None, help="real-CT cache (default: ctdiff.data.realct's)")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="ctdiff-real-ct-shot-") as tmp:
        ws = Path(tmp) / "ws"
        got = install_cohort(ws / "real", cache=args.cache)
        if "missing" in got:
            raise SystemExit(got["missing"])
        shutil.copytree(ASSETS / "samples", ws / "generated")
        (ws / "workspace.json").write_text(json.dumps({"name": "real CT"}))
        with app_server({"CTDIFF_WORKSPACE": str(ws)}) as url:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(180_000)
                page.goto(f"{url}/Slice_browser")
                # the server-rendered viewer: one full-resolution image per pane, no WebGL textures to build
                page.get_by_text("server-rendered").first.click()
                page.locator(".js-plotly-plot .heatmaplayer image").first.wait_for()
                page.get_by_text("chest_abdomen").first.wait_for()
                page.wait_for_timeout(1500)
                page.wait_for_function("() => !document.querySelector(\"[data-testid='stStatusWidget']\")")
                page.wait_for_timeout(1500)
                OUT.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(OUT), full_page=True)
                browser.close()
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
