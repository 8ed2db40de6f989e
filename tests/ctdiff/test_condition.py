"""model.condition (ctdiff.model.condition): the body share measured on training items, the U-Net's
condition embedding, the checkpoint's record, the per-seed draw at sampling time, `ctdiff sample
--condition` and the app's Generate form."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ctdiff.cli import main
from ctdiff.config import config_from_dict
from ctdiff.data.io import read_volume
from ctdiff.data.tensors import hu_to_model
from ctdiff.diffusion.sample import load_bundle, sample
from ctdiff.errors import ConfigError
from ctdiff.model import condition as conditions
from ctdiff.model.checkpoint import load_checkpoint
from ctdiff.model.unet import UNet3D
from ctdiff.training.train import train
from tests.ctdiff.test_spaces import SHAPE, _one_thread, data, tiny, train_split_and_whole  # noqa: F401  (fixtures)

WINDOW = (-1000.0, 1000.0)


def test_body_share_counts_voxels_above_minus_500_hu():
    hu = torch.full((2, 1, 4, 5, 5), -1000.0)
    hu[0, 0, :2] = 40.0  # half the voxels soft tissue
    hu[1, 0, 0, 0, :3] = -499.0  # 3 voxels just above the threshold
    hu[1, 0, 1, 0, :2] = -501.0  # 2 just below
    share = conditions.body_share(hu_to_model(hu, WINDOW), WINDOW)
    torch.testing.assert_close(share, torch.tensor([0.5, 3 / 100]))
    with pytest.raises(ValueError, match="N, C, D, H, W"):
        conditions.body_share(hu[0], WINDOW)


def test_draw_is_seeded_in_range_and_keeps_the_values_mean_and_variance():
    values = [0.30, 0.33, 0.36, 0.38, 0.41, 0.44, 0.47, 0.52]
    record = conditions.make_record("body_share", values)
    assert record["mean"] == pytest.approx(np.mean(values)) and record["sd"] == pytest.approx(np.std(values))
    draws = np.array([conditions.draw(record, s) for s in range(4000)])
    assert conditions.draw(record, 7) == conditions.draw(record, 7)  # a pure function of the seed
    assert len(set(np.round(draws, 9))) > 3900  # smoothed: not only the training values
    assert draws.mean() == pytest.approx(np.mean(values), abs=0.003)
    assert draws.std() == pytest.approx(np.std(values), rel=0.05)  # variance-preserving (a plain KDE: +20 %)
    assert ((draws >= 0) & (draws <= 1)).all()
    # a share near 1 is clipped into [0, 1]; one value, or no spread, gives that value
    assert max(conditions.draw(conditions.make_record("body_share", [0.99, 1.0]), s) for s in range(200)) <= 1.0
    assert conditions.draw(conditions.make_record("body_share", [0.4]), 3) == 0.4
    assert conditions.draw(conditions.make_record("body_share", [0.4, 0.4]), 3) == 0.4


@pytest.mark.parametrize("dims", [1, 3])
def test_a_gaussian_draw_keeps_the_values_mean_and_covariance(dims):
    """sample.condition_draw gaussian: seeded, the values' mean and population covariance (against numpy's
    moments of 20000 draws), correlated coordinates kept; a body share clipped to [0, 1]."""
    rng = np.random.default_rng(1)
    base = rng.normal(size=(15, dims)) @ np.triu(np.ones((dims, dims)))  # correlated coordinates
    record = (
        conditions.make_record("latent_pcs", base.tolist())
        if dims > 1
        else conditions.make_record("body_share", (0.4 + 0.05 * base[:, 0]).tolist())
    )
    vals = np.asarray(record["values"], dtype=float).reshape(15, dims)
    draws = np.array([conditions.draw(record, s, "gaussian") for s in range(20000)]).reshape(20000, dims)
    assert conditions.draw(record, 7, "gaussian") == conditions.draw(record, 7, "gaussian")
    assert conditions.draw(record, 7, "gaussian") != conditions.draw(record, 7)  # not the bootstrap's
    sd = vals.std(0)
    assert (np.abs(draws.mean(0) - vals.mean(0)) < 0.03 * sd).all()
    cov, want = np.atleast_2d(np.cov(draws.T, bias=True)), np.atleast_2d(np.cov(vals.T, bias=True))
    np.testing.assert_allclose(cov, want, atol=0.05 * sd.max() ** 2)
    clipped = conditions.make_record("body_share", [0.97, 0.99, 1.0])
    assert all(0.0 <= conditions.draw(clipped, s, "gaussian") <= 1.0 for s in range(200))
    with pytest.raises(ValueError, match="condition draw must be one of"):
        conditions.draw(record, 1, "uniform")


def test_records_and_values_are_checked():
    assert conditions.check_record(conditions.make_record("body_share", [0.3, 0.4])) is None
    assert "no training values" in conditions.check_record({"name": "body_share", "values": []})
    assert "non-finite" in conditions.check_record({"name": "body_share", "values": [0.3, float("nan")]})
    assert "no training values" in conditions.check_record(None)
    with pytest.raises(ValueError, match="finite training values"):
        conditions.make_record("body_share", [math.inf])
    assert conditions.check_value("body_share", "0.25") == 0.25
    for bad in (1.5, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"finite share in \[0, 1\]"):
            conditions.check_value("body_share", bad)
    with pytest.raises(ValueError, match="must be a number"):
        conditions.check_value("body_share", "large")


def test_unet_condition_embedding_starts_at_zero_and_nan_means_none():
    torch.manual_seed(0)
    kw = dict(channels=(8, 8), block_kinds=("3d", "3d"), norm_groups=4, res_blocks=1, time_channels=16)
    net = UNet3D(condition="body_share", **kw).eval()
    x, t = torch.randn(3, 1, 4, 8, 8), torch.tensor([10, 500, 900])
    with torch.no_grad():  # a trained-looking network (its blocks' last layers start at zero) ...
        for name, p in net.named_parameters():
            if not name.startswith("cond_mlp.2") and "norm" not in name:
                p.normal_(0.0, 0.2)
    base = net(x, t)
    torch.testing.assert_close(net.cond_mlp[2].weight, torch.zeros_like(net.cond_mlp[2].weight))
    # ... whose condition MLP's last layer starts at zero: training starts from the unconditional network
    torch.testing.assert_close(net(x, t, cond=torch.tensor([0.2, 0.4, 0.6])), base)
    torch.nn.init.normal_(net.cond_mlp[2].weight, std=0.5)
    net.set_condition_scale(0.4, 0.05)
    a = net(x, t, cond=torch.tensor([0.30, 0.40, float("nan")]))
    b = net(x, t, cond=torch.tensor([0.50, 0.40, 0.45]))
    assert (a[0] - b[0]).abs().max() > 1e-4  # the value reaches the output
    torch.testing.assert_close(a[1], b[1])  # per item
    torch.testing.assert_close(a[2], base[2])  # NaN = no value = the unconditional flow
    torch.testing.assert_close(net(x, t, cond=None), base)
    torch.testing.assert_close(net(x, t, cond=0.3)[0], a[0])  # one value for every item
    with pytest.raises(ValueError, match="one condition value per item"):
        net(x, t, cond=torch.tensor([0.3, 0.4]))
    plain = UNet3D(**kw)
    with pytest.raises(ValueError, match="model without one"):
        plain(x, t, cond=0.3)
    assert not any("cond" in k for k in plain.state_dict())  # unconditioned checkpoints are unchanged


def test_a_conditioned_latent_run_trains_on_each_items_share_resumes_and_samples(data, tmp_path, monkeypatch, capsys):  # noqa: F811
    """Training feeds every item its own body share (the augmented copies' measured on the copy), drops
    it for condition_dropout of the items, resumes exactly; the checkpoint carries the training cases'
    shares; sampling gives each seed its draw, or the value asked for; the CLI and the app's Generate
    form sample it; an unconditioned model refuses a value."""
    root, ae = data
    values = tiny("latent", "rflow", str(ae), condition="body_share", condition_dropout=0.5)
    values["data"].update(flip_prob=1.0, zoom_prob=1.0, zoom_range=[0.8, 0.9], latent_augment_copies=2)
    values["train"]["epochs"] = 3
    cfg = config_from_dict(values)

    seen: list[torch.Tensor] = []
    forward = UNet3D.forward

    def spy(self, x, t, cond=None):
        if self.training:
            seen.append(torch.full((x.shape[0],), math.inf) if cond is None else cond.detach().cpu().clone())
        return forward(self, x, t, cond)

    monkeypatch.setattr(UNet3D, "forward", spy)
    run, _, resumed, whole = train_split_and_whole(cfg, root, tmp_path)  # resume is exact
    assert resumed.step == whole.step == 6

    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    record = ckpt["geometry"]["condition"]
    # the three training cases' shares, measured here from the files as training sees them
    split = json.loads((run / "split.json").read_text())
    expected = []
    for p in split["train"]:
        hu = torch.from_numpy(read_volume(p).array).permute(2, 1, 0)[None, None].float()
        expected.append(float(conditions.body_share(hu_to_model(hu, WINDOW), WINDOW)[0]))
    assert record["name"] == "body_share" and record["values"] == pytest.approx(expected, abs=1e-6)
    assert float(ckpt["ema"]["cond_center"]) == pytest.approx(np.mean(expected), abs=1e-6)
    assert float(ckpt["ema"]["cond_scale"]) == pytest.approx(np.std(expected), abs=1e-6)

    got = torch.cat(seen[: 2 * 6])  # the split run's 6 steps: batches of 2, 1 (3 cases) per epoch
    known = got[torch.isfinite(got)]
    dropped = int(torch.isnan(got).sum())
    assert not torch.isinf(got).any()  # every training forward got a condition
    assert 0 < dropped < len(got)  # dropout 0.5 drops some items, not all
    # the augmented (zoomed out: the body shrinks) copies' shares are their own, not their case's
    assert any(min(abs(v - e) for e in expected) > 1e-3 for v in known.tolist())
    assert min(known.tolist()) < min(expected)

    monkeypatch.setattr(UNet3D, "forward", forward)
    bundle = load_bundle(run, device="cpu")
    vols = sample(bundle, 3, steps=2, sampler="euler", seed=5)
    drawn = [v.meta["condition"]["value"] for v in vols]
    assert drawn == pytest.approx([conditions.draw(record, s) for s in (5, 6, 7)], abs=1e-6)
    assert all(v.shape == SHAPE and np.isfinite(v.array).all() for v in vols)
    # a fixed value reaches the network: the same seed with another value decodes another volume
    small = sample(bundle, 1, steps=2, sampler="euler", seed=5, condition=0.05)[0]
    large = sample(bundle, 1, steps=2, sampler="euler", seed=5, condition=0.95)[0]
    assert small.meta["condition"] == {"name": "body_share", "value": 0.05, "guidance": 1.0, "draw": None}
    assert np.abs(small.array - large.array).max() > 1e-3
    # classifier-free guidance: w 3 moves the sample further than w 1 does (the same seed and value) ...
    louder = sample(bundle, 1, steps=2, sampler="euler", seed=5, condition=0.05, guidance=3.0)[0]
    assert louder.meta["condition"]["guidance"] == 3.0
    assert np.abs(louder.array - small.array).max() > 1e-3
    # ... and w 0 is the unconditional flow, whatever value is asked for
    uncond = [sample(bundle, 1, steps=2, sampler="euler", seed=5, condition=v, guidance=0.0)[0] for v in (0.05, 0.95)]
    np.testing.assert_allclose(uncond[0].array, uncond[1].array, atol=1e-4)
    for bad in (float("nan"), -0.5, 21.0):
        with pytest.raises(ConfigError, match=r"guidance must be a finite scale in \[0, 20\]"):
            sample(bundle, 1, steps=2, sampler="euler", guidance=bad)
    with pytest.raises(ConfigError, match=r"finite share in \[0, 1\]"):
        sample(bundle, 1, steps=2, sampler="euler", condition=2.0)

    out = tmp_path / "cli"
    args = ["sample", "--run", str(run), "--n", "1", "--steps", "2", "--device", "cpu", "--no-progress"]
    inside = round(float(np.median(expected)), 3)
    assert main([*args, "--condition", str(inside), "--out", str(out)]) == 0
    assert json.loads((out / "manifest.json").read_text())["cases"][0]["condition"]["value"] == inside
    assert "outside the training" not in capsys.readouterr().err
    assert main([*args, "--condition", "0.01", "--out", str(tmp_path / "small")]) == 0  # allowed, with a warning
    assert "warning: --condition 0.01 lies outside the training cases' body_share" in capsys.readouterr().err
    assert main([*args, "--condition", "nan", "--out", str(tmp_path / "nan")]) == 2
    assert "finite share" in capsys.readouterr().err and not (tmp_path / "nan").exists()
    assert main([*args, "--guidance", "2", "--out", str(tmp_path / "guided")]) == 0
    assert json.loads((tmp_path / "guided" / "manifest.json").read_text())["cases"][0]["condition"]["guidance"] == 2.0
    assert main([*args, "--guidance", "inf", "--out", str(tmp_path / "inf")]) == 2
    err = capsys.readouterr().err
    assert "guidance must be a finite scale" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "inf").exists()

    # fit-noise --samples --guidance: the samples it fits on are drawn guided, and --out samples so
    from ctdiff.diffusion import sample as sample_module
    from ctdiff.model import noise_resynthesis

    drawn_with, real_sample = [], sample_module.sample

    def spy(*a, **kw):
        drawn_with.append((kw["guidance"], kw["condition_draw"]))
        return real_sample(*a, **kw)

    monkeypatch.setattr(sample_module, "sample", spy)
    # the tiny model's samples hold no homogeneous soft tissue: the fit itself is tested apart
    monkeypatch.setattr(noise_resynthesis, "fit_unpaired", lambda o, d: {"sd_hu": 1.0})
    fitted = tmp_path / "guided-noise.pt"
    fit = ["fit-noise", "--model", str(run / "checkpoints" / "last.pt"), "--data", str(root), "--samples", "1"]
    fit_args = ["--guidance", "2.5", "--condition-draw", "gaussian", "--no-progress", "--out", str(fitted)]
    assert main([*fit, *fit_args]) == 0
    assert drawn_with == [(2.5, "gaussian")]
    saved = load_checkpoint(fitted)
    assert saved["config"]["sample"]["guidance"] == 2.5 and saved["config"]["sample"]["condition_draw"] == "gaussian"
    fitted_on = saved["space"]["autoencoder"]["noise_model"]["samples"]
    assert fitted_on["guidance"] == 2.5 and fitted_on["condition_draw"] == "gaussian"
    assert load_bundle(fitted, device="cpu").config.sample.guidance == 2.5
    monkeypatch.undo()

    from pages.components.sampling import generate

    folder = generate(
        run, run / "checkpoints" / "last.pt", n=1, sampler="euler", steps=2, seed=5, overwrite=False, device="cpu"
    )
    # the same seed draws the same value in the app: the volume matches (written as whole HU)
    np.testing.assert_allclose(read_volume(folder / "case_000.nii.gz").array, vols[0].array, atol=0.51)

    plain = tmp_path / "plain"
    with torch.random.fork_rng():
        train(config_from_dict(tiny("pixel", "rflow")), root, plain, overrides=["train.max_steps=1"], progress=False)
    assert main(["sample", "--run", str(plain), "--n", "1", "--condition", "0.3", "--out", str(tmp_path / "p")]) == 2
    assert "not conditioned" in capsys.readouterr().err
    assert main(["sample", "--run", str(plain), "--n", "1", "--guidance", "2", "--out", str(tmp_path / "g")]) == 2
    assert "guidance 2 needs a conditioned model" in capsys.readouterr().err and not (tmp_path / "g").exists()
    gauss = ["sample", "--run", str(plain), "--n", "1", "--condition-draw", "gaussian", "--out", str(tmp_path / "d")]
    assert main(gauss) == 2
    assert "condition draw gaussian needs a conditioned model" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def _record_training_conditions(monkeypatch) -> list[torch.Tensor]:
    """Patch UNet3D.forward to record the condition of every training-mode call (the list it fills)."""
    seen: list[torch.Tensor] = []
    forward = UNet3D.forward

    def spy(self, x, t, cond=None):
        if self.training:
            seen.append(cond.detach().cpu().clone())
        return forward(self, x, t, cond)

    monkeypatch.setattr(UNet3D, "forward", spy)
    return seen


def _jitter_runs(values: dict, root, tmp_path, seen: list[torch.Tensor]) -> list[tuple[torch.Tensor, dict]]:
    """Train ``values`` (no dropout, no augmentation) with condition_jitter 0, 1 and 2: each run's training
    conditions (recorded in ``seen``) and its checkpoint's condition record."""
    out = []
    for share in (0.0, 1.0, 2.0):
        cfg = {**values, "model": {**values["model"], "condition_dropout": 0.0, "condition_jitter": share}}
        cfg["data"] = {**values["data"], "flip_prob": 0.0, "zoom_prob": 0.0}
        seen.clear()
        with torch.random.fork_rng():
            train(config_from_dict(cfg), root, tmp_path / f"j{share:g}", progress=False)
        record = load_checkpoint(tmp_path / f"j{share:g}" / "checkpoints" / "last.pt")["geometry"]["condition"]
        out.append((torch.cat(seen), record))
    return out


def test_a_pixel_run_measures_each_augmented_item_and_a_broken_record_is_refused(data, tmp_path, monkeypatch):  # noqa: F811
    root, _ = data
    values = tiny("pixel", "rflow", condition="body_share", condition_dropout=0.0)
    values["data"].update(zoom_prob=1.0, zoom_range=[0.8, 0.9])
    seen = _record_training_conditions(monkeypatch)
    run = tmp_path / "run"
    with torch.random.fork_rng():
        train(config_from_dict(values), root, run, progress=False)
    last = run / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last)
    cases = ckpt["geometry"]["condition"]["values"]
    got = torch.cat(seen).tolist()
    assert len(cases) == 3 and len(got) == 6 and all(math.isfinite(v) for v in got)  # no dropout
    # zoomed out, every item's body is smaller than its case's: each is measured after augmentation
    assert max(got) < max(cases) and all(min(abs(v - c) for c in cases) > 1e-3 for v in got)
    ckpt["geometry"]["condition"]["values"] = []
    torch.save(ckpt, last)
    from ctdiff.errors import InputError

    with pytest.raises(InputError, match="no training values"):
        load_bundle(last, device="cpu")


