"""Every space x every diffusion kind through the whole pipeline: train -> resume -> sample -> HU NIfTI
with the training affine; the checkpoint loads in `ctdiff sample` and the app's Generate form;
checkpoints from before spaces (the shipped demo model) still load as pixel space."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ctdiff.cli import main
from ctdiff.config import SAMPLERS, config_from_dict, load_config, saved_config_values
from ctdiff.data.io import read_volume, write_nifti
from ctdiff.data.phantom import make_phantom
from ctdiff.data.tensors import model_to_hu
from ctdiff.diffusion.sample import load_bundle, sample
from ctdiff.errors import ConfigError
from ctdiff.model.checkpoint import load_checkpoint
from ctdiff.model.spaces import LatentSpace, PixelSpace, WaveletSpace
from ctdiff.samplers import samplers_for
from ctdiff.training.train import train

SHAPE = (16, 16, 8)  # x, y, z


def tiny(space: str, kind: str, autoencoder: str | None = None, **model) -> dict:
    return {
        "name": f"tiny-{space}-{kind}",
        "data": {"val_fraction": 0.25, "hu_window": [-1000.0, 1000.0]},
        "model": {
            "channels": [8, 8],
            "block_kinds": ["3d", "3d"],
            "attention": [False, False],
            "mid_attention": False,
            "norm_groups": 4,
            "res_blocks": 1,
            "time_channels": 16,
            "space": space,
            "autoencoder": autoencoder,
            **model,
        },
        "diffusion": {"kind": kind, "timesteps": 100, "beta_schedule": "cosine", "prediction": "v_prediction"},
        "train": {
            "epochs": 2,
            "batch_size": 2,
            "lr": 2e-3,
            "warmup_steps": 1,
            "val_timesteps": 2,
            "preview_every": 0,
            "ema_decay": 0.9,
        },
        "sample": {"steps": 2, "decode_tile": [2, 4, 4]},  # latent: the 4x8x8 latent decodes in 4 windows
    }


def train_split_and_whole(cfg, root, tmp_path, split_at: int = 2):
    """Train ``cfg`` stopped after ``split_at`` steps and resumed (``tmp_path/run``), and straight through
    (``tmp_path/straight``); assert that resume is exact (the EMA weights agree). Returns (run, first,
    resumed, whole)."""
    run = tmp_path / "run"
    with torch.random.fork_rng():
        first = train(cfg, root, run, overrides=[f"train.max_steps={split_at}"], progress=False)
        resumed = train(None, None, run, resume=True, overrides=["train.max_steps=null"], progress=False)
    with torch.random.fork_rng():
        whole = train(cfg, root, tmp_path / "straight", progress=False)
    for (k, a), b in zip(resumed.ema.state_dict().items(), whole.ema.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=k)
    return run, first, resumed, whole


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Four 16x16x8 phantoms with an anisotropic, shifted affine, and a tiny autoencoder trained on them."""
    from ctdiff.model.autoencoder import train_autoencoder

    root = tmp_path_factory.mktemp("spaces-data")
    for i in range(4):
        vol, _ = make_phantom(shape=SHAPE, seed=i, noise_hu=10.0, fov_mm=(320.0, 300.0, 120.0))
        write_nifti(vol, root / f"case_{i}.nii.gz")
    ae = tmp_path_factory.mktemp("ae") / "ae"
    with torch.random.fork_rng():
        train_autoencoder(
            root,
            ae,
            config={
                "channels": [8, 8],
                "latent_channels": 2,
                "norm_groups": 4,
                "patch": [8, 16, 16],
                "disc_channels": 4,
                "disc_layers": 1,
                "steps": 2,
                "hu_window": [-1000.0, 1000.0],  # the runs' data.hu_window (tiny())
            },
            progress=False,
        )
    return root, ae / "autoencoder.pt"


