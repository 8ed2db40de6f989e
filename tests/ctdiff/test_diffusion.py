"""Schedule math against diffusers and hand-computed values; samplers: timesteps, determinism, callback."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctdiff.config import DiffusionConfig
from ctdiff.diffusion.schedule import Diffusion, run_sampler


def test_linear_schedule_known_answer():
    d = Diffusion(DiffusionConfig(kind="ddpm", timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02))
    betas = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1.0 - betas)
    np.testing.assert_allclose(d.alphas_cumprod.numpy(), abar, rtol=1e-5)
    # hand-computed: abar_0 = 1 - 1e-4, abar_999 ~ 4.0e-5 (nearly pure noise at the end)
    assert d.alphas_cumprod[0].item() == pytest.approx(0.9999, abs=1e-7)
    assert d.alphas_cumprod[-1].item() == pytest.approx(4.036e-5, rel=1e-3)


def _independent_alphas_cumprod(schedule: str, cfg: DiffusionConfig) -> np.ndarray:
    """abar_t written out from the papers (DDPM; improved DDPM's cosine), not from diffusers."""
    T = cfg.timesteps
    if schedule == "linear":
        betas = np.linspace(cfg.beta_start, cfg.beta_end, T)
    elif schedule == "scaled_linear":
        betas = np.linspace(cfg.beta_start**0.5, cfg.beta_end**0.5, T) ** 2
    else:
        f = lambda t: np.cos((t / T + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
        betas = np.minimum(1 - f(np.arange(1, T + 1)) / f(np.arange(T)), 0.999)
    return np.cumprod(1.0 - betas)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "scaled_linear"])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_forward_process_and_target_match_the_formulas(schedule, prediction):
    # q_sample / target use diffusers' add_noise / get_velocity; checked against the written-out formulas
    cfg = DiffusionConfig(kind="ddpm", timesteps=1000, beta_schedule=schedule, prediction=prediction)
    d = Diffusion(cfg)
    abar = torch.from_numpy(_independent_alphas_cumprod(schedule, cfg))
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand((4, 1, 3, 5, 6), generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 17, 500, 999])
    a = abar[t].float().reshape(-1, 1, 1, 1, 1)
    torch.testing.assert_close(d.q_sample(x0, t, noise), a.sqrt() * x0 + (1 - a).sqrt() * noise, rtol=1e-5, atol=1e-5)
    expected = {"epsilon": noise, "sample": x0}.get(prediction, a.sqrt() * noise - (1 - a).sqrt() * x0)
    torch.testing.assert_close(
        d.target(x0, t, noise), expected, rtol=1e-5, atol=1e-5
    )  # diffusers computes abar in float32


def test_rflow_forward_process_and_velocity():
    d = Diffusion(DiffusionConfig(kind="rflow", timesteps=1000))
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand((3, 2, 2, 3, 4), generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 250, 999])
    s = (t.float() / 1000).reshape(-1, 1, 1, 1, 1)
    torch.testing.assert_close(d.q_sample(x0, t, noise), (1 - s) * x0 + s * noise)
    torch.testing.assert_close(d.target(x0, t, noise), x0 - noise)
    ts = d.sample_timesteps(4000, torch.Generator().manual_seed(1))
    assert ts.dtype == torch.int64 and ts.min() >= 0 and ts.max() <= 999 and 450 < ts.float().mean() < 550
    torch.testing.assert_close(ts, d.sample_timesteps(4000, torch.Generator().manual_seed(1)))  # seeded, not global RNG


