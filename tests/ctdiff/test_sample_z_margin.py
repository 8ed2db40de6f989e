"""ctdiff sample's z margin (extra slices sampled at each end and cropped after decoding) and kept slices
(the middle N of each volume), on a tiny latent rflow run: what they draw, where their defaults come
from, and what they refuse."""

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


def test_keep_slices_returns_the_middle_slices_where_they_lie(bundle):
    from ctdiff.diffusion.sample import sample

    assert bundle.shape[2] == 8 and bundle.config.sample.keep_slices is None
    full = sample(bundle, 2, sampler="euler", steps=2, seed=5)
    kept = sample(bundle, 2, sampler="euler", steps=2, seed=5, keep_slices=4)
    for f, k in zip(full, kept):
        assert k.array.shape == (32, 32, 4)
        assert np.array_equal(k.array, f.array[:, :, 2:6])  # the middle 4 of 8: 2 cut before, 2 after
        # the kept slices keep their place in the world: voxel (0, 0, 0) is the full volume's (0, 0, 2)
        assert np.allclose(k.affine[:3, 3], (f.affine @ [0, 0, 2, 1])[:3])
        assert np.array_equal(k.affine[:3, :3], f.affine[:3, :3])
        assert k.meta["keep_slices"] == 4 and f.meta["keep_slices"] is None
    odd = sample(bundle, 1, sampler="euler", steps=2, seed=5, keep_slices=3)[0]
    assert np.array_equal(odd.array, full[0].array[:, :, 2:5])  # floor((8 - 3) / 2) = 2 cut before
    # with a margin too: the middle of the volume drawn past its ends
    wide = sample(bundle, 1, sampler="euler", steps=2, seed=5, z_margin=2)[0]
    both = sample(bundle, 1, sampler="euler", steps=2, seed=5, z_margin=2, keep_slices=4)[0]
    assert np.array_equal(both.array, wide.array[:, :, 2:6]) and both.meta["z_margin"] == 2
    # the config's sample.keep_slices is the default
    bundle.config.sample.keep_slices = 4
    assert np.array_equal(sample(bundle, 1, sampler="euler", steps=2, seed=5)[0].array, kept[0].array)


def test_bad_keep_slices_are_refused(bundle):
    from ctdiff.diffusion.sample import sample

    for keep, text in (
        (0, "between 1 and the model's 8 slices, got 0"),
        (9, "got 9"),
        (2.5, "whole number"),
        (True, "whole"),
    ):
        with pytest.raises(ConfigError, match=text):
            sample(bundle, 1, sampler="euler", steps=1, seed=0, keep_slices=keep)
    with pytest.raises(ConfigError, match="sample.keep_slices must be >= 1 or null"):
        config_from_dict({"sample": {"keep_slices": 0}})
    assert config_from_dict({"sample": {"keep_slices": 16}}).sample.keep_slices == 16


