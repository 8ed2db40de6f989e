"""Review sessions, readers and answers: every operation is one short database transaction.

``db`` everywhere is a SQLAlchemy URL, an Engine, or ``None`` for :func:`~eval.review.db.default_db_url`.

Blinding lives in the types: what the reader page gets (:class:`ReaderView`, :class:`ReaderCase`,
:class:`AnswerView`) has no file path, file name or cohort; only the organiser-side functions
(:func:`session_info`, :func:`answer_records`) return those.

Concurrency: an answer is inserted or updated in one write transaction (``BEGIN IMMEDIATE`` on
SQLite) and committed before :func:`submit_answer` returns; the unique constraint (reader, case)
makes a second insert of the same answer impossible, and the rare insert race on a server
database is retried once as an update.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError

from ctdiff.cachedir import user_cache_dir
from ctdiff.data.display import PLANES, WINDOW_PRESETS
from ctdiff.data.io import case_name, find_cases, read_volume
from ctdiff.errors import ConfigError, CTDiffError, InputError
from eval.review import assign, render
from eval.review.db import (
    Answer,
    Assignment,
    Case,
    Event,
    Mark,
    Pair,
    PairAnswer,
    RatingAnswer,
    Reader,
    ReviewSession,
    SigninFailure,
    get_engine,
    read_session,
    utcnow,
    write_session,
)
from eval.review.stats import FLAGS

COHORTS = ("real", "synthetic")
FLAG_LABELS = {
    "noise": "noise",
    "texture": "texture",
    "contrast": "contrast",
    "anatomy": "anatomy",
    "edges": "edges / artefacts",
}
DESIGNS = ("single", "2afc", "rating")  # call + confidence; two-alternative forced choice; realism rating only
DESIGN_LABELS = {
    "single": "single scan: real or synthetic, with confidence",
    "2afc": "two-alternative forced choice: which of two is real?",
    "rating": "realism rating only (1-5), no real/synthetic question",
}
SCROLL_MODES = ("all", "middle")  # scroll through every slice, or see only the middle slice
LIKERT = range(1, 6)
CACHE_FOLDER = "review-cache"
# columns of the exported records: every design's record starts with HEAD_COLUMNS and ends its
# answer with TIME_COLUMNS; one-case designs (single, rating) add CASE_COLUMNS after the head
HEAD_COLUMNS = ("session_id", "session", "reader", "position")
CASE_COLUMNS = ("case_id", "case_name", "cohort", "condition")
TIME_COLUMNS = ("seconds", "submitted_utc")

Progress = Callable[[int, int], None]


class AnswerLockedError(CTDiffError):
    """The case was already answered and this session does not allow changing a rating."""


# ------------------------------------------------------------------------------------ value types
@dataclasses.dataclass(frozen=True)
class SessionInfo:
    """Everything about a session, for the organiser (unblinded)."""

    id: int
    name: str
    created_at: dt.datetime
    seed: int
    real_dir: str
    generated_dir: str
    n_real: int
    n_synthetic: int
    n_readers: int
    planes: tuple[str, ...]
    windows: tuple[str, ...]
    scroll: str
    allow_change: bool
    instructions: str
    grid: render.DisplayGrid
    skipped: tuple[tuple[str, str], ...]
    design: str = "single"
    conditions: tuple[tuple[str, str], ...] = ()  # (name, generated folder) per generated cohort


@dataclasses.dataclass(frozen=True)
class ReaderView:
    """What the reader page knows about its reader and session: nothing case-specific."""

    reader_id: int
    reader_name: str
    session_id: int
    session_name: str
    planes: tuple[str, ...]
    windows: tuple[str, ...]
    scroll: str
    allow_change: bool
    instructions: str
    grid: render.DisplayGrid
    total: int
    design: str = "single"


@dataclasses.dataclass(frozen=True)
class AnswerView:
    said_synthetic: bool
    confidence: int
    realism: int
    flags: tuple[str, ...]
    comment: str
    seconds: float
    changes: int


@dataclasses.dataclass(frozen=True)
class ReaderCase:
    """One case in one reader's order: its opaque code, place, and the reader's answer if any."""

    code: str
    position: int  # 0-based place in the reader's order
    total: int
    answer: AnswerView | None
    practice: bool = False
    practice_truth: str | None = None  # the cohort, told only for a practice case (its feedback)


@dataclasses.dataclass(frozen=True)
class ReaderProgress:
    answered: int
    total: int
    next_position: int | None  # first unanswered place in the order; None when all are done


# ------------------------------------------------------------------------------------ helpers
def cache_root(db: str | Engine | None) -> Path:
    """Where grid-resampled case arrays live: next to a SQLite file, else (PostgreSQL, in-memory) in the
    user's ctdiff cache folder (never in the workspace or the checkout)."""
    engine = get_engine(db)
    if engine.url.get_backend_name() == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        return Path(engine.url.database).resolve().parent / CACHE_FOLDER
    return user_cache_dir() / CACHE_FOLDER


def _path_base(db: str | Engine | None) -> Path | None:
    """The folder a SQLite database file lies in (stored paths below it are kept relative to it), else None."""
    engine = get_engine(db)
    if engine.url.get_backend_name() == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        if not engine.url.database.startswith("file:"):
            return Path(engine.url.database).resolve().parent
    return None


def _to_stored(base: Path | None, path: str | os.PathLike) -> str:
    """``path`` as the database keeps it: relative to ``base`` when it lies below it, so a folder that
    holds the database and its scans (the demo workspace) can be moved or renamed whole; else absolute."""
    p = Path(path)
    if base is not None:
        try:
            return p.resolve().relative_to(base).as_posix()
        except ValueError:
            pass
    return str(p)


def _from_stored(base: Path | None, stored: str) -> str:
    """A stored path made usable again: a relative one is resolved against the database's folder
    (absolute paths, e.g. from databases written before paths were stored relative, are kept)."""
    p = Path(stored)
    return str(base / p) if base is not None and not p.is_absolute() else stored


def _grid(s: ReviewSession) -> render.DisplayGrid:
    return render.DisplayGrid(tuple(int(v) for v in s.grid_shape), tuple(float(v) for v in s.grid_spacing))


def _cached_case(db: str | Engine | None, s_id: int, uid: str, grid: render.DisplayGrid, case_code: str) -> np.ndarray:
    """A case's cached display-grid array; every missing case of the session is rebuilt first."""
    cache_dir = cache_root(db) / uid
    if render.missing_cases(cache_dir, [case_code]):
        ensure_cache(db, s_id)  # rebuilds all missing cases alike, never just this one
    return render.load_cached_case(cache_dir, case_code, grid)


