"""Bootstrap confidence intervals that resample cases (whole scans), never slices.

Slices of one scan are not independent, so every interval in a report comes from drawing
cases with replacement inside each cohort and recomputing the metric.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np


def bootstrap_cis(
    statistic: Callable[..., Mapping[str, float]],
    sizes: Sequence[int],
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
    min_valid: float = 0.5,
) -> dict[str, list[float] | None]:
    """Percentile intervals of several statistics computed from the same case resamples.

    ``sizes`` are the number of cases in each cohort; each replicate draws ``sizes[i]`` indices
    with replacement from ``range(sizes[i])`` for every cohort and calls ``statistic`` with the
    index arrays; it returns ``{name: value}``. Per name, non-finite replicates are dropped; if
    fewer than ``min_valid`` of them remain, or ``n_boot`` is 0, or a cohort has fewer than 2
    cases, that name's interval is ``None`` (no interval).
    """
    values: dict[str, list[float]] = {}
    if n_boot <= 0 or any(int(s) < 2 for s in sizes):
        return {}
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        idx = [rng.integers(0, int(s), size=int(s)) for s in sizes]
        for name, v in statistic(*idx).items():
            values.setdefault(name, [])
            if v is not None and np.isfinite(v):
                values[name].append(float(v))
    alpha = (1.0 - level) / 2.0
    out: dict[str, list[float] | None] = {}
    for name, vals in values.items():
        if len(vals) < max(2, min_valid * n_boot):
            out[name] = None
        else:
            lo, hi = np.quantile(vals, [alpha, 1.0 - alpha])
            out[name] = [float(lo), float(hi)]
    return out


def bootstrap_ci(
    statistic: Callable[..., float],
    sizes: Sequence[int],
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
    min_valid: float = 0.5,
) -> list[float] | None:
    """Percentile interval of one statistic ``statistic(idx_1, ..., idx_k)``; see :func:`bootstrap_cis`."""
    out = bootstrap_cis(lambda *idx: {"v": statistic(*idx)}, sizes, n_boot, seed, level, min_valid)
    return out.get("v")
