"""The training monitor's Generate panel: sample volumes from a run's checkpoint into a samples folder.

Uses ``ctdiff.diffusion.sample`` (``load_bundle``, ``sample``, ``write_samples``), the same code as
``python -m ctdiff sample``; the model bundle is cached per checkpoint file and modification time.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from ctdiff.errors import ConfigError, OverwriteError
from ctdiff.samplers import DIFFUSION_KINDS, sampler_error, samplers_for
from ctdiff_app.monitor import samples_dir


def run_diffusion_kind(run_dir: str | os.PathLike | None) -> str | None:
    """``diffusion.kind`` from a run's config.yaml (runs from before the key existed: ddpm); None if unreadable."""
    if run_dir is None:
        return None
    import yaml

    try:
        values = yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    diffusion = values.get("diffusion") if isinstance(values, dict) else None
    kind = diffusion.get("kind", "ddpm") if isinstance(diffusion, dict) else "ddpm"
    return kind if kind in DIFFUSION_KINDS else None


def sampler_names(run_dir: str | os.PathLike | None = None) -> tuple[str, ...]:
    """The registered samplers (``ctdiff.samplers``) that fit the run's diffusion kind (all without a run)."""
    return samplers_for(run_diffusion_kind(run_dir))


@st.cache_resource(max_entries=2, show_spinner="Loading the model…")
def _bundle(checkpoint: str, mtime: int, device: str):
    from ctdiff.diffusion.sample import load_bundle

    return load_bundle(checkpoint, device=device, use_ema=True)


def generate(
    run_dir: str | os.PathLike,
    checkpoint: str | os.PathLike,
    *,
    n: int,
    sampler: str,
    steps: int,
    seed: int,
    overwrite: bool,
    device: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Sample ``n`` volumes and write them to ``run_dir/samples/<sampler>-<steps>-seed<seed>/``.

    Refuses an existing non-empty folder unless ``overwrite`` (checked before the model is loaded).
    """
    problem = sampler_error(sampler, run_diffusion_kind(run_dir))
    if problem:
        raise ConfigError(problem)
    out = samples_dir(run_dir, sampler, steps, seed)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OverwriteError("already holds samples; tick overwrite to replace them", out)
    from ctdiff.diffusion.sample import sample, write_samples

    ckpt = Path(checkpoint)
    bundle = _bundle(str(ckpt), ckpt.stat().st_mtime_ns, device)
    volumes = sample(bundle, n, sampler=sampler, steps=steps, seed=seed, batch_size=1, callback=progress)
    info = {"checkpoint": str(ckpt), "sampler": sampler, "steps": steps, "seed": seed, "n": n, "source": "ctdiff app"}
    write_samples(volumes, out, info, force=overwrite)
    return out
