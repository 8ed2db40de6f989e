"""The gap and status of each report metric: how far generated is from real, in units of a floor.

One rule for every metric, computed here and written into each metric entry of report.json
(``floor``, ``floor_basis``, ``gap``, ``status``); the app only displays it.

Every metric is first read as a *distance* ``d >= 0`` from the ideal, and its *floor* ``f`` is
the distance two sets of real scans already show, never smaller than what the measurement can
resolve:

==========================  ====================================  ==================================
``better``                  distance ``d``                        reference ``r`` (real vs real)
==========================  ====================================  ==================================
``lower`` (FRD, KID, ...)   ``max(value, 0)``                      ``|reference|``
``higher`` (precision...)   ``max(1 - value, 0)`` (1 = ideal)      ``|1 - reference|``
``closer-to-real``          ``|generated - real|``                 ``|reference|`` (real-vs-real diff.)
==========================  ====================================  ==================================

For a ``lower``/``higher`` metric whose reference is a split of the real cohort into two halves,
the distance is read from ``matched_value`` when the entry has one: half A of the real cohort against
random generated subsets of half B's size (:func:`eval.report.entries._matched_to_reference`), so
that value and reference compare sets of the same sizes with the same first set (a 6-vs-6 FRD
reference is not comparable with a 12-vs-12 value). ``value`` stays the headline number.

``floor = max(r, SE, resolution)`` where

- ``SE`` is the bootstrap standard error of the metric's value, read from its 95 % percentile
  interval as ``(hi - lo) / 3.92``: the sampling noise of the comparison at this cohort size. A
  real-vs-real reference smaller than that noise is luck, not a floor. For FRD (a log) it is read
  from the lower half of the exponentiated interval, ``(exp(value) - exp(lo)) / 1.96``
  (:func:`log_lower_se`);
- ``resolution`` is the smallest step the measurement can take (:func:`metric_resolution`): one
  frequency bin for ``nps_peak_frequency``, one scan (``1 / n``) for fractions of scans
  (precision, recall, coverage, memorisation), ``1 / (k n)`` for density.

``gap = d / floor`` (1 = as far apart as two real sets, or as the measurement can tell);
status ``close`` (gap <= 1.25), ``apart`` (<= 2), ``far`` (larger); ``n/a`` when the value is
missing, there is no real-vs-real reference, or the floor is still 0. FRD is a log (``unit ==
"log"``): its value, reference and interval are exponentiated first (the squared Fréchet distance),
so its gap is a ratio of squared distances like every other ``lower`` metric; every status other
than ``n/a`` has a finite gap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

CLOSE, APART = 1.25, 2.0
STATUSES = ("close", "apart", "far", "n/a")
Z95 = 1.959963984540054  # two-sided 95 % normal quantile: CI width = 2 * Z95 * SE
LOG_CAP = 700.0  # exp() of more overflows a float: larger log-gaps are capped (still "far")


def finite_number(x: Any) -> float | None:
    """``x`` as a finite float, or None (missing, non-numeric, bool, NaN or inf): how a report's
    numbers are read here, by the app's dashboard, and written by :mod:`eval.report.entries`."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _exp(x: float | None) -> float | None:
    return None if x is None else math.exp(min(x, LOG_CAP))


def bootstrap_se(ci95: Any, log: bool = False) -> float | None:
    """SE from a 95 % percentile interval ``[lo, hi]`` (``log``: the interval is of a log value)."""
    if not isinstance(ci95, (list, tuple)) or len(ci95) != 2:
        return None
    lo, hi = finite_number(ci95[0]), finite_number(ci95[1])
    if lo is None or hi is None:
        return None
    if log:
        lo, hi = _exp(lo), _exp(hi)
    return abs(hi - lo) / (2.0 * Z95)


def log_lower_se(value: Any, ci95: Any) -> float | None:
    """SE of ``exp(value)`` for a log metric (FRD), read from the *lower* half of its 95 % interval:
    ``(exp(value) - exp(lo)) / Z95``; None when the value is not above ``lo``.

    Why not the whole interval: exponentiated, a bootstrap interval of FRD is very skewed. Resamples
    that repeat scans collapse the feature covariance and throw the squared distance up by orders of
    magnitude, so ``(exp(hi) - exp(lo)) / 3.92`` can exceed the distance itself and would call any
    distance "close" (the 128 x 128 x 32 demo: FRD 18.8 [18.3, 24.9] against a real-vs-real 6.7). The
    lower half is the sampling noise that could bring the value down towards the floor.
    """
    v = finite_number(value)
    if not isinstance(ci95, (list, tuple)) or len(ci95) != 2 or v is None:
        return None
    lo = finite_number(ci95[0])
    if lo is None or v <= lo:
        return None
    return (_exp(v) - _exp(lo)) / Z95


