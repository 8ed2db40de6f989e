"""Diffusion schedule math and samplers, separate from the network.

:class:`Diffusion` holds the noise schedule (betas from diffusers' ``DDPMScheduler``, so training and
every sampler share one definition) and does the forward process, the training target (epsilon or
v) and the loss; every method takes the model as an argument and works on any ``(N, C, ...)`` shape
(openai improved-diffusion style).

Samplers are small ``@torch.no_grad`` functions over diffusers schedulers, used through their
``set_timesteps``/``step`` API; the caller (this module) owns the loop and reports progress through
``callback(done, total)`` after every network evaluation (k-diffusion style):

- ``ddpm``: ancestral DDPM (``DDPMScheduler``), the thesis' sampler (1000 steps there); with fewer
  steps it samples the posterior between strided timesteps. 50 steps match 1000 on the demo model
  (docs/benchmarks.md), hence the default.
- ``ddim``: deterministic DDIM (eta = 0, ``DDIMScheduler``).
- ``dpmpp``: DPM-Solver++ (2nd-order multistep, ``DPMSolverMultistepScheduler``), deterministic.

DDIM and DPM-Solver++ use "trailing" timestep spacing, so the first step starts at the last
training timestep (t = T-1) rather than skipping the noisiest part of the schedule.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from ctdiff.config import SAMPLERS, DiffusionConfig

Callback = Callable[[int, int], None]
DIFFUSERS_BETA_SCHEDULE = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}


def _extract(values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """values[t] reshaped to (N, 1, 1, ...) so it broadcasts over an ndim-dimensional batch."""
    out = values.to(t.device)[t]
    return out.reshape(-1, *([1] * (ndim - 1)))


class Diffusion:
    """The forward process q(x_t | x_0) and the training objective of one :class:`DiffusionConfig`."""

    def __init__(self, cfg: DiffusionConfig):
        self.cfg = cfg
        self.timesteps = cfg.timesteps
        self.prediction = cfg.prediction
        ref = self.scheduler("ddpm")
        self.betas = ref.betas.to(torch.float64)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt().float()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt().float()

    # ----------------------------------------------------------------------------- schedulers
    def scheduler_kwargs(self) -> dict:
        c = self.cfg
        return dict(
            num_train_timesteps=c.timesteps,
            beta_start=c.beta_start,
            beta_end=c.beta_end,
            beta_schedule=DIFFUSERS_BETA_SCHEDULE[c.beta_schedule],
            prediction_type=c.prediction,
        )

    def scheduler(self, sampler: str):
        """A fresh diffusers scheduler for ``sampler`` with this schedule (betas, T, prediction)."""
        kw = self.scheduler_kwargs()
        if sampler == "ddpm":
            return DDPMScheduler(**kw, clip_sample=True, clip_sample_range=1.0)
        if sampler == "ddim":
            return DDIMScheduler(**kw, clip_sample=True, clip_sample_range=1.0, timestep_spacing="trailing")
        if sampler == "dpmpp":
            # lambda_min_clipped keeps the cosine schedule's last (near-zero-alpha) steps finite
            extra = {"lambda_min_clipped": -5.1} if self.cfg.beta_schedule == "cosine" else {}
            return DPMSolverMultistepScheduler(
                **kw, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing", **extra
            )
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")

    # ----------------------------------------------------------------------- forward process
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
        a = _extract(self.sqrt_alphas_cumprod, t, x0.ndim).to(x0.dtype)
        s = _extract(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim).to(x0.dtype)
        return a * x0 + s * noise

    def target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the network learns to predict: the noise (epsilon) or v = sqrt(abar) eps - sqrt(1-abar) x_0."""
        if self.prediction == "epsilon":
            return noise
        a = _extract(self.sqrt_alphas_cumprod, t, x0.ndim).to(x0.dtype)
        s = _extract(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim).to(x0.dtype)
        return a * noise - s * x0

    def loss(self, model, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Mean squared error between the model output at (x_t, t) and the target."""
        pred = model(self.q_sample(x0, t, noise), t)
        return F.mse_loss(pred.float(), self.target(x0, t, noise).float())

    def sample_timesteps(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, self.timesteps, (n,), generator=generator)

    def fixed_timesteps(self, k: int) -> torch.Tensor:
        """k timesteps evenly spread over [0, T) (midpoints of k strata), for validation."""
        return ((torch.arange(k, dtype=torch.float64) + 0.5) * self.timesteps / k).long().clamp_(0, self.timesteps - 1)


# ------------------------------------------------------------------------------------- samplers
def _memory_format(model) -> torch.memory_format:
    """channels_last_3d if the model (any callable (x, t) -> out) stores 5-D weights that way."""
    channels_last = isinstance(model, torch.nn.Module) and any(
        p.dim() == 5 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last_3d)
        for p in model.parameters()
    )
    return torch.channels_last_3d if channels_last else torch.contiguous_format


def _loop(model, x: torch.Tensor, scheduler, steps: int, generator, callback: Callback | None) -> torch.Tensor:
    with warnings.catch_warnings():
        # diffusers 0.42 + numpy 2: a harmless "__array__ ... copy keyword" DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        scheduler.set_timesteps(steps, device=x.device)
    total = len(scheduler.timesteps)
    for i, t in enumerate(scheduler.timesteps):
        out = model(x, t.to(x.device).expand(x.shape[0]))
        x = scheduler.step(out.float(), t, x, generator=generator).prev_sample
        if callback is not None:
            callback(i + 1, total)
    return x


@torch.no_grad()
def sample_ddpm(model, x: torch.Tensor, diffusion: Diffusion, steps: int, generator=None, callback: Callback | None = None) -> torch.Tensor:
    """Ancestral DDPM from noise ``x``; ``generator`` (one, or a list with one per batch item) draws step noise."""
    return _loop(model, x, diffusion.scheduler("ddpm"), steps, generator, callback)


@torch.no_grad()
def sample_ddim(model, x: torch.Tensor, diffusion: Diffusion, steps: int, generator=None, callback: Callback | None = None) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from noise ``x``."""
    return _loop(model, x, diffusion.scheduler("ddim"), steps, generator, callback)


@torch.no_grad()
def sample_dpmpp(model, x: torch.Tensor, diffusion: Diffusion, steps: int, generator=None, callback: Callback | None = None) -> torch.Tensor:
    """DPM-Solver++ (2nd-order multistep, deterministic) from noise ``x``."""
    return _loop(model, x, diffusion.scheduler("dpmpp"), steps, generator, callback)


SAMPLER_FUNCTIONS = {"ddpm": sample_ddpm, "ddim": sample_ddim, "dpmpp": sample_dpmpp}


def run_sampler(
    name: str,
    model,
    shape: Sequence[int],
    diffusion: Diffusion,
    steps: int,
    seeds: Sequence[int],
    device: torch.device | str = "cpu",
    callback: Callback | None = None,
) -> torch.Tensor:
    """Sample ``len(seeds)`` tensors of (C, D, H, W) ``shape``; item i depends only on ``seeds[i]``.

    Each item gets its own CPU generator (initial noise and, for DDPM, step noise), so a case is
    reproducible from its seed whatever the batch size.
    """
    if name not in SAMPLER_FUNCTIONS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {SAMPLERS}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    # the model's layout (channels-last 3D or not) carries through the sampler's elementwise updates
    x = torch.stack([torch.randn(tuple(shape), generator=g) for g in gens]).to(device, memory_format=_memory_format(model))
    return SAMPLER_FUNCTIONS[name](model, x, diffusion, steps, generator=gens, callback=callback)