def test_rflow_logit_normal_time_sampling_matches_scipy():
    """diffusion.time_sampling logit-normal: t/T = sigmoid(N(loc, scale^2)), floored to an integer step;
    checked against scipy's normal distribution (a uniform draw, or loc ignored, would fail)."""
    from scipy import stats
    from scipy.special import logit

    d = Diffusion(DiffusionConfig(kind="rflow", timesteps=1000, time_sampling="logit-normal", time_loc=1.5))
    ts = d.sample_timesteps(8000, torch.Generator().manual_seed(3))
    assert ts.dtype == torch.int64 and ts.min() >= 0 and ts.max() <= 999
    torch.testing.assert_close(ts, d.sample_timesteps(8000, torch.Generator().manual_seed(3)))
    for level in (0.5, 0.85, 0.95):
        expected = stats.norm.sf(logit(level), loc=1.5, scale=1.0)  # P(t/T >= level)
        assert (ts >= level * 1000).float().mean().item() == pytest.approx(expected, abs=0.02)
    # uniform (the default) puts 15 % of the steps above 0.85; loc 1.5 puts 41 %
    uniform = Diffusion(DiffusionConfig(kind="rflow")).sample_timesteps(8000, torch.Generator().manual_seed(3))
    assert (uniform >= 850).float().mean().item() == pytest.approx(0.15, abs=0.02)


def test_gaussian_source_noise_is_the_plain_randn_it_always_was():
    """diffusion.noise gaussian (the default) draws exactly torch.randn: old runs resume and sample as before."""
    d = Diffusion(DiffusionConfig(kind="rflow"))
    torch.testing.assert_close(
        d.noise((2, 3, 4, 8, 8), torch.Generator().manual_seed(7)),
        torch.randn((2, 3, 4, 8, 8), generator=torch.Generator().manual_seed(7)),
        rtol=0,
        atol=0,
    )


def _coarse_variance(x: torch.Tensor, cell=(2, 8, 8)) -> float:
    return torch.nn.functional.avg_pool3d(x, cell).var().item()


def test_pyramid_noise_unit_sd_seeded_and_coarse():
    """diffusion.noise pyramid: each item has unit SD, is reproducible from its generator, and carries far
    more energy at coarse scales than white noise (whose 2x8x8-cell means vary by 1/128)."""
    from ctdiff.diffusion.schedule import pyramid_noise

    shape = (6, 16, 8, 32, 32)
    x = pyramid_noise(shape, torch.Generator().manual_seed(0), 0.8)
    assert x.shape == shape and x.dtype == torch.float32
    torch.testing.assert_close(x.flatten(1).std(dim=1), torch.ones(6), rtol=0, atol=1e-5)
    torch.testing.assert_close(x, pyramid_noise(shape, torch.Generator().manual_seed(0), 0.8), rtol=0, atol=0)
    assert not torch.equal(x, pyramid_noise(shape, torch.Generator().manual_seed(1), 0.8))
    # an unbatched (C, D, H, W) draw is the batch-1 draw of the same generator
    torch.testing.assert_close(
        pyramid_noise(shape[1:], torch.Generator().manual_seed(2), 0.8),
        pyramid_noise((1, *shape[1:]), torch.Generator().manual_seed(2), 0.8)[0],
    )
    white = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    assert _coarse_variance(white) == pytest.approx(1 / 128, rel=0.1)
    assert 0.1 < _coarse_variance(x) < 0.3  # 0.17 for discount 0.8: about 22x white
    # the coarse levels carry no per-channel offset (the U-Net's GroupNorm could not remove one): channel
    # means vary no more than white noise's (1/8192; with an offset level they varied by 0.1)
    assert x.mean(dim=(2, 3, 4)).var().item() < 2 * white.mean(dim=(2, 3, 4)).var().item() < 1e-3
    # a smaller discount is nearer white noise, monotonically
    weak = pyramid_noise(shape, torch.Generator().manual_seed(0), 0.2)
    assert 1 / 128 < _coarse_variance(weak) < 0.1 * _coarse_variance(x)
    with pytest.raises(ValueError, match="pyramid noise needs"):
        pyramid_noise((8, 32, 32), torch.Generator(), 0.8)


