"""A Gaussian start for rectified-flow sampling: the flow's first stretch solved in closed form.

At high noise a diffusion model's flow is close to the flow of a Gaussian fitted to its training
data, and the first sampling steps can be replaced by that Gaussian's exact solution (Wang & Vastola,
"The unreasonable effectiveness of Gaussian score approximation for diffusion models and its
applications", TMLR 2024: "analytical teleportation"). Here it also corrects the demo model: its own
flow at high noise keeps too little of the training scans' coarse variation, so its samples varied
half as much as the phantoms (docs/benchmarks.md, "Why recall is 0").

With x_s = (1 - s) x_0 + s eps (``diffusion.kind: rflow``) and x_0 ~ N(mu, Sigma), the deterministic
flow from pure noise x_1 = eps keeps each coordinate along an eigenvector u_k of Sigma (variance
lambda_k) standardised:

    x_s . u_k = (1 - s) mu . u_k + sqrt((1 - s)^2 lambda_k + s^2) eps . u_k

(in 1-D the monotone map between two Gaussians; Sigma's eigenvectors decouple the flow). The fit is
probabilistic PCA (Tipping & Bishop 1999): scikit-learn's PCA gives the mean and the first k
components of the encoded training scans; every other direction gets the variance the components
leave, spread evenly (:func:`fit`). At s = 1 the start is the noise itself.

``python -m ctdiff fit-start`` fits it to a checkpoint's training data and writes a copy of the
checkpoint that carries it; ``sample.gaussian_start`` (or ``ctdiff sample --gaussian-start``) is the
level s at which Euler sampling takes over, on the sampler's own grid (the Euler steps above s are
skipped, so 25 steps from s = 0.6 cost 15 network evaluations).

The record holds the training scans' mean and principal components in the space the network
samples: they span the training scans' latents, so share a file that carries them as you would
share the training data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

FORMAT = "gaussian-start-1"
DEFAULT_COMPONENTS = 12  # 3.1 MB at fp16 for the demo model's 16 x 8 x 32 x 32 latents (docs/benchmarks.md)


def fit(latents: torch.Tensor | Sequence[torch.Tensor], components: int | None = DEFAULT_COMPONENTS) -> dict[str, Any]:
    """The Gaussian record of ``latents`` (n tensors of one (C, D, H, W) shape, n >= 2).

    ``components``: principal components kept (at most n - 1; None keeps n - 1). The mean and the
    variances are stored in fp32, the unit components in fp16 (their values are about
    1 / sqrt(C D H W); the start uses the same rounded components for its projection and its
    reconstruction, so at s = 1 it returns the noise)."""
    from sklearn.decomposition import PCA

    x = torch.stack(list(latents)) if not isinstance(latents, torch.Tensor) else latents
    if x.ndim != 5:
        raise ValueError(f"expected n latents of shape (C, D, H, W), got a tensor of shape {tuple(x.shape)}")
    n, shape = x.shape[0], tuple(int(s) for s in x.shape[1:])
    if n < 2:
        raise ValueError(f"a Gaussian start needs at least 2 training scans, got {n}")
    k = n - 1 if components is None else int(components)
    if not 1 <= k <= n - 1:
        raise ValueError(f"components must be between 1 and {n - 1} (the scans less one) for {n} scans, got {k}")
    flat = x.reshape(n, -1).double().numpy()
    if not np.isfinite(flat).all():
        raise ValueError("the encoded training scans hold NaN or inf values")
    pca = PCA(n_components=k, svd_solver="full").fit(flat)
    dims = flat.shape[1]
    total = float(((flat - pca.mean_) ** 2).sum() / (n - 1))
    # scikit-learn's noise_variance_ averages only the other n - 1 - k sample eigenvalues; the
    # probabilistic-PCA variance over the whole complement spreads what the components leave over all
    # its dims - k directions (zero when k = n - 1: the scans span no more)
    kept = float(pca.explained_variance_.sum())
    residual = max(total - kept, 0.0) / (dims - k) if dims > k else 0.0
    return {
        "format": FORMAT,
        "shape": list(shape),
        "n": int(n),
        "mean": torch.from_numpy(pca.mean_).float().reshape(shape),
        "components": torch.from_numpy(pca.components_).to(torch.float16),
        "variances": torch.from_numpy(pca.explained_variance_).float(),
        "residual_variance": float(residual),
    }


def check_record(record: Any) -> str | None:
    """Why ``record`` is not a usable Gaussian start (None when it is)."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return f"not a Gaussian start record (expected format {FORMAT})"
    shape = tuple(record.get("shape") or ())
    comps, var = record.get("components"), record.get("variances")
    mean = record.get("mean")
    if not all(isinstance(t, torch.Tensor) for t in (comps, var, mean)) or len(shape) != 4:
        return "incomplete Gaussian start record"
    if tuple(mean.shape) != shape or comps.ndim != 2 or comps.shape[1] != int(np.prod(shape)):
        return "Gaussian start record: mean and components do not match its shape"
    if var.shape != (comps.shape[0],):
        return "Gaussian start record: one variance per component needed"
    try:
        residual = torch.tensor(float(record.get("residual_variance", 0.0)))
    except (TypeError, ValueError):
        return "Gaussian start record: its residual variance is not a number"
    values = (mean.float(), comps.float(), var.float(), residual)
    if not all(torch.isfinite(t).all() for t in values) or (var < 0).any() or values[3] < 0:
        return "Gaussian start record holds NaN, inf or negative variances"
    return None


