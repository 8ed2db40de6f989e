"""AppTest of app.py (Home): what is loaded, typed paths, the demo workspace on first start."""

from __future__ import annotations

import shutil
import sys
import types

import pytest

HOME = "app.py"


@pytest.fixture
def home(app_env, page):
    at = page(HOME)
    at.run()
    assert not at.exception, at.exception
    return at


def _md(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_shows_what_is_loaded(home, app_env):
    at = home
    assert {m.label: m.value for m in at.metric} == {
        "Real volumes": "2",
        "Generated volumes": "2",
        "metrics": "4",
        "epochs logged": "30",
    }
    text = _md(at)
    # real: 16x12x8, pattern x + 30y + 1000z - 3000 (+100 for case_b): HU from -3000 to 15+330+7000-3000+100
    assert "shape 16×12×8  \nspacing 0.8 × 0.9 × 2.5 mm  \nHU -3000 … 4445" in text
    assert "shape 16×12×6" in text and "HU -3150 … 2295" in text
    assert "1 flagged as memorised" in text
    assert any("workspace 'test-ws'" in c.value and "CTDIFF_WORKSPACE" in c.value for c in at.caption)
    assert at.text_input(key="input_real_dir").value == str(app_env / "real")


def test_typed_paths_are_checked(home, app_env, tmp_path):
    at = home
    (tmp_path / "empty").mkdir()
    at.text_input(key="input_real_dir").set_value(str(tmp_path / "empty"))
    at.text_input(key="input_report_dir").set_value(str(tmp_path / "nowhere"))
    at.button[0].click().run()  # "Use these folders"
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any(e.startswith("Real scans folder:") and "holds no NIfTI" in e for e in errors)
    assert any(e.startswith("Report folder:") and "no such report folder" in e for e in errors)
    # bad paths leave the previous selection in place
    assert at.session_state["real_dir"] == str(app_env / "real")


def test_typed_folders_replace_the_selection(home, app_env, tmp_path):
    at = home
    mine = tmp_path / "mine"
    shutil.copytree(app_env / "generated", mine)
    at.text_input(key="input_real_dir").set_value(str(mine))
    at.text_input(key="input_report_dir").set_value("")
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert at.session_state["real_dir"] == str(mine)
    assert at.session_state["report_dir"] is None
    assert {m.label: m.value for m in at.metric}["Real volumes"] == "2"
    assert "HU -3150 … 2295" in _md(at).split("**Generated**")[0]  # the real column now shows the copied volumes
    assert any("paths typed on Home" in c.value for c in at.caption)
    # the other pages use the new selection
    at.switch_page("pages/1_Slice_browser.py").run()
    assert not at.exception
    assert any("Real: **sample_000**" in c.value for c in at.caption)


def test_a_run_dir_typed_as_generated_brings_its_samples(home, app_env, tmp_path):
    at = home
    samples = app_env / "run" / "samples" / "dpmpp-25-seed0"
    shutil.copytree(app_env / "generated", samples)
    at.text_input(key="input_generated_dir").set_value(str(app_env / "run"))
    at.text_input(key="input_run_dir").set_value("")
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert at.session_state["generated_dir"] == str(samples)
    assert at.session_state["run_dir"] == str(app_env / "run")


def test_missing_configured_workspace(monkeypatch, tmp_path, page):
    monkeypatch.setenv("CTDIFF_WORKSPACE", str(tmp_path / "nope"))
    at = page(HOME)
    at.run()
    assert not at.exception
    assert "CTDIFF_WORKSPACE points to" in at.error[0].value and "does not exist" in at.error[0].value


def test_demo_workspace_is_built_on_first_start(monkeypatch, tmp_path, page, workspace):
    import ctdiff_app.workspace

    target = tmp_path / "demo"
    calls = []

    def ensure_demo_workspace(path, progress=None):
        for i in range(3):
            progress(i + 1, 3, f"step {i + 1}")
        shutil.copytree(workspace, path)
        calls.append(path)
        return path

    monkeypatch.delenv("CTDIFF_WORKSPACE", raising=False)
    monkeypatch.setattr(ctdiff_app.workspace, "DEFAULT_WORKSPACE", target)
    monkeypatch.setitem(
        sys.modules,
        "ctdiff_app.demo",
        types.SimpleNamespace(
            ensure_demo_workspace=ensure_demo_workspace, demo_state=lambda p: ("build", f"{p} does not exist yet")
        ),
    )
    (workspace / "workspace.json").write_text('{"name": "demo", "complete": true}')  # the completion mark
    at = page(HOME)
    at.run()
    assert not at.exception, at.exception
    assert calls == [target]
    assert at.status[0].proto.label.startswith("Demo workspace ready")
    assert {m.label: m.value for m in at.metric}["Real volumes"] == "2"
    at.run()
    assert calls == [target]  # built once


def test_demo_folder_with_only_caches_is_rebuilt_and_one_with_user_files_is_kept(
    monkeypatch, tmp_path, page, workspace
):
    """`scripts/test` before `scripts/app` used to leave workspace/demo/review-cache/ and an empty Home."""
    import ctdiff_app.demo
    import ctdiff_app.workspace

    target = tmp_path / "demo"
    (target / "review-cache").mkdir(parents=True)
    calls = []

    def build(ws):  # the real builder on a tiny stand-in: copies the fixture workspace, completion mark last
        shutil.copytree(workspace / "real", ws / "real")
        shutil.copytree(workspace / "generated", ws / "generated")
        (ws / "workspace.json").write_text('{"name": "demo", "complete": true}')
        calls.append(ws)

    monkeypatch.setattr(ctdiff_app.demo, "_assets_info", lambda: {})
    monkeypatch.setattr(ctdiff_app.demo, "_build", lambda ws, info, tick, report: build(ws))
    monkeypatch.delenv("CTDIFF_WORKSPACE", raising=False)
    monkeypatch.setattr(ctdiff_app.workspace, "DEFAULT_WORKSPACE", target)
    at = page(HOME)
    at.run()
    assert not at.exception, at.exception
    # built once, in a hidden sibling renamed onto the target when finished
    (staged,) = calls
    assert staged.parent == target.parent and staged.name.startswith(".demo.partial-") and not staged.exists()
    assert not (target / "review-cache").exists() and (target / "workspace.json").is_file()
    assert any("holds only ctdiff caches (review-cache/)" in i.value and "rebuilding it" in i.value for i in at.info)
    assert {m.label: m.value for m in at.metric}["Real volumes"] == "2"

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("user data")
    monkeypatch.setattr(ctdiff_app.workspace, "DEFAULT_WORKSPACE", mine)
    at = page(HOME)
    at.run()
    assert not at.exception, at.exception
    assert calls == [staged] and (mine / "notes.txt").read_text() == "user data"
    assert "not a demo workspace" in at.error[0].value and "notes.txt" in at.error[0].value


def test_demo_workspace_from_another_demo_model_says_how_to_rebuild(monkeypatch, tmp_path, page, workspace):
    import json

    import ctdiff_app.workspace
    from ctdiff_app.demo import ASSETS

    shipped = json.loads((ASSETS / "assets.json").read_text())["model"]
    target = tmp_path / "demo"
    shutil.copytree(workspace, target)
    monkeypatch.delenv("CTDIFF_WORKSPACE", raising=False)
    monkeypatch.setattr(ctdiff_app.workspace, "DEFAULT_WORKSPACE", target)
    for model, told in (({**shipped, "trained_steps": 3288}, True), (shipped, False)):
        (target / "workspace.json").write_text(json.dumps({"name": "demo", "complete": True, "model": model}))
        at = page(HOME)
        at.run()
        assert not at.exception, at.exception
        notes = [i.value for i in at.info if "another demo model" in i.value]
        assert bool(notes) == told
        if told:
            assert "(3288 training steps, weights " in notes[0] and "demo --force" in notes[0]
        assert not at.status  # reused, never rebuilt
        assert {m.label: m.value for m in at.metric}["Real volumes"] == "2"


def test_demo_builder_missing_gives_a_message(monkeypatch, tmp_path, page):
    import ctdiff_app.workspace

    monkeypatch.delenv("CTDIFF_WORKSPACE", raising=False)
    monkeypatch.setattr(ctdiff_app.workspace, "DEFAULT_WORKSPACE", tmp_path / "demo")
    monkeypatch.setitem(sys.modules, "ctdiff_app.demo", None)  # import fails
    at = page(HOME)
    at.run()
    assert not at.exception
    assert "demo builder is not available" in at.warning[0].value


def test_home_prepares_the_pair_the_slice_browser_opens_with(app_env, page, monkeypatch):
    """Home starts reading the first real and first generated case for the viewer in the background,
    so the slice browser's first visit finds them prepared (no read of its own)."""
    import threading

    from pages.components import data

    data._viewer_volume.clear()
    data._prefetched.clear()
    reads = []
    real_reader = data.read_volume_int16
    monkeypatch.setattr(data, "read_volume_int16", lambda p: reads.append(p) or real_reader(p))
    at = page(HOME)
    at.run()
    assert not at.exception, at.exception
    for t in threading.enumerate():
        if t.name == "ctdiff-viewer-prefetch":
            t.join(timeout=30)
    first_real, first_gen = sorted((app_env / "real").iterdir())[0], sorted((app_env / "generated").iterdir())[0]
    assert sorted(reads) == sorted([str(first_real), str(first_gen)])
    at.run()  # a rerun (any widget change) starts nothing again
    assert not any(t.name == "ctdiff-viewer-prefetch" for t in threading.enumerate()) and len(reads) == 2
    loaded = data.load_viewer_volumes([(str(first_real), "Real"), (str(first_gen), "Generated")])
    assert [err for _, err in loaded] == [None, None] and len(reads) == 2  # served from what Home prepared
    assert [v.shape for v, _ in loaded] == [(16, 12, 8), (16, 12, 6)]


def test_home_starts_the_viewer_once_invisibly_on_a_tiny_volume(app_env, page):
    """Home carries the viewer in warm-up mode (the browser compiles it and starts WebGL before the
    slice browser opens): one component, an 8x8x8 air volume as bytes, nothing else sent."""
    import json

    import nibabel as nib
    import numpy as np

    at = page(HOME)
    at.run()
    assert not at.exception, at.exception
    found = [e.proto for e in at.main if getattr(e, "type", None) == "component_instance"]
    assert len(found) == 1 and found[0].component_name.endswith("viewer.ct_viewer")
    args = json.loads(found[0].json_args)
    assert args["warmup"] is True and [v["shape"] for v in args["volumes"]] == [[8, 8, 8]]
    assert "url" not in args["volumes"][0]  # no media file: the bytes travel with the arguments
    (payload,) = [a.bytes for a in found[0].special_args]
    vol = np.asarray(nib.Nifti1Image.from_bytes(payload).dataobj)
    from ctdiff.data.hu import AIR_HU

    assert vol.shape == (8, 8, 8) and np.all(vol == AIR_HU)
