"""Multi-reader multi-case (MRMC) analysis of a reader study: Obuchowski-Rockette (OR) with Hillis'
denominator degrees of freedom, readers and cases random by default.

The task is "is this scan synthetic?", so synthetic (truth 1) is the positive class and a rating is
higher the surer the reader is that the scan is synthetic. For each condition (a generated cohort
read against the real scans) and reader the figure of merit is the empirical ROC AUC (trapezoidal =
Mann-Whitney U / (n1 n0), ties count 1/2; ``sklearn.metrics.roc_auc_score``) and, where the calls
are given, the accuracy. AUC 0.5 means the readers cannot tell synthetic from real.

Method (Obuchowski & Rockette 1995; Hillis, Obuchowski, Schartz & Berbaum 2005; Hillis 2007):

* error covariances of the reader x condition figures of merit from the **jackknife over cases**
  (leave one case out, recompute every figure of merit); Var(error) is their mean variance, Cov1
  the mean covariance of one reader across conditions, Cov2 of two readers in one condition, Cov3
  of two readers across conditions;
* several conditions: F = MS(T) / [MS(T*R) + r max(Cov2 - Cov3, 0)] on (t - 1, ddf_H) degrees of
  freedom, ddf_H = [MS(T*R) + r max(Cov2 - Cov3, 0)]^2 / {MS(T*R)^2 / [(t - 1)(r - 1)]}; each
  pairwise AUC difference with SE sqrt{(2/r)[MS(T*R) + r max(Cov2 - Cov3, 0)]} and a t interval;
* one condition: SE sqrt{[MS(R) + r max(Cov2, 0)] / r} on ddf_H_single = [MS(R) + r max(Cov2,
  0)]^2 / [MS(R)^2 / (r - 1)], a t interval and a two-sided t test against chance (0.5).

With ``readers="fixed"`` (results only for these readers) the OR fixed-reader formulas are used
instead: z tests with SE sqrt{[Var(error) + (r - 1) max(Cov2, 0)] / r} for one condition and
sqrt{(2/r)[Var(error) - Cov1 + (r - 1) max(Cov2 - Cov3, 0)]} for a difference.

No Python package implements OR-Hillis (it lives in R: RJafroc, MRMCaov; and Java: iMRMC), so the
few formulas above are written out here; ``tests/eval/review/test_mrmc.py`` reproduces the
published OR-DBM MRMC 2.5 output for the Van Dyke et al. (1993) data to the printed digits.

Cases a condition did not show (e.g. the other model's synthetic scans when two generated cohorts
share one set of real scans) leave that condition's figure of merit unchanged when jackknifed out;
for fully crossed data (every reader reads every case in every condition) this is exactly the
published method, for such partially paired designs it is an approximation.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import stats as sps
from sklearn.metrics import roc_auc_score, roc_curve

from ctdiff.errors import ConfigError

REQUIRED_COLUMNS = ("reader", "case", "truth", "rating")
OPTIONAL_COLUMNS = ("condition", "call")
DEFAULT_CONDITION = "study"
CHANCE = 0.5
Readers = Literal["random", "fixed"]


@dataclass(frozen=True)
class StudyRatings:
    """Ratings of a fully crossed study: ``ratings[t, r, c]`` (nan where condition t did not show
    case c), ``calls[t, r, c]`` 1 = called synthetic (all nan when calls were not given)."""

    conditions: tuple[str, ...]
    readers: tuple[str, ...]
    cases: tuple[str, ...]
    truth: np.ndarray  # (cases,) 0 = real, 1 = synthetic
    ratings: np.ndarray  # (conditions, readers, cases)
    calls: np.ndarray  # (conditions, readers, cases)

    @property
    def has_calls(self) -> bool:
        return bool(np.isfinite(self.calls).any())

    def shown(self, t: int) -> np.ndarray:
        """Cases condition ``t`` showed (boolean mask over cases)."""
        return np.isfinite(self.ratings[t, 0])


# ------------------------------------------------------------------------------------ reading
def _cell(row: Mapping[str, str], key: str, where: str) -> str:
    value = (row.get(key) or "").strip()
    if not value:
        raise ConfigError(f"{where}: empty '{key}'")
    return value


def _number(text: str, key: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{where}: '{key}' is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{where}: '{key}' is not finite: {text!r}")
    return value


def ratings_from_rows(rows: Iterable[Mapping[str, object]], source: str = "answers") -> StudyRatings:
    """Build :class:`StudyRatings` from dicts with reader, case, truth, rating[, condition, call].

    Every reader must rate every case of a condition exactly once (a fully crossed design), and
    each condition needs real and synthetic cases; anything else is a :class:`ConfigError`.
    """
    cells: dict[tuple[str, str, str], tuple[float, float]] = {}
    truth: dict[str, int] = {}
    for i, raw in enumerate(rows, start=2):  # row 1 of a CSV is its header
        row = {k: "" if v is None else str(v) for k, v in raw.items()}
        where = f"{source} row {i}"
        reader, case = _cell(row, "reader", where), _cell(row, "case", where)
        condition = (row.get("condition") or "").strip() or DEFAULT_CONDITION
        t = _number(_cell(row, "truth", where), "truth", where)
        if t not in (0.0, 1.0):
            raise ConfigError(f"{where}: truth must be 0 (real) or 1 (synthetic), got {row['truth']!r}")
        if truth.setdefault(case, int(t)) != int(t):
            raise ConfigError(f"{where}: case {case!r} has truth {int(t)} here and {truth[case]} elsewhere")
        rating = _number(_cell(row, "rating", where), "rating", where)
        call = math.nan
        if (row.get("call") or "").strip():
            call = _number(row["call"], "call", where)
            if call not in (0.0, 1.0):
                raise ConfigError(f"{where}: call must be 0 (real) or 1 (synthetic), got {row['call']!r}")
        key = (condition, reader, case)
        if key in cells:
            raise ConfigError(f"{where}: reader {reader!r} rated case {case!r} twice in condition {condition!r}")
        cells[key] = (rating, call)
    if not cells:
        raise ConfigError(f"{source}: no ratings")
    conditions = tuple(sorted({k[0] for k in cells}))
    readers = tuple(sorted({k[1] for k in cells}))
    cases = tuple(sorted(truth))
    ratings = np.full((len(conditions), len(readers), len(cases)), np.nan)
    calls = np.full_like(ratings, np.nan)
    ci = {c: i for i, c in enumerate(cases)}
    ri = {r: i for i, r in enumerate(readers)}
    for ti, cond in enumerate(conditions):
        for (c_, r_, case), (rating, call) in cells.items():
            if c_ == cond:
                ratings[ti, ri[r_], ci[case]] = rating
                calls[ti, ri[r_], ci[case]] = call
    truth_a = np.array([truth[c] for c in cases], dtype=np.int8)
    for ti, cond in enumerate(conditions):
        shown = np.isfinite(ratings[ti])
        for r in range(len(readers)):
            if not np.array_equal(shown[r], shown[0]):
                raise ConfigError(
                    f"{source}: in condition {cond!r} reader {readers[r]!r} rated {int(shown[r].sum())} cases and "
                    f"{readers[0]!r} {int(shown[0].sum())}; MRMC needs every reader to rate the same cases"
                )
        labels = truth_a[shown[0]]
        if labels.min() == labels.max():
            raise ConfigError(f"{source}: condition {cond!r} needs both real (0) and synthetic (1) cases")
    any_call = np.isfinite(calls)
    if any_call.any() and not np.array_equal(any_call, np.isfinite(ratings)):
        raise ConfigError(f"{source}: 'call' must be given for every rating or for none")
    return StudyRatings(conditions, readers, cases, truth_a, ratings, calls)


def read_answers_csv(path: str | Path) -> StudyRatings:
    """Read ``reader, case, truth, rating[, condition, call]`` rows (the session export's mrmc.csv)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise ConfigError(
                    f"missing column(s) {missing}; need {list(REQUIRED_COLUMNS)} (+ optional {list(OPTIONAL_COLUMNS)})",
                    path,
                )
            return ratings_from_rows(list(reader), source=str(path))
    except FileNotFoundError:
        raise ConfigError("no such file", path) from None
    except UnicodeDecodeError:
        raise ConfigError("not a UTF-8 text CSV file", path) from None