@pytest.mark.parametrize("kind", ["ddpm", "rflow"])
@pytest.mark.parametrize("space", ["pixel", "wavelet", "latent"])
def test_train_resume_sample_every_space_and_kind(data, tmp_path, space, kind, capsys):
    root, ae = data
    values = tiny(space, kind, str(ae) if space == "latent" else None)
    cfg = config_from_dict(values)
    assert cfg.sample.sampler == ("euler" if kind == "rflow" else "ddpm")  # the kind's default sampler
    run = tmp_path / "run"
    with torch.random.fork_rng():  # stop after epoch 1 of 2, then resume
        first = train(cfg, root, run, overrides=["train.max_steps=2"], progress=False)
        resumed = train(None, None, run, resume=True, overrides=["train.max_steps=null"], progress=False)
    assert (first.step, resumed.step) == (2, 4) and resumed.epoch == 2
    with torch.random.fork_rng():
        whole = train(cfg, root, tmp_path / "straight", progress=False)
    for (k, a), b in zip(resumed.ema.state_dict().items(), whole.ema.state_dict().values()):  # resume is exact
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=k)

    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    if space == "latent":
        from ctdiff.model.autoencoder import sha256_file

        assert ckpt["space"]["autoencoder"]["sha256"] == sha256_file(ae) and ckpt["space"]["scale"] > 0
        ae.rename(ae.with_suffix(".moved"))  # the checkpoint carries the autoencoder: the file is not needed
    try:
        bundle = load_bundle(run, device="cpu")
        assert type(bundle.space) is {"pixel": PixelSpace, "wavelet": WaveletSpace, "latent": LatentSpace}[space]
        assert bundle.model.conv_in.in_channels == {"pixel": 1, "wavelet": 8, "latent": 2}[space]
        real = read_volume(root / "case_0.nii.gz")
        vols = sample(bundle, 2, steps=2, sampler=cfg.sample.sampler, seed=4)
        for v in vols:
            assert v.shape == SHAPE and np.isfinite(v.array).all()
            np.testing.assert_allclose(v.affine, real.affine, atol=1e-4)
            assert v.array.min() >= -1000.0 and v.array.max() <= 1000.0 and v.array.std() > 1.0
        assert np.abs(vols[0].array - vols[1].array).max() > 1.0

        out = tmp_path / "cli"
        assert (
            main(["sample", "--run", str(run), "--n", "1", "--steps", "2", "--out", str(out), "--device", "cpu"]) == 0
        )
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["sampler"] == cfg.sample.sampler
        assert manifest["config"]["space"] == space and manifest["config"]["diffusion_kind"] == kind
        written = read_volume(out / "case_000.nii.gz")
        assert written.shape == SHAPE
        np.testing.assert_allclose(written.affine, real.affine, atol=1e-4)
        wrong = "ddim" if kind == "rflow" else "euler"
        assert (
            main(
                [
                    "sample",
                    "--run",
                    str(run),
                    "--n",
                    "1",
                    "--sampler",
                    wrong,
                    "--out",
                    str(tmp_path / "w"),
                    "--device",
                    "cpu",
                ]
            )
            == 2
        )
        assert "does not run" in capsys.readouterr().err

        from pages.components.sampling import generate, sampler_names

        assert sampler_names(run) == samplers_for(kind) and sampler_names() == SAMPLERS
        folder = generate(
            run,
            run / "checkpoints" / "last.pt",
            n=1,
            sampler=cfg.sample.sampler,
            steps=2,
            seed=0,
            overwrite=False,
            device="cpu",
        )
        app_vol = read_volume(folder / "case_000.nii.gz")
        np.testing.assert_allclose(app_vol.affine, real.affine, atol=1e-4)
        with pytest.raises(ConfigError, match="does not run"):
            generate(run, run / "checkpoints" / "last.pt", n=1, sampler=wrong, steps=2, seed=0, overwrite=True)
    finally:
        if space == "latent":
            ae.with_suffix(".moved").rename(ae)


