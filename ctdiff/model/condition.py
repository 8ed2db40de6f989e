"""What the diffusion U-Net can be conditioned on (``model.condition``), and drawing it at sampling time.

``body_share``: the share of a volume's voxels above -500 HU (:data:`ctdiff.data.body.BODY_THRESHOLD_HU`),
i.e. how much of the field of view the body fills. The demo model's samples varied in it less than half as much
as the phantoms do (SD 0.019 against 0.047-0.053, docs/benchmarks.md "Why recall is 0"): the network
settled every sample near the mean body size. Conditioned on it, the size is an input that sampling
draws from the training cases' own values, so the samples spread as the training data do.

Training (:mod:`ctdiff.training.train`) measures each item after augmentation, and replaces it by
"no value" (NaN) for ``model.condition_dropout`` of the items, so the network also learns the
unconditional flow, which a NaN (or ``cond=None``) asks for. The checkpoint's ``geometry["condition"]``
(:func:`make_record`) keeps the training cases' values. :func:`draw` gives a seed's value: a
variance-preserving smoothed bootstrap of them (Silverman's bandwidth, then shrunk toward the mean so the
draws keep the values' mean and variance; Efron 1979, Silverman 1986 section 6.4.1). This is hand-written
because no library at hand (scipy's ``gaussian_kde.resample`` included) preserves the variance or
takes a per-seed generator of our own.

``latent_pcs`` (``model.space`` latent only): a vector, the coordinates of an item's scaled latent along
the first ``model.condition_components`` principal axes of the training cases' latents (their PCA,
:func:`pca_basis`). The body-share condition gave the samples the phantoms' spread in size, but along
the next principal axes they still varied only 0.09-0.16x as much as the training latents
(docs/benchmarks.md, "The body-share condition on the factor-2 latents"); with the leading coordinates as
inputs, sampling draws them too (each coordinate its own smoothed bootstrap of a training case's vector,
one case picked for all, so the draw keeps the coordinates' joint spread). The record then holds
one list per case, and its mean and SD are lists. ``model.condition_grid`` takes the PCA of the latents
averaged to a few cells per axis instead of the whole latents: on the factor-2 coder's latents the whole
latents' first four axes carry nearly equal variance (SD 95-117), so they are not the coarse layout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ctdiff.config import CONDITION_DRAWS
from ctdiff.data.body import BODY_THRESHOLD_HU
from ctdiff.data.dataset import seed_from
from ctdiff.data.tensors import model_to_hu

BODY_SHARE = "body_share"
LATENT_PCS = "latent_pcs"
# how sampling draws a seed's value from the training cases' (sample.condition_draw; :func:`draw`)
DRAWS = CONDITION_DRAWS
# the domain of stream ids used with seed_from for the condition draw (apart from the sampler's noise)
_DRAW_STREAM = 11


def body_share(x: torch.Tensor, window: Sequence[float]) -> torch.Tensor:
    """Share of voxels above -500 HU in each item of a model-scaled batch ``(N, C, D, H, W)`` (channel 0)."""
    if x.ndim != 5:
        raise ValueError(f"expected an (N, C, D, H, W) batch, got shape {tuple(x.shape)}")
    hu = model_to_hu(x[:, :1].float(), window)
    return (hu > BODY_THRESHOLD_HU).flatten(1).float().mean(dim=1)


def is_image_condition(name: str) -> bool:
    """True for a condition measured on the image (:func:`measure`); False for one measured on the latent."""
    return name != LATENT_PCS


def measure(name: str, x: torch.Tensor, window: Sequence[float]) -> torch.Tensor:
    """The condition ``name`` of each item of a model-scaled image batch, shape ``(N,)``."""
    if name == BODY_SHARE:
        return body_share(x, window)
    if name == LATENT_PCS:
        raise ValueError("condition latent_pcs is measured on the latents (pca_basis, project), not on images")
    raise ValueError(f"unknown condition {name!r}")


def _flat(z: torch.Tensor, grid: Sequence[int] | None) -> torch.Tensor:
    """A (C, D, H, W) latent as one fp64 vector: whole, or each channel averaged to ``grid`` cells per
    (z, y, x) (at most the latent's own size along each axis)."""
    z = z.double()
    if grid is None:
        return z.reshape(-1)
    cells = tuple(min(int(g), int(n)) for g, n in zip(grid, z.shape[-3:]))
    return torch.nn.functional.adaptive_avg_pool3d(z[None], cells).reshape(-1)


def pca_basis(latents: Sequence[torch.Tensor], components: int, grid: Sequence[int] | None = None) -> dict[str, Any]:
    """The mean (D,) and first ``components`` unit principal axes (k, D) of n latents of one shape, in fp64
    (scikit-learn's PCA, as the Gaussian start and the spread correction fit theirs; n > components).
    ``grid``: the PCA of the latents averaged to that many cells per axis (:func:`_flat`), kept in the basis."""
    from sklearn.decomposition import PCA

    flat = torch.stack([_flat(z, grid) for z in latents]).numpy()
    if flat.shape[0] <= components:
        raise ValueError(
            f"condition latent_pcs with {components} components needs more than {components} training cases, "
            f"got {flat.shape[0]}"
        )
    if not np.isfinite(flat).all():
        raise ValueError("the encoded training cases hold NaN or inf values")
    pca = PCA(n_components=components, svd_solver="full").fit(flat)
    return {
        "mean": torch.from_numpy(pca.mean_),
        "components": torch.from_numpy(pca.components_),
        "grid": None if grid is None else [int(g) for g in grid],
    }


def project(basis: dict[str, Any], z: torch.Tensor) -> list[float]:
    """One latent's coordinates along the basis' axes (averaged to the basis' grid first, if it has one)."""
    flat = _flat(z, basis.get("grid")) - basis["mean"]
    return [float(a) for a in basis["components"] @ flat]


def _matrix(values: Sequence) -> np.ndarray:
    """The values as an (n, k) float array: a scalar condition's as k = 1."""
    arr = np.asarray(values, dtype=np.float64)
    return arr[:, None] if arr.ndim == 1 else arr


def make_record(name: str, values: Sequence) -> dict[str, Any]:
    """What a checkpoint carries: the condition's name and the training cases' values (one number per
    case, or one list per case for a vector condition), with their mean and SD (per coordinate)."""
    vector = name == LATENT_PCS
    vals = [[float(a) for a in v] for v in values] if vector else [float(v) for v in values]
    if not vals or (vector and len({len(v) for v in vals}) != 1) or not np.isfinite(_matrix(vals)).all():
        raise ValueError(f"condition {name!r} needs finite training values, one per case, got {vals}")
    arr = _matrix(vals)
    mean, sd = arr.mean(0), arr.std(0)
    if vector:
        return {"name": name, "values": vals, "mean": mean.tolist(), "sd": sd.tolist()}
    return {"name": name, "values": vals, "mean": float(mean[0]), "sd": float(sd[0])}


def dims(record: dict[str, Any]) -> int | None:
    """A vector condition's length, or None for a scalar one."""
    first = record["values"][0]
    return len(first) if isinstance(first, list) else None


def check_record(record: Any) -> str | None:
    """A one-line problem with a checkpoint's condition record, or None."""
    if not isinstance(record, dict) or not isinstance(record.get("values"), list) or not record["values"]:
        return "the checkpoint's condition record has no training values"
    try:
        arr = np.asarray(record["values"], dtype=np.float64)
    except (TypeError, ValueError):
        return "the checkpoint's condition record has non-numeric values"
    if arr.ndim not in (1, 2) or arr.size == 0:
        return "the checkpoint's condition record's values are neither one number nor one list per case"
    if not np.isfinite(arr).all():
        return "the checkpoint's condition record has non-finite values"
    return None


def check_value(name: str, value: Any) -> float:
    """A requested condition value as a float, or ValueError naming the problem."""
    if name == LATENT_PCS:
        raise ValueError(
            "condition latent_pcs (principal coordinates of the latents) is drawn per seed; "
            "it takes no fixed value (--condition is for body_share models)"
        )
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"condition {name} must be a number, got {value!r}") from None
    if name == BODY_SHARE and not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ValueError(f"condition {name} must be a finite share in [0, 1], got {value!r}")
    return v


