"""Sampling: bundle from a checkpoint alone, HU range, training geometry, seeds, manifest, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from ctdiff.cli import main
from ctdiff.config import config_from_dict
from ctdiff.data.io import read_volume, write_nifti
from ctdiff.data.phantom import make_phantom
from ctdiff.diffusion.sample import load_bundle, sample, write_samples
from ctdiff.errors import InputError, OverwriteError
from ctdiff.training.train import train

CONFIG = {
    "name": "tiny-sample",
    "data": {"pad_slices_to": 8, "hu_window": [-1000.0, 1000.0]},
    "model": {
        "space": "pixel",  # the library default is latent; these tests are about the voxel path
        "channels": [4, 8],
        "block_kinds": ["3d", "3d"],
        "attention": [False, True],
        "norm_groups": 4,
        "head_channels": 4,
        "res_blocks": 1,
    },
    "diffusion": {
        "kind": "ddpm",
        "timesteps": 100,
        "beta_schedule": "linear",
        "beta_end": 0.2,
        "prediction": "epsilon",
    },
    "train": {"epochs": 2, "batch_size": 2, "lr": 2e-3, "warmup_steps": 1, "val_timesteps": 2, "preview_every": 0},
}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny trained run on 16x12x6 phantoms with an anisotropic, shifted affine (padded to 8 slices)."""
    data = tmp_path_factory.mktemp("data")
    for i in range(4):
        vol, _ = make_phantom(shape=(16, 12, 6), seed=i, noise_hu=10.0, fov_mm=(320.0, 300.0, 150.0))
        write_nifti(vol, data / f"case_{i}.nii.gz")
    run = tmp_path_factory.mktemp("run") / "run"
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        train(config_from_dict(CONFIG), data, run, progress=False)
    return run, read_volume(data / "case_0.nii.gz")


def test_samples_are_hu_with_training_geometry(run_dir):
    run, real = run_dir
    bundle = load_bundle(run, device="cpu")
    assert bundle.checkpoint.endswith("best.pt") and bundle.weights == "ema"
    calls = []
    vols = sample(
        bundle, 3, sampler="dpmpp", steps=4, seed=10, batch_size=2, callback=lambda d, t: calls.append((d, t))
    )
    assert calls == [(i, 8) for i in range(1, 9)]  # 2 batches x 4 network evaluations
    assert len(vols) == 3
    for i, v in enumerate(vols):
        assert v.shape == (16, 12, 6)  # padded 8 slices cropped back to 6
        np.testing.assert_allclose(v.affine, real.affine, atol=1e-4)
        assert v.spacing == pytest.approx(real.spacing, abs=1e-4)
        assert v.array.min() >= -1000.0 and v.array.max() <= 1000.0  # the config's HU window
        assert v.array.std() > 1.0
        assert v.meta["seed"] == 10 + i and v.meta["sampler"] == "dpmpp" and v.meta["steps"] == 4


def test_seeded_and_batch_size_independent(run_dir):
    bundle = load_bundle(run_dir[0], device="cpu")
    a = sample(bundle, 2, sampler="ddim", steps=3, seed=5, batch_size=2)
    b = sample(bundle, 2, sampler="ddim", steps=3, seed=5, batch_size=1)
    c = sample(bundle, 1, sampler="ddim", steps=3, seed=6)
    # batch 1 and 2 run different CPU convolution kernels: equal to float rounding (0.01 HU)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.array, y.array, atol=1e-2)
    np.testing.assert_allclose(a[1].array, c[0].array, atol=1e-2)
    assert np.abs(a[0].array - a[1].array).max() > 1.0


