"""ctdiff sample's z margin: extra slices sampled at each end and cropped after decoding (on a tiny
latent rflow run); what it draws, where its default comes from, and what it refuses."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest

from ctdiff.cli import main
from ctdiff.config import config_from_dict
from ctdiff.errors import ConfigError

# fixtures: a tiny latent rflow run (32x32x8 volumes, an autoencoder that downsamples 2x); one thread
from tests.ctdiff.test_noise_resynthesis import _one_thread, latent_run  # noqa: F401

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def bundle(latent_run):  # noqa: F811
    from ctdiff.diffusion.sample import load_bundle

    run, _, _ = latent_run
    return load_bundle(run / "checkpoints" / "last.pt", device="cpu")


def test_a_margin_samples_a_longer_volume_and_keeps_its_middle(bundle):
    from ctdiff.diffusion.sample import sample

    assert bundle.config.sample.z_margin == 0 and bundle.space.factor[0] == 2
    plain = sample(bundle, 2, sampler="euler", steps=2, seed=3)
    assert [v.meta["z_margin"] for v in plain] == [0, 0]
    same = sample(bundle, 2, sampler="euler", steps=2, seed=3, z_margin=0)
    assert all(np.array_equal(a.array, b.array) for a, b in zip(plain, same))
    wide = sample(bundle, 2, sampler="euler", steps=2, seed=3, z_margin=2)
    assert [v.array.shape for v in wide] == [v.array.shape for v in plain]
    assert wide[0].meta["z_margin"] == 2 and np.array_equal(wide[0].affine, plain[0].affine)
    assert not np.array_equal(wide[0].array, plain[0].array)
    # the same volume benchmarks/sample_z_margin.py draws with one extra latent slice at each end
    script = runpy.run_path(str(REPO / "benchmarks" / "sample_z_margin.py"), run_name="sample_z_margin")
    theirs = script["sample_with_margin"](bundle, [3, 4], 1, steps=2)
    assert all(np.array_equal(a.array, b.array) for a, b in zip(wide, theirs))
    # the config's sample.z_margin is the default; an explicit value overrides it
    bundle.config.sample.z_margin = 2
    assert np.array_equal(sample(bundle, 1, sampler="euler", steps=2, seed=3)[0].array, wide[0].array)
    assert np.array_equal(sample(bundle, 1, sampler="euler", steps=2, seed=3, z_margin=0)[0].array, plain[0].array)


def test_bad_margins_are_refused(bundle):
    from ctdiff.diffusion.sample import sample

    for margin, text in (
        (3, "z_margin 3 is not a multiple of 2: the latent space shrinks z 2x and this model's U-Net needs"),
        (-2, "between 0 and the volume's 8 slices"),
        (10, "between 0 and the volume's 8 slices"),
        (2.0, "whole number of slices"),
    ):
        with pytest.raises(ConfigError, match=text):
            sample(bundle, 1, sampler="euler", steps=1, seed=0, z_margin=margin)
    with pytest.raises(ConfigError, match="sample.z_margin must be >= 0"):
        config_from_dict({"sample": {"z_margin": -1}})


def test_cli_z_margin_is_recorded_and_a_bad_one_is_one_line(latent_run, tmp_path, capsys):  # noqa: F811
    run, _, _ = latent_run
    base = ["sample", "--run", str(run), "--n", "1", "--steps", "2", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "s"), "--z-margin", "4"]) == 0
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["z_margin"] == 4 and manifest["cases"][0]["shape"] == [32, 32, 8]
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "bad"), "--z-margin", "3"]) == 2
    err = capsys.readouterr().err
    assert "z_margin 3 is not a multiple of 2" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
