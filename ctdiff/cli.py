"""``python -m ctdiff``: one argparse front end over the subcommands.

Each subcommand lives in its own module, which defines ``add_arguments(parser)`` and
``run(args) -> int`` (and a module docstring whose first line is the one-line help, plus an
``EXAMPLES`` string). The CLI only parses, calls, and turns :class:`CTDiffError` into a one-line
message and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from ctdiff.errors import CTDiffError

# subcommand name -> module. Keep one line per command.
SUBCOMMANDS: dict[str, str] = {
    "phantom": "ctdiff.phantom",
    "prepare": "ctdiff.prepare",
}


def build_parser(prog: str = "python -m ctdiff", subcommands: dict[str, str] = SUBCOMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="ctdiff: prepare CT data, train a 3D diffusion model, sample synthetic CT.",
        epilog="Run '%(prog)s COMMAND --help' for a command's options and examples.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in subcommands.items():
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or name).strip().splitlines()[0]
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
    return run_parsed(build_parser(), argv)