def test_euler_with_pyramid_noise_starts_from_the_seeds_pyramid_noise():
    """run_sampler draws its start from diffusion.noise: with a zero velocity, Euler returns the start itself."""
    from ctdiff.diffusion.schedule import pyramid_noise

    d = Diffusion(DiffusionConfig(kind="rflow", timesteps=100, noise="pyramid", noise_discount=0.7))
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    out = run_sampler("euler", zero, (2, 4, 16, 16), d, steps=3, seeds=[5, 6])
    expected = torch.stack([pyramid_noise((2, 4, 16, 16), torch.Generator().manual_seed(s), 0.7) for s in (5, 6)])
    torch.testing.assert_close(out, expected)


def test_loss_is_mse_of_model_output_vs_target():
    d = Diffusion(DiffusionConfig(kind="ddpm", prediction="v_prediction"))
    x0 = torch.full((2, 1, 2, 2, 2), 0.5)
    noise = torch.ones_like(x0)
    t = torch.tensor([10, 900])
    zero_model = lambda x, t: torch.zeros_like(x)  # noqa: E731
    assert d.loss(zero_model, x0, t, noise).item() == pytest.approx(d.target(x0, t, noise).square().mean().item())


def test_fixed_validation_timesteps():
    d = Diffusion(DiffusionConfig(kind="ddpm", timesteps=1000))
    assert d.fixed_timesteps(4).tolist() == [125, 375, 625, 875]
    assert d.fixed_timesteps(1).tolist() == [500]


