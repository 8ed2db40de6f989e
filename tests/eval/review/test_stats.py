"""Reader statistics against hand-computed examples, scipy and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import cohen_kappa_score, confusion_matrix, roc_auc_score

from eval.review import stats

Z = 1.959963984540054


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z / (1 + Z**2 / n) * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(6, 8), (1, 9), (17, 40)])
def test_wilson_interval_matches_the_formula(k, n):
    assert stats.proportion_ci(k, n) == pytest.approx(wilson_by_hand(k, n), abs=1e-9)


def test_wilson_interval_for_zero_successes_is_textbook_value():
    # 0/10: lower 0, upper z^2 / (n + z^2) = 3.8415 / 13.8415 = 0.2775
    lo, hi = stats.proportion_ci(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12)
    assert hi == pytest.approx(0.27753, abs=1e-4)
    assert all(math.isnan(v) for v in stats.proportion_ci(0, 0))


def test_detection_metrics_hand_example_and_sklearn():
    truth = [True, True, True, False, False]  # synthetic?
    said = [True, False, True, False, True]
    m = stats.detection_metrics(truth, said)
    assert (m["tp"], m["fn"], m["tn"], m["fp"]) == (2, 1, 1, 1)
    assert m["accuracy"]["value"] == pytest.approx(3 / 5)
    assert m["sensitivity"]["value"] == pytest.approx(2 / 3)
    assert m["specificity"]["value"] == pytest.approx(1 / 2)
    assert (m["sensitivity"]["ci_low"], m["sensitivity"]["ci_high"]) == pytest.approx(wilson_by_hand(2, 3))
    tn, fp, fn, tp = confusion_matrix(truth, said).ravel()
    assert (tp, fn, tn, fp) == (m["tp"], m["fn"], m["tn"], m["fp"])


def test_confidence_scores_sign_follows_the_call():
    assert stats.confidence_scores([True, False, True], [5, 2, 1]).tolist() == [5.0, -2.0, 1.0]


def test_roc_auc_hand_example_with_a_tie():
    # positives 3, -1 vs negatives -2, 3: pairs 1 + 0.5 + 1 + 0 = 2.5 of 4
    assert stats.roc_auc([True, True, False, False], [3, -1, -2, 3]) == pytest.approx(0.625)
    assert math.isnan(stats.roc_auc([True, True], [1, 2]))


def test_roc_auc_matches_sklearn_on_tied_likert_scores(rng):
    truth = rng.random(60) < 0.5
    said = rng.random(60) < np.where(truth, 0.7, 0.3)
    conf = rng.integers(1, 6, size=60)
    scores = stats.confidence_scores(said, conf)
    assert stats.roc_auc(truth, scores) == pytest.approx(roc_auc_score(truth, scores), abs=1e-12)


def test_auc_ci_hanley_mcneil_hand_example():
    # A = 0.8, 10 + 10: Q1 = 0.8/1.2, Q2 = 1.28/1.8,
    # var = (0.16 + 9 (Q1 - 0.64) + 9 (Q2 - 0.64)) / 100 = 0.0104, SE = 0.10198
    lo, hi = stats.auc_ci(0.8, 10, 10)
    se = math.sqrt(0.0104)
    assert lo == pytest.approx(0.8 - Z * se, abs=1e-6)
    assert hi == pytest.approx(min(1.0, 0.8 + Z * se), abs=1e-6)
    assert stats.auc_ci(1.0, 5, 5) == (1.0, 1.0)


def test_realism_comparison_hand_example():
    out = stats.realism_comparison([5, 4, 4], [2, 3])
    assert out["real"]["mean"] == pytest.approx(13 / 3)
    assert out["synthetic"]["mean"] == pytest.approx(2.5)
    assert out["real"]["sd"] == pytest.approx(np.std([5, 4, 4], ddof=1))
    assert out["u"] == 6.0  # every real rating above every synthetic one: U = 3 * 2
    assert out["p"] == pytest.approx(sps.mannwhitneyu([5, 4, 4], [2, 3], alternative="two-sided").pvalue)


def test_cohen_kappa_hand_example_and_sklearn(rng):
    # p_o = 4/6, each rater says 1 half the time: p_e = 0.5, kappa = (2/3 - 1/2) / (1/2) = 1/3
    a, b = [1, 1, 0, 0, 1, 0], [1, 0, 0, 0, 1, 1]
    assert stats.cohen_kappa(a, b) == pytest.approx(1 / 3)
    for _ in range(5):
        x = rng.random(30) < 0.5
        y = np.where(rng.random(30) < 0.7, x, ~x)
        assert stats.cohen_kappa(x, y) == pytest.approx(cohen_kappa_score(x, y), abs=1e-12)
    assert math.isnan(stats.cohen_kappa([1, 1, 1], [1, 1, 1]))


# Wikipedia "Fleiss' kappa" worked example: 10 subjects, 14 raters, 5 categories;
# P_bar = 0.378, P_e = 0.213, kappa = 0.210
WIKIPEDIA_FLEISS = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)


def test_fleiss_kappa_wikipedia_example():
    assert stats.fleiss_kappa(WIKIPEDIA_FLEISS) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_perfect_agreement_and_bad_input():
    assert stats.fleiss_kappa([[3, 0], [0, 3], [3, 0]]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        stats.fleiss_kappa([[3, 0], [1, 1]])


def test_agreement_picks_cohen_for_two_and_fleiss_for_three_readers():
    a = {"c1": True, "c2": True, "c3": False, "c4": False, "c5": True, "c6": False}
    b = {"c1": True, "c2": False, "c3": False, "c4": False, "c5": True, "c6": True, "extra": True}
    two = stats.agreement({"A": a, "B": b})
    assert two["method"] == "Cohen's kappa" and two["n_cases"] == 6  # 'extra' was not read by A
    assert two["kappa"] == pytest.approx(1 / 3)
    c = {"c1": True, "c2": True, "c3": False, "c4": True, "c5": True, "c6": False}
    three = stats.agreement({"A": a, "B": b, "C": c})
    assert three["method"] == "Fleiss' kappa"
    # per case: number of 'synthetic' calls of 3 readers -> counts table [real, synthetic]
    n_syn = np.array([3, 2, 0, 1, 3, 1])
    assert three["kappa"] == pytest.approx(stats.fleiss_kappa(np.stack([3 - n_syn, n_syn], 1)))
    assert three["all_agree"] == pytest.approx(3 / 6)
    assert stats.agreement({"A": a})["method"] is None


def _row(reader, case, cohort, said, conf=3, realism=3, flags=(), seconds=10.0):
    return {
        "reader": reader,
        "case_id": case,
        "case_name": f"file-{case}",
        "cohort": cohort,
        "said": said,
        "confidence": conf,
        "realism": realism,
        "seconds": seconds,
        **{f"flag_{f}": f in flags for f in stats.FLAGS},
    }


def test_fooled_cases_and_artefact_frequencies():
    rows = [
        _row("A", "s1", "synthetic", "real", realism=4),
        _row("B", "s1", "synthetic", "real", realism=5),
        _row("A", "s2", "synthetic", "synthetic", flags=("noise", "texture")),
        _row("B", "s2", "synthetic", "real", flags=("noise",)),
        _row("A", "r1", "real", "real"),
        _row("B", "r1", "real", "synthetic", flags=("edges",)),
    ]
    fooled = stats.fooled_cases(rows)
    assert [f["case_id"] for f in fooled] == ["s1", "s2"]
    assert (fooled[0]["taken_for_real"], fooled[0]["n"], fooled[0]["mean_realism"]) == (2, 2, 4.5)
    assert fooled[1]["fraction"] == pytest.approx(0.5)
    art = stats.artefact_frequencies(rows)
    assert art["synthetic"]["n"] == 4 and art["real"]["n"] == 2
    assert art["synthetic"]["noise"] == {"count": 2, "fraction": 0.5}
    assert art["synthetic"]["texture"]["count"] == 1
    assert art["real"]["edges"]["fraction"] == pytest.approx(0.5)
    assert art["real"]["noise"]["count"] == 0


def test_session_summary_per_reader_and_pooled():
    rows = [
        _row("A", "s1", "synthetic", "synthetic", conf=5),
        _row("A", "r1", "real", "real", conf=4),
        _row("A", "s2", "synthetic", "real", conf=2),
        _row("A", "r2", "real", "real", conf=5),
        _row("B", "s1", "synthetic", "synthetic", conf=3),
        _row("B", "r1", "real", "synthetic", conf=1),
        _row("B", "s2", "synthetic", "synthetic", conf=4),
        _row("B", "r2", "real", "real", conf=2),
    ]
    s = stats.session_summary(rows)
    assert (s["n_answers"], s["n_readers"], s["n_cases"]) == (8, 2, 4)
    a, b, pooled = s["per_reader"]["A"], s["per_reader"]["B"], s["pooled"]
    assert (a["accuracy"]["k"], b["accuracy"]["k"], pooled["accuracy"]["k"]) == (3, 3, 6)
    assert a["sensitivity"]["value"] == 0.5 and a["specificity"]["value"] == 1.0
    assert b["sensitivity"]["value"] == 1.0 and b["specificity"]["value"] == 0.5
    truth = [r["cohort"] == "synthetic" for r in rows]
    scores = [r["confidence"] if r["said"] == "synthetic" else -r["confidence"] for r in rows]
    assert pooled["auc"]["value"] == pytest.approx(roc_auc_score(truth, scores))
    # A and B agree on s1, r2 only: p_o = 1/2; A says synthetic 1/4, B 3/4: p_e = 1/4*3/4 + 3/4*1/4 = 3/8
    assert s["agreement"]["kappa"] == pytest.approx((0.5 - 3 / 8) / (1 - 3 / 8))
    assert s["ci_method"].endswith("Wilson score interval")
