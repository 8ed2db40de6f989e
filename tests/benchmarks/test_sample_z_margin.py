"""benchmarks/sample_z_margin.py on the shipped demo model, with 2 Euler steps."""

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
def zm():
    return runpy.run_path(str(REPO / "benchmarks" / "sample_z_margin.py"), run_name="sample_z_margin")


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(MODEL, device="cpu")


def test_margin_0_draws_what_ctdiff_sample_draws(zm, bundle):
    ours = zm["sample_with_margin"](bundle, [7], 0, steps=2)
    # the script never pads the latent for decoding (the demo model's config does since 2026-12-04)
    theirs = sample(bundle, 1, sampler="euler", steps=2, seed=7, z_margin=0, decode_z_pad=0)
    np.testing.assert_array_equal(ours[0].array, theirs[0].array)
    np.testing.assert_array_equal(ours[0].affine, theirs[0].affine)
    # the same record of how it was drawn (timing aside), plus the margin
    drop = ("seconds", "z_margin_latent_slices")
    assert {k: v for k, v in ours[0].meta.items() if k not in drop} == {
        k: v for k, v in theirs[0].meta.items() if k not in drop
    }
    assert ours[0].meta["z_margin_latent_slices"] == 0 and ours[0].meta["checkpoint_step"] == bundle.step


def test_a_margin_keeps_the_checkpoints_grid_and_changes_the_volume(zm, bundle, tmp_path):
    out = tmp_path / "m2"
    assert zm["main"](["--model", str(MODEL), "--margin", "2", "--n", "1", "--seed", "7", "--steps", "2",
                       "--out", str(out), "--threads", "1"]) == 0  # fmt: skip
    v = read_volume(out / "case_000.nii.gz")
    assert v.array.shape == bundle.shape and np.allclose(v.affine, bundle.affine)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["z_margin_latent_slices"] == 2 and manifest["cases"][0]["seed"] == 7
    plain = zm["sample_with_margin"](bundle, [7], 0, steps=2)[0].array
    # the same seed, but a longer latent: another volume, still a body in air
    assert np.abs(v.array - plain).mean() > 10
    assert v.array.min() < -900 and v.array.max() > 100
    with pytest.raises(SystemExit, match="not empty; pass --force"):
        zm["main"](["--model", str(MODEL), "--margin", "2", "--n", "1", "--out", str(out), "--steps", "2"])


def test_a_margin_the_unet_cannot_downsample_is_one_line(zm, bundle):
    # 8 + 2 latent slices: the U-Net halves z twice, and 10 does not divide by 4
    with pytest.raises(SystemExit, match="10 slices"):
        zm["sample_with_margin"](bundle, [7], 1, steps=1)
    with pytest.raises(SystemExit, match="margin must be >= 0"):
        zm["sample_with_margin"](bundle, [7], -1, steps=1)
    with pytest.raises(SystemExit, match="sampler 'ddpm' does not run diffusion.kind=rflow"):
        zm["sample_with_margin"](bundle, [7], 2, steps=1, sampler="ddpm")


def test_non_finite_volumes_are_never_written(zm, bundle, monkeypatch):
    def nan_decode(z, noise_seeds=None):
        return torch.full((z.shape[0], 1, 48, 128, 128), float("nan"))

    monkeypatch.setattr(bundle.space, "decode", nan_decode)
    with pytest.raises(SystemExit, match="seed 7 gave non-finite values"):
        zm["sample_with_margin"](bundle, [7], 2, steps=1)


def test_ctdiff_sample_z_margin_draws_what_the_script_draws(zm, bundle):
    """``ctdiff sample``'s margin is in the volume's slices: 16 at the demo's 4x = the script's 4 latent
    slices; the demo model's config sampled with it until 2026-12-04 and now draws at the trained length
    with the latent padded for decoding only; a margin its U-Net cannot halve is one ConfigError, raised
    before any sampling."""
    from ctdiff.errors import ConfigError

    ours = sample(bundle, 1, sampler="euler", steps=2, seed=7, z_margin=16, decode_z_pad=0)
    theirs = zm["sample_with_margin"](bundle, [7], 4, steps=2)
    np.testing.assert_array_equal(ours[0].array, theirs[0].array)
    assert ours[0].meta["z_margin"] == 16
    assert (bundle.config.sample.z_margin, bundle.config.sample.decode_z_pad) == (0, 2)
    default = sample(bundle, 1, sampler="euler", steps=2, seed=7)
    padded = sample(bundle, 1, sampler="euler", steps=2, seed=7, z_margin=0, decode_z_pad=2)
    np.testing.assert_array_equal(default[0].array, padded[0].array)
    assert not np.array_equal(default[0].array, ours[0].array)
    # 4 is whole latent slices (4x), but 8 + 2 latent slices is not a length the U-Net can halve twice
    with pytest.raises(ConfigError, match=r"z_margin 4 is not a multiple of 8: .* divisible by 4 \(e.g. 8\)") as e:
        sample(bundle, 1, sampler="euler", steps=1, seed=0, z_margin=4)
    assert "\n" not in str(e.value)