# ------------------------------------------------------------------------ figures of merit
def auc_jackknife(truth: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray]:
    """Empirical AUC and its leave-one-case-out values (one per case, same order).

    Leaving out one case removes one row (synthetic) or column (real) of the Mann-Whitney kernel
    matrix psi, so each leave-one-out AUC is (sum psi - that row or column) / ((n1 - [1]) (n0 - [1])):
    the same numbers as calling roc_auc_score on every reduced set, in one pass.
    """
    truth = np.asarray(truth).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    auc = float(roc_auc_score(truth, scores))
    pos, neg = scores[truth], scores[~truth]
    n1, n0 = len(pos), len(neg)
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    total = psi.sum()
    loo = np.empty(len(scores))
    with np.errstate(invalid="ignore", divide="ignore"):
        loo[truth] = (total - psi.sum(axis=1)) / ((n1 - 1) * n0)
        loo[~truth] = (total - psi.sum(axis=0)) / (n1 * (n0 - 1))
    return auc, loo


def accuracy_jackknife(truth: np.ndarray, calls: np.ndarray) -> tuple[float, np.ndarray]:
    correct = (np.asarray(calls) == np.asarray(truth)).astype(np.float64)
    n = len(correct)
    return float(correct.mean()), (correct.sum() - correct) / (n - 1)


