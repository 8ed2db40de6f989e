"""``python -m ctdiff_app``: the app's own commands (``demo``: build the demo workspace).

Same contract as :mod:`ctdiff.cli` (``SUBCOMMANDS`` maps a name to a module with ``add_arguments``
and ``run``), so the docs test finds this front end like the others."""

from ctdiff.cli import build_parser, run_parsed

# subcommand name -> module (same contract as ctdiff.cli.SUBCOMMANDS: add_arguments + run)
SUBCOMMANDS: dict[str, str] = {
    "demo": "ctdiff_app.demo",
}


def main(argv=None) -> int:
    parser = build_parser(prog="python -m ctdiff_app", subcommands=SUBCOMMANDS, argv=argv)
    parser.description = "ctdiff's app: build the demo workspace (start the app with scripts/app)."
    return run_parsed(parser, argv)
