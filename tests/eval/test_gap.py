"""eval.report.gap: one floor rule for every metric, so that no gap divides by almost zero."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.report.gap import (
    APART,
    CLOSE,
    Z95,
    annotate,
    bootstrap_se,
    floor_and_gap,
    gap,
    metric_resolution,
    report_resolutions,
    status_of,
)

BIN = 1.0 / (27 * 1.5)  # one NPS frequency bin of a 27-px ROI at 1.5 mm: 0.0247 mm^-1


def test_nps_peak_with_a_vanishing_reference_uses_one_frequency_bin():
    # the dashboard once showed gap 1.8e15 here: both halves of the real cohort had the same peak
    m = {
        "better": "closer-to-real",
        "unit": "mm^-1",
        "real": 0.1,
        "generated": 0.1 + BIN,
        "reference": 3.5e-18,
        "ci95": [0.118, 0.126],
        "value": 0.1 + BIN,
    }
    out = floor_and_gap(m, resolution=BIN)
    assert out["floor"] == pytest.approx(BIN) and out["floor_basis"] == "resolution"
    assert out["gap"] == pytest.approx(1.0) and out["status"] == "close"  # one bin apart = what it can resolve
    # without a stated resolution the bootstrap SE is the floor: finite, not 1e15
    se = 0.008 / (2 * Z95)
    out = floor_and_gap(m)
    assert out["floor"] == pytest.approx(se) and out["floor_basis"] == "bootstrap SE"
    assert out["gap"] == pytest.approx(BIN / se) and out["status"] == "far"
    # three bins apart with the resolution floor: far
    assert gap({**m, "generated": 0.1 + 3 * BIN}, resolution=BIN) == pytest.approx(3.0)


def test_kid_floor_is_its_bootstrap_se_when_the_reference_is_near_zero_or_negative():
    m = {"better": "lower", "unit": "", "value": 0.02, "reference": -0.001, "ci95": [0.005, 0.04]}
    se = 0.035 / (2 * Z95)
    out = floor_and_gap(m)
    assert out["floor"] == pytest.approx(se) and out["floor_basis"] == "bootstrap SE"
    assert out["gap"] == pytest.approx(0.02 / se) and out["status"] == "far"
    # a large reference wins over the SE
    out = floor_and_gap({**m, "reference": 0.05})
    assert out["floor_basis"] == "reference" and out["gap"] == pytest.approx(0.4) and out["status"] == "close"
    # unbiased MMD^2 below zero: indistinguishable, distance 0
    assert gap({**m, "value": -0.003}) == 0.0


def test_precision_gap_is_the_shortfall_from_one_against_the_real_shortfall():
    assert gap({"better": "higher", "value": 0.8, "reference": 0.8}) == pytest.approx(1.0)
    assert gap({"better": "higher", "value": 0.5, "reference": 0.9}) == pytest.approx(5.0)
    # real-vs-real precision 1 (zero shortfall) and generated 0: the floor is one scan of six
    out = floor_and_gap(
        {"better": "higher", "value": 0.0, "reference": 1.0}, resolution=metric_resolution("precision", 6, 6)
    )
    assert out["floor"] == pytest.approx(1 / 6) and out["floor_basis"] == "resolution"
    assert out["gap"] == pytest.approx(6.0) and out["status"] == "far"
    # precision above the real one: no shortfall
    assert gap({"better": "higher", "value": 1.0, "reference": 0.7}) == 0.0


def test_frd_is_compared_as_a_ratio_of_squared_distances():
    m = {"better": "lower", "unit": "log", "value": math.log(30.0), "reference": math.log(10.0)}
    assert gap(m) == pytest.approx(3.0)
    ci = [math.log(25.0), math.log(45.0)]
    out = floor_and_gap({**m, "ci95": ci})
    assert bootstrap_se(ci, log=True) == pytest.approx(20.0 / (2 * Z95))
    assert out["floor_basis"] == "reference" and out["gap"] == pytest.approx(3.0)
    # a huge log value is capped, still finite and far
    out = floor_and_gap({**m, "value": 5000.0})
    assert math.isfinite(out["gap"]) and out["status"] == "far"


@pytest.mark.parametrize(
    "metric",
    [
        {"better": "lower", "value": None, "reference": 1.0},
        {"better": "lower", "value": 2.0, "reference": None},
        {"better": "lower", "value": 2.0, "reference": 0.0},  # zero floor and nothing else: cannot judge
        {"better": "closer-to-real", "real": 1.0, "generated": 1.0, "reference": 0.0},
        {"better": "closer-to-real", "real": None, "generated": 1.0, "reference": 1.0},
        {"better": "sideways", "value": 2.0, "reference": 1.0},
        {"better": "lower", "value": float("nan"), "reference": 1.0},
    ],
)
def test_not_applicable(metric):
    assert floor_and_gap(metric) == {"floor": None, "floor_basis": None, "gap": None, "status": "n/a"}


def test_status_thresholds():
    assert (CLOSE, APART) == (1.25, 2.0)
    assert [status_of(g) for g in (None, 0.0, 1.25, 1.2501, 2.0, 2.01, 1e9)] == [
        "n/a",
        "close",
        "close",
        "apart",
        "apart",
        "far",
        "far",
    ]


def test_resolutions_of_a_report():
    curves = {"nps": {"frequency_mm": [0.0, 0.05, 0.1, 0.15]}}
    res = report_resolutions(
        ["nps_peak_frequency", "precision", "recall", "density", "memorization", "frd", "noise_sd"],
        n_real=10,
        n_generated=8,
        curves=curves,
        prdc_k=5,
    )
    assert res["nps_peak_frequency"] == pytest.approx(0.05)
    assert res["precision"] == pytest.approx(1 / 8) and res["memorization"] == pytest.approx(1 / 8)
    assert res["recall"] == pytest.approx(1 / 10)
    assert res["density"] == pytest.approx(1 / (1 * 8))  # prdc runs with k = min(5, 8 // 5) = 1
    assert res["frd"] is None and res["noise_sd"] is None
    assert report_resolutions(["nps_peak_frequency"], 4, 4, {})["nps_peak_frequency"] is None


def test_every_status_but_na_has_a_finite_gap_and_annotate_adds_the_keys():
    rng = np.random.default_rng(0)
    metrics = {}
    for i in range(300):
        better = ["lower", "higher", "closer-to-real"][i % 3]
        scale = 10.0 ** rng.uniform(-20, 3)
        lo = rng.normal(0, scale)
        metrics[f"m{i}"] = {
            "better": better,
            "unit": "log" if i % 7 == 0 else "",
            "value": float(rng.normal(0, scale)),
            "real": float(rng.normal(0, scale)),
            "generated": float(rng.normal(0, scale)),
            "reference": float(rng.normal(0, scale)) if i % 5 else 0.0,
            "ci95": [lo, lo + abs(rng.normal(0, scale))] if i % 2 else None,
        }
    out = annotate(metrics, {f"m{i}": (0.01 if i % 11 == 0 else None) for i in range(300)})
    assert set(out) == set(metrics)
    seen = set()
    for m in out.values():
        assert {"resolution", "floor", "floor_basis", "gap", "status"} <= set(m)
        seen.add(m["status"])
        if m["status"] == "n/a":
            assert m["gap"] is None
        else:
            assert math.isfinite(m["gap"]) and m["gap"] >= 0 and m["floor"] > 0
            assert m["status"] == status_of(m["gap"])
    assert seen == {"close", "apart", "far", "n/a"}


def test_a_split_half_reference_is_compared_with_the_generated_set_at_its_own_sizes():
    # FRD 13.3 (12 vs 12) against a 6-vs-6 real reference of 21.1 read "close"; compared at 6 vs 6
    # (matched_value) the generated set is far
    m = {"better": "lower", "unit": "log", "value": 13.3, "reference": 21.1}
    assert floor_and_gap(m)["status"] == "close"
    out = floor_and_gap({**m, "matched_value": 25.0})
    assert out["gap"] == pytest.approx(math.exp(25.0 - 21.1)) and out["status"] == "far"
    # precision: the shortfall of the matched value
    assert gap({"better": "higher", "value": 0.9, "matched_value": 0.5, "reference": 0.9}) == pytest.approx(5.0)
    # properties have no matched value to use
    p = {"better": "closer-to-real", "real": 1.0, "generated": 2.0, "reference": 1.0, "matched_value": 9.0}
    assert gap(p) == pytest.approx(1.0)


def test_two_sample_metrics_with_a_split_half_reference_carry_the_matched_comparison():
    from eval.metrics import distribution
    from eval.report.entries import MATCHED_DRAWS, _make_reference, _two_sample

    rng = np.random.default_rng(0)
    data = {"real": rng.normal(size=(12, 5)), "generated": rng.normal(2.0, 1.0, size=(12, 5))}
    ref = _make_reference(12, 0, seed=3)
    seen = []

    def fn(a, b):
        seen.append((a.copy(), b.copy()))
        return {"kid": float(b.mean()), "frd": float(len(a) * 100 + len(b))}

    out = _two_sample(["kid", "frd"], fn, data, ref, n_boot=5, seed=1)
    half_a = data["real"][ref.a[1]]
    draws = seen[-MATCHED_DRAWS:]  # after the headline, the replicates and the reference
    assert all(np.array_equal(a, half_a) for a, _ in draws)  # always real half A first, as the reference
    assert all(len(b) == 6 and all(any(np.array_equal(r, g) for g in data["generated"]) for r in b) for _, b in draws)
    assert len({b.tobytes() for _, b in draws}) > 1  # different subsets
    assert out["frd"]["matched_value"] == 6 * 100 + 6  # the reference's sizes, not 12 vs 12
    assert out["kid"]["matched_value"] == pytest.approx(np.mean([b.mean() for _, b in draws]))
    # a held-out-vs-train reference has no matched value (its sets are another cohort)
    data["train"] = rng.normal(size=(20, 5))
    out = _two_sample(["kid"], fn, data, _make_reference(12, 20, seed=3), n_boot=5, seed=1)
    assert "matched_value" not in out["kid"]
    # the real FRD function runs through it
    f = lambda a, b: {"frd": distribution.frd_v1(a, b, exact=False)}  # noqa: E731
    res = _two_sample(["frd"], f, {k: v for k, v in data.items() if k != "train"}, ref, n_boot=5, seed=1)
    assert math.isfinite(res["frd"]["matched_value"]) and res["frd"]["matched_value"] != res["frd"]["value"]


def test_property_metrics_carry_the_real_cohorts_own_ci_like_scipys_bootstrap():
    """Issue 20's target "noise SD and CNR inside the real cohort's 95 % CI" needs that CI: the real mean's
    percentile bootstrap over real scans, cross-checked against scipy.stats.bootstrap."""
    from scipy.stats import bootstrap

    from eval.report.entries import _property_metric

    rng = np.random.default_rng(3)
    real = rng.normal(22.0, 3.0, 12)
    gen = rng.normal(30.0, 3.0, 12)
    out = _property_metric("noise_sd", {"real": real, "generated": gen}, None, {"n_bootstrap": 4000, "seed": 0})
    lo, hi = out["real_ci95"]
    ref = bootstrap((real,), np.mean, n_resamples=20000, method="percentile", random_state=1).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.15) and hi == pytest.approx(ref.high, abs=0.15)
    assert lo < out["real"] < hi and not lo <= out["value"] <= hi  # the generated mean (30) lies outside
    # a NaN real scan is left out; with fewer than 2 measurable real scans there is no interval
    out = _property_metric(
        "noise_sd", {"real": np.array([22.0, np.nan]), "generated": gen}, None, {"n_bootstrap": 100, "seed": 0}
    )
    assert "real_ci95" not in out and out["real"] == 22.0


def test_a_skewed_frd_interval_does_not_make_a_far_frd_close():
    """The 128x128x32 demo's FRD: 18.8 [18.3, 24.9] against a real-vs-real 6.74. Exponentiated, the
    interval's upper tail (resamples repeating scans) gave an SE of 1.6e10 for a distance of 1.4e8 and
    the status "close"; the floor now reads the interval's lower half."""
    from eval.report.gap import log_lower_se

    m = {"better": "lower", "unit": "log", "value": 18.7678, "reference": 6.7422, "ci95": [18.2553, 24.8521]}
    assert bootstrap_se(m["ci95"], log=True) > math.exp(m["value"]) * 100  # the whole interval: no floor at all
    se = log_lower_se(m["value"], m["ci95"])
    assert se == pytest.approx((math.exp(18.7678) - math.exp(18.2553)) / Z95)
    out = floor_and_gap(m)
    assert out["floor_basis"] == "bootstrap SE" and out["floor"] == pytest.approx(se)
    assert out["gap"] == pytest.approx(math.exp(18.7678) / se) and out["status"] == "far"
    # a value at or below its interval's lower end has no lower half: the reference sets the floor
    assert log_lower_se(18.0, [18.2, 24.0]) is None
    assert floor_and_gap({**m, "ci95": [18.9, 24.8]})["floor_basis"] == "reference"