def start(record: dict[str, Any], noise: torch.Tensor, s: float) -> torch.Tensor:
    """x_s of the fitted Gaussian's flow from ``noise`` (N, C, D, H, W) = x_1; ``noise`` itself at s >= 1."""
    if not 0.0 < s <= 1.0:
        raise ValueError(f"the start level s must lie in (0, 1], got {s}")
    shape = tuple(record["shape"])
    if tuple(noise.shape[1:]) != shape:
        raise ValueError(
            f"the Gaussian start was fitted to latents of shape {shape}, sampling asks for {tuple(noise.shape[1:])}"
        )
    if s >= 1.0:
        return noise
    eps = noise.reshape(noise.shape[0], -1).double()
    u = record["components"].double().to(noise.device)
    lam = record["variances"].double().to(noise.device)
    mean = record["mean"].double().reshape(-1).to(noise.device)
    a = eps @ u.T  # coordinates along the components
    rest = eps - a @ u  # the complement, where the variance is the residual's
    x = (
        (1.0 - s) * mean
        + (a * torch.sqrt((1.0 - s) ** 2 * lam + s**2)) @ u
        + rest * float(np.sqrt((1.0 - s) ** 2 * record["residual_variance"] + s**2))
    )
    return x.reshape(noise.shape).to(noise.dtype)


def velocity(record: dict[str, Any], x: torch.Tensor, s: float) -> torch.Tensor:
    """The fitted Gaussian's exact flow velocity x_0-estimate minus noise-estimate at (x_s, s), the
    ``RFlowScheduler`` convention (x_0 - noise); an oracle network for tests and checks."""
    flat = x.reshape(x.shape[0], -1).double()
    u = record["components"].double()
    lam = record["variances"].double()
    mean = record["mean"].double().reshape(-1)
    r = float(record["residual_variance"])
    d = flat - (1.0 - s) * mean
    a = d @ u.T
    rest = d - a @ u

    def x0(coef_a, coef_r):  # E[x_0 | x_s] = mu + (1 - s) Lambda / ((1 - s)^2 Lambda + s^2) (x_s - (1 - s) mu)
        return mean + (a * coef_a) @ u + rest * coef_r

    gain = lambda v: (1.0 - s) * v / ((1.0 - s) ** 2 * v + s**2)  # noqa: E731
    x0_hat = x0(gain(lam), gain(torch.tensor(r, dtype=torch.float64)))
    noise_hat = (flat - (1.0 - s) * x0_hat) / s
    return (x0_hat - noise_hat).reshape(x.shape).to(x.dtype)


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """What fit-start prints and manifests keep: no tensors."""
    var = record["variances"].double()
    dims = int(np.prod(record["shape"]))
    total = float(var.sum()) + record["residual_variance"] * (dims - len(var))
    return {
        "format": record["format"],
        "shape": list(record["shape"]),
        "n": record["n"],
        "components": int(len(var)),
        "variance_kept": round(float(var.sum()) / total, 4) if total > 0 else 1.0,
        "top_variances": [round(float(v), 2) for v in var[:4]],
        "residual_variance": round(float(record["residual_variance"]), 6),
        **({"fitted_on": record["fitted_on"]} if "fitted_on" in record else {}),
    }
