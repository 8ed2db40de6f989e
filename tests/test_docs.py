"""The docs tell the truth about the command line: docs/cli.md is generated from the parsers and up
to date, and every `python -m ctdiff|eval|ctdiff_app ...` command shown in README.md, CONTRIBUTING.md
or docs/*.md names an existing command and only flags that command has."""

from __future__ import annotations

import argparse
import functools
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("cli_reference", REPO / "scripts" / "cli_reference.py")
cli_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli_reference)

DOCS = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
COMMAND_RE = re.compile(r"python -m (ctdiff_app|ctdiff|eval) ([^`\n]*)")


def _commands() -> list[tuple[str, str, str]]:
    """(file, program, rest of the line) for every command line shown in the docs."""
    found = []
    for doc in DOCS:
        if doc.name == "cli.md":
            continue
        for line in doc.read_text().splitlines():
            for m in COMMAND_RE.finditer(line.split(" #")[0]):
                found.append((doc.name, m.group(1), m.group(2)))
    return found


@functools.cache
def _options() -> dict[str, set[str]]:
    """'python -m eval review create' -> its option strings, for every command and nested action."""
    out = {}
    for prog, module_name, _ in cli_reference.FRONT_ENDS:
        for title, parser in cli_reference._parsers(prog, module_name):
            flags = {s for a in parser._actions for s in a.option_strings}
            subs = {n for a in parser._actions if isinstance(a, argparse._SubParsersAction) for n in a.choices}
            out[title] = flags | {f"<sub>{n}" for n in subs}
    return out


def test_cli_reference_is_up_to_date():
    assert (REPO / "docs" / "cli.md").read_text() == cli_reference.render(), "run python scripts/cli_reference.py"


def test_docs_show_only_existing_commands_and_flags():
    commands = _commands()
    assert len(commands) > 30  # the docs do show commands; a broken pattern would find none
    options = _options()
    problems = []
    for doc, prog, rest in commands:
        try:
            words = shlex.split(rest.replace("[", " ").replace("]", " ").replace("|", " "))
        except ValueError:
            words = rest.split()
        if not words or words[0].startswith(("-", "COMMAND", "...")):
            continue  # `python -m ctdiff --help`, `python -m eval COMMAND`
        title = f"python -m {prog} {words[0]}"
        if title not in options:
            problems.append(f"{doc}: unknown command {title!r}")
            continue
        if len(words) > 1 and f"<sub>{words[1]}" in options[title]:
            title = f"{title} {words[1]}"
        for w in words[1:]:
            flag = w.split("=")[0]
            if flag.startswith("--") and flag not in options[title] and flag != "--help":
                problems.append(f"{doc}: {title} has no option {flag}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", ["README.md"])
def test_readme_is_an_entry_page(doc):
    assert len((REPO / doc).read_text().splitlines()) <= 300


def test_readme_demo_table_is_current_and_rewritten_between_the_markers(tmp_path):
    """scripts/readme_demo.py writes the demo report's table into README.md between its markers."""
    spec = importlib.util.spec_from_file_location("readme_demo", REPO / "scripts" / "readme_demo.py")
    readme_demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(readme_demo)
    current = (REPO / "README.md").read_text()
    head, rest = current.split(readme_demo.START, 1)
    _, tail = rest.split(readme_demo.END, 1)
    stale = tmp_path / "README.md"
    stale.write_text(f"{head}{readme_demo.START}\nold table\n{readme_demo.END}{tail}")
    assert readme_demo.update_readme(stale) is True
    assert stale.read_text() == current  # the committed table is what the shipped report gives
    assert readme_demo.update_readme(stale) is False