def metric_resolution(
    name: str,
    n_real: int,
    n_generated: int,
    nps_bin: float | None = None,
    prdc_k: int | None = None,
) -> float | None:
    """The smallest step ``name`` can take with these cohort sizes (None: no stated resolution)."""
    if name == "nps_peak_frequency":
        return nps_bin if nps_bin and nps_bin > 0 else None
    if name in ("precision", "memorization") and n_generated > 0:
        return 1.0 / n_generated
    if name in ("recall", "coverage") and n_real > 0:
        return 1.0 / n_real
    if name == "density" and n_generated > 0:
        return 1.0 / (max(1, int(prdc_k or 1)) * n_generated)
    return None


def report_resolutions(
    names, n_real: int, n_generated: int, curves: Mapping[str, Any], prdc_k: int | None = None
) -> dict[str, float | None]:
    """:func:`metric_resolution` of every metric in ``names`` for a report (NPS bin from its curves)."""
    freq = ((curves or {}).get("nps") or {}).get("frequency_mm") or []
    nps_bin = float(freq[1]) - float(freq[0]) if len(freq) >= 2 else None
    # prdc caps k at n // 5 (eval.metrics.distribution.prdc): the density step uses the k it ran with
    k = max(1, min(int(prdc_k or 1), min(n_real, n_generated) // 5)) if prdc_k else None
    return {n: metric_resolution(n, n_real, n_generated, nps_bin=nps_bin, prdc_k=k) for n in names}


def floor_and_gap(metric: Mapping[str, Any], resolution: float | None = None) -> dict[str, Any]:
    """``{"floor", "floor_basis", "gap", "status"}`` of one metric entry (see the module doc).

    ``resolution`` defaults to the entry's own ``resolution`` key. ``floor_basis`` names the term
    that set the floor: ``"reference"``, ``"bootstrap SE"`` or ``"resolution"``.
    """
    na = {"floor": None, "floor_basis": None, "gap": None, "status": "n/a"}
    better = metric.get("better")
    log = metric.get("unit") == "log"
    if resolution is None:
        resolution = finite_number(metric.get("resolution"))
    ref = finite_number(metric.get("reference"))
    value = finite_number(metric.get("value"))
    matched = finite_number(metric.get("matched_value"))
    if matched is not None and value is not None and better in ("lower", "higher"):
        value = matched  # compared at the reference's set sizes (see the module doc)
    if better == "closer-to-real":
        real, gen = finite_number(metric.get("real")), finite_number(metric.get("generated"))
        if real is None or gen is None or ref is None:
            return na
        d, r = abs(gen - real), abs(ref)
    elif better in ("lower", "higher"):
        if value is None or ref is None:
            return na
        if better == "lower":
            if log:
                value, ref = _exp(value), _exp(ref)
            d, r = max(value, 0.0), abs(ref)
        else:
            d, r = max(1.0 - value, 0.0), abs(1.0 - ref)
    else:
        return na
    if log and better == "lower":  # see log_lower_se: the upper tail of exp(interval) is not noise
        se = log_lower_se(metric.get("value"), metric.get("ci95"))
    else:
        se = bootstrap_se(metric.get("ci95"))
    terms = {"reference": r, "bootstrap SE": se, "resolution": resolution}
    terms = {k: v for k, v in terms.items() if v is not None and math.isfinite(v) and v > 0}
    if not terms:
        return na
    basis = max(terms, key=terms.get)
    floor = terms[basis]
    g = d / floor
    if not math.isfinite(g):
        g = math.exp(LOG_CAP)
    return {"floor": floor, "floor_basis": basis, "gap": g, "status": status_of(g)}


def gap(metric: Mapping[str, Any], resolution: float | None = None) -> float | None:
    """The gap of one metric entry (None when its status is ``n/a``)."""
    return floor_and_gap(metric, resolution)["gap"]


def status_of(g: float | None) -> str:
    """``close`` / ``apart`` / ``far`` from a gap; ``n/a`` for None."""
    if g is None:
        return "n/a"
    if g <= CLOSE:
        return "close"
    if g <= APART:
        return "apart"
    return "far"


def annotate(
    metrics: Mapping[str, dict[str, Any]], resolutions: Mapping[str, float | None] | None = None
) -> dict[str, dict[str, Any]]:
    """Each entry with ``resolution``, ``floor``, ``floor_basis``, ``gap`` and ``status`` added."""
    out = {}
    for name, m in metrics.items():
        res = (resolutions or {}).get(name)
        out[name] = {**m, "resolution": res, **floor_and_gap(m, res)}
    return out