def test_latent_augment_copies_encode_augmented_versions_and_resume_exactly(data, tmp_path):
    """data.latent_augment_copies: a latent run encodes flipped/zoomed copies of its training cases
    besides the cases, keeps the scale of the un-augmented latents, draws a version per (epoch, case)
    and resumes exactly; the option is refused where it cannot act."""
    from ctdiff.training.train import CachedDataset

    root, ae = data
    values = tiny("latent", "rflow", str(ae))
    values["data"].update(flip_prob=1.0, zoom_prob=1.0, zoom_range=[0.8, 0.9], latent_augment_copies=3)
    values["train"]["epochs"] = 3
    cfg = config_from_dict(values)
    run = tmp_path / "run"
    with torch.random.fork_rng():
        train(cfg, root, run, overrides=["train.max_steps=2"], progress=False)
        resumed = train(None, None, run, resume=True, overrides=["train.max_steps=null"], progress=False)
    with torch.random.fork_rng():
        whole = train(cfg, root, tmp_path / "straight", progress=False)
        plain = train(
            config_from_dict(tiny("latent", "rflow", str(ae)) | {"train": values["train"]}),
            root,
            tmp_path / "plain",
            progress=False,
        )
    assert resumed.step == whole.step == plain.step == 6
    for (k, a), b in zip(resumed.ema.state_dict().items(), whole.ema.state_dict().values()):  # resume is exact
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=k)
    # the copies reached the model: the same run without them ends elsewhere
    assert any(
        (a - b).abs().max() > 1e-4 for a, b in zip(whole.ema.state_dict().values(), plain.ema.state_dict().values())
    )
    # the scale factor is the un-augmented latents' (the same as the run without copies)
    scale = load_checkpoint(run / "checkpoints" / "last.pt")["space"]["scale"]
    assert scale == load_checkpoint(tmp_path / "plain" / "checkpoints" / "last.pt")["space"]["scale"]

    # the version drawn is a pure function of (seed, epoch, case), and all versions get drawn
    versions = [[torch.full((1,), float(10 * i + k)) for k in range(4)] for i in range(2)]
    ds = CachedDataset(versions, seed=0)
    drawn = {int(ds[(e, 1)]) for e in range(40)}
    assert drawn == {10, 11, 12, 13} and ds[(5, 0)] is CachedDataset(versions, seed=0)[(5, 0)]
    assert [int(ds[(e, 0)]) for e in range(12)] != [int(CachedDataset(versions, seed=1)[(e, 0)]) for e in range(12)]

    pixel = tiny("pixel", "rflow")
    pixel["data"]["latent_augment_copies"] = 2
    with pytest.raises(ConfigError, match="latent_augment_copies applies to model.space latent only"):
        config_from_dict(pixel)
    values["data"].update(flip_prob=0.0, zoom_prob=0.0)
    with pytest.raises(ConfigError, match="the copies would be identical"):
        config_from_dict(values)
    values["data"].update(flip_prob=0.5, latent_augment_copies=-1)
    with pytest.raises(ConfigError, match=r"latent_augment_copies must be in \[0, 64\]"):
        config_from_dict(values)


def test_band_scaled_wavelet_space_is_lossless_unit_variance_and_travels_in_the_checkpoint(data, tmp_path):
    """wavelet_scale band: each sub-band divided by its training-set SD (the detail bands of CT are
    ~100x smaller than the low-pass); exact round trip; the scales are fitted once by a new run,
    kept by resume, carried by the checkpoint and used by sampling, which must not clip."""
    root, _ = data
    rng = torch.Generator().manual_seed(0)
    ramp = torch.linspace(-1, 1, 16).view(1, 1, 1, 16)  # smooth content + fine noise, as CT
    vols = [(ramp * (i + 1) / 3 + 0.05 * torch.randn((1, 8, 16, 16), generator=rng)).clamp(-1, 1) for i in range(3)]
    space = WaveletSpace((1, 1, 1), "band")
    assert space.needs_fit and not space.clip_sample
    with pytest.raises(ValueError, match="not fitted"):
        space.encode(vols[0][None])
    scale = space.fit_band_scale(vols)
    z = torch.cat([space.encode(v[None].double()) for v in vols])
    torch.testing.assert_close(z.transpose(0, 1).flatten(1).std(dim=1), torch.ones(8, dtype=torch.float64))
    torch.testing.assert_close(space.decode(z), torch.stack(vols).double(), rtol=0, atol=1e-6)
    assert len(scale) == 8 and max(scale) > 5 * min(scale)  # the low-pass band is the big one

    cfg = config_from_dict(tiny("wavelet", "ddpm", wavelet_scale="band"))
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.pt"
    with torch.random.fork_rng():
        train(cfg, root, run, overrides=["train.max_steps=2"], progress=False)
        ckpt = load_checkpoint(last)
        assert ckpt["space"]["scale_mode"] == "band" and len(ckpt["space"]["band_scale"]) == 8
        # mark the stored scales: resume must restore them from the checkpoint, never refit
        fitted = [2.0 * v for v in ckpt["space"]["band_scale"]]
        ckpt["space"]["band_scale"] = fitted
        torch.save(ckpt, last)
        train(None, None, run, resume=True, overrides=["train.max_steps=null"], progress=False)
    ckpt = load_checkpoint(last)
    assert ckpt["step"] == 4 and ckpt["space"]["band_scale"] == pytest.approx(fitted)
    bundle = load_bundle(last, device="cpu")
    assert bundle.space.scale.flatten().tolist() == pytest.approx(fitted) and not bundle.diffusion.clip_sample
    vols = sample(bundle, 1, steps=2, sampler="ddpm", seed=1)
    assert vols[0].shape == SHAPE and np.isfinite(vols[0].array).all()

    lowpass = config_from_dict(tiny("wavelet", "ddpm"))  # the default: checkpoints as before
    assert lowpass.model.wavelet_scale == "lowpass"
    assert WaveletSpace((1, 1, 1)).state() == {"kind": "wavelet", "levels": [1, 1, 1]}
    with pytest.raises(ConfigError, match="wavelet_scale"):
        config_from_dict(tiny("wavelet", "ddpm", wavelet_scale="per-band"))


