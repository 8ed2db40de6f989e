"""ctdiff_app.browse: linked scrolling, hover geometry vs display_to_voxel, mosaics, report look-ups."""

from __future__ import annotations

import numpy as np
import pytest

from ctdiff.data.display import PLANES, display_to_voxel, mosaic, n_slices, plane_slice
from ctdiff_app.browse import (
    aspect_correct,
    clamp_index,
    display_slice_hu,
    display_volume,
    hu_readout,
    linked_index,
    mosaic_indices,
    nearest_real,
    path_with_hash,
    pixel_grid,
    slice_axes,
    voxel_at,
    window_choice,
)


def test_window_choice_presets_and_custom():
    assert window_choice("soft tissue") == (400.0, 40.0)
    assert window_choice("lung") == (1500.0, -600.0)
    assert window_choice("custom", 80, -10) == (80.0, -10.0)
    with pytest.raises(ValueError, match="width"):
        window_choice("custom", 0, 40)
    with pytest.raises(ValueError, match="custom window needs"):
        window_choice("custom")
    with pytest.raises(ValueError, match="unknown window preset"):
        window_choice("brain")


def test_linked_index_maps_ends_to_ends_and_keeps_order():
    assert linked_index(0, 8, 6) == 0
    assert linked_index(7, 8, 6) == 5
    assert linked_index(3, 8, 6) == 2  # 3 * 5 / 7 = 2.14
    assert linked_index(4, 8, 6) == 3  # 4 * 5 / 7 = 2.86
    assert linked_index(2, 5, 5) == 2
    assert linked_index(0, 1, 9) == 4  # a single slice sits in the middle of the other stack
    mapped = [linked_index(i, 26, 100) for i in range(26)]
    assert mapped == sorted(mapped) and mapped[0] == 0 and mapped[-1] == 99
    with pytest.raises(IndexError):
        linked_index(8, 8, 6)


def test_clamp_index():
    assert clamp_index(3, 5, 2) == 3
    assert clamp_index(5, 5, 2) == 2
    assert clamp_index(-1, 5, 2) == 2
    assert clamp_index(None, 5, 2) == 2


@pytest.mark.parametrize("plane", PLANES)
def test_pixel_grid_labels_each_pixel_with_its_voxel(plane):
    shape = (7, 5, 4)
    index = 2
    grid = pixel_grid(shape, plane)
    h_name, v_name, s_name = slice_axes(plane)
    img = plane_slice(np.zeros(shape), plane, index)
    for row in range(img.shape[0]):
        for col in range(img.shape[1]):
            voxel = dict(zip("xyz", display_to_voxel(shape, plane, index, row, col)))
            assert grid["x0"] + col * grid["dx"] == voxel[h_name]
            assert grid["y0"] + row * grid["dy"] == voxel[v_name]
            assert voxel[s_name] == index


def test_slice_axes_names():
    assert slice_axes("axial") == ("x", "y", "z")
    assert slice_axes("coronal") == ("x", "z", "y")
    assert slice_axes("sagittal") == ("y", "z", "x")


def test_hu_readout_and_display_slice(small_volume):
    arr = small_volume.array
    voxel, hu = hu_readout(arr, "coronal", 4, 1, 2)
    assert voxel == display_to_voxel(arr.shape, "coronal", 4, 1, 2)
    assert hu == pytest.approx(float(arr[voxel]))
    shown = display_slice_hu(arr, "coronal", 4)
    assert shown.dtype == np.int16
    np.testing.assert_array_equal(shown, np.rint(plane_slice(arr, "coronal", 4)).astype(np.int16))
    assert shown[1, 2] == int(np.rint(hu))
    # slicing the cached int16 volume gives the same image as rounding the float slice
    np.testing.assert_array_equal(display_slice_hu(display_volume(arr), "coronal", 4), shown)
    with pytest.raises(IndexError):
        voxel_at(arr.shape, "axial", 0, 10, 0)


def test_display_volume_rounds_and_clips():
    arr = np.array([[[-0.6, 0.5, 1.5, 40000.0, -40000.0, 12.49]]], dtype=np.float32)
    np.testing.assert_array_equal(display_volume(arr), [[[-1, 0, 2, 32767, -32768, 12]]])
    assert display_volume(arr).dtype == np.int16  # axial image has 10 rows (y) -> row 10 is outside


