"""The command-line front ends: listing, per-command help with examples, one-line errors."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import ctdiff_app.cli as app_cli
from ctdiff import cli as ctdiff_cli
from eval import cli as eval_cli

MAINS = {"ctdiff": ctdiff_cli.main, "eval": eval_cli.main, "ctdiff_app": app_cli.main}
ALL = (
    [("ctdiff", name) for name in ctdiff_cli.SUBCOMMANDS]
    + [("eval", name) for name in eval_cli.SUBCOMMANDS]
    + [("ctdiff_app", name) for name in app_cli.SUBCOMMANDS]
)


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_:
        ctdiff_cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name in ctdiff_cli.SUBCOMMANDS:  # a long name (train-autoencoder) has its help on the next line
        assert re.search(rf"^    {re.escape(name)}\s", out, re.MULTILINE)
    assert {"phantom", "prepare"} <= set(ctdiff_cli.SUBCOMMANDS)
    assert {"report", "review"} <= set(eval_cli.SUBCOMMANDS)
    assert "demo" not in ctdiff_cli.SUBCOMMANDS and "demo" in app_cli.SUBCOMMANDS  # the demo is the app's


def test_app_cli_lists_the_demo(capsys):
    with pytest.raises(SystemExit) as exit_:
        app_cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "python -m ctdiff_app" in out and "    demo " in out


@pytest.mark.parametrize("package, command", ALL, ids=[f"{p}-{c}" for p, c in ALL])
def test_each_subcommand_help_has_examples(package, command, capsys):
    main = MAINS[package]
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert f"python -m {package} {command}" in out.split("examples:")[1]


def test_bad_input_is_one_line_and_exit_code_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ctdiff", "prepare", "--src", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {tmp_path / 'missing'}: no such folder"]