def _readers_case(reader_id: int, case_code: str):
    """SQL condition: ``case_code`` is in the reader's order (a single/rating assignment or a 2AFC pair)."""
    in_order = select(Assignment.case_id).where(Assignment.reader_id == int(reader_id))
    in_pairs = (
        select(Pair.left_case_id)
        .where(Pair.reader_id == int(reader_id))
        .union(select(Pair.right_case_id).where(Pair.reader_id == int(reader_id)))
    )
    return (Case.code == case_code) & (Case.id.in_(in_order) | Case.id.in_(in_pairs))


def _assigned_case(session, reader_id: int, case_code: str) -> tuple[int, int, bool]:
    """(case id, session id, allow_change) of a case in the reader's own order (single/rating designs)."""
    row = session.execute(
        select(Case.id, Case.session_id, ReviewSession.allow_change)
        .join(Assignment, Assignment.case_id == Case.id)
        .join(ReviewSession, ReviewSession.id == Case.session_id)
        .where(Assignment.reader_id == int(reader_id), Case.code == case_code)
    ).first()
    if row is None:
        raise ConfigError(f"case {case_code} is not in reader {reader_id}'s order")
    return row


def _reader_actor(reader_id: int) -> str:
    """The audit-trail actor of a reader's own actions."""
    return f"reader:{int(reader_id)}"


def _get_session(session, session_id: int) -> ReviewSession:
    if not 0 < int(session_id) < 2**63:  # beyond a database integer: no such session (not an OverflowError)
        raise ConfigError(f"no review session with id {session_id}")
    s = session.get(ReviewSession, int(session_id))
    if s is None:
        raise ConfigError(f"no review session with id {session_id}")
    return s


def _check_choice(values: Sequence[str], allowed: Sequence[str], what: str) -> tuple[str, ...]:
    values = tuple(values)
    if not values:
        raise ConfigError(f"choose at least one {what} (from {list(allowed)})")
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ConfigError(f"unknown {what} {bad}; choose from {list(allowed)}")
    return tuple(dict.fromkeys(values))  # keep order, drop repeats


def _pick_readable(
    paths: list[Path], n: int, skipped: list[tuple[str, str]], progress: Callable[[], None]
) -> list[tuple[Path, tuple, tuple]]:
    """The first ``n`` of ``paths`` that read as CT volumes, with shape and spacing; bad ones are skipped."""
    good = []
    for path in paths:
        if len(good) == n:
            break
        try:
            vol = read_volume(path)
        except CTDiffError as exc:
            skipped.append((str(path), exc.problem))
            continue
        good.append((path, vol.shape, vol.spacing))
        progress()
    return good