def draw(record: dict[str, Any], seed: int, method: str = "bootstrap") -> float | list[float]:
    """The condition value for sample ``seed``: a variance-preserving smoothed bootstrap of the record's values
    (``method`` bootstrap), or a draw from the Gaussian with their mean and covariance (``method`` gaussian).

    A training value v_i picked at random plus Gaussian jitter h e (Silverman's h = 0.9 min(SD, IQR / 1.34)
    n^-1/5), moved toward the mean by 1 / sqrt(1 + h^2 / SD^2) so the draws' mean and variance are the
    values'. One value, or values with no spread, give that value. A vector condition picks one case
    for all its coordinates and jitters each coordinate so (its own h and SD), and returns a list.

    The Gaussian (numpy's ``multivariate_normal``, the population covariance) names no training case; its
    draws keep the values' mean and covariance too, but not their shape. (Measured on a guided latent_pcs
    model that copied training scans, it did not stop the copying: docs/benchmarks.md.)
    """
    if method not in DRAWS:
        raise ValueError(f"condition draw must be one of {DRAWS}, got {method!r}")
    vals = _matrix(record["values"])
    rng = np.random.default_rng(seed_from(_DRAW_STREAM, int(seed) & 0xFFFFFFFF, int(seed) >> 32))
    if method == "gaussian":
        cov = np.atleast_2d(np.cov(vals, rowvar=False, bias=True))
        out = rng.multivariate_normal(vals.mean(0), cov, method="eigh").tolist()
        return _shaped(record, out)
    picked = vals[rng.integers(len(vals))]
    eps = rng.standard_normal(vals.shape[1])
    out = []
    for j in range(vals.shape[1]):
        col, pick = vals[:, j], float(picked[j])
        mean, sd = float(col.mean()), float(col.std())
        if len(col) < 2 or sd == 0.0:
            out.append(pick)
            continue
        iqr = float(np.subtract(*np.percentile(col, [75, 25])))
        spread = min(sd, iqr / 1.34) if iqr > 0 else sd
        h = 0.9 * spread * len(col) ** -0.2
        out.append(mean + (pick - mean + h * float(eps[j])) / math.sqrt(1.0 + h * h / (sd * sd)))
    return _shaped(record, out)


def _shaped(record: dict[str, Any], out: list[float]) -> float | list[float]:
    """A draw as the record's kind: a list (vector condition), or one number (a body share clipped to [0, 1])."""
    if dims(record) is not None:
        return [float(a) for a in out]
    value = float(out[0])
    if record.get("name") == BODY_SHARE:
        value = min(1.0, max(0.0, value))
    return value
