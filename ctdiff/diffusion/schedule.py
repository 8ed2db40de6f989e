"""Diffusion schedule math and samplers, separate from the network.

:class:`Diffusion` holds one :class:`DiffusionConfig`'s forward process and training target and
works on any ``(N, C, ...)`` shape (openai improved-diffusion style); every method takes the model
as an argument. Two kinds (``diffusion.kind``):

- ``ddpm``: the variance-preserving process with betas, ``add_noise`` and ``get_velocity`` of
  diffusers' ``DDPMScheduler`` (so training and every sampler share one definition); the network
  predicts epsilon, v, or x_0 itself (``prediction: sample``, WDM's choice for wavelet sub-bands; the
  diffusers samplers take the same ``prediction_type``).
- ``rflow``: rectified flow with MONAI's ``RFlowScheduler`` (its ``sample_timesteps``,
  ``add_noise``): x_t = (1 - t/T) x_0 + (t/T) noise, and the network predicts the velocity
  x_0 - noise, which its Euler ``step`` integrates from t = T to 0.

The samplers (name -> scheduler and loop, and the kinds each serves) are registered in
:mod:`ctdiff.samplers`; :func:`run_sampler` runs one by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from ctdiff.config import DiffusionConfig
from ctdiff.samplers import SAMPLERS, sampler_error

Callback = Callable[[int, int], None]
DIFFUSERS_BETA_SCHEDULE = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}


def _extract(values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """values[t] reshaped to (N, 1, 1, ...) so it broadcasts over an ndim-dimensional batch."""
    out = values.to(t.device)[t]
    return out.reshape(-1, *([1] * (ndim - 1)))


class Diffusion:
    """The forward process and the training objective of one :class:`DiffusionConfig`.

    ``clip_sample``: whether the DDPM/DDIM samplers may clip their x_0 estimate to [-1, 1] (true for
    pixel and wavelet spaces, false for unbounded latents).
    """

    def __init__(self, cfg: DiffusionConfig, clip_sample: bool = True):
        self.cfg = cfg
        self.kind = cfg.kind
        self.timesteps = cfg.timesteps
        self.prediction = cfg.prediction if cfg.kind == "ddpm" else "velocity"
        self.clip_sample = clip_sample
        if self.kind == "rflow":
            self.ref = self.rflow_scheduler()
            return
        self.ref = DDPMScheduler(**self.scheduler_kwargs())
        self.betas = self.ref.betas.to(torch.float64)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)

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

    def rflow_scheduler(self):
        """MONAI's RFlowScheduler with integer timesteps in [0, T); training draws t/T uniformly or
        logit-normally (``diffusion.time_sampling``, ``time_loc``, ``time_scale``). Its own
        ``use_timestep_transform`` is left off: it shifts toward low noise for volumes smaller than
        its 32^3 reference (our 32 x 32 x 8 latents), the opposite of what the spread needs."""
        from monai.networks.schedulers import RFlowScheduler

        c = self.cfg
        return RFlowScheduler(
            num_train_timesteps=c.timesteps,
            use_discrete_timesteps=True,
            sample_method=c.time_sampling,
            loc=float(c.time_loc),
            scale=float(c.time_scale),
        )

    def scheduler(self, sampler: str):
        """A fresh scheduler for ``sampler`` (a :data:`ctdiff.samplers.SAMPLERS` name) with this schedule."""
        problem = sampler_error(sampler, self.kind)
        if problem:
            raise ValueError(problem)
        return SAMPLERS[sampler].make_scheduler(self)

    # ----------------------------------------------------------------------- forward process
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t: sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise (ddpm); (1 - t/T) x_0 + (t/T) noise (rflow)."""
        return self.ref.add_noise(x0, noise, t)

    def target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the network learns: the noise (epsilon), v = sqrt(abar) eps - sqrt(1-abar) x_0, x_0 itself
        (``sample``), or the flow's x_0 - noise."""
        if self.kind == "rflow":
            return x0 - noise  # MONAI RFlowScheduler's velocity convention (its step adds v * dt)
        if self.prediction == "epsilon":
            return noise
        if self.prediction == "sample":
            return x0
        return self.ref.get_velocity(x0, noise, t)

    def loss(self, model, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Mean squared error between the model output at (x_t, t) and the target."""
        pred = model(self.q_sample(x0, t, noise), t)
        return F.mse_loss(pred.float(), self.target(x0, t, noise).float())

    def sample_timesteps(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.kind == "rflow":
            # MONAI draws from the global RNG: run it in a forked RNG seeded from ``generator``
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self.ref.sample_timesteps(torch.empty(n, 1, 1, 1, 1)).long()
        return torch.randint(0, self.timesteps, (n,), generator=generator)

    def noise(self, shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        """The flow's source noise of ``shape`` (``(C, D, H, W)`` or ``(N, C, D, H, W)``): white Gaussian
        (``diffusion.noise: gaussian``, one ``torch.randn`` as before the option existed) or
        :func:`pyramid_noise` (``pyramid``)."""
        if self.cfg.noise == "pyramid":
            return pyramid_noise(shape, generator, self.cfg.noise_discount)
        return torch.randn(tuple(shape), generator=generator)

    def fixed_timesteps(self, k: int) -> torch.Tensor:
        """k timesteps evenly spread over [0, T) (midpoints of k strata), for validation."""
        return ((torch.arange(k, dtype=torch.float64) + 0.5) * self.timesteps / k).long().clamp_(0, self.timesteps - 1)


def pyramid_noise(shape: Sequence[int], generator: torch.Generator, discount: float) -> torch.Tensor:
    """Multi-resolution ("pyramid") noise of ``shape`` (``(C, D, H, W)`` or ``(N, C, D, H, W)``).

    White noise, plus for level i = 1, 2, ... white noise on the spatial grid divided by 2^i (each axis
    at least 1 voxel) upsampled trilinearly to the full grid, less its mean per channel, and weighted
    ``discount``^i, while the grid has more than one voxel; each item is then scaled to unit SD over its
    voxels. Written here because neither MONAI nor diffusers draws it (their schedulers take the noise
    as given).

    The coarse levels have no per-channel mean because the U-Net cannot remove one: its GroupNorm
    layers normalise a channel's offset away before any layer sees it. With a one-voxel level (offset
    noise) on the demo recipe, the samples' latents kept 7x the training latents' spread of channel
    means (SD 0.25 against 0.036), about all of the offset noise (docs/benchmarks.md).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (4, 5):
        raise ValueError(f"pyramid noise needs a (C, D, H, W) or (N, C, D, H, W) shape, got {shape}")
    batched = shape if len(shape) == 5 else (1, *shape)
    spatial = batched[2:]
    x = torch.randn(batched, generator=generator, dtype=torch.float64)
    level = 1
    while True:
        size = tuple(max(1, s >> level) for s in spatial)
        if all(s == 1 for s in size):
            break
        coarse = torch.randn((*batched[:2], *size), generator=generator, dtype=torch.float64)
        up = F.interpolate(coarse, size=spatial, mode="trilinear", align_corners=False)
        x += discount**level * (up - up.mean(dim=(2, 3, 4), keepdim=True))
        level += 1
    x = x / x.flatten(1).std(dim=1).view(-1, 1, 1, 1, 1)
    return x.float().reshape(shape)


