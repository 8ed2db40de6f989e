"""Blinded reader studies of real vs generated CT: sessions, readers and answers in a database.

Public API (what the app, the demo builder and the ``python -m eval review`` CLI call)::

    from eval.review import create_session, add_reader, submit_answer, session_summary
    sid = create_session(db_url, "pilot", real_dir, generated_dir, n_per_cohort=10, seed=0)
    code = add_reader(db_url, sid, "Dr. A")            # random access code, shown once
    code = add_reader(db_url, sid, "demo", code="DEMO") # a known code, e.g. for the demo

``db_url`` is a SQLAlchemy URL (``sqlite:///path/reviews.sqlite``, ``postgresql://...``) or an
Engine; ``None`` means :func:`eval.review.db.default_db_url`.
"""

from eval.review.db import default_db_url, workspace_dir
from eval.review.stats import session_summary
from eval.review.store import (
    AnswerLockedError,
    add_reader,
    answer_records,
    create_session,
    find_reader,
    list_sessions,
    reader_case,
    reader_progress,
    session_progress,
    submit_answer,
)

__all__ = [
    "AnswerLockedError",
    "add_reader",
    "answer_records",
    "create_session",
    "default_db_url",
    "find_reader",
    "list_sessions",
    "reader_case",
    "reader_progress",
    "session_progress",
    "session_summary",
    "submit_answer",
    "workspace_dir",
]
