"""An orthonormal 3D Haar wavelet transform whose sub-bands are stacked as channels (WDM-style).

Why hand-written: a Haar step is two strided slices and a sum/difference, a few lines of torch that
run on any device and keep autograd; ``ptwt`` is not a dependency and PyWavelets is NumPy-only
(the tests check these bands against ``pywt.dwtn``).

``levels = (lz, ly, lx)`` sets how often each axis of a ``(N, C, D, H, W)`` tensor is halved. Every
level splits *every* band again (a full wavelet-packet split), so all bands keep one size and
stack as ``C * 2**(lz + ly + lx)`` channels, with the low-pass band first. A step maps a pair
``(a, b)`` to ``((a + b) / sqrt 2, (a - b) / sqrt 2)``: orthonormal, so the inverse is the transpose
and the round trip is exact up to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

AXES = (2, 3, 4)  # D, H, W = z, y, x
_R2 = 1.0 / math.sqrt(2.0)


def _order(levels: Sequence[int]) -> list[int]:
    """The axes split, in order: level by level, z then y then x, skipping axes out of levels."""
    return [AXES[i] for lev in range(max(levels, default=0)) for i in range(3) if levels[i] > lev]


def factor(levels: Sequence[int]) -> tuple[int, int, int]:
    """How much each spatial axis (D, H, W) shrinks."""
    return tuple(2 ** int(k) for k in levels)


def bands(levels: Sequence[int]) -> int:
    """Channels per input channel after the transform."""
    return 2 ** int(sum(levels))


def _split(x: torch.Tensor, axis: int) -> torch.Tensor:
    a = x.narrow(axis, 0, x.shape[axis] // 2 * 2)
    shape = list(a.shape)
    shape[axis : axis + 1] = [shape[axis] // 2, 2]
    pairs = a.reshape(shape)
    even, odd = pairs.select(axis + 1, 0), pairs.select(axis + 1, 1)
    # band order: channels (low-pass block, high-pass block) along C
    return torch.cat([(even + odd) * _R2, (even - odd) * _R2], dim=1)


def _merge(x: torch.Tensor, axis: int) -> torch.Tensor:
    c = x.shape[1] // 2
    low, high = x[:, :c], x[:, c:]
    even, odd = (low + high) * _R2, (low - high) * _R2
    out = torch.stack([even, odd], dim=axis + 1)
    shape = list(low.shape)
    shape[axis] *= 2
    return out.reshape(shape)


def dwt(x: torch.Tensor, levels: Sequence[int]) -> torch.Tensor:
    """``(N, C, D, H, W)`` -> ``(N, C * 2**sum(levels), D / 2**lz, H / 2**ly, W / 2**lx)``."""
    if x.ndim != 5:
        raise ValueError(f"expected (N, C, D, H, W), got shape {tuple(x.shape)}")
    for size, f, name in zip(x.shape[2:], factor(levels), "zyx"):
        if size % f:
            raise ValueError(f"size {size} along {name} is not divisible by {f} (wavelet levels {list(levels)})")
    x = x.contiguous()
    for axis in _order(levels):
        x = _split(x, axis)
    return x


def idwt(x: torch.Tensor, levels: Sequence[int]) -> torch.Tensor:
    """The inverse of :func:`dwt`."""
    if x.ndim != 5 or x.shape[1] % bands(levels):
        raise ValueError(f"expected (N, C * {bands(levels)}, d, h, w), got shape {tuple(x.shape)}")
    x = x.contiguous()
    for axis in reversed(_order(levels)):
        x = _merge(x, axis)
    return x
