"""Random body crops at native resolution from a block of slices of one scan.

Used to train and judge a generator on real CT texture when only one scan is at hand (benchmark c of
the generator, ``benchmarks/bench_realct_texture.py``): the scan's slices are split into a training
block and a held-out block with a gap between them (:func:`slice_blocks`), and each block gives
crops that lie wholly inside it (:func:`body_crops`). A crop is accepted only where the body mask
(:func:`ctdiff.data.body.body_mask`) covers at least ``min_body_fraction`` of it. Each crop is a
:class:`Volume` whose affine puts voxel (0, 0, 0) where the crop's first voxel was in the scan, so
the crops keep the scan's world coordinates and spacing.
"""

from __future__ import annotations

import numpy as np

from ctdiff.data.body import body_mask
from ctdiff.data.volume import Volume


def slice_blocks(n_slices: int, train_fraction: float, gap: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((z0, z1), (z2, z3))``: the training block (the first slices) and the held-out block (the
    last ones), half-open slice ranges with ``gap`` unused slices between them."""
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be between 0 and 1, got {train_fraction}")
    if gap < 0:
        raise ValueError(f"gap must be >= 0 slices, got {gap}")
    n_train = int(round((n_slices - gap) * train_fraction))
    train, held_out = (0, n_train), (n_train + gap, n_slices)
    if train[1] - train[0] < 1 or held_out[1] - held_out[0] < 1:
        raise ValueError(f"{n_slices} slices cannot hold two blocks with a gap of {gap}")
    return train, held_out


def _box_fraction(mask: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Fraction of True voxels in every box of ``shape``: out[x, y, z] = mask[x:x+sx, y:y+sy, z:z+sz].mean().

    A summed-volume table (cumulative sums with a zero border), so every box costs 8 look-ups; scipy's
    uniform_filter centres its window and would need an offset per axis."""
    c = np.zeros(tuple(s + 1 for s in mask.shape), dtype=np.int64)
    c[1:, 1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1).cumsum(2)
    sx, sy, sz = shape
    nx, ny, nz = (mask.shape[i] - shape[i] + 1 for i in range(3))
    total = (
        c[sx : sx + nx, sy : sy + ny, sz : sz + nz]
        - c[:nx, sy : sy + ny, sz : sz + nz]
        - c[sx : sx + nx, :ny, sz : sz + nz]
        - c[sx : sx + nx, sy : sy + ny, :nz]
        + c[:nx, :ny, sz : sz + nz]
        + c[:nx, sy : sy + ny, :nz]
        + c[sx : sx + nx, :ny, :nz]
        - c[:nx, :ny, :nz]
    )
    return total / float(sx * sy * sz)


def crop_starts(
    mask: np.ndarray,
    shape: tuple[int, int, int],
    n: int,
    z_range: tuple[int, int],
    min_body_fraction: float = 0.9,
    seed: int = 0,
) -> np.ndarray:
    """``(n, 3)`` voxel corners of distinct crops of ``shape`` drawn uniformly among the positions that
    lie inside slices ``z_range`` (half open) and whose ``mask`` fraction is at least ``min_body_fraction``.

    Raises ValueError when the block is thinner than a crop or has fewer than ``n`` such positions."""
    shape = tuple(int(s) for s in shape)
    z0, z1 = int(z_range[0]), int(z_range[1])
    if not 0 <= z0 < z1 <= mask.shape[2]:
        raise ValueError(f"slice range {z_range} is outside the scan's {mask.shape[2]} slices")
    if any(s > m for s, m in zip(shape, (mask.shape[0], mask.shape[1], z1 - z0), strict=True)):
        raise ValueError(f"crop {shape} does not fit in the block {mask.shape[:2] + (z1 - z0,)} (x, y, slices)")
    frac = _box_fraction(mask[:, :, z0:z1], shape)
    valid = np.argwhere(frac >= min_body_fraction)
    if len(valid) < n:
        raise ValueError(
            f"only {len(valid)} crop positions in slices {z0}-{z1 - 1} are at least "
            f"{min_body_fraction:.0%} inside the body; asked for {n}"
        )
    pick = np.random.default_rng(seed).choice(len(valid), size=n, replace=False)
    starts = valid[np.sort(pick)]
    starts[:, 2] += z0
    return starts


def crop(volume: Volume, start, shape) -> Volume:
    """The box of ``shape`` at voxel ``start`` of ``volume``, with the affine that keeps its world position."""
    x, y, z = (int(s) for s in start)
    sx, sy, sz = (int(s) for s in shape)
    affine = volume.affine.copy()
    affine[:3, 3] = (volume.affine @ np.array([x, y, z, 1.0]))[:3]
    return Volume(volume.array[x : x + sx, y : y + sy, z : z + sz].copy(), affine, dict(volume.meta))


def body_crops(
    volume: Volume,
    shape: tuple[int, int, int],
    n: int,
    z_range: tuple[int, int],
    min_body_fraction: float = 0.9,
    seed: int = 0,
    mask: np.ndarray | None = None,
) -> list[Volume]:
    """``n`` random crops of ``shape`` from slices ``z_range`` of ``volume``, each at least
    ``min_body_fraction`` inside the body (``mask``, else :func:`body_mask` of the volume)."""
    mask = body_mask(volume.array) if mask is None else mask
    if mask.shape != volume.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the volume's {volume.shape}")
    starts = crop_starts(mask, shape, n, z_range, min_body_fraction, seed)
    return [crop(volume, s, shape) for s in starts]
