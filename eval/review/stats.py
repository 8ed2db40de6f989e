"""Reader-study statistics: pure functions, answers in, numbers out (no database, no files).

Detecting synthetic scans is the task, so **synthetic is the positive class**:

- sensitivity = synthetic cases called synthetic / synthetic cases answered (TP / (TP + FN))
- specificity = real cases called real / real cases answered (TN / (TN + FP))
- accuracy = correct calls / all answers

Each comes with a 95 % **Wilson score** interval (``scipy.stats.binomtest(...).proportion_ci(
method="wilson")``), which keeps sensible coverage for the small counts of reader studies where the
normal (Wald) interval fails. Pooled figures treat every answer as independent, which ignores that
one reader's answers are correlated; per-reader figures are reported alongside for that reason.

ROC AUC uses the confidence-weighted call as a score: ``+confidence`` if the reader said synthetic,
``-confidence`` if they said real (so 10 levels from "surely real" to "surely synthetic"). AUC is the
Mann-Whitney statistic U / (n_synthetic * n_real) (ties count 1/2), equal to the trapezoidal ROC area
of ``sklearn.metrics.roc_auc_score``; its 95 % CI is Hanley & McNeil's (1982) normal approximation.
AUC 0.5 means readers cannot tell the cohorts apart.

Realism (1-5 Likert) of real vs synthetic cases: means and a two-sided Mann-Whitney U test
(``scipy.stats.mannwhitneyu``).

Inter-reader agreement on the real/synthetic call, over the cases every reader answered: Cohen's
kappa for two readers, Fleiss' kappa for three or more; both are written out here (a few lines
each, no dependency in eval/ provides them) and tested against scikit-learn and a published example.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats as sps

FLAGS = ("noise", "texture", "contrast", "anatomy", "edges")
CI_METHOD = "95 % Wilson score interval"
AUC_CI_METHOD = "95 % Hanley & McNeil (1982) interval"
Z95 = float(sps.norm.ppf(0.975))


def proportion_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (nan, nan) when n == 0."""
    if n == 0:
        return math.nan, math.nan
    ci = sps.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _proportion(k: int, n: int) -> dict:
    lo, hi = proportion_ci(k, n)
    return {"value": k / n if n else math.nan, "ci_low": lo, "ci_high": hi, "k": int(k), "n": int(n)}


def detection_metrics(truth_synthetic: Sequence[bool], said_synthetic: Sequence[bool]) -> dict:
    """Accuracy, sensitivity and specificity (synthetic = positive), each with k, n and Wilson CI."""
    truth = np.asarray(truth_synthetic, dtype=bool)
    said = np.asarray(said_synthetic, dtype=bool)
    if truth.shape != said.shape:
        raise ValueError(f"truth and answers differ in length: {truth.shape} vs {said.shape}")
    tp = int(np.sum(truth & said))
    fn = int(np.sum(truth & ~said))
    tn = int(np.sum(~truth & ~said))
    fp = int(np.sum(~truth & said))
    return {
        "n": int(truth.size),
        "tp": tp,
        "fn": fn,
        "tn": tn,
        "fp": fp,
        "accuracy": _proportion(tp + tn, truth.size),
        "sensitivity": _proportion(tp, tp + fn),
        "specificity": _proportion(tn, tn + fp),
    }


def confidence_scores(said_synthetic: Sequence[bool], confidence: Sequence[int]) -> np.ndarray:
    """+confidence for a 'synthetic' call, -confidence for a 'real' call."""
    said = np.asarray(said_synthetic, dtype=bool)
    conf = np.asarray(confidence, dtype=np.float64)
    return np.where(said, conf, -conf)


