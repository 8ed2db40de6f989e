"""Every command the documentation shows exists, and its flags parse with the real CLI.

Reads README.md and every ``docs/**/*.md`` (pages added later are covered without a change here):
fenced code blocks and inline code spans. For each ``python -m MODULE ...`` where MODULE is one of
this repository's packages (``ctdiff``, ``eval``, and any later one with a ``cli.py`` such as
``ctdiff_app``), the arguments go through the real argparse parser (``ctdiff.cli.build_parser`` with
that package's ``SUBCOMMANDS``): a complete command must parse, a shortened one (``...``) must name
an existing subcommand and only existing options. ``scripts/NAME`` must exist and be executable;
``scripts/app`` options are checked against its own parser. Placeholders the docs use for "your
folder" (DIR, RUN, ...) stand for a path or a number.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHONS = re.compile(r"^(?:\S*/)?python(?:3(?:\.\d+)?)?$")
SEPARATORS = {"&&", "||", ";", "|", "&"}
REDIRECTIONS = {">", ">>", "<", ">&", "&>", "2>"}
ELLIPSIS = {"...", "…"}
# the docs' placeholders: a number where the option wants one, else a path-like word
NUMERIC_PLACEHOLDERS = {"N", "K", "STEPS", "SEED", "PORT", "EPOCHS"}
PLACEHOLDERS = NUMERIC_PLACEHOLDERS | {
    "DIR",
    "RUN",
    "R",
    "G",
    "OUT",
    "FILE",
    "PATH",
    "CKPT",
    "CHECKPOINT",
    "DATA",
    "REAL",
    "GEN",
    "TRAIN",
    "SAMPLES",
    "REPORT",
    "CONFIG",
    "DB",
    "URL",
    "CODE",
    "NAME",
    "ID",
    "SESSION",
    "WORKSPACE",
    "DEVICE",
}


def doc_pages() -> list[Path]:
    # docs/cli.md is the parsers' own --help (tests/test_docs.py checks it is current), not examples
    pages = [p for p in sorted((REPO / "docs").rglob("*.md")) if p.name != "cli.md"]
    return [REPO / "README.md", REPO / "CONTRIBUTING.md", *pages]


def code_snippets(text: str) -> list[tuple[str, bool]]:
    """(snippet, is_block) for fenced code blocks (one per command line) and inline code spans."""
    out: list[tuple[str, bool]] = []
    fence = re.compile(r"^(```|~~~)(.*)$")
    lines = text.splitlines()
    in_block, lang, pending, prose = False, "", "", []
    for line in lines:
        m = fence.match(line.strip())
        if m:
            if in_block:
                in_block = False
            else:
                in_block, lang = True, m.group(2).strip().lower()
            continue
        if in_block:
            if lang not in ("", "bash", "sh", "shell", "console", "text"):
                continue  # python, yaml, toml ... blocks hold no shell commands
            stripped = line.strip()
            if stripped.startswith("$ "):
                stripped = stripped[2:]
            if pending:
                stripped = pending + " " + stripped
                pending = ""
            if stripped.endswith("\\"):
                pending = stripped[:-1]
                continue
            if stripped:
                out.append((stripped, True))
        else:
            prose.append(line)
    for span in re.findall(r"(?<!`)`([^`\n]+)`(?!`)", "\n".join(prose)):
        out.append((span, False))
    return out


def split_commands(snippet: str) -> list[list[str]]:
    lexer = shlex.shlex(snippet, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote in prose: not a command
        return []
    commands, current = [], []
    skip = False
    for t in tokens:
        if skip:  # the file of a redirection
            skip = False
            continue
        if t in REDIRECTIONS:
            skip = True
            continue
        if t in SEPARATORS:
            commands.append(current)
            current = []
        else:
            current.append(t)
    commands.append(current)
    return [c for c in commands if c]


def repo_cli_modules() -> set[str]:
    return {p.parent.name for p in REPO.glob("*/cli.py") if (p.parent / "__init__.py").exists()}


def shown_commands() -> list[tuple[str, str, list[str], bool]]:
    """(page, the snippet, argv starting at the command, complete?) for every repo command shown."""
    found = []
    modules = repo_cli_modules()
    for page in doc_pages():
        rel = str(page.relative_to(REPO))
        for snippet, is_block in code_snippets(page.read_text(encoding="utf-8")):
            for cmd in split_commands(snippet):
                # skip env assignments and launchers in front (VAR=1, sudo, time, nohup, timeout 900)
                i = 0
                while i < len(cmd) and (
                    re.match(r"^[A-Z_][A-Z0-9_]*=", cmd[i]) or cmd[i] in ("sudo", "time", "nohup", "exec")
                ):
                    i += 1
                if i < len(cmd) and cmd[i] == "timeout":
                    i += 2
                cmd = cmd[i:]
                if len(cmd) >= 3 and PYTHONS.match(cmd[0]) and cmd[1] == "-m" and cmd[2] in modules:
                    argv = cmd[2:]
                elif cmd and re.match(r"^(\./)?scripts/[\w.-]+$", cmd[0]):
                    argv = [cmd[0].removeprefix("./"), *cmd[1:]]
                else:
                    continue
                # a synopsis ("[--set key=value ...]") or an elision ("...") shows options, not a full command
                complete = is_block and not any(
                    a in ELLIPSIS or a.endswith(("...", "…")) or "[" in a or "]" in a for a in argv
                )
                argv = [a.strip("[]") for a in argv if a.strip("[]")]
                found.append((rel, snippet, argv, complete))
    return found


def _fill(argv: list[str]) -> list[str]:
    """Placeholders -> a value of the right kind; elisions dropped; $VARS -> a path."""
    out = []
    for a in argv:
        if a in ELLIPSIS:
            continue
        bare = a.strip("<>[]")
        if bare in NUMERIC_PLACEHOLDERS:
            out.append("1")
        elif (
            bare in PLACEHOLDERS
            or re.fullmatch(r"[A-Z][A-Z0-9_]*", bare)
            or bare.startswith("$")
            or (a.startswith("<") and a.endswith(">"))
        ):
            out.append(f"/placeholder/{bare.strip('$').lower()}")
        else:
            out.append(a)
    return out


_PARSERS: dict[tuple[str, str | None], argparse.ArgumentParser] = {}


def _parser(module: str, argv: list[str]) -> argparse.ArgumentParser:
    """The real parser, built as ``python -m MODULE`` builds it (one per module and subcommand)."""
    from ctdiff.cli import build_parser

    key = (module, next((a for a in argv if not a.startswith("-")), None))
    if key not in _PARSERS:
        cli = importlib.import_module(f"{module}.cli")
        _PARSERS[key] = build_parser(f"python -m {module}", cli.SUBCOMMANDS, argv)
    return _PARSERS[key]


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """None when ``argv`` parses, else argparse's error message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code:
            return err.getvalue().strip().splitlines()[-1]
    return None


