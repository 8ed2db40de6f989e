"""benchmarks/noise_classes.py: both noise models are fitted on the training reconstructions, each
cohort is the held-out reconstruction (floored at air) plus that model's noise of seed 1000 + i, and
files already written are kept."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from ctdiff.data.io import read_volume, write_nifti
from ctdiff.data.phantom import correlated_noise
from ctdiff.data.volume import Volume
from ctdiff.model import noise_resynthesis as nr
from ctdiff.model.autoencoder import AutoencoderTrainer, autoencoder_config

REPO = Path(__file__).resolve().parents[2]
TINY_AE = {"channels": [8, 8], "latent_channels": 2, "norm_groups": 4, "patch": [8, 16, 16], "disc_layers": 1}


def _scans(folder: Path, n: int, seed: int) -> None:
    """64x64x8 scans (x, y, z): air (x < 28) beside soft tissue, FBP noise of 20 HU."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for i in range(n):
        hu = np.full((64, 64, 8), 40.0)
        hu[:28] = -1000.0
        hu += correlated_noise(hu.shape, (1.0, 1.0, 1.0), 20.0, rng)
        write_nifti(Volume.from_spacing(hu.astype(np.float32), (1.0, 1.0, 2.0)), folder / f"case_{i}.nii.gz")


def test_cohorts_are_the_reconstructions_plus_each_models_noise(tmp_path):
    bench = runpy.run_path(str(REPO / "benchmarks" / "noise_classes.py"), run_name="noise_classes")
    _scans(tmp_path / "train", 2, 0)
    _scans(tmp_path / "held", 2, 1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        trainer = AutoencoderTrainer(autoencoder_config({**TINY_AE, "hu_window": [-1200.0, 1500.0]}))
    torch.save(trainer.state(), tmp_path / "autoencoder.pt")
    work = tmp_path / "work"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folders, models = bench["cohorts"](tmp_path / "autoencoder.pt", tmp_path / "train", tmp_path / "held", work)
    finally:
        torch.set_num_threads(threads)
    assert set(folders) == {"stationary", "per-class"}
    assert models["stationary"]["format"] == nr.FORMAT and models["per-class"]["format"] == nr.CLASS_FORMAT
    assert models["per-class"]["method"] == "paired" and models["per-class"]["volumes"] == 2
    for label, folder in folders.items():
        for i, name in enumerate(["case_0.nii.gz", "case_1.nii.gz"]):
            recon = read_volume(work / "recon-held" / name)
            decoded = np.maximum(recon.array.astype(np.float64).transpose(2, 1, 0), -1000.0)
            want = decoded + nr.noise_for(models[label], decoded, nr.noise_generator(1000 + i)).numpy()
            got = read_volume(folder / name)
            np.testing.assert_allclose(got.affine, recon.affine)
            np.testing.assert_allclose(got.array.transpose(2, 1, 0), want, atol=0.51)  # int16 HU
    # resumable: a cohort file already there is kept as it is
    marker = folders["per-class"] / "case_0.nii.gz"
    write_nifti(Volume(np.zeros((64, 64, 8), np.float32), read_volume(marker).affine), marker)
    bench["cohorts"](tmp_path / "autoencoder.pt", tmp_path / "train", tmp_path / "held", work)
    assert float(np.abs(read_volume(marker).array).max()) == pytest.approx(0.0)
