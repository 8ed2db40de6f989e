"""The one place where HU volumes become network tensors and back.

A :class:`~ctdiff.data.volume.Volume` array has axes ``(x, y, z)``; the network sees ``(C, D, H, W)`` =
``(1, z, y, x)`` (batched: ``(N, 1, z, y, x)``). Intensities are a *fixed* HU window mapped linearly
to [-1, 1] (never per-volume min-max), so every generated voxel maps back to calibrated HU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import ScaleIntensityRange
from monai.utils import convert_to_tensor


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """(x, y, z) array -> (1, z, y, x) float32 tensor (a channel axis is added)."""
    if array.ndim != 3:
        raise ValueError(f"expected a 3D (x, y, z) array, got shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 1, 0), dtype=np.float32))[None]


def tensor_to_array(tensor: torch.Tensor) -> np.ndarray:
    """(1, z, y, x) or (z, y, x) tensor -> (x, y, z) float32 array."""
    t = tensor.detach().to("cpu", torch.float32)
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected one channel, got shape {tuple(t.shape)}")
        t = t[0]
    if t.ndim != 3:
        raise ValueError(f"expected (1, D, H, W) or (D, H, W), got shape {tuple(t.shape)}")
    return np.ascontiguousarray(t.numpy().transpose(2, 1, 0))


def scale_range(x, a: tuple[float, float], b: tuple[float, float]):
    """Map ``a = (a_lo, a_hi)`` linearly to ``b`` and clip to ``b``: MONAI ``ScaleIntensityRange``,
    returned as ``x``'s type (numpy array or plain tensor, not a MetaTensor).

    ``dtype=None`` keeps float64 input float64 (MONAI's default casts to float32). Integer input is
    made float32 first: with ``dtype=None`` MONAI would cast the result back to the integer type and
    truncate [-1, 1] to {-1, 0, 1} (``test_scale_intensity_range_truncates_integers``).
    """
    is_tensor = isinstance(x, torch.Tensor)
    t = x if is_tensor else torch.from_numpy(np.asarray(x))
    if not (t.is_floating_point() or t.is_complex()):
        t = t.to(torch.float32)
    out = ScaleIntensityRange(a[0], a[1], b[0], b[1], clip=True, dtype=None)(t)
    out = convert_to_tensor(out, track_meta=False)
    return out if is_tensor else out.numpy()


def _window(window: Sequence[float]) -> tuple[float, float]:
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ValueError(f"HU window must have lo < hi, got {tuple(window)}")
    return lo, hi


def hu_to_model(x, window: Sequence[float]):
    """Map HU in ``window = (lo, hi)`` linearly to [-1, 1], clipping outside values.

    MONAI computes ``(x - lo) / (hi - lo) * 2 + (-1)``, the same float operations as the formula this
    replaced, so results are bitwise equal (``test_hu_scaling_matches_the_formula_bitwise``).
    """
    return scale_range(x, _window(window), (-1.0, 1.0))


def model_to_hu(x, window: Sequence[float]):
    """Inverse of :func:`hu_to_model`; the result is clipped to the window (= input clipped to [-1, 1])."""
    return scale_range(x, (-1.0, 1.0), _window(window))
