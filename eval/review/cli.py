"""Blinded reader studies: create sessions, add readers, see progress, report and export results.

The database is ``--db URL`` or ``$CTDIFF_REVIEW_DB`` or ``<workspace>/reviews.sqlite``
(``$CTDIFF_WORKSPACE``, default ``workspace/demo``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from tqdm import tqdm

from ctdiff.atomic import plain_json
from ctdiff.data.display import PLANES, WINDOW_PRESETS
from ctdiff.errors import InputError
from eval.review import export, serving, store
from eval.review.db import DB_ENV, default_db_url

# The reader page is the app's; eval does not locate it from its own file. `serve` takes --page,
# else $CTDIFF_READER_PAGE, else this path under the current folder (the checkout).
READER_PAGE_ENV = "CTDIFF_READER_PAGE"
READER_PAGE = Path("pages") / "5_Review_reader.py"

EXAMPLES = """\
  python -m eval review create --name pilot --real data/real --generated samples/run1 --n 20 --seed 7
  python -m eval review create --name quick --real R --generated G --planes axial --windows "soft tissue" --scroll middle
  python -m eval review add-reader --session 1 --name "Dr. A"
  python -m eval review list
  python -m eval review report --session 1 --out reports/review-1
  python -m eval review export --session 1 --out answers/ --format csv json
  python -m eval review mrmc --answers review-1/mrmc.csv --json
  python -m eval review serve --port 8502   # the reader page alone, for readers' browsers
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", default=None, help="SQLAlchemy database URL (default: $CTDIFF_REVIEW_DB or <workspace>/reviews.sqlite)"
    )
    sub = parser.add_subparsers(dest="review_command", metavar="ACTION", required=True)

    p = sub.add_parser("create", help="create a session from a real and a generated folder")
    p.add_argument("--name", required=True)
    p.add_argument("--real", required=True, help="folder of real scans")
    p.add_argument(
        "--generated",
        required=True,
        nargs="+",
        help="folder of generated scans; several folders (e.g. two models) are compared against the same real scans",
    )
    p.add_argument(
        "--n", type=int, default=None, help="cases per cohort (default: balanced, as many as the smaller folder has)"
    )
    p.add_argument("--n-real", type=int, default=None, help="real cases (unbalanced design; overrides --n)")
    p.add_argument("--n-generated", type=int, default=None, help="generated cases (unbalanced design; overrides --n)")
    p.add_argument("--seed", type=int, default=0, help="seed of case selection and reading orders")
    p.add_argument("--planes", nargs="+", default=list(PLANES), choices=PLANES)
    p.add_argument("--windows", nargs="+", default=list(WINDOW_PRESETS), choices=list(WINDOW_PRESETS))
    p.add_argument("--scroll", choices=store.SCROLL_MODES, default="all", help="all slices, or only the middle slice")
    p.add_argument("--allow-change", action="store_true", help="readers may change a rating after submitting it")
    p.add_argument("--instructions", default="", help="text shown to readers above the first case")
    p.add_argument(
        "--practice", type=int, default=0, help="practice cases per cohort: shown first with feedback, never scored"
    )
    p.add_argument(
        "--design",
        choices=store.DESIGNS,
        default="single",
        help="single: one scan, real or synthetic + confidence; 2afc: a real and a synthetic side by side, which is real?",
    )
    p.set_defaults(_review=run_create)

    p = sub.add_parser("add-reader", help="add a reader; prints their access code (shown once)")
    p.add_argument("--session", type=int, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--code", default=None, help="use this access code instead of a random one")
    p.set_defaults(_review=run_add_reader)

    p = sub.add_parser("list", help="sessions with their readers' progress")
    p.set_defaults(_review=run_list)

    p = sub.add_parser("report", help="statistics; Markdown to stdout, or all exports into --out")
    p.add_argument("--session", type=int, required=True)
    p.add_argument("--out", default=None, help="folder for answers.csv/json, summary.json/md/html")
    p.add_argument("--force", action="store_true", help="overwrite existing files in --out")
    p.set_defaults(_review=run_report)

    p = sub.add_parser("export", help="all answers as CSV and/or JSON")
    p.add_argument("--session", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--format", nargs="+", choices=("csv", "json"), default=["csv", "json"])
    p.add_argument("--force", action="store_true")
    p.set_defaults(_review=run_export)

    p = sub.add_parser("mrmc", help="MRMC analysis (Obuchowski-Rockette, Hillis df) of an answers CSV")
    p.add_argument(
        "--answers", required=True, help="CSV with reader, case, truth (0 real, 1 synthetic), rating[, condition, call]"
    )
    p.add_argument(
        "--readers",
        choices=("random", "fixed"),
        default="random",
        help="readers random (default: results generalise to readers) or fixed",
    )
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(_review=run_mrmc)

    p = sub.add_parser("serve", help="serve the reader page alone (no other app page reachable) for a study")
    p.add_argument("--port", type=int, default=8502)
    p.add_argument(
        "--address",
        default=serving.DEFAULT_ADDRESS,
        help="interface to listen on (default: localhost only; 0.0.0.0 = all)",
    )
    p.add_argument("--ssl-cert", default=None, help="TLS certificate (PEM) for HTTPS (Streamlit server.sslCertFile)")
    p.add_argument("--ssl-key", default=None, help="TLS private key (PEM) for HTTPS (Streamlit server.sslKeyFile)")
    p.add_argument(
        "--page",
        default=None,
        help=f"the reader page (default: ${READER_PAGE_ENV} or {READER_PAGE} in the current folder)",
    )
    p.set_defaults(_review=run_serve)


def run(args: argparse.Namespace) -> int:
    from ctdiff import validate

    # ids and seeds checked at the edge: a database integer is at most 2^63 - 1, a seed at most 2^32 - 1
    if getattr(args, "session", None) is not None:
        validate.integer(args.session, "--session", low=1, high=2**63 - 1)
    if getattr(args, "seed", None) is not None:
        validate.seed(args.seed)
    return args._review(args)


def run_create(args: argparse.Namespace) -> int:
    db = args.db or default_db_url()
    bar = None  # opened on the first progress call, so a bad folder fails without an empty bar

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="reading and caching cases", unit="step")
        bar.update(done - bar.n)

    try:
        sid = store.create_session(
            db,
            args.name,
            args.real,
            args.generated,
            n_per_cohort=args.n,
            seed=args.seed,
            planes=args.planes,
            windows=args.windows,
            scroll=args.scroll,
            allow_change=args.allow_change,
            instructions=args.instructions,
            n_real=args.n_real,
            n_generated=args.n_generated,
            progress=progress,
            design=args.design,
            n_practice=args.practice,
        )
    finally:
        if bar is not None:
            bar.close()
    info = store.session_info(db, sid)
    print(
        f"session {sid} '{info.name}': {info.n_real} real + {info.n_synthetic} synthetic cases; display grid {info.grid.shape}"
    )
    if info.skipped:
        print(f"skipped {len(info.skipped)} unreadable file(s):")
        for path, reason in info.skipped:
            print(f"  {path}: {reason}")
    print(f"next: python -m eval review add-reader --session {sid} --name NAME")
    return 0


def run_add_reader(args: argparse.Namespace) -> int:
    code = store.add_reader(args.db, args.session, args.name, code=args.code)
    print(f"reader '{args.name.strip()}' added to session {args.session}; access code (shown once): {code}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    sessions = store.list_sessions(args.db)
    if not sessions:
        print("no review sessions yet; create one with: python -m eval review create ...")
        return 0
    for s in sessions:
        print(
            f"{s.id}\t{s.name}\t{s.created_at:%Y-%m-%d %H:%M} UTC\t{s.n_real} real + {s.n_synthetic} synthetic\t{s.n_readers} reader(s)"
        )
        for p in store.session_progress(args.db, s.id):
            print(f"\t{p['reader']}: {p['answered']}/{p['total']}{' done' if p['done'] else ''}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    if args.out:
        for path in export.write_report(args.db, args.session, args.out, force=args.force):
            print(path)
        return 0
    sys.stdout.write(export.build_report(args.db, args.session)["summary.md"])
    return 0


def run_export(args: argparse.Namespace) -> int:
    only = tuple(f"answers.{f}" for f in args.format)
    for path in export.write_report(args.db, args.session, args.out, force=args.force, only=only):
        print(path)
    return 0


def reader_page(page: str | os.PathLike | None = None) -> Path:
    """The reader page to serve: ``page``, else ``$CTDIFF_READER_PAGE``, else ``pages/5_Review_reader.py``."""
    path = Path(page or os.environ.get(READER_PAGE_ENV) or READER_PAGE)
    if not path.is_file():
        raise InputError(f"reader page not found (run from the checkout, or pass --page / set {READER_PAGE_ENV})", path)
    return path


def run_mrmc(args: argparse.Namespace) -> int:
    from eval.review import mrmc

    result = mrmc.analyse(mrmc.read_answers_csv(args.answers), readers=args.readers)
    if args.json:
        print(json.dumps(plain_json(result.as_dict()), indent=2))
    else:
        sys.stdout.write(mrmc.format_result(result))
    return 0


def serve_command(port: int, address: str, page: str | os.PathLike = READER_PAGE) -> list[str]:
    """``streamlit run`` of the reader page alone: no page navigation (readers cannot reach the
    slice browser, which labels real and generated scans) and no error details in the browser."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(page),
        "--server.port",
        str(port),
        "--server.address",
        address,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.showSidebarNavigation",
        "false",
        "--client.showErrorDetails",
        "none",
        "--client.toolbarMode",
        "minimal",
    ]


def run_serve(args: argparse.Namespace) -> int:
    page = reader_page(args.page)
    checkout = str(page.resolve().parents[1])  # pages/ sits in the checkout: the page imports ctdiff, eval, pages
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (checkout, os.environ.get("PYTHONPATH")) if p)}
    if args.db:
        env[DB_ENV] = args.db
    tls = serving.tls_options(args.ssl_cert, args.ssl_key)
    warning = serving.exposure_warning(args.address, bool(tls))
    if warning:
        print(warning, file=sys.stderr)
    scheme = "https" if tls else "http"
    print(
        f"reader page on {scheme}://{args.address}:{args.port} (database {env.get(DB_ENV) or default_db_url()}); Ctrl-C stops it"
    )
    return subprocess.call(serve_command(args.port, args.address, page) + tls, env=env)
