"""The spread correction: the fitted shift and gains give the samples the training moments along the
principal axes (exactly on the samples it was fitted on, approximately on new draws), leave the rest of
each tensor alone and are capped; ``fit-spread`` / ``sample`` on a tiny latent rectified-flow run."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from ctdiff.cli import main
from ctdiff.diffusion import spread
from ctdiff.diffusion.fit_spread import draw, fit_spread
from ctdiff.diffusion.sample import load_bundle, sample
from ctdiff.diffusion.schedule import run_sampler
from ctdiff.errors import ConfigError, InputError, OverwriteError
from ctdiff.model.checkpoint import load_checkpoint
from tests.ctdiff.test_noise_resynthesis import _one_thread, latent_run  # noqa: F401

SHAPE = (2, 2, 4, 4)  # (C, D, H, W): 64 dims
DIMS = int(np.prod(SHAPE))
SPREAD = torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64)


def _basis(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(DIMS, 3, generator=g, dtype=torch.float64))[0].T


def draws(n: int, scale, shift, seed: int) -> torch.Tensor:
    """n draws with SD ``scale * SPREAD`` along three fixed directions, shifted by ``shift`` along them,
    over a weak isotropic floor: the training scans with scale 1 and shift 0, an under-dispersed
    sampler otherwise."""
    g = torch.Generator().manual_seed(seed)
    coef = torch.randn(n, 3, generator=g, dtype=torch.float64) * SPREAD * torch.as_tensor(scale, dtype=torch.float64)
    coef = coef + torch.as_tensor(shift, dtype=torch.float64)
    x = 0.5 + coef @ _basis() + 0.05 * torch.randn(n, DIMS, generator=g, dtype=torch.float64)
    return x.float().reshape(n, *SHAPE)


def _coords(record, z):
    flat = z.reshape(len(z), -1).double() - record["mean"].double().reshape(-1)
    return flat @ record["components"].double().T


# ------------------------------------------------------------------------------------------ the fit
def test_the_corrected_samples_have_the_training_moments_and_nothing_else_moves():
    train = draws(40, 1.0, 0.0, seed=1)
    samples = draws(120, [0.4, 0.6, 0.8], [3.0, -1.0, 0.0], seed=2)
    rec = spread.fit(train, samples, components=3)
    lam = rec["variances"].double()
    # the gains are sqrt(training / sample variance) along the axes, the samples' spread in the record
    a = _coords(rec, samples)
    np.testing.assert_allclose(rec["sample_variances"].double().numpy(), a.var(0).numpy(), rtol=1e-5)
    np.testing.assert_allclose(rec["gains"].double().numpy(), torch.sqrt(lam / a.var(0)).numpy(), rtol=1e-5)
    assert (rec["gains"] > 1.1).all()  # every axis was under-dispersed here
    fixed = spread.apply(rec, samples)
    b = _coords(rec, fixed)
    # on the samples it was fitted on: the training mean (0 along the training's own axes) and variances,
    # to the fp16 rounding of the stored axes
    np.testing.assert_allclose(b.mean(0).numpy(), 0.0, atol=2e-2 * float(lam.sqrt().max()))
    np.testing.assert_allclose(b.var(0).numpy(), lam.numpy(), rtol=1e-2)
    # the change lies in the axes' span: the rest of every tensor is as sampled
    u = rec["components"].double()
    delta = (fixed - samples).reshape(len(samples), -1).double()
    rest = delta - (delta @ u.T) @ u
    assert float(rest.abs().max()) < 1e-3 * float(delta.abs().max())
    assert fixed.dtype == samples.dtype and fixed.shape == samples.shape
    # new draws of the same sampler: their spread along the axes lands near the training scans'
    new = spread.apply(rec, draws(400, [0.4, 0.6, 0.8], [3.0, -1.0, 0.0], seed=3))
    ratio = (_coords(rec, new).var(0) / lam).numpy()
    assert np.all((ratio > 0.7) & (ratio < 1.4)), ratio
    before = (_coords(rec, draws(400, [0.4, 0.6, 0.8], [3.0, -1.0, 0.0], seed=3)).var(0) / lam).numpy()
    assert np.all(before < 0.7), before  # what the correction fixed


def test_matching_samples_are_left_as_they_are_and_gains_are_capped():
    train = draws(20, 1.0, 0.0, seed=1)
    rec = spread.fit(train, draws(20, 1.0, 0.0, seed=5), components=2)
    ident = {**rec, "gains": torch.ones(2), "sample_mean": torch.zeros(2)}
    z = draws(3, 0.5, 0.0, seed=6)
    assert torch.equal(spread.apply(ident, z), z)
    # a sampler that collapses an axis is stretched by at most MAX_GAIN
    collapsed = draws(20, [1e-4, 1.0, 1.0], 0.0, seed=7)
    assert float(spread.fit(train, collapsed, components=2)["gains"][0]) == pytest.approx(spread.MAX_GAIN)
    # an over-dispersed one is narrowed
    wide = spread.fit(train, draws(20, 3.0, 0.0, seed=8), components=2)
    assert (wide["gains"] < 0.6).all()


def test_fit_and_apply_refuse_bad_input():
    train = draws(10, 1.0, 0.0, seed=1)
    with pytest.raises(ValueError, match="at least 2 samples"):
        spread.fit(train, train[:1], 2)
    with pytest.raises(ValueError, match="differs"):
        spread.fit(train, torch.zeros(3, 2, 2, 4, 5), 2)
    bad = train.clone()
    bad[0, 0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        spread.fit(train, bad, 2)
    with pytest.raises(ValueError, match="between 1 and 9"):
        spread.fit(train, train, 10)
    rec = spread.fit(train, train, 2)
    with pytest.raises(ValueError, match="fitted to tensors of shape"):
        spread.apply(rec, torch.zeros(1, 2, 2, 4, 5))


def test_check_record_names_what_is_wrong():
    rec = spread.fit(draws(10, 1.0, 0.0, seed=1), draws(10, 0.5, 0.0, seed=2), 3)
    assert spread.check_record(rec) is None
    assert "format" in spread.check_record({**rec, "format": "gaussian-start-1"})
    assert "incomplete" in spread.check_record({k: v for k, v in rec.items() if k != "gains"})
    assert "shape" in spread.check_record({**rec, "shape": [2, 2, 4, 5]})
    assert "per component" in spread.check_record({**rec, "gains": rec["gains"][:2]})
    assert "NaN" in spread.check_record({**rec, "sample_mean": torch.full((3,), float("nan"))})
    assert "outside" in spread.check_record({**rec, "gains": torch.full((3,), 10.0)})
    summary = spread.summary(rec)
    assert summary["components"] == 3 and summary["samples"] == 10 and len(summary["gains"]) == 3


# ------------------------------------------------------------------------------ fit-spread and sample
def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fit_spread_writes_a_copy_that_samples_with_the_correction(latent_run, tmp_path, capsys):  # noqa: F811
    run, data, _ = latent_run
    src = run / "checkpoints" / "last.pt"
    before = _sha(src)
    out = tmp_path / "spread.pt"
    argv = ["fit-spread", "--model", str(src), "--data", str(data), "--out", str(out)]
    assert main([*argv, "--components", "2", "--samples", "5", "--seed", "50", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["components"] == 2 and summary["samples"] == 5 and summary["n"] == 4
    assert summary["sampling"]["seed"] == 50 and summary["sampling"]["sampler"] == "euler"
    assert _sha(src) == before  # the input is never changed
    ckpt = load_checkpoint(out)
    assert ckpt["config"]["sample"]["spread_correction"] is True
    rec = ckpt["spread_correction"]
    assert rec["fitted_on"] == [f"case_{i}.nii.gz" for i in range(4)]
    plain = load_bundle(src, device="cpu")
    # the record's sample moments are those of the model's own draws (seeds 50..54), before decoding
    z = run_sampler("euler", plain.model, rec["shape"], plain.diffusion, 2, range(50, 55), "cpu")
    assert torch.allclose(draw(plain, 5, 50), z)
    a = _coords(rec, z)
    np.testing.assert_allclose(rec["sample_variances"].numpy(), a.var(0).float().numpy(), rtol=1e-4)
    bundle = load_bundle(out, device="cpu")
    fixed = sample(bundle, 2, "euler", 2, seed=7)
    without = sample(bundle, 2, "euler", 2, seed=7, spread_correction=False)
    as_before = sample(plain, 2, "euler", 2, seed=7)
    assert fixed[0].meta["spread_correction"] is True and without[0].meta["spread_correction"] is False
    assert all(np.array_equal(a.array, b.array) for a, b in zip(without, as_before))
    assert not np.array_equal(fixed[0].array, without[0].array)
    # an identity correction (gains 1, no shift) changes nothing: the correction acts before decoding only
    bundle.spread = {**bundle.spread, "gains": torch.ones(2), "sample_mean": torch.zeros(2)}
    same = sample(bundle, 2, "euler", 2, seed=7)
    assert all(np.array_equal(a.array, b.array) for a, b in zip(same, as_before))
    # the CLI: the manifest records it; --no-spread-correction leaves it out
    for flag, expected in (([], True), (["--no-spread-correction"], False)):
        folder = tmp_path / f"samples{len(flag)}"
        cmd = ["sample", "--checkpoint", str(out), "--n", "1", "--out", str(folder), "--no-progress", *flag]
        assert main(cmd) == 0
        assert json.loads((folder / "manifest.json").read_text())["spread_correction"] is expected


def test_fit_spread_and_sample_refuse_bad_input_in_one_line(latent_run, tmp_path, capsys):  # noqa: F811
    run, data, _ = latent_run
    src = run / "checkpoints" / "last.pt"
    out = tmp_path / "spread.pt"
    with pytest.raises(ConfigError, match="between 1 and 3"):
        fit_spread(src, data, out, components=4, samples=3)
    with pytest.raises(ConfigError, match="at least 2"):
        fit_spread(src, data, out, components=2, samples=1)
    with pytest.raises(ConfigError, match="is the input"):
        fit_spread(src, data, src, components=2, samples=3)
    out.write_text("not a checkpoint")
    with pytest.raises(OverwriteError, match="not a ctdiff checkpoint"):
        fit_spread(src, data, out, components=2, samples=3, force=True)
    assert out.read_text() == "not a checkpoint"
    with pytest.raises(InputError):
        fit_spread(src, tmp_path / "missing", tmp_path / "new.pt", components=2, samples=3)
    rc = main(
        ["fit-spread", "--model", str(src), "--data", str(data), "--out", str(tmp_path / "x.pt"), "--samples", "1"]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--samples" in err and len(err.splitlines()) == 1, err
    # sampling a checkpoint without a correction, asking for one: one line naming the checkpoint
    with pytest.raises(InputError, match="carries no spread correction") as info:
        sample(load_bundle(src, device="cpu"), 1, "euler", 2, seed=0, spread_correction=True)
    assert "last.pt" in str(info.value)
    good = tmp_path / "good.pt"
    fit_spread(src, data, good, components=2, samples=3)
    with pytest.raises(ConfigError, match="z_margin"):
        sample(load_bundle(good, device="cpu"), 1, "euler", 2, seed=0, z_margin=2)
    # without it, z_margin samples as before
    assert len(sample(load_bundle(good, device="cpu"), 1, "euler", 2, seed=0, z_margin=2, spread_correction=False)) == 1
    ckpt = torch.load(good, weights_only=True)
    broken = tmp_path / "broken.pt"
    torch.save({**ckpt, "spread_correction": {**ckpt["spread_correction"], "gains": torch.full((2,), 99.0)}}, broken)
    with pytest.raises(InputError, match="gains outside") as info:
        load_bundle(broken, device="cpu")
    assert "broken.pt" in str(info.value)


def test_the_apps_generate_form_applies_a_checkpoints_spread_correction(latent_run, tmp_path):  # noqa: F811
    from pages.components.sampling import generate

    run, data, _ = latent_run
    out = tmp_path / "spread.pt"
    fit_spread(run / "checkpoints" / "last.pt", data, out, components=2, samples=3)
    seen = []
    folder = generate(
        run, out, n=1, sampler="euler", steps=2, seed=4, overwrite=False, device="cpu",
        progress=lambda d, t: seen.append((d, t)),
    )  # fmt: skip
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["spread_correction"] is True and seen[-1] == (2, 2)  # no network evaluation added
    corrected = sample(load_bundle(out, device="cpu"), 1, "euler", 2, seed=4)[0]
    from ctdiff.data.io import read_volume

    np.testing.assert_allclose(read_volume(folder / "case_000.nii.gz").array, corrected.array, atol=0.5)
