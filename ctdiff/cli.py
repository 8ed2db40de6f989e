"""``python -m ctdiff``: one argparse front end over the subcommands.

Each subcommand lives in its own module, which defines ``add_arguments(parser)`` and
``run(args) -> int`` (and a module docstring whose first line is the one-line help, plus an
``EXAMPLES`` string). The CLI only parses, calls, and turns :class:`CTDiffError` into a one-line
message and exit code 2.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Sequence

from ctdiff.errors import CTDiffError

# subcommand name -> module. Keep one line per command.
SUBCOMMANDS: dict[str, str] = {
    "phantom": "ctdiff.phantom",
    "train": "ctdiff.train",
    "train-autoencoder": "ctdiff.autoencoder",
    "sample": "ctdiff.sample",
    "prepare": "ctdiff.prepare",
    "demo": "ctdiff.demo",
}


def _doc_line(module_name: str) -> str:
    """First docstring line of a module, read from its source without importing it (fast --help)."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.origin:
        return module_name
    doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))) or module_name
    return doc.strip().splitlines()[0]


def _chosen_command(argv: Sequence[str] | None, subcommands: dict[str, str]) -> str | None:
    args = sys.argv[1:] if argv is None else list(argv)
    first = next((a for a in args if not a.startswith("-")), None)
    return first if first in subcommands else None


def build_parser(
    prog: str = "python -m ctdiff",
    subcommands: dict[str, str] = SUBCOMMANDS,
    argv: Sequence[str] | None = None,
) -> argparse.ArgumentParser:
    """The argparse parser. Only the module of the command named in ``argv`` is imported (others
    may pull in torch/diffusers, which takes seconds); the listing reads their docstrings."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="ctdiff: prepare CT data, train a 3D diffusion model, sample synthetic CT.",
        epilog="Run '%(prog)s COMMAND --help' for a command's options and examples.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _chosen_command(argv, subcommands)
    for name, module_name in subcommands.items():
        doc = _doc_line(module_name)
        if name != chosen:
            sub.add_parser(name, help=doc, description=doc)
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(
            name,
            help=doc,
            description=doc,
            epilog="examples:\n" + getattr(module, "EXAMPLES", "").rstrip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def run_parsed(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    if getattr(args, "_module", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._module.run(args) or 0)
    except CTDiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    return run_parsed(build_parser(argv=argv), argv)