# ------------------------------------------------------------------------------------ organiser
def create_session(
    db: str | Engine | None,
    name: str,
    real_dir: str | os.PathLike,
    generated_dir: str | os.PathLike | Sequence[str | os.PathLike],
    n_per_cohort: int | None = None,
    seed: int = 0,
    planes: Sequence[str] = PLANES,
    windows: Sequence[str] = tuple(WINDOW_PRESETS),
    scroll: str = "all",
    allow_change: bool = False,
    instructions: str = "",
    *,
    design: str = "single",
    n_practice: int = 0,
    n_real: int | None = None,
    n_generated: int | None = None,
    progress: Progress | None = None,
) -> int:
    """Create a blinded review session and return its id.

    ``generated_dir`` may list several folders: each is one condition (e.g. one model) read against
    the same real scans, named after its folder. ``n_per_cohort`` cases are drawn (seeded) from each folder; ``None`` takes as many as the
    smaller folder has (balanced). ``n_real``/``n_generated`` override it per cohort for an
    unbalanced design. Unreadable files are skipped, replaced by the next candidate and listed in
    :attr:`SessionInfo.skipped`. Every case is resampled onto the session's display grid and cached
    before this returns (``progress(done, total)`` reports it), so readers never wait for one cohort.
    """
    name = (name or "").strip()
    if not name:
        raise ConfigError("a review session needs a name")
    planes = _check_choice(planes, PLANES, "plane")
    windows = _check_choice(windows, tuple(WINDOW_PRESETS), "window preset")
    if scroll not in SCROLL_MODES:
        raise ConfigError(f"scroll must be one of {SCROLL_MODES}, got {scroll!r}")
    if design not in DESIGNS:
        raise ConfigError(f"design must be one of {DESIGNS}, got {design!r}")
    if isinstance(n_practice, bool) or int(n_practice) != n_practice or not 0 <= n_practice <= 100_000:
        raise ConfigError(f"practice cases per cohort must be an integer in 0..100000, got {n_practice!r}")
    if isinstance(seed, bool) or int(seed) != seed or not 0 <= seed <= 2**32 - 1:
        raise ConfigError(f"seed must be an integer in [0, 4294967295], got {seed!r}")
    n_practice = int(n_practice)
    for label, value in (("cases per cohort", n_per_cohort), ("real cases", n_real), ("generated cases", n_generated)):
        # None means "balanced"; 0 is refused, not read as "take every case"
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            raise ConfigError(f"number of {label} must be an integer >= 1, got {value!r}")
    get_engine(db)  # a bad database URL fails before any case is read
    real_dir = Path(real_dir)
    gen_dirs = (
        [Path(generated_dir)] if isinstance(generated_dir, (str, os.PathLike)) else [Path(g) for g in generated_dir]
    )
    if not gen_dirs:
        raise ConfigError("a review session needs at least one generated folder")
    for folder in (real_dir, *gen_dirs):
        if not folder.is_dir():
            raise InputError("is not a folder", folder)
    resolved = [g.resolve() for g in gen_dirs]
    for g, r in zip(gen_dirs, resolved):
        if r == real_dir.resolve():
            raise InputError("real and generated folders are the same folder", real_dir)
        if resolved.count(r) > 1:
            raise InputError("given twice as a generated folder", g)
    # each generated folder is one condition (e.g. one model), named after the folder; with one
    # folder there is nothing to tell apart, and exports keep folder names out as before
    names = [g.name for g in gen_dirs]
    if len(gen_dirs) == 1:
        conditions = [""]
    else:
        conditions = names if len(set(names)) == len(names) else [f"{i + 1}: {n}" for i, n in enumerate(names)]
    real_all, gens_all = find_cases(real_dir), [find_cases(g) for g in gen_dirs]
    balanced = (
        min(len(real_all), *(len(g) for g in gens_all)) - n_practice
    )  # practice cases come out of the same folders
    want_real = n_real if n_real is not None else n_per_cohort if n_per_cohort is not None else balanced
    want_gen = n_generated if n_generated is not None else n_per_cohort if n_per_cohort is not None else balanced
    for want, have, folder in (
        (want_real, real_all, real_dir),
        *((want_gen, g, d) for g, d in zip(gens_all, gen_dirs)),
    ):
        if want < 1:
            raise ConfigError(f"number of cases per cohort must be >= 1, got {want}")
        if want + n_practice > len(have):
            raise InputError(
                f"holds {len(have)} case(s); {want} requested" + (f" + {n_practice} practice" if n_practice else ""),
                folder,
            )

    total_steps = 2 * (want_real + len(gen_dirs) * want_gen + (1 + len(gen_dirs)) * n_practice)
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress:
            progress(done[0], total_steps)

    # pass 1: pick readable files and learn their geometry (volumes are not kept, to bound memory)
    skipped: list[tuple[str, str]] = []
    real = _pick_readable(
        assign.candidate_order(real_all, seed, assign.STREAM_REAL), want_real + n_practice, skipped, tick
    )
    gens = [
        # the first folder keeps the one-folder stream, so single-model sessions draw as before
        _pick_readable(
            assign.candidate_order(g, seed, assign.STREAM_GENERATED, i), want_gen + n_practice, skipped, tick
        )
        for i, g in enumerate(gens_all)
    ]
    for got, want, folder in (
        (real, want_real + n_practice, real_dir),
        *((g, want_gen + n_practice, d) for g, d in zip(gens, gen_dirs)),
    ):
        if len(got) < want:
            raise InputError(
                f"only {len(got)} of {want} requested case(s) are readable CT volumes ({len(skipped)} skipped)", folder
            )
    gen_all_picked = [x for g in gens for x in g]
    grid = render.choose_grid([g[1] for g in real + gen_all_picked], [g[2] for g in real + gen_all_picked])

    # interleave the cohorts in a seeded order so not even internal row ids follow the cohorts
    # the last n_practice picks of each cohort are practice cases (the scored selection is unchanged)
    practice_paths = {p for p, _, _ in real[want_real:]} | {p for g in gens for p, _, _ in g[want_gen:]}
    cases = [(p, "real", "") for p, _, _ in real] + [
        (p, "synthetic", cond) for g, cond in zip(gens, conditions) for p, _, _ in g
    ]
    cases = [cases[i] for i in np.random.default_rng(np.random.SeedSequence([seed, 3])).permutation(len(cases))]
    codes = [assign.new_case_code() for _ in cases]
    uid = assign.new_case_code() + assign.new_case_code()

    # pass 2: resample every case onto the grid and cache it, both cohorts through the same code
    cache_dir = cache_root(db) / uid
    for code, (path, _, _) in zip(codes, cases):
        render.write_cached_case(cache_dir, code, render.to_grid(read_volume(path), grid))
        tick()

    base = _path_base(db)
    with write_session(db) as session:
        s = ReviewSession(
            uid=uid,
            name=name,
            seed=int(seed),
            real_dir=_to_stored(base, real_dir),
            generated_dir=_to_stored(base, gen_dirs[0]),
            conditions=[{"name": c, "dir": _to_stored(base, d)} for c, d in zip(conditions, gen_dirs)],
            planes=list(planes),
            windows=list(windows),
            scroll=scroll,
            allow_change=bool(allow_change),
            instructions=instructions or "",
            grid_shape=list(grid.shape),
            grid_spacing=list(grid.spacing),
            design=design,
            skipped=[list(x) for x in skipped],
            created_at=utcnow(),
        )
        session.add(s)
        session.flush()
        session.add_all(
            Case(
                session_id=s.id,
                code=code,
                path=_to_stored(base, path),
                cohort=cohort,
                condition=cond,
                practice=path in practice_paths,
            )
            for code, (path, cohort, cond) in zip(codes, cases)
        )
        _log(session, "organiser", "session_created", s.id, name=s.name, n_cases=len(cases), seed=s.seed)
        return s.id


def _reader_with_code(session, code: str) -> Reader | None:
    """The reader whose code this is: rows sharing the code's first characters are tried with
    salted scrypt (constant-time digest comparison); a pre-v3 row (unsalted sha256) that matches is
    re-hashed with scrypt on the spot, so old databases migrate reader by reader at sign-in."""
    for reader in session.scalars(
        select(Reader).where(Reader.code_kdf == "scrypt", Reader.code_lookup == assign.code_lookup(code))
    ):
        if assign.code_matches(code, "scrypt", reader.code_salt, reader.code_hash):
            return reader
    legacy = session.scalar(
        select(Reader).where(Reader.code_kdf == "sha256", Reader.code_hash == assign.hash_code(code))
    )
    if legacy is not None:
        _set_code(legacy, code)
    return legacy


def _set_code(reader: Reader, code: str) -> None:
    reader.code_salt = assign.new_salt()
    reader.code_hash = assign.scrypt_code(code, reader.code_salt)
    reader.code_kdf = "scrypt"
    reader.code_lookup = assign.code_lookup(code)


def _check_new_code(code: str) -> None:
    if len(assign.normalise_code(code)) < assign.MIN_CODE_LENGTH:
        raise ConfigError(f"an access code needs at least {assign.MIN_CODE_LENGTH} characters")