def test_condition_jitter_adds_seeded_noise_scaled_by_the_training_sd_and_resumes_exactly(data, tmp_path, monkeypatch):  # noqa: F811
    """model.condition_jitter: each training item's value moves by share x SD(training values) x the
    same seeded normal draw (twice the share, twice the move); the checkpoint keeps the cases' own
    values; resume is exact."""
    root, _ = data
    forward = UNet3D.forward
    seen = _record_training_conditions(monkeypatch)

    (plain, record), (one, record1), (two, _) = _jitter_runs(
        tiny("pixel", "rflow", condition="body_share"), root, tmp_path, seen
    )
    assert record1 == record  # the checkpoint keeps the cases' own values, not jittered ones
    cases = torch.tensor(record["values"])
    assert len(plain) == 6 and all(float((cases - v).abs().min()) < 1e-6 for v in plain)  # no jitter: a case's own
    moved = (one - plain) / record["sd"]
    assert bool((moved.abs() > 1e-4).all()) and float(moved.abs().max()) < 5.0
    torch.testing.assert_close(two - plain, 2 * (one - plain), atol=1e-5, rtol=1e-4)
    assert len(set(moved.tolist())) == len(moved)  # one draw per item, not one per batch

    monkeypatch.setattr(UNet3D, "forward", forward)
    values = tiny("pixel", "rflow", condition="body_share", condition_jitter=0.5)
    values["train"]["epochs"] = 3
    _, _, resumed, whole = train_split_and_whole(config_from_dict(values), root, tmp_path / "resume")
    assert resumed.step == whole.step == 6


