"""Blinded rendering: every case of a session goes through one pipeline to same-sized PNG images.

Real and generated volumes usually differ in shape and spacing (e.g. 512x512 real vs 256x256
generated). Shown as they are, image size alone would give the answer away. So each session fixes
one **display grid** (shape and voxel size), every case volume is resampled onto it once (linear
interpolation, anti-aliased when shrinking: :func:`ctdiff.data.resample.resize_to_shape`, the one
resampling function of ctdiff) and stored as int16 HU in
a server-side cache named by the case's opaque ID. A displayed slice is then cut from that cached
array, stretched to the session's display size for the plane's physical aspect, windowed to uint8
with :func:`ctdiff.data.display.apply_window` and encoded as an uncompressed PNG without metadata, so
its byte size depends on the image size only, never on what it shows. The browser only
ever receives that PNG: same size, same dtype, same code path and same cache for both cohorts.

All cases are cached before the first one is shown (at session creation, and checked again when a
reader signs in), so no cohort is loaded lazily and timing carries no hint either.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.transform import resize

from ctdiff.atomic import atomic_path
from ctdiff.data.display import PLANE_AXIS, WINDOW_PRESETS, apply_window, pixel_aspect, plane_slice
from ctdiff.data.resample import resize_to_shape
from ctdiff.data.volume import Volume
from ctdiff.errors import ConfigError

MAX_GRID_INPLANE = 512  # never display more than 512 voxels across
MAX_GRID_SLICES = 512
DISPLAY_WIDTH = 512  # PNG width in pixels; heights follow the plane's physical aspect
INT16_MIN, INT16_MAX = -32768, 32767


@dataclasses.dataclass(frozen=True)
class DisplayGrid:
    """The common voxel grid of a session: shape (x, y, z) and voxel size in mm."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    def image_size(self, plane: str, width: int = DISPLAY_WIDTH) -> tuple[int, int]:
        """(height, width) in pixels of every image of ``plane`` in this session."""
        rows, cols = _plane_dims(self.shape, plane)
        height = rows * pixel_aspect(self.spacing, plane) * width / cols
        return max(1, int(round(height))), int(width)

    def n_slices(self, plane: str) -> int:
        return int(self.shape[PLANE_AXIS[plane]])

    def middle(self, plane: str) -> int:
        return self.n_slices(plane) // 2


def _plane_dims(shape: Sequence[int], plane: str) -> tuple[int, int]:
    x, y, z = shape
    return {"axial": (y, x), "coronal": (z, x), "sagittal": (z, y)}[plane]


def choose_grid(shapes: Sequence[Sequence[int]], spacings: Sequence[Sequence[float]]) -> DisplayGrid:
    """The display grid of a session: per axis the smallest voxel count of any case (capped), so no
    case is shown with more detail than the coarsest one has, spanning the cases' median extent."""
    if not shapes:
        raise ConfigError("a review session needs at least one readable case")
    shapes_a = np.asarray(shapes, dtype=np.int64)
    extents = shapes_a * np.asarray(spacings, dtype=np.float64)
    caps = np.array([MAX_GRID_INPLANE, MAX_GRID_INPLANE, MAX_GRID_SLICES])
    shape = np.minimum(shapes_a.min(axis=0), caps)
    spacing = np.median(extents, axis=0) / shape
    return DisplayGrid(tuple(int(s) for s in shape), tuple(round(float(s), 6) for s in spacing))


def to_grid(volume: Volume, grid: DisplayGrid) -> np.ndarray:
    """Resample a volume's whole field of view onto the grid; int16 HU (x, y, z)."""
    array = volume.array.astype(np.float32, copy=False)
    if tuple(array.shape) != grid.shape:
        # equals skimage.transform.resize(order=1, mode="edge", anti_aliasing=True) (tests/ctdiff/test_prepare.py)
        array = resize_to_shape(volume.with_array(array), grid.shape).array
    return np.clip(np.rint(array), INT16_MIN, INT16_MAX).astype(np.int16)


def cache_file(cache_dir: Path, case_code: str) -> Path:
    return Path(cache_dir) / f"{case_code}.npy"


def write_cached_case(cache_dir: Path, case_code: str, grid_array: np.ndarray) -> Path:
    """Store one case's grid array atomically (``np.save`` into a temp file, then rename)."""
    path = cache_file(cache_dir, case_code)
    with atomic_path(path, force=True) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, grid_array, allow_pickle=False)
    return path


def load_cached_case(cache_dir: Path, case_code: str, grid: DisplayGrid) -> np.ndarray:
    array = np.load(cache_file(cache_dir, case_code), allow_pickle=False)
    if array.shape != grid.shape or array.dtype != np.int16:
        raise ValueError(f"cached case {case_code} has shape {array.shape} {array.dtype}, expected {grid.shape} int16")
    return array


def missing_cases(cache_dir: Path, case_codes: Sequence[str]) -> list[str]:
    return [c for c in case_codes if not os.path.exists(cache_file(cache_dir, c))]


def render_slice(
    grid_array: np.ndarray,
    grid: DisplayGrid,
    plane: str,
    index: int,
    window: str | tuple[float, float],
    width: int = DISPLAY_WIDTH,
) -> np.ndarray:
    """One displayed slice as uint8 (height, width) = ``grid.image_size(plane, width)``."""
    if isinstance(window, str):
        if window not in WINDOW_PRESETS:
            raise ValueError(f"unknown window preset {window!r}; choose one of {list(WINDOW_PRESETS)}")
        window = WINDOW_PRESETS[window]
    ww, wl = window
    img = plane_slice(grid_array, plane, index).astype(np.float32)
    size = grid.image_size(plane, width)
    if img.shape != size:
        shrinking = img.shape[0] > size[0] or img.shape[1] > size[1]
        img = resize(img, size, order=1, mode="edge", preserve_range=True, anti_aliasing=shrinking)
    return apply_window(img, ww, wl)


def png_bytes(image: np.ndarray) -> bytes:
    """Greyscale PNG with no text chunks (PIL writes none unless given ``pnginfo``), stored without
    compression (zlib level 0: "stored" deflate blocks). A compressed image's byte size follows its
    content, and noisier (often real) scans compress worse, so sizes alone told the cohorts apart
    (27-31 KB vs 32.5-37 KB in the demo). Uncompressed, every image of a given height and width has
    exactly the same size, whatever it shows; the price is ~height x width bytes per image."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="L").save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def render_png(
    grid_array: np.ndarray, grid: DisplayGrid, plane: str, index: int, window: str, width: int = DISPLAY_WIDTH
) -> bytes:
    return png_bytes(render_slice(grid_array, grid, plane, index, window, width))


def build_cache(
    entries: Sequence[tuple[str, Volume]],
    grid: DisplayGrid,
    cache_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Resample every ``(case_code, volume)`` onto the grid and cache it; ``progress(done, total)``."""
    out = []
    for i, (code, volume) in enumerate(entries):
        out.append(write_cached_case(cache_dir, code, to_grid(volume, grid)))
        if progress:
            progress(i + 1, len(entries))
    return out
