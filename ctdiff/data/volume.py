"""The one in-memory CT volume type used across ctdiff.

Convention (DESIGN.md): ``array`` is float32 Hounsfield units with axes ``(x, y, z)`` in
nibabel's canonical RAS+ voxel order: the first axis increases towards the patient's Right, the
second towards Anterior, the third towards Superior (what ``nibabel.as_closest_canonical`` gives).
``affine`` maps voxel indices to RAS+ millimetres; ``spacing`` is derived from it. ``meta`` holds
only non-identifying facts (modality, source kind, series description, original shape/spacing);
DICOM patient identifiers never enter it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass
class Volume:
    array: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array, dtype=np.float32)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.array.ndim != 3:
            raise ValueError(f"Volume array must be 3D (x, y, z), got shape {self.array.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"Volume affine must be 4x4, got {self.affine.shape}")

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along (x, y, z): the lengths of the affine's first three columns."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)

    @classmethod
    def from_spacing(cls, array: np.ndarray, spacing, origin=(0.0, 0.0, 0.0), meta=None) -> Volume:
        """A volume with axis-aligned RAS+ geometry built from a voxel spacing and an origin."""
        affine = np.diag([*map(float, spacing), 1.0])
        affine[:3, 3] = origin
        return cls(array, affine, dict(meta or {}))

    def with_array(self, array: np.ndarray, affine: np.ndarray | None = None, **meta: Any) -> Volume:
        """A copy with a new array (and optionally affine); ``meta`` entries are added/updated."""
        return Volume(array, self.affine if affine is None else affine, {**self.meta, **meta})