def test_config_validation_of_the_condition():
    base = tiny("pixel", "rflow")
    assert config_from_dict(base).model.condition is None  # the default: unconditioned
    with pytest.raises(ConfigError, match="model.condition must be null or one of"):
        config_from_dict({**base, "model": {**base["model"], "condition": "age"}})
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ConfigError, match=r"condition_dropout must be in \[0, 1\)"):
            config_from_dict({**base, "model": {**base["model"], "condition": "body_share", "condition_dropout": bad}})
    for bad in (-0.1, 5.5, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=r"condition_jitter must be in \[0, 5\]"):
            config_from_dict({**base, "model": {**base["model"], "condition": "body_share", "condition_jitter": bad}})
    conditioned = {**base, "model": {**base["model"], "condition": "body_share"}}
    assert config_from_dict(conditioned).sample.guidance == 1.0  # the default: the conditional flow alone
    assert (
        config_from_dict({**conditioned, "sample": {**base.get("sample", {}), "guidance": 2.5}}).sample.guidance == 2.5
    )
    for bad in (-0.1, 20.5, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=r"sample.guidance must be a finite scale in \[0, 20\]"):
            config_from_dict({**conditioned, "sample": {**base.get("sample", {}), "guidance": bad}})
    with pytest.raises(ConfigError, match="sample.guidance 2 needs a conditioned model"):
        config_from_dict({**base, "sample": {**base.get("sample", {}), "guidance": 2.0}})
    gauss = {**conditioned, "sample": {**base.get("sample", {}), "condition_draw": "gaussian"}}
    assert config_from_dict(gauss).sample.condition_draw == "gaussian"
    assert config_from_dict(conditioned).sample.condition_draw == "bootstrap"
    with pytest.raises(ConfigError, match="sample.condition_draw must be one of"):
        config_from_dict({**conditioned, "sample": {**base.get("sample", {}), "condition_draw": "kde"}})
    with pytest.raises(ConfigError, match="sample.condition_draw gaussian needs a conditioned model"):
        config_from_dict({**base, "sample": {**base.get("sample", {}), "condition_draw": "gaussian"}})


