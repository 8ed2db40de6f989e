"""Realism-only design: ratings stored once per case, distributions per cohort, Mann-Whitney, page."""

from __future__ import annotations

import json

import pytest
from scipy import stats as sps
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from ctdiff.errors import ConfigError
from eval.review import export, stats, store
from eval.review.db import Case, dispose_engines, read_session
from tests.eval.review.test_pages import READER, button, case_heading, radio


def test_rating_session_round_trip_distributions_and_mann_whitney(db_url, cohorts):
    sid = store.create_session(db_url, "r", *cohorts, design="rating")
    with read_session(db_url) as s:
        cohort = {c.code: c.cohort for c in s.scalars(select(Case))}
    given = {"real": [], "synthetic": []}
    for name, shift in (("A", 0), ("B", 1)):
        reader = store.find_reader(db_url, store.add_reader(db_url, sid, name))
        assert reader.design == "rating"
        for pos in range(reader.total):
            code = store.reader_case(db_url, reader.reader_id, pos).code
            value = 5 - shift if cohort[code] == "real" else 1 + shift + pos % 2
            store.submit_rating(
                db_url, reader.reader_id, code, realism=value, flags=["noise"] if pos == 0 else [], seconds=1.5
            )
            given[cohort[code]].append(value)
        assert store.reader_progress(db_url, reader.reader_id).next_position is None
        with pytest.raises(store.AnswerLockedError):
            store.submit_rating(db_url, reader.reader_id, code, realism=3)
    with pytest.raises(ConfigError, match="realism must be an integer 1..5"):
        store.submit_rating(db_url, reader.reader_id, code, realism=6)
    records = store.rating_records(db_url, sid)
    assert len(records) == 12 and sum(r["flag_noise"] for r in records) == 2
    summary = stats.rating_summary(records)
    assert summary["real"]["counts"] == {str(k): given["real"].count(k) for k in range(1, 6)}
    syn = summary["groups"]["synthetic"]
    assert syn["mean"] == pytest.approx(sum(given["synthetic"]) / 6)
    assert syn["p"] == pytest.approx(
        sps.mannwhitneyu(given["real"], given["synthetic"], alternative="two-sided").pvalue
    )
    assert [p["answered"] for p in store.session_progress(db_url, sid)] == [6, 6]
    files = export.build_report(db_url, sid)
    assert json.loads(files["summary.json"])["groups"]["synthetic"]["n"] == 6
    assert "## Realism ratings" in files["summary.md"] and "rated less realistic than real ones" in files["summary.md"]
    assert files["answers.csv"].splitlines()[0] == ",".join(export.RATING_COLUMNS)


def test_rating_page_asks_only_for_realism(db_url, cohorts, monkeypatch, tmp_path):
    monkeypatch.setenv("CTDIFF_REVIEW_DB", db_url)
    monkeypatch.setenv("CTDIFF_WORKSPACE", str(tmp_path))
    sid = store.create_session(db_url, "r", *cohorts, design="rating")
    code = store.add_reader(db_url, sid, "R")
    at = AppTest.from_file(READER, default_timeout=60).run()
    at.text_input(key="review_code_input").input(code)
    button(at, "Start reading").click().run()
    assert [r.label for r in at.radio] == ["How realistic does it look?"]  # no real/synthetic question
    radio(at, "How realistic does it look?").set_value(2)
    button(at, "Submit and next").click().run()
    assert case_heading(at) == "Case 2 of 6"
    (rec,) = store.rating_records(db_url, sid)
    assert rec["realism"] == 2 and rec["position"] == 1
    dispose_engines()
