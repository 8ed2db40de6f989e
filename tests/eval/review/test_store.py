"""Review store: schema and migration, WAL, sessions, readers, resume, change rules, concurrency."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, func, inspect, select

from ctdiff.data.io import find_cases
from ctdiff.errors import ConfigError, InputError
from eval.review import assign, store
from eval.review import db as review_db
from eval.review.db import Answer, Case, get_engine, read_session

REPO = Path(__file__).resolve().parents[3]


def _sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def _cohort_of(db_url: str) -> dict[str, tuple[str, str]]:
    """case code -> (path, cohort), read straight from the database."""
    with read_session(db_url) as s:
        return {c.code: (c.path, c.cohort) for c in s.scalars(select(Case))}


def _answer(db_url, reader_id, code, **kw):
    args = dict(said_synthetic=True, confidence=3, realism=3, seconds=1.0)
    args.update(kw)
    return store.submit_answer(db_url, reader_id, code, **args)


# ------------------------------------------------------------------------------ schema
def test_new_database_is_current_schema_in_wal_mode(db_url):
    engine = get_engine(db_url)
    assert review_db.schema_version(engine) == review_db.SCHEMA_VERSION == 3
    con = sqlite3.connect(_sqlite_path(db_url))
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_migration_from_schema_v1_keeps_data_and_matches_a_fresh_schema(any_db, tmp_path):
    url = any_db  # SQLite and PostgreSQL: the same migration code runs on both
    # build a version-1 database the way ctdiff's first schema wrote it
    old = create_engine(url)
    md = review_db.schema_v1_metadata()
    md.create_all(old)
    t = md.tables
    now = review_db.utcnow()
    with old.begin() as conn:
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
            t["review_cases"].insert().values(id=1, session_id=1, code="abcd1234", path="x.nii.gz", cohort="real")
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
                said_synthetic=True,
                confidence=4,
                realism=2,
                flag_noise=True,
                flag_texture=False,
                flag_contrast=False,
                flag_anatomy=False,
                flag_edges=False,
                comment="grainy",
                seconds=12.5,
                submitted_at=now,
            )
        )
    old.dispose()

    engine = get_engine(url)  # migrates on open
    try:
        assert review_db.schema_version(engine) == 3
        fresh = get_engine(f"sqlite:///{tmp_path / 'fresh.sqlite'}")
        for table in review_db.Base.metadata.tables:
            cols_old = {c["name"] for c in inspect(engine).get_columns(table)}
            cols_new = {c["name"] for c in inspect(fresh).get_columns(table)}
            assert cols_old == cols_new, table
        (rec,) = store.answer_records(url, 1)
        assert (rec["said"], rec["confidence"], rec["realism"], rec["flag_noise"], rec["comment"]) == (
            "synthetic",
            4,
            2,
            True,
            "grainy",
        )
        assert rec["changes"] == 0 and rec["updated_utc"] == rec["submitted_utc"]
        info = store.session_info(url, 1)
        assert info.allow_change is False and info.skipped == ()
        with read_session(url) as session:  # the v1 row keeps its unsalted hash until first use
            assert session.scalar(select(review_db.Reader.code_kdf)) == "sha256"
        reader = store.find_reader(url, "oldcode")
        assert reader is not None and reader.reader_name == "R"
        with read_session(url) as session:  # ... and is re-hashed with salted scrypt on sign-in
            row = session.scalar(select(review_db.Reader))
            assert (row.code_kdf, len(row.code_salt), row.code_lookup) == ("scrypt", 32, "OL")
            assert row.code_hash == assign.scrypt_code("OLDCODE", row.code_salt) != assign.hash_code("OLDCODE")
        assert store.find_reader(url, "OLDCODE").reader_id == reader.reader_id
        with pytest.raises(store.AnswerLockedError):  # migrated sessions keep the v1 rule: no changes
            _answer(url, reader.reader_id, "abcd1234")
        # opening again is a no-op
        assert review_db.ensure_schema(engine) == 3
    finally:
        review_db.dispose_engines()


def test_newer_schema_version_is_refused(db_url):
    engine = get_engine(db_url)
    with engine.begin() as conn:
        conn.execute(review_db.SchemaVersion.__table__.update().values(version=99))
    review_db.dispose_engines()
    with pytest.raises(ConfigError, match="newer"):
        get_engine(db_url)


# ------------------------------------------------------------------------------ sessions
def test_create_session_balanced_by_default_with_opaque_ids(db_url, make_cohorts):
    real, gen = make_cohorts(n_real=4, n_gen=2)
    sid = store.create_session(db_url, "s", real, gen)
    info = store.session_info(db_url, sid)
    assert (info.n_real, info.n_synthetic) == (2, 2)  # balanced: as many as the smaller folder
    assert info.grid.shape == (16, 16, 8)  # per axis the smallest case: 16 x 16 in-plane, 8 slices
    cases = _cohort_of(db_url)
    assert sorted(c for _, c in cases.values()) == ["real", "real", "synthetic", "synthetic"]
    for code, (path, _) in cases.items():
        assert len(code) == 8 and int(code, 16) >= 0
        assert code not in path and Path(path).name.split(".")[0] not in code
    # every case is cached on the display grid before create_session returns
    cache = store.cache_root(db_url)
    assert sorted(p.stem for p in cache.rglob("*.npy")) == sorted(cases)


def test_case_paths_are_stored_relative_to_a_sqlite_file_that_holds_them(tmp_path, make_cohorts):
    """Scans below the database's folder are stored relative to it (the folder can be moved whole, as the
    demo workspace is renamed into place); scans elsewhere keep absolute paths; both are read back whole."""
    real, gen = make_cohorts(n_real=2, n_gen=2, name="ws")
    inside = f"sqlite:///{tmp_path / 'ws' / 'reviews.sqlite'}"
    outside = f"sqlite:///{tmp_path / 'elsewhere' / 'reviews.sqlite'}"
    try:
        sid_in = store.create_session(inside, "in", real, gen)
        sid_out = store.create_session(outside, "out", real, gen)
        stored_in = sorted(p for p, _ in _cohort_of(inside).values())
        assert stored_in == sorted(f"{f.parent.name}/{f.name}" for f in find_cases(real)[:2] + find_cases(gen)[:2])
        assert all(Path(p).is_absolute() and Path(p).is_file() for p, _ in _cohort_of(outside).values())
        for db, sid in ((inside, sid_in), (outside, sid_out)):
            info = store.session_info(db, sid)
            assert (info.real_dir, info.conditions[0][1]) == (str(real), str(gen))
        review_db.dispose_engines()
        moved = tmp_path / "moved"
        (tmp_path / "ws").rename(moved)
        db = f"sqlite:///{moved / 'reviews.sqlite'}"
        info = store.session_info(db, sid_in)
        assert info.real_dir == str(moved / real.name)
        shutil.rmtree(store.cache_root(db))
        assert store.ensure_cache(db, sid_in) == 4  # every case re-read from its stored relative path
    finally:
        review_db.dispose_engines()


def test_sql_in_names_codes_and_comments_is_stored_as_text(db_url, make_cohorts):
    """What held in issue 17 stays held: every value reaches the database as a bound parameter."""
    real, gen = make_cohorts(n_real=2, n_gen=2)
    evil = "x'); DROP TABLE review_answers; --"
    sid = store.create_session(db_url, evil, real, gen)
    code = store.add_reader(db_url, sid, evil, code="code' OR '1'='1")
    assert store.find_reader(db_url, "' OR '1'='1") is None  # no injected match
    reader = store.find_reader(db_url, code)
    assert reader is not None and reader.reader_name == evil and reader.session_name == evil
    first = store.reader_case(db_url, reader.reader_id, 0).code
    _answer(db_url, reader.reader_id, first, comment=evil)
    (record,) = store.answer_records(db_url, sid)
    assert record["comment"] == evil and record["session"] == evil
    assert {"review_answers", "review_sessions"} <= set(inspect(get_engine(db_url)).get_table_names())


def test_create_session_sizes_seed_and_bad_input(db_url, make_cohorts):
    real, gen = make_cohorts(n_real=4, n_gen=3)
    a = store.create_session(db_url, "a", real, gen, n_real=3, n_generated=1, seed=5)
    b = store.create_session(db_url, "b", real, gen, n_real=3, n_generated=1, seed=5)
    c = store.create_session(db_url, "c", real, gen, n_real=3, n_generated=1, seed=6)
    assert (store.session_info(db_url, a).n_real, store.session_info(db_url, a).n_synthetic) == (3, 1)
    by_session = {}
    with read_session(db_url) as s:
        for case in s.scalars(select(Case)):
            by_session.setdefault(case.session_id, set()).add(case.path)
    assert by_session[a] == by_session[b]  # same seed: same files
    assert by_session[a] != by_session[c]  # another seed draws other files (4 choose 3 x 3 choose 1)
    with pytest.raises(InputError, match="3 case"):
        store.create_session(db_url, "too many", real, gen, n_per_cohort=4)
    with pytest.raises(ConfigError, match="plane"):
        store.create_session(db_url, "p", real, gen, planes=["oblique"])
    with pytest.raises(InputError, match="same folder"):
        store.create_session(db_url, "same", real, real)


def test_unreadable_file_is_skipped_replaced_and_listed(db_url, make_cohorts):
    real, gen = make_cohorts(n_real=3, n_gen=3)
    bad = real / "broken.nii.gz"
    bad.write_bytes(b"not a nifti at all")
    # a seed whose candidate order reaches the broken file among the first three
    seed = next(s for s in range(50) if bad in assign.candidate_order(find_cases(real), s, assign.STREAM_REAL)[:3])
    sid = store.create_session(db_url, "s", real, gen, seed=seed)  # 4 candidates in real/, 3 good
    info = store.session_info(db_url, sid)
    assert (info.n_real, info.n_synthetic) == (3, 3)
    assert [Path(p).name for p, _ in info.skipped] == ["broken.nii.gz"]
    assert "NIfTI" in info.skipped[0][1] or "nifti" in info.skipped[0][1].lower()
    assert bad.as_posix() not in {p for p, _ in _cohort_of(db_url).values()}


# ------------------------------------------------------------------------------ readers
def test_reader_codes_are_hashed_unique_and_case_insensitive(db_url, cohorts):
    sid = store.create_session(db_url, "s", *cohorts)
    code = store.add_reader(db_url, sid, "Dr. A")
    assert len(code) == 14 and code.count("-") == 2
    assert store.find_reader(db_url, f"  {code.lower()} ").reader_name == "Dr. A"
    assert store.find_reader(db_url, "WRONG-CODE-0000") is None
    assert store.add_reader(db_url, sid, "demo", code="demo-reader") == "demo-reader"
    with pytest.raises(ConfigError, match="already"):
        store.add_reader(db_url, sid, "other", code="DEMO-READER")
    with pytest.raises(ConfigError, match="already has a reader"):
        store.add_reader(db_url, sid, "Dr. A")
    raw = Path(_sqlite_path(db_url)).read_bytes() + Path(_sqlite_path(db_url) + "-wal").read_bytes()
    # neither the code nor its unsalted hash is stored; the salted scrypt digest is
    assert code.encode() not in raw and assign.hash_code(code).encode() not in raw
    with read_session(db_url) as session:
        row = session.scalar(select(review_db.Reader).where(review_db.Reader.name == "Dr. A"))
    assert row.code_kdf == "scrypt" and row.code_hash.encode() in raw
    assert row.code_hash == assign.scrypt_code(code, row.code_salt)
    other = store.add_reader(db_url, sid, "Dr. B")
    with read_session(db_url) as session:
        salts = set(session.scalars(select(review_db.Reader.code_salt)))
    assert len(salts) == 3 and store.find_reader(db_url, other).reader_name == "Dr. B"
    new = store.new_reader_code(db_url, sid, "Dr. A")
    assert store.find_reader(db_url, code) is None and store.find_reader(db_url, new).reader_name == "Dr. A"


def test_reader_orders_are_seeded_per_reader(db_url, cohorts):
    sid = store.create_session(db_url, "s", *cohorts, seed=3)
    readers = [store.find_reader(db_url, store.add_reader(db_url, sid, n)) for n in ("A", "B")]
    cases = _cohort_of(db_url)

    def order(reader):
        return [cases[store.reader_case(db_url, reader.reader_id, i).code][0] for i in range(reader.total)]

    a, b = order(readers[0]), order(readers[1])
    assert sorted(a) == sorted(b) == sorted(p for p, _ in cases.values())
    assert a != b
    # the order is a function of (seed, reader number): reproduce it with assign.reader_order
    with read_session(db_url) as s:
        ids = list(s.scalars(select(Case.id).where(Case.session_id == sid).order_by(Case.id)))
        path_of = {c.id: c.path for c in s.scalars(select(Case))}
    assert [path_of[i] for i in assign.reader_order(ids, 3, 2)] == b


# ------------------------------------------------------------------------------ answers
def test_resume_position_is_first_unanswered_case(db_url, cohorts):
    sid = store.create_session(db_url, "s", *cohorts)
    code = store.add_reader(db_url, sid, "A")
    reader = store.find_reader(db_url, code)
    first = [store.reader_case(db_url, reader.reader_id, i).code for i in range(3)]
    _answer(db_url, reader.reader_id, first[0])
    _answer(db_url, reader.reader_id, first[1], said_synthetic=False, flags=["noise", "edges"], comment=" ok ")
    again = store.find_reader(db_url, code)  # signing in anew (closed tab)
    progress = store.reader_progress(db_url, again.reader_id)
    assert (progress.answered, progress.total, progress.next_position) == (2, 6, 2)
    case = store.reader_case(db_url, again.reader_id, 1)
    assert (
        case.answer.flags == ("noise", "edges") and case.answer.comment == "ok" and case.answer.said_synthetic is False
    )
    assert store.reader_case(db_url, again.reader_id, progress.next_position).code == first[2]
    last = store.reader_case(db_url, again.reader_id, 5).code
    _answer(db_url, again.reader_id, last)  # answering out of order leaves the resume point alone
    assert store.reader_progress(db_url, again.reader_id).next_position == 2


def test_change_after_submit_refused_by_default(db_url, cohorts):
    sid = store.create_session(db_url, "s", *cohorts)
    reader = store.find_reader(db_url, store.add_reader(db_url, sid, "A"))
    code = store.reader_case(db_url, reader.reader_id, 0).code
    _answer(db_url, reader.reader_id, code, said_synthetic=True, realism=2)
    with pytest.raises(store.AnswerLockedError):
        _answer(db_url, reader.reader_id, code, said_synthetic=False, realism=5)
    (rec,) = store.answer_records(db_url, sid)
    assert (rec["said"], rec["realism"], rec["changes"]) == ("synthetic", 2, 0)


def test_change_after_submit_allowed_updates_and_counts(db_url, cohorts):
    sid = store.create_session(db_url, "s", *cohorts, allow_change=True)
    reader = store.find_reader(db_url, store.add_reader(db_url, sid, "A"))
    code = store.reader_case(db_url, reader.reader_id, 0).code
    _answer(db_url, reader.reader_id, code, said_synthetic=True, realism=2, seconds=4.0)
    view = _answer(db_url, reader.reader_id, code, said_synthetic=False, realism=5, flags=["texture"], seconds=1.5)
    assert (view.said_synthetic, view.realism, view.flags, view.changes, view.seconds) == (
        False,
        5,
        ("texture",),
        1,
        5.5,
    )
    (rec,) = store.answer_records(db_url, sid)
    assert (rec["said"], rec["realism"], rec["flag_texture"], rec["changes"]) == ("real", 5, True, 1)


def test_invalid_answers_and_foreign_cases_are_refused(db_url, cohorts):
    sid = store.create_session(db_url, "s", *cohorts)
    a = store.find_reader(db_url, store.add_reader(db_url, sid, "A"))
    code = store.reader_case(db_url, a.reader_id, 0).code
    for bad in (
        {"confidence": 0},
        {"realism": 6},
        {"confidence": 2.5},
        {"flags": ["blur"]},
        {"seconds": -1},
        {"said_synthetic": "yes"},
    ):
        with pytest.raises(ConfigError):
            _answer(db_url, a.reader_id, code, **bad)
    other = store.create_session(db_url, "other", *cohorts)
    b = store.find_reader(db_url, store.add_reader(db_url, other, "B"))
    with pytest.raises(ConfigError, match="not in reader"):
        _answer(db_url, b.reader_id, code)
    assert store.answer_records(db_url, sid) == []


# ------------------------------------------------------------------------------ concurrency
def _count_answers(db_url) -> tuple[int, int]:
    with read_session(db_url) as s:
        total = s.scalar(select(func.count(Answer.id)))
        distinct = s.scalar(
            select(func.count()).select_from(select(Answer.reader_id, Answer.case_id).distinct().subquery())
        )
    return int(total), int(distinct)


def test_concurrent_submits_from_threads_lose_and_duplicate_nothing(any_db, cohorts):
    # SQLite serialises writers (BEGIN IMMEDIATE); PostgreSQL races on the (reader, case) unique constraint
    db_url = any_db
    sid = store.create_session(db_url, "s", *cohorts)  # changes not allowed
    readers = [store.find_reader(db_url, store.add_reader(db_url, sid, f"R{i}")) for i in range(4)]
    codes = {r.reader_id: [store.reader_case(db_url, r.reader_id, i).code for i in range(r.total)] for r in readers}
    contested = (readers[0].reader_id, codes[readers[0].reader_id][0])
    barrier = threading.Barrier(8)
    results, errors = [], []

    def work(reader_id, my_codes):
        barrier.wait()
        for c in my_codes:
            _answer(db_url, reader_id, c)
        results.append(reader_id)

    def contest():
        barrier.wait()
        try:
            _answer(db_url, *contested, realism=5)
            results.append("contest-won")
        except store.AnswerLockedError:
            errors.append("locked")

    threads = [threading.Thread(target=work, args=(r.reader_id, codes[r.reader_id])) for r in readers[1:]]
    threads += [threading.Thread(target=contest) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(x for x in results if x != "contest-won") == sorted(r.reader_id for r in readers[1:])
    assert results.count("contest-won") == 1 and len(errors) == 4  # exactly one of five got in
    assert _count_answers(db_url) == (3 * 6 + 1, 3 * 6 + 1)


WORKER = """
import sys, time, pathlib
from eval.review import store
db, reader_id, go, contested = sys.argv[1], int(sys.argv[2]), pathlib.Path(sys.argv[3]), sys.argv[4]
codes = sys.argv[5:]
while not go.exists():
    time.sleep(0.01)
