"""Fixtures for the eval tests: small phantom cohorts written as NIfTI folders.

Phantoms are rendered at 48x48x16 with 2 mm isotropic voxels (a 96 x 96 x 32 mm field of view
through the centre of the pelvis): frd-score resamples every volume to 2 mm before extracting
radiomics, so this keeps the extraction at about 3 s per volume on one core instead of minutes
(``benchmarks/bench_radiomics.py``: 18.4 s for six of them, 47.9 s with pyradiomics' own GLCM
coefficients and bin edges). The voxel size is the true one, so noise ROIs of 16 mm find
homogeneous soft tissue (a whole pelvis squeezed into 48 px would put 70 mm of anatomy in every
8-px ROI).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from ctdiff.data.io import write_nifti
from ctdiff.data.phantom import case_seed, make_phantom
from ctdiff.data.volume import Volume

SHAPE = (48, 48, 16)
SPACING = (2.0, 2.0, 2.0)
FOV_MM = tuple(n * s for n, s in zip(SHAPE, SPACING))
N_CASES = 6
# report settings for these small volumes: 16 mm noise ROIs (8 voxels), fewer bootstrap replicates
SMALL_SETTINGS = {"roi_mm": 16.0, "n_bootstrap": 50}


def phantom_arrays(seed: int, n: int = N_CASES, noise_hu: float = 20.0, shape=SHAPE) -> list[np.ndarray]:
    """``n`` phantoms of ``shape`` at ``SPACING`` (a smaller shape is a smaller field of view)."""
    fov = tuple(k * s for k, s in zip(shape, SPACING))
    return [make_phantom(shape, case_seed(seed, i), noise_hu, fov_mm=fov)[0].array for i in range(n)]


def write_folder(folder: Path, arrays, names=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        name = names[i] if names else f"case_{i:03d}.nii.gz"
        write_nifti(Volume.from_spacing(np.asarray(a, np.float32), SPACING), folder / name)
    return folder


def add_noise(arrays, sd: float, seed: int):
    rng = np.random.default_rng(seed)
    return [a + rng.normal(0.0, sd, a.shape).astype(np.float32) for a in arrays]


def lower_contrast(arrays, factor: float = 0.6, centre: float = 40.0):
    """Compress HU towards soft tissue (``centre``) inside the patient; air stays air."""
    return [np.where(a > -500, centre + factor * (a - centre), a).astype(np.float32) for a in arrays]


def blur(arrays, sigma: float = 1.0):
    return [ndimage.gaussian_filter(a, sigma=(sigma, sigma, 0)).astype(np.float32) for a in arrays]


@pytest.fixture(scope="session")
def phantom_cohorts(tmp_path_factory):
    """Folders: train, real (held-out), fresh draw, noisier, lower contrast, blurred, one scan repeated,
    and a cohort whose first half are copies of training scans."""
    root = tmp_path_factory.mktemp("phantom-cohorts")
    train = phantom_arrays(10)
    real = phantom_arrays(11)
    fresh = phantom_arrays(12)
    folders = {
        "train": write_folder(root / "train", train),
        "real": write_folder(root / "real", real),
        "fresh": write_folder(root / "fresh", fresh),
        "noisy": write_folder(root / "noisy", add_noise(fresh, 30.0, seed=5)),
        "low_contrast": write_folder(root / "low_contrast", lower_contrast(fresh)),
        "blurred": write_folder(root / "blurred", blur(fresh)),
        "repeated": write_folder(root / "repeated", [fresh[0]] * N_CASES),
    }
    half = N_CASES // 2
    copies = [train[i] for i in range(half)] + fresh[half:]
    folders["copies"] = write_folder(
        root / "copies",
        copies,
        [f"copy_of_train_{i:03d}.nii.gz" for i in range(half)]
        + [f"fresh_{i:03d}.nii.gz" for i in range(half, N_CASES)],
    )
    folders["cache"] = root / "cache"
    return folders


@pytest.fixture(scope="session")
def ph():
    """The helpers above for test modules (pytest's importlib mode cannot import conftest)."""
    import types

    return types.SimpleNamespace(
        SMALL_SETTINGS=SMALL_SETTINGS,
        N_CASES=N_CASES,
        phantom_arrays=phantom_arrays,
        write_folder=write_folder,
        add_noise=add_noise,
        lower_contrast=lower_contrast,
        blur=blur,
    )
