"""The console script builds only the command it runs, and answers exactly as the whole command line does."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from anisearch._cli import COMMANDS, build_app, command_named


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["search", "shot.jpg"], "search"),
        (["-v", "search", "shot.jpg"], "search"),
        (["--verbose", "quota", "--json"], "quota"),
        (["keys", "list"], "keys"),
        (["-h", "search"], None),  # the root help lists every command
        (["--help"], None),
        (["serch", "shot.jpg"], None),  # "did you mean" needs every command
        (["--bogus", "search"], None),
        (["--", "search"], None),
        ([], None),
    ],
)
def test_the_command_a_line_runs(args: list[str], expected: str | None) -> None:
    assert command_named(args) == expected


@pytest.mark.parametrize(
    "args",
    [
        ["search", "--help"],
        ["search"],
        ["search", "--min-similarity", "2", "x.jpg"],
        ["quota", "--help"],
        ["keys", "--help"],
        ["keys", "create", "--help"],
        ["cache", "--help"],
        ["emulate", "--help"],
        ["serve", "--help"],
        ["login", "--help"],
    ],
)
def test_one_command_answers_as_the_whole_command_line(args: list[str]) -> None:
    runner = CliRunner()
    name = command_named(args)
    assert name in COMMANDS
    alone = runner.invoke(build_app(name), args, prog_name="anisearch")
    whole = runner.invoke(build_app(), args, prog_name="anisearch")
    assert (alone.exit_code, alone.stdout, alone.stderr) == (whole.exit_code, whole.stdout, whole.stderr)


def test_a_search_loads_no_other_command() -> None:
    script = (
        "import contextlib, io, json, sys\n"
        "sys.argv = ['anisearch', 'search', '--help']\n"
        "from anisearch.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main()\n"
        "others = ['anisearch._cli._account', 'anisearch._cli._emulate', 'anisearch._cli._serve']\n"
        "print(json.dumps([m for m in others if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []
