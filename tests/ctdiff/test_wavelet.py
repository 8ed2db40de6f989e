"""The 3D Haar transform: exact round trip, orthonormality, bands equal to PyWavelets', the space's scaling."""

from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch

from ctdiff.model.spaces import WaveletSpace
from ctdiff.model.wavelet import bands, dwt, factor, idwt


@pytest.mark.parametrize("levels", [(1, 1, 1), (0, 1, 1), (2, 2, 2), (1, 2, 0), (2, 1, 1)])
def test_round_trip_is_exact(levels):
    g = torch.Generator().manual_seed(0)
    x64 = torch.randn((2, 1, 8, 12, 16), generator=g, dtype=torch.float64)
    z = dwt(x64, levels)
    f = factor(levels)
    assert z.shape == (2, bands(levels), 8 // f[0], 12 // f[1], 16 // f[2])
    torch.testing.assert_close(idwt(z, levels), x64, rtol=0, atol=1e-12)
    x32 = x64.float()
    # float32: ~1e-6 relative to the values (12 rounding steps at most for 2 levels on 3 axes)
    assert (idwt(dwt(x32, levels), levels) - x32).abs().max() < 1e-6 * x32.abs().max()


@pytest.mark.parametrize("levels", [(1, 1, 1), (0, 2, 1)])
def test_transform_is_orthonormal(levels):
    # the matrix W of the transform on a 4x4x4 volume: W W^T = I (energy kept, inverse = transpose)
    n = 4 * 4 * 4
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 1, 4, 4, 4)
    w = dwt(basis, levels).reshape(n, n)
    torch.testing.assert_close(w @ w.T, torch.eye(n, dtype=torch.float64), rtol=0, atol=1e-12)
    x = torch.randn(1, 1, 4, 4, 4, dtype=torch.float64)
    assert float(dwt(x, levels).square().sum()) == pytest.approx(float(x.square().sum()), rel=1e-12)


def test_one_level_bands_equal_pywavelets():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4, 6, 8))  # (z, y, x)
    ours = dwt(torch.from_numpy(a)[None, None], (1, 1, 1))[0].numpy()
    ref = pywt.dwtn(a, "haar")  # keys: one letter per axis (z, y, x), 'a' = low-pass, 'd' = detail
    ours_sorted = sorted(ours, key=lambda b: float(b.sum()))
    ref_sorted = sorted(ref.values(), key=lambda b: float(b.sum()))
    for o, r in zip(ours_sorted, ref_sorted):
        np.testing.assert_allclose(np.abs(o), np.abs(r), atol=1e-12)  # pywt's detail sign convention may differ
    np.testing.assert_allclose(ours[0], ref["aaa"], atol=1e-12)  # the low-pass band comes first


def test_single_axis_band_values():
    x = torch.tensor([1.0, 3.0, 2.0, 6.0], dtype=torch.float64).reshape(1, 1, 1, 1, 4)
    z = dwt(x, (0, 0, 1))[0, :, 0, 0]
    r2 = np.sqrt(2.0)
    np.testing.assert_allclose(z.numpy(), [[4 / r2, 8 / r2], [-2 / r2, -4 / r2]], atol=1e-12)


def test_space_keeps_bands_in_the_unit_range_and_rejects_odd_sizes():
    space = WaveletSpace((1, 2, 2))
    x = torch.rand(1, 1, 4, 8, 8) * 2 - 1
    z = space.encode(x)
    assert z.shape == (1, 32, 2, 2, 2) and z.abs().max() <= 1.0 + 1e-6
    torch.testing.assert_close(space.decode(z), x, atol=1e-6, rtol=0)
    ones = space.encode(torch.ones(1, 1, 4, 8, 8))
    assert torch.allclose(ones[:, 0], torch.ones(1, 2, 2, 2)) and ones[:, 1:].abs().max() < 1e-6  # low-pass = mean
    with pytest.raises(ValueError, match="along z"):
        space.check_shape((3, 8, 8))
    with pytest.raises(ValueError, match="along y"):
        dwt(torch.zeros(1, 1, 4, 6, 8), (1, 2, 2))
