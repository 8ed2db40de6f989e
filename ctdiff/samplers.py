"""The one registry of samplers: name -> implementation, and the diffusion kinds it serves.

Everything that lists or checks samplers reads :data:`SAMPLERS`: the config's validation
(``sample.sampler``, ``train.preview_sampler``), ``python -m ctdiff sample --sampler`` choices, the
app's Generate form and :func:`ctdiff.diffusion.schedule.run_sampler`. Adding a sampler = adding one entry.

- ``ddpm``: ancestral DDPM (diffusers ``DDPMScheduler``), the thesis' sampler; with fewer steps it
  samples the posterior between strided timesteps. 50 steps match 1000 on the demo model.
- ``ddim``: deterministic DDIM (eta = 0, ``DDIMScheduler``), "trailing" timestep spacing.
- ``dpmpp``: DPM-Solver++ (2nd-order multistep, ``DPMSolverMultistepScheduler``), "trailing" spacing.
- ``euler``: Euler steps along a rectified flow's velocity (MONAI ``RFlowScheduler``), from t = T
  (pure noise) to t = 0 in N equal steps.

This module imports no torch/diffusers at import time (the config imports it); the scheduler
factories and loops import them when called. The loop is owned here and reports progress through
``callback(done, total)`` after every network evaluation.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

DIFFUSION_KINDS = ("ddpm", "rflow")
Callback = Callable[[int, int], None]


@dataclasses.dataclass(frozen=True)
class Sampler:
    name: str
    kinds: tuple[str, ...]  # diffusion.kind values this sampler can run
    description: str
    make_scheduler: Callable[[Any], Any]  # Diffusion -> a fresh scheduler
    loop: Callable[..., Any]  # (model, x, scheduler, steps, generator, callback) -> x_0
    # whether the loop takes start_level (x given at a level s < 1: ctdiff.diffusion.gaussian_start)
    gaussian_start: bool = False


# ------------------------------------------------------------------------------- scheduler factories
def _ddpm(diffusion):
    from diffusers import DDPMScheduler

    return DDPMScheduler(**diffusion.scheduler_kwargs(), clip_sample=diffusion.clip_sample, clip_sample_range=1.0)


def _ddim(diffusion):
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        **diffusion.scheduler_kwargs(),
        clip_sample=diffusion.clip_sample,
        clip_sample_range=1.0,
        timestep_spacing="trailing",
    )


def _dpmpp(diffusion):
    from diffusers import DPMSolverMultistepScheduler

    # lambda_min_clipped keeps the cosine schedule's last (near-zero-alpha) steps finite
    extra = {"lambda_min_clipped": -5.1} if diffusion.cfg.beta_schedule == "cosine" else {}
    return DPMSolverMultistepScheduler(
        **diffusion.scheduler_kwargs(),
        algorithm_type="dpmsolver++",
        solver_order=2,
        timestep_spacing="trailing",
        **extra,
    )


def _rflow(diffusion):
    return diffusion.rflow_scheduler()


# -------------------------------------------------------------------------------------------- loops
def diffusers_loop(model, x, scheduler, steps: int, generator, callback: Callback | None):
    """diffusers' ``set_timesteps``/``step`` loop (the same for every diffusers scheduler)."""
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


def euler_grid(scheduler, steps: int, start_level: float | None = None, device=None):
    """The Euler sampler's timesteps: ``set_timesteps`` gives T, T - T/N, ..., T/N; with ``start_level``
    s only those at or below s T (a Gaussian start takes the flow to the first of them)."""
    if steps > scheduler.num_train_timesteps:
        raise ValueError(f"steps ({steps}) must be <= diffusion.timesteps ({scheduler.num_train_timesteps})")
    scheduler.set_timesteps(steps, device=device)
    ts = scheduler.timesteps
    if start_level is not None and start_level < 1.0:
        ts = ts[ts <= start_level * scheduler.num_train_timesteps + 1e-6]
        if len(ts) == 0:
            raise ValueError(f"no step of the {steps}-step grid lies at or below the start level {start_level}")
    return ts