def add_reader(db: str | Engine | None, session_id: int, name: str, code: str | None = None) -> str:
    """Add a reader with their own seeded case order; return the access code (store it: only a
    salted scrypt hash is kept). ``code`` sets a known code (e.g. the demo's); otherwise a random
    one is made. Each reader has exactly one code, and no two readers share one."""
    name = (name or "").strip()
    if not name:
        raise ConfigError("a reader needs a name")
    code = assign.new_access_code() if code is None else code
    _check_new_code(code)
    try:
        with write_session(db) as session:
            s = _get_session(session, session_id)
            if session.scalar(select(Reader.id).where(Reader.session_id == s.id, Reader.name == name)) is not None:
                raise ConfigError(f"session {s.id} already has a reader named {name!r}")
            if _reader_with_code(session, code) is not None:
                raise ConfigError("this access code is already in use; choose another")
            index = session.scalar(select(func.count(Reader.id)).where(Reader.session_id == s.id)) + 1
            reader = Reader(session_id=s.id, name=name, created_at=utcnow())
            _set_code(reader, code)
            session.add(reader)
            session.flush()
            if s.design == "2afc":
                by_cohort = {
                    (c, practice): list(
                        session.scalars(
                            select(Case.id)
                            .where(Case.session_id == s.id, Case.cohort == c, Case.practice.is_(practice))
                            .order_by(Case.id)
                        )
                    )
                    for c in COHORTS
                    for practice in (True, False)
                }
                # practice pairs first (their own seeded pairing), then the scored ones; a pair never
                # mixes a practice and a scored case
                pairs = assign.afc_pairs(
                    by_cohort["real", True], by_cohort["synthetic", True], s.seed, index, assign.STREAM_PRACTICE_PAIRS
                ) + assign.afc_pairs(by_cohort["real", False], by_cohort["synthetic", False], s.seed, index)
                session.add_all(
                    Pair(reader_id=reader.id, position=i, left_case_id=a, right_case_id=b)
                    for i, (a, b) in enumerate(pairs)
                )
            else:
                case_ids = list(
                    session.scalars(
                        select(Case.id).where(Case.session_id == s.id, Case.practice.is_(False)).order_by(Case.id)
                    )
                )
                practice_ids = list(
                    session.scalars(
                        select(Case.id).where(Case.session_id == s.id, Case.practice.is_(True)).order_by(Case.id)
                    )
                )
                # practice cases first (their own seeded order), then the scored ones
                order = assign.reader_order(practice_ids, s.seed, index, assign.STREAM_PRACTICE) + assign.reader_order(
                    case_ids, s.seed, index
                )
                session.add_all(Assignment(reader_id=reader.id, position=i, case_id=c) for i, c in enumerate(order))
            _log(session, "organiser", "reader_added", s.id, reader=name, reader_id=reader.id)
    except IntegrityError:
        raise ConfigError("reader name or access code already in use; choose another") from None
    return code


def new_reader_code(db: str | Engine | None, session_id: int, name: str) -> str:
    """Replace a reader's lost access code with a new random one (answers are kept; the old code
    stops working)."""
    code = assign.new_access_code()
    with write_session(db) as session:
        reader = session.scalar(select(Reader).where(Reader.session_id == int(session_id), Reader.name == name))
        if reader is None:
            raise ConfigError(f"session {session_id} has no reader named {name!r}")
        _set_code(reader, code)
        _log(session, "organiser", "code_reissued", reader.session_id, reader=name, reader_id=reader.id)
    return code


# ------------------------------------------------------------------------------- audit trail
def _log(session, actor: str, action: str, session_id: int | None = None, **detail) -> None:
    """Append one event inside the caller's transaction (so it commits with what it records)."""
    session.add(Event(at=utcnow(), session_id=session_id, actor=str(actor)[:64], action=action, detail=detail))


def log_event(db: str | Engine | None, actor: str, action: str, session_id: int | None = None, **detail) -> None:
    """Append one event on its own (e.g. an export, a sign-in, a sign-out)."""
    with write_session(db) as session:
        _log(session, actor, action, session_id, **detail)


def events(db: str | Engine | None, session_id: int | None = None) -> list[dict]:
    """The audit trail, oldest first (of one session, or all events)."""
    with read_session(db) as session:
        q = select(Event).order_by(Event.id)
        if session_id is not None:
            q = q.where(Event.session_id == int(session_id))
        return [
            {
                "id": e.id,
                "at_utc": e.at.isoformat(timespec="seconds"),
                "session_id": e.session_id,
                "actor": e.actor,
                "action": e.action,
                "detail": e.detail,
            }
            for e in session.scalars(q)
        ]


# ---------------------------------------------------------------------------- sign-in limits
SIGNIN_FREE_ATTEMPTS = 5  # failures before any waiting
SIGNIN_BASE_WAIT_S = 2.0  # then 2, 4, 8, ... seconds between attempts
SIGNIN_MAX_WAIT_S = 900.0


def signin_wait(db: str | Engine | None, scope: str, client: str) -> float:
    """Seconds ``client`` must still wait before the next ``scope`` sign-in attempt (0 = may try).

    After :data:`SIGNIN_FREE_ATTEMPTS` failures, each further failure doubles the wait (capped at
    :data:`SIGNIN_MAX_WAIT_S`); a successful sign-in clears the count. Kept in the database, so
    reloading the page or restarting the server does not reset it.
    """
    with read_session(db) as session:
        row = session.get(SigninFailure, (scope, str(client)[:128]))
        if row is None or row.failures < SIGNIN_FREE_ATTEMPTS:
            return 0.0
        wait = min(SIGNIN_BASE_WAIT_S * 2 ** (row.failures - SIGNIN_FREE_ATTEMPTS), SIGNIN_MAX_WAIT_S)
        left = wait - (utcnow() - row.last_failure).total_seconds()
        return max(0.0, left)


def record_signin(db: str | Engine | None, scope: str, client: str, ok: bool) -> None:
    """Count a failed attempt, or clear the count after a successful one."""
    key = (scope, str(client)[:128])
    with write_session(db) as session:
        row = session.get(SigninFailure, key)
        _log(session, f"client:{key[1]}", f"{scope}_signin_{'ok' if ok else 'failed'}")
        if ok:
            if row is not None:
                session.delete(row)
            return
        if row is None:
            session.add(SigninFailure(scope=key[0], client=key[1], failures=1, last_failure=utcnow()))
        else:
            row.failures = int(row.failures) + 1
            row.last_failure = utcnow()


def _session_info(session, s: ReviewSession, base: Path | None = None) -> SessionInfo:
    """``base``: the database's folder, against which relative stored folders are resolved."""
    counts = dict(
        session.execute(
            select(Case.cohort, func.count())
            .where(Case.session_id == s.id, Case.practice.is_(False))
            .group_by(Case.cohort)
        ).all()
    )
    n_readers = session.scalar(select(func.count(Reader.id)).where(Reader.session_id == s.id))
    return SessionInfo(
        id=s.id,
        name=s.name,
        created_at=s.created_at,
        seed=s.seed,
        real_dir=_from_stored(base, s.real_dir),
        generated_dir=_from_stored(base, s.generated_dir),
        n_real=int(counts.get("real", 0)),
        n_synthetic=int(counts.get("synthetic", 0)),
        n_readers=int(n_readers),
        planes=tuple(s.planes),
        windows=tuple(s.windows),
        scroll=s.scroll,
        allow_change=bool(s.allow_change),
        instructions=s.instructions,
        grid=_grid(s),
        skipped=tuple(tuple(x) for x in (s.skipped or [])),
        design=s.design,
        conditions=tuple((c["name"], _from_stored(base, c["dir"])) for c in (s.conditions or []))
        or (("", _from_stored(base, s.generated_dir)),),
    )


