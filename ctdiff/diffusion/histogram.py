"""Histogram matching of a generated volume's body to the training scans' (``sample.histogram_match``).

A latent model's samples come out of a decoder that blurs thin structures (fat planes, organ edges)
and shifts each volume's tissue intensities a little differently: on the demo recipes the samples' fat
peak sat at -62 HU (SD 24 across samples) against the phantoms' -92 (SD 6), and the radiomics
features of every filter moved together, keeping the samples outside the phantoms' k-NN balls
(docs/benchmarks.md, "Histogram matching of the body").

:func:`fit` records the quantiles of the training scans' body voxels (above ``body_above_hu``, pooled
over the scans). :func:`match` maps one generated volume so that its body voxels take those
quantiles: a monotone map T fitted from the volume as drawn (with its noise) to the reference, applied
to the decoder's noise-free estimate, and the noise added back unchanged:

    out = T(estimate) + (drawn - estimate),   T: the drawn body's quantiles -> the reference's

so the noise model's noise keeps its amplitude and spectrum (a map applied to the noisy volume itself
amplified the noise where T is steep: on the demo recipe the finest wavelet band's texture features
moved 35 real SDs and FRD rose from 8.7 to 10.2). Voxels at or below ``body_above_hu`` (air) are left
as they are; T is the identity there and continuous at the threshold. Above the drawn body's
maximum, T shifts by the last quantiles' difference.

Each volume is matched to the same pooled reference: the body's share of the volume is kept (the air
is untouched) but the tissue mix inside the body is the training cohort's for every sample. Why by
hand: scikit-image's ``match_histograms`` maps a whole image to one reference image and cannot apply
the map fitted on one array (the drawn volume) to another (the estimate), nor keep a range fixed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ctdiff.data.body import BODY_THRESHOLD_HU

FORMAT = "ctdiff histogram reference v1"
BODY_ABOVE_HU = BODY_THRESHOLD_HU  # the body of model.condition body_share, prepare and eval's masks
N_QUANTILES = 1001
MIN_BODY_VOXELS = 1000  # fewer body voxels than this: the volume is returned as drawn


def fit(volumes_hu: Iterable[np.ndarray], body_above_hu: float = BODY_ABOVE_HU, n_quantiles: int = N_QUANTILES):
    """The reference: ``n_quantiles`` evenly spaced quantiles of all the volumes' voxels above
    ``body_above_hu`` (HU, pooled). ValueError when they hold fewer than ``MIN_BODY_VOXELS`` such voxels
    or a non-finite value."""
    if not np.isfinite(body_above_hu):
        raise ValueError(f"body_above_hu must be finite, got {body_above_hu}")
    if int(n_quantiles) < 3:
        raise ValueError(f"n_quantiles must be at least 3, got {n_quantiles}")
    parts = []
    for v in volumes_hu:
        a = np.asarray(v, dtype=np.float32)
        if not np.isfinite(a).all():
            raise ValueError("a volume holds NaN or infinite values")
        parts.append(a[a > body_above_hu])
    body = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if body.size < MIN_BODY_VOXELS:
        raise ValueError(
            f"the volumes hold {body.size} voxels above {body_above_hu:g} HU; at least {MIN_BODY_VOXELS} "
            "are needed for a body histogram"
        )
    q = np.quantile(body, np.linspace(0.0, 1.0, int(n_quantiles)))
    return {
        "format": FORMAT,
        "body_above_hu": float(body_above_hu),
        "quantiles_hu": [round(float(v), 3) for v in q],
        "n_voxels": int(body.size),
        "n_volumes": len(parts),
    }


def check_record(record: Any) -> str | None:
    """None when ``record`` is a usable reference, else the problem in words."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return "its histogram reference is not a ctdiff histogram reference (refit with fit-histogram)"
    q = np.asarray(record.get("quantiles_hu", []), dtype=np.float64)
    thr = record.get("body_above_hu")
    if q.ndim != 1 or q.size < 3 or not np.isfinite(q).all() or np.any(np.diff(q) < 0):
        return "its histogram reference's quantiles are not an increasing list of finite HU values"
    if not isinstance(thr, int | float) or not np.isfinite(thr) or q[0] < thr:
        return "its histogram reference's body threshold is missing or above its quantiles"
    return None


def match(estimate_hu: np.ndarray, drawn_hu: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """``T(estimate) + (drawn - estimate)`` (float32), T mapping the quantiles of ``drawn``'s voxels above
    the record's threshold onto the record's; ``drawn`` itself (as float32) when it has fewer than
    ``MIN_BODY_VOXELS`` such voxels. ``estimate`` and ``drawn`` have one shape; with no noise model
    they are the same array and the result is the drawn volume with the reference's body histogram."""
    est = np.asarray(estimate_hu, dtype=np.float32)
    drawn = np.asarray(drawn_hu, dtype=np.float32)
    if est.shape != drawn.shape:
        raise ValueError(f"estimate {est.shape} and drawn volume {drawn.shape} differ in shape")
    thr = float(record["body_above_hu"])
    ref = np.asarray(record["quantiles_hu"], dtype=np.float64)
    body = drawn[drawn > thr]
    if body.size < MIN_BODY_VOXELS:
        return drawn.copy()
    src = np.quantile(body, np.linspace(0.0, 1.0, ref.size))
    # knots: (thr, thr) so that T is continuous with the identity below, then quantile i -> quantile i;
    # ties in the drawn quantiles keep their first knot, and T stays non-decreasing
    xs = np.concatenate([[thr], src[1:]])
    ys = np.concatenate([[thr], ref[1:]])
    xs, first = np.unique(xs, return_index=True)
    ys = np.maximum.accumulate(ys[first])
    mapped = np.interp(est, xs, ys)
    mapped = np.where(est > xs[-1], est + (ys[-1] - xs[-1]), mapped)
    mapped = np.where(est <= thr, est, mapped)
    return (mapped + (drawn - est)).astype(np.float32)


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """What fit-histogram prints: the threshold, the voxel and volume counts and a few quantiles."""
    q = record["quantiles_hu"]
    n = len(q) - 1
    return {
        "body_above_hu": record["body_above_hu"],
        "n_voxels": record["n_voxels"],
        "n_volumes": record["n_volumes"],
        "quantiles_hu": {f"{p:g}": q[round(p * n)] for p in (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)},
    }
