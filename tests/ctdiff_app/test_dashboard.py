"""ctdiff_app.dashboard: reading report.json and the gap/status of each metric."""

from __future__ import annotations

import json
import math

import pytest

from ctdiff.errors import InputError
from ctdiff_app.dashboard import curve, gap, load_report, metric_table, numeric_columns, per_case_table, status


@pytest.mark.parametrize(
    "metric, expected",
    [
        ({"better": "lower", "value": 30.0, "reference": 10.0}, 3.0),
        ({"better": "lower", "value": 5.0, "reference": 10.0}, 0.5),
        ({"better": "higher", "value": 0.5, "reference": 0.9}, 5.0),  # shortfall from 1: 0.5 vs 0.1
        ({"better": "closer-to-real", "real": 10.0, "generated": 13.0, "reference": 2.0}, 1.5),
        ({"better": "closer-to-real", "real": 10.0, "generated": 7.0, "reference": -2.0}, 1.5),
        # a vanishing reference: the entry's resolution (one NPS bin) is the floor, not 3.5e-18
        ({"better": "closer-to-real", "real": 0.10, "generated": 0.15, "reference": 3.5e-18, "resolution": 0.025}, 2.0),
        ({"better": "closer-to-real", "real": 1.0, "generated": 1.0, "reference": 0.0}, None),
        ({"better": "lower", "value": 3.0, "reference": 0.0}, None),
        ({"better": "higher", "value": 0.0, "reference": 0.9}, 10.0),
        ({"better": "lower", "value": None, "reference": 1.0}, None),
        ({"better": "lower", "value": 2.0, "reference": None}, None),
        ({"better": "closer-to-real", "real": None, "generated": 1.0, "reference": 1.0}, None),
        ({"better": "sideways", "value": 2.0, "reference": 1.0}, None),
        ({"better": "lower", "value": float("nan"), "reference": 1.0}, None),
    ],
)
def test_gap_delegates_to_eval(metric, expected):
    from eval.report.gap import gap as eval_gap

    g = gap(metric)
    assert g == (pytest.approx(expected) if isinstance(expected, float) else expected)
    assert g == eval_gap(metric)


def test_status_thresholds():
    assert [status(g) for g in (None, 0.2, 1.25, 1.26, 2.0, 2.01, 1e9)] == [
        "n/a",
        "close",
        "close",
        "apart",
        "apart",
        "far",
        "far",
    ]
    # no status without a finite gap to show next to it
    assert status(math.inf) == "n/a" and status(math.nan) == "n/a"


def test_every_status_row_shows_a_finite_gap():
    t = metric_table(
        {
            "metrics": {
                "kid": {"value": 0.02, "reference": 0.0, "better": "lower"},  # floor of 0: gap would be infinite
                "coverage": {"value": 0.0, "reference": 0.9, "better": "higher"},
                "frd": {"value": 30.0, "reference": 10.0, "better": "lower"},
            }
        }
    ).set_index("metric")
    assert t.loc["kid", "status"] == "n/a"
    # eval's floor rule: coverage falls 1.0 short of perfect, two real sets 0.1: a finite gap of 10, far
    assert t.loc["coverage", "status"] == "far" and t.loc["coverage", "gap"] == pytest.approx(10.0)
    assert t.loc["frd", "status"] == "far" and t.loc["frd", "gap"] == 3.0
    shown = t[t["status"] != "n/a"]
    assert shown["gap"].map(lambda g: g is not None and math.isfinite(g)).all()


REPORT = {
    "schema": "ctdiff-eval-report/1",
    "metrics": {
        "frd": {"value": 30.0, "ci95": [25.0, 35.0], "reference": 10.0, "better": "lower", "unit": ""},
        "noise_sd": {
            "value": 3.0,
            "ci95": None,
            "real": 10.0,
            "generated": 13.0,
            "reference": 2.0,
            "better": "closer-to-real",
            "unit": "HU",
            "description": "noise",
        },
        "fid": {"value": None, "reference": None, "better": "lower", "reason": "skipped: too few volumes"},
    },
    "per_case": [
        {"cohort": "real", "file": "a", "noise_sd": 10.0, "note": "x"},
        {"cohort": "generated", "file": "b", "noise_sd": 13.0, "note": "y"},
    ],
    "curves": {"nps": {"frequency_mm": [0.1], "real": [1.0], "generated": [2.0]}, "hu_histogram": {}},
}


def test_metric_table_rows():
    t = metric_table(REPORT).set_index("metric")
    assert t.loc["frd", "gap"] == 3.0 and t.loc["frd", "status"] == "far" and t.loc["frd", "ci95"] == "25 .. 35"
    assert t.loc["noise_sd", "gap"] == 1.5 and t.loc["noise_sd", "status"] == "apart"
    assert t.loc["noise_sd", "unit"] == "HU" and t.loc["noise_sd", "notes"] == "noise"
    assert t.loc["fid", "status"] == "n/a" and t.loc["fid", "notes"] == "skipped: too few volumes"
    assert metric_table({"metrics": {}}).columns.tolist()[0] == "metric"


def test_per_case_curves_and_numeric_columns():
    df = per_case_table(REPORT)
    assert df["noise_sd"].tolist() == [10.0, 13.0]
    assert numeric_columns(df) == ["noise_sd"]
    assert curve(REPORT, "nps")["generated"] == [2.0]
    assert curve(REPORT, "hu_histogram") is None and curve({}, "nps") is None
    assert per_case_table({}).empty


def test_load_report_checks(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps(REPORT))
    assert load_report(tmp_path)["metrics"]["frd"]["value"] == 30.0
    with pytest.raises(InputError, match="no report.json"):
        load_report(tmp_path / "nope")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(InputError, match="not readable JSON"):
        load_report(bad)
    bad.write_text(json.dumps({"schema": "other/1", "metrics": {}}))
    with pytest.raises(InputError, match="has schema 'other/1'"):
        load_report(bad)
    bad.write_text(json.dumps({"schema": "ctdiff-eval-report/1"}))
    with pytest.raises(InputError, match="no 'metrics'"):
        load_report(bad)
