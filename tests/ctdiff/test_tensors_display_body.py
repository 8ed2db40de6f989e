"""The shared conversion (HU <-> tensor), display (windows, planes) and body-mask modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctdiff.data.body import body_mask, bounding_box
from ctdiff.data.display import (
    ORIENTATION_LABELS,
    apply_window,
    display_to_voxel,
    mosaic,
    pixel_aspect,
    plane_slice,
)
from ctdiff.data.tensors import array_to_tensor, hu_to_model, model_to_hu, tensor_to_array


def test_array_tensor_axes_and_round_trip(rng):
    arr = rng.normal(size=(5, 4, 3)).astype(np.float32)
    t = array_to_tensor(arr)
    assert t.shape == (1, 3, 4, 5)  # (C, D=z, H=y, W=x)
    assert t[0, 2, 1, 4] == arr[4, 1, 2]
    np.testing.assert_array_equal(tensor_to_array(t), arr)


def test_hu_window_maps_to_unit_range_and_back():
    hu = np.array([-1024.0, 238.0, 1500.0, 3000.0])
    x = hu_to_model(hu, (-1024, 1500))
    np.testing.assert_allclose(x, [-1.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(model_to_hu(x, (-1024, 1500)), [-1024.0, 238.0, 1500.0, 1500.0])
    t = hu_to_model(torch.tensor([-2000.0, 238.0]), (-1024, 1500))
    assert torch.allclose(t, torch.tensor([-1.0, 0.0]))
    with pytest.raises(ValueError, match="lo < hi"):
        hu_to_model(hu, (100, 100))


def test_plane_slices_follow_radiological_convention():
    # volume where each voxel's value encodes its (x, y, z) index: value = 100x + 10y + z
    x, y, z = np.meshgrid(np.arange(4), np.arange(3), np.arange(2), indexing="ij")
    arr = (100 * x + 10 * y + z).astype(np.float32)
    ax = plane_slice(arr, "axial", 1)
    assert ax.shape == (3, 4)  # rows = y, cols = x
    assert ax[0, 0] == 100 * 3 + 10 * 2 + 1  # top-left: patient right-most x, anterior-most y
    assert ax[-1, -1] == 0 + 0 + 1
    cor = plane_slice(arr, "coronal", 2)
    assert cor.shape == (2, 4) and cor[0, 0] == 300 + 20 + 1  # top = superior z
    sag = plane_slice(arr, "sagittal", 0)
    assert sag.shape == (2, 3) and sag[0, 0] == 0 + 20 + 1  # left = anterior y, top = superior
    for plane, img in (("axial", ax), ("coronal", cor), ("sagittal", sag)):
        index = {"axial": 1, "coronal": 2, "sagittal": 0}[plane]
        for r in range(img.shape[0]):
            for c in range(img.shape[1]):
                assert arr[display_to_voxel(arr.shape, plane, index, r, c)] == img[r, c]
    assert ORIENTATION_LABELS["axial"] == ("R", "L", "A", "P")
    with pytest.raises(IndexError):
        plane_slice(arr, "axial", 2)


def test_aspect_and_window():
    assert pixel_aspect((0.5, 0.5, 2.5), "axial") == 1.0
    assert pixel_aspect((0.5, 0.8, 2.5), "coronal") == 5.0
    assert pixel_aspect((0.5, 0.8, 2.5), "sagittal") == pytest.approx(3.125)
    img = apply_window(np.array([-200.0, 40.0, 240.0, 1000.0]), 400, 40)
    np.testing.assert_array_equal(img, [0, 128, 255, 255])
    assert img.dtype == np.uint8
    m = mosaic(np.zeros((4, 3, 5)), "axial", every=2, width=400, level=40, columns=2)
    assert m.shape == (2 * 3, 2 * 4)  # slices 0, 2, 4 tiled 2 per row


def test_body_mask_keeps_body_fills_gas_and_drops_table():
    vol = np.full((40, 40, 6), -1000.0, dtype=np.float32)
    xx, yy = np.meshgrid(np.arange(40), np.arange(40), indexing="ij")
    body = (xx - 20) ** 2 / 15**2 + (yy - 22) ** 2 / 12**2 <= 1
    vol[body] = 40.0
    vol[18:22, 20:23, :] = -1000.0  # gas inside the body
    vol[2:38, 3, :] = 200.0  # a one-voxel-thin table below the patient, separated by air
    mask = body_mask(vol)
    assert mask[body].all()  # gas pocket filled
    assert not mask[:, 3, :].any()  # table removed
    box = bounding_box(mask, margin=1)
    assert box[0] == slice(4, 37) and box[2] == slice(0, 6)
    assert not body_mask(np.full((8, 8, 2), -1000.0)).any()