class DummyModel(torch.nn.Module):
    """Deterministic stand-in network: a fixed function of x and t (as diffusers' scheduler tests do)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t):
        self.calls.append(t.clone())
        return 0.3 * x + 1e-3 * t.float().reshape(-1, *[1] * (x.ndim - 1))


@pytest.mark.parametrize(
    "sampler, steps, timesteps",
    [("dpmpp", 5, [999, 799, 599, 399, 199]), ("ddim", 4, [999, 749, 499, 249]), ("ddpm", 4, [750, 500, 250, 0])],
)
def test_sampler_timesteps_and_callback(sampler, steps, timesteps):
    d = Diffusion(DiffusionConfig(kind="ddpm", timesteps=1000, beta_schedule="linear"))
    model = DummyModel()
    seen = []
    out = run_sampler(sampler, model, (1, 2, 4, 4), d, steps, seeds=[0], callback=lambda i, n: seen.append((i, n)))
    assert [int(t[0]) for t in model.calls] == timesteps
    assert seen == [(i + 1, steps) for i in range(steps)]
    assert out.shape == (1, 1, 2, 4, 4) and torch.isfinite(out).all()


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp"])
def test_sampler_determinism_and_batch_independence(sampler):
    d = Diffusion(DiffusionConfig(kind="ddpm", timesteps=100, beta_schedule="cosine", prediction="v_prediction"))
    model = DummyModel()
    a = run_sampler(sampler, model, (1, 2, 4, 4), d, 6, seeds=[3, 4])
    b = run_sampler(sampler, model, (1, 2, 4, 4), d, 6, seeds=[3, 4])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    single = run_sampler(sampler, model, (1, 2, 4, 4), d, 6, seeds=[4])
    torch.testing.assert_close(a[1:], single, rtol=1e-6, atol=1e-6)  # case depends on its seed only
    assert not torch.allclose(a[0], a[1])


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp"])
@pytest.mark.parametrize(
    "schedule, prediction", [("linear", "epsilon"), ("cosine", "v_prediction"), ("linear", "sample")]
)
def test_samplers_recover_the_data_point_with_an_oracle_model(sampler, schedule, prediction):
    # an oracle that knows the single data point x0 predicts the exact epsilon (v, or x0); every sampler
    # must then land on x0 -- a wrong prediction type or schedule in the scheduler would not
    d = Diffusion(DiffusionConfig(kind="ddpm", timesteps=1000, beta_schedule=schedule, prediction=prediction))
    x0 = torch.linspace(-0.8, 0.8, 32).reshape(1, 1, 2, 4, 4)
    abar = d.alphas_cumprod.float()

    def oracle(x, t):
        a = abar[t].reshape(-1, 1, 1, 1, 1)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        if prediction == "sample":
            return x0.expand_as(x)
        return eps if prediction == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0

    out = run_sampler(sampler, oracle, (1, 2, 4, 4), d, 10, seeds=[0])
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)


@pytest.mark.parametrize("steps", [1, 4, 25])
def test_euler_recovers_the_data_point_with_an_oracle_velocity(steps):
    # on the straight path from noise to the single data point x0 the velocity is x0 - noise, the
    # same at every t; an oracle that knows x0 gives v = (x0 - x_t) / (t / T), and Euler must land on
    # x0 in any number of steps (a wrong sign, time direction or dt would not)
    d = Diffusion(DiffusionConfig(kind="rflow", timesteps=1000))
    x0 = torch.linspace(-0.8, 0.8, 32).reshape(1, 1, 2, 4, 4)
    seen = []

    def oracle(x, t):
        seen.append(int(t[0]))
        return (x0 - x) / (t.float() / 1000).reshape(-1, 1, 1, 1, 1)

    out = run_sampler("euler", oracle, (1, 2, 4, 4), d, steps, seeds=[0])
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)
    assert seen == [round(1000 * (1 - i / steps)) for i in range(steps)]  # T, T - T/N, ..., T/N


@pytest.mark.parametrize("w", [0.0, 1.0, 2.5])
def test_guided_euler_lands_on_the_guided_data_point(w):
    # classifier-free guidance with oracle velocities: the conditional flow runs straight to a point set by
    # each item's condition, x0_c = c[0] * a, the unconditional flow (a NaN condition) to x0_u = b. Their
    # mix u + w (c - u) is then the oracle velocity toward x0_u + w (x0_c - x0_u), where Euler must land
    # in any number of steps (c and u swapped, or c + w (c - u), would land elsewhere)
    d = Diffusion(DiffusionConfig(kind="rflow", timesteps=1000))
    a = torch.linspace(-0.5, 0.5, 32).reshape(1, 2, 4, 4)
    b = torch.linspace(0.4, -0.2, 32).reshape(1, 2, 4, 4)
    cond = [[1.0, 0.3], [-0.6, 0.1]]
    batches = []

    def oracle(x, t, cond=None):
        batches.append(x.shape[0])
        known = torch.isfinite(cond).all(1).reshape(-1, 1, 1, 1, 1)
        x0 = torch.where(known, torch.nan_to_num(cond[:, 0]).reshape(-1, 1, 1, 1, 1) * a, b)
        return (x0 - x) / (t.float() / 1000).reshape(-1, 1, 1, 1, 1)

    out = run_sampler("euler", oracle, (1, 2, 4, 4), d, 4, seeds=[0, 1], condition=cond, guidance=w)
    x0_c = torch.tensor([1.0, -0.6]).reshape(-1, 1, 1, 1, 1) * a
    torch.testing.assert_close(out, b + w * (x0_c - b), atol=1e-5, rtol=0)
    assert batches == [2 if w in (0.0, 1.0) else 4] * 4  # both flows in one doubled pass only when mixed
    with pytest.raises(ValueError, match="needs a condition per seed"):
        run_sampler("euler", DummyModel(), (1, 2, 4, 4), d, 2, seeds=[0], guidance=2.0)
    with pytest.raises(ValueError, match="finite scale"):
        run_sampler("euler", oracle, (1, 2, 4, 4), d, 2, seeds=[0], condition=[[1.0, 0.0]], guidance=float("nan"))


def test_samplers_refuse_the_other_diffusion_kind():
    rflow = Diffusion(DiffusionConfig(kind="rflow"))
    with pytest.raises(ValueError, match="euler"):
        run_sampler("ddpm", DummyModel(), (1, 2, 4, 4), rflow, 3, seeds=[0])
    with pytest.raises(ValueError, match="ddpm, ddim, dpmpp"):
        run_sampler("euler", DummyModel(), (1, 2, 4, 4), Diffusion(DiffusionConfig(kind="ddpm")), 3, seeds=[0])