def fom_table(data: StudyRatings, fom: Literal["auc", "accuracy"] = "auc") -> tuple[np.ndarray, np.ndarray]:
    """Figures of merit ``(t, r)`` and their jackknife values ``(t, r, cases)``."""
    t_n, r_n, c_n = data.ratings.shape
    theta = np.empty((t_n, r_n))
    jack = np.empty((t_n, r_n, c_n))
    for t in range(t_n):
        shown = data.shown(t)
        for r in range(r_n):
            if fom == "auc":
                value, loo = auc_jackknife(data.truth[shown], data.ratings[t, r, shown])
            else:
                value, loo = accuracy_jackknife(data.truth[shown], data.calls[t, r, shown])
            theta[t, r] = value
            jack[t, r] = value  # a case this condition did not show leaves its figure unchanged
            jack[t, r, shown] = loo
    return theta, jack


# --------------------------------------------------------------------------------- OR method
@dataclass(frozen=True)
class Covariances:
    var: float  # Var(error)
    cov1: float  # same reader, different conditions
    cov2: float  # different readers, same condition
    cov3: float  # different readers, different conditions
    per_condition_var: tuple[float, ...]
    per_condition_cov2: tuple[float, ...]


def jackknife_covariances(jack: np.ndarray) -> Covariances:
    """OR error (co)variances from jackknife values ``(t, r, c)``: cov = (c - 1)/c sum_k d_k d_k'."""
    t_n, r_n, c_n = jack.shape
    flat = jack.reshape(t_n * r_n, c_n)
    dev = flat - flat.mean(axis=1, keepdims=True)
    cov = (c_n - 1) / c_n * dev @ dev.T
    ti, ri = np.divmod(np.arange(t_n * r_n), r_n)
    same_t, same_r = ti[:, None] == ti[None, :], ri[:, None] == ri[None, :]

    def mean(mask: np.ndarray) -> float:
        return float(cov[mask].mean()) if mask.any() else math.nan

    per_var = tuple(mean(same_t & same_r & (ti[:, None] == t)) for t in range(t_n))
    per_cov2 = tuple(mean(same_t & ~same_r & (ti[:, None] == t)) for t in range(t_n))
    return Covariances(
        var=mean(same_t & same_r),
        cov1=mean(~same_t & same_r),
        cov2=mean(same_t & ~same_r),
        cov3=mean(~same_t & ~same_r),
        per_condition_var=per_var,
        per_condition_cov2=per_cov2,
    )


