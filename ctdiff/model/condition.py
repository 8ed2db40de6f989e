"""A scalar the diffusion U-Net can be conditioned on (``model.condition``), and drawing it at sampling time.

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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ctdiff.data.body import BODY_THRESHOLD_HU
from ctdiff.data.dataset import seed_from
from ctdiff.data.tensors import model_to_hu

BODY_SHARE = "body_share"
# the domain of stream ids used with seed_from for the condition draw (apart from the sampler's noise)
_DRAW_STREAM = 11


def body_share(x: torch.Tensor, window: Sequence[float]) -> torch.Tensor:
    """Share of voxels above -500 HU in each item of a model-scaled batch ``(N, C, D, H, W)`` (channel 0)."""
    if x.ndim != 5:
        raise ValueError(f"expected an (N, C, D, H, W) batch, got shape {tuple(x.shape)}")
    hu = model_to_hu(x[:, :1].float(), window)
    return (hu > BODY_THRESHOLD_HU).flatten(1).float().mean(dim=1)


def measure(name: str, x: torch.Tensor, window: Sequence[float]) -> torch.Tensor:
    """The condition ``name`` of each item of a model-scaled image batch, shape ``(N,)``."""
    if name == BODY_SHARE:
        return body_share(x, window)
    raise ValueError(f"unknown condition {name!r}")


def make_record(name: str, values: Sequence[float]) -> dict[str, Any]:
    """What a checkpoint carries: the condition's name and the training cases' values."""
    vals = [float(v) for v in values]
    if not vals or not all(math.isfinite(v) for v in vals):
        raise ValueError(f"condition {name!r} needs finite training values, got {vals}")
    arr = np.asarray(vals)
    return {"name": name, "values": vals, "mean": float(arr.mean()), "sd": float(arr.std())}


def check_record(record: Any) -> str | None:
    """A one-line problem with a checkpoint's condition record, or None."""
    if not isinstance(record, dict) or not isinstance(record.get("values"), list) or not record["values"]:
        return "the checkpoint's condition record has no training values"
    try:
        vals = [float(v) for v in record["values"]]
    except (TypeError, ValueError):
        return "the checkpoint's condition record has non-numeric values"
    if not all(math.isfinite(v) for v in vals):
        return "the checkpoint's condition record has non-finite values"
    return None


def check_value(name: str, value: Any) -> float:
    """A requested condition value as a float, or ValueError naming the problem."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"condition {name} must be a number, got {value!r}") from None
    if name == BODY_SHARE and not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ValueError(f"condition {name} must be a finite share in [0, 1], got {value!r}")
    return v


def draw(record: dict[str, Any], seed: int) -> float:
    """The condition value for sample ``seed``: a variance-preserving smoothed bootstrap of the record's values.

    A training value v_i picked at random plus Gaussian jitter h e (Silverman's h = 0.9 min(SD, IQR / 1.34)
    n^-1/5), moved toward the mean by 1 / sqrt(1 + h^2 / SD^2) so the draws' mean and variance are the
    values'. One value, or values with no spread, give that value.
    """
    vals = np.asarray(record["values"], dtype=np.float64)
    rng = np.random.default_rng(seed_from(_DRAW_STREAM, int(seed) & 0xFFFFFFFF, int(seed) >> 32))
    pick = float(vals[rng.integers(len(vals))])
    eps = float(rng.standard_normal())
    mean, sd = float(vals.mean()), float(vals.std())
    if len(vals) < 2 or sd == 0.0:
        return pick
    iqr = float(np.subtract(*np.percentile(vals, [75, 25])))
    spread = min(sd, iqr / 1.34) if iqr > 0 else sd
    h = 0.9 * spread * len(vals) ** -0.2
    value = mean + (pick - mean + h * eps) / math.sqrt(1.0 + h * h / (sd * sd))
    if record.get("name") == BODY_SHARE:
        value = min(1.0, max(0.0, value))
    return value
