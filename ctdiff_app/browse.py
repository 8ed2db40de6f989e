"""Pure helpers for the app's slice browser: linked scrolling, hover geometry, nearest-real lookup.

Rendering itself (planes, windows, aspect, mosaics) lives in :mod:`ctdiff.data.display`; this module
adds what a two-pane viewer needs on top of it. No Streamlit, no plotting, no file I/O.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ctdiff.data.display import PLANE_AXIS, WINDOW_PRESETS, display_to_voxel, n_slices, plane_slice
from ctdiff.data.io import to_int16_hu

CUSTOM_WINDOW = "custom"
AXIS_NAMES = ("x", "y", "z")


def window_choice(preset: str, width: float | None = None, level: float | None = None) -> tuple[float, float]:
    """(width, level) for a preset name, or the user's values for ``"custom"``."""
    if preset == CUSTOM_WINDOW:
        if width is None or level is None:
            raise ValueError("a custom window needs a width and a level")
        if not width > 0:
            raise ValueError(f"window width must be > 0, got {width}")
        return float(width), float(level)
    if preset not in WINDOW_PRESETS:
        raise ValueError(f"unknown window preset {preset!r}; choose one of {[*WINDOW_PRESETS, CUSTOM_WINDOW]}")
    return WINDOW_PRESETS[preset]


def middle_slice(shape: Sequence[int], plane: str) -> int:
    return n_slices(shape, plane) // 2


def linked_index(index: int, n_from: int, n_to: int) -> int:
    """The slice at the same relative position in a stack of ``n_to`` slices.

    First maps to first and last to last, so two stacks of different length scroll together.
    """
    if n_from < 1 or n_to < 1:
        raise ValueError("slice counts must be >= 1")
    if not 0 <= index < n_from:
        raise IndexError(f"slice {index} out of range 0..{n_from - 1}")
    if n_from == 1:
        return (n_to - 1) // 2
    return int(round(index * (n_to - 1) / (n_from - 1)))


def clamp_index(index: int | None, n: int, default: int) -> int:
    """``index`` if it is a valid slice of a stack of ``n``, else ``default``."""
    if index is None or not 0 <= int(index) < n:
        return default
    return int(index)


def slice_axes(plane: str) -> tuple[str, str, str]:
    """Names of the voxel axes along the displayed image's columns, rows, and the slice direction."""
    slice_axis = PLANE_AXIS[plane]
    cols_axis = 1 if plane == "sagittal" else 0
    rows_axis = 1 if plane == "axial" else 2
    return AXIS_NAMES[cols_axis], AXIS_NAMES[rows_axis], AXIS_NAMES[slice_axis]


def pixel_grid(shape: Sequence[int], plane: str) -> dict[str, float]:
    """Coordinates that label display pixels with their voxel indices.

    A heatmap drawn with ``x = x0 + col * dx`` and ``y = y0 + row * dy`` shows, under the cursor,
    the voxel index along the image's horizontal and vertical anatomical axes (the same voxel as
    :func:`ctdiff.data.display.display_to_voxel`). Radiological display runs both voxel axes backwards,
    so ``dx = dy = -1``: draw with a reversed x axis and a normal (upward) y axis.
    """
    rows, cols = _display_shape(shape, plane)
    return {"x0": float(cols - 1), "dx": -1.0, "y0": float(rows - 1), "dy": -1.0}


def _display_shape(shape: Sequence[int], plane: str) -> tuple[int, int]:
    X, Y, Z = (int(s) for s in shape)
    return {"axial": (Y, X), "coronal": (Z, X), "sagittal": (Z, Y)}[plane]


def voxel_at(shape: Sequence[int], plane: str, index: int, row: int, col: int) -> tuple[int, int, int]:
    """The voxel shown at a display pixel, with the pixel checked against the image size."""
    rows, cols = _display_shape(shape, plane)
    if not (0 <= row < rows and 0 <= col < cols):
        raise IndexError(f"pixel ({row}, {col}) outside the {rows}x{cols} {plane} image")
    return display_to_voxel(shape, plane, index, row, col)


def hu_readout(array: np.ndarray, plane: str, index: int, row: int, col: int) -> tuple[tuple[int, int, int], float]:
    """(voxel index, HU) under display pixel (row, col) of a slice."""
    voxel = voxel_at(array.shape, plane, index, row, col)
    return voxel, float(array[voxel])


