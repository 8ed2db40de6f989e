"""Turning HU volumes into display images: CT window presets, planes, orientation, aspect.

Shared by the app's slice browser, the review reader page and the report's mosaics, so real and
generated scans always go through one rendering pipeline. Pure numpy; no Streamlit, no plotting.

Images follow the radiological convention of DICOM viewers: in axial and coronal views the
patient's right is on the image's left; axial has anterior at the top; coronal and sagittal have
superior at the top; sagittal has anterior on the left. Arrays are (x, y, z) RAS+ (see volume.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ctdiff.data.hu import WINDOW_PRESETS  # noqa: F401 (name -> (width, level); the viewers import it from here too)

PLANES = ("axial", "coronal", "sagittal")

# plane -> (left, right, top, bottom) labels of the displayed image
ORIENTATION_LABELS: dict[str, tuple[str, str, str, str]] = {
    "axial": ("R", "L", "A", "P"),
    "coronal": ("R", "L", "S", "I"),
    "sagittal": ("A", "P", "S", "I"),
}
# plane -> the array axis a slice index runs along
PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


def _check_plane(plane: str) -> str:
    if plane not in PLANE_AXIS:
        raise ValueError(f"unknown plane {plane!r}; choose one of {PLANES}")
    return plane


def n_slices(shape: Sequence[int], plane: str) -> int:
    return int(shape[PLANE_AXIS[_check_plane(plane)]])


def plane_slice(array: np.ndarray, plane: str, index: int) -> np.ndarray:
    """The 2D image (rows, cols) of one slice of an (x, y, z) array, oriented for display."""
    axis = PLANE_AXIS[_check_plane(plane)]
    if not 0 <= index < array.shape[axis]:
        raise IndexError(f"{plane} slice {index} out of range 0..{array.shape[axis] - 1}")
    if plane == "axial":
        img = array[::-1, ::-1, index].T  # rows: anterior->posterior, cols: right->left
    elif plane == "coronal":
        img = array[::-1, index, ::-1].T  # rows: superior->inferior, cols: right->left
    else:
        img = array[index, ::-1, ::-1].T  # rows: superior->inferior, cols: anterior->posterior
    return np.ascontiguousarray(img)


def display_to_voxel(shape: Sequence[int], plane: str, index: int, row: int, col: int) -> tuple[int, int, int]:
    """The (x, y, z) voxel index shown at image pixel (row, col) of :func:`plane_slice`."""
    X, Y, Z = (int(s) for s in shape)
    if plane == "axial":
        return X - 1 - col, Y - 1 - row, index
    if plane == "coronal":
        return X - 1 - col, index, Z - 1 - row
    _check_plane(plane)
    return index, Y - 1 - col, Z - 1 - row


def pixel_aspect(spacing: Sequence[float], plane: str) -> float:
    """Physical height / width of one displayed pixel (pass to imshow's ``aspect`` or scale rows)."""
    sx, sy, sz = (float(s) for s in spacing)
    return {"axial": sy / sx, "coronal": sz / sx, "sagittal": sz / sy}[_check_plane(plane)]


def window_bounds(width: float, level: float) -> tuple[float, float]:
    if not width > 0:
        raise ValueError(f"window width must be > 0, got {width}")
    return level - width / 2.0, level + width / 2.0


def apply_window(image_hu: np.ndarray, width: float, level: float) -> np.ndarray:
    """Map HU to uint8 grey levels with a linear CT window (values outside are clipped)."""
    # Numpy on purpose, not MONAI's ScaleIntensityRange (ctdiff.data.tensors.scale_range): the values
    # are the same bit for bit, but this module is torch-free and the app's viewers and the reader
    # study import it; MONAI would add torch + monai (~6 s on 2 cores) to their import
    # (tests/ctdiff/test_tensors_display_body.py::test_apply_window_equals_monai_and_stays_torch_free).
    lo, hi = window_bounds(width, level)
    scaled = (np.asarray(image_hu, dtype=np.float32) - lo) / (hi - lo)
    return np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def mosaic(array: np.ndarray, plane: str, every: int, width: float, level: float, columns: int = 6) -> np.ndarray:
    """Every ``every``-th slice of a plane, windowed to uint8 and tiled into one image (row-major)."""
    if every < 1:
        raise ValueError("every must be >= 1")
    idx = list(range(0, n_slices(array.shape, plane), every))
    tiles = [apply_window(plane_slice(array, plane, i), width, level) for i in idx]
    h, w = tiles[0].shape
    rows = -(-len(tiles) // columns)
    cols = min(columns, len(tiles))
    out = np.zeros((rows * h, cols * w), dtype=np.uint8)
    for n, tile in enumerate(tiles):
        r, c = divmod(n, columns)
        out[r * h : (r + 1) * h, c * w : (c + 1) * w] = tile
    return out
