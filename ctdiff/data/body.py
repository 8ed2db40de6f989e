"""Body (patient) mask of a CT volume: threshold, largest connected component, hole filling.

Used to crop air around the patient in ``prepare`` and to restrict intensity statistics to the
patient in ``eval``. The in-plane opening detaches a thin table from the body before the largest
component is kept, so the table is removed where it is easy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

BODY_THRESHOLD_HU = -500.0


def body_mask(array: np.ndarray, threshold: float = BODY_THRESHOLD_HU, open_radius: int = 1) -> np.ndarray:
    """Boolean (x, y, z) mask of the patient's body.

    Voxels above ``threshold`` HU are opened in-plane (radius ``open_radius`` voxels), the largest
    3D connected component is kept, and holes (gas in bowel, lungs) are filled slice by slice.
    An all-air volume gives an all-False mask.
    """
    if array.ndim != 3:
        raise ValueError(f"expected a 3D (x, y, z) array, got shape {array.shape}")
    raw = array > threshold
    structure = np.ones((2 * open_radius + 1, 2 * open_radius + 1, 1), dtype=bool)
    mask = ndimage.binary_opening(raw, structure=structure) if open_radius > 0 else raw
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros(array.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    mask = labels == int(np.argmax(sizes))
    if open_radius > 0:
        # the opening also nibbles thin parts of the outline; grow back into above-threshold voxels
        mask = ndimage.binary_dilation(mask, structure=structure) & raw
    for k in range(mask.shape[2]):
        mask[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
    return mask


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """Slices of the smallest box holding every True voxel, grown by ``margin`` voxels in-plane
    (clipped to the volume): MONAI's ``generate_spatial_bounding_box`` (``allow_smaller=True``, the
    box stops at the volume's edge). An empty mask gives the whole volume (MONAI: an empty box)."""
    # imported here: this module stays free of torch/MONAI (the metrics import it); ~3 s on 2 cores
    from monai.transforms.utils import generate_spatial_bounding_box

    if not mask.any():
        return tuple(slice(0, s) for s in mask.shape)
    margins = [margin if axis < 2 else 0 for axis in range(mask.ndim)]
    start, end = generate_spatial_bounding_box(mask[None], margin=margins, allow_smaller=True)
    return tuple(slice(int(a), int(b)) for a, b in zip(start, end))