def session_info(db: str | Engine | None, session_id: int) -> SessionInfo:
    base = _path_base(db)
    with read_session(db) as session:
        return _session_info(session, _get_session(session, session_id), base)


def list_sessions(db: str | Engine | None) -> list[SessionInfo]:
    base = _path_base(db)
    with read_session(db) as session:
        return [
            _session_info(session, s, base) for s in session.scalars(select(ReviewSession).order_by(ReviewSession.id))
        ]


def _progress_row(name: str, total: int, answered: int, last) -> dict:
    """One reader's line of :func:`session_progress`."""
    total, answered = int(total), int(answered)
    return {"reader": name, "answered": answered, "total": total, "done": answered == total, "last_answer_utc": last}


def _reader_progress(rows: Sequence[tuple[int, int | None]], reader_id: int, items: str) -> ReaderProgress:
    """From a reader's ``(position, answer id or None)`` rows in order: how far they are."""
    if not rows:
        raise ConfigError(f"no reader with id {reader_id} (or no {items} assigned)")
    open_positions = [pos for pos, answer_id in rows if answer_id is None]
    return ReaderProgress(
        answered=len(rows) - len(open_positions),
        total=len(rows),
        next_position=open_positions[0] if open_positions else None,
    )


def session_progress(db: str | Engine | None, session_id: int) -> list[dict]:
    """Per reader: name, answered, total, done, last answer time (UTC)."""
    with read_session(db) as session:
        s = _get_session(session, session_id)
        if s.design == "2afc":
            return _pair_progress_rows(session, s)
        total = session.scalar(select(func.count(Case.id)).where(Case.session_id == s.id))
        answer, stamp = (
            (RatingAnswer, RatingAnswer.submitted_at) if s.design == "rating" else (Answer, Answer.updated_at)
        )
        rows = session.execute(
            select(Reader.name, func.count(answer.id), func.max(stamp))
            .outerjoin(answer, answer.reader_id == Reader.id)
            .where(Reader.session_id == s.id)
            .group_by(Reader.id, Reader.name)
            .order_by(Reader.id)
        ).all()
    return [_progress_row(name, total, n, last) for name, n, last in rows]


def ensure_cache(db: str | Engine | None, session_id: int, progress: Progress | None = None) -> int:
    """Rebuild any missing cached case (e.g. the database was moved to a new machine); return how
    many were rebuilt. Every case is ready when this returns, so none is loaded lazily later."""
    with read_session(db) as session:
        s = _get_session(session, session_id)
        uid, grid = s.uid, _grid(s)
        cases = list(
            session.execute(select(Case.code, Case.path).where(Case.session_id == s.id).order_by(Case.id)).all()
        )
    cache_dir = cache_root(db) / uid
    missing = set(render.missing_cases(cache_dir, [c for c, _ in cases]))
    base = _path_base(db)
    todo = [(c, _from_stored(base, p)) for c, p in cases if c in missing]
    for i, (code, path) in enumerate(todo):
        render.write_cached_case(cache_dir, code, render.to_grid(read_volume(path), grid))
        if progress:
            progress(i + 1, len(todo))
    return len(todo)


def _record_head(s: ReviewSession, reader: str, position: int, case: Case | None = None) -> dict:
    """:data:`HEAD_COLUMNS` of a record (then :data:`CASE_COLUMNS`, the unblinded case, for one-case designs)."""
    values = (s.id, s.name, reader, int(position) + 1)
    if case is not None:
        values += (case.code, case_name(case.path), case.cohort, case.condition)
    return dict(zip(HEAD_COLUMNS + CASE_COLUMNS, values))


def _record_time(a) -> dict:
    """:data:`TIME_COLUMNS` of an answer row: seconds spent and submission time."""
    return dict(zip(TIME_COLUMNS, (round(float(a.seconds), 3), a.submitted_at.isoformat(timespec="seconds"))))


def answer_records(db: str | Engine | None, session_id: int) -> list[dict]:
    """Every answer of a session, unblinded, one dict per answer (for statistics and export)."""
    with read_session(db) as session:
        s = _get_session(session, session_id)
        rows = session.execute(
            select(Answer, Case, Reader.name, Assignment.position)
            .join(Case, Answer.case_id == Case.id)
            .join(Reader, Answer.reader_id == Reader.id)
            .join(Assignment, (Assignment.reader_id == Answer.reader_id) & (Assignment.case_id == Answer.case_id))
            .where(Case.session_id == s.id, Case.practice.is_(False))  # practice answers are never scored
            .order_by(Reader.id, Assignment.position)
        ).all()
        return [
            {
                **_record_head(s, reader_name, position, case),
                "said": "synthetic" if a.said_synthetic else "real",
                "correct": bool(a.said_synthetic) == (case.cohort == "synthetic"),
                "confidence": int(a.confidence),
                "realism": int(a.realism),
                **{f"flag_{f}": bool(getattr(a, f"flag_{f}")) for f in FLAGS},
                "comment": a.comment,
                **_record_time(a),
                "updated_utc": a.updated_at.isoformat(timespec="seconds"),
                "changes": int(a.changes),
            }
            for a, case, reader_name, position in rows
        ]


# ------------------------------------------------------------------------------------ reader
def find_reader(db: str | Engine | None, code: str) -> ReaderView | None:
    """The reader whose access code this is (case-insensitive), or None."""
    if not code or not code.strip() or len(code) > 200:
        return None
    # a write session: a pre-v3 code is re-hashed with scrypt on its first use
    with write_session(db) as session:
        reader = _reader_with_code(session, code)
        if reader is None:
            return None
        s = _get_session(session, reader.session_id)
        table = Pair if s.design == "2afc" else Assignment
        total = session.scalar(select(func.count()).select_from(table).where(table.reader_id == reader.id))
        return ReaderView(
            reader_id=reader.id,
            reader_name=reader.name,
            session_id=s.id,
            session_name=s.name,
            planes=tuple(s.planes),
            windows=tuple(s.windows),
            scroll=s.scroll,
            allow_change=bool(s.allow_change),
            instructions=s.instructions,
            grid=_grid(s),
            total=int(total),
            design=s.design,
        )


