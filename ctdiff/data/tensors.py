"""The one place where HU volumes become network tensors and back.

A :class:`~ctdiff.data.volume.Volume` array has axes ``(x, y, z)``; the network sees ``(C, D, H, W)`` =
``(1, z, y, x)`` (batched: ``(N, 1, z, y, x)``). Intensities are a *fixed* HU window mapped linearly
to [-1, 1] (never per-volume min-max), so every generated voxel maps back to calibrated HU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


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


def hu_to_model(x, window: Sequence[float]):
    """Map HU in ``window = (lo, hi)`` linearly to [-1, 1], clipping outside values."""
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ValueError(f"HU window must have lo < hi, got {tuple(window)}")
    scaled = (x - lo) / (hi - lo) * 2.0 - 1.0
    return scaled.clamp(-1.0, 1.0) if isinstance(scaled, torch.Tensor) else np.clip(scaled, -1.0, 1.0)


def model_to_hu(x, window: Sequence[float]):
    """Inverse of :func:`hu_to_model` (values are clipped to [-1, 1] first)."""
    lo, hi = float(window[0]), float(window[1])
    x = x.clamp(-1.0, 1.0) if isinstance(x, torch.Tensor) else np.clip(x, -1.0, 1.0)
    return (x + 1.0) / 2.0 * (hi - lo) + lo
