"""benchmarks/estimate_filter.py on the shipped demo model, with 2 Euler steps: the control variant
reproduces ctdiff's own sampling with the noise model it fitted; the filters change the estimate."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from ctdiff.data.io import read_volume
from ctdiff.diffusion.sample import load_bundle, sample

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "ctdiff_app" / "demo" / "assets" / "model.pt"


@pytest.fixture(scope="module")
def ef():
    return runpy.run_path(str(REPO / "benchmarks" / "estimate_filter.py"), run_name="estimate_filter")


def test_filters_floor_at_air_and_keep_edges(ef):
    hu = np.full((9, 9, 2), 40.0)
    hu[:, 5:, :] = -100.0  # a straight edge between soft tissue and fat
    hu[0, 0, 0] = -1150.0  # a decoder undershoot below air
    none = ef["apply_filter"](hu, "none")
    assert none[0, 0, 0] == -1000.0 and none[4, 4, 1] == 40.0
    spike = hu.copy()
    spike[2, 2, 0] = 400.0
    med = ef["apply_filter"](spike, "median3")
    assert med[2, 2, 0] == 40.0  # an isolated bright voxel is removed
    assert np.array_equal(med[3:, :, :], np.maximum(hu, -1000.0)[3:, :, :])  # the edge stays sharp
    gauss = ef["apply_filter"](hu, "gauss1")
    assert -100.0 < gauss[4, 4, 0] < 40.0  # a Gaussian blurs it
    with pytest.raises(ValueError, match="unknown variant"):
        ef["apply_filter"](hu, "bilateral")


def test_control_reproduces_sampling_with_its_noise_model(ef, tmp_path):
    from ctdiff.data.phantom import write_cohort

    train = tmp_path / "train"
    write_cohort(train, n=2, shape=(128, 128, 32), seed=0, noise_hu=20.0, progress=False)
    out, js = tmp_path / "out", tmp_path / "r.json"
    argv = ["--model", str(MODEL), "--train", str(train), "--variants", "none,median3", "--out", str(out)]
    assert ef["main"]([*argv, "--n", "2", "--fit-n", "2", "--steps", "2", "--threads", "1", "--json", str(js)]) == 0
    result = json.loads(js.read_text())
    none, med = result["variants"]["none"], result["variants"]["median3"]
    assert none["filter_removed_sd_hu"] == 0.0 and med["filter_removed_sd_hu"] > 1.0
    assert med["noise_sd_hu"] > none["noise_sd_hu"]  # the noise model makes up for the texture the filter took
    # the control: the product's sampling, with the noise model the script fitted, to int16 rounding
    torch.set_num_threads(1)
    bundle = load_bundle(MODEL, device="cpu")
    bundle.space.record["noise_model"] = none["noise_model"]
    vols = sample(bundle, 2, sampler="euler", steps=2, seed=1000)
    for i, v in enumerate(vols):
        got = read_volume(out / "none" / f"case_{i:03d}.nii.gz").array
        assert np.abs(got - np.rint(v.array)).max() <= 1.0
        assert np.array_equal(read_volume(out / "median3" / f"case_{i:03d}.nii.gz").affine, v.affine)
