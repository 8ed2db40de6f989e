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