# ------------------------------------------------------------------ latent_pcs: a vector condition
def test_a_vector_draw_picks_one_case_for_all_coordinates_and_keeps_each_ones_moments():
    rng = np.random.default_rng(0)
    first = rng.normal(0.0, 3.0, 12)
    values = [[float(a), float(2 * a + 1)] for a in first]  # the second coordinate follows the first
    record = conditions.make_record("latent_pcs", values)
    assert record["mean"] == pytest.approx(np.mean(values, axis=0).tolist())
    assert record["sd"] == pytest.approx(np.std(values, axis=0).tolist()) and conditions.dims(record) == 2
    assert conditions.dims(conditions.make_record("body_share", [0.3, 0.4])) is None
    draws = np.array([conditions.draw(record, s) for s in range(4000)])
    assert draws.shape == (4000, 2) and conditions.draw(record, 9) == conditions.draw(record, 9)
    assert (np.abs(draws.mean(0) - np.mean(values, axis=0)) < 0.06 * np.std(values, axis=0)).all()
    np.testing.assert_allclose(draws.std(0), np.std(values, axis=0), rtol=0.06)  # variance-preserving, each
    # one case picked for both coordinates: they stay correlated (independent picks would give about 0)
    assert np.corrcoef(draws.T)[0, 1] > 0.7
    # a scalar record draws as before: the same numbers as the one-coordinate vector's first entry
    scalar = conditions.make_record("body_share", [v[0] / 100 + 0.5 for v in values])
    vector = conditions.make_record("latent_pcs", [[v[0] / 100 + 0.5] for v in values])
    assert [conditions.draw(scalar, s) for s in range(5)] == pytest.approx(
        [conditions.draw(vector, s)[0] for s in range(5)]
    )
    assert conditions.check_record(record) is None
    assert "non-finite" in conditions.check_record({"values": [[0.1, float("nan")], [0.2, 0.3]]})
    with pytest.raises(ValueError, match="one per case"):
        conditions.make_record("latent_pcs", [[0.1, 0.2], [0.3]])
    with pytest.raises(ValueError, match="drawn per seed"):
        conditions.check_value("latent_pcs", 0.2)
    with pytest.raises(ValueError, match="measured on the latents"):
        conditions.measure("latent_pcs", torch.zeros(1, 1, 2, 2, 2), WINDOW)


