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
from collections.abc import Sequence
from pathlib import Path

from ctdiff.errors import CTDiffError

# subcommand name -> module. Keep one line per command.
SUBCOMMANDS: dict[str, str] = {
    "phantom": "ctdiff.data.phantom",
    "train": "ctdiff.training.train",
    "train-autoencoder": "ctdiff.model.autoencoder",
    "fit-noise": "ctdiff.diffusion.fit_noise",
    "fit-start": "ctdiff.diffusion.fit_start",
    "fit-spread": "ctdiff.diffusion.fit_spread",
    "fit-histogram": "ctdiff.diffusion.fit_histogram",
    "tune-decoder": "ctdiff.diffusion.tune_decoder",
    "train-refiner": "ctdiff.diffusion.train_refiner",
    "sample": "ctdiff.diffusion.sample",
    "prepare": "ctdiff.data.prepare",
    "real-ct": "ctdiff.data.realct",
}


def _doc_line(module_name: str) -> str:
    """First docstring line of a module, read from its source without importing it (fast --help)."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.origin:
        return module_name
    doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))) or module_name
    # docstrings use reST literals (``x``); a terminal shows the plain text
    return doc.strip().splitlines()[0].replace("``", "")


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
        epilog="Run '%(prog)s COMMAND --help' for a command's options and examples; add --debug to see the "
        "traceback of an unexpected error.",
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


# exit codes (docs/failure-modes.md): 0 done, 1 done with skipped inputs under --strict, 2 bad
# input/option/refused overwrite (one line), 3 unexpected failure (one line; --debug for the traceback),
# 130 interrupted
EXIT_USER_ERROR = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500] + ("..." if len(text) > 500 else "")


def run_parsed(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # --debug anywhere on the command line: show the traceback of an unexpected error
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    args = parser.parse_args(argv)
    if getattr(args, "_module", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._module.run(args) or 0)
    except CTDiffError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # disk full, permission denied, ... outside the paths checked up front
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"error: {where}{exc.strerror or _one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except MemoryError:
        print("error: out of memory; use smaller sizes, fewer cases or a smaller --batch-size", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:  # the top-level handler: anything unexpected is one line, not a traceback
        if debug:
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {_one_line(exc)} "
            f"(a bug or an unchecked input; rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def main(argv: Sequence[str] | None = None) -> int:
    return run_parsed(build_parser(argv=argv), argv)
