"""The NiiVue viewer component (pages/components/viewer) and the slice browser's use of it, in AppTest.

AppTest runs no JavaScript: these tests check what the page sends to the browser (the volumes as
bytes, the window, plane, layout, link) and the report facts bound to scans by content hash. What
the browser does with it (scrolling, sync) is checked in Chromium by test_viewer_browser.py.
"""

from __future__ import annotations

import gzip
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from ctdiff.data.io import write_nifti
from ctdiff.data.volume import Volume
from pages.components.viewer import NIFTI_HEADER_BYTES, ViewerVolume, nifti_bytes, viewer_args

from .conftest import SPACING, pattern

BROWSER = "pages/1_Slice_browser.py"


def component(at) -> tuple[dict, dict[str, bytes]]:
    """The viewer component the page rendered: its JSON args and its bytes args."""
    found = [e.proto for e in at.main if getattr(e, "type", None) == "component_instance"]
    assert len(found) == 1, f"expected one viewer, found {len(found)}"
    ci = found[0]
    assert ci.component_name.endswith("viewer.ct_viewer")
    return json.loads(ci.json_args), {a.key: a.bytes for a in ci.special_args}


def decode(payload: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(payload)


# ------------------------------------------------------------------------------ the component
def test_payload_is_int16_nifti_whose_size_depends_only_on_the_shape():
    rng = np.random.default_rng(0)
    smooth = np.zeros((20, 16, 8), np.float32)
    noisy = rng.normal(0, 800, (20, 16, 8)).astype(np.float32)
    a = nifti_bytes(smooth, (0.8, 0.9, 2.5))
    b = nifti_bytes(noisy, (0.8, 0.9, 2.5))
    assert len(a) == len(b) == NIFTI_HEADER_BYTES + 2 * 20 * 16 * 8
    img = decode(b)
    assert img.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.clip(np.rint(noisy), -32768, 32767).astype(np.int16))
    np.testing.assert_allclose(img.header.get_zooms(), (0.8, 0.9, 2.5), rtol=1e-6)
    # gzip would leak the content through the size; the transport must not compress
    assert len(gzip.compress(a)) != len(gzip.compress(b))


def test_centre_alignment_puts_each_volume_centre_at_zero_mm():
    v = ViewerVolume(np.zeros((10, 6, 4), np.float32), (2.0, 1.0, 3.0), "x", origin=(100.0, -50.0, 7.0))
    centre = decode(v.payload("centre")).affine @ np.array([4.5, 2.5, 1.5, 1.0])
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-6)
    np.testing.assert_allclose(decode(v.payload("affine")).affine[:3, 3], (100.0, -50.0, 7.0))


def test_viewer_args_are_checked():
    v = ViewerVolume(np.zeros((4, 4, 4), np.float32), (1, 1, 1), "a")
    with pytest.raises(ValueError, match="at least one"):
        viewer_args([])
    with pytest.raises(ValueError, match="layout"):
        viewer_args([v], layout="grid")
    with pytest.raises(ValueError, match="plane"):
        viewer_args([v], plane="oblique")
    with pytest.raises(ValueError, match="width"):
        viewer_args([v], window=(0, 40))
    with pytest.raises(ValueError, match="spacing"):
        nifti_bytes(np.zeros((2, 2, 2)), (1, 0, 1))
    args = viewer_args([v, v], window=(1500, -600), plane="multiplanar", layout="A/B", return_clicks=True)
    assert args["window"] == [1500.0, -600.0] and args["plane"] == "multiplanar" and args["layout"] == "A/B"
    assert args["presets"]["bone"] == [1500.0, 300.0] and args["return_clicks"] is True
    assert args["volume_0"] == args["volume_1"] and args["volumes"][0]["id"] == args["volumes"][1]["id"]