def display_volume(array: np.ndarray) -> np.ndarray:
    """The volume rounded to int16 HU, what a CT viewer shows and what NIfTI stores.

    Computed once per volume (the app caches it) so a slider move only slices: the image sent to
    the browser carries HU, not grey levels; the CT window is applied by the colour scale, so the
    hover readout is the true HU while the picture is windowed.
    """
    return to_int16_hu(array)


def display_slice_hu(array: np.ndarray, plane: str, index: int) -> np.ndarray:
    """One displayed slice in int16 HU (from a float HU volume or from :func:`display_volume`)."""
    img = plane_slice(array, plane, index)
    return img if img.dtype == np.int16 else display_volume(img)


def aspect_correct(image: np.ndarray, aspect: float) -> np.ndarray:
    """Stretch an image (nearest neighbour) so that pixels of physical height/width ``aspect`` look square.

    Only for still images (mosaics); interactive slices keep their voxels and set the plot's aspect.
    Nearest neighbour on purpose: a viewer must not invent intermediate HU.
    """
    if not aspect > 0:
        raise ValueError(f"aspect must be > 0, got {aspect}")
    h, w = image.shape[:2]
    if abs(aspect - 1.0) < 1e-6:
        return image
    if aspect > 1:
        new_h, new_w = int(round(h * aspect)), w
    else:
        new_h, new_w = h, int(round(w / aspect))
    rows = np.minimum((np.arange(new_h) + 0.5) * h / new_h, h - 1).astype(int)
    cols = np.minimum((np.arange(new_w) + 0.5) * w / new_w, w - 1).astype(int)
    return image[rows][:, cols]


def mosaic_indices(n: int, every: int) -> list[int]:
    """Slice indices a mosaic of every ``every``-th slice shows (as :func:`ctdiff.data.display.mosaic`)."""
    if every < 1:
        raise ValueError("every must be >= 1")
    return list(range(0, n, every))


# ------------------------------------------------------------------------- report look-ups
# A report names scans by path, but a path does not identify a scan: a new Generate run writes a new
# case_000 under the old name. So look-ups go by the content hash the report recorded for each scan
# (eval.report.provenance: per_case "sha256", "nearest_real_sha256", provenance.scans), never by name.
def report_hash_of(report: Mapping[str, Any], file: str | os.PathLike | None) -> str | None:
    """The content hash the report recorded for one of its own file entries, or None."""
    if not file:
        return None
    prov = report.get("provenance") or {}
    for rows in (prov.get("scans") or {}).values():
        for r in rows or []:
            if isinstance(r, Mapping) and r.get("file") == str(file) and r.get("sha256"):
                return str(r["sha256"])
    for r in report.get("per_case") or []:
        if r.get("file") == str(file) and r.get("sha256"):
            return str(r["sha256"])
    return None


def find_case_entry(report: Mapping[str, Any], digest: str | None, cohort: str) -> dict | None:
    """The report's per-case record of the scan with content hash ``digest`` in a cohort, or None."""
    if not digest:
        return None
    for entry in report.get("per_case") or []:
        if entry.get("cohort") == cohort and entry.get("sha256") == digest:
            return dict(entry)
    return None


def nearest_real(report: Mapping[str, Any], generated_hash: str | None) -> dict | None:
    """What the report says about the generated scan with this content hash, or None if it did not measure it.

    ``{"file", "sha256", "ssim", "memorised"[, "nearest_train", "nearest_train_sha256", "distance",
    "threshold"]}``: ``file``/``sha256`` name the nearest real scan the report found; ``memorised`` is
    True when the report flagged this scan as a likely copy of a training scan.
    """
    entry = find_case_entry(report, generated_hash, "generated")
    if entry is None:
        return None
    flagged = next(
        (f for f in report.get("memorization_flagged") or [] if f.get("generated") == entry.get("file")), None
    )
    out = {
        "file": entry.get("nearest_real_file"),
        "sha256": entry.get("nearest_real_sha256") or report_hash_of(report, entry.get("nearest_real_file")),
        "ssim": entry.get("ssim_nearest_real"),
        "memorised": flagged is not None,
    }
    if flagged is not None:
        out.update(
            nearest_train=flagged.get("nearest_train"),
            nearest_train_sha256=report_hash_of(report, flagged.get("nearest_train")),
            distance=flagged.get("distance"),
            threshold=flagged.get("threshold"),
        )
    return out


def path_with_hash(digest: str | None, hashes: Mapping[str, str]) -> str | None:
    """The path (of ``{path: content hash}``) holding the scan with this hash, or None."""
    if not digest:
        return None
    return next((path for path, h in hashes.items() if h == digest), None)