def test_cli_keep_slices_writes_the_middle_with_its_affine(latent_run, tmp_path, capsys):  # noqa: F811
    import nibabel as nib

    run, _, _ = latent_run
    base = ["sample", "--run", str(run), "--n", "1", "--steps", "2", "--seed", "7", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "all")]) == 0
    assert main([*base, "--out", str(tmp_path / "mid"), "--keep-slices", "4"]) == 0
    manifest = json.loads((tmp_path / "mid" / "manifest.json").read_text())
    assert manifest["keep_slices"] == 4 and manifest["cases"][0]["shape"] == [32, 32, 4]
    assert json.loads((tmp_path / "all" / "manifest.json").read_text())["keep_slices"] is None
    a, m = nib.load(tmp_path / "all" / "case_000.nii.gz"), nib.load(tmp_path / "mid" / "case_000.nii.gz")
    assert np.array_equal(np.asarray(m.dataobj), np.asarray(a.dataobj)[:, :, 2:6])
    assert np.allclose(m.affine, a.affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2], [0, 0, 0, 1.0]]))
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "bad"), "--keep-slices", "9"]) == 2
    err = capsys.readouterr().err
    assert "keep_slices must be between 1 and the model's 8 slices, got 9" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def test_decode_z_pad_reflects_the_latent_for_the_decoder_and_crops_before_the_noise(bundle):
    """``LatentSpace.decode(z, z_pad=k)``: the decoder sees the latent reflect-padded by k slices at each
    end; the output is cropped back to the unpadded length before the noise model adds its noise."""
    import torch

    from ctdiff.model.autoencoder import add_noise, decode
    from ctdiff.model.noise_resynthesis import fit_unpaired

    space = bundle.space
    torch.manual_seed(0)
    z = torch.randn(2, *space.encoded_shape((8, 32, 32)))  # 4 latent slices
    plain = space.decode(z)
    padded = space.decode(z, z_pad=1)
    assert padded.shape == plain.shape == (2, 1, 8, 32, 32)
    # by hand: reflect (slices 1, 0, 1, 2, 3, 2), decode, drop the 2 decoded slices at each end
    zz = z[:, :, [1, 0, 1, 2, 3, 2]] / space.scale
    assert torch.allclose(padded, decode(space.ae, zz, space.tile)[:, :, 2:10], atol=1e-6)
    assert not torch.allclose(padded[:, :, 0], plain[:, :, 0], atol=1e-3)  # the decoder's z border moved out
    # the noise comes after the crop: seeded, it is the noise of the cropped volume
    rng = np.random.default_rng(1)
    originals = [40.0 + 20.0 * rng.standard_normal((8, 32, 32)) for _ in range(2)]
    space.record = {**space.record, "noise_model": fit_unpaired(originals, [np.full((8, 32, 32), 40.0)] * 2)}
    noisy = space.decode(z, noise_seeds=[5, 6], z_pad=1)
    assert torch.equal(noisy, add_noise(padded, space.noise_model, space.ae_config.hu_window, [5, 6]))
    for bad in (4, -1):
        with pytest.raises(ValueError, match="below the latent's 4 slices"):
            space.decode(z, z_pad=bad)


def test_sample_decode_z_pad_default_record_and_refusals(bundle):
    from ctdiff.diffusion.sample import sample

    assert bundle.config.sample.decode_z_pad == 0
    plain = sample(bundle, 1, sampler="euler", steps=2, seed=3)[0]
    pad = sample(bundle, 1, sampler="euler", steps=2, seed=3, decode_z_pad=1)[0]
    assert plain.meta["decode_z_pad"] == 0 and pad.meta["decode_z_pad"] == 1
    assert pad.array.shape == plain.array.shape and np.array_equal(pad.affine, plain.affine)
    assert not np.array_equal(pad.array, plain.array)
    # the same latent, decoded with the padding: the network samples the same thing either way
    bundle.config.sample.decode_z_pad = 1  # the config's value is the default
    assert np.array_equal(sample(bundle, 1, sampler="euler", steps=2, seed=3)[0].array, pad.array)
    # with a margin the latent is longer (4 + 2 slices), so a larger padding fits
    wide = sample(bundle, 1, sampler="euler", steps=2, seed=3, z_margin=2, decode_z_pad=5)[0]
    assert wide.meta["z_margin"] == 2 and wide.meta["decode_z_pad"] == 5
    for value, text in (
        (4, "decode_z_pad must be from 0 to 3 \\(the latent has 4 slices\\), got 4"),
        (-1, "from 0 to 3"),
        (1.0, "whole number of latent slices"),
        (True, "whole number"),
    ):
        with pytest.raises(ConfigError, match=text):
            sample(bundle, 1, sampler="euler", steps=1, seed=0, decode_z_pad=value)
    with pytest.raises(ConfigError, match="sample.decode_z_pad must be >= 0"):
        config_from_dict({"model": {"space": "latent", "autoencoder": "ae.pt"}, "sample": {"decode_z_pad": -1}})
    with pytest.raises(ConfigError, match="decode_z_pad applies to model.space latent only \\(this model is pixel\\)"):
        config_from_dict({"model": {"space": "pixel"}, "sample": {"decode_z_pad": 2}})


