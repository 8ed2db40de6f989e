"""Review-session database: SQLAlchemy models, engine set-up, schema versions and migrations.

One database holds every review session. The default is one SQLite file in the workspace
(``<workspace>/reviews.sqlite``); ``CTDIFF_REVIEW_DB`` may name any SQLAlchemy URL instead (e.g.
``postgresql+psycopg://user:pass@host/ctdiff``) so a site can use its PostgreSQL server.

SQLite is opened in WAL mode (readers never block the writer, a crash loses no committed answer)
with foreign keys on and a 30 s busy timeout. Write transactions start with ``BEGIN IMMEDIATE`` so
two writers never both read and then collide on upgrading to a write lock; reads stay deferred.

The schema carries a version number (table ``review_schema_version``). Opening an older database
migrates it in place, step by step, inside one transaction (see :data:`MIGRATIONS`); a database
written by a newer ctdiff is refused. Alembic is not a dependency of ctdiff, and the handful of
additive steps here do not need it, so migrations are plain functions over a connection.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from ctdiff.errors import ConfigError
from ctdiff.locations import workspace_path

SCHEMA_VERSION = 3
DB_ENV = "CTDIFF_REVIEW_DB"
_WRITE = "ctdiff_review_write"  # execution option that makes a SQLite transaction BEGIN IMMEDIATE
SQLITE_BUSY_TIMEOUT_S = 30.0


def workspace_dir() -> Path:
    """``$CTDIFF_WORKSPACE`` or ``workspace/demo`` in the current folder (holds real/, generated/, reviews.sqlite)."""
    return workspace_path()[0]


def _workspace_db_url() -> str:
    return f"sqlite:///{workspace_dir() / 'reviews.sqlite'}"


def default_db_url() -> str:
    """``$CTDIFF_REVIEW_DB`` if set, else the SQLite file ``<workspace>/reviews.sqlite``."""
    return os.environ.get(DB_ENV) or _workspace_db_url()


def utcnow() -> dt.datetime:
    """Naive UTC timestamp (SQLite keeps no time zone; every stored time is UTC)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


# ------------------------------------------------------------------------------------------ models
class Base(DeclarativeBase):
    pass


class SchemaVersion(Base):
    __tablename__ = "review_schema_version"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)


class ReviewSession(Base):
    __tablename__ = "review_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)  # names the display cache
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    seed: Mapped[int] = mapped_column(Integer, nullable=False)
    real_dir: Mapped[str] = mapped_column(Text, nullable=False)
    generated_dir: Mapped[str] = mapped_column(Text, nullable=False)
    planes: Mapped[list] = mapped_column(JSON, nullable=False)
    windows: Mapped[list] = mapped_column(JSON, nullable=False)
    scroll: Mapped[str] = mapped_column(String(16), nullable=False)  # "all" or "middle"
    instructions: Mapped[str] = mapped_column(Text, nullable=False, default="")
    grid_shape: Mapped[list] = mapped_column(JSON, nullable=False)  # common display grid (x, y, z)
    grid_spacing: Mapped[list] = mapped_column(JSON, nullable=False)  # its voxel size in mm
    # added in schema version 2
    allow_change: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    skipped: Mapped[list] = mapped_column(JSON, nullable=False, default=list)  # [[path, reason], ...]
    # added in schema version 3
    design: Mapped[str] = mapped_column(String(16), nullable=False, default="single")  # "single", "2afc" or "rating"
    conditions: Mapped[list] = mapped_column(
        JSON, nullable=False, default=list
    )  # [{"name", "dir"}] per generated folder


class Case(Base):
    __tablename__ = "review_cases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("review_sessions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    code: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)  # opaque, what readers see
    path: Mapped[str] = mapped_column(Text, nullable=False)
    cohort: Mapped[str] = mapped_column(String(16), nullable=False)  # "real" or "synthetic"
    # added in schema version 3: practice cases come first, get feedback and are never scored
    practice: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    condition: Mapped[str] = mapped_column(
        String(200), nullable=False, default=""
    )  # generated folder's name; "" for real