def roc_auc(truth_synthetic: Sequence[bool], scores: Sequence[float]) -> float:
    """Area under the ROC curve of ``scores`` for the synthetic class; nan if a class is missing.

    AUC = U / (n_pos * n_neg) with U the Mann-Whitney statistic of the positives' scores.
    """
    truth = np.asarray(truth_synthetic, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = s[truth], s[~truth]
    if pos.size == 0 or neg.size == 0:
        return math.nan
    u = sps.mannwhitneyu(pos, neg, alternative="two-sided").statistic
    return float(u) / (pos.size * neg.size)


def auc_ci(auc: float, n_pos: int, n_neg: int) -> tuple[float, float]:
    """Hanley & McNeil (1982) 95 % CI of an AUC, clipped to [0, 1]."""
    if not n_pos or not n_neg or math.isnan(auc):
        return math.nan, math.nan
    q1 = auc / (2 - auc)
    q2 = 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    se = math.sqrt(max(var, 0.0))
    return max(0.0, auc - Z95 * se), min(1.0, auc + Z95 * se)


def realism_comparison(realism_real: Sequence[float], realism_synthetic: Sequence[float]) -> dict:
    """Mean (SD, n) realism per cohort and a two-sided Mann-Whitney U test between them."""
    r = np.asarray(realism_real, dtype=np.float64)
    s = np.asarray(realism_synthetic, dtype=np.float64)

    def describe(x: np.ndarray) -> dict:
        return {
            "mean": float(x.mean()) if x.size else math.nan,
            "sd": float(x.std(ddof=1)) if x.size > 1 else math.nan,
            "n": int(x.size),
        }

    out = {"real": describe(r), "synthetic": describe(s), "u": math.nan, "p": math.nan}
    if r.size and s.size:
        res = sps.mannwhitneyu(r, s, alternative="two-sided")
        out["u"], out["p"] = float(res.statistic), float(res.pvalue)
    return out


def cohen_kappa(a: Sequence, b: Sequence) -> float:
    """Cohen's kappa of two raters' labels of the same items: (p_o - p_e) / (1 - p_e).

    p_o is the observed agreement, p_e the agreement expected from each rater's own label
    frequencies. nan when p_e == 1 (both raters always gave one and the same label).
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError("cohen_kappa needs two equally long, non-empty label sequences")
    labels = np.union1d(a, b)
    po = float(np.mean(a == b))
    pe = float(sum(np.mean(a == lab) * np.mean(b == lab) for lab in labels))
    return math.nan if pe == 1.0 else (po - pe) / (1 - pe)


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an (items, categories) table of how many raters put each item in each
    category; every item must have the same number of raters n >= 2.

    P_i = (sum_j n_ij^2 - n) / (n (n - 1)), P_bar = mean P_i, p_j = sum_i n_ij / (N n),
    P_e = sum_j p_j^2, kappa = (P_bar - P_e) / (1 - P_e); nan when P_e == 1.
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] == 0:
        raise ValueError("fleiss_kappa needs an (items, categories) count table")
    n = c.sum(axis=1)
    if not np.all(n == n[0]) or n[0] < 2:
        raise ValueError("every item needs the same number (>= 2) of ratings")
    n = n[0]
    p_i = (np.sum(c**2, axis=1) - n) / (n * (n - 1))
    p_bar = float(p_i.mean())
    p_j = c.sum(axis=0) / (c.shape[0] * n)
    p_e = float(np.sum(p_j**2))
    return math.nan if p_e == 1.0 else (p_bar - p_e) / (1 - p_e)


def agreement(calls_by_reader: Mapping[str, Mapping[str, bool]]) -> dict:
    """Inter-reader agreement on the synthetic call over cases every reader answered.

    ``calls_by_reader``: reader -> {case_id: said_synthetic}. Cohen's kappa for 2 readers, Fleiss'
    for 3+; also the raw fraction of cases where all readers agreed.
    """
    readers = sorted(calls_by_reader)
    out = {"method": None, "kappa": math.nan, "n_readers": len(readers), "n_cases": 0, "all_agree": math.nan}
    if len(readers) < 2:
        return out
    common = sorted(set.intersection(*(set(calls_by_reader[r]) for r in readers)))
    out["n_cases"] = len(common)
    if not common:
        return out
    table = np.array([[bool(calls_by_reader[r][c]) for r in readers] for c in common])  # cases x readers
    out["all_agree"] = float(np.mean(np.all(table == table[:, :1], axis=1)))
    if len(readers) == 2:
        out["method"] = "Cohen's kappa"
        out["kappa"] = cohen_kappa(table[:, 0], table[:, 1])
    else:
        out["method"] = "Fleiss' kappa"
        n_syn = table.sum(axis=1)
        out["kappa"] = fleiss_kappa(np.stack([len(readers) - n_syn, n_syn], axis=1))
    return out


def _group_metrics(rows: Sequence[Mapping]) -> dict:
    truth = [r["cohort"] == "synthetic" for r in rows]
    said = [r["said"] == "synthetic" for r in rows]
    scores = confidence_scores(said, [r["confidence"] for r in rows])
    auc = roc_auc(truth, scores)
    n_pos = sum(truth)
    lo, hi = auc_ci(auc, n_pos, len(truth) - n_pos)
    return {
        **detection_metrics(truth, said),
        "auc": {"value": auc, "ci_low": lo, "ci_high": hi},
        "realism": realism_comparison(
            [r["realism"] for r in rows if r["cohort"] == "real"],
            [r["realism"] for r in rows if r["cohort"] == "synthetic"],
        ),
        "mean_seconds": float(np.mean([r["seconds"] for r in rows])) if rows else math.nan,
    }


def fooled_cases(rows: Sequence[Mapping], top: int | None = None) -> list[dict]:
    """Synthetic cases ordered by how often readers took them for real (then by mean realism)."""
    by_case: dict[str, list[Mapping]] = defaultdict(list)
    for r in rows:
        if r["cohort"] == "synthetic":
            by_case[r["case_id"]].append(r)
    out = []
    for case_id, answers in by_case.items():
        k = sum(a["said"] == "real" for a in answers)
        out.append(
            {
                "case_id": case_id,
                "case_name": answers[0].get("case_name", ""),
                "taken_for_real": k,
                "n": len(answers),
                "fraction": k / len(answers),
                "mean_realism": float(np.mean([a["realism"] for a in answers])),
            }
        )
    out.sort(key=lambda d: (-d["fraction"], -d["mean_realism"], d["case_id"]))
    return out[:top] if top else out


def artefact_frequencies(rows: Sequence[Mapping]) -> dict:
    """Per cohort: number of answers and, per what-looks-wrong flag, its count and fraction."""
    out = {}
    for cohort in ("real", "synthetic"):
        sel = [r for r in rows if r["cohort"] == cohort]
        n = len(sel)
        out[cohort] = {
            "n": n,
            **{
                f: {
                    "count": sum(bool(r[f"flag_{f}"]) for r in sel),
                    "fraction": (sum(bool(r[f"flag_{f}"]) for r in sel) / n) if n else math.nan,
                }
                for f in FLAGS
            },
        }
    return out


def session_summary(rows: Iterable[Mapping], top_fooled: int = 10) -> dict:
    """Everything the organiser page and the report show, from answer records
    (:func:`eval.review.store.answer_records`: reader, case_id, case_name, cohort, said,
    confidence, realism, flag_*, seconds)."""
    rows = list(rows)
    readers = sorted({r["reader"] for r in rows})
    calls = {rd: {r["case_id"]: r["said"] == "synthetic" for r in rows if r["reader"] == rd} for rd in readers}
    return {
        "n_answers": len(rows),
        "n_readers": len(readers),
        "n_cases": len({r["case_id"] for r in rows}),
        "ci_method": CI_METHOD,
        "auc_ci_method": AUC_CI_METHOD,
        "pooled": _group_metrics(rows),
        "per_reader": {rd: _group_metrics([r for r in rows if r["reader"] == rd]) for rd in readers},
        "agreement": agreement(calls),
        "fooled": fooled_cases(rows, top_fooled),
        "artefacts": artefact_frequencies(rows),
    }


def afc_summary(rows: Iterable[Mapping]) -> dict:
    """Two-alternative forced choice: proportion of pairs where the reader picked the real scan,
    pooled and per reader, each with its Wilson CI and a two-sided exact binomial test against 0.5
    (``scipy.stats.binomtest``). 50 % means readers cannot tell which of the two is real."""
    rows = list(rows)

    def group(sel: list[Mapping]) -> dict:
        k, n = sum(bool(r["correct"]) for r in sel), len(sel)
        out = _proportion(k, n)
        out["p"] = float(sps.binomtest(k, n, 0.5).pvalue) if n else math.nan
        out["mean_seconds"] = float(np.mean([r["seconds"] for r in sel])) if sel else math.nan
        return out

    readers = sorted({r["reader"] for r in rows})
    return {
        "n_answers": len(rows),
        "n_readers": len(readers),
        "ci_method": CI_METHOD,
        "pooled": group(rows),
        "per_reader": {rd: group([r for r in rows if r["reader"] == rd]) for rd in readers},
    }


def mark_heatmap(voxels: Iterable[Sequence[int]], shape_xy: Sequence[int], sigma: float = 2.0) -> np.ndarray:
    """Marks projected along z onto an (x, y) plane: counts per pixel smoothed with a Gaussian of
    ``sigma`` pixels (``scipy.ndimage.gaussian_filter``), scaled so the sum equals the number of marks."""
    from scipy.ndimage import gaussian_filter

    counts = np.zeros(tuple(int(s) for s in shape_xy), dtype=np.float64)
    for v in voxels:
        counts[int(v[0]), int(v[1])] += 1.0
    if sigma > 0 and counts.any():
        total = counts.sum()
        counts = gaussian_filter(counts, sigma, mode="constant")
        counts *= total / counts.sum()
    return counts


def rating_summary(rows: Iterable[Mapping]) -> dict:
    """Realism-only design: per cohort (and per generated condition) the distribution of the 1-5
    ratings (count of each level), mean and median, and a two-sided Mann-Whitney U test of each
    synthetic group against the real ratings (``scipy.stats.mannwhitneyu``)."""
    rows = list(rows)

    def distribution(values: list[int]) -> dict:
        return {
            "n": len(values),
            "counts": {str(k): sum(v == k for v in values) for k in range(1, 6)},
            "mean": float(np.mean(values)) if values else math.nan,
            "median": float(np.median(values)) if values else math.nan,
        }

    real = [int(r["realism"]) for r in rows if r["cohort"] == "real"]
    groups = {"synthetic": [int(r["realism"]) for r in rows if r["cohort"] == "synthetic"]}
    conditions = sorted({r.get("condition") or "" for r in rows if r["cohort"] == "synthetic"} - {""})
    if len(conditions) > 1:
        groups.update(
            {
                c: [int(r["realism"]) for r in rows if r["cohort"] == "synthetic" and r.get("condition") == c]
                for c in conditions
            }
        )
    out = {
        "n_answers": len(rows),
        "n_readers": len({r["reader"] for r in rows}),
        "real": distribution(real),
        "groups": {},
    }
    for name, values in groups.items():
        test = realism_comparison(real, values)
        out["groups"][name] = {**distribution(values), "u": test["u"], "p": test["p"]}
    return out
