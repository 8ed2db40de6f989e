"""Geometry changes of a :class:`~ctdiff.data.volume.Volume` that keep its world position right.

* :func:`resize_to_shape` — a new voxel count over the same world extent (the thesis resized
  512x512x26 scans to 256x256x26); voxels are boxes, so the outer box edges stay where they were.
* :func:`resample_to_spacing` — an exact new voxel spacing, the grid centred on the old one.
* :func:`crop_volume` — a box of voxels, with the affine's origin moved to the box's first voxel.

Interpolation is (tri)linear, so HU of homogeneous regions are preserved; before shrinking, a
Gaussian with sigma = (step - 1) / 2 voxels per axis removes frequencies the new grid cannot hold
(the anti-aliasing rule of ``skimage.transform.resize``). The affine is updated with the same
index mapping that the interpolation uses, so world coordinates stay exact for oblique affines too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ctdiff.data.volume import Volume


def _resample(
    volume: Volume, out_shape: Sequence[int], step: np.ndarray, offset: np.ndarray, order: int, anti_aliasing: bool
) -> Volume:
    """Sample ``volume`` at input index ``offset + step * i`` for every output index ``i``.

    Written with scipy.ndimage rather than ``skimage.transform.resize`` because resampling to an
    exact spacing needs an offset and step that ``resize`` (output shape only) cannot express;
    one mapping serves both operations and is turned into the new affine below. For the
    resize-to-shape case the result equals ``skimage.transform.resize(..., mode="edge")`` (tested).
    """
    array = volume.array
    if anti_aliasing:
        sigma = np.maximum(0.0, (step - 1.0) / 2.0)
        if np.any(sigma > 0):
            array = ndimage.gaussian_filter(array, sigma=sigma, mode="nearest")
    out = ndimage.affine_transform(
        array,
        step,
        offset=offset,
        output_shape=tuple(int(n) for n in out_shape),
        order=order,
        mode="nearest",
        output=np.float32,
    )
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag(step)
    index_map[:3, 3] = offset
    return volume.with_array(out, volume.affine @ index_map)


def resize_to_shape(volume: Volume, shape: Sequence[int], order: int = 1, anti_aliasing: bool = True) -> Volume:
    """Resize to ``shape`` voxels over the same world extent; spacing becomes extent / shape."""
    new = np.asarray([int(n) for n in shape])
    if new.shape != (3,) or np.any(new < 1):
        raise ValueError(f"shape must be three positive integers, got {tuple(shape)}")
    old = np.asarray(volume.shape)
    step = old / new
    # voxel centres of a box grid: input index = (i + 0.5) * step - 0.5 (scipy zoom grid_mode=True)
    return _resample(volume, new, step, 0.5 * step - 0.5, order, anti_aliasing)


def resample_to_spacing(volume: Volume, spacing: Sequence[float], order: int = 1, anti_aliasing: bool = True) -> Volume:
    """Resample to exactly ``spacing`` mm; the voxel count is round(extent / spacing) per axis and
    the new grid is centred on the old one."""
    new_sp = np.asarray([float(s) for s in spacing])
    if new_sp.shape != (3,) or np.any(~np.isfinite(new_sp)) or np.any(new_sp <= 0):
        raise ValueError(f"spacing must be three positive numbers in mm, got {tuple(spacing)}")
    old_sp = np.asarray(volume.spacing)
    old = np.asarray(volume.shape)
    new = np.maximum(1, np.rint(old * old_sp / new_sp).astype(int))
    step = new_sp / old_sp
    offset = (old - 1) / 2.0 - step * (new - 1) / 2.0
    return _resample(volume, new, step, offset, order, anti_aliasing)


def crop_volume(volume: Volume, box: Sequence[slice]) -> Volume:
    """The voxels in ``box`` (three slices with step 1); the affine origin moves to the first voxel."""
    if len(box) != 3:
        raise ValueError(f"box must hold three slices, got {len(box)}")
    box = tuple(slice(*s.indices(n)[:2]) for s, n in zip(box, volume.shape))
    if any(s.stop <= s.start for s in box):
        raise ValueError(f"empty crop box {box} for shape {volume.shape}")
    start = np.array([s.start for s in box] + [1.0])
    affine = volume.affine.copy()
    affine[:, 3] = volume.affine @ start
    return volume.with_array(np.ascontiguousarray(volume.array[box]), affine)
