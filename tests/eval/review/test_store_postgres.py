"""The review store on PostgreSQL (what CTDIFF_REVIEW_DB=postgresql://... gives a site): schema,
migration from version 1, and concurrent submits racing on the (reader, case) unique constraint."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import create_engine, event, func, inspect, select
from sqlalchemy.orm import Session

from eval.review import assign, store
from eval.review import db as review_db
from eval.review.db import Answer, get_engine, read_session


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


def test_postgres_migration_from_v1(pg_url):
    old = create_engine(pg_url)
    md = review_db.schema_v1_metadata()
    md.create_all(old)
    now = review_db.utcnow()
    with old.begin() as conn:
        t = md.tables
        conn.execute(t["review_schema_version"].insert().values(id=1, version=1))
        conn.execute(
            t["review_sessions"]
            .insert()
            .values(
                id=1,
                uid="u1",
                name="old",
                created_at=now,
                seed=0,
                real_dir="r",
                generated_dir="g",
                planes=["axial"],
                windows=["bone"],
                scroll="all",
                instructions="",
                grid_shape=[16, 16, 8],
                grid_spacing=[2.0, 2.0, 3.0],
            )
        )
        conn.execute(
            t["review_cases"].insert().values(id=1, session_id=1, code="abcd1234", path="x.nii.gz", cohort="synthetic")
        )
        conn.execute(
            t["review_readers"]
            .insert()
            .values(id=1, session_id=1, name="R", code_hash=assign.hash_code("OLDCODE"), created_at=now)
        )
        conn.execute(t["review_assignments"].insert().values(reader_id=1, position=0, case_id=1))
        conn.execute(
            t["review_answers"]
            .insert()
            .values(
                id=1,
                reader_id=1,
                case_id=1,
                said_synthetic=False,
                confidence=4,
                realism=5,
                flag_noise=False,
                flag_texture=True,
                flag_contrast=False,
                flag_anatomy=False,
                flag_edges=False,
                comment="",
                seconds=3.0,
                submitted_at=now,
            )
        )
    old.dispose()
    engine = get_engine(pg_url)
    assert review_db.schema_version(engine) == 3
    cols = {c["name"] for c in inspect(engine).get_columns("review_answers")}
    assert {"updated_at", "changes"} <= cols
    (rec,) = store.answer_records(pg_url, 1)
    assert (rec["said"], rec["flag_texture"], rec["changes"], rec["updated_utc"]) == (
        "real",
        True,
        0,
        rec["submitted_utc"],
    )
    assert store.session_info(pg_url, 1).allow_change is False


def test_postgres_concurrent_submits_lose_and_duplicate_nothing(pg_url, cohorts):
    sid = store.create_session(pg_url, "s", *cohorts)
    readers = [store.find_reader(pg_url, store.add_reader(pg_url, sid, f"R{i}")) for i in range(4)]
    codes = {r.reader_id: [store.reader_case(pg_url, r.reader_id, i).code for i in range(r.total)] for r in readers}
    contested = (readers[0].reader_id, codes[readers[0].reader_id][0])
    barrier = threading.Barrier(9)
    outcome: list[str] = []

    def work(reader_id):
        barrier.wait()
        for c in codes[reader_id]:
            store.submit_answer(pg_url, reader_id, c, said_synthetic=True, confidence=3, realism=3)
        outcome.append("done")

    def contest():
        barrier.wait()
        try:
            store.submit_answer(pg_url, *contested, said_synthetic=False, confidence=1, realism=1)
            outcome.append("won")
        except store.AnswerLockedError:
            outcome.append("locked")

    threads = [threading.Thread(target=work, args=(r.reader_id,)) for r in readers[1:]]
    threads += [threading.Thread(target=contest) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(outcome) == ["done"] * 3 + ["locked"] * 5 + ["won"]
    with read_session(pg_url) as s:
        total = s.scalar(select(func.count(Answer.id)))
        pairs = s.scalar(
            select(func.count()).select_from(select(Answer.reader_id, Answer.case_id).distinct().subquery())
        )
    assert total == pairs == 3 * 6 + 1


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