def test_the_pca_basis_matches_an_svd_and_projects_onto_it():
    rng = np.random.default_rng(1)
    latents = [torch.from_numpy(rng.normal(size=(2, 3, 4, 4))) * (1 + i) for i in range(6)]
    basis = conditions.pca_basis(latents, 3)
    flat = np.stack([z.numpy().reshape(-1) for z in latents])
    centred = flat - flat.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # numpy's SVD as the reference
    for k in range(3):  # the same axes up to sign
        assert abs(float(basis["components"][k].numpy() @ vt[k])) == pytest.approx(1.0, abs=1e-9)
    coords = np.array([conditions.project(basis, z) for z in latents])
    np.testing.assert_allclose(np.abs(coords), np.abs(centred @ vt[:3].T), atol=1e-9)
    with pytest.raises(ValueError, match="more than 6 training cases"):
        conditions.pca_basis(latents, 6)
    # model.condition_grid: the PCA of the latents averaged to (3, 2, 2) cells per channel
    grid = conditions.pca_basis(latents, 2, grid=(3, 2, 2))
    pooled = np.stack([z.numpy().reshape(2, 3, 1, 2, 2, 2, 2).mean(axis=(2, 4, 6)).reshape(-1) for z in latents])
    pc = pooled - pooled.mean(0)
    _, _, pvt = np.linalg.svd(pc, full_matrices=False)
    assert grid["grid"] == [3, 2, 2] and grid["components"].shape == (2, 24)
    np.testing.assert_allclose(
        np.abs([conditions.project(grid, z) for z in latents]), np.abs(pc @ pvt[:2].T), atol=1e-9
    )
    # a grid at least the latent's size leaves it whole
    whole = conditions.pca_basis(latents, 3, grid=(8, 8, 8))
    np.testing.assert_allclose(np.abs([conditions.project(whole, z) for z in latents]), np.abs(coords), atol=1e-9)


