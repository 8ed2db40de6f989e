"""A spread correction: sampled tensors given the training data's mean and spread along its principal axes.

The demo model's samples vary less than its training scans, most along the directions in which the
scans differ most (in the latents, 0.19-0.64x the training variance along the first four principal
axes; docs/benchmarks.md, "Why recall is 0"). No change to training or to the sampler's start has
closed that gap. This corrects it after sampling, before decoding: each sampled tensor's coordinates
along the first k principal axes of the encoded training scans are shifted and scaled so that, over
the model's own samples, their mean and variance are the training scans' (moment matching, axis by
axis); everything outside those k axes is left as sampled:

    a = U (z - mu)                          coordinates along the k unit axes U (k x D)
    z' = z + U^T (g * (a - m) - a)          g = sqrt(lambda / v), capped at MAX_GAIN

with mu and lambda the training scans' mean and variances along U (``gaussian_start.fit``'s PCA), and
m and v the mean and variance of the coordinates of ``--samples`` of the model's own samples. A gain
below 1 narrows an axis the samples overspread. The correction is linear, so what it does to a
sample's distance from every training scan along those axes is visible in the record (the gains).

``python -m ctdiff fit-spread`` fits it and writes a copy of the checkpoint that carries it, with
``sample.spread_correction`` on; ``ctdiff sample --no-spread-correction`` samples without it. The record
holds the training scans' mean and principal axes: share a file that carries it as you would share
the training data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ctdiff.diffusion import gaussian_start as gs

FORMAT = "spread-correction-1"
DEFAULT_COMPONENTS = 12  # 3.1 MB at fp16 for the demo model's 16 x 8 x 32 x 32 latents; the demo keeps 20 MB
DEFAULT_SAMPLES = 24
# a gain is a ratio of two standard deviations, the samples' estimated from a few dozen; a sampler that
# collapses an axis (v near 0) would otherwise be stretched without bound
MAX_GAIN = 4.0


def fit(training: torch.Tensor, samples: torch.Tensor, components: int = DEFAULT_COMPONENTS) -> dict[str, Any]:
    """The correction that gives ``samples`` (m, C, D, H, W) the mean and variance of ``training`` (n, ...)
    along the first ``components`` principal axes of ``training`` (n >= 2, m >= 2)."""
    if samples.ndim != 5 or tuple(samples.shape[1:]) != tuple(training.shape[1:]):
        raise ValueError(
            f"the samples' shape {tuple(samples.shape[1:])} differs from the training latents' "
            f"{tuple(training.shape[1:])}"
        )
    if samples.shape[0] < 2:
        raise ValueError(f"a spread correction needs at least 2 samples, got {samples.shape[0]}")
    if not torch.isfinite(samples).all():
        raise ValueError("the samples hold NaN or inf values")
    record = gs.fit(training, components)
    a = _coordinates(record, samples)
    m, v = a.mean(0), a.var(0)
    lam = record["variances"].double()
    gains = torch.where(v > 0, torch.sqrt(lam / v.clamp_min(1e-30)), torch.full_like(v, MAX_GAIN))
    return {
        "format": FORMAT,
        "shape": record["shape"],
        "n": record["n"],
        "mean": record["mean"],
        "components": record["components"],
        "variances": record["variances"],
        "sample_mean": m.float(),
        "sample_variances": v.float(),
        "gains": gains.clamp(1.0 / MAX_GAIN, MAX_GAIN).float(),
        "samples": int(samples.shape[0]),
    }


def _coordinates(record: dict[str, Any], z: torch.Tensor) -> torch.Tensor:
    flat = z.reshape(z.shape[0], -1).double() - record["mean"].double().reshape(-1).to(z.device)
    return flat @ record["components"].double().to(z.device).T


def apply(record: dict[str, Any], z: torch.Tensor) -> torch.Tensor:
    """``z`` (N, C, D, H, W) corrected: along the record's axes, shifted by the samples' mean and scaled by
    the gains; the rest of each tensor unchanged. Same dtype and memory layout as ``z``."""
    shape = tuple(record["shape"])
    if tuple(z.shape[1:]) != shape:
        raise ValueError(
            f"the spread correction was fitted to tensors of shape {shape}, sampling gave {tuple(z.shape[1:])}"
        )
    u = record["components"].double().to(z.device)
    a = _coordinates(record, z)
    new = record["gains"].double().to(z.device) * (a - record["sample_mean"].double().to(z.device))
    delta = ((new - a) @ u).reshape(z.shape).to(z.dtype)
    return z + delta  # keeps z's layout (channels-last 3D stays so)


def check_record(record: Any) -> str | None:
    """Why ``record`` is not a usable spread correction (None when it is)."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return f"not a spread-correction record (expected format {FORMAT})"
    keys = ("mean", "components", "variances", "sample_mean", "sample_variances", "gains")
    if not all(isinstance(record.get(k), torch.Tensor) for k in keys) or len(record.get("shape") or ()) != 4:
        return "incomplete spread-correction record"
    shape, comps = tuple(record["shape"]), record["components"]
    if tuple(record["mean"].shape) != shape or comps.ndim != 2 or comps.shape[1] != int(np.prod(shape)):
        return "spread-correction record: mean and components do not match its shape"
    k = comps.shape[0]
    if any(record[key].shape != (k,) for key in keys[2:]):
        return "spread-correction record: one variance, sample mean and gain per component needed"
    if not all(torch.isfinite(record[key].float()).all() for key in keys):
        return "spread-correction record holds NaN or inf values"
    gains = record["gains"]
    if (gains < 1.0 / MAX_GAIN - 1e-6).any() or (gains > MAX_GAIN + 1e-6).any():
        return f"spread-correction record: gains outside [1/{MAX_GAIN:g}, {MAX_GAIN:g}]"
    return None


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """What fit-spread prints and manifests keep: no tensors."""
    lam, v = record["variances"].double(), record["sample_variances"].double()
    return {
        "format": record["format"],
        "shape": list(record["shape"]),
        "n": record["n"],
        "samples": record["samples"],
        "components": int(len(lam)),
        "sample_variance_ratio": [round(float(r), 3) for r in (v / lam)[:6]],
        "gains": [round(float(g), 3) for g in record["gains"][:6]],
        **{k: record[k] for k in ("sampling", "fitted_on") if k in record},
    }