def _answer_view(a: Answer) -> AnswerView:
    return AnswerView(
        said_synthetic=bool(a.said_synthetic),
        confidence=int(a.confidence),
        realism=int(a.realism),
        flags=tuple(f for f in FLAGS if getattr(a, f"flag_{f}")),
        comment=a.comment,
        seconds=float(a.seconds),
        changes=int(a.changes),
    )


def reader_progress(db: str | Engine | None, reader_id: int) -> ReaderProgress:
    """How far a reader is; ``next_position`` is where they resume (first unanswered case)."""
    with read_session(db) as session:
        rows = session.execute(
            select(Assignment.position, func.coalesce(Answer.id, RatingAnswer.id))
            .outerjoin(Answer, (Answer.reader_id == Assignment.reader_id) & (Answer.case_id == Assignment.case_id))
            .outerjoin(
                RatingAnswer,
                (RatingAnswer.reader_id == Assignment.reader_id) & (RatingAnswer.case_id == Assignment.case_id),
            )
            .where(Assignment.reader_id == int(reader_id))
            .order_by(Assignment.position)
        ).all()
    return _reader_progress(rows, reader_id, "cases")


def reader_case(db: str | Engine | None, reader_id: int, position: int) -> ReaderCase:
    """The case at ``position`` (0-based) of a reader's order, with their answer if given."""
    with read_session(db) as session:
        total = session.scalar(select(func.count(Assignment.case_id)).where(Assignment.reader_id == int(reader_id)))
        row = session.execute(
            select(Case.code, Answer, Case.practice, Case.cohort)
            .join(Assignment, Assignment.case_id == Case.id)
            .outerjoin(Answer, (Answer.reader_id == Assignment.reader_id) & (Answer.case_id == Case.id))
            .where(Assignment.reader_id == int(reader_id), Assignment.position == int(position))
        ).first()
        if row is None:
            raise ConfigError(f"reader {reader_id} has no case at position {position} (0..{int(total) - 1})")
        code, answer, practice, cohort = row
        return ReaderCase(
            code=code,
            position=int(position),
            total=int(total),
            answer=None if answer is None else _answer_view(answer),
            practice=bool(practice),
            practice_truth=cohort if practice else None,
        )


def load_case_array(db: str | Engine | None, reader_id: int, case_code: str) -> tuple[np.ndarray, render.DisplayGrid]:
    """The cached display-grid array of a case in this reader's order (rebuilt if missing)."""
    with read_session(db) as session:
        s = session.scalar(
            select(ReviewSession)
            .join(Case, Case.session_id == ReviewSession.id)
            .where(_readers_case(reader_id, case_code))
        )
        if s is None:
            raise ConfigError(f"case {case_code} is not in reader {reader_id}'s order")
        session_id, uid, grid = s.id, s.uid, _grid(s)
    return _cached_case(db, session_id, uid, grid, case_code), grid


def _validate_answer(
    said_synthetic: bool, confidence: int, realism: int, flags: Iterable[str], seconds: float
) -> tuple[str, ...]:
    if not isinstance(said_synthetic, (bool, np.bool_)):
        raise ConfigError(f"said_synthetic must be True or False, got {said_synthetic!r}")
    for label, value in (("confidence", confidence), ("realism", realism)):
        if isinstance(value, bool) or int(value) != value or int(value) not in LIKERT:
            raise ConfigError(f"{label} must be an integer 1..5, got {value!r}")
    flags = tuple(flags)
    bad = [f for f in flags if f not in FLAGS]
    if bad:
        raise ConfigError(f"unknown artefact flag(s) {bad}; choose from {list(FLAGS)}")
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float, np.integer, np.floating))
        or not (math.isfinite(seconds) and seconds >= 0)
    ):
        raise ConfigError(f"seconds must be a finite number >= 0, got {seconds!r}")
    return flags


def submit_answer(
    db: str | Engine | None,
    reader_id: int,
    case_code: str,
    *,
    said_synthetic: bool,
    confidence: int,
    realism: int,
    flags: Iterable[str] = (),
    comment: str = "",
    seconds: float = 0.0,
) -> AnswerView:
    """Store one reader's answer for one case and commit it before returning.

    A second submit for the same case updates the answer (time spent adds up, ``changes`` counts
    the edits) when the session allows changes, and raises :class:`AnswerLockedError` otherwise.
    """
    flags = _validate_answer(said_synthetic, confidence, realism, flags, seconds)
    values = {
        "said_synthetic": bool(said_synthetic),
        "confidence": int(confidence),
        "realism": int(realism),
        **{f"flag_{f}": f in flags for f in FLAGS},
        "comment": (comment or "").strip(),
    }
    for attempt in range(2):
        try:
            with write_session(db) as session:
                case_id, sid, allow_change = _assigned_case(session, reader_id, case_code)
                now = utcnow()
                answer = session.scalar(
                    select(Answer).where(Answer.reader_id == int(reader_id), Answer.case_id == case_id)
                )
                if answer is None:
                    answer = Answer(
                        reader_id=int(reader_id),
                        case_id=case_id,
                        seconds=float(seconds),
                        submitted_at=now,
                        updated_at=now,
                        changes=0,
                        **values,
                    )
                    session.add(answer)
                else:
                    if not allow_change:
                        raise AnswerLockedError(
                            f"case {case_code} is already answered and this session does not allow changes"
                        )
                    for key, value in values.items():
                        setattr(answer, key, value)
                    answer.seconds = float(answer.seconds) + float(seconds)
                    answer.changes = int(answer.changes) + 1
                    answer.updated_at = now
                session.flush()
                _log(
                    session,
                    _reader_actor(reader_id),
                    "answer_changed" if answer.changes else "answer_submitted",
                    sid,
                    case=case_code,
                    seconds=round(float(seconds), 3),
                )
                return _answer_view(answer)
        except IntegrityError:
            # another connection inserted this (reader, case) between our read and our insert
            # (possible on PostgreSQL; SQLite's BEGIN IMMEDIATE serialises writers): try again,
            # now as an update or a refusal
            if attempt == 1:
                raise
    raise AssertionError("unreachable")


