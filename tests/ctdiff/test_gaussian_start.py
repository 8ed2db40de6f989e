"""The Gaussian start: the fit against numpy's eigendecomposition, the closed-form flow against an Euler
integration of the fitted Gaussian's exact velocity, the sampler's grid and evaluation count, and
``fit-start`` / ``sample --gaussian-start`` on a tiny trained rectified-flow run."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from ctdiff.cli import main
from ctdiff.config import config_from_dict
from ctdiff.data.io import write_nifti
from ctdiff.data.phantom import make_phantom
from ctdiff.diffusion import gaussian_start as gs
from ctdiff.diffusion.fit_start import fit_start
from ctdiff.diffusion.sample import load_bundle, sample
from ctdiff.diffusion.schedule import Diffusion, run_sampler
from ctdiff.errors import ConfigError, InputError, OverwriteError
from ctdiff.model.checkpoint import load_checkpoint
from ctdiff.training.train import train

SHAPE = (2, 2, 4, 4)  # (C, D, H, W): 64 dims


def synthetic_latents(n: int = 10, seed: int = 0) -> torch.Tensor:
    """n draws of an anisotropic Gaussian in SHAPE: three strong directions over a weak isotropic floor."""
    g = torch.Generator().manual_seed(seed)
    dims = int(np.prod(SHAPE))
    basis = torch.linalg.qr(torch.randn(dims, 3, generator=g, dtype=torch.float64))[0].T
    coef = torch.randn(n, 3, generator=g, dtype=torch.float64) * torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64)
    x = 0.5 + coef @ basis + 0.1 * torch.randn(n, dims, generator=g, dtype=torch.float64)
    return x.float().reshape(n, *SHAPE)


# ----------------------------------------------------------------------------------------- the fit
@pytest.mark.parametrize("k", [2, 9])
def test_fit_matches_numpys_eigendecomposition(k):
    x = synthetic_latents()
    rec = gs.fit(x, k)
    flat = x.reshape(len(x), -1).double().numpy()
    centred = flat - flat.mean(0)
    cov = centred.T @ centred / (len(x) - 1)
    eigval, eigvec = np.linalg.eigh(cov)
    eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
    np.testing.assert_allclose(rec["mean"].reshape(-1).numpy(), flat.mean(0), atol=1e-6)
    np.testing.assert_allclose(rec["variances"].numpy(), eigval[:k], rtol=1e-5)
    # the same subspace (signs are free): projectors agree to fp16 storage precision
    u = rec["components"].double().numpy()
    np.testing.assert_allclose(u.T @ u, eigvec[:, :k] @ eigvec[:, :k].T, atol=2e-3)
    # probabilistic PCA: what the components leave, spread over the other dims - k directions
    assert rec["residual_variance"] == pytest.approx((np.trace(cov) - eigval[:k].sum()) / (flat.shape[1] - k), rel=1e-5)
    assert rec["shape"] == list(SHAPE) and rec["n"] == 10


def test_fit_refuses_too_few_scans_components_and_nan():
    x = synthetic_latents(4)
    with pytest.raises(ValueError, match="between 1 and 3"):
        gs.fit(x, 4)
    with pytest.raises(ValueError, match="at least 2"):
        gs.fit(x[:1], None)
    bad = x.clone()
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        gs.fit(bad, 2)
    assert len(gs.fit(x, None)["variances"]) == 3  # None keeps n - 1


def test_check_record_names_what_is_wrong():
    rec = gs.fit(synthetic_latents(), 3)
    assert gs.check_record(rec) is None
    assert "format" in gs.check_record({**rec, "format": "other"})
    assert "shape" in gs.check_record({**rec, "shape": [2, 2, 4, 5]})
    assert "one variance" in gs.check_record({**rec, "variances": rec["variances"][:2]})
    assert "negative" in gs.check_record({**rec, "variances": -rec["variances"]})
    assert "incomplete" in gs.check_record({k: v for k, v in rec.items() if k != "mean"})
    assert "not a number" in gs.check_record({**rec, "residual_variance": "x"})
    assert "NaN" in gs.check_record({**rec, "residual_variance": float("nan")})


# ------------------------------------------------------------------------------- the closed-form flow
def test_start_at_level_one_is_the_noise_itself():
    rec = gs.fit(synthetic_latents(), 3)
    eps = torch.randn(5, *SHAPE, generator=torch.Generator().manual_seed(1))
    assert torch.equal(gs.start(rec, eps, 1.0), eps)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        gs.start(rec, eps, 0.0)
    with pytest.raises(ValueError, match="fitted to latents of shape"):
        gs.start(rec, torch.randn(1, 2, 2, 4, 8), 0.5)


@pytest.mark.parametrize("k", [3, 9])
def test_start_is_the_gaussians_flow_integrated_from_pure_noise(k):
    """Known answer: Euler steps of the fitted Gaussian's exact velocity from s = 1 land where the closed form
    puts x_s (the 1-D monotone map per eigendirection), to the integrator's O(1/steps) error."""
    rec = gs.fit(synthetic_latents(), k)
    eps = torch.randn(6, *SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for level in (0.9, 0.6, 0.2):
        x, steps = eps.clone(), 4000
        grid = torch.linspace(1.0, level, steps + 1, dtype=torch.float64)
        for s, s_next in zip(grid[:-1], grid[1:]):
            x = x + float(s - s_next) * gs.velocity(rec, x, float(s))  # dx/ds = -(x_0 - noise)
        closed = gs.start(rec, eps, level)
        scale = float(closed.std())
        assert float((x - closed).abs().max()) < 2e-3 * scale + 1e-4, level


def test_start_near_zero_has_the_fitted_covariance():
    rec = gs.fit(synthetic_latents(), 3)
    eps = torch.randn(20000, *SHAPE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x = gs.start(rec, eps, 1e-6).reshape(len(eps), -1)
    u = rec["components"].double()
    along = (x - x.mean(0)) @ u.T
    np.testing.assert_allclose(along.var(0).numpy(), rec["variances"].double().numpy(), rtol=0.05)
    np.testing.assert_allclose(x.mean(0).numpy(), rec["mean"].double().reshape(-1).numpy(), atol=0.05)


# ------------------------------------------------------------------------------------- the sampler
class OracleNet(torch.nn.Module):
    """The fitted Gaussian's exact rectified-flow velocity as a network (t in MONAI's integer timesteps)."""

    def __init__(self, record, timesteps: int = 1000):
        super().__init__()
        self.record, self.timesteps = record, timesteps

    def forward(self, x, t):
        s = float(t.reshape(-1)[0]) / self.timesteps
        return gs.velocity(self.record, x.double(), s).to(x.dtype)


def test_euler_from_a_gaussian_start_skips_the_grid_above_it_and_errs_less():
    rec = gs.fit(synthetic_latents(), 9)
    diffusion = Diffusion(config_from_dict({"diffusion": {"kind": "rflow"}}).diffusion, clip_sample=False)
    net, seeds = OracleNet(rec), [10, 11, 12]
    exact = gs.start(
        rec, torch.stack([torch.randn(SHAPE, generator=torch.Generator().manual_seed(s)) for s in seeds]), 1e-9
    )
    calls = []
    plain = run_sampler("euler", net, SHAPE, diffusion, 25, seeds, callback=lambda d, n: calls.append(n))
    assert calls[-1] == 25
    calls.clear()
    started = run_sampler(
        "euler", net, SHAPE, diffusion, 25, seeds, callback=lambda d, n: calls.append(n), gaussian_start=(rec, 0.6)
    )
    assert calls[-1] == 15 and len(calls) == 15  # 25 steps of 0.04: 1.0 ... 0.64 skipped
    # level 1: the same tensors as no start at all
    same = run_sampler("euler", net, SHAPE, diffusion, 25, seeds, gaussian_start=(rec, 1.0))
    assert torch.equal(same, plain)
    # with the exact velocity, starting where the flow is known exactly leaves less Euler error
    err_plain = float((plain.double() - exact.double()).abs().max())
    err_started = float((started.double() - exact.double()).abs().max())
    assert err_started < 0.7 * err_plain
    # a level between grid points hands over at the grid's next level down (0.59 -> 0.56: 14 steps)
    calls.clear()
    run_sampler(
        "euler", net, SHAPE, diffusion, 25, seeds, callback=lambda d, n: calls.append(n), gaussian_start=(rec, 0.59)
    )
    assert calls[-1] == 14
    with pytest.raises(ValueError, match="euler"):
        ddpm = Diffusion(config_from_dict({"diffusion": {"kind": "ddpm"}}).diffusion)
        run_sampler("ddpm", net, SHAPE, ddpm, 10, seeds, gaussian_start=(rec, 0.5))


@pytest.mark.parametrize(
    "values, message",
    [
        ({"diffusion": {"kind": "ddpm"}, "sample": {"gaussian_start": 0.5}}, "rflow"),
        ({"diffusion": {"kind": "rflow"}, "sample": {"gaussian_start": 0.0}}, r"\(0, 1\]"),
        ({"diffusion": {"kind": "rflow"}, "sample": {"gaussian_start": float("nan")}}, r"\(0, 1\]"),
        ({"diffusion": {"kind": "rflow"}, "sample": {"gaussian_start": 1.5}}, r"\(0, 1\]"),
    ],
)
def test_config_refuses_a_bad_gaussian_start(values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values)


# ------------------------------------------------------------------------------- fit-start and sample
CONFIG = {
    "name": "tiny-start",
    "data": {"pad_slices_to": 8, "hu_window": [-1000.0, 1000.0]},
    "model": {
        "space": "pixel",
        "channels": [4, 8],
        "block_kinds": ["3d", "3d"],
        "attention": [False, False],
        "mid_attention": False,
        "norm_groups": 4,
        "res_blocks": 1,
    },
    "diffusion": {"kind": "rflow", "timesteps": 100},
    "train": {"epochs": 1, "batch_size": 2, "lr": 2e-3, "warmup_steps": 1, "val_timesteps": 2, "preview_every": 0},
    "sample": {"steps": 10},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(data folder, trained rflow run) on five 16 x 12 x 6 phantoms (padded to 8 slices)."""
    torch.set_num_threads(1)
    data = tmp_path_factory.mktemp("data")
    for i in range(5):
        vol, _ = make_phantom(shape=(16, 12, 6), seed=i, noise_hu=10.0, fov_mm=(320.0, 300.0, 150.0))
        write_nifti(vol, data / f"case_{i}.nii.gz")
    run = tmp_path_factory.mktemp("run") / "run"
    train(config_from_dict(CONFIG), data, run, progress=False)
    return data, run


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fit_start_writes_a_copy_that_samples_from_the_start(tiny, tmp_path, capsys):
    data, run = tiny
    src = run / "checkpoints" / "last.pt"
    before = _sha(src)
    out = tmp_path / "start.pt"
    assert (
        main(
            [
                "fit-start",
                "--model",
                str(src),
                "--data",
                str(data),
                "--out",
                str(out),
                "--components",
                "3",
                "--level",
                "0.5",
                "--no-progress",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["components"] == 3 and summary["n"] == 5 and summary["level"] == 0.5
    assert _sha(src) == before  # the input is never changed
    ckpt = load_checkpoint(out)
    assert ckpt["config"]["sample"]["gaussian_start"] == 0.5
    assert ckpt["gaussian_start"]["shape"] == [1, 8, 12, 16]  # pixel space: the padded volume
    assert ckpt["gaussian_start"]["fitted_on"] == [f"case_{i}.nii.gz" for i in range(5)]
    # the mean is the training scans' mean in model units (pixel space encodes as the identity)
    bundle = load_bundle(out, device="cpu")
    assert bundle.gaussian_start is not None
    calls = []
    vols = sample(bundle, 2, "euler", 10, seed=7, callback=lambda d, n: calls.append(n))
    assert calls[-1] == 2 * 5  # 10 steps from 0.5: 5 network evaluations per volume
    assert vols[0].meta["gaussian_start"] == 0.5
    plain = sample(bundle, 2, "euler", 10, seed=7, gaussian_start=1.0)
    assert plain[0].meta["gaussian_start"] is None
    assert not np.array_equal(vols[0].array, plain[0].array)
    # the CLI: the manifest records the level; --gaussian-start 1 samples from pure noise
    folder = tmp_path / "samples"
    assert main(["sample", "--checkpoint", str(out), "--n", "1", "--out", str(folder), "--no-progress"]) == 0
    assert json.loads((folder / "manifest.json").read_text())["gaussian_start"] == 0.5


def test_fit_start_and_sample_refuse_bad_input_in_one_line(tiny, tmp_path, capsys):
    data, run = tiny
    src = run / "checkpoints" / "last.pt"
    out = tmp_path / "start.pt"
    with pytest.raises(ConfigError, match="between 1 and 4"):
        fit_start(src, data, out, components=5)
    with pytest.raises(ConfigError, match="is the input"):
        fit_start(src, data, src, components=2)
    out.write_text("not a checkpoint")
    with pytest.raises(OverwriteError, match="already exists"):
        fit_start(src, data, out, components=2)
    with pytest.raises(OverwriteError, match="not a ctdiff checkpoint"):
        fit_start(src, data, out, components=2, force=True)
    assert out.read_text() == "not a checkpoint"
    with pytest.raises(InputError):
        fit_start(src, tmp_path / "missing", tmp_path / "new.pt", components=2)
    # sampling a checkpoint that carries no Gaussian from a start: one line naming the checkpoint
    for level, expected in (("0.5", ["no fitted Gaussian", "last.pt"]), ("nan", ["(0, 1]"])):
        argv = ["sample", "--checkpoint", str(src), "--n", "1", "--gaussian-start", level]
        rc = main([*argv, "--out", str(tmp_path / "s"), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and all(e in err for e in expected) and len(err.splitlines()) == 1, err
    assert not (tmp_path / "s").exists()


def test_a_checkpoint_with_a_broken_start_record_is_refused_naming_the_file(tiny, tmp_path):
    data, run = tiny
    good = tmp_path / "start.pt"
    fit_start(run / "checkpoints" / "last.pt", data, good, components=2, level=0.6)
    ckpt = torch.load(good, weights_only=True)
    broken = tmp_path / "broken.pt"
    torch.save({**ckpt, "gaussian_start": {**ckpt["gaussian_start"], "shape": [1, 8, 12, 15]}}, broken)
    with pytest.raises(InputError, match="do not match its shape") as info:
        load_bundle(broken, device="cpu")
    assert "broken.pt" in str(info.value)


def test_a_grid_too_coarse_for_the_start_level_is_one_line(tiny, tmp_path):
    data, run = tiny
    out = tmp_path / "start.pt"
    fit_start(run / "checkpoints" / "last.pt", data, out, components=2, level=0.6)
    with pytest.raises(ConfigError, match="1-step grid.*more steps"):
        sample(load_bundle(out, device="cpu"), 1, "euler", 1, seed=0)