@dataclass(frozen=True)
class Estimate:
    """One figure (a reader-averaged AUC, or a difference) with its 95 % CI and test."""

    value: float
    se: float
    df: float  # inf for the fixed-reader z tests
    ci_low: float
    ci_high: float
    statistic: float  # t (or z) against ``null``
    p: float
    null: float

    def as_dict(self) -> dict:
        return {k: _finite_or_none(v) for k, v in self.__dict__.items()}


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _estimate(value: float, se: float, df: float, null: float, alpha: float = 0.05) -> Estimate:
    if not se > 0:
        return Estimate(value, se, df, math.nan, math.nan, math.nan, math.nan, null)
    q = float(sps.t.ppf(1 - alpha / 2, df))
    stat = (value - null) / se
    p = float(2 * sps.t.sf(abs(stat), df))
    return Estimate(value, se, df, value - q * se, value + q * se, stat, p, null)


def _ratio_df(num: float, den: float) -> float:
    """num^2 / den with den -> 0 meaning infinitely many degrees of freedom."""
    return math.inf if den == 0 else num**2 / den


def single_condition(
    theta_t: np.ndarray, var: float, cov2: float, readers: Readers = "random", null: float = CHANCE
) -> Estimate:
    """Reader-averaged figure of merit of one condition, CI and test against ``null``."""
    r = len(theta_t)
    mean = float(np.mean(theta_t))
    if readers == "fixed":
        se = math.sqrt(max(var + (r - 1) * max(cov2, 0.0), 0.0) / r)
        return _estimate(mean, se, math.inf, null)
    if r < 2:
        raise ConfigError("readers-random MRMC needs at least 2 readers; with one reader use readers='fixed'")
    ms_r = float(np.var(theta_t, ddof=1))
    term = ms_r + r * max(cov2, 0.0)
    return _estimate(mean, math.sqrt(term / r), _ratio_df(term, ms_r**2 / (r - 1)), null)


@dataclass
class ConditionResult:
    name: str
    auc: Estimate
    accuracy: Estimate | None
    reader_auc: dict[str, float]
    reader_accuracy: dict[str, float] | None
    n_real: int
    n_synthetic: int


@dataclass
class Comparison:
    first: str
    second: str
    difference: Estimate  # AUC(first) - AUC(second)


@dataclass
class MrmcResult:
    readers_mode: Readers
    readers: tuple[str, ...]
    n_cases: int
    conditions: list[ConditionResult]
    comparisons: list[Comparison] = field(default_factory=list)
    f_stat: float = math.nan  # global test of equal AUCs (several conditions)
    f_ndf: float = math.nan
    f_ddf: float = math.nan
    f_p: float = math.nan
    covariances: Covariances | None = None
    mean_squares: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        cov = self.covariances
        return {
            "method": "Obuchowski-Rockette, Hillis denominator df, jackknife covariances",
            "readers": "random" if self.readers_mode == "random" else "fixed",
            "cases": "random",
            "reader_names": list(self.readers),
            "n_readers": len(self.readers),
            "n_cases": self.n_cases,
            "conditions": [
                {
                    "name": c.name,
                    "n_real": c.n_real,
                    "n_synthetic": c.n_synthetic,
                    "auc": c.auc.as_dict(),
                    "accuracy": None if c.accuracy is None else c.accuracy.as_dict(),
                    "reader_auc": c.reader_auc,
                    "reader_accuracy": c.reader_accuracy,
                }
                for c in self.conditions
            ],
            "comparisons": [
                {"first": c.first, "second": c.second, "difference": c.difference.as_dict()} for c in self.comparisons
            ],
            "global_test": None
            if not math.isfinite(self.f_stat)
            else {
                "F": self.f_stat,
                "ndf": self.f_ndf,
                "ddf": _finite_or_none(self.f_ddf),
                "p": self.f_p,
            },
            "covariances": None
            if cov is None
            else {k: _finite_or_none(v) if isinstance(v, float) else list(v) for k, v in cov.__dict__.items()},
            "mean_squares": {k: _finite_or_none(v) for k, v in self.mean_squares.items()},
        }


