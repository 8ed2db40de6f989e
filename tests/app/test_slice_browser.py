"""AppTest of pages/1_Slice_browser.py on the tiny workspace of conftest.py.

Real volumes are 16x12x8, generated 16x12x6, spacing (0.8, 0.9, 2.5) mm, with a known HU pattern,
so the tests can predict every shown value: slice numbers, the HU under a pixel, window bounds.
"""

from __future__ import annotations

import numpy as np
import pytest

BROWSER = "pages/1_Slice_browser.py"


@pytest.fixture
def figures(charts):
    """The slice figures: trace, HU image z, layout and title of each."""

    def get(at) -> list[dict]:
        out = []
        for spec in charts(at):
            trace = spec["data"][0]
            out.append(
                {
                    "trace": trace,
                    "z": np.asarray(trace["z"]),
                    "layout": spec["layout"],
                    "title": (spec["layout"].get("title") or {}).get("text", ""),
                }
            )
        return out

    return get


def captions(at) -> str:
    return "\n".join(c.value for c in at.caption)


def voxel_of(fig, row, col):
    """The voxel coordinates the hover shows at pixel (row, col): x0 + col*dx, y0 + row*dy."""
    t = fig["trace"]
    return t["x0"] + col * t["dx"], t["y0"] + row * t["dy"]


def server_rendered(at):
    """The server-rendered viewer: AppTest runs no JavaScript, so pixel checks need the plotly images."""
    at.session_state["renderer"] = "server"
    return at


@pytest.fixture
def browser(app_env, page):
    at = server_rendered(page(BROWSER))
    at.run()
    assert not at.exception, at.exception
    return at


def test_opens_both_sides_at_the_middle_slice_with_true_hu(browser, hu_at, figures):
    at = browser
    assert at.title[0].value == "Slice browser"
    text = captions(at)
    assert "Real: **case_a** · axial slice **5/8**" in text
    assert "Generated: **sample_000** · axial slice **4/6**" in text
    real, gen = figures(at)
    assert real["title"] == "Real: case_a" and gen["title"] == "Generated: sample_000"
    # axial image: rows = y (12), cols = x (16); the values are HU, not grey levels
    assert real["z"].shape == (12, 16)
    for row, col in [(0, 0), (3, 10), (11, 15)]:
        x, y = voxel_of(real, row, col)
        assert real["z"][row, col] == hu_at(int(x), int(y), 4)  # hover label == the voxel's HU
        assert (x, y) == (15 - col, 11 - row)  # radiological: patient right on the image left
    x, y = voxel_of(gen, 2, 5)
    assert gen["z"][2, 5] == hu_at(int(x), int(y), 3, offset=-50)
    # the soft-tissue window on both sides; aspect = y spacing / x spacing
    for f in (real, gen):
        assert (f["trace"]["zmin"], f["trace"]["zmax"]) == (-160, 240)
        assert f["layout"]["yaxis"]["scaleratio"] == pytest.approx(0.9 / 0.8)
    labels = {a["text"] for a in real["layout"]["annotations"]}
    assert {"<b>R</b>", "<b>L</b>", "<b>A</b>", "<b>P</b>"} <= labels


def test_linked_scrolling_keeps_the_relative_position(browser, hu_at, figures):
    at = browser
    at.slider(key="real_slice").set_value(8).run()
    assert not at.exception
    assert at.slider(key="gen_slice").value == 6  # last slice of 8 -> last slice of 6
    assert "axial slice **6/6**" in captions(at)
    at.slider(key="gen_slice").set_value(1).run()
    assert at.slider(key="real_slice").value == 1
    at.slider(key="real_slice").set_value(4).run()  # index 3 of 8 -> round(3*5/7)=2 -> slice 3
    assert at.slider(key="gen_slice").value == 3
    real, gen = figures(at)  # the images follow the sliders: real z index 3, generated z index 2
    assert real["z"][0, 0] == hu_at(15, 11, 3) and "z=3<br>" in real["trace"]["hovertemplate"]
    assert gen["z"][0, 0] == hu_at(15, 11, 2, offset=-50) and "z=2<br>" in gen["trace"]["hovertemplate"]

    at.checkbox(key="linked").uncheck().run()
    at.slider(key="real_slice").set_value(7).run()
    assert at.slider(key="real_slice").value == 7 and at.slider(key="gen_slice").value == 3