def euler_loop(model, x, scheduler, steps: int, generator, callback: Callback | None, start_level: float | None = None):
    """Euler integration of the rectified flow dx/dt from t = T to 0 with MONAI's ``RFlowScheduler.step``.

    ``set_timesteps`` gives T, T - T/N, ..., T/N; the step after the last one goes to t = 0 (as in
    MONAI's example). Deterministic: ``generator`` is not used after the initial noise. With
    ``start_level`` s (< 1), ``x`` is x at the grid's first timestep at or below s T
    (:func:`euler_grid`; :mod:`ctdiff.diffusion.gaussian_start`) and the loop runs from there.
    """
    import torch

    ts = euler_grid(scheduler, steps, start_level, x.device)
    nexts = torch.cat([ts[1:], torch.zeros(1, dtype=ts.dtype, device=ts.device)])
    for i, (t, t_next) in enumerate(zip(ts, nexts)):
        v = model(x, t.to(x.device).expand(x.shape[0]))
        x, _ = scheduler.step(v.float(), int(t), x, int(t_next))
        if callback is not None:
            callback(i + 1, len(ts))
    return x


# ----------------------------------------------------------------------------------------- registry
SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in (
        Sampler("ddpm", ("ddpm",), "ancestral DDPM (stochastic)", _ddpm, diffusers_loop),
        Sampler("ddim", ("ddpm",), "DDIM, eta = 0 (deterministic)", _ddim, diffusers_loop),
        Sampler("dpmpp", ("ddpm",), "DPM-Solver++ 2nd order (deterministic)", _dpmpp, diffusers_loop),
        Sampler("euler", ("rflow",), "Euler steps of the rectified flow (deterministic)", _rflow, euler_loop, True),
    )
}
SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)
# the sampler a config gets for each diffusion kind when it names none
DEFAULT_SAMPLER = {"ddpm": "ddpm", "rflow": "euler"}
# steps when a config leaves sample.steps out: the rflow demo model samples with 25 Euler steps (issue
# 20's target: 25 network evaluations or fewer); DDPM with 50 (docs/benchmarks.md, "Sampling")
DEFAULT_STEPS = {"ddpm": 50, "rflow": 25}


def samplers_for(kind: str | None = None) -> tuple[str, ...]:
    """Sampler names that can run a model of diffusion ``kind`` (all of them for None)."""
    return tuple(name for name, s in SAMPLERS.items() if kind is None or kind in s.kinds)


def sampler_error(name: str, kind: str | None = None) -> str | None:
    """Why ``name`` cannot sample a ``kind`` model (None when it can)."""
    if name not in SAMPLERS:
        return f"unknown sampler {name!r}; choose one of {', '.join(samplers_for(kind))}"
    if kind is not None and kind not in SAMPLERS[name].kinds:
        return (
            f"sampler {name!r} does not run diffusion.kind={kind} models; choose one of {', '.join(samplers_for(kind))}"
        )
    return None


def gaussian_start_error(level, kind: str | None, sampler: str, noise: str = "gaussian") -> str | None:
    """Why a Gaussian start at ``level`` cannot be used with ``sampler`` on a ``kind`` model whose flow
    starts from ``noise`` (``diffusion.noise``; None when it can)."""
    import math

    try:
        level = float(level)
    except (TypeError, ValueError):
        return f"the start level must be a number in (0, 1], got {level!r}"
    if not (math.isfinite(level) and 0.0 < level <= 1.0):
        return f"the start level must lie in (0, 1] (1: pure noise), got {level}"
    if level < 1.0 and (kind != "rflow" or sampler not in SAMPLERS or not SAMPLERS[sampler].gaussian_start):
        starters = ", ".join(n for n, s in SAMPLERS.items() if s.gaussian_start)
        return f"a Gaussian start needs diffusion.kind rflow and the {starters} sampler (got {kind}, {sampler})"
    if level < 1.0 and noise != "gaussian":
        # its closed-form flow takes white source noise to the fitted Gaussian
        return f"a Gaussian start needs white source noise (diffusion.noise gaussian), got {noise}"
    return None


def help_text() -> str:
    """One line per sampler for --help texts."""
    return "; ".join(f"{n}: {s.description} [{'/'.join(s.kinds)}]" for n, s in SAMPLERS.items())
