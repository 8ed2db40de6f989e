"""The NiiVue viewer in a real browser: ``streamlit run app.py`` driven by Playwright in Debian's chromium.

Checks what AppTest cannot: the mouse wheel and the keys change the shown slice (and its pixels),
linked panes stay at the same position in mm, zoom and window, and an unlinked pane stays put.
The volumes are synthetic pelvis phantoms (``ctdiff.data.phantom``) of different depth, so "same
position in mm" differs from "same slice number".
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from ctdiff.data.io import read_volume, to_int16_hu, write_nifti
from ctdiff.data.phantom import make_phantom
from pages.components.viewer import NIFTI_HEADER_BYTES

STATE_JS = """() => window.ctViewer.panes.map(p => ({
    vox: Array.from(p.nv.frac2vox(p.nv.scene.crosshairPos)),
    mm: Array.from(p.nv.frac2mm(p.nv.scene.crosshairPos)).map(v => Math.round(v * 100) / 100),
    zoom: p.nv.scene.pan2Dxyzmm[3],
    cal: [p.nv.volumes[0].cal_min, p.nv.volumes[0].cal_max],
    status: p.status.textContent,
}))"""


@pytest.fixture
def viewer_workspace(tmp_path):
    ws = tmp_path / "viewer-ws"
    # same spacing, different depth: 24 real slices, 16 generated ones, centres aligned
    write_nifti(make_phantom(shape=(96, 96, 24), seed=1)[0], ws / "real" / "case_001.nii.gz")
    write_nifti(make_phantom(shape=(96, 96, 16), seed=11, noise_hu=32.0)[0], ws / "generated" / "sample_000.nii.gz")
    (ws / "workspace.json").write_text(json.dumps({"name": "viewer-test"}))
    return ws


def open_viewer(page, url):
    page.goto(url + "/Slice_browser")
    page.get_by_role("heading", name="Slice browser", exact=True).wait_for()
    page.wait_for_selector("iframe[src*='ct_viewer']", timeout=60_000)
    frame = next(f for f in page.frames if "ct_viewer" in f.url)
    frame.wait_for_function("() => window.ctViewer && window.ctViewer.ready", timeout=60_000)
    page.wait_for_timeout(300)
    return frame


@pytest.mark.browser
def test_wheel_and_keys_scroll_and_linked_panes_stay_in_sync(
    viewer_workspace, streamlit_server, browser_page, artifact_dir
):
    page = browser_page
    page.set_viewport_size({"width": 1440, "height": 900})
    volumes, slices = [], []  # every volume download and every opening-slice range: (response, body)
    page.on(
        "response",
        lambda r: (
            r.url.endswith(".bin")
            and (volumes if r.request.headers.get("range") == "bytes=0-" else slices).append((r, r.body()))
        ),
    )
    url = streamlit_server("app.py", env={"CTDIFF_WORKSPACE": str(viewer_workspace)})
    frame = open_viewer(page, url)
    state = lambda: frame.evaluate(STATE_JS)  # noqa: E731

    # each volume came once, as an uncompressed byte range (a gzipped answer would be slower and its
    # size would depend on the voxels), and holds the file's HU
    assert sorted(len(b) for _, b in volumes) == [NIFTI_HEADER_BYTES + 2 * 96 * 96 * n for n in (16, 24)]
    for response, _ in volumes:
        assert response.status == 206 and response.headers.get("content-encoding") is None, response.headers
        assert response.request.sizes()["responseBodySize"] == len(response.body())
    real_bytes = next(b for _, b in volumes if len(b) == NIFTI_HEADER_BYTES + 2 * 96 * 96 * 24)
    real_hu = to_int16_hu(read_volume(viewer_workspace / "real" / "case_001.nii.gz").array)
    np.testing.assert_array_equal(np.asarray(nib.Nifti1Image.from_bytes(real_bytes).dataobj), real_hu)
    # before the volumes, each pane asked for its opening (middle) axial slice alone, for the preview:
    # the bytes of that slice of the same file (x fastest), the size set by the shape alone
    slice_bytes = 2 * 96 * 96
    assert sorted(r.request.headers["range"] for r, _ in slices) == sorted(
        f"bytes={NIFTI_HEADER_BYTES + slice_bytes * z}-{NIFTI_HEADER_BYTES + slice_bytes * (z + 1) - 1}"
        for z in (12, 8)
    )
    for response, body in slices:
        assert response.status == 206 and len(body) == slice_bytes and response.headers.get("content-encoding") is None
    real_slice = next(b for r, b in slices if r.url == next(rv.url for rv, bv in volumes if bv == real_bytes))
    np.testing.assert_array_equal(np.frombuffer(real_slice, "<i2").reshape(96, 96), real_hu[:, :, 12].T)
    timings = frame.evaluate("() => Object.values(window.ctViewer.timings)")
    # the preview was painted from that slice, not from the whole volume
    assert [t["previewFrom"] for t in timings] == ["slice", "slice"] and all(t["slice"] < t["preview"] for t in timings)

    # the preview shown while NiiVue builds its texture: the middle axial slice in the W400/L40 window,
    # patient right on the image left, anterior up, the canvas shaped by the voxel spacing
    preview = frame.evaluate(
        """() => { const c = window.ctViewer.panes[0].previewCanvas;
        return { w: c.width, h: c.height, css: [parseFloat(c.style.width), parseFloat(c.style.height)],
                 px: Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data) }; }"""
    )
    assert (preview["w"], preview["h"]) == (96, 96)
    grey = np.array(preview["px"], np.float64).reshape(96, 96, 4)[..., 0]
    expected = np.clip((real_hu[:, :, 12].astype(np.float64) + 160.0) * 255.0 / 400.0, 0, 255)  # slice 13 of 24
    np.testing.assert_allclose(grey, expected.T[::-1, ::-1], atol=1.0)  # rows: y reversed; columns: x reversed
    assert len(np.unique(grey)) > 10  # a picture, not a flat field
    sx, sy = make_phantom(shape=(96, 96, 24), seed=1)[0].spacing[:2]
    assert preview["css"][0] / preview["css"][1] == pytest.approx(sx / sy, rel=0.02)

    start = state()
    assert [s["vox"][2] for s in start] == [12, 8]  # middle slices of 24 and 16, the same place in mm
    assert start[0]["mm"][2] == pytest.approx(start[1]["mm"][2], abs=1.6)
    assert "axial 13/24" in start[0]["status"] and "W 400 L 40" in start[0]["status"]
    canvas = frame.locator("#pane-0")
    before = canvas.screenshot()

    # mouse wheel over the real pane: one slice per notch, the generated pane follows in mm
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -100)
    page.wait_for_timeout(200)
    after_wheel = state()
    dz = after_wheel[0]["vox"][2] - 12
    assert abs(dz) == 1
    assert after_wheel[1]["vox"][2] == 8 + dz and after_wheel[1]["mm"][2] == pytest.approx(
        after_wheel[0]["mm"][2], abs=0.01
    )
    assert canvas.screenshot() != before  # the pixels changed, not only the numbers

    # keys: ArrowUp one slice up, PageDown ten down (clamped at the generated volume's first slice)
    canvas.click()
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    z = state()[0]["vox"][2]
    assert z == after_wheel[0]["vox"][2] + 2
    page.keyboard.press("PageDown")
    s = state()
    assert s[0]["vox"][2] == z - 10
    assert s[1]["mm"][2] == pytest.approx(s[0]["mm"][2], abs=0.01) or s[1]["vox"][2] == 0
    assert f"axial {z - 10 + 1}/24" in s[0]["status"]

    # zoom (ctrl+wheel) and window presets are shared by linked panes
    page.keyboard.down("Control")
    page.mouse.wheel(0, -100)
    page.keyboard.up("Control")
    frame.locator("[data-preset='bone']").click()
    s = state()
    assert s[0]["zoom"] == pytest.approx(1.1) and s[1]["zoom"] == pytest.approx(1.1)
    assert s[0]["cal"] == [-450, 1050] and s[1]["cal"] == [-450, 1050]
    # right-drag window/level on one pane moves the other's window with it
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down(button="right")
    page.mouse.move(box["x"] + box["width"] / 2 + 60, box["y"] + box["height"] / 2 + 40, steps=5)
    page.mouse.up(button="right")
    s = state()
    assert s[0]["cal"] != [-450, 1050] and s[1]["cal"] == s[0]["cal"]
    page.screenshot(path=str(artifact_dir / "viewer-linked.png"))

    # unlinked: the generated pane stays where it is
    frame.locator("#linked").uncheck()
    canvas.click()
    mine, held = state()
    page.keyboard.press("ArrowUp")
    s = state()
    assert s[0]["vox"][2] == mine["vox"][2] + 1
    assert s[1]["vox"] == held["vox"] and s[1]["zoom"] == held["zoom"]

    # three planes with a crosshair: one pane draws three tiles
    frame.locator("[data-plane='multiplanar']").click()
    assert frame.evaluate("() => window.ctViewer.panes[0].nv.screenSlices.length") >= 3
    assert len(volumes) == 2  # nothing above fetched a volume again


CAPTURE_JS = """() => window.ctViewer.panes.map(p => {
    p.nv.drawScene();  // drawn and read back in one task: the drawing buffer is not kept between frames
    const gl = p.nv.gl, w = gl.drawingBufferWidth, h = gl.drawingBufferHeight, b = new Uint8Array(w * h * 4);
    gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, b);
    return { vox: Array.from(p.nv.frac2vox(p.nv.scene.crosshairPos)), slice2D: p.nv.opts.is2DSliceShader,
             px: Array.from(b.filter((_, i) => i % 4 === 0)) };
})"""


@pytest.mark.browser
def test_axial_view_opens_on_the_slice_path_and_draws_what_the_3d_texture_draws(
    viewer_workspace, streamlit_server, browser_page
):
    """A pane opened in the axial plane skips NiiVue's 3D texture (NiiVue's per-slice 2D path: seconds
    faster on a software GPU); after wheel, key and linked moves its pixels equal those drawn from the
    3D texture that another plane builds, at the same voxel, in both panes (a linked pane whose slice
    texture was not redrawn would show its old slice)."""
    page = browser_page
    page.set_viewport_size({"width": 1440, "height": 900})
    webgl_errors = []  # e.g. "WebGL: INVALID_OPERATION: bindTexture: attempt to use a deleted object"
    page.on("console", lambda m: "INVALID" in m.text and webgl_errors.append(m.text))
    url = streamlit_server("app.py", env={"CTDIFF_WORKSPACE": str(viewer_workspace)})
    frame = open_viewer(page, url)
    canvas = frame.locator("#pane-0")
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -100)
    page.wait_for_timeout(200)
    canvas.click()
    frame.evaluate("() => { window._tex = window.ctViewer.panes.map(p => p.nv.sliceTex2D); }")
    for key in ("ArrowUp", "ArrowUp", "ArrowUp"):
        page.keyboard.press(key)
    # each slice's texture replaced the one before (NiiVue alone keeps every one: a leak per step)
    assert frame.evaluate(
        "() => window.ctViewer.panes.map((p, i) => [!!p.nv.sliceTex2D, p.nv.gl.isTexture(window._tex[i])])"
    ) == [[True, False], [True, False]]
    moved = frame.evaluate(STATE_JS)
    fast = frame.evaluate(CAPTURE_JS)
    assert [p["slice2D"] for p in fast] == [True, True]
    # wheel up one slice down, three keys up (12 - 1 + 3); the generated pane (16 thicker slices) follows in mm
    assert fast[0]["vox"][2] == 14 and fast[1]["vox"][2] != 8
    assert moved[1]["mm"][2] == pytest.approx(moved[0]["mm"][2], abs=0.01)

    frame.locator("[data-plane='coronal']").click()
    frame.wait_for_function("() => window.ctViewer.panes.every(p => !p.nv.opts.is2DSliceShader)")
    frame.locator("[data-plane='axial']").click()
    page.wait_for_timeout(200)
    full = frame.evaluate(CAPTURE_JS)
    assert [p["slice2D"] for p in full] == [False, False]
    for a, b in zip(fast, full):
        assert a["vox"] == b["vox"]
        fa, fb = np.array(a["px"], np.int16), np.array(b["px"], np.int16)
        assert fa.shape == fb.shape and len(np.unique(fa)) > 10
        assert np.mean(np.abs(fa - fb) > 2) < 0.002, np.mean(np.abs(fa - fb) > 2)  # linear filtering: 22 %
    # no WebGL call on a deleted texture (NiiVue's slice path deleted the volume texture it still binds)
    assert webgl_errors == [], webgl_errors[:3]


@pytest.mark.browser
def test_long_path_on_home_gives_one_line_not_a_traceback(viewer_workspace, streamlit_server, browser_page):
    from tests.app.conftest import REPO

    page = browser_page
    url = streamlit_server("app.py", env={"CTDIFF_WORKSPACE": str(viewer_workspace)})
    page.goto(url)
    page.get_by_role("heading", name="ctdiff: synthetic CT, side by side with real").wait_for()
    # the end of Home's first run (its last link), so that no rerun in flight swallows the click below
    page.get_by_text("Training monitor: loss curves, previews, generate").wait_for()
    field = page.get_by_role("textbox", name="Real scans folder")
    if not field.is_visible():
        page.get_by_text("Choose other data: type folders").click()
    field.fill("/" + "a" * 500)
    page.get_by_role("button", name="Use these folders").click()
    alert = page.locator("[data-testid='stAlertContentError']").first
    try:
        alert.wait_for(timeout=20_000)
    except PlaywrightTimeout:  # on a loaded machine a rerun still in flight can swallow the first click
        page.get_by_role("button", name="Use these folders").click()
        alert.wait_for()
    text = alert.inner_text()
    assert text.startswith("Real scans folder: a folder or file name in the path is 500 characters long"), text
    assert "\n" not in text.strip()
    body = page.locator("body").inner_text()
    assert "Traceback" not in body and "OSError" not in body and str(REPO) not in body
    assert page.locator("[data-testid='stException']").count() == 0


@pytest.mark.browser
def test_home_warms_the_viewer_up_invisibly(viewer_workspace, streamlit_server, browser_page):
    """On Home the viewer starts once in a frame of height 0: NiiVue drew its tiny volume, nothing shows."""
    page = browser_page
    page.set_viewport_size({"width": 1440, "height": 900})
    webgl_errors = []
    page.on("console", lambda m: "INVALID" in m.text and webgl_errors.append(m.text))
    url = streamlit_server("app.py", env={"CTDIFF_WORKSPACE": str(viewer_workspace)})
    page.goto(url)
    page.wait_for_selector("iframe[src*='ct_viewer']", state="attached", timeout=60_000)
    frame = next(f for f in page.frames if "ct_viewer" in f.url)
    frame.wait_for_function("() => window.ctViewer && window.ctViewer.warmedUp === true", timeout=60_000)
    box = page.locator("iframe[src*='ct_viewer']").bounding_box()
    assert box is None or box["height"] <= 2, box  # the frame asked for height 0 (Streamlit keeps 2 px)
    # its pane was removed and the frame shows nothing
    assert frame.evaluate("() => [document.querySelectorAll('canvas').length, document.body.innerText.trim()]") == [
        0,
        "",
    ]
    assert webgl_errors == [], webgl_errors[:3]