def test_an_x0_prediction_wavelet_run_trains_resumes_exactly_and_every_sampler_reads_x0(data, tmp_path):
    """diffusion.prediction sample (WDM's recipe: DDPM on the Haar sub-bands, the network predicting
    x_0) through train -> resume -> sample; the checkpoint keeps the prediction and each diffusers
    sampler is built with it, so its step reads the output as x_0."""
    root, _ = data
    values = tiny("wavelet", "ddpm")
    values["diffusion"]["prediction"] = "sample"
    cfg = config_from_dict(values)
    run, first, resumed, whole = train_split_and_whole(cfg, root, tmp_path)
    assert (first.step, resumed.step) == (2, 4)
    bundle = load_bundle(run, device="cpu")
    assert bundle.diffusion.prediction == "sample" and bundle.diffusion.clip_sample  # lowpass bands stay in [-1, 1]
    for name in ("ddpm", "ddim", "dpmpp"):
        assert bundle.diffusion.scheduler(name).config.prediction_type == "sample"
    vols = sample(bundle, 2, steps=3, sampler="ddim", seed=4)
    assert all(v.shape == SHAPE and np.isfinite(v.array).all() for v in vols)
    assert np.abs(vols[0].array - vols[1].array).max() > 1.0


def test_a_pyramid_noise_run_trains_resumes_exactly_and_samples(data, tmp_path, monkeypatch):
    """diffusion.noise pyramid through train -> resume -> sample: training steps, validation and the
    sampler draw pyramid noise with the configured discount, resume is exact, the samples are HU volumes."""
    from ctdiff.diffusion import schedule

    calls = []
    real_pyramid = schedule.pyramid_noise

    def recording(shape, generator, discount):
        calls.append((tuple(shape), discount))
        return real_pyramid(shape, generator, discount)

    monkeypatch.setattr(schedule, "pyramid_noise", recording)
    root, ae = data
    values = tiny("latent", "rflow", str(ae))
    values["diffusion"] |= {"noise": "pyramid", "noise_discount": 0.6}
    cfg = config_from_dict(values)
    run, first, resumed, whole = train_split_and_whole(cfg, root, tmp_path)
    assert (first.step, resumed.step) == (2, 4)
    # each epoch: a batch of 2 latents (2 channels, 4 x 8 x 8), one of 1 (3 training cases), then the
    # validation case at 2 timesteps; 2 epochs in the split run and 2 in the straight one
    latent = (2, 4, 8, 8)
    assert calls == [((2, *latent), 0.6), ((1, *latent), 0.6), ((2, *latent), 0.6)] * 4
    bundle = load_bundle(run, device="cpu")
    assert bundle.diffusion.cfg.noise == "pyramid" and bundle.diffusion.cfg.noise_discount == 0.6
    calls.clear()
    vols = sample(bundle, 2, steps=2, sampler="euler", seed=4)
    assert calls == [(latent, 0.6)] * 2  # one start per seed
    assert vols[0].meta["config"]["source_noise"] == "pyramid"  # the manifest says how it was drawn
    assert all(v.shape == SHAPE and np.isfinite(v.array).all() for v in vols)
    assert np.abs(vols[0].array - vols[1].array).max() > 1.0
    with pytest.raises(ConfigError, match="Gaussian start needs white source noise"):
        from ctdiff.diffusion.sample import check_gaussian_start

        check_gaussian_start(bundle, "euler", 25, 0.8)