class Reader(Base):
    __tablename__ = "review_readers"
    __table_args__ = (UniqueConstraint("session_id", "name", name="uq_reader_session_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("review_sessions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)  # hex digest of the access code
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    # added in schema version 3: salted scrypt instead of plain sha256 (see eval.review.assign)
    code_kdf: Mapped[str] = mapped_column(
        String(16), nullable=False, default="scrypt"
    )  # "scrypt", or "sha256" (pre-v3)
    code_salt: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    code_lookup: Mapped[str] = mapped_column(
        String(8), nullable=False, default="", index=True
    )  # first characters, to find candidates


class Pair(Base):
    """Two-alternative forced choice (schema v3): one real and one synthetic case shown side by
    side, at one place in one reader's order."""

    __tablename__ = "review_pairs"
    reader_id: Mapped[int] = mapped_column(ForeignKey("review_readers.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    left_case_id: Mapped[int] = mapped_column(ForeignKey("review_cases.id", ondelete="CASCADE"), nullable=False)
    right_case_id: Mapped[int] = mapped_column(ForeignKey("review_cases.id", ondelete="CASCADE"), nullable=False)


class PairAnswer(Base):
    """Which side of a pair the reader took for the real scan (schema v3)."""

    __tablename__ = "review_pair_answers"
    __table_args__ = (UniqueConstraint("reader_id", "position", name="uq_pair_answer_reader_position"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reader_id: Mapped[int] = mapped_column(
        ForeignKey("review_readers.id", ondelete="CASCADE"), nullable=False, index=True
    )
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    chose_left: Mapped[bool] = mapped_column(Boolean, nullable=False)  # the left scan was called real
    confidence: Mapped[int] = mapped_column(Integer, nullable=False)  # 1..5
    seconds: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    submitted_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)


class RatingAnswer(Base):
    """Realism-only design (schema v3): a 1-5 Likert rating of one case, no real/synthetic call."""

    __tablename__ = "review_rating_answers"
    __table_args__ = (UniqueConstraint("reader_id", "case_id", name="uq_rating_answer_reader_case"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reader_id: Mapped[int] = mapped_column(
        ForeignKey("review_readers.id", ondelete="CASCADE"), nullable=False, index=True
    )
    case_id: Mapped[int] = mapped_column(ForeignKey("review_cases.id", ondelete="CASCADE"), nullable=False, index=True)
    realism: Mapped[int] = mapped_column(Integer, nullable=False)  # 1..5
    flags: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    comment: Mapped[str] = mapped_column(Text, nullable=False, default="")
    seconds: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    submitted_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)


class Mark(Base):
    """A giveaway mark (schema v3): a voxel of a case (display grid, x y z) a reader clicked as
    looking wrong."""

    __tablename__ = "review_marks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reader_id: Mapped[int] = mapped_column(
        ForeignKey("review_readers.id", ondelete="CASCADE"), nullable=False, index=True
    )
    case_id: Mapped[int] = mapped_column(ForeignKey("review_cases.id", ondelete="CASCADE"), nullable=False, index=True)
    x: Mapped[int] = mapped_column(Integer, nullable=False)
    y: Mapped[int] = mapped_column(Integer, nullable=False)
    z: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)


class SigninFailure(Base):
    """Failed sign-ins per (scope, client), for the attempt limit with back-off (schema v3)."""

    __tablename__ = "review_signin_failures"
    scope: Mapped[str] = mapped_column(String(16), primary_key=True)  # "reader" or "organiser"
    client: Mapped[str] = mapped_column(String(128), primary_key=True)  # IP address or browser session
    failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_failure: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)


class Assignment(Base):
    """One case's place in one reader's order."""

    __tablename__ = "review_assignments"
    __table_args__ = (UniqueConstraint("reader_id", "case_id", name="uq_assignment_reader_case"),)
    reader_id: Mapped[int] = mapped_column(ForeignKey("review_readers.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("review_cases.id", ondelete="CASCADE"), nullable=False)


class Answer(Base):
    __tablename__ = "review_answers"
    __table_args__ = (UniqueConstraint("reader_id", "case_id", name="uq_answer_reader_case"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reader_id: Mapped[int] = mapped_column(
        ForeignKey("review_readers.id", ondelete="CASCADE"), nullable=False, index=True
    )
    case_id: Mapped[int] = mapped_column(ForeignKey("review_cases.id", ondelete="CASCADE"), nullable=False, index=True)
    said_synthetic: Mapped[bool] = mapped_column(Boolean, nullable=False)
    confidence: Mapped[int] = mapped_column(Integer, nullable=False)  # 1..5
    realism: Mapped[int] = mapped_column(Integer, nullable=False)  # 1..5 Likert
    flag_noise: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    flag_texture: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    flag_contrast: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    flag_anatomy: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    flag_edges: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    comment: Mapped[str] = mapped_column(Text, nullable=False, default="")
    seconds: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)  # time spent on the case
    submitted_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    # added in schema version 2
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    changes: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # edits after the first submit


class Event(Base):
    """Audit trail (schema v3): who did what when. Append-only: the database refuses UPDATE and
    DELETE on this table (triggers, see :func:`_append_only`)."""

    __tablename__ = "review_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    session_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)  # no FK: outlives its session
    actor: Mapped[str] = mapped_column(String(64), nullable=False)  # "organiser", "cli", "reader:<id>", "client:<ip>"
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    detail: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)


def _append_only(conn: Connection) -> None:
    """Triggers that make review_events append-only (SQLite and PostgreSQL)."""
    if conn.dialect.name == "sqlite":
        for op in ("UPDATE", "DELETE"):
            conn.execute(
                text(
                    f"CREATE TRIGGER IF NOT EXISTS review_events_no_{op.lower()} BEFORE {op} ON review_events "
                    "BEGIN SELECT RAISE(ABORT, 'review_events is append-only'); END"
                )
            )
    elif conn.dialect.name == "postgresql":
        conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION review_events_append_only() RETURNS trigger AS $$ "
                "BEGIN RAISE EXCEPTION 'review_events is append-only'; END; $$ LANGUAGE plpgsql"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER review_events_append_only BEFORE UPDATE OR DELETE ON review_events "
                "FOR EACH ROW EXECUTE FUNCTION review_events_append_only()"
            )
        )


# -------------------------------------------------------------------------------------- migrations
def schema_v1_metadata() -> MetaData:
    """The first released layout (no rating changes, no skipped-file list), kept to test migration."""
    md = MetaData()
    Table(
        "review_schema_version", md, Column("id", Integer, primary_key=True), Column("version", Integer, nullable=False)
    )
    Table(
        "review_sessions",
        md,
        Column("id", Integer, primary_key=True),
        Column("uid", String(32), unique=True, nullable=False),
        Column("name", String(200), nullable=False),
        Column("created_at", DateTime, nullable=False),
        Column("seed", Integer, nullable=False),
        Column("real_dir", Text, nullable=False),
        Column("generated_dir", Text, nullable=False),
        Column("planes", JSON, nullable=False),
        Column("windows", JSON, nullable=False),
        Column("scroll", String(16), nullable=False),
        Column("instructions", Text, nullable=False),
        Column("grid_shape", JSON, nullable=False),
        Column("grid_spacing", JSON, nullable=False),
    )
    Table(
        "review_cases",
        md,
        Column("id", Integer, primary_key=True),
        Column("session_id", ForeignKey("review_sessions.id", ondelete="CASCADE"), nullable=False, index=True),
        Column("code", String(32), unique=True, nullable=False),
        Column("path", Text, nullable=False),
        Column("cohort", String(16), nullable=False),
    )
    Table(
        "review_readers",
        md,
        Column("id", Integer, primary_key=True),
        Column("session_id", ForeignKey("review_sessions.id", ondelete="CASCADE"), nullable=False, index=True),
        Column("name", String(200), nullable=False),
        Column("code_hash", String(64), unique=True, nullable=False),
        Column("created_at", DateTime, nullable=False),
        UniqueConstraint("session_id", "name", name="uq_reader_session_name"),
    )
    Table(
        "review_assignments",
        md,
        Column("reader_id", ForeignKey("review_readers.id", ondelete="CASCADE"), primary_key=True),
        Column("position", Integer, primary_key=True),
        Column("case_id", ForeignKey("review_cases.id", ondelete="CASCADE"), nullable=False),
        UniqueConstraint("reader_id", "case_id", name="uq_assignment_reader_case"),
    )
    Table(
        "review_answers",
        md,
        Column("id", Integer, primary_key=True),
        Column("reader_id", ForeignKey("review_readers.id", ondelete="CASCADE"), nullable=False, index=True),
        Column("case_id", ForeignKey("review_cases.id", ondelete="CASCADE"), nullable=False, index=True),
        Column("said_synthetic", Boolean, nullable=False),
        Column("confidence", Integer, nullable=False),
        Column("realism", Integer, nullable=False),
        *(Column(f"flag_{f}", Boolean, nullable=False) for f in ("noise", "texture", "contrast", "anatomy", "edges")),
        Column("comment", Text, nullable=False),
        Column("seconds", Float, nullable=False),
        Column("submitted_at", DateTime, nullable=False),
        UniqueConstraint("reader_id", "case_id", name="uq_answer_reader_case"),
    )
    return md


def _migrate_1_to_2(conn: Connection) -> None:
    """v2: organisers may allow rating changes after submit; skipped input files are kept."""
    conn.execute(text("ALTER TABLE review_sessions ADD COLUMN allow_change BOOLEAN NOT NULL DEFAULT FALSE"))
    conn.execute(text("ALTER TABLE review_sessions ADD COLUMN skipped JSON NOT NULL DEFAULT '[]'"))
    conn.execute(
        text("ALTER TABLE review_answers ADD COLUMN updated_at TIMESTAMP NOT NULL DEFAULT '1970-01-01 00:00:00'")
    )
    conn.execute(text("UPDATE review_answers SET updated_at = submitted_at"))
    conn.execute(text("ALTER TABLE review_answers ADD COLUMN changes INTEGER NOT NULL DEFAULT 0"))


def _migrate_2_to_3(conn: Connection) -> None:
    """v3: reader codes kept as salted scrypt hashes. Old rows keep their sha256 hash (marked
    ``code_kdf = 'sha256'``) until the reader's next sign-in re-hashes the code (the code itself is
    needed for that; :func:`eval.review.store.find_reader`). Failed sign-ins are counted."""
    conn.execute(text("ALTER TABLE review_readers ADD COLUMN code_kdf VARCHAR(16) NOT NULL DEFAULT 'sha256'"))
    conn.execute(text("ALTER TABLE review_readers ADD COLUMN code_salt VARCHAR(64) NOT NULL DEFAULT ''"))
    conn.execute(text("ALTER TABLE review_readers ADD COLUMN code_lookup VARCHAR(8) NOT NULL DEFAULT ''"))
    conn.execute(text("CREATE INDEX ix_review_readers_code_lookup ON review_readers (code_lookup)"))
    conn.execute(text("ALTER TABLE review_sessions ADD COLUMN design VARCHAR(16) NOT NULL DEFAULT 'single'"))
    conn.execute(text("ALTER TABLE review_cases ADD COLUMN practice BOOLEAN NOT NULL DEFAULT FALSE"))
    conn.execute(text("ALTER TABLE review_sessions ADD COLUMN conditions JSON NOT NULL DEFAULT '[]'"))
    conn.execute(text("ALTER TABLE review_cases ADD COLUMN condition VARCHAR(200) NOT NULL DEFAULT ''"))
    SigninFailure.__table__.create(conn)
    Pair.__table__.create(conn)
    PairAnswer.__table__.create(conn)
    Mark.__table__.create(conn)
    RatingAnswer.__table__.create(conn)
    Event.__table__.create(conn)
    _append_only(conn)


# target version -> step that brings a database from version - 1 to it
MIGRATIONS: dict[int, Callable[[Connection], None]] = {2: _migrate_1_to_2, 3: _migrate_2_to_3}


def ensure_schema(engine: Engine) -> int:
    """Create the tables in an empty database or migrate an older one; return the version found."""
    with write_connection(engine) as conn:
        insp = inspect(conn)
        if not insp.has_table(SchemaVersion.__tablename__):
            present = [t for t in Base.metadata.tables if insp.has_table(t)]
            if present:
                raise ConfigError(
                    f"holds review tables {present} but no schema version; not a ctdiff review database", _where(engine)
                )
            Base.metadata.create_all(conn)
            _append_only(conn)
            conn.execute(SchemaVersion.__table__.insert().values(id=1, version=SCHEMA_VERSION))
            return 0
        found = conn.scalar(select(SchemaVersion.version).where(SchemaVersion.id == 1))
        if found is None or found < 1:
            raise ConfigError("review schema version row is missing or invalid", _where(engine))
        if found > SCHEMA_VERSION:
            raise ConfigError(
                f"review database has schema version {found}, newer than this ctdiff understands "
                f"({SCHEMA_VERSION}); upgrade ctdiff",
                _where(engine),
            )
        for version in range(found + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version](conn)
            conn.execute(update(SchemaVersion).where(SchemaVersion.id == 1).values(version=version))
        return int(found)


def schema_version(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(SchemaVersion.version).where(SchemaVersion.id == 1)))


# ------------------------------------------------------------------------------------------ engines
def _where(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _url_text(url) -> str:
    return url.render_as_string(hide_password=True)


def _sqlite_engine(url, create_folders: bool = False) -> Engine:
    """``create_folders``: make every missing folder above the file (the workspace's default
    database); otherwise at most the file's own folder is made, so a mistyped path fails here."""
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        folder = Path(database).parent
        if not create_folders and not folder.is_dir() and not folder.parent.is_dir():
            raise ConfigError(
                f"the folder of the SQLite database does not exist ({folder.parent} is missing)",
                _url_text(url),
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the database folder {folder} ({exc.strerror})", _url_text(url)) from None
        # the database holds who answered what (and code hashes): owner-only, like an SSH key.
        # SQLite gives its -wal and -shm files the database file's mode.
        fd = os.open(database, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Transactions are begun by the "begin" hook below, not by the sqlite3 module's own
        # implicit BEGIN (which would be DEFERRED for writes too): SQLAlchemy's documented recipe.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


_ENGINES: dict[tuple[int, str], Engine] = {}
_ENGINES_LOCK = threading.Lock()


def get_engine(db: str | Engine | None = None) -> Engine:
    """The engine for a URL (schema created/migrated on first use), one per URL and process.

    An Engine passed in is returned as is (its schema is checked once as well).
    """
    if isinstance(db, Engine):
        key = (os.getpid(), f"engine:{id(db)}")
    else:
        db = db or default_db_url()
        key = (os.getpid(), str(db))
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            if isinstance(db, Engine):
                engine = db
            else:
                try:
                    url = make_url(db)
                except Exception as exc:  # sqlalchemy raises ArgumentError for a malformed URL
                    raise ConfigError(
                        f"not a database URL ({exc}); set {DB_ENV} to e.g. sqlite:///reviews.sqlite"
                    ) from None
                try:
                    engine = (
                        _sqlite_engine(url, create_folders=str(db) == _workspace_db_url())
                        if url.get_backend_name() == "sqlite"
                        else create_engine(url, pool_pre_ping=True)
                    )
                except (ArgumentError, ImportError) as exc:  # unknown backend (NoSuchModuleError), no driver
                    raise ConfigError(
                        f"cannot use this database URL ({type(exc).__name__}: {exc}); "
                        f"e.g. sqlite:///reviews.sqlite or postgresql+psycopg://user@host/db",
                        _url_text(url),
                    ) from None
            try:
                ensure_schema(engine)
            except DBAPIError as exc:
                raise ConfigError(
                    f"cannot open review database ({type(exc.orig).__name__}: {exc.orig})", _where(engine)
                ) from None
            _ENGINES[key] = engine
    return engine


def dispose_engine(db: str) -> None:
    """Close this process's pooled connections to one database URL and forget its engine: before the
    database file is moved or renamed (SQLite finds its -wal/-shm files by the database's name)."""
    with _ENGINES_LOCK:
        engine = _ENGINES.pop((os.getpid(), str(db)), None)
    if engine is not None:
        engine.dispose()


def dispose_engines() -> None:
    """Close every pooled connection (tests; before a process forks)."""
    with _ENGINES_LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()


@contextlib.contextmanager
def write_connection(engine: Engine) -> Iterator[Connection]:
    """A Core connection inside one write transaction (BEGIN IMMEDIATE on SQLite), committed on exit."""
    with engine.execution_options(**{_WRITE: True}).connect() as conn, conn.begin():
        yield conn


@contextlib.contextmanager
def write_session(db: str | Engine | None) -> Iterator[Session]:
    """An ORM session inside one write transaction, committed when the block ends without error."""
    engine = get_engine(db)
    with Session(engine.execution_options(**{_WRITE: True}), expire_on_commit=False) as session, session.begin():
        yield session


@contextlib.contextmanager
def read_session(db: str | Engine | None) -> Iterator[Session]:
    """An ORM session for reading (a deferred transaction: never blocks writers in WAL mode)."""
    engine = get_engine(db)
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session
