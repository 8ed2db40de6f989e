"""The residual refiner after a latent decoder (ctdiff.model.refiner, python -m ctdiff train-refiner):
its flow and sampler against a known answer, training, resume, the checkpoint it writes, and sampling
with it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ctdiff.cli import main
from ctdiff.errors import ConfigError, InputError, OverwriteError
from ctdiff.model import refiner as rf

# fixtures: a tiny latent rflow run (32x32x8 volumes, an autoencoder that downsamples 2x); one thread
from tests.ctdiff.test_noise_resynthesis import _one_thread, latent_run  # noqa: F401

SMALL = ["--channels", "8", "16", "--crop", "16", "--no-progress"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_sampler_draws_the_residual_an_oracle_velocity_defines():
    """Known answer: when every scaled residual band is N(0, 1) whatever the condition, the flow's
    exact velocity at (x_t, t) is x_t (1 - 2t) / ((1 - t)^2 + t^2). With it as the network, the drawn
    residual must have each band's SD equal to ``scale``, be independent of the condition's values,
    and come back in voxels through the inverse Haar transform."""
    arch = rf.RefinerArch(channels=(8, 16))
    scale = torch.tensor([0.5, 1.0, 2.0, 0.25, 1.5, 0.75, 3.0, 0.1])

    def oracle(inp, t1000):
        t = (t1000 / 1000.0).view(-1, 1, 1, 1, 1)
        x = inp[:, : arch.bands]
        return x * (1 - 2 * t) / ((1 - t) ** 2 + t**2)

    c = torch.full((1, 1, 16, 32, 32), 0.3)
    out = rf.refine(oracle, c, scale, arch, seeds=[4], steps=200)
    r = rf.to_bands(out - c, arch)[0].flatten(1)
    assert torch.allclose(r.std(dim=1), scale, rtol=0.06)
    assert torch.allclose(r.mean(dim=1), torch.zeros(8), atol=0.06 * float(scale.max()))
    # one seed, one draw; another seed, another
    again = rf.refine(oracle, c, scale, arch, seeds=[4], steps=200)
    assert torch.equal(out, again)
    assert not torch.equal(out, rf.refine(oracle, c, scale, arch, seeds=[5], steps=200))
    # a velocity of 0 leaves the initial noise: the wrong sign or step size would not give the SDs above
    zero = rf.refine(lambda inp, t: torch.zeros_like(inp[:, : arch.bands]), c, scale, arch, seeds=[4], steps=4)
    assert torch.allclose(rf.to_bands(zero - c, arch)[0].flatten(1).std(dim=1), scale, rtol=0.06)


def test_residual_scale_is_the_sd_of_each_haar_band():
    arch = rf.RefinerArch(channels=(8, 16))
    g = torch.Generator().manual_seed(0)
    x = torch.randn((3, 1, 8, 16, 16), generator=g)
    c = torch.zeros_like(x)
    sd = rf.residual_scale(x, c, arch)
    # an orthonormal transform keeps white noise white: every band has the voxels' SD
    assert sd.shape == (8,) and torch.allclose(sd, torch.full((8,), float(x.std())), rtol=0.15)
    # a residual of a constant 0.5 is all in the low-pass band (mean 0.5 * 2^1.5 per band voxel, SD 0)
    sd = rf.residual_scale(c + 0.5, c, arch)
    assert float(sd[0]) < 1e-5 and torch.all(sd[1:] < 1e-5)


def test_a_few_steps_on_one_batch_lower_the_flow_loss():
    arch = rf.RefinerArch(channels=(8, 16))
    torch.manual_seed(0)
    net = rf.build_net(arch)
    g = torch.Generator().manual_seed(1)
    x = torch.randn((2, 1, 8, 16, 16), generator=g) * 0.1
    c = torch.nn.functional.avg_pool3d(x, 3, stride=1, padding=1)
    scale = rf.residual_scale(x, c, arch)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = rf.flow_loss(net, x, c, scale, arch, torch.Generator().manual_seed(7))  # the same t and noise
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]


def test_the_flow_loss_draws_on_cpu_and_trains_on_the_volumes_device():
    # train-refiner --device cuda: the volumes and the network on the GPU, the crops' generator on CPU (its
    # t and noise were left there, to meet the GPU tensors in x_t); the meta device stands in for the GPU
    arch = rf.RefinerArch(channels=(8, 16))
    seen = []

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1, device="meta"))

        def forward(self, inp, t):
            seen.append((inp.device.type, t.device.type))
            return inp[:, : arch.bands] * self.w

    x = torch.zeros((2, 1, 8, 16, 16), device="meta")
    loss = rf.flow_loss(Net(), x, x, torch.ones(8, device="meta"), arch, torch.Generator().manual_seed(0))
    assert seen == [("meta", "meta")] and loss.device.type == "meta"


def test_a_refiner_needs_divisible_sides():
    arch = rf.RefinerArch(channels=(8, 16))
    assert arch.multiple == (4, 4, 4)
    record = {
        "format": rf.FORMAT,
        "arch": arch.to_dict(),
        "state": rf.build_net(arch).state_dict(),
        "scale": [1.0] * 8,
        "steps": 3,
    }
    model = rf.Refiner(record)
    with pytest.raises(ValueError, match="divisible by its downsampling: y 30"):
        model(torch.zeros((1, 1, 8, 30, 32)), [0])
    with pytest.raises(ValueError, match="not a refiner record"):
        rf.Refiner({**record, "format": "other"})


@pytest.fixture(scope="module")
def refined(latent_run, tmp_path_factory):  # noqa: F811
    run, data, _ = latent_run
    ckpt = run / "checkpoints" / "last.pt"
    out = tmp_path_factory.mktemp("refined") / "refined.pt"
    before = _sha(ckpt)
    with torch.random.fork_rng():
        code = main(
            ["train-refiner", "--model", str(ckpt), "--data", str(data), "--out", str(out), "--steps", "4"]
            + SMALL
            + ["--sample-steps", "3", "--threads", "1"]
        )
    assert code == 0
    assert _sha(ckpt) == before  # the input is never changed
    return ckpt, data, out


def test_train_refiner_writes_the_checkpoint_with_its_refiner(refined):
    ckpt, _, out = refined
    new = torch.load(out, map_location="cpu", weights_only=False)
    old = torch.load(ckpt, map_location="cpu", weights_only=False)
    rec = new["space"]["refiner"]
    assert rec["format"] == rf.FORMAT and rec["steps"] == 3 and len(rec["scale"]) == 8
    assert rec["arch"]["channels"] == [8, 16] and rec["training"]["steps"] == 4
    assert all(v.dtype == torch.float16 for v in rec["state"].values() if v.is_floating_point())
    # everything else is the input checkpoint's
    assert all(torch.equal(new["ema"][k], old["ema"][k]) for k in old["ema"])
    assert new["space"]["scale"] == old["space"]["scale"]
    history = Path(f"{out}.history.csv").read_text().splitlines()
    assert history[0] == "step,loss" and len(history) == 5
    assert not Path(f"{out}.refining.pt").exists()


def test_sampling_a_refined_checkpoint_refines_the_decoded_volume(refined, tmp_path):
    from ctdiff.diffusion.sample import load_bundle, sample

    ckpt, _, out = refined
    bundle = load_bundle(out, device="cpu")
    plain_bundle = load_bundle(ckpt, device="cpu")
    calls = []
    vols = sample(bundle, 2, sampler="euler", steps=2, seed=5, callback=lambda d, t: calls.append((d, t)))
    # 2 sampler + 3 refiner evaluations per volume, counted through
    assert calls[-1] == (10, 10) and len(calls) == 10
    assert vols[0].meta["refiner_steps"] == 3 and vols[0].meta["noise_resynthesis"] is False
    plain = sample(plain_bundle, 2, sampler="euler", steps=2, seed=5)
    assert vols[0].array.shape == plain[0].array.shape and np.array_equal(vols[0].affine, plain[0].affine)
    assert not np.allclose(vols[0].array, plain[0].array, atol=1.0)
    # without noise: the decoded estimate, as the checkpoint without a refiner gives it
    bare = sample(bundle, 2, sampler="euler", steps=2, seed=5, noise=False)
    assert bare[0].meta["refiner_steps"] is None
    assert np.array_equal(bare[0].array, plain[0].array)
    # a sample repeats itself; --refine-steps changes the draw; a bad value is refused
    again = sample(bundle, 1, sampler="euler", steps=2, seed=5)
    assert np.array_equal(again[0].array, vols[0].array)
    one = sample(bundle, 1, sampler="euler", steps=2, seed=5, refine_steps=1)
    assert one[0].meta["refiner_steps"] == 1 and not np.array_equal(one[0].array, vols[0].array)
    with pytest.raises(ConfigError, match="refiner steps must be an integer from 1 to 10000, got 0"):
        sample(bundle, 1, sampler="euler", steps=2, refine_steps=0)


def test_ctdiff_sample_cli_with_a_refiner(refined, tmp_path, capsys):
    _, _, out = refined
    dest = tmp_path / "s"
    args = ["sample", "--checkpoint", str(out), "--n", "1", "--steps", "2", "--threads", "1", "--no-progress"]
    assert main([*args, "--out", str(dest), "--refine-steps", "2"]) == 0
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["refiner_steps"] == 2
    assert main([*args, "--out", str(tmp_path / "bad"), "--refine-steps", "0"]) == 2
    assert "--refine-steps must be >= 1" in capsys.readouterr().err


def _interrupt_flow_loss_at(monkeypatch, n: int):
    """Make the ``n``-th flow-loss call raise KeyboardInterrupt (a Ctrl-C mid-run); returns the real loss."""
    real_loss, calls = rf.flow_loss, {"n": 0}

    def stop(*a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real_loss(*a, **k)

    monkeypatch.setattr(rf, "flow_loss", stop)
    return real_loss


def test_train_refiner_resumes_where_it_stopped(latent_run, tmp_path, monkeypatch):  # noqa: F811
    from ctdiff.diffusion import train_refiner as tr

    run, data, _ = latent_run
    ckpt = run / "checkpoints" / "last.pt"
    kw = dict(steps=4, channels=(8, 16), crop=16, checkpoint_every=1, progress=False)
    whole = tr.train_refiner(ckpt, data, tmp_path / "whole.pt", **kw)
    assert whole["steps"] == 4

    real_loss = _interrupt_flow_loss_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        tr.train_refiner(ckpt, data, tmp_path / "cut.pt", **kw)
    state = torch.load(tmp_path / "cut.pt.refining.pt", weights_only=True)
    assert state["step"] == 2 and not (tmp_path / "cut.pt").exists()
    monkeypatch.setattr(rf, "flow_loss", real_loss)
    with pytest.raises(OverwriteError, match="pass --resume or --force"):
        tr.train_refiner(ckpt, data, tmp_path / "cut.pt", **kw)
    tr.train_refiner(ckpt, data, tmp_path / "cut.pt", resume=True, **kw)
    a = torch.load(tmp_path / "whole.pt", weights_only=False)["space"]["refiner"]
    b = torch.load(tmp_path / "cut.pt", weights_only=False)["space"]["refiner"]
    # the resumed run repeats the crops, timesteps and noise of the one it continues
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])


@pytest.mark.filterwarnings("ignore:.*copying from a non-meta parameter")  # meta weights take no values
def test_a_resumed_train_refiner_keeps_the_optimizer_state_on_the_networks_device(latent_run, tmp_path, monkeypatch):  # noqa: F811
    # --resume --device cuda: the optimizer state was loaded while the network was still on CPU and stayed
    # there when the network moved (Adam then mixes devices); the meta device stands in for the GPU (moving
    # to it makes new parameters, so there the optimizer kept the old CPU ones: caught the same way)
    from ctdiff.diffusion import train_refiner as tr

    run, data, _ = latent_run
    ckpt = run / "checkpoints" / "last.pt"
    kw = dict(channels=(8, 16), crop=16, checkpoint_every=1, progress=False)
    _interrupt_flow_loss_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        tr.train_refiner(ckpt, data, tmp_path / "cut.pt", steps=2, **kw)
    assert torch.load(tmp_path / "cut.pt.refining.pt", weights_only=True)["opt"]["state"]  # Adam's moments saved

    class Stop(Exception):
        pass

    pairs = []

    class Recording(torch.optim.AdamW):
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    state = self.state[p]
                    pairs.extend((k, v.device.type, p.device.type) for k, v in state.items() if k != "step")
            raise Stop

    # a loss of the network's weights alone (the crops' draws are the test above's)
    monkeypatch.setattr(rf, "flow_loss", lambda net, *a, **k: sum(p.sum() for p in net.parameters()))
    monkeypatch.setattr(torch.optim, "AdamW", Recording)
    with pytest.raises(Stop):
        tr.train_refiner(ckpt, data, tmp_path / "cut.pt", steps=2, resume=True, device="meta", **kw)
    assert pairs and {k for k, _, _ in pairs} == {"exp_avg", "exp_avg_sq"}
    assert {(on, param) for _, on, param in pairs} == {("meta", "meta")}


def test_train_refiner_refuses_bad_inputs(latent_run, tmp_path):  # noqa: F811
    from ctdiff.diffusion import train_refiner as tr

    run, data, ae = latent_run
    ckpt = run / "checkpoints" / "last.pt"
    kw = dict(steps=1, channels=(8, 16), progress=False)
    with pytest.raises(InputError, match="is an autoencoder file"):
        tr.train_refiner(ae, data, tmp_path / "a.pt", crop=16, **kw)
    with pytest.raises(ConfigError, match="--crop 48 is larger than the volumes' 32 x 32"):
        tr.train_refiner(ckpt, data, tmp_path / "a.pt", crop=48, **kw)
    with pytest.raises(ConfigError, match="--crop 18 must be a multiple of 4"):
        tr.train_refiner(ckpt, data, tmp_path / "a.pt", crop=18, **kw)
    with pytest.raises(InputError, match="no unfinished refiner training to resume"):
        tr.train_refiner(ckpt, data, tmp_path / "a.pt", crop=16, resume=True, **kw)
    with pytest.raises(InputError, match="holds no NIfTI, .npy/.npz or DICOM volumes"):
        tr.train_refiner(ckpt, tmp_path, tmp_path / "a.pt", crop=16, **kw)
    (tmp_path / "taken.pt").write_text("x")
    with pytest.raises(OverwriteError, match="already exists"):
        tr.train_refiner(ckpt, data, tmp_path / "taken.pt", crop=16, **kw)
    with pytest.raises(ConfigError, match="is the input --model"):
        tr.train_refiner(ckpt, data, ckpt, crop=16, force=True, **kw)
    assert (
        main(
            [
                "train-refiner",
                "--model",
                str(ckpt),
                "--data",
                str(data),
                "--out",
                str(tmp_path / "b.pt"),
                "--ema",
                "nan",
            ]
        )
        == 2
    )


def test_the_apps_generate_form_samples_a_refined_checkpoint(refined, latent_run):  # noqa: F811
    from pages.components.sampling import generate

    run = latent_run[0]
    _, _, out = refined
    seen = []
    folder = generate(
        run,
        out,
        n=1,
        sampler="euler",
        steps=2,
        seed=0,
        overwrite=False,
        device="cpu",
        progress=lambda d, t: seen.append((d, t)),
    )
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["refiner_steps"] == 3 and manifest["noise_resynthesis"] is False
    assert seen[-1] == (5, 5)  # 2 sampler and 3 refiner evaluations
