"""MRMC (Obuchowski-Rockette, Hillis df) against a published worked example and simulated readers.

Published example: Van Dyke et al. (1993), "Cine MRI in the diagnosis of thoracic aortic
dissection", 5 readers x 114 cases (45 with dissection, 69 without), 5-point ratings, treatment 1 =
cine MRI, treatment 2 = spin-echo MRI. ``data/vandyke_1993.csv`` is that data set as distributed
with RJafroc (``dataset02``; file ``tests/testthat/goodValues361/DfSaveDataFile/dataset02.imrmc`` of
github.com/dpc10ster/RJafroc, converted to our columns: reader, case, truth 1 = abnormal, rating,
condition). The expected numbers are the printed output of OR-DBM MRMC 2.5 (Schartz, Hillis,
Pesce & Berbaum, University of Iowa), trapezoidal AUC, jackknife covariances, shipped with RJafroc
as ``inst/obumrm2/VanDyke-traparea-jackknife-obuch-anova.txt`` (and ``inst/Iowa/VanDyke.txt``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ctdiff.errors import ConfigError
from eval.review import mrmc

VANDYKE = Path(__file__).parent / "data" / "vandyke_1993.csv"


@pytest.fixture(scope="module")
def vandyke():
    return mrmc.read_answers_csv(VANDYKE)


def test_vandyke_reader_aucs_match_published_table(vandyke):
    # "TREATMENT x READER AUC ESTIMATES" of the OR-DBM MRMC 2.5 output
    published = np.array(
        [
            [0.91964573, 0.85877617, 0.90386473, 0.97310789, 0.82979066],
            [0.94782609, 0.90531401, 0.92173913, 0.99935588, 0.92995169],
        ]
    )
    theta, _ = mrmc.fom_table(vandyke)
    np.testing.assert_allclose(theta, published, atol=5e-9)
    assert vandyke.ratings.shape == (2, 5, 114)
    assert int(vandyke.truth.sum()) == 45


def test_vandyke_or_hillis_random_readers_matches_published(vandyke):
    res = mrmc.analyse(vandyke)
    # treatment means 0.89703704 / 0.94083736
    assert res.conditions[0].auc.value == pytest.approx(0.89703704, abs=5e-9)
    assert res.conditions[1].auc.value == pytest.approx(0.94083736, abs=5e-9)
    # mean squares: MS(T) 0.00479617, MS(R) 0.00383620, MS(T*R) 0.00055103
    assert res.mean_squares["T"] == pytest.approx(0.00479617, abs=5e-9)
    assert res.mean_squares["R"] == pytest.approx(0.00383620, abs=5e-9)
    assert res.mean_squares["TR"] == pytest.approx(0.00055103, abs=5e-9)
    # OR covariance estimates: Var(error) 0.00080229, Cov1 0.00034661, Cov2 0.00034407, Cov3 0.00023903
    cov = res.covariances
    assert cov.var == pytest.approx(0.00080229, abs=5e-9)
    assert cov.cov1 == pytest.approx(0.00034661, abs=5e-9)
    assert cov.cov2 == pytest.approx(0.00034407, abs=5e-9)
    assert cov.cov3 == pytest.approx(0.00023903, abs=5e-9)
    # Analysis 1 (a): F = 4.46 on (1, 15.26), p = 0.0517
    assert res.f_stat == pytest.approx(4.46, abs=0.005)
    assert res.f_ddf == pytest.approx(15.26, abs=0.005)
    assert res.f_p == pytest.approx(0.0517, abs=5e-5)
    # (b): 1 - 2 = -0.04380, SE 0.02075, df 15.26, t -2.11, 95 % CI (-0.08796, 0.00036)
    d = res.comparisons[0].difference
    assert (res.comparisons[0].first, res.comparisons[0].second) == ("treatment1", "treatment2")
    assert d.value == pytest.approx(-0.04380032, abs=5e-9)
    assert d.se == pytest.approx(0.02075, abs=5e-6)
    assert d.statistic == pytest.approx(-2.11, abs=0.005)
    assert d.ci_low == pytest.approx(-0.08796, abs=5e-6)
    assert d.ci_high == pytest.approx(0.00036, abs=5e-6)
    assert d.p == pytest.approx(0.0517, abs=5e-5)
    # (c): single-treatment CIs with ddf_H_single
    one, two = res.conditions[0].auc, res.conditions[1].auc
    assert one.se == pytest.approx(0.03317360, abs=5e-9)
    assert one.df == pytest.approx(12.74, abs=0.005)
    assert (one.ci_low, one.ci_high) == (pytest.approx(0.82522360, abs=5e-9), pytest.approx(0.96885048, abs=5e-9))
    assert two.se == pytest.approx(0.02156637, abs=5e-9)
    assert two.df == pytest.approx(12.71, abs=0.005)
    assert (two.ci_low, two.ci_high) == (pytest.approx(0.89413783, abs=5e-9), pytest.approx(0.98753689, abs=5e-9))
    assert cov.per_condition_cov2 == (pytest.approx(0.00048396, abs=5e-9), pytest.approx(0.00020419, abs=5e-9))


def test_vandyke_fixed_readers_matches_published(vandyke):
    res = mrmc.analyse(vandyke, readers="fixed")
    # Analysis 2: X2 = 5.47595 (1 df), p = 0.0193; 1 - 2 SE 0.01872, CI (-0.08049, -0.00711)
    assert res.f_stat == pytest.approx(5.47595, abs=5e-6)
    assert res.f_p == pytest.approx(0.0193, abs=5e-5)
    d = res.comparisons[0].difference
    assert d.se == pytest.approx(0.01872, abs=5e-6)
    assert (d.ci_low, d.ci_high) == (pytest.approx(-0.08049, abs=5e-6), pytest.approx(-0.00711, abs=5e-6))
    # (c): SE 0.02428971, CI (0.84943008, 0.94464399); treatment 2 SE 0.01677632
    one = res.conditions[0].auc
    assert one.se == pytest.approx(0.02428971, abs=5e-9)
    assert (one.ci_low, one.ci_high) == (pytest.approx(0.84943008, abs=5e-9), pytest.approx(0.94464399, abs=5e-9))
    assert res.conditions[1].auc.se == pytest.approx(0.01677632, abs=5e-9)


def test_auc_jackknife_equals_roc_auc_score_on_every_reduced_set():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 23)
    scores = rng.integers(1, 6, 23).astype(float) + truth  # ties on purpose
    auc, loo = mrmc.auc_jackknife(truth, scores)
    assert auc == pytest.approx(roc_auc_score(truth, scores))
    for k in range(len(truth)):
        keep = np.arange(len(truth)) != k
        assert loo[k] == pytest.approx(roc_auc_score(truth[keep], scores[keep]), abs=1e-12)


def reader_scores(rng: np.random.Generator, latent: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """One reader's 5-point ratings: the case's latent value (shared by all readers: the case
    effect) plus the reader's own skill shift on synthetic cases and noise, binned to 1..5."""
    shift = rng.normal(0, 0.2) * truth
    score = latent + shift + rng.normal(0, 0.7, truth.size)
    return np.clip(np.round(score * 1.5 + 3), 1, 5)


