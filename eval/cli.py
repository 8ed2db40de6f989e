"""``python -m eval``: metric reports and review sessions, same CLI conventions as ``python -m ctdiff``."""

from __future__ import annotations

from collections.abc import Sequence

from ctdiff.cli import build_parser, run_parsed

# subcommand name -> module (each defines add_arguments(parser) and run(args) -> int)
SUBCOMMANDS: dict[str, str] = {
    "review": "eval.review.cli",
    "report": "eval.report_cli",
    "selftest": "eval.selftest_cli",
    "extract": "eval.extract_cli",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser("python -m eval", SUBCOMMANDS, argv)
    parser.description = "ctdiff eval: measure generated vs real CT; run blinded review sessions."
    return run_parsed(parser, argv)