def test_config_validation_of_spaces_and_kinds():
    base = tiny("pixel", "ddpm")
    with pytest.raises(ConfigError, match="model.space must be one of"):
        config_from_dict({**base, "model": {**base["model"], "space": "voxel"}})
    with pytest.raises(ConfigError, match="wavelet_levels entries must be 0-2"):
        config_from_dict({**base, "model": {**base["model"], "space": "wavelet", "wavelet_levels": [3, 1, 1]}})
    with pytest.raises(ConfigError, match="diffusion.kind must be one of"):
        config_from_dict({**base, "diffusion": {"kind": "sde"}})
    with pytest.raises(ConfigError, match="sample.sampler: sampler 'ddim' does not run diffusion.kind=rflow"):
        config_from_dict({**base, "diffusion": {"kind": "rflow"}, "sample": {"sampler": "ddim"}})
    with pytest.raises(ConfigError, match="diffusion.time_sampling must be one of"):
        config_from_dict({**base, "diffusion": {"kind": "rflow", "time_sampling": "beta"}})
    with pytest.raises(ConfigError, match="time_sampling 'logit-normal' needs diffusion.kind rflow"):
        config_from_dict({**base, "diffusion": {"kind": "ddpm", "time_sampling": "logit-normal"}})
    for bad_scale in (0.0, float("nan")):
        with pytest.raises(ConfigError, match="diffusion.time_scale must be a finite number > 0"):
            config_from_dict({**base, "diffusion": {"kind": "rflow", "time_scale": bad_scale}})
    with pytest.raises(ConfigError, match="diffusion.time_loc must be a finite number"):
        config_from_dict({**base, "diffusion": {"kind": "rflow", "time_loc": float("inf")}})
    with pytest.raises(ConfigError, match="diffusion.noise must be one of"):
        config_from_dict({**base, "diffusion": {"kind": "rflow", "noise": "blue"}})
    with pytest.raises(ConfigError, match="diffusion.noise 'pyramid' needs diffusion.kind rflow"):
        config_from_dict({**base, "diffusion": {"kind": "ddpm", "noise": "pyramid"}})
    for bad_discount in (0.0, 1.0, float("nan")):
        with pytest.raises(ConfigError, match=r"diffusion.noise_discount must be a number in \(0, 1\)"):
            config_from_dict({**base, "diffusion": {"kind": "rflow", "noise_discount": bad_discount}})
    with pytest.raises(ConfigError, match="Gaussian start needs white source noise"):
        config_from_dict(
            {**base, "diffusion": {"kind": "rflow", "noise": "pyramid"}, "sample": {"gaussian_start": 0.8}}
        )
    # a saved ddpm config switched to rflow by --set gets rflow's default sampler
    cfg = config_from_dict(config_from_dict(base).to_dict() | {"diffusion": {"kind": "rflow"}})
    assert (cfg.sample.sampler, cfg.train.preview_sampler) == ("euler", "euler")


def test_defaults_are_the_benchmarks_pick_and_saved_configs_keep_what_they_meant():
    """Latent + rflow with Euler, 25 steps, is what a config that leaves them out gets (docs/benchmarks.md,
    benchmark a); a checkpoint saved before model.space / diffusion.kind existed is pixel + DDPM."""
    cfg = config_from_dict({})
    assert (cfg.model.space, cfg.diffusion.kind) == ("latent", "rflow")
    assert (cfg.sample.sampler, cfg.sample.steps, cfg.train.preview_sampler) == ("euler", 25, "euler")
    ddpm = config_from_dict({"diffusion": {"kind": "ddpm"}})
    assert (ddpm.sample.sampler, ddpm.sample.steps) == ("ddpm", 50)
    assert config_from_dict({"sample": {"steps": 7}}).sample.steps == 7  # a given value stays
    old = config_from_dict(saved_config_values({"model": {"res_blocks": 3}, "diffusion": {"timesteps": 10}}))
    assert (old.model.space, old.diffusion.kind, old.sample.sampler) == ("pixel", "ddpm", "ddpm")
    assert (old.model.res_blocks, old.diffusion.timesteps) == (3, 10)
    assert saved_config_values({})["model"] == {"space": "pixel"}
    kept = saved_config_values({"model": {"space": "wavelet"}, "diffusion": {"kind": "rflow"}})
    assert (kept["model"]["space"], kept["diffusion"]["kind"]) == ("wavelet", "rflow")


