"""A report metric's entry (value, ci95, real, generated, reference, better, unit, reason,
description) and the two ways most metrics fill it: a per-scan property (:func:`_property_metric`)
and a two-sample distance with case-bootstrap CI and reference floor (:func:`_two_sample`).

Shared by the family runners in :mod:`eval.report.build` and :mod:`eval.report.fid2d`; ``better``,
``unit`` and ``description`` come from the metric registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from eval.report.gap import finite_number
from eval.report.registry import METRICS
from eval.stats import bootstrap_ci, bootstrap_cis


def _nanmean(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def _entry(
    name: str,
    value=None,
    ci=None,
    real=None,
    generated=None,
    reference=None,
    reason=None,
    matched=None,
    real_ci=None,
) -> dict[str, Any]:
    spec = METRICS[name]
    v = finite_number(value)
    if v is None and reason is None:
        reason = "not computable (result is not a finite number)"
    out = {
        "value": v,
        "ci95": ci if v is not None else None,
        "real": finite_number(real),
        "generated": finite_number(generated),
        "reference": finite_number(reference),
        "better": spec.better,
        "unit": spec.unit,
        "reason": reason,
        "description": spec.description,
    }
    if real_ci is not None and all(finite_number(c) is not None for c in real_ci):
        out["real_ci95"] = [float(c) for c in real_ci]  # the real cohort's own mean, bootstrapped over its scans
    if finite_number(matched) is not None:
        out["matched_value"] = finite_number(matched)  # see _two_sample; the gap reads it (eval.report.gap)
    return out


@dataclasses.dataclass
class _Reference:
    """The two real sets the reference floor compares: a (plays 'real') and b (plays 'generated')."""

    kind: str
    a: tuple[str, np.ndarray]  # (cohort, indices)
    b: tuple[str, np.ndarray]


def _make_reference(n_real: int, n_train: int, seed: int) -> _Reference | None:
    if n_train:
        return _Reference("held-out real vs training real", ("train", np.arange(n_train)), ("real", np.arange(n_real)))
    if n_real < 4:
        return None
    perm = np.random.default_rng(seed).permutation(n_real)
    half = n_real // 2
    return _Reference(
        "split of the real cohort into two random halves",
        ("real", np.sort(perm[:half])),
        ("real", np.sort(perm[half:])),
    )


def _finite_rows(a: np.ndarray) -> np.ndarray:
    return a[np.isfinite(a).all(axis=1)] if a.ndim == 2 else a[np.isfinite(a)]


def _rows(data: dict[str, np.ndarray], side: tuple[str, np.ndarray]) -> np.ndarray:
    return data[side[0]][side[1]]


# ------------------------------------------------------------------------------ metric helpers
def _property_metric(name: str, values: dict[str, np.ndarray], ref: _Reference | None, cfg: dict) -> dict[str, Any]:
    """A per-scan property: value = generated mean, real = real mean, CI over generated scans; the real
    mean's own 95 % CI (bootstrap over real scans) is ``real_ci95``: is the generated mean inside it?"""
    gen = np.asarray(values["generated"], dtype=np.float64)
    real = np.asarray(values["real"], dtype=np.float64)
    n_gen = int(np.isfinite(gen).sum())
    if n_gen < 2:
        return _entry(
            name, real=_nanmean(real), reason=f"fewer than 2 generated scans where it is measurable ({n_gen})"
        )
    ci = bootstrap_ci(lambda ig: _nanmean(gen[ig]), [len(gen)], cfg["n_bootstrap"], cfg["seed"])
    real_ci = None
    if int(np.isfinite(real).sum()) >= 2:
        real_ci = bootstrap_ci(lambda ir: _nanmean(real[ir]), [len(real)], cfg["n_bootstrap"], cfg["seed"] + 1)
    reference = None
    if ref is not None:
        a, b = _rows(values, ref.a), _rows(values, ref.b)
        reference = abs(_nanmean(b) - _nanmean(a))
    return _entry(
        name, _nanmean(gen), ci, real=_nanmean(real), generated=_nanmean(gen), reference=reference, real_ci=real_ci
    )


def _two_sample(
    names: Sequence[str],
    fn: Callable[[np.ndarray, np.ndarray], dict[str, float]],
    data: dict[str, np.ndarray],
    ref: _Reference | None,
    n_boot: int,
    seed: int,
    min_cases: int = 2,
    point: Callable[[np.ndarray, np.ndarray], dict[str, float]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Distances between the real and generated sets (rows = scans); CI resamples both cohorts.

    ``point`` (default ``fn``) computes the headline value; ``fn`` the replicates and reference.
    """
    real, gen = data["real"], data["generated"]
    if len(real) < min_cases or len(gen) < min_cases:
        reason = f"needs at least {min_cases} real and {min_cases} generated scans (have {len(real)} and {len(gen)})"
        return {n: _entry(n, reason=reason) for n in names}
    values = (point or fn)(real, gen)
    cis = bootstrap_cis(lambda ir, ig: fn(real[ir], gen[ig]), [len(real), len(gen)], n_boot, seed)
    refs: dict[str, float] = {}
    matched: dict[str, float] = {}
    if ref is not None:
        a, b = _rows(data, ref.a), _rows(data, ref.b)
        if len(a) >= min_cases and len(b) >= min_cases:
            refs = fn(a, b)
            if ref.a[0] == ref.b[0] == "real" and len(gen) >= len(b):
                matched = _matched_to_reference(fn, a, gen, len(b), names, seed)
    return {n: _entry(n, values.get(n), cis.get(n), reference=refs.get(n), matched=matched.get(n)) for n in names}


MATCHED_DRAWS = 20


def _matched_to_reference(fn, a: np.ndarray, gen: np.ndarray, size: int, names, seed: int) -> dict[str, float]:
    """The generated set compared as the split-half reference compares real with real.

    A split-half reference compares half A of the real cohort with half B (e.g. 6 vs 6 scans), while
    the headline value compares all real with all generated scans (12 vs 12). Two-sample distances
    depend on those sizes: a Fréchet distance shrinks as the sets grow, and FRD z-scores both sets by
    its first set's SD, which over 6 scans can be tiny for a feature that barely varies (measured:
    a 6-vs-6 real reference of 21.1 against 13.3 for 12 generated vs 12 real scans that every other
    metric put far apart). So the gap compares like with like: half A against random subsets of
    ``size`` generated scans (the size of half B), the mean over :data:`MATCHED_DRAWS` draws.
    """
    rng = np.random.default_rng(seed + 7919)
    draws = [fn(a, gen[np.sort(rng.choice(len(gen), size, replace=False))]) for _ in range(MATCHED_DRAWS)]
    out = {}
    for n in names:
        vals = [v for v in (finite_number(d.get(n)) for d in draws) if v is not None]
        if vals:
            out[n] = float(np.mean(vals))
    return out