def test_planes_have_their_own_slices_aspect_and_labels(browser, hu_at, figures):
    at = browser
    at.radio(key="plane").set_value("coronal").run()
    assert not at.exception
    assert "Real: **case_a** · coronal slice **7/12**" in captions(at)
    real = figures(at)[0]
    assert real["z"].shape == (8, 16)  # rows = z (superior at top), cols = x
    assert real["layout"]["yaxis"]["scaleratio"] == pytest.approx(2.5 / 0.8)
    x, z = voxel_of(real, 0, 3)
    assert (x, z) == (12, 7) and real["z"][0, 3] == hu_at(12, 6, 7)
    assert {a["text"] for a in real["layout"]["annotations"]} >= {"<b>S</b>", "<b>I</b>", "<b>R</b>", "<b>L</b>"}

    at.radio(key="plane").set_value("sagittal").run()
    assert "sagittal slice **9/16**" in captions(at)
    real = figures(at)[0]
    assert real["z"].shape == (8, 12)
    assert real["layout"]["yaxis"]["scaleratio"] == pytest.approx(2.5 / 0.9)
    y, z = voxel_of(real, 2, 0)
    assert (y, z) == (11, 5) and real["z"][2, 0] == hu_at(8, 11, 5)
    assert {a["text"] for a in real["layout"]["annotations"]} >= {"<b>A</b>", "<b>P</b>", "<b>S</b>"}


def test_window_presets_and_custom_apply_to_both_sides(browser, figures):
    at = browser
    at.selectbox(key="window").set_value("bone").run()
    assert [(f["trace"]["zmin"], f["trace"]["zmax"]) for f in figures(at)] == [(-450, 1050)] * 2
    at.selectbox(key="window").set_value("lung").run()
    assert [(f["trace"]["zmin"], f["trace"]["zmax"]) for f in figures(at)] == [(-1350, 150)] * 2
    at.selectbox(key="window").set_value("custom").run()
    at.number_input(key="win_width").set_value(100.0).run()
    at.number_input(key="win_level").set_value(-20.0).run()
    assert not at.exception
    assert [(f["trace"]["zmin"], f["trace"]["zmax"]) for f in figures(at)] == [(-70, 30)] * 2
    assert "W100 / L-20" in captions(at)


def test_hu_probe_reads_the_voxel_under_a_pixel(browser, hu_at):
    at = browser
    at.number_input(key="probe_row").set_value(2).run()
    at.number_input(key="probe_col").set_value(5).run()
    text = "\n".join(m.value for m in at.markdown)
    # axial pixel (2, 5) -> voxel (16-1-5, 12-1-2, slice) = (10, 9, 4) real / (10, 9, 3) generated
    assert f"Real case_a: voxel (10, 9, 4) = **{hu_at(10, 9, 4):g} HU**" in text
    assert f"Generated sample_000: voxel (10, 9, 3) = **{hu_at(10, 9, 3, offset=-50):g} HU**" in text


def test_case_pickers_switch_volumes(browser, hu_at, figures):
    at = browser
    at.selectbox(key="real_case").set_value(at.selectbox(key="real_case").options[1]).run()
    assert "Real: **case_b**" in captions(at)
    real = figures(at)[0]
    assert real["title"] == "Real: case_b" and real["z"][0, 0] == hu_at(15, 11, 4, offset=100)