def test_cli_decode_z_pad_is_recorded_and_a_bad_one_is_one_line(latent_run, tmp_path, capsys):  # noqa: F811
    run, _, _ = latent_run
    base = ["sample", "--run", str(run), "--n", "1", "--steps", "2", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "s"), "--decode-z-pad", "2"]) == 0
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["decode_z_pad"] == 2 and manifest["z_margin"] == 0 and manifest["cases"][0]["shape"] == [32, 32, 8]
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "bad"), "--decode-z-pad", "9"]) == 2
    err = capsys.readouterr().err
    assert "decode_z_pad must be from 0 to 3" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def test_fit_noise_draws_its_samples_with_the_given_settings_and_its_output_keeps_them(
    latent_run,  # noqa: F811
    tmp_path,
    capsys,
    monkeypatch,
):
    from ctdiff.diffusion import sample as sample_module
    from ctdiff.model import noise_resynthesis
    from ctdiff.model.checkpoint import load_checkpoint

    run, data, _ = latent_run
    ckpt = run / "checkpoints" / "last.pt"
    drawn, seen = sample_module.sample, []

    def spy(*args, **kwargs):
        seen.append({k: kwargs[k] for k in ("z_margin", "decode_z_pad")})
        return drawn(*args, **kwargs)

    monkeypatch.setattr(sample_module, "sample", spy)
    # the tiny model's samples hold no homogeneous soft tissue: the fit itself is tested apart
    monkeypatch.setattr(noise_resynthesis, "fit_unpaired", lambda o, d: {"sd_hu": 1.0, "decoded": len(d)})
    out = tmp_path / "zpad.pt"
    cmd = ["fit-noise", "--model", str(ckpt), "--data", str(data), "--samples", "2", "--no-progress"]
    assert main([*cmd, "--z-margin", "2", "--decode-z-pad", "1", "--out", str(out)]) == 0
    assert seen == [{"z_margin": 2, "decode_z_pad": 1}]
    saved = load_checkpoint(out)
    assert saved["config"]["sample"]["z_margin"] == 2 and saved["config"]["sample"]["decode_z_pad"] == 1
    noise = saved["space"]["autoencoder"]["noise_model"]
    assert noise["samples"]["z_margin"] == 2 and noise["samples"]["decode_z_pad"] == 1 and noise["decoded"] == 2
    assert load_checkpoint(ckpt)["config"]["sample"].get("decode_z_pad", 0) == 0  # the input is unchanged
    # without the options: the checkpoint's own settings, and its config as it was
    assert main([*cmd, "--out", str(tmp_path / "plain.pt")]) == 0
    assert seen[-1] == {"z_margin": 0, "decode_z_pad": 0}
    assert load_checkpoint(tmp_path / "plain.pt")["config"] == load_checkpoint(ckpt)["config"]
    capsys.readouterr()
    for extra, text in (
        (["--decode-z-pad", "9"], "decode_z_pad must be from 0 to 3"),
        (["--decode-z-pad", "-1"], "--decode-z-pad must be >= 0"),
        (["--guidance", "2"], "sample.guidance 2 needs a conditioned model"),  # this model has no condition
        (["--guidance", "nan"], "--guidance must be a finite number"),
    ):
        assert main([*cmd, *extra, "--out", str(tmp_path / "bad.pt")]) == 2
        err = capsys.readouterr().err
        assert text in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "bad.pt").exists()
    no_samples = ["fit-noise", "--model", str(ckpt), "--data", str(data), "--decode-z-pad", "1"]
    assert main([*no_samples, "--out", str(tmp_path / "bad.pt")]) == 2
    assert "give --samples N too" in capsys.readouterr().err
