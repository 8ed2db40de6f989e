"""The app in a real browser: ``streamlit run app.py`` driven by Playwright in Debian's chromium.

Opens Home, then each page from the sidebar; checks its title and that it shows an image; scrolls
the slice browser's viewer with the keyboard and checks the slice number follows on both panes; saves a screenshot of
each page to ``page-<name>.png`` in the test artifacts folder (``artifact_dir`` in tests/conftest.py;
the README's come from scripts/readme_demo.py).
The workspace holds synthetic pelvis phantoms (``ctdiff.data.phantom``) so the pictures look like CT.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from ctdiff.data.display import apply_window, plane_slice
from ctdiff.data.io import write_nifti
from ctdiff.data.phantom import make_phantom

SHAPE = (192, 192, 24)


def _write_report(ws: Path, real: list[Path], gen: list[Path]) -> None:
    """A small report.json in the eval schema (values made up for the test, clearly labelled)."""
    report = {
        "schema": "ctdiff-eval-report/1",
        "inputs": {"real": str(ws / "real"), "generated": str(ws / "generated"), "note": "browser-test fixture"},
        "settings": {"seed": 0},
        "metrics": {
            "frd": {
                "value": 21.0,
                "ci95": [17.5, 26.0],
                "real": None,
                "generated": None,
                "reference": 9.0,
                "better": "lower",
                "unit": "",
                "reason": None,
                "description": "Fréchet radiomics distance",
            },
            "noise_sd": {
                "value": 12.0,
                "ci95": [9.0, 15.0],
                "real": 20.0,
                "generated": 32.0,
                "reference": 4.0,
                "better": "closer-to-real",
                "unit": "HU",
                "reason": None,
                "description": "noise SD in flat soft tissue",
            },
            "mean_hu_soft_tissue": {
                "value": 3.0,
                "ci95": [1.0, 5.0],
                "real": 41.0,
                "generated": 44.0,
                "reference": 3.0,
                "better": "closer-to-real",
                "unit": "HU",
                "reason": None,
                "description": "mean HU in muscle",
            },
            "coverage": {
                "value": 0.62,
                "ci95": [0.5, 0.75],
                "real": None,
                "generated": None,
                "reference": 0.9,
                "better": "higher",
                "unit": "",
                "reason": None,
                "description": "coverage of real features",
            },
        },
        "per_case": [
            *(
                {
                    "cohort": "real",
                    "file": str(p),
                    "case": p.name[:-7],
                    "noise_sd": 19.0 + 2 * i,
                    "contrast_rms": 180.0 + 5 * i,
                    "ssim_nearest_real": None,
                    "nearest_real_file": None,
                }
                for i, p in enumerate(real)
            ),
            *(
                {
                    "cohort": "generated",
                    "file": str(p),
                    "case": p.name[:-7],
                    "noise_sd": 30.0 + 3 * i,
                    "contrast_rms": 160.0 + 4 * i,
                    "ssim_nearest_real": 0.71 + 0.1 * i,
                    "nearest_real_file": str(real[i % len(real)]),
                }
                for i, p in enumerate(gen)
            ),
        ],
        "curves": {
            "hu_histogram": {
                "bin_edges": list(range(-1100, 1101, 100)),
                "real": list(np.exp(-(((np.arange(-1050, 1050, 100) - 30) / 250.0) ** 2)) / 8),
                "generated": list(np.exp(-(((np.arange(-1050, 1050, 100) - 60) / 300.0) ** 2)) / 9),
            },
            "nps": {
                "frequency_mm": list(np.linspace(0.02, 0.6, 20)),
                "real": list(400 * np.linspace(0.02, 0.6, 20) * np.exp(-np.linspace(0.02, 0.6, 20) / 0.15)),
                "generated": list(700 * np.linspace(0.02, 0.6, 20) * np.exp(-np.linspace(0.02, 0.6, 20) / 0.18)),
            },
        },
        "memorization_flagged": [
            {"generated": str(gen[1]), "nearest_train": str(real[1]), "distance": 0.012, "threshold": 0.05}
        ],
    }
    (ws / "report").mkdir(parents=True)
    (ws / "report" / "report.json").write_text(json.dumps(report, indent=1))
    (ws / "report" / "report.html").write_text("<html><body><h1>report</h1></body></html>")


def _write_run(run: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    rng = np.random.default_rng(0)
    (run / "previews").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "config.yaml").write_text(
        "data:\n  hu_window: [-1000, 1000]\nmodel:\n  channels: [32, 64, 64, 128]\n"
        "training:\n  epochs: 60\n  lr: 0.0001\n  batch_size: 1\n"
    )
    (run / "split.json").write_text(
        json.dumps({"seed": 0, "train": ["case_000.nii.gz", "case_001.nii.gz"], "val": ["case_002.nii.gz"]})
    )
    rows = ["epoch,step,train_loss,val_loss,lr,seconds"]
    for e in range(1, 61):
        train = 0.02 + 0.5 * np.exp(-e / 8) * (1 + 0.25 * rng.standard_normal())
        val = f"{0.025 + 0.5 * np.exp(-e / 8) * (1 + 0.3 * rng.standard_normal()):.5f}" if e % 5 == 0 else ""
        rows.append(f"{e},{e * 3},{abs(train):.5f},{val},{1e-4 * min(1.0, e / 10):.3e},{e * 4.0:.1f}")
    (run / "history.csv").write_text("\n".join(rows) + "\n")
    for epoch, noise in ((15, 400.0), (30, 150.0), (45, 60.0), (60, 30.0)):
        vol, _ = make_phantom(shape=(128, 128, 8), seed=50, noise_hu=noise)
        mpimg.imsave(
            run / "previews" / f"epoch_{epoch:04d}.png",
            apply_window(plane_slice(vol.array, "axial", 4), 400, 40),
            cmap="gray",
            vmin=0,
            vmax=255,
        )


@pytest.fixture
def phantom_workspace(tmp_path) -> Path:
    ws = tmp_path / "phantom-ws"
    real = [write_nifti(make_phantom(shape=SHAPE, seed=s)[0], ws / "real" / f"case_{s:03d}.nii.gz") for s in (1, 2)]
    gen = [
        write_nifti(make_phantom(shape=SHAPE, seed=s, noise_hu=32.0)[0], ws / "generated" / f"sample_{i:03d}.nii.gz")
        for i, s in enumerate((11, 12))
    ]
    _write_report(ws, real, gen)
    _write_run(ws / "run")
    (ws / "workspace.json").write_text(
        json.dumps({"name": "browser-test", "note": "synthetic phantoms, not patient data"})
    )
    return ws


def _open_from_sidebar(page, label: str, title: str) -> None:
    page.locator("[data-testid='stSidebarNav'] a", has_text=label).first.click()
    page.get_by_role("heading", name=title, exact=True).wait_for()


def _wait_idle(page) -> None:
    """Until Streamlit has finished the rerun (no 'running' status widget)."""
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector(\"[data-testid='stStatusWidget']\")", timeout=60_000)


def _plots_drawn(page, n: int) -> None:
    """At least ``n`` plotly charts with a drawn heatmap/trace layer."""
    page.wait_for_function(
        f"() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= {n}", timeout=60_000
    )


@pytest.mark.browser
def test_every_page_in_chromium(phantom_workspace, streamlit_server, browser_page, artifact_dir):
    page = browser_page
    page.set_viewport_size({"width": 1400, "height": 1400})
    url = streamlit_server("app.py", env={"CTDIFF_WORKSPACE": str(phantom_workspace)})
    shots = {}

    # Home
    page.goto(url)
    page.get_by_role("heading", name="ctdiff: synthetic CT, side by side with real").wait_for()
    page.get_by_text("Real volumes").wait_for()
    _wait_idle(page)
    assert page.get_by_text("shape 192×192×24").first.is_visible()
    shots["home"] = artifact_dir / "page-home.png"
    page.screenshot(path=str(shots["home"]), full_page=True)

    # Slice browser: both volumes in the NiiVue viewer, scrolled with the keyboard in the browser
    _open_from_sidebar(page, "Slice browser", "Slice browser")
    page.wait_for_selector("iframe[src*='ct_viewer']")
    viewer = next(f for f in page.frames if "ct_viewer" in f.url)
    viewer.wait_for_function("() => window.ctViewer && window.ctViewer.ready")
    status = lambda i: viewer.locator(".status").nth(i).inner_text()  # noqa: E731
    assert "axial 13/24" in status(0) and "axial 13/24" in status(1)
    viewer.locator("#pane-0").click()
    for target in (14, 15, 16):  # no rerun per press: the viewer scrolls in the browser
        page.keyboard.press("ArrowUp")
        assert f"axial {target}/24" in status(0)
    assert "axial 16/24" in status(1)  # linked: the generated pane moved with it
    viewer.locator("#pane-0").hover()  # the HU readout under the cursor
    assert re.search(r"voxel \(\d+, \d+, \d+\) = -?\d+(\.\d)? HU", status(0))
    _wait_idle(page)
    shots["slice-browser"] = artifact_dir / "page-slice-browser.png"
    page.screenshot(path=str(shots["slice-browser"]), full_page=True)

    # Metrics dashboard
    _open_from_sidebar(page, "Metrics dashboard", "Metrics dashboard")
    page.locator("[data-testid='stDataFrame']").first.wait_for()
    _plots_drawn(page, 1)
    page.get_by_text("closer to a training scan than the threshold").wait_for()
    _wait_idle(page)
    shots["metrics-dashboard"] = artifact_dir / "page-metrics-dashboard.png"
    page.screenshot(path=str(shots["metrics-dashboard"]), full_page=True)

    # Training monitor: loss curves and a preview image; the epoch slider moves
    _open_from_sidebar(page, "Training monitor", "Training monitor")
    _plots_drawn(page, 2)
    page.get_by_text("Preview sample after epoch 60").wait_for()
    page.wait_for_function(
        "() => { const i = document.querySelector(\"[data-testid='stImage'] img\"); return i && i.complete && i.naturalWidth > 0; }"
    )
    _wait_idle(page)
    epoch = page.get_by_role("slider").first
    epoch.focus()
    epoch.press("ArrowLeft")
    page.get_by_text("Preview sample after epoch 45").wait_for()
    _wait_idle(page)
    page.get_by_role("heading", name="Training monitor", exact=True).scroll_into_view_if_needed()
    shots["training-monitor"] = artifact_dir / "page-training-monitor.png"
    page.screenshot(path=str(shots["training-monitor"]), full_page=True)

    for name, path in shots.items():
        assert path.stat().st_size > 10_000, name  # a real picture, not a blank page