def test_a_latent_run_without_an_autoencoder_trains_its_own_first_and_resumes_in_either_stage(
    data, tmp_path, monkeypatch, capsys
):
    """model.autoencoder null: train trains one in RUN/autoencoder on the run's own split, then the
    diffusion; Ctrl-C in the autoencoder stage saves it and --resume finishes it exactly, then trains
    the diffusion; the checkpoints carry that autoencoder, and resuming with the config file again works."""
    from ctdiff.model import autoencoder as ae_module
    from ctdiff.model.autoencoder import load_autoencoder_file, sha256_file

    root, _ = data
    values = tiny("latent", "rflow", None)
    values["train"]["autoencoder_steps"] = 3
    cfg = config_from_dict(values)
    run, straight = tmp_path / "run", tmp_path / "straight"
    real_step = ae_module.AutoencoderTrainer.train_step

    def stop_at_two(self, x):
        if self.step == 2:
            raise KeyboardInterrupt
        return real_step(self, x)

    monkeypatch.setattr(ae_module.AutoencoderTrainer, "train_step", stop_at_two)
    with torch.random.fork_rng(), pytest.raises(KeyboardInterrupt):
        train(cfg, root, run, progress=False)
    assert f"resume with: python -m ctdiff train --out {run} --resume" in capsys.readouterr().err
    own = run / "autoencoder" / "autoencoder.pt"
    assert load_autoencoder_file(own)["step"] == 2 and not (run / "checkpoints" / "last.pt").exists()
    monkeypatch.setattr(ae_module.AutoencoderTrainer, "train_step", real_step)
    with torch.random.fork_rng():
        resumed = train(None, None, run, resume=True, overrides=["train.max_steps=2"], progress=False)
    assert resumed.step == 2
    with torch.random.fork_rng():
        train(cfg, root, straight, progress=False)  # the same, never interrupted
    a, b = load_autoencoder_file(own), load_autoencoder_file(straight / "autoencoder" / "autoencoder.pt")
    assert a["step"] == b["step"] == 3
    for k, v in a["autoencoder"].items():  # the autoencoder's resume is exact
        torch.testing.assert_close(v, b["autoencoder"][k], rtol=0, atol=1e-6, msg=k)
    # the default discriminator does not fit 8-slice patches: the run's own lowers it (a one-line note)
    assert a["config"]["disc_layers"] == 1 and a["config"]["hu_window"] == [-1000.0, 1000.0]
    split = json.loads((run / "split.json").read_text())
    assert (a["split"]["train"], a["split"]["val"]) == (split["train"], split["val"])  # the run's own split
    assert json.loads((run / "autoencoder" / "eval.json").read_text())["step"] == 3
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["space"]["autoencoder"]["sha256"] == sha256_file(own)
    assert ckpt["config"]["model"]["autoencoder"] == str(own)
    assert load_config(run / "config.yaml").model.autoencoder == str(own)
    # resuming the diffusion with the run's config file again (autoencoder: null) continues it
    with torch.random.fork_rng():
        more = train(cfg, None, run, resume=True, overrides=["train.max_steps=null"], progress=False)
    assert more.step == 4 and load_autoencoder_file(own)["step"] == 3  # the autoencoder was not retrained
    assert isinstance(load_bundle(run, device="cpu").space, LatentSpace)


def test_a_multi_process_latent_run_needs_its_autoencoder_named(data, tmp_path):
    from ctdiff.distributed import DistInfo
    from ctdiff.training.train import _train_own_autoencoder

    info = DistInfo(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    with pytest.raises(ConfigError, match="train it with 'python -m ctdiff train-autoencoder'"):
        _train_own_autoencoder(config_from_dict({}), tmp_path / "run", ["a"], [], info, progress=False)
    assert not (tmp_path / "run").exists()


def test_wavelet_shape_mismatch_is_one_line(data, tmp_path):
    root, _ = data
    cfg = config_from_dict(
        tiny("wavelet", "ddpm", wavelet_levels=[2, 1, 1])
    )  # 8 slices / 4 = 2, then / 2 by the U-Net: ok
    with torch.random.fork_rng():
        train(
            config_from_dict({**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "max_steps": 1}}),
            root,
            tmp_path / "ok",
            progress=False,
        )
    bad = tiny(
        "wavelet",
        "ddpm",
        wavelet_levels=[2, 1, 1],
        channels=[8, 8, 8],
        block_kinds=["3d", "3d", "3d"],
        attention=[False, False, False],
    )  # 2 slices cannot halve twice more
    with pytest.raises(ConfigError, match="along z"):
        train(config_from_dict(bad), root, tmp_path / "bad", progress=False)


LEGACY = Path(__file__).resolve().parents[1] / "data" / "pixel-demo-64-before-spaces.pt"


def test_old_pixel_checkpoint_is_pixel_space_and_loads(tmp_path):
    # the 64x64x32 demo model shipped before spaces existed (tests/data/README.md)
    ckpt = load_checkpoint(LEGACY)
    assert "space" not in ckpt and "space" not in ckpt["config"]["model"]  # written before spaces existed
    bundle = load_bundle(LEGACY, device="cpu")
    assert isinstance(bundle.space, PixelSpace) and bundle.diffusion.kind == "ddpm" and bundle.diffusion.clip_sample
    assert bundle.config.sample.sampler in samplers_for("ddpm")
    # sampling maps [-1, 1] back to HU with MONAI's ScaleIntensityRange now: in this checkpoint's
    # window it gives the HU the formula it was trained and shipped with gave, bit for bit
    window = bundle.config.data.hu_window
    x = torch.rand(4096, generator=torch.Generator().manual_seed(0)) * 2.4 - 1.2
    lo, hi = window
    torch.testing.assert_close(model_to_hu(x, window), (x.clamp(-1, 1) + 1.0) / 2.0 * (hi - lo) + lo, rtol=0, atol=0)