# ------------------------------------------------------------------------------------- samplers
def _memory_format(model) -> torch.memory_format:
    """channels_last_3d if the model (any callable (x, t) -> out) stores 5-D weights that way."""
    channels_last = isinstance(model, torch.nn.Module) and any(
        p.dim() == 5 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last_3d)
        for p in model.parameters()
    )
    return torch.channels_last_3d if channels_last else torch.contiguous_format


def sample_with(
    name: str,
    model,
    x: torch.Tensor,
    diffusion: Diffusion,
    steps: int,
    generator=None,
    callback: Callback | None = None,
    start_level: float | None = None,
) -> torch.Tensor:
    """Run the registered sampler ``name`` from noise ``x`` (``generator``: one, or one per batch item);
    with ``start_level`` s < 1, ``x`` is already at level s (a Gaussian start; Euler only)."""
    extra = {}
    if start_level is not None and start_level < 1.0:
        if not SAMPLERS[name].gaussian_start:
            raise ValueError(f"sampler {name!r} cannot start from a Gaussian start; use euler (rectified flow)")
        extra["start_level"] = start_level
    with torch.no_grad():
        return SAMPLERS[name].loop(model, x, diffusion.scheduler(name), steps, generator, callback, **extra)


def run_sampler(
    name: str,
    model,
    shape: Sequence[int],
    diffusion: Diffusion,
    steps: int,
    seeds: Sequence[int],
    device: torch.device | str = "cpu",
    callback: Callback | None = None,
    gaussian_start: tuple[dict, float] | None = None,
    condition: Sequence | None = None,
    guidance: float = 1.0,
) -> torch.Tensor:
    """Sample ``len(seeds)`` tensors of (C, D, H, W) ``shape``; item i depends only on ``seeds[i]``.

    Each item gets its own CPU generator (initial noise and, for ancestral DDPM, step noise), so a case is
    reproducible from its seed whatever the batch size. ``gaussian_start`` (record, s): the seeds' noise
    is taken by the record's Gaussian flow to the Euler grid's first level at or below s, and the
    network's flow runs from there (:mod:`ctdiff.diffusion.gaussian_start`). ``condition``: one value
    per seed for a conditioned model (``model.condition``), passed to every network evaluation.
    ``guidance`` w (with a ``condition``): classifier-free guidance, each evaluation ``u + w (c - u)`` of
    the conditional output c and the unconditional one u (:func:`guided`).
    """
    problem = sampler_error(name, diffusion.kind)
    if problem:
        raise ValueError(problem)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    # the model's layout (channels-last 3D or not) carries through the sampler's elementwise updates
    x = torch.stack([diffusion.noise(shape, g) for g in gens])
    level = None
    if gaussian_start is not None and gaussian_start[1] < 1.0:
        from ctdiff.diffusion import gaussian_start as gs

        record, level = gaussian_start
        if not SAMPLERS[name].gaussian_start:
            raise ValueError(f"sampler {name!r} cannot start from a Gaussian start; use euler (rectified flow)")
        level = start_grid_level(diffusion, name, steps, level)
        x = gs.start(record, x, level)
    x = x.to(device, memory_format=_memory_format(model))
    if condition is not None:
        if len(condition) != len(seeds):
            raise ValueError(f"expected one condition value per seed ({len(seeds)}), got {len(condition)}")
        # one number per seed, or one list per seed (a vector condition: model.condition latent_pcs)
        cond = torch.tensor(
            [[float(a) for a in c] if isinstance(c, (list, tuple)) else float(c) for c in condition],
            dtype=torch.float32,
            device=device,
        )
        model = guided(model, cond, guidance)
    elif guidance != 1.0:
        raise ValueError(f"guidance {guidance:g} needs a condition per seed (a conditioned model)")
    return sample_with(name, model, x, diffusion, steps, generator=gens, callback=callback, start_level=level)


