"""benchmarks/latent_diversity.py: the first-axis gain of an oracle (the exact Gaussian posterior mean)
is the Gaussian gain the script prints beside it; spreads and ratios; a run on the demo model."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "ctdiff_app" / "demo" / "assets" / "model.pt"


@pytest.fixture(scope="module")
def ld():
    return runpy.run_path(str(REPO / "benchmarks" / "latent_diversity.py"), run_name="latent_diversity")


def _pattern(shape=(2, 4, 8, 8)) -> torch.Tensor:
    """A unit-length latent direction, constant inside each 4 x 4 x 4 grid cell (1 x 2 x 2 latent voxels)."""
    g = torch.Generator().manual_seed(3)
    cells = torch.randn(1, shape[0], 4, 4, 4, generator=g)
    w = (
        cells.repeat_interleave(shape[1] // 4, 2)
        .repeat_interleave(shape[2] // 4, 3)
        .repeat_interleave(shape[3] // 4, 4)
    )
    return (w / w.norm())[0]


class Oracle:
    """The exact rectified-flow velocity for latents a * w with a ~ N(0, sigma^2): its x_0 estimate is
    the posterior mean E[a | x_s] w = (1-s) sigma^2 / ((1-s)^2 sigma^2 + s^2) <w, x_s> w."""

    def __init__(self, w: torch.Tensor, sigma: float, timesteps: int = 1000):
        self.w, self.sigma2, self.T = w, sigma**2, timesteps

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = (t.double() / self.T).view(-1, 1, 1, 1, 1)
        proj = (x.double() * self.w).sum(dim=(1, 2, 3, 4), keepdim=True)
        x0 = (1 - s) * self.sigma2 / ((1 - s) ** 2 * self.sigma2 + s**2) * proj * self.w
        return ((x0 - x.double()) / s).float()


@pytest.mark.parametrize("s", [0.97, 0.9, 0.7])
def test_oracle_gain_is_the_gaussian_posteriors(ld, s):
    w, sigma = _pattern(), 6.0
    a = torch.randn(600, generator=torch.Generator().manual_seed(0)).double() * sigma
    latents = (a.view(-1, 1, 1, 1, 1) * w).float()
    mean, axes = ld["principal_axes"](ld["coarse"](latents), 1)
    lam = float((((ld["coarse"](latents) - mean) @ axes[0]) ** 2).mean())
    m = ld["elements_per_cell"](tuple(latents.shape[1:]))
    assert m == 4.0  # 4 x 8 x 8 latent voxels per channel in 4 x 4 x 4 cells of 1 x 2 x 2
    want = ld["gaussian_gain"](s, lam, m)
    # the same gain from sigma alone: SNR = (1-s)^2 sigma^2 / s^2 for a unit-length direction
    snr = (1 - s) ** 2 * sigma**2 / s**2
    assert want == pytest.approx(snr / (1 + snr), rel=0.05)
    got = ld["axis_gain"](Oracle(w, sigma), latents, s, mean, axes[0], 1000)
    assert got == pytest.approx(want, abs=0.04)

    # a network that answers the mean keeps nothing; one that returns x_s unchanged keeps (1 - s)
    def answers_zero(x, t):  # x_0 estimate x + s v = 0 for every input
        return -x / (t.float() / 1000).view(-1, 1, 1, 1, 1)

    assert ld["axis_gain"](answers_zero, latents, s, mean, axes[0], 1000) == pytest.approx(0.0, abs=1e-6)
    unchanged = ld["axis_gain"](lambda x, t: torch.zeros_like(x), latents, s, mean, axes[0], 1000)
    assert unchanged == pytest.approx(1 - s, abs=0.05)


def test_spread_ratios(ld):
    g = torch.Generator().manual_seed(1)
    train = torch.randn(40, 2, 4, 8, 8, generator=g) * torch.tensor([0.5, 2.0]).view(1, 2, 1, 1, 1)
    mean = train.mean(0, keepdim=True)
    shrunk = mean + 0.5 * (train - mean)
    r = ld["measure"](_Bundle(), train, None, shrunk, k=3, levels=(0.9,))
    assert r["cohorts"]["samples"]["axis_variance_ratio"] == pytest.approx([0.25] * 3, rel=1e-6)
    assert r["cohorts"]["samples"]["total_variance_ratio"] == pytest.approx(0.25, rel=1e-6)
    ct = r["cohorts"]["train"]
    assert ct["axis_variance"] == sorted(ct["axis_variance"], reverse=True)  # principal axes, largest first
    assert ct["axis_mean"] == pytest.approx([0.0] * 3, abs=1e-9)
    assert r["elements_per_cell"] == 4.0 and "held" not in r["pc1_gain"][0]
    # depth 4 halves twice: two detail levels, each the pyramid's (mean + 0.5 deviation keeps the mean's detail)
    assert r["cohorts"]["samples"]["detail_energy"] == pytest.approx(ld["detail_energy"](shrunk, 2))
    assert len(ct["detail_energy"]) == 2


class _Bundle:
    """What :func:`measure` reads of a model bundle: the network and the diffusion (timesteps, source noise)."""

    def __init__(self, noise: str = "gaussian"):
        from ctdiff.config import DiffusionConfig
        from ctdiff.diffusion.schedule import Diffusion

        self.diffusion = Diffusion(DiffusionConfig(kind="rflow", noise=noise))

    @staticmethod
    def model(x, t):
        return torch.zeros_like(x)


def test_the_posterior_reference_follows_the_source_noise(ld):
    """With pyramid source noise the coarse axis is noisier than white noise's 1/m, so the Gaussian
    posterior keeps less of a scan's deviation at the same level; white noise keeps the formula's m."""
    g = torch.Generator().manual_seed(1)
    train = torch.randn(40, 2, 4, 8, 8, generator=g) * torch.tensor([0.5, 2.0]).view(1, 2, 1, 1, 1)
    white = ld["measure"](_Bundle(), train, None, train, k=3, levels=(0.9,))
    pyramid = ld["measure"](_Bundle("pyramid"), train, None, train, k=3, levels=(0.9,))
    assert white["axis_noise_variance"] == pytest.approx(1 / white["elements_per_cell"])
    assert pyramid["source_noise"] == "pyramid" and pyramid["axis_noise_variance"] > 1.5 / white["elements_per_cell"]
    assert pyramid["pc1_gain"][0]["gaussian"] < white["pc1_gain"][0]["gaussian"]
    # the zero network's x_0 estimate is x_s itself: the gain along the axis is 1 - s with either noise
    assert pyramid["pc1_gain"][0]["train"] == pytest.approx(0.1, abs=0.05)


def test_demo_model_run(ld, tmp_path):
    from ctdiff.data.io import read_volume
    from ctdiff.data.phantom import write_cohort

    train = tmp_path / "train"
    write_cohort(train, n=2, shape=(128, 128, 32), seed=0, noise_hu=20.0, progress=False)
    js = tmp_path / "d.json"
    argv = ["--model", str(MODEL), "--train", str(train), "--held", str(train), "--n", "3", "--steps", "2"]
    assert (
        ld["main"]([*argv, "--levels", "0.9,0.5", "--images", f"ph={train}", "--threads", "1", "--json", str(js)]) == 0
    )
    r = json.loads(js.read_text())
    c = r["cohorts"]
    assert (c["train"]["n"], c["held"]["n"], c["samples"]["n"]) == (2, 2, 3)
    assert c["held"]["axis_variance"] == pytest.approx(c["train"]["axis_variance"])  # the same scans
    assert len(c["train"]["axis_variance"]) == 2 and c["train"]["axis_variance"][1] < 1e-6  # 2 scans: one axis
    assert [row["s"] for row in r["pc1_gain"]] == [0.9, 0.5]
    assert all(0 < row["gaussian"] < 1 and np.isfinite(row["train"]) for row in r["pc1_gain"])
    assert all(row["train"] == row["held"] for row in r["pc1_gain"])
    body = [float((read_volume(p).array > -500).mean()) for p in sorted(train.glob("*.nii.gz"))]
    assert r["images"]["ph"]["body_fraction_mean"] == pytest.approx(np.mean(body))
    assert r["images"]["ph"]["body_fraction_sd"] == pytest.approx(np.std(body))
    assert (r["sampler"], r["steps"], r["weights"]) == ("euler", 2, "ema")
    assert c["held"]["detail_energy"] == pytest.approx(c["train"]["detail_energy"])  # the same scans
    assert c["samples"]["detail_energy_ratio"] == pytest.approx(
        [g / t for g, t in zip(c["samples"]["detail_energy"], c["train"]["detail_energy"])]
    )
    assert len(c["samples"]["detail_energy"]) == 3 and all(v > 0 for v in c["samples"]["detail_energy"])


def _blocks(shape: tuple[int, ...], size: int) -> torch.Tensor:
    """+-1 alternating between neighbouring size^3 blocks along every axis (constant inside each block)."""
    idx = [torch.arange(n) // size for n in shape[2:]]
    sign = (idx[0].view(-1, 1, 1) + idx[1].view(1, -1, 1) + idx[2].view(1, 1, -1)) % 2
    return (1.0 - 2.0 * sign.double()).expand(*shape).clone()


def test_detail_energy_puts_each_scale_at_its_level(ld):
    shape = (2, 3, 8, 16, 16)
    fine, mid, coarse8 = _blocks(shape, 1), _blocks(shape, 2), _blocks(shape, 4)
    z = 3.0 * fine + 2.0 * mid + 0.5 * coarse8 + 7.0  # a pattern at each scale, plus a constant
    assert ld["detail_energy"](z) == pytest.approx([9.0, 4.0, 0.25])
    assert ld["detail_energy"](z, levels=2) == pytest.approx([9.0, 4.0])


def test_detail_energy_levels_add_up_to_the_mean_square(ld):
    z = torch.randn(3, 2, 8, 16, 16, generator=torch.Generator().manual_seed(5)).double()
    coarsest = torch.nn.functional.avg_pool3d(z, 8)
    assert sum(ld["detail_energy"](z)) + float((coarsest**2).mean()) == pytest.approx(float((z**2).mean()))
    with pytest.raises(ValueError, match="does not halve 3 times"):
        ld["detail_energy"](torch.zeros(1, 1, 4, 16, 16))


def test_needs_a_latent_rflow_model(ld, tmp_path):
    pixel = REPO / "tests" / "data" / "pixel-demo-64-before-spaces.pt"
    with pytest.raises(SystemExit, match="pixel/ddpm model; this needs latent/rflow"):
        ld["main"](["--model", str(pixel), "--train", str(tmp_path)])


def test_encode_folder_pads_in_model_units_as_training_does(ld, tmp_path):
    """A 6-slice scan for a network 8 slices deep: padded after the HU window (constant pad = -1, air)."""
    from types import SimpleNamespace

    from ctdiff.data.io import Volume, write_nifti

    write_nifti(Volume(np.full((4, 4, 6), 500.0, dtype=np.float32), np.eye(4)), tmp_path / "a.nii.gz")
    bundle = SimpleNamespace(
        geometry={"depth": 8},
        config=SimpleNamespace(data=SimpleNamespace(pad_mode="constant", hu_window=(-1000.0, 1000.0))),
        space=SimpleNamespace(encode=lambda x: x),  # identity: what the space is handed
    )
    z = ld["encode_folder"](bundle, tmp_path)
    assert z.shape == (1, 1, 8, 4, 4)
    assert z[0, 0, 1:7].eq(0.5).all() and z[0, 0, 0].eq(-1.0).all() and z[0, 0, 7].eq(-1.0).all()


def test_samples_from_the_models_gaussian_start_or_the_one_asked(ld, tmp_path):
    """A checkpoint that carries a Gaussian start (fit-start) is sampled from it, as `ctdiff sample` does;
    --gaussian-start 1 samples from pure noise; a model without one refuses a start in one line."""
    from ctdiff.data.phantom import write_cohort
    from ctdiff.diffusion.fit_start import fit_start
    from ctdiff.errors import InputError

    train = tmp_path / "train"
    write_cohort(train, n=2, shape=(128, 128, 32), seed=0, noise_hu=20.0, progress=False)
    start = tmp_path / "start.pt"
    fit_start(MODEL, train, start, components=1, level=0.5)
    base = ["--train", str(train), "--n", "2", "--steps", "2", "--levels", "0.5", "--threads", "1"]
    levels = []
    for extra in ([], ["--gaussian-start", "1"]):
        js = tmp_path / f"d{len(extra)}.json"
        assert ld["main"](["--model", str(start), *base, *extra, "--json", str(js)]) == 0
        levels.append(json.loads(js.read_text())["gaussian_start"])
    assert levels == [0.5, None]  # 2 Euler steps: levels 1 and 0.5
    with pytest.raises(InputError, match="no fitted Gaussian"):
        ld["main"](["--model", str(MODEL), *base, "--gaussian-start", "0.5"])


def test_samples_with_the_models_spread_correction_unless_told_not_to(ld, tmp_path):
    """A checkpoint that carries a spread correction (fit-spread) has its samples corrected, as `ctdiff
    sample` does, and --no-spread-correction measures them as drawn."""
    from ctdiff.data.phantom import write_cohort
    from ctdiff.diffusion.fit_spread import fit_spread

    train = tmp_path / "train"
    write_cohort(train, n=3, shape=(128, 128, 32), seed=0, noise_hu=20.0, progress=False)
    corrected = tmp_path / "spread.pt"
    fit_spread(MODEL, train, corrected, components=2, samples=3)
    base = ["--train", str(train), "--n", "3", "--steps", "2", "--levels", "0.5", "--threads", "1"]
    runs = []
    for extra in ([], ["--no-spread-correction"]):
        js = tmp_path / f"s{len(extra)}.json"
        assert ld["main"](["--model", str(corrected), *base, *extra, "--json", str(js)]) == 0
        runs.append(json.loads(js.read_text()))
    assert [r["spread_correction"] for r in runs] == [True, False]
    with_it, without = (r["cohorts"]["samples"]["total_variance"] for r in runs)
    assert with_it != pytest.approx(without, rel=1e-3)