def test_a_latent_rflow_run_exports_as_demo_assets_without_machine_paths(data, tmp_path):
    """The demo model may be latent: export_assets ships the carried autoencoder named by its file name
    and sha256 (not this machine's path), EMA weights in fp16, and the Euler sampler as the default."""
    from ctdiff_app.demo import export_assets

    root, ae = data
    run = tmp_path / "run"
    with torch.random.fork_rng():
        train(config_from_dict(tiny("latent", "rflow", str(ae))), root, run, progress=False)
    cohort = {"n": 4, "seed": 0, "shape": list(SHAPE), "noise_hu": 10.0}
    tiny_export = dict(n_samples=1, sampler="euler", steps=2, with_report=False)
    out = export_assets(run, cohort, out=tmp_path / "assets", **tiny_export)
    ckpt = load_checkpoint(out / "model.pt")
    record = ckpt["space"]["autoencoder"]
    assert record["path"] == "autoencoder.pt" == ckpt["config"]["model"]["autoencoder"]
    assert str(tmp_path) not in json.dumps(ckpt["config"]) + (out / "run" / "config.yaml").read_text()
    assert all(v.dtype == torch.float16 for v in ckpt["ema"].values() if v.is_floating_point())
    assert all(v.dtype == torch.float32 for v in record["state"].values() if v.is_floating_point())
    bundle = load_bundle(out / "model.pt", device="cpu")  # the autoencoder file is not needed
    assert isinstance(bundle.space, LatentSpace) and bundle.config.sample.sampler == "euler"
    assert bundle.config.sample.steps == 2
    written = read_volume(out / "samples" / "case_000.nii.gz")
    assert written.shape == SHAPE and np.isfinite(written.array).all() and written.array.std() > 1.0
    assert json.loads((out / "assets.json").read_text())["model"]["source_checkpoint"] == "best.pt"
    # resample_assets draws the same samples again from the shipped model, as assets.json records them
    from ctdiff_app.demo import resample_assets

    info_before, model_before = (out / "assets.json").read_bytes(), (out / "model.pt").read_bytes()
    (out / "samples" / "case_000.nii.gz").unlink()
    assert resample_assets(out) == out / "samples"
    again = read_volume(out / "samples" / "case_000.nii.gz")
    np.testing.assert_array_equal(again.array, written.array)
    assert (out / "assets.json").read_bytes() == info_before and (out / "model.pt").read_bytes() == model_before
    # checkpoint=: ship another checkpoint of the run (here last.pt)
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    other = export_assets(
        run, cohort, out=tmp_path / "assets-last", checkpoint=run / "checkpoints" / "last.pt", **tiny_export
    )
    info = json.loads((other / "assets.json").read_text())["model"]
    assert info["source_checkpoint"] == "last.pt" and info["trained_steps"] == last["step"]
    shipped = load_checkpoint(other / "model.pt")["ema"]
    for k, v in last["ema"].items():
        if v.is_floating_point():
            torch.testing.assert_close(shipped[k], v.to(torch.float16), rtol=0, atol=0, msg=k)
    # a tuned decoder (tune-decoder) and a fitted noise model name the volumes they used: by file name
    from ctdiff.diffusion.tune_decoder import tune_decoder
    from ctdiff_app.demo import _without_machine_paths

    tune_decoder(run / "checkpoints" / "last.pt", root, tmp_path / "tuned.pt", steps=1, progress=False)
    tuned = export_assets(run, cohort, out=tmp_path / "assets-tuned", checkpoint=tmp_path / "tuned.pt", **tiny_export)
    record = load_checkpoint(tuned / "model.pt")["space"]["autoencoder"]
    assert record["decoder_tuning"]["data"] == sorted(p.name for p in root.glob("*.nii.gz"))
    text = json.dumps({k: v for k, v in record.items() if k != "state"})
    assert str(root) not in text and str(tmp_path) not in text and str(ae) not in text, text
    noisy = {"path": str(ae), "noise_model": {"sd_hu": 3.0, "fitted_on": [str(root / "case_0.nii.gz")]}}
    assert _without_machine_paths(noisy) == {
        "path": ae.name,
        "noise_model": {"sd_hu": 3.0, "fitted_on": ["case_0.nii.gz"]},
    }
    # a Gaussian start (fit-start) travels with the export, and the shipped samples start from it
    from ctdiff.diffusion.fit_start import fit_start

    fit_start(run / "checkpoints" / "last.pt", root, tmp_path / "start.pt", components=2, level=0.6)
    started = export_assets(run, cohort, out=tmp_path / "assets-start", checkpoint=tmp_path / "start.pt", **tiny_export)
    shipped_start = load_bundle(started / "model.pt", device="cpu")
    assert shipped_start.gaussian_start["fitted_on"] == sorted(p.name for p in root.glob("*.nii.gz"))
    assert shipped_start.config.sample.gaussian_start == 0.6
    # 2 Euler steps (levels 1 and 0.5): the start hands over at 0.5
    assert json.loads((started / "samples" / "manifest.json").read_text())["gaussian_start"] == 0.5
    # a spread correction (fit-spread) travels with the export too, and the shipped samples are corrected
    from ctdiff.diffusion.fit_spread import fit_spread

    fit_spread(run / "checkpoints" / "last.pt", root, tmp_path / "spread.pt", components=2, samples=3)
    spread = export_assets(
        run, cohort, out=tmp_path / "assets-spread", checkpoint=tmp_path / "spread.pt", **tiny_export
    )
    shipped_spread = load_bundle(spread / "model.pt", device="cpu")
    assert shipped_spread.spread["fitted_on"] == sorted(p.name for p in root.glob("*.nii.gz"))
    assert shipped_spread.config.sample.spread_correction is True
    assert json.loads((spread / "samples" / "manifest.json").read_text())["spread_correction"] is True
    # and the body histogram (fit-histogram): the shipped samples are matched to it
    from ctdiff.diffusion.fit_histogram import fit_histogram

    fit_histogram(run / "checkpoints" / "last.pt", root, tmp_path / "hist.pt")
    hist = export_assets(run, cohort, out=tmp_path / "assets-hist", checkpoint=tmp_path / "hist.pt", **tiny_export)
    shipped_hist = load_bundle(hist / "model.pt", device="cpu")
    assert shipped_hist.histogram["fitted_on"] == sorted(p.name for p in root.glob("*.nii.gz"))
    assert shipped_hist.config.sample.histogram_match is True
    assert json.loads((hist / "samples" / "manifest.json").read_text())["histogram_match"] is True
    # sample_settings: the shipped config's other sample keys, and the samples drawn with them
    kept = export_assets(
        run, cohort, out=tmp_path / "assets-kept", sample_settings={"keep_slices": 4, "z_margin": 0}, **tiny_export
    )
    assert load_bundle(kept / "model.pt", device="cpu").config.sample.keep_slices == 4
    assert json.loads((kept / "assets.json").read_text())["samples"] == {
        "n": 1,
        "sampler": "euler",
        "steps": 2,
        "seed": 1000,
        "keep_slices": 4,
        "z_margin": 0,
    }
    half = read_volume(kept / "samples" / "case_000.nii.gz")
    assert half.shape == (16, 16, 4) and np.allclose(half.affine[:3, 3], (written.affine @ [0, 0, 2, 1])[:3])
    np.testing.assert_array_equal(half.array, written.array[:, :, 2:6])  # the same draw, its middle kept
    with pytest.raises(ConfigError, match="sample.keep_slices must be >= 1"):
        export_assets(run, cohort, out=tmp_path / "assets-bad", sample_settings={"keep_slices": 0}, **tiny_export)
    assert not (tmp_path / "assets-bad").exists()


def test_a_latent_run_needs_its_autoencoders_hu_window(data, tmp_path):
    """The autoencoder learned [-1, 1] as its own window: a run with another data.hu_window is refused
    in one line naming both windows and the fix, before the run dir is written."""
    root, ae = data
    values = tiny("latent", "rflow", str(ae))
    values["data"]["hu_window"] = [-1024.0, 1500.0]
    with pytest.raises(ConfigError) as info:
        train(config_from_dict(values), root, tmp_path / "run", progress=False)
    msg = str(info.value)
    assert "[-1000.0, 1000.0]" in msg and "[-1024.0, 1500.0]" in msg and "--set data.hu_window=[-1000,1000]" in msg
    assert "\n" not in msg and not (tmp_path / "run").exists()