def test_unet_vector_condition_one_vector_per_item_and_any_nan_means_none():
    torch.manual_seed(0)
    kw = dict(channels=(8, 8), block_kinds=("3d", "3d"), norm_groups=4, res_blocks=1, time_channels=16)
    net = UNet3D(condition="latent_pcs", condition_dims=3, **kw).eval()
    assert net.cond_mlp[0].in_features == 3 and net.cond_center.shape == (3,)
    x, t = torch.randn(2, 1, 4, 8, 8), torch.tensor([10, 500])
    with torch.no_grad():  # a trained-looking network (the blocks' last layers start at zero)
        for name, p in net.named_parameters():
            if not name.startswith("cond_mlp.2") and "norm" not in name:
                p.normal_(0.0, 0.2)
    base = net(x, t)
    torch.testing.assert_close(net(x, t, cond=[0.5, 1.0, -1.0]), base)  # starts as the unconditional network
    torch.nn.init.normal_(net.cond_mlp[2].weight, std=0.5)
    net.set_condition_scale([0.0, 1.0, -1.0], [2.0, 0.0, 0.5])  # an SD of 0 standardises by 1
    torch.testing.assert_close(net.cond_scale, torch.tensor([2.0, 1.0, 0.5]))
    a = net(x, t, cond=torch.tensor([[0.5, 1.0, -1.0], [0.1, float("nan"), 0.2]]))
    b = net(x, t, cond=torch.tensor([[0.5, 1.0, -0.5], [0.3, 0.2, 0.1]]))
    assert (a[0] - b[0]).abs().max() > 1e-4  # the last coordinate reaches the output
    torch.testing.assert_close(a[1], base[1])  # a NaN in any coordinate: no value
    torch.testing.assert_close(net(x, t, cond=[0.5, 1.0, -1.0])[0], a[0])  # one vector for every item
    with pytest.raises(ValueError, match=r"one condition value \(3 numbers\) per item"):
        net(x, t, cond=torch.tensor([0.3, 0.4]))