def guided(net, cond: torch.Tensor, guidance: float = 1.0):
    """A conditioned network as a callable ``(x_t, t) -> out`` of the sampler's: ``net(x_t, t, cond)``
    for ``guidance`` 1; for another w, classifier-free guidance (Ho & Salimans 2022) ``u + w (c - u)``,
    c = ``net(x_t, t, cond)`` and u = the unconditional output (a NaN condition, as training's dropout
    fed it), both from one forward pass on the batch doubled; w 0 is u alone. diffusers' pipelines do
    this inside their own loops, which ctdiff's samplers do not use, hence these few lines."""
    w = float(guidance)
    if not (math.isfinite(w) and w >= 0.0):
        raise ValueError(f"guidance must be a finite scale >= 0, got {guidance!r}")
    none = torch.full_like(cond, float("nan"))
    if w == 1.0:
        return lambda x_t, t: net(x_t, t, cond=cond)
    if w == 0.0:
        return lambda x_t, t: net(x_t, t, cond=none)

    def model(x_t, t):
        both = net(torch.cat([x_t, x_t]), torch.cat([t, t]), cond=torch.cat([cond, none]))
        c, u = both.chunk(2)
        return u + w * (c - u)

    return model


def start_grid_level(diffusion: Diffusion, name: str, steps: int, level: float) -> float:
    """The level a Gaussian start at ``level`` actually hands over at: the ``steps``-step Euler grid's
    first timestep at or below ``level`` T, over T."""
    from ctdiff.samplers import euler_grid

    ts = euler_grid(diffusion.scheduler(name), steps, level)
    return float(ts[0]) / diffusion.timesteps