def test_aspect_correct_makes_pixels_square():
    img = np.arange(4 * 6, dtype=np.uint8).reshape(4, 6)
    tall = aspect_correct(img, 2.5)  # each pixel 2.5x taller than wide
    assert tall.shape == (10, 6)
    # nearest neighbour: every output row is an input row, in order, each repeated 2-3 times
    src = [int(np.flatnonzero((img == r).all(axis=1))[0]) for r in tall]
    assert src == sorted(src) and set(src) == {0, 1, 2, 3}
    assert all(2 <= src.count(i) <= 3 for i in range(4))
    wide = aspect_correct(img, 0.5)
    assert wide.shape == (4, 12)
    np.testing.assert_array_equal(wide[:, ::2], img)
    assert aspect_correct(img, 1.0) is img
    with pytest.raises(ValueError):
        aspect_correct(img, 0)


def test_mosaic_indices_match_display_mosaic(small_volume):
    arr = small_volume.array
    idx = mosaic_indices(n_slices(arr.shape, "axial"), 4)
    assert idx == [0, 4]
    tiles = mosaic(arr, "axial", 4, 400, 40, columns=6)
    assert tiles.shape[1] == len(idx) * plane_slice(arr, "axial", 0).shape[1]


REPORT = {
    "provenance": {
        "scans": {
            "real": [
                {"file": "/data/real/case_a.nii.gz", "sha256": "h-real-a"},
                {"file": "real/case_b.nii.gz", "sha256": "h-real-b"},
            ],
            "train": [{"file": "train/case_a.nii.gz", "sha256": "h-train-a"}],
        }
    },
    "per_case": [
        {"cohort": "real", "file": "/data/real/case_a.nii.gz", "sha256": "h-real-a", "ssim_nearest_real": None},
        {
            "cohort": "generated",
            "file": "gen/sample_000.nii.gz",
            "sha256": "h-gen-0",
            "ssim_nearest_real": 0.71,
            "nearest_real_file": "real/case_b.nii.gz",
            "nearest_real_sha256": "h-real-b",
        },
        {
            "cohort": "generated",
            "file": "gen/sample_001.nii.gz",
            "sha256": "h-gen-1",
            "ssim_nearest_real": 0.93,
            "nearest_real_file": "/data/real/case_a.nii.gz",
        },
    ],
    "memorization_flagged": [
        {
            "generated": "gen/sample_001.nii.gz",
            "nearest_train": "train/case_a.nii.gz",
            "distance": 0.01,
            "threshold": 0.05,
        }
    ],
}


def test_nearest_real_and_memorisation_lookup_by_content_hash():
    a = nearest_real(REPORT, "h-gen-0")
    assert a == {"file": "real/case_b.nii.gz", "sha256": "h-real-b", "ssim": 0.71, "memorised": False}
    b = nearest_real(REPORT, "h-gen-1")
    # no nearest_real_sha256 in the row: the hash comes from the report's provenance list
    assert b["file"] == "/data/real/case_a.nii.gz" and b["sha256"] == "h-real-a" and b["memorised"] is True
    assert (b["nearest_train"], b["nearest_train_sha256"], b["distance"], b["threshold"]) == (
        "train/case_a.nii.gz",
        "h-train-a",
        0.01,
        0.05,
    )
    # a scan the report did not measure has no entry, whatever its file name
    assert nearest_real(REPORT, "h-new-case-000") is None
    assert nearest_real(REPORT, None) is None
    assert nearest_real({}, "h-gen-0") is None


def test_path_with_hash_ignores_file_names():
    hashes = {"/w/real/case_a.nii.gz": "h-real-b", "/w/real/case_b.nii.gz": "h-real-a"}  # names swapped
    assert path_with_hash("h-real-a", hashes) == "/w/real/case_b.nii.gz"
    assert path_with_hash("h-real-b", hashes) == "/w/real/case_a.nii.gz"
    assert path_with_hash("h-other", hashes) is None
    assert path_with_hash(None, hashes) is None
