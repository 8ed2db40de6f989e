"""The faster GLCM coefficients and bin edges give pyradiomics' own features, to the bit."""

from __future__ import annotations

import numpy as np
import pytest

from ctdiff.data.phantom import case_seed, make_phantom
from eval.features import radiomics_speedups as speed
from eval.features.radiomics import RadiomicsFRD


@pytest.fixture
def stock_afterwards():
    """Leave the process as it found it (other tests in this worker extract too)."""
    was = speed.installed()
    yield
    speed.install() if was else speed.uninstall()


@pytest.fixture(scope="module")
def scans(tmp_path_factory, ph):
    """A phantom and the same phantom with extra noise (more grey levels), 32x32x12 at 2 mm."""
    phantom = make_phantom((32, 32, 12), case_seed(21, 0), 20.0, fov_mm=(64.0, 64.0, 24.0))[0].array
    arrays = [phantom, *ph.add_noise([phantom], 40.0, seed=3)]
    folder = ph.write_folder(tmp_path_factory.mktemp("speedups"), arrays)
    return sorted(folder.glob("*.nii.gz"))


def test_extractor_installs_them(stock_afterwards):
    speed.uninstall()
    assert not speed.installed()
    RadiomicsFRD().setup()
    assert speed.installed()


def test_features_are_bit_identical_to_stock_pyradiomics(scans, stock_afterwards):
    extractor = RadiomicsFRD(single_thread=True)
    extractor.setup()
    speed.uninstall()
    stock = [extractor.extract(p) for p in scans]
    speed.install()
    fast = [extractor.extract(p) for p in scans]
    for (names0, values0), (names1, values1) in zip(stock, fast):
        assert names0 == names1 and len(names0) > 400
        assert np.array_equal(values0, values1, equal_nan=True)
    # the noisier scan's features differ from the phantom's: the comparison is not of constants
    assert not np.array_equal(stock[0][1], stock[1][1])


def _glcm_coefficients(cls, image, mask):
    import SimpleITK as sitk

    glcm = cls(sitk.GetImageFromArray(image), sitk.GetImageFromArray(mask), binWidth=1)
    glcm._initCalculation()
    return glcm.coefficients


@pytest.mark.parametrize("levels", [np.arange(1, 40), np.array([1, 2, 5, 9, 30, 31, 64])])
def test_glcm_coefficients_equal_stock_with_contiguous_and_sparse_grey_levels(levels):
    # sparse levels put i + j above 2 Ng for some cells: pyradiomics drops those, and so must we
    rng = np.random.default_rng(0)
    image = rng.choice(levels, size=(6, 14, 15)).astype(np.float64)
    mask = np.ones(image.shape, np.uint8)
    stock = _glcm_coefficients(speed._STOCK_GLCM, image, mask)
    fast = _glcm_coefficients(speed.FastGLCM, image, mask)
    assert set(stock) == set(fast)
    for key in ("pxAddy", "pxSuby", "px", "py", "ux", "uy", "HXY", "i", "j", "kValuesSum", "kValuesDiff"):
        assert np.array_equal(np.broadcast_arrays(stock[key])[0], np.broadcast_arrays(fast[key])[0]), key
    assert stock["pxAddy"].sum() > 0 and stock["pxSuby"].sum() > 0


@pytest.mark.parametrize(
    "values", [np.array([-1003.7, 12.5, 3071.0]), np.array([250.0, 250.0]), np.array([-24.9, 0.1])]
)
@pytest.mark.parametrize("kwargs", [{}, {"binWidth": 25}, {"binWidth": 5}, {"binCount": 16}])
def test_bin_edges_equal_stock(values, kwargs):
    rng = np.random.default_rng(1)
    data = np.concatenate([values, rng.uniform(values.min(), values.max(), 1000)])
    rng.shuffle(data)
    assert np.array_equal(speed._bin_edges(data, **kwargs), speed._STOCK_BIN_EDGES(data, **kwargs))