@pytest.mark.parametrize("sampler", ["ddpm", "dpmpp"])
def test_channels_last_bundle_samples_the_same_volumes(run_dir, sampler):
    bundle = load_bundle(run_dir[0], device="cpu")  # train.channels_last defaults to true
    conv = next(m for m in bundle.model.modules() if isinstance(m, torch.nn.Conv3d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d) and not conv.weight.is_contiguous()
    fast = sample(bundle, 2, sampler=sampler, steps=4, seed=3, batch_size=2)
    bundle.model.to(memory_format=torch.contiguous_format)
    assert conv.weight.is_contiguous()
    plain = sample(bundle, 2, sampler=sampler, steps=4, seed=3, batch_size=2)
    for x, y in zip(fast, plain):  # the same noise draws in either layout: equal to float rounding
        np.testing.assert_allclose(x.array, y.array, atol=1e-2)
    assert np.abs(fast[0].array - fast[1].array).max() > 1.0


def test_write_samples_manifest_and_nifti(run_dir, tmp_path):
    bundle = load_bundle(run_dir[0], device="cpu", use_ema=False)
    vols = sample(bundle, 2, sampler="ddpm", steps=3, seed=0)
    manifest_path = write_samples(vols, tmp_path / "s", {"note": "test"})
    m = json.loads(manifest_path.read_text())
    assert m["checkpoint"] == bundle.checkpoint and m["checkpoint_step"] == bundle.step
    assert (m["sampler"], m["steps"], m["weights"], m["note"]) == ("ddpm", 3, "model", "test")
    assert m["config"]["name"] == "tiny-sample"
    assert [c["seed"] for c in m["cases"]] == [0, 1] and all(c["seconds"] > 0 for c in m["cases"])
    img = nib.load(tmp_path / "s" / "case_001.nii.gz")
    assert img.get_data_dtype() == np.int16
    np.testing.assert_allclose(img.affine, vols[1].affine, atol=1e-4)
    np.testing.assert_allclose(np.asarray(img.dataobj), np.round(vols[1].array), atol=0.5)
    with pytest.raises(OverwriteError):
        write_samples(vols, tmp_path / "s", {})


def test_run_dir_falls_back_to_last_and_bad_files(run_dir, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(run_dir[0], run)
    (run / "checkpoints" / "best.pt").unlink()
    assert load_bundle(run, device="cpu").checkpoint.endswith("last.pt")
    (run / "checkpoints" / "last.pt").unlink()
    with pytest.raises(InputError, match="best.pt"):
        load_bundle(run)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError) as info:
        load_bundle(junk)
    assert str(junk) in str(info.value)


def test_sample_cli(run_dir, tmp_path, capsys):
    out = tmp_path / "samples"
    args = [
        "sample",
        "--run",
        str(run_dir[0]),
        "--n",
        "2",
        "--sampler",
        "dpmpp",
        "--steps",
        "3",
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    assert "sample dpmpp" in capsys.readouterr().err  # the progress bar
    assert sorted(p.name for p in out.iterdir()) == ["case_000.nii.gz", "case_001.nii.gz", "manifest.json"]
    assert read_volume(out / "case_000.nii.gz").shape == (16, 12, 6)
    assert main(args) == 2 and "--force" in capsys.readouterr().err
    assert main(args + ["--force", "--seed", "3", "--no-progress"]) == 0
    assert json.loads((out / "manifest.json").read_text())["cases"][0]["seed"] == 3
    assert "sample dpmpp" not in capsys.readouterr().err


def test_no_ema_on_a_demo_export_is_one_line_not_the_ema_weights_under_another_name(tmp_path, capsys):
    """A demo model.pt stores its EMA weights under "model" too (a sampling-only export): --no-ema
    would sample the EMA weights and write weights "model" into the manifest."""
    model = Path(__file__).resolve().parents[2] / "ctdiff_app" / "demo" / "assets" / "model.pt"
    out = tmp_path / "s"
    assert main(["sample", "--checkpoint", str(model), "--n", "1", "--no-ema", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "carries only its EMA weights" in err and "model.pt" in err and len(err.splitlines()) == 1
    assert not out.exists()
    assert load_bundle(model, device="cpu").weights == "ema"  # without --no-ema it loads as before