def or_analysis(
    theta: np.ndarray, jack: np.ndarray, readers: Readers = "random"
) -> tuple[list[Estimate], list[tuple[int, int, Estimate]], dict, Covariances]:
    """OR analysis of figures of merit ``theta (t, r)`` with jackknife values ``(t, r, c)``.

    Returns per-condition estimates (vs chance), pairwise differences (vs 0), the global F test
    (``F, ndf, ddf, p``; nan for one condition) with the mean squares, and the covariances.
    """
    if readers not in ("random", "fixed"):
        raise ConfigError(f"readers must be 'random' or 'fixed', got {readers!r}")
    t_n, r_n = theta.shape
    cov = jackknife_covariances(jack)
    singles = [
        single_condition(theta[t], cov.per_condition_var[t], cov.per_condition_cov2[t], readers) for t in range(t_n)
    ]
    extra: dict = {"F": math.nan, "ndf": math.nan, "ddf": math.nan, "p": math.nan, "mean_squares": {}}
    pairs: list[tuple[int, int, Estimate]] = []
    if t_n < 2:
        return singles, pairs, extra, cov
    grand = theta.mean()
    t_means, r_means = theta.mean(axis=1), theta.mean(axis=0)
    ms_t = r_n * float(np.sum((t_means - grand) ** 2)) / (t_n - 1)
    ms_r = t_n * float(np.sum((r_means - grand) ** 2)) / (r_n - 1) if r_n > 1 else math.nan
    inter = theta - t_means[:, None] - r_means[None, :] + grand
    ms_tr = float(np.sum(inter**2)) / ((t_n - 1) * (r_n - 1)) if r_n > 1 else math.nan
    extra["mean_squares"] = {"T": ms_t, "R": ms_r, "TR": ms_tr}
    if readers == "random":
        if r_n < 2:
            raise ConfigError("readers-random MRMC needs at least 2 readers; with one reader use readers='fixed'")
        den = ms_tr + r_n * max(cov.cov2 - cov.cov3, 0.0)
        ddf = _ratio_df(den, ms_tr**2 / ((t_n - 1) * (r_n - 1)))
        f_stat = ms_t / den if den > 0 else math.nan
        extra.update(F=f_stat, ndf=t_n - 1, ddf=ddf, p=float(sps.f.sf(f_stat, t_n - 1, ddf)) if den > 0 else math.nan)
        se = math.sqrt(2 * den / r_n)
    else:
        den = cov.var - cov.cov1 + (r_n - 1) * max(cov.cov2 - cov.cov3, 0.0)
        chi2 = (t_n - 1) * ms_t / den if den > 0 else math.nan
        ddf = math.inf
        extra.update(F=chi2, ndf=t_n - 1, ddf=math.inf, p=float(sps.chi2.sf(chi2, t_n - 1)) if den > 0 else math.nan)
        se = math.sqrt(max(2 * den / r_n, 0.0))
    for a, b in itertools.combinations(range(t_n), 2):
        pairs.append((a, b, _estimate(float(t_means[a] - t_means[b]), se, ddf, 0.0)))
    return singles, pairs, extra, cov


def analyse(data: StudyRatings, readers: Readers = "random") -> MrmcResult:
    """The whole MRMC analysis of a study: AUC (and accuracy where calls are given) per condition,
    pairwise AUC differences and the global test when there are several conditions."""
    theta, jack = fom_table(data, "auc")
    singles, pairs, extra, cov = or_analysis(theta, jack, readers)
    acc_singles: list[Estimate | None] = [None] * len(data.conditions)
    acc_theta = None
    if data.has_calls:
        acc_theta, acc_jack = fom_table(data, "accuracy")
        acc_singles = list(or_analysis(acc_theta, acc_jack, readers)[0])
    conditions = []
    for t, name in enumerate(data.conditions):
        labels = data.truth[data.shown(t)]
        conditions.append(
            ConditionResult(
                name=name,
                auc=singles[t],
                accuracy=acc_singles[t],
                reader_auc={r: float(theta[t, i]) for i, r in enumerate(data.readers)},
                reader_accuracy=None
                if acc_theta is None
                else {r: float(acc_theta[t, i]) for i, r in enumerate(data.readers)},
                n_real=int((labels == 0).sum()),
                n_synthetic=int((labels == 1).sum()),
            )
        )
    return MrmcResult(
        readers_mode=readers,
        readers=data.readers,
        n_cases=len(data.cases),
        conditions=conditions,
        comparisons=[Comparison(data.conditions[a], data.conditions[b], est) for a, b, est in pairs],
        f_stat=extra["F"],
        f_ndf=extra["ndf"],
        f_ddf=extra["ddf"],
        f_p=extra["p"],
        covariances=cov,
        mean_squares=extra["mean_squares"],
    )