def test_ab_toggle_shows_one_side_at_a_time(browser, figures):
    at = browser
    at.radio(key="layout").set_value("A/B toggle").run()
    assert not at.exception
    figs = figures(at)
    assert len(figs) == 1 and figs[0]["title"] == "Real: case_a"
    at.button_group(key="ab_show").set_value("gen").run()
    figs = figures(at)
    assert len(figs) == 1 and figs[0]["title"] == "Generated: sample_000"
    assert (figs[0]["trace"]["zmin"], figs[0]["trace"]["zmax"]) == (-160, 240)


def test_mosaic_of_every_nth_slice(browser):
    at = browser
    at.radio(key="view").set_value("mosaic").run()
    at.slider(key="every").set_value(3).run()
    assert not at.exception
    assert not at.get("plotly_chart")
    caps = [c for img in at.image for c in img.captions]
    assert caps == ["Real case_a: axial slices 1, 4, 7", "Generated sample_000: axial slices 1, 4"]


def test_nearest_real_view_pairs_each_generated_case(browser, figures):
    at = browser
    at.radio(key="view").set_value("nearest real").run()
    assert not at.exception
    # report: sample_000 -> case_b (SSIM 0.80), sample_001 -> case_a (SSIM 0.85, flagged)
    gen, real = figures(at)
    assert gen["title"] == "Generated: sample_000" and real["title"] == "Real: case_b"
    assert "SSIM 0.800" in captions(at)
    assert not at.warning
    at.selectbox(key="gen_case").set_value(at.selectbox(key="gen_case").options[1]).run()
    gen, real = figures(at)
    assert gen["title"] == "Generated: sample_001" and real["title"] == "Real: case_a"
    assert "SSIM 0.850" in captions(at)
    assert "possible copy of training scan case_a" in at.warning[0].value


def test_request_from_dashboard_opens_the_flagged_pair(app_env, page, figures):
    at = server_rendered(page(BROWSER))
    at.session_state["browse_request"] = {
        "generated": str(app_env / "generated/sample_001.nii.gz"),
        "real": str(app_env / "real/case_a.nii.gz"),
        "view": "nearest real",
    }
    at.run()
    assert not at.exception
    assert [f["title"] for f in figures(at)] == ["Generated: sample_001", "Real: case_a"]


def test_no_data_gives_a_message_not_a_traceback(monkeypatch, tmp_path, page):
    monkeypatch.setenv("CTDIFF_WORKSPACE", str(tmp_path / "missing"))
    at = page(BROWSER)
    at.run()
    assert not at.exception
    assert "does not exist" in at.error[0].value


def test_bad_folder_and_unreadable_volume_are_reported(app_env, page, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.nii.gz").write_bytes(b"not a nifti")
    at = page(BROWSER)
    at.session_state["real_dir"] = str(empty)
    at.session_state["generated_dir"] = str(broken)
    at.run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("holds no NIfTI" in e and str(empty) in e for e in errors)
    assert any("bad.nii.gz" in e for e in errors)


def test_only_real_scans_and_a_single_slice_volume(app_env, page, tmp_path, figures, hu_at):
    from ctdiff.data.io import write_nifti
    from ctdiff.data.volume import Volume

    one = tmp_path / "one"
    arr = np.zeros((16, 12, 1), dtype=np.float32)
    arr[3, 4, 0] = 77.0
    write_nifti(Volume.from_spacing(arr, (0.8, 0.9, 2.5)), one / "single.nii.gz")
    at = server_rendered(page(BROWSER))
    at.session_state["generated_dir"] = None
    at.session_state["real_dir"] = str(one)
    at.session_state["selection_source"] = "test"
    at.run()
    assert not at.exception, at.exception
    assert "No generated volumes selected." in at.info[0].value
    assert len(at.slider) == 0  # one axial slice: nothing to scroll
    assert "Real: **single** · axial slice **1/1**" in "\n".join(c.value for c in at.caption)
    (real,) = figures(at)
    assert real["z"][12 - 1 - 4, 16 - 1 - 3] == 77  # voxel (3, 4, 0) at row Y-1-y, column X-1-x
    at.radio(key="plane").set_value("coronal").run()
    assert not at.exception and at.slider(key="real_slice").max == 12