# ------------------------------------------------------------------ two-alternative forced choice
@dataclasses.dataclass(frozen=True)
class PairView:
    """One 2AFC pair in a reader's order: two opaque case codes (left, right) and the answer if given."""

    position: int
    total: int
    left: str
    right: str
    chose_left: bool | None  # None = not answered yet
    practice: bool = False  # a practice pair: shown first, never scored
    practice_real_side: str | None = None  # "left" or "right", told only for a practice pair (its feedback)


def _pair_progress_rows(session, s: ReviewSession) -> list[dict]:
    rows = session.execute(
        select(
            Reader.name,
            func.count(func.distinct(Pair.position)),
            func.count(func.distinct(PairAnswer.id)),
            func.max(PairAnswer.submitted_at),
        )
        .outerjoin(Pair, Pair.reader_id == Reader.id)
        .outerjoin(PairAnswer, (PairAnswer.reader_id == Reader.id) & (PairAnswer.position == Pair.position))
        .where(Reader.session_id == s.id)
        .group_by(Reader.id, Reader.name)
        .order_by(Reader.id)
    ).all()
    return [_progress_row(name, total, n, last) for name, total, n, last in rows]


def reader_pair_progress(db: str | Engine | None, reader_id: int) -> ReaderProgress:
    """How far a reader is in a 2AFC session; ``next_position`` is the first unanswered pair."""
    with read_session(db) as session:
        rows = session.execute(
            select(Pair.position, PairAnswer.id)
            .outerjoin(PairAnswer, (PairAnswer.reader_id == Pair.reader_id) & (PairAnswer.position == Pair.position))
            .where(Pair.reader_id == int(reader_id))
            .order_by(Pair.position)
        ).all()
    return _reader_progress(rows, reader_id, "pairs")


def reader_pair(db: str | Engine | None, reader_id: int, position: int) -> PairView:
    """The pair at ``position`` of a reader's 2AFC order (opaque codes only: no cohort)."""
    left_case, right_case = Case.__table__.alias("l"), Case.__table__.alias("r")
    with read_session(db) as session:
        total = session.scalar(select(func.count()).select_from(Pair).where(Pair.reader_id == int(reader_id)))
        row = session.execute(
            select(
                left_case.c.code,
                right_case.c.code,
                PairAnswer.chose_left,
                left_case.c.practice,
                left_case.c.cohort,
            )
            .select_from(Pair)
            .join(left_case, left_case.c.id == Pair.left_case_id)
            .join(right_case, right_case.c.id == Pair.right_case_id)
            .outerjoin(PairAnswer, (PairAnswer.reader_id == Pair.reader_id) & (PairAnswer.position == Pair.position))
            .where(Pair.reader_id == int(reader_id), Pair.position == int(position))
        ).first()
    if row is None:
        raise ConfigError(f"reader {reader_id} has no pair at position {position}")
    practice = bool(row[3])
    return PairView(
        int(position),
        int(total),
        row[0],
        row[1],
        None if row[2] is None else bool(row[2]),
        practice=practice,
        practice_real_side=("left" if row[4] == "real" else "right") if practice else None,
    )


def submit_pair_answer(
    db: str | Engine | None, reader_id: int, position: int, *, chose_left: bool, confidence: int, seconds: float = 0.0
) -> None:
    """Store which side a reader took for the real scan; committed before returning. A pair is
    answered once (2AFC answers are never changed)."""
    if not isinstance(chose_left, (bool, np.bool_)):
        raise ConfigError(f"chose_left must be True or False, got {chose_left!r}")
    _validate_answer(False, confidence, 3, (), seconds)
    try:
        with write_session(db) as session:
            pair = session.get(Pair, (int(reader_id), int(position)))
            if pair is None:
                raise ConfigError(f"reader {reader_id} has no pair at position {position}")
            if (
                session.scalar(
                    select(PairAnswer.id).where(
                        PairAnswer.reader_id == int(reader_id), PairAnswer.position == int(position)
                    )
                )
                is not None
            ):
                raise AnswerLockedError(f"pair {int(position) + 1} is already answered")
            session.add(
                PairAnswer(
                    reader_id=int(reader_id),
                    position=int(position),
                    chose_left=bool(chose_left),
                    confidence=int(confidence),
                    seconds=float(seconds),
                    submitted_at=utcnow(),
                )
            )
            sid = session.scalar(select(Case.session_id).where(Case.id == pair.left_case_id))
            _log(
                session,
                _reader_actor(reader_id),
                "pair_answered",
                sid,
                position=int(position),
                seconds=round(float(seconds), 3),
            )
    except IntegrityError:  # a concurrent submit of the same pair won
        raise AnswerLockedError(f"pair {int(position) + 1} is already answered") from None


def pair_records(db: str | Engine | None, session_id: int) -> list[dict]:
    """Every scored 2AFC answer of a session, unblinded (for statistics and export); practice pairs left out."""
    left_case, right_case = Case.__table__.alias("l"), Case.__table__.alias("r")
    with read_session(db) as session:
        s = _get_session(session, session_id)
        rows = session.execute(
            select(
                Reader.name,
                Pair.position,
                left_case.c.code,
                left_case.c.cohort,
                left_case.c.path,
                right_case.c.code,
                right_case.c.path,
                PairAnswer,
            )
            .select_from(PairAnswer)
            .join(Pair, (Pair.reader_id == PairAnswer.reader_id) & (Pair.position == PairAnswer.position))
            .join(Reader, Reader.id == PairAnswer.reader_id)
            .join(left_case, left_case.c.id == Pair.left_case_id)
            .join(right_case, right_case.c.id == Pair.right_case_id)
            # practice pairs are never scored
            .where(Reader.session_id == s.id, left_case.c.practice.is_(False), right_case.c.practice.is_(False))
            .order_by(Reader.id, Pair.position)
        ).all()
        out = []
        for name, pos, lcode, lcohort, lpath, rcode, rpath, a in rows:
            real_left = lcohort == "real"
            out.append(
                {
                    **_record_head(s, name, pos),
                    "left_case_id": lcode,
                    "left_name": case_name(lpath),
                    "right_case_id": rcode,
                    "right_name": case_name(rpath),
                    "real_side": "left" if real_left else "right",
                    "chose": "left" if a.chose_left else "right",
                    "correct": bool(a.chose_left) == real_left,
                    "confidence": int(a.confidence),
                    **_record_time(a),
                }
            )
        return out


