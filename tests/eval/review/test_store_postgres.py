"""The review store on PostgreSQL (what CTDIFF_REVIEW_DB=postgresql://... gives a site): schema, the
append-only trigger, and an insert race on the (reader, case) unique constraint.

The migration from version 1 and concurrent submits from threads run on both backends in
test_store.py (the ``any_db`` fixture)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from eval.review import db as review_db
from eval.review import store
from eval.review.db import Answer, get_engine


def test_postgres_schema_and_full_round_trip(pg_url, cohorts):
    engine = get_engine(pg_url)
    assert engine.dialect.name == "postgresql" and review_db.schema_version(engine) == 3
    sid = store.create_session(pg_url, "pg", *cohorts, planes=["axial", "coronal"], allow_change=True)
    info = store.session_info(pg_url, sid)
    assert info.planes == ("axial", "coronal") and info.grid.shape == (16, 16, 8)
    reader = store.find_reader(pg_url, store.add_reader(pg_url, sid, "A", code="pg-code-1"))
    code = store.reader_case(pg_url, reader.reader_id, 0).code
    store.submit_answer(
        pg_url, reader.reader_id, code, said_synthetic=True, confidence=5, realism=1, flags=["noise"], seconds=2.0
    )
    view = store.submit_answer(
        pg_url, reader.reader_id, code, said_synthetic=False, confidence=2, realism=4, seconds=1.0
    )
    assert (view.said_synthetic, view.changes, view.seconds) == (False, 1, 3.0)
    assert store.reader_progress(pg_url, reader.reader_id).next_position == 1
    (rec,) = store.answer_records(pg_url, sid)
    assert (rec["said"], rec["realism"], rec["flag_noise"]) == ("real", 4, False)
    # audit trail: append-only on PostgreSQL too (a trigger refuses UPDATE and DELETE)
    assert [e["action"] for e in store.events(pg_url, sid)] == [
        "session_created",
        "reader_added",
        "answer_submitted",
        "answer_changed",
    ]
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    with pytest.raises(DBAPIError, match="append-only"):
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM review_events"))
    assert len(store.events(pg_url, sid)) == 4


def test_postgres_insert_race_is_retried_as_a_refusal(pg_url, cohorts):
    """Another connection commits the same (reader, case) between our check and our insert: the
    unique constraint stops the duplicate and the retry turns it into a refusal (changes off)."""
    sid = store.create_session(pg_url, "s", *cohorts)
    reader = store.find_reader(pg_url, store.add_reader(pg_url, sid, "A"))
    code = store.reader_case(pg_url, reader.reader_id, 0).code
    raced = []

    def competitor_first(session, flush_context, instances):
        if raced or not any(isinstance(o, Answer) for o in session.new):
            return
        raced.append(True)  # our insert is about to be sent: a competing submit lands first
        t = threading.Thread(
            target=store.submit_answer,
            args=(pg_url, reader.reader_id, code),
            kwargs=dict(said_synthetic=True, confidence=5, realism=5),
        )
        t.start()
        t.join(timeout=60)

    event.listen(Session, "before_flush", competitor_first)
    try:
        with pytest.raises(store.AnswerLockedError):
            store.submit_answer(pg_url, reader.reader_id, code, said_synthetic=False, confidence=1, realism=1)
    finally:
        event.remove(Session, "before_flush", competitor_first)
    assert raced
    (rec,) = store.answer_records(pg_url, sid)
    assert (rec["said"], rec["confidence"]) == ("synthetic", 5)  # the competitor's answer, once
