"""ctdiff.data.hu owns the HU facts; the modules that use them take them from there."""

from __future__ import annotations

import numpy as np

from ctdiff.data import hu
from ctdiff.data.volume import Volume


def test_values_and_window_range():
    assert hu.AIR_HU == -1000.0 and hu.WATER_HU == 0.0
    assert hu.TISSUE_RANGES == {"fat": (-190.0, -30.0), "soft_tissue": (0.0, 100.0)}
    assert hu.window_range("soft tissue") == (-160.0, 240.0)
    assert hu.window_range("lung") == (-1350.0, 150.0)


def test_every_user_takes_the_one_definition():
    from ctdiff.data import display, prepare
    from ctdiff.data.phantom import anatomy as phantom  # the phantom module that paints air
    from eval.features import inception
    from eval.metrics import intensity, noise, texture
    from eval.report import cases

    assert phantom.AIR_HU is hu.AIR_HU and prepare.AIR_HU is hu.AIR_HU and cases.AIR_HU is hu.AIR_HU
    assert display.WINDOW_PRESETS is hu.WINDOW_PRESETS
    assert intensity.TISSUE_RANGES is hu.TISSUE_RANGES and noise.SOFT_TISSUE_HU == (0.0, 100.0)
    assert texture.GLCM_WINDOW_HU == (-160.0, 240.0) and inception.SLICE_WINDOW == (400.0, 40.0)


def test_report_grid_pads_with_air_and_anti_aliases_like_prepare():
    """eval's common grid uses ctdiff.data.resample: padding is -1000 HU air, shrinking is anti-aliased."""
    from ctdiff.data.resample import resample_to_spacing
    from eval.report.cases import resample_to

    rng = np.random.default_rng(0)
    vol = Volume.from_spacing(rng.normal(40.0, 20.0, (16, 16, 8)).astype(np.float32), (1.0, 1.0, 2.0))
    out = resample_to(vol, (12, 12, 4), (2.0, 2.0, 2.0))  # 8x8x8 after resampling, padded to 12x12
    assert out.array.shape == (12, 12, 4)
    assert out.array[0, 0, 0] == hu.AIR_HU and out.array[:2].max() == hu.AIR_HU
    inner = out.array[2:10, 2:10, :]
    expected = resample_to_spacing(vol, (2.0, 2.0, 2.0)).array[:, :, 2:6]  # prepare's function, anti-aliased
    np.testing.assert_allclose(inner, expected)
