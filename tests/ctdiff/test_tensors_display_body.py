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
from ctdiff.data.tensors import array_to_tensor, hu_to_model, model_to_hu, scale_range, tensor_to_array


def formula_hu_to_model(x, window):
    """The hand-written scaling that MONAI's ScaleIntensityRange replaced (the reference)."""
    lo, hi = float(window[0]), float(window[1])
    scaled = (x - lo) / (hi - lo) * 2.0 - 1.0
    return scaled.clamp(-1.0, 1.0) if isinstance(scaled, torch.Tensor) else np.clip(scaled, -1.0, 1.0)


def formula_model_to_hu(x, window):
    lo, hi = float(window[0]), float(window[1])
    x = x.clamp(-1.0, 1.0) if isinstance(x, torch.Tensor) else np.clip(x, -1.0, 1.0)
    return (x + 1.0) / 2.0 * (hi - lo) + lo


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


@pytest.mark.parametrize("window", [(-1024.0, 1500.0), (-1000.0, 1000.0), (-160.0, 240.0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_hu_scaling_matches_the_formula_bitwise(window, dtype, as_tensor, rng):
    # MONAI does the same float operations in the same order, so checkpoints trained with the
    # formula (the shipped demo model's window is (-1024, 1500)) sample the same HU, bit for bit
    hu = rng.uniform(window[0] - 700, window[1] + 700, 20_000).astype(dtype)
    x = rng.uniform(-1.4, 1.4, 20_000).astype(dtype)
    wrap = torch.from_numpy if as_tensor else (lambda a: a)
    for ours, ref, arg in ((hu_to_model, formula_hu_to_model, hu), (model_to_hu, formula_model_to_hu, x)):
        got, want = ours(wrap(arg), window), ref(wrap(arg), window)
        assert type(got) is type(want)  # numpy stays numpy; a tensor stays a plain tensor (no MetaTensor)
        assert got.dtype == want.dtype  # float64 stays float64 (MONAI's default dtype would be float32)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert np.asarray(hu_to_model(wrap(hu), window)).min() == -1.0  # the clipping is really exercised
    assert np.asarray(model_to_hu(wrap(x), window)).max() == window[1]


def test_model_to_hu_stays_inside_a_window_the_formula_overshot():
    # where MONAI and the old formula differ: the formula clipped to [-1, 1] and then mapped, which can
    # land one float step above a window edge that float cannot hold exactly; MONAI clips the output
    window = (-57.123, 12.9)
    x = np.array([0.3, 1.0, 1.2], dtype=np.float32)
    assert formula_model_to_hu(x, window)[2] > np.float32(12.9)
    got = model_to_hu(x, window)
    assert got[1] == got[2] == np.float32(12.9)
    assert got[0] == formula_model_to_hu(x, window)[0]


def test_scale_intensity_range_truncates_integers():
    # why scale_range makes integer input float32: MONAI with dtype=None casts back to int16
    from monai.transforms import ScaleIntensityRange

    hu = np.array([-1024, -500, 238, 1000, 1500], dtype=np.int16)
    monai_out = ScaleIntensityRange(-1024, 1500, -1.0, 1.0, clip=True, dtype=None)(hu)
    assert monai_out.dtype == torch.int16 and set(monai_out.tolist()) <= {-1, 0, 1}
    ours = hu_to_model(hu, (-1024, 1500))
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, (hu.astype(np.float64) + 1024) / 2524 * 2 - 1, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="lo < hi"):
        model_to_hu(ours, (5.0, -5.0))


def test_apply_window_equals_monai_and_stays_torch_free(rng):
    import subprocess
    import sys

    hu = rng.uniform(-1500, 2500, (64, 64)).astype(np.float32)
    for width, level in ((400, 40), (1500, -600), (2000, 300), (350.5, 37.25)):
        lo, hi = level - width / 2, level + width / 2
        expected = np.round(scale_range(hu, (lo, hi), (0.0, 1.0)) * 255.0).astype(np.uint8)
        np.testing.assert_array_equal(apply_window(hu, width, level), expected)
    # the reason apply_window and similarity.to_unit keep their numpy/torch lines: the modules the
    # viewers, the body mask and `python -m eval report` import never load torch / MONAI's transforms
    code = (
        "import sys\n"
        "import ctdiff.data.display, ctdiff.data.body\n"
        "assert 'torch' not in sys.modules, 'display/body import torch'\n"
        "import eval.report.build\n"
        "assert 'monai' not in sys.modules, 'the report imports MONAI'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def formula_bounding_box(mask, margin):
    """The hand-written loop that MONAI's generate_spatial_bounding_box replaced (the reference)."""
    box = []
    for axis in range(mask.ndim):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        m = margin if axis < 2 else 0
        box.append(slice(max(int(idx[0]) - m, 0), min(int(idx[-1]) + 1 + m, mask.shape[axis])))
    return tuple(box)


def test_bounding_box_matches_the_loop_it_replaced(rng):
    for trial in range(30):
        shape = tuple(int(n) for n in rng.integers(3, 14, 3))
        mask = np.zeros(shape, dtype=bool)
        lo = [int(rng.integers(0, n)) for n in shape]
        hi = [int(rng.integers(a, n)) + 1 for a, n in zip(lo, shape)]
        mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = rng.random(tuple(b - a for a, b in zip(lo, hi))) < 0.3
        mask[lo[0], lo[1], lo[2]] = mask[hi[0] - 1, hi[1] - 1, hi[2] - 1] = True
        margin = int(rng.integers(0, 5))
        assert bounding_box(mask, margin) == formula_bounding_box(mask, margin), (trial, shape, margin)
    assert bounding_box(np.zeros((4, 5, 2), bool), 3) == (slice(0, 4), slice(0, 5), slice(0, 2))


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