def _subparser(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The deepest subcommand parser named by ``argv``, and the arguments after its name."""
    rest = list(argv)
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or not rest or rest[0].startswith("-"):
            return parser, rest
        choices = subs[0].choices
        if rest[0] not in choices:
            raise AssertionError(f"no such command {rest[0]!r} (choices: {', '.join(choices)})")
        parser, rest = choices[rest[0]], rest[1:]


def check(argv: list[str], complete: bool) -> None:
    module, args = argv[0], _fill(argv[1:])
    if module.startswith("scripts/"):
        script = REPO / module
        assert script.is_file() and os.access(script, os.X_OK), f"{module} does not exist or is not executable"
        if module == "scripts/app" and "--help" not in args:
            bad = [a for a in args if a.startswith("--port") and not re.match(r"^--port(=\d+)?$", a)]
            assert not bad, bad
        return
    assert importlib.util.find_spec(f"{module}.cli") is not None, f"python -m {module}: no such CLI"
    parser = _parser(module, args)
    if complete:
        problem = _parse(parser, args)
        assert problem is None, problem
        return
    sub, rest = _subparser(parser, args)
    known = {s for a in sub._actions for s in a.option_strings}
    unknown = [a.split("=")[0] for a in rest if a.startswith("--") and a.split("=")[0] not in known]
    assert not unknown, f"unknown option(s) {unknown} for {sub.prog}"


COMMANDS = shown_commands()


def test_the_docs_show_commands():
    """The scan finds what the README is built around (guards against a parser that finds nothing)."""
    shown = {" ".join(argv[:2]) for _, _, argv, _ in COMMANDS}
    assert {"scripts/app", "scripts/test"} <= {argv[0] for _, _, argv, _ in COMMANDS}
    assert any(s.startswith("ctdiff ") for s in shown) and any(s.startswith("eval ") for s in shown), shown


@pytest.mark.parametrize(
    "page, snippet, argv, complete", COMMANDS, ids=[f"{p}:{' '.join(a)[:60]}" for p, _, a, _ in COMMANDS]
)
def test_documented_command_parses(page, snippet, argv, complete):
    try:
        check(argv, complete)
    except AssertionError as exc:
        raise AssertionError(f"{page}: `{snippet}`: {exc}") from None


def test_the_checker_catches_wrong_commands():
    with pytest.raises(AssertionError, match="unrecognized arguments: --no-such-flag"):
        check(["ctdiff_app", "demo", "--out", "DIR", "--no-such-flag"], complete=True)
    with pytest.raises(AssertionError, match="invalid choice: 'nosuch'"):
        check(["ctdiff", "nosuch"], complete=True)
    with pytest.raises(AssertionError, match=r"unknown option\(s\) \['--bogus'\]"):
        check(["eval", "report", "--bogus", "..."], complete=False)
    with pytest.raises(AssertionError, match="no such command 'frobnicate'"):
        check(["eval", "review", "frobnicate", "..."], complete=False)
    with pytest.raises(AssertionError, match="scripts/nope does not exist"):
        check(["scripts/nope"], complete=True)
    check(["ctdiff_app", "demo", "--out", "DIR", "--force"], complete=True)
    check(["eval", "report", "--real", "R", "--generated", "G", "--out", "OUT", "--metrics", "noise"], complete=True)


def test_requirements_point_to_a_section_that_exists():
    """requirements.txt sends GPU users to a named section of a docs page: it must be there."""
    line = (REPO / "requirements.txt").read_text().splitlines()[0]
    m = re.search(r"see (\S+\.md) \(\"([^\"]+)\"\)", line)
    assert m, line
    page = (REPO / m.group(1)).read_text(encoding="utf-8")
    assert re.search(rf"^#+ .*{re.escape(m.group(2))}", page, re.M) or f"**{m.group(2)}" in page


def test_cli_help_has_no_rest_markup():
    """Module docstrings use reST ``literals``; the help a terminal shows must not."""
    for module in ("ctdiff", "eval"):
        out = subprocess.run(
            ["python" if False else os.sys.executable, "-m", module, "--help"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0 and "``" not in out.stdout, out.stdout
    from ctdiff.cli import SUBCOMMANDS, _doc_line

    assert all("``" not in _doc_line(m) for m in SUBCOMMANDS.values())
    assert _doc_line("ctdiff.data.phantom").endswith("(python -m ctdiff phantom).")