def reader_roc_curves(data: StudyRatings) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Empirical ROC points (FPR, TPR) per condition and reader (``sklearn.metrics.roc_curve``)."""
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for t, cond in enumerate(data.conditions):
        shown = data.shown(t)
        out[cond] = {}
        for r, reader in enumerate(data.readers):
            fpr, tpr, _ = roc_curve(data.truth[shown], data.ratings[t, r, shown], drop_intermediate=False)
            out[cond][reader] = (fpr, tpr)
    return out


# ---------------------------------------------------------------------------------- text output
def _fmt_p(p: float) -> str:
    return "n/a" if not math.isfinite(p) else ("< 0.001" if p < 0.001 else f"{p:.4f}")


def _fmt_df(df: float) -> str:
    return "inf (z)" if math.isinf(df) else ("n/a" if math.isnan(df) else f"{df:.2f}")


def format_result(result: MrmcResult) -> str:
    """Plain-text summary (what the CLI prints without --json)."""
    lines = [
        (
            f"MRMC analysis: Obuchowski-Rockette, Hillis df, readers {result.readers_mode}, cases random; "
            f"{len(result.readers)} readers, {result.n_cases} cases"
        )
    ]
    for c in result.conditions:
        a = c.auc
        lines.append(
            f"{c.name}: AUC {a.value:.4f} [{a.ci_low:.4f}, {a.ci_high:.4f}] (SE {a.se:.4f}, df {_fmt_df(a.df)}), "
            f"p vs 0.5 {_fmt_p(a.p)}; {c.n_real} real + {c.n_synthetic} synthetic cases"
        )
        if c.accuracy is not None:
            b = c.accuracy
            lines.append(f"  accuracy {b.value:.4f} [{b.ci_low:.4f}, {b.ci_high:.4f}], p vs 0.5 {_fmt_p(b.p)}")
        lines.append("  per reader AUC: " + ", ".join(f"{r} {v:.4f}" for r, v in c.reader_auc.items()))
    if result.comparisons:
        lines.append(
            f"global test of equal AUCs: F({result.f_ndf:g}, {_fmt_df(result.f_ddf)}) = {result.f_stat:.4f}, p {_fmt_p(result.f_p)}"
        )
        for cmp in result.comparisons:
            d = cmp.difference
            lines.append(
                f"{cmp.first} - {cmp.second}: {d.value:+.5f} [{d.ci_low:.5f}, {d.ci_high:.5f}] "
                f"(SE {d.se:.5f}, df {_fmt_df(d.df)}), p {_fmt_p(d.p)}"
            )
    return "\n".join(lines) + "\n"


def rows_for_mrmc(records: Sequence[Mapping]) -> list[dict]:
    """MRMC rows from a session's answer records: rating = +confidence when called synthetic,
    -confidence when called real (10 ordered levels), call = 1 when called synthetic.

    With several generated cohorts (records' ``condition``), each condition is read against the
    same real scans: a real case's row is repeated once per condition (same reader, same rating).
    """
    conditions = sorted({r.get("condition") or "" for r in records if r["cohort"] == "synthetic"} - {""})
    out = []
    for r in records:
        said_syn = r["said"] == "synthetic"
        row = {
            "reader": r["reader"],
            "case": r["case_id"],
            "truth": int(r["cohort"] == "synthetic"),
            "rating": int(r["confidence"]) * (1 if said_syn else -1),
            "call": int(said_syn),
        }
        if r["cohort"] == "synthetic":
            out.append({**row, "condition": r.get("condition") or DEFAULT_CONDITION})
        else:
            out += [{**row, "condition": c} for c in (conditions or [DEFAULT_CONDITION])]
    return out