def simulate(
    rng: np.random.Generator, separation: float, n_readers: int = 5, n_per_class: int = 40
) -> mrmc.StudyRatings:
    """Binormal readers; ``separation`` is the mean shift of synthetic cases (0 = chance)."""
    truth = np.repeat([0, 1], n_per_class)
    latent = rng.normal(separation * truth, 1.0)
    rows = []
    for r in range(n_readers):
        rating = reader_scores(rng, latent, truth)
        rows += [
            {"reader": f"r{r}", "case": f"c{c}", "truth": int(truth[c]), "rating": float(rating[c])}
            for c in range(truth.size)
        ]
    return mrmc.ratings_from_rows(rows)


def population_auc(separation: float) -> float:
    """The reader-averaged AUC the simulation model has, from 200 readers x 20000 cases each."""
    rng = np.random.default_rng(99)
    truth = np.repeat([0, 1], 10000)
    return float(
        np.mean(
            [roc_auc_score(truth, reader_scores(rng, rng.normal(separation * truth, 1.0), truth)) for _ in range(200)]
        )
    )


def test_readers_at_chance_cover_half_and_strong_readers_exclude_it():
    rng = np.random.default_rng(20261130)
    chance = [mrmc.analyse(simulate(rng, 0.0)).conditions[0].auc for _ in range(40)]
    covered = sum(e.ci_low <= 0.5 <= e.ci_high for e in chance)
    assert 34 <= covered <= 40  # nominal 95 %: 38 of 40 expected
    assert abs(np.mean([e.value for e in chance]) - 0.5) < 0.02
    truth_auc = population_auc(2.0)
    assert 0.8 < truth_auc < 0.86
    strong = [mrmc.analyse(simulate(rng, 2.0)).conditions[0].auc for _ in range(20)]
    assert all(e.ci_low > 0.5 and e.p < 0.001 for e in strong)
    assert sum(e.ci_low <= truth_auc <= e.ci_high for e in strong) >= 17  # known AUC recovered
    assert abs(np.mean([e.value for e in strong]) - truth_auc) < 0.02