def test_config_validation_of_latent_pcs():
    base = tiny("pixel", "rflow")
    with pytest.raises(ConfigError, match="latent_pcs needs model.space latent"):
        config_from_dict({**base, "model": {**base["model"], "condition": "latent_pcs"}})
    for bad in (0, 65):
        with pytest.raises(ConfigError, match="condition_components must be 1-64"):
            config_from_dict({**base, "model": {**base["model"], "condition_components": bad}})
    with pytest.raises(ConfigError, match="condition_grid must be null or 3 positive cell counts"):
        config_from_dict({**base, "model": {**base["model"], "condition_grid": [4, 0, 4]}})
    grid = config_from_dict({**base, "model": {**base["model"], "condition_grid": [4, 4, 4]}}).model.condition_grid
    assert grid == (4, 4, 4)


@pytest.mark.parametrize("grid", [None, (1, 2, 2)])
def test_a_latent_pcs_run_conditions_each_version_resumes_and_samples(data, tmp_path, monkeypatch, capsys, grid):  # noqa: F811
    """The record holds the training cases' latents' coordinates along their first principal axes (checked
    against numpy's SVD of latents encoded here); every training item gets its own version's coordinates
    (an augmented copy's differ from its case's), dropout drops whole vectors; resume is exact; sampling
    draws a vector per seed; --condition is refused with a one-line error."""
    root, ae = data
    values = tiny("latent", "rflow", str(ae), condition="latent_pcs", condition_components=2, condition_dropout=0.5)
    values["model"]["condition_grid"] = None if grid is None else list(grid)
    values["data"].update(flip_prob=1.0, zoom_prob=1.0, zoom_range=[0.8, 0.9], latent_augment_copies=1)
    values["train"]["epochs"] = 3
    seen = _record_training_conditions(monkeypatch)
    run, _, resumed, whole = train_split_and_whole(config_from_dict(values), root, tmp_path)
    assert resumed.step == whole.step == 6
    monkeypatch.undo()

    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    record = ckpt["geometry"]["condition"]
    assert record["name"] == "latent_pcs" and conditions.dims(record) == 2 and len(record["values"]) == 3
    bundle = load_bundle(run, device="cpu")
    split = json.loads((run / "split.json").read_text())
    latents = []
    for p in split["train"]:
        hu = torch.from_numpy(read_volume(p).array).permute(2, 1, 0)[None, None].float()
        with torch.no_grad():
            z = bundle.space.encode(hu_to_model(hu, WINDOW))[0].double().numpy()
        if grid is not None:  # each channel averaged to the grid's cells (numpy, by blocks)
            c, d, h, w = z.shape
            g0, g1, g2 = grid
            z = z.reshape(c, g0, d // g0, g1, h // g1, g2, w // g2).mean(axis=(2, 4, 6))
        latents.append(z.reshape(-1))
    centred = np.stack(latents) - np.mean(latents, axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(np.abs(record["values"]), np.abs(centred @ vt[:2].T), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ckpt["ema"]["cond_center"].numpy(), np.mean(record["values"], axis=0), atol=1e-6)
    np.testing.assert_allclose(ckpt["ema"]["cond_scale"].numpy(), np.std(record["values"], axis=0), rtol=1e-5)

    got = torch.cat(seen[:6])  # the split run's 6 steps: (2, 2) and (1, 2) per epoch
    assert got.shape == (9, 2)
    dropped = torch.isnan(got).all(1)
    assert torch.isnan(got).any(1).equal(dropped)  # a whole vector is dropped, never one coordinate
    assert 0 < int(dropped.sum()) < len(got)
    cases = np.asarray(record["values"])
    known = got[~dropped].numpy()
    # versions of a case: the case itself and its flipped and zoomed copy, whose coordinates differ
    assert any(np.abs(cases - v).sum(1).min() > 1e-3 for v in known)

    vols = sample(bundle, 2, steps=2, sampler="euler", seed=5)
    drawn = [v.meta["condition"]["value"] for v in vols]
    expected = [conditions.draw(record, s) for s in (5, 6)]
    assert [len(d) for d in drawn] == [2, 2] and np.allclose(drawn, expected, atol=1e-6)
    assert vols[0].meta["condition"]["draw"] == "bootstrap"  # the config's default
    # sample.condition_draw gaussian: each seed's vector from the Gaussian of the record
    gauss = sample(bundle, 2, steps=2, sampler="euler", seed=5, condition_draw="gaussian")
    got = [v.meta["condition"]["value"] for v in gauss]
    assert np.allclose(got, [conditions.draw(record, s, "gaussian") for s in (5, 6)], atol=1e-6)
    assert not np.allclose(got, expected, atol=1e-3) and gauss[0].meta["condition"]["draw"] == "gaussian"
    with pytest.raises(ConfigError, match="condition draw must be one of bootstrap, gaussian, got 'kde'"):
        sample(bundle, 1, steps=2, sampler="euler", condition_draw="kde")
    assert all(v.shape == SHAPE and np.isfinite(v.array).all() for v in vols)
    out = tmp_path / "cli"
    args = ["sample", "--run", str(run), "--n", "1", "--steps", "2", "--device", "cpu", "--no-progress"]
    assert main([*args, "--out", str(out)]) == 0
    case = json.loads((out / "manifest.json").read_text())["cases"][0]
    assert case["condition"]["name"] == "latent_pcs" and len(case["condition"]["value"]) == 2
    assert main([*args, "--condition-draw", "gaussian", "--out", str(tmp_path / "gauss")]) == 0
    case = json.loads((tmp_path / "gauss" / "manifest.json").read_text())["cases"][0]
    assert case["condition"]["draw"] == "gaussian"
    assert case["condition"]["value"] == pytest.approx(conditions.draw(record, 0, "gaussian"), abs=1e-5)
    capsys.readouterr()
    assert main([*args, "--condition", "0.3", "--out", str(tmp_path / "fixed")]) == 2
    err = capsys.readouterr().err
    assert "drawn per seed" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "fixed").exists()


def test_a_vector_conditions_jitter_moves_each_coordinate_by_its_own_sd(data, tmp_path, monkeypatch):  # noqa: F811
    """model.condition_jitter on latent_pcs: every coordinate of every item moves by share x that
    coordinate's SD x its own seeded normal draw (twice the share, twice the move)."""
    root, ae = data
    seen = _record_training_conditions(monkeypatch)

    (plain, record), (one, record1), (two, _) = _jitter_runs(
        tiny("latent", "rflow", str(ae), condition="latent_pcs", condition_components=2), root, tmp_path, seen
    )
    assert record1 == record and plain.shape == (6, 2)
    cases = torch.tensor(record["values"], dtype=torch.float32)
    assert all(float((cases - v).abs().sum(1).min()) < 1e-5 for v in plain)  # no jitter: a case's own vector
    moved = (one - plain) / torch.tensor(record["sd"])  # in each coordinate's own SD
    assert bool((moved.abs() > 1e-4).all()) and float(moved.abs().max()) < 5.0
    assert len(set(moved.flatten().tolist())) == moved.numel()  # one draw per coordinate, not per item
    torch.testing.assert_close(two - plain, 2 * (one - plain), atol=1e-4, rtol=1e-4)
