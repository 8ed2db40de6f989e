"""benchmarks/radiomics_gap.py: standardised mean differences per radiomics feature and group."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rg():
    return runpy.run_path(str(REPO / "benchmarks" / "radiomics_gap.py"), run_name="radiomics_gap")


def test_feature_groups(rg):
    assert rg["feature_group"]("wavelet-HHH_glcm_Contrast") == "wavelet-HHH_glcm"
    assert rg["feature_group"]("log-sigma-2-0-mm-3D_glrlm_RunVariance") == "log-sigma-2-0-mm-3D_glrlm"
    assert rg["feature_group"]("glrlm_RunVariance") == "original_glrlm"


def test_gap_is_the_mean_shift_in_real_sds_and_skips_constant_features(rg):
    rng = np.random.default_rng(0)
    names = ["glcm_Contrast", "glrlm_RunVariance", "firstorder_Mean", "shape_Constant"]
    real = rng.normal(0.0, 1.0, (12, 4))
    real[:, 3] = 7.0  # constant in the real scans: no SD, left out
    sd = real.std(axis=0)
    cohort = real.copy()
    cohort[:, 1] += 300.0 * sd[1]  # a plateau-like shift: 300 real SDs
    cohort[:, 0] -= 2.5 * sd[0]
    r = rg["gap"](names, real, cohort, top=2)
    assert r["n_features"] == 3
    assert [t["feature"] for t in r["top"]] == ["glrlm_RunVariance", "glcm_Contrast"]
    assert r["top"][0]["z"] == pytest.approx(300.0) and r["top"][1]["z"] == pytest.approx(-2.5)
    assert r["median_abs_z"] == pytest.approx(2.5) and r["share_abs_z_over_2"] == pytest.approx(2 / 3)
    assert list(r["groups"]) == ["original_glrlm", "original_glcm", "original_firstorder"]
    assert r["groups"]["original_firstorder"]["median_abs_z"] == pytest.approx(0.0, abs=1e-9)
    same = rg["gap"](names, real, real)
    assert same["median_abs_z"] == pytest.approx(0.0, abs=1e-9) and same["share_abs_z_over_2"] == 0.0


def test_manifold_ratios_agree_with_prdc_and_grow_with_the_shift(rg):
    from eval.metrics.distribution import prdc, standardise

    rng = np.random.default_rng(1)
    real = rng.normal(0.0, 1.0, (12, 4))  # few dimensions: 12 scans fill them (radiomics features correlate)
    near = rng.normal(0.0, 1.0, (12, 4))  # the same distribution
    far = rng.normal(0.0, 1.0, (12, 4)) + 3.0
    for cohort in (near, far):
        m = rg["manifold"](real, cohort)
        ref = prdc(*standardise(real, cohort), nearest_k=5)
        assert m["k"] == 2  # min(5, 12 // 5), as the report caps it
        assert m["precision"] == pytest.approx(ref["precision"]) and m["recall"] == pytest.approx(ref["recall"])
        assert len(m["generated_ratio"]) == 12 and len(m["real_ratio"]) == 12
    m_near, m_far = rg["manifold"](real, near), rg["manifold"](real, far)
    assert m_near["precision"] > 0.5 and m_far["precision"] == 0.0 and m_far["recall"] == 0.0
    assert m_far["generated_ratio_median"] > 1.5 > 1.0 > m_near["generated_ratio_median"]
    assert min(m_far["generated_ratio"]) > 1.0 and min(m_far["real_ratio"]) > 1.0
    same = rg["manifold"](real, real)  # every scan is its own nearest neighbour: distance 0
    assert same["generated_ratio_median"] == 0.0 and same["precision"] == 1.0


def test_counterfactuals_tell_a_shifted_cohort_from_an_under_dispersed_one(rg):
    rng = np.random.default_rng(2)
    real = rng.normal(0.0, 1.0, (12, 4))
    same = rng.normal(0.0, 1.0, (12, 4))
    shifted = same + 5.0  # every sample off in the same direction, the real spread
    narrow = 0.15 * same  # the real location, a seventh of the spread
    cf = rg["counterfactuals"](real, shifted)
    moved = rg["manifold"](real, same - same.mean(axis=0) + real.mean(axis=0))
    assert cf["location"]["precision"] == pytest.approx(moved["precision"])  # the same cohort, re-centred
    assert cf["location"]["recall"] == pytest.approx(moved["recall"])
    assert cf["location"]["precision"] > 0.5 and cf["location"]["recall"] > 0.5
    assert cf["spread"]["precision"] == 0.0 and cf["spread"]["recall"] == 0.0  # its SD is already the real one
    assert rg["manifold"](real, shifted)["precision"] == 0.0
    cf = rg["counterfactuals"](real, narrow)
    plain = rg["manifold"](real, narrow)
    assert plain["recall"] < 0.5  # small sample balls hold few real scans
    assert cf["spread"]["recall"] > plain["recall"] and cf["spread"]["recall"] >= 0.5
    scaled = rg["manifold"](real, narrow.mean(axis=0) + (narrow - narrow.mean(axis=0)) * real.std(0) / narrow.std(0))
    assert cf["spread"]["recall"] == pytest.approx(scaled["recall"])
    flat = np.zeros((12, 4))  # constant cohort: no SD to scale, its values kept
    flat_cf = rg["counterfactuals"](real, flat)
    assert flat_cf["spread"]["precision"] == pytest.approx(rg["manifold"](real, flat)["precision"])
