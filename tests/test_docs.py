"""The docs tell the truth: docs/cli.md is generated from the parsers and up to date, the README is an
entry page, and its demo table is the shipped report's. (That every command shown in the docs parses
is tests/test_docs_commands.py.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("cli_reference", REPO / "scripts" / "cli_reference.py")
cli_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli_reference)


def test_cli_reference_is_up_to_date():
    assert (REPO / "docs" / "cli.md").read_text() == cli_reference.render(), "run python scripts/cli_reference.py"


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
