"""The app on a real demo workspace that was built in a staging folder, renamed into place and then
moved: every page finds its data (the workspace stores no absolute path of its own)."""

from __future__ import annotations

import pytest

from ctdiff_app.demo import DEMO_READER_CODE, REVIEW_PER_COHORT, ensure_demo_workspace
from eval.review.db import dispose_engines


@pytest.fixture(scope="module")
def moved_demo(tmp_path_factory):
    import ctdiff.data.realct

    mp = pytest.MonkeyPatch()
    # the real-CT stage copies two large scans; the pages below do not need them
    mp.setattr(ctdiff.data.realct, "install_cohort", lambda folder, **kw: {"missing": "not in this test"})
    root = tmp_path_factory.mktemp("demo-pages")
    ensure_demo_workspace(root / "built")
    mp.undo()
    moved = root / "moved" / "demo"
    moved.parent.mkdir()
    (root / "built").rename(moved)
    return moved


@pytest.fixture
def demo_env(monkeypatch, moved_demo):
    from tests.app.conftest import REPO

    monkeypatch.setenv("CTDIFF_WORKSPACE", str(moved_demo))
    monkeypatch.delenv("CTDIFF_REVIEW_DB", raising=False)
    monkeypatch.chdir(REPO)
    yield moved_demo
    dispose_engines()


def test_home_browser_dashboard_and_reader_find_the_moved_demo(demo_env, page):
    ws = demo_env
    home = page("app.py").run()
    assert not home.exception and not home.error, [e.value for e in home.error]
    metrics = {m.label: m.value for m in home.metric}
    assert metrics["Real volumes"] == "12" and metrics["Generated volumes"] == "12"
    assert home.session_state["report_dir"] == str(ws / "report") and home.session_state["run_dir"] == str(ws / "run")
    assert any("demo-reader" in i.value for i in home.info)

    browser = page("pages/1_Slice_browser.py")
    browser.session_state["renderer"] = "server"
    browser.run()
    browser.radio(key="view").set_value("nearest real").run()
    assert not browser.exception and not browser.error
    # the report (paths relative to report/) is bound to these scans by content: no "other scans" or
    # "not in the selected real folder" warning, and the nearest real scan and its SSIM are shown
    assert not [w.value for w in browser.warning if "other scans" in w.value or "not in the" in w.value]
    assert any("SSIM" in c.value for c in browser.caption)

    dashboard = page("pages/2_Metrics_dashboard.py").run()
    assert not dashboard.exception and not dashboard.error
    assert not [w.value for w in dashboard.warning if "other scans" in w.value]
    texts = [m.value for m in dashboard.markdown] + [c.value for c in dashboard.caption]
    assert any("`../real`" in t for t in texts), texts  # the inputs as the report names them

    reader = page("pages/5_Review_reader.py").run()
    reader.text_input(key="review_code_input").input(DEMO_READER_CODE)
    (start,) = [b for b in reader.button if b.label == "Start reading"]
    start.click().run()
    assert not reader.exception and not reader.error, [e.value for e in reader.error]
    heading = [m.value.replace("*", "") for m in reader.markdown if m.value.startswith("**Case ")]
    assert heading and heading[0].startswith(f"Case 1 of {2 * REVIEW_PER_COHORT}")