# ------------------------------------------------------------------------------ giveaway marks
def _reader_case_row(session, reader_id: int, case_code: str):
    return session.execute(
        select(Case.id, Case.session_id, ReviewSession.grid_shape)
        .join(ReviewSession, ReviewSession.id == Case.session_id)
        .where(_readers_case(reader_id, case_code))
    ).first()


def add_mark(db: str | Engine | None, reader_id: int, case_code: str, voxel: Sequence[int]) -> tuple[int, int, int]:
    """Store a giveaway mark: the display-grid voxel (x, y, z) a reader clicked as looking wrong."""
    try:
        xyz = tuple(int(v) for v in voxel)
        if len(xyz) != 3 or any(int(v) != float(v) for v in voxel):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"a mark needs three integer voxel indices (x, y, z), got {voxel!r}") from None
    with write_session(db) as session:
        row = _reader_case_row(session, reader_id, case_code)
        if row is None:
            raise ConfigError(f"case {case_code} is not in reader {reader_id}'s order")
        case_id, sid, shape = row
        if not all(0 <= v < int(n) for v, n in zip(xyz, shape)):
            raise ConfigError(f"mark {xyz} is outside the display grid {tuple(shape)}")
        session.add(Mark(reader_id=int(reader_id), case_id=case_id, x=xyz[0], y=xyz[1], z=xyz[2], created_at=utcnow()))
        _log(session, _reader_actor(reader_id), "mark_added", sid, case=case_code, voxel=list(xyz))
    return xyz


def remove_last_mark(db: str | Engine | None, reader_id: int, case_code: str) -> bool:
    """Undo the reader's newest mark on this case; False when there was none."""
    with write_session(db) as session:
        row = _reader_case_row(session, reader_id, case_code)
        if row is None:
            raise ConfigError(f"case {case_code} is not in reader {reader_id}'s order")
        mark = session.scalar(
            select(Mark).where(Mark.reader_id == int(reader_id), Mark.case_id == row[0]).order_by(Mark.id.desc())
        )
        if mark is None:
            return False
        _log(session, _reader_actor(reader_id), "mark_removed", row[1], case=case_code, voxel=[mark.x, mark.y, mark.z])
        session.delete(mark)
        return True


def reader_marks(db: str | Engine | None, reader_id: int, case_code: str) -> list[tuple[int, int, int]]:
    """This reader's own marks on one case (never another reader's)."""
    with read_session(db) as session:
        rows = session.execute(
            select(Mark.x, Mark.y, Mark.z)
            .join(Case, Case.id == Mark.case_id)
            .where(Mark.reader_id == int(reader_id), Case.code == case_code)
            .order_by(Mark.id)
        ).all()
    return [tuple(int(v) for v in r) for r in rows]


def mark_records(db: str | Engine | None, session_id: int) -> list[dict]:
    """Every mark of a session, unblinded (organiser: heat maps, export)."""
    with read_session(db) as session:
        s = _get_session(session, session_id)
        rows = session.execute(
            select(Reader.name, Case.code, Case.cohort, Mark.x, Mark.y, Mark.z, Mark.created_at)
            .join(Case, Case.id == Mark.case_id)
            .join(Reader, Reader.id == Mark.reader_id)
            .where(Case.session_id == s.id)
            .order_by(Mark.id)
        ).all()
    return [
        {
            "reader": r,
            "case_id": c,
            "cohort": cohort,
            "voxel": [int(x), int(y), int(z)],
            "created_utc": at.isoformat(timespec="seconds"),
        }
        for r, c, cohort, x, y, z, at in rows
    ]


def session_case_array(db: str | Engine | None, session_id: int, case_code: str) -> np.ndarray:
    """A case's cached display-grid array, for the organiser (heat-map backgrounds)."""
    with read_session(db) as session:
        s = _get_session(session, session_id)
        if session.scalar(select(Case.id).where(Case.session_id == s.id, Case.code == case_code)) is None:
            raise ConfigError(f"session {session_id} has no case {case_code}")
        uid, grid = s.uid, _grid(s)
    return _cached_case(db, session_id, uid, grid, case_code)


# ------------------------------------------------------------------------ realism rating only
def submit_rating(
    db: str | Engine | None,
    reader_id: int,
    case_code: str,
    *,
    realism: int,
    flags: Iterable[str] = (),
    comment: str = "",
    seconds: float = 0.0,
) -> None:
    """Store a realism-only rating (1-5) of one case; committed before returning, given once."""
    flags = _validate_answer(False, 3, realism, flags, seconds)
    try:
        with write_session(db) as session:
            case_id, sid, _ = _assigned_case(session, reader_id, case_code)
            if (
                session.scalar(
                    select(RatingAnswer.id).where(
                        RatingAnswer.reader_id == int(reader_id), RatingAnswer.case_id == case_id
                    )
                )
                is not None
            ):
                raise AnswerLockedError(f"case {case_code} is already rated")
            session.add(
                RatingAnswer(
                    reader_id=int(reader_id),
                    case_id=case_id,
                    realism=int(realism),
                    flags=list(flags),
                    comment=(comment or "").strip(),
                    seconds=float(seconds),
                    submitted_at=utcnow(),
                )
            )
            _log(
                session,
                _reader_actor(reader_id),
                "rating_submitted",
                sid,
                case=case_code,
                seconds=round(float(seconds), 3),
            )
    except IntegrityError:  # a concurrent submit of the same rating won
        raise AnswerLockedError(f"case {case_code} is already rated") from None


def rating_records(db: str | Engine | None, session_id: int) -> list[dict]:
    """Every realism-only rating of a session, unblinded; practice cases left out."""
    with read_session(db) as session:
        s = _get_session(session, session_id)
        rows = session.execute(
            select(RatingAnswer, Case, Reader.name, Assignment.position)
            .join(Case, RatingAnswer.case_id == Case.id)
            .join(Reader, RatingAnswer.reader_id == Reader.id)
            .join(
                Assignment,
                (Assignment.reader_id == RatingAnswer.reader_id) & (Assignment.case_id == RatingAnswer.case_id),
            )
            .where(Case.session_id == s.id, Case.practice.is_(False))
            .order_by(Reader.id, Assignment.position)
        ).all()
        return [
            {
                **_record_head(s, name, pos, case),
                "realism": int(a.realism),
                **{f"flag_{f}": f in (a.flags or []) for f in FLAGS},
                "comment": a.comment,
                **_record_time(a),
            }
            for a, case, name, pos in rows
        ]