for c in codes:
    store.submit_answer(db, reader_id, c, said_synthetic=True, confidence=2, realism=4, flags=["noise"], seconds=1.0)
other_reader, other_code = contested.split(":")
try:
    store.submit_answer(db, int(other_reader), other_code, said_synthetic=False, confidence=1, realism=1)
    print("WON")
except store.AnswerLockedError:
    print("LOCKED")
"""


def test_concurrent_submits_from_processes_lose_and_duplicate_nothing(db_url, cohorts, tmp_path):
    sid = store.create_session(db_url, "s", *cohorts)
    readers = [store.find_reader(db_url, store.add_reader(db_url, sid, f"P{i}")) for i in range(4)]
    codes = {r.reader_id: [store.reader_case(db_url, r.reader_id, i).code for i in range(r.total)] for r in readers}
    spare = readers[3]  # its first case is contested by every process
    contested = f"{spare.reader_id}:{codes[spare.reader_id][0]}"
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, db_url, str(r.reader_id), str(go), contested, *codes[r.reader_id]],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in readers[:3]
    ]
    time.sleep(0.5)  # let them import; the 'go' file starts them together
    go.touch()
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-2000:] for o in outs]
    verdicts = sorted(o[0].strip() for o in outs)
    assert verdicts == ["LOCKED", "LOCKED", "WON"]
    assert _count_answers(db_url) == (3 * 6 + 1, 3 * 6 + 1)
    recs = store.answer_records(db_url, sid)
    assert sorted((r["reader"], r["case_id"]) for r in recs if r["reader"] != "P3") == sorted(
        (f"P{i}", c) for i, r in enumerate(readers[:3]) for c in codes[r.reader_id]
    )


# ------------------------------------------------------------------------------ hardening
def test_codes_need_a_minimum_length(db_url, cohorts):
    sid = store.create_session(db_url, "s", *cohorts)
    with pytest.raises(ConfigError, match="at least 8 characters"):
        store.add_reader(db_url, sid, "A", code="SHORT12")
    assert store.add_reader(db_url, sid, "A", code="LONGER12") == "LONGER12"
    assert store.find_reader(db_url, "x" * 10_000) is None


def test_code_comparison_is_constant_time(monkeypatch):
    import hmac

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(assign.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    salt = assign.new_salt()
    assert assign.code_matches("ABCD-EFGH", "scrypt", salt, assign.scrypt_code("abcd-efgh", salt))
    assert not assign.code_matches("ABCD-EFGX", "scrypt", salt, assign.scrypt_code("abcd-efgh", salt))
    assert len(calls) == 2


def test_signin_attempts_back_off_and_reset(db_url, monkeypatch):
    t = [review_db.utcnow()]
    monkeypatch.setattr(store, "utcnow", lambda: t[0])
    for _ in range(store.SIGNIN_FREE_ATTEMPTS):
        assert store.signin_wait(db_url, "reader", "10.0.0.1") == 0
        store.record_signin(db_url, "reader", "10.0.0.1", ok=False)
    assert store.signin_wait(db_url, "reader", "10.0.0.1") == pytest.approx(2.0)
    store.record_signin(db_url, "reader", "10.0.0.1", ok=False)
    assert store.signin_wait(db_url, "reader", "10.0.0.1") == pytest.approx(4.0)  # doubles
    assert store.signin_wait(db_url, "organiser", "10.0.0.1") == 0  # scopes and clients are separate
    assert store.signin_wait(db_url, "reader", "10.0.0.2") == 0
    t[0] += __import__("datetime").timedelta(seconds=3)
    assert store.signin_wait(db_url, "reader", "10.0.0.1") == pytest.approx(1.0)
    for _ in range(30):
        store.record_signin(db_url, "reader", "10.0.0.1", ok=False)
    assert store.signin_wait(db_url, "reader", "10.0.0.1") == pytest.approx(store.SIGNIN_MAX_WAIT_S)
    store.record_signin(db_url, "reader", "10.0.0.1", ok=True)
    assert store.signin_wait(db_url, "reader", "10.0.0.1") == 0


def test_database_file_is_private(db_url):
    get_engine(db_url)
    assert os.stat(_sqlite_path(db_url)).st_mode & 0o777 == 0o600


@pytest.mark.parametrize("seconds", [float("inf"), float("nan"), -1.0, "12", True])
def test_non_finite_or_bad_seconds_are_refused(db_url, cohorts, seconds):
    sid = store.create_session(db_url, "s", *cohorts)
    reader = store.find_reader(db_url, store.add_reader(db_url, sid, "A"))
    code = store.reader_case(db_url, reader.reader_id, 0).code
    with pytest.raises(ConfigError, match="seconds must be a finite number"):
        _answer(db_url, reader.reader_id, code, seconds=seconds)
    assert store.answer_records(db_url, sid) == []


def test_audit_trail_records_who_did_what_and_is_append_only(db_url, cohorts, tmp_path):
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from eval.review import export

    sid = store.create_session(db_url, "s", *cohorts)
    code = store.add_reader(db_url, sid, "A")
    reader = store.find_reader(db_url, code)
    store.record_signin(db_url, "reader", "10.0.0.9", ok=False)
    first = store.reader_case(db_url, reader.reader_id, 0).code
    _answer(db_url, reader.reader_id, first, seconds=4.5)
    store.new_reader_code(db_url, sid, "A")
    export.write_report(db_url, sid, tmp_path / "out", only=("answers.csv",))
    log = store.events(db_url)
    assert [(e["actor"], e["action"]) for e in log] == [
        ("organiser", "session_created"),
        ("organiser", "reader_added"),
        ("client:10.0.0.9", "reader_signin_failed"),
        (f"reader:{reader.reader_id}", "answer_submitted"),
        ("organiser", "code_reissued"),
        ("organiser", "exported"),
    ]
    assert log[3]["detail"] == {"case": first, "seconds": 4.5} and log[3]["session_id"] == sid
    assert [e["action"] for e in store.events(db_url, sid)] == [e["action"] for e in log if e["session_id"] == sid]
    engine = get_engine(db_url)
    for sql in ("UPDATE review_events SET action = 'x'", "DELETE FROM review_events"):
        with pytest.raises(DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.execute(text(sql))
    assert len(store.events(db_url)) == len(log)


# ------------------------------------------------------------------------------ giveaway marks
def test_marks_round_trip_to_voxel_coordinates_and_stay_private(db_url, cohorts):
    from eval.review import stats

    sid = store.create_session(db_url, "s", *cohorts)
    a, b = (store.find_reader(db_url, store.add_reader(db_url, sid, n)) for n in ("A", "B"))
    shape = a.grid.shape
    code = store.reader_case(db_url, a.reader_id, 0).code
    corner = (shape[0] - 1, shape[1] - 1, shape[2] - 1)
    assert store.add_mark(db_url, a.reader_id, code, [3, 4, 1]) == (3, 4, 1)
    assert store.add_mark(db_url, a.reader_id, code, corner) == corner
    assert store.add_mark(db_url, b.reader_id, code, (5, 5, 0)) == (5, 5, 0)
    assert store.reader_marks(db_url, a.reader_id, code) == [(3, 4, 1), corner]
    assert store.reader_marks(db_url, b.reader_id, code) == [(5, 5, 0)]  # readers never see others' marks
    for bad in ([3, 4], [3.5, 1, 1], (shape[0], 0, 0), (-1, 0, 0), "abc"):
        with pytest.raises(ConfigError):
            store.add_mark(db_url, a.reader_id, code, bad)
    recs = store.mark_records(db_url, sid)
    assert [(r["reader"], r["case_id"], r["voxel"]) for r in recs] == [
        ("A", code, [3, 4, 1]),
        ("A", code, list(corner)),
        ("B", code, [5, 5, 0]),
    ]
    assert recs[0]["cohort"] in ("real", "synthetic")
    assert store.remove_last_mark(db_url, a.reader_id, code) and store.reader_marks(db_url, a.reader_id, code) == [
        (3, 4, 1)
    ]
    heat = stats.mark_heatmap([m["voxel"] for m in store.mark_records(db_url, sid)], shape[:2], sigma=0)
    assert heat[3, 4] == 1 and heat[5, 5] == 1 and heat.sum() == 2
    smooth = stats.mark_heatmap([(3, 4, 1)], shape[:2], sigma=1.5)
    assert smooth.sum() == pytest.approx(1.0) and np.unravel_index(smooth.argmax(), smooth.shape) == (3, 4)
    assert [e["action"] for e in store.events(db_url, sid)].count("mark_added") == 3