def test_accuracy_uses_calls_and_tests_against_chance():
    rng = np.random.default_rng(0)
    data = simulate(rng, 2.5, n_readers=4)
    rows = []
    for t, _cond in enumerate(data.conditions):
        for r, reader in enumerate(data.readers):
            for c, case in enumerate(data.cases):
                rating = data.ratings[t, r, c]
                rows.append(
                    {
                        "reader": reader,
                        "case": case,
                        "truth": int(data.truth[c]),
                        "rating": rating,
                        "call": int(rating >= 4),
                    }
                )
    res = mrmc.analyse(mrmc.ratings_from_rows(rows))
    acc = res.conditions[0].accuracy
    expected = np.mean(
        [[(data.ratings[0, r, c] >= 4) == data.truth[c] for c in range(len(data.cases))] for r in range(4)]
    )
    assert acc.value == pytest.approx(expected)
    assert acc.ci_low > 0.5 and acc.p < 0.01


def test_two_conditions_detect_a_better_model():
    rng = np.random.default_rng(5)
    a, b = simulate(rng, 0.2, n_per_class=50), simulate(rng, 2.5, n_per_class=50)
    rows = []
    for name, d in (("model_a", a), ("model_b", b)):
        for r, reader in enumerate(d.readers):
            rows += [
                {
                    "reader": reader,
                    "case": f"{name}-{case}",
                    "truth": int(d.truth[c]),
                    "rating": d.ratings[0, r, c],
                    "condition": name,
                }
                for c, case in enumerate(d.cases)
            ]
    res = mrmc.analyse(mrmc.ratings_from_rows(rows))
    d = res.comparisons[0].difference
    assert d.value < -0.2 and d.ci_high < 0 and d.p < 0.01
    assert d.value == pytest.approx(res.conditions[0].auc.value - res.conditions[1].auc.value)


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"reader": "a", "case": "1", "truth": "2", "rating": "3"}], "truth must be 0"),
        ([{"reader": "a", "case": "1", "truth": "0", "rating": "inf"}], "not finite"),
        ([{"reader": "a", "case": "1", "truth": "0", "rating": "x"}], "not a number"),
        (
            [
                {"reader": "a", "case": "1", "truth": "0", "rating": "1"},
                {"reader": "a", "case": "1", "truth": "0", "rating": "2"},
            ],
            "twice",
        ),
        (
            [
                {"reader": "a", "case": "1", "truth": "0", "rating": "1"},
                {"reader": "b", "case": "1", "truth": "1", "rating": "2"},
            ],
            "has truth",
        ),
        (
            [
                {"reader": "a", "case": "1", "truth": "0", "rating": "1"},
                {"reader": "a", "case": "2", "truth": "0", "rating": "2"},
            ],
            "both real",
        ),
        (
            [
                {"reader": "a", "case": "1", "truth": "0", "rating": "1"},
                {"reader": "a", "case": "2", "truth": "1", "rating": "2"},
                {"reader": "b", "case": "1", "truth": "0", "rating": "1"},
            ],
            "same cases",
        ),
    ],
)
def test_bad_rows_are_refused_with_a_reason(rows, message):
    with pytest.raises(ConfigError, match=message):
        mrmc.ratings_from_rows(rows)


def test_cli_prints_and_writes_json(tmp_path, capsys):
    from eval.cli import main

    assert main(["review", "mrmc", "--answers", str(VANDYKE), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["readers"] == "random" and out["n_readers"] == 5 and out["n_cases"] == 114
    assert out["global_test"]["ddf"] == pytest.approx(15.26, abs=0.005)
    assert out["comparisons"][0]["difference"]["ci_low"] == pytest.approx(-0.08796, abs=5e-6)
    assert main(["review", "mrmc", "--answers", str(VANDYKE)]) == 0
    text = capsys.readouterr().out
    assert "treatment1 - treatment2: -0.04380 [-0.08796, 0.00036]" in text
    bad = tmp_path / "bad.csv"
    bad.write_text("reader,case,rating\n1,1,3\n")
    assert main(["review", "mrmc", "--answers", str(bad)]) == 2
    assert "missing column(s) ['truth']" in capsys.readouterr().err


def test_roc_curves_end_at_corners_and_plot_has_one_line_per_reader(vandyke, tmp_path):
    from eval.review import plots

    curves = mrmc.reader_roc_curves(vandyke)
    fpr, tpr = curves["treatment1"]["1"]
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.91964573, abs=5e-9)
    fig = plots.roc_figure(curves, mrmc.analyse(vandyke))
    assert [len(ax.get_lines()) for ax in fig.axes] == [6, 6]  # 5 readers + chance diagonal
    assert math.isclose(fig.axes[0].get_xlim()[1], 1.0, abs_tol=0.05)
