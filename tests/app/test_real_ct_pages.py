"""The slice browser and the review reader page on the real 512x512x133 chest/abdomen CT (AppTest)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
READER = "pages/5_Review_reader.py"
BROWSER = "pages/1_Slice_browser.py"


def _workspace(real_ct, tmp_path):
    """A workspace whose real/ holds the chest/abdomen scan and generated/ the head."""
    ws = tmp_path / "ws"
    (ws / "real").mkdir(parents=True)
    (ws / "generated").mkdir()
    shutil.copyfile(real_ct / "chest_abdomen.nii.gz", ws / "real" / "chest_abdomen.nii.gz")
    shutil.copyfile(real_ct / "head.nii.gz", ws / "generated" / "head.nii.gz")
    (ws / "workspace.json").write_text(json.dumps({"name": "real-ct-test"}))
    return ws


@pytest.mark.slow
def test_slice_browser_opens_the_full_resolution_scan(real_ct, real_chest, tmp_path, monkeypatch, page, charts):
    ws = _workspace(real_ct, tmp_path)
    monkeypatch.setenv("CTDIFF_WORKSPACE", str(ws))
    monkeypatch.chdir(REPO)
    at = page(BROWSER)
    at.session_state["renderer"] = "server"  # AppTest runs no JavaScript: check the server-rendered images
    at.run(timeout=180)
    assert not at.exception, at.exception
    text = "\n".join(c.value for c in at.caption)
    assert "Real: **chest_abdomen** · axial slice **67/133**" in text
    real = charts(at)[0]
    z = np.asarray(real["data"][0]["z"])
    assert z.shape == (512, 512)  # full resolution, rows = y, columns = x
    vol, _ = real_chest
    # the shown values are the scan's HU at the middle slice (radiological: image left = patient right)
    expected = vol.array[::-1, ::-1, 66].T
    np.testing.assert_array_equal(z, expected)


@pytest.mark.slow
def test_reader_page_shows_the_full_resolution_scan(real_ct, tmp_path, monkeypatch, page):
    from eval.review import store
    from eval.review.db import dispose_engines

    ws = _workspace(real_ct, tmp_path)
    db = f"sqlite:///{tmp_path / 'reviews.sqlite'}"
    monkeypatch.setenv("CTDIFF_WORKSPACE", str(ws))
    monkeypatch.setenv("CTDIFF_REVIEW_DB", db)
    monkeypatch.chdir(REPO)
    try:
        sid = store.create_session(db, "Real CT", ws / "real", ws / "generated", n_per_cohort=1, seed=0)
        store.add_reader(db, sid, "Reader", code="real-ct-reader")
        at = page(READER)
        at.run(timeout=180)
        at.text_input(key="review_code_input").input("real-ct-reader")
        [b for b in at.button if b.label == "Start reading"][0].click().run(timeout=180)
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert [m.value.replace("*", "") for m in at.markdown if m.value.startswith("**Case ")] == ["Case 1 of 2"]
        (code,) = [c.value.removeprefix("case ID ").split(" ")[0] for c in at.caption if c.value.startswith("case ID ")]
        (image,) = at.get("image")
        assert image.proto.imgs[0].url.endswith(".png")
        # the case the page shows is one of the two scans, resampled onto the session's common display
        # grid, whose field of view holds the chest's 360 mm
        reader = store.find_reader(db, "real-ct-reader")
        array, grid = store.load_case_array(db, reader.reader_id, code)
        assert array.shape == tuple(grid.shape)
        assert min(n * d for n, d in zip(grid.shape[:2], grid.spacing[:2])) > 280
        assert array.min() < -900 and array.max() > 1000  # HU, air to bone
    finally:
        dispose_engines()


def test_home_offers_the_demo_real_ct_cohort_or_says_why_it_is_missing(app_env, page):
    """workspace.json's real_ct_cohort: a folder -> a button that makes it the Real cohort; missing -> the reason."""
    ws = app_env
    shutil.copytree(ws / "real", ws / "real-ct")  # stands in for the two scans
    info = json.loads((ws / "workspace.json").read_text())
    # relative to the workspace, as the demo writes it (an absolute path, as older workspaces hold, works alike)
    (ws / "workspace.json").write_text(json.dumps({**info, "real_ct_cohort": {"folder": "real-ct"}}))
    at = page("app.py")
    at.run()
    assert not at.exception
    assert at.session_state["real_dir"] == str(ws / "real")
    assert any("Real CT." in i.value for i in at.info)
    (button,) = [b for b in at.button if b.label == "Show the real CT scans as the Real cohort"]
    button.click().run()
    assert at.session_state["real_dir"] == str(ws / "real-ct")
    assert at.text_input(key="input_real_dir").value == str(ws / "real-ct")

    (ws / "workspace.json").write_text(
        json.dumps({**info, "real_ct_cohort": {"missing": "cannot get the scans (offline)"}})
    )
    at = page("app.py")
    at.run()
    assert "Real CT cohort missing from the demo: cannot get the scans (offline)" in [c.value for c in at.caption]
    assert not [b for b in at.button if b.label == "Show the real CT scans as the Real cohort"]