def test_same_shape_volumes_that_differ_only_outside_streamlits_samples_get_two_urls():
    """Streamlit's media id of a file over 1 MiB hashes only its length and 64 KiB at the start, middle
    and end; the viewer names each file by the hash of all its bytes, so two such scans keep two URLs."""
    from streamlit.runtime.memory_media_file_storage import _calculate_file_id
    from streamlit.testing.v1 import AppTest

    def script():
        import numpy as np
        import streamlit as st

        from pages.components.viewer import ViewerVolume, viewer_args

        a = np.full((256, 256, 24), -1000.0, np.float32)
        b = a.copy()
        b[:, :, 3] = 40.0  # slice 3: past the first 64 KiB, far from the middle and the end
        vols = [ViewerVolume(x, (1.0, 1.0, 2.0), n) for x, n in ((a, "a"), (b, "b"))]
        args = viewer_args(vols, transport="http", key="v")
        st.session_state["urls"] = [v["url"] for v in args["volumes"]]
        st.session_state["payloads"] = [v.payload() for v in vols]

    at = AppTest.from_function(script, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    pa, pb = at.session_state["payloads"]
    assert pa != pb and len(pa) == len(pb) > 1 << 20
    mime = "application/octet-stream"
    assert _calculate_file_id(pa, mime) == _calculate_file_id(pb, mime)  # what Streamlit alone would do
    ua, ub = at.session_state["urls"]
    assert ua != ub and ua.endswith(".bin") and ub.endswith(".bin")


# ------------------------------------------------------------------------ the server's cache
def test_viewer_bytes_are_read_once_per_file_version_and_hold_the_files_hu(tmp_path, monkeypatch):
    """One read per file version for every label (a rerun or another pane re-reads nothing); a rewrite
    gives new bytes even when it keeps the modification time (ctdiff writes atomically: a new inode);
    the bytes decode to the file's HU (rounded), in RAS+ order, centred on 0 mm."""
    import os

    from ctdiff.data.io import read_volume, to_int16_hu
    from pages.components import data

    reads = []
    real_reader = data.read_volume_int16
    monkeypatch.setattr(data, "read_volume_int16", lambda p: reads.append(p) or real_reader(p))
    rng = np.random.default_rng(3)
    las = np.array([[-0.8, 0, 0, 30.0], [0, 0.9, 0, -5.0], [0, 0, 2.5, 12.0], [0, 0, 0, 1]])  # x runs to the left
    path = tmp_path / "scan.nii.gz"
    first = rng.normal(0, 300, (18, 14, 6)).astype(np.float32)
    write_nifti(Volume(first, las), path)

    v1, err = data.load_viewer_volume(str(path), "Real: scan")
    v2, _ = data.load_viewer_volume(str(path), "Nearest real: scan")
    assert err is None and len(reads) == 1
    assert v2.payload() is v1.payload() and (v1.label, v2.label) == ("Real: scan", "Nearest real: scan")
    img = decode(v1.payload())
    expected = to_int16_hu(read_volume(path).array)
    np.testing.assert_array_equal(np.asarray(img.dataobj), expected)
    np.testing.assert_array_equal(expected, np.rint(first[::-1]).astype(np.int16))  # LAS on disk, RAS sent
    np.testing.assert_allclose(img.header.get_zooms(), (0.8, 0.9, 2.5), rtol=1e-6)
    np.testing.assert_allclose(img.affine @ [8.5, 6.5, 2.5, 1.0], [0, 0, 0, 1], atol=1e-6)

    stamp = path.stat().st_mtime_ns
    second = first + 100.0
    write_nifti(Volume(second, las), path)
    os.utime(path, ns=(stamp, stamp))  # same modification time as the cached version
    v3, _ = data.load_viewer_volume(str(path), "Real: scan")
    assert len(reads) == 2 and v3.payload() != v1.payload() and v3.content_id() != v1.content_id()
    np.testing.assert_array_equal(np.asarray(decode(v3.payload()).dataobj), np.rint(second[::-1]).astype(np.int16))

    bad, err = data.load_viewer_volume(str(tmp_path / "missing.nii.gz"), "Real: missing")
    assert bad is None and "missing.nii.gz" in err and "no such file" in err


def test_viewer_files_of_a_pair_are_read_at_the_same_time(tmp_path, monkeypatch):
    """A cold visit reads both panes' files in parallel (each waits at a barrier the other must reach:
    read one after the other, the first read would time out); results keep the order asked for, and a
    bad file gives its own one-line error without stopping the other."""
    import threading

    from pages.components import data

    data._viewer_volume.clear()
    barrier = threading.Barrier(2, timeout=20)
    real_reader = data.read_volume_int16

    def reader(p):
        barrier.wait()
        return real_reader(p)

    monkeypatch.setattr(data, "read_volume_int16", reader)
    paths = []
    for i, shift in enumerate((0.0, 500.0)):
        path = tmp_path / f"scan{i}.nii.gz"
        write_nifti(Volume(np.full((6, 5, 4), shift, np.float32), np.diag([1.0, 1.0, 2.0, 1.0])), path)
        paths.append(str(path))
    (a, err_a), (b, err_b) = data.load_viewer_volumes([(paths[0], "Real: 0"), (paths[1], "Generated: 1")])
    assert err_a is None and err_b is None and (a.label, b.label) == ("Real: 0", "Generated: 1")
    assert decode(a.payload()).get_fdata().max() == 0 and decode(b.payload()).get_fdata().min() == 500

    barrier.reset()
    missing = str(tmp_path / "missing.nii.gz")
    data._viewer_volume.clear()
    (ok, err_ok), (bad, err_bad) = data.load_viewer_volumes([(paths[0], "Real: 0"), (missing, "Generated: missing")])
    assert err_ok is None and ok.shape == (6, 5, 4)
    assert bad is None and "missing.nii.gz" in err_bad and "\n" not in err_bad


# ------------------------------------------------------------------------------ slice browser
@pytest.fixture(autouse=True)
def bytes_transport(monkeypatch):
    """Volumes as bytes in the element, where AppTest can read them (the server default is HTTP)."""
    monkeypatch.setenv("CTDIFF_VIEWER_TRANSPORT", "bytes")


def test_inside_a_server_volumes_go_over_http_not_in_the_message(app_env, page, monkeypatch):
    monkeypatch.delenv("CTDIFF_VIEWER_TRANSPORT")
    at = page(BROWSER)
    at.run()
    assert not at.exception
    args, blobs = component(at)
    assert not blobs  # nothing big in the websocket message
    assert all(v["url"].endswith(".bin") and "/media/" in v["url"] for v in args["volumes"])


@pytest.fixture
def viewer_page(app_env, page):
    at = page(BROWSER)
    at.run()
    assert not at.exception, at.exception
    return at


def test_browser_viewer_gets_both_volumes_once_in_true_hu(viewer_page, app_env):
    args, blobs = component(viewer_page)
    assert [v["label"] for v in args["volumes"]] == ["Real: case_a", "Generated: sample_000"]
    assert (args["layout"], args["linked"], args["plane"], args["window"]) == (
        "side by side",
        True,
        "axial",
        [400.0, 40.0],
    )
    real = np.asarray(decode(blobs["volume_0"]).dataobj)
    gen = np.asarray(decode(blobs["volume_1"]).dataobj)
    np.testing.assert_array_equal(real, pattern((16, 12, 8)).astype(np.int16))
    np.testing.assert_array_equal(gen, pattern((16, 12, 6), offset=-50).astype(np.int16))
    assert len(blobs["volume_0"]) == NIFTI_HEADER_BYTES + 2 * 16 * 12 * 8
    assert not viewer_page.get("plotly_chart")  # nothing drawn on the server
    assert not viewer_page.slider  # scrolling happens in the browser


def test_browser_viewer_follows_sidebar_window_plane_layout_and_link(viewer_page):
    at = viewer_page
    at.selectbox(key="window").set_value("bone").run()
    at.radio(key="plane").set_value("multiplanar").run()
    at.radio(key="layout").set_value("A/B toggle").run()
    at.checkbox(key="linked").uncheck().run()
    assert not at.exception
    args, _ = component(at)
    assert (args["window"], args["plane"], args["layout"], args["linked"]) == (
        [1500.0, 300.0],
        "multiplanar",
        "A/B",
        False,
    )
    at.selectbox(key="real_case").set_value(at.selectbox(key="real_case").options[1]).run()
    args, blobs = component(at)
    assert args["volumes"][0]["label"] == "Real: case_b"
    np.testing.assert_array_equal(
        np.asarray(decode(blobs["volume_0"]).dataobj), pattern((16, 12, 8), 100).astype(np.int16)
    )
    # a mosaic is still drawn on the server, in one plane
    at.radio(key="view").set_value("mosaic").run()
    assert not at.exception and [c for img in at.image for c in img.captions][0].startswith("Real case_b: axial slices")


def test_nearest_real_view_sends_the_generated_case_and_its_nearest_real(viewer_page):
    at = viewer_page
    at.radio(key="view").set_value("nearest real").run()
    assert not at.exception
    args, _ = component(at)
    assert [v["label"] for v in args["volumes"]] == ["Generated: sample_000", "Real: case_b"]
    assert "SSIM 0.800" in "\n".join(c.value for c in at.caption)


def test_new_scans_under_old_names_get_no_facts_from_the_old_report(app_env, page, tmp_path):
    """A new Generate run writes case names the report knows; the report must not describe them."""
    new_gen = tmp_path / "new-samples"
    for i, name in enumerate(("sample_000", "sample_001")):
        write_nifti(Volume.from_spacing(pattern((16, 12, 6), offset=500 + i), SPACING), new_gen / f"{name}.nii.gz")
    at = page(BROWSER)
    at.session_state["generated_dir"] = str(new_gen)
    at.run()
    assert not at.exception
    assert any("This report is for other scans" in w.value and "generated: 0 of the 2" in w.value for w in at.warning)
    assert not any("SSIM" in c.value for c in at.caption)  # no nearest-real fact for a scan the report never saw
    at.radio(key="view").set_value("nearest real").run()
    assert any("did not measure this scan" in w.value for w in at.warning)


def test_renamed_scans_keep_their_facts(app_env, page, tmp_path):
    """Facts follow the content: the same scans under swapped names are still recognised."""
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    shutil.copy(app_env / "generated/sample_000.nii.gz", swapped / "sample_001.nii.gz")
    shutil.copy(app_env / "generated/sample_001.nii.gz", swapped / "sample_000.nii.gz")
    at = page(BROWSER)
    at.session_state["generated_dir"] = str(swapped)
    at.run()
    assert not at.exception
    assert not any("other scans" in w.value for w in at.warning)
    # the file now called sample_000 holds the old sample_001: nearest real case_a, SSIM 0.85, flagged
    at.radio(key="view").set_value("nearest real").run()
    args, _ = component(at)
    assert [v["label"] for v in args["volumes"]] == ["Generated: sample_000", "Real: case_a"]
    assert "SSIM 0.850" in "\n".join(c.value for c in at.caption)
    assert "possible copy of training scan case_a" in at.warning[0].value
