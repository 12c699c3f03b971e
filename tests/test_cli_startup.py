"""The console script builds only the command it runs, and answers exactly as the whole command line does."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import LiveServer
from typer.testing import CliRunner

from anisearch._cli import COMMANDS, build_app, command_named
from anisearch_emulators.tracemoe import create_app as tracemoe_app


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


HIDDEN_AT_IMPORT = ("trio", "h2", "click")


def test_a_search_imports_httpx_without_what_it_never_uses(
    live_server: Callable[[Any], LiveServer], samples: Path, tmp_path: Path
) -> None:
    """trio, h2 and click cost a search's start-up 200 ms when installed (the dev extra has trio and click)
    though no command uses them; a later import of each still works."""
    installed = [name for name in HIDDEN_AT_IMPORT if importlib.util.find_spec(name) is not None]
    assert "trio" in installed  # selenium brings it, in the dev extra
    assert "click" in installed  # uvicorn brings it
    trace = live_server(tracemoe_app())
    script = (
        "import contextlib, json, sys\n"
        f"sys.argv = ['anisearch', 'search', '--no-cache', {str(samples / 'tinted-good.jpg')!r}]\n"
        "from anisearch.cli import main\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        f"    loaded = [name for name in {HIDDEN_AT_IMPORT!r} if sys.modules.get(name) is not None]\n"
        f"    for name in {installed!r}:\n"
        "        __import__(name)\n"
        "    print(json.dumps(loaded), file=sys.stderr)\n"
    )
    env = {**os.environ, "ANISEARCH_TRACEMOE_URL": trace.url, "ANISEARCH_PROVIDERS": "tracemoe"}
    env["ANISEARCH_METADATA"] = "off"
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Kokoro Connect" in done.stdout
    assert json.loads(done.stderr.strip().splitlines()[-1]) == []


def test_httpx_imported_so_keeps_tls_its_sources_and_one_finder() -> None:
    script = (
        "import importlib.resources, inspect, sys\n"
        "from anisearch._cli._startup import hide_unused_imports\n"
        "hide_unused_imports()\n"
        "hide_unused_imports()\n"
        "import httpx\n"
        "import httpcore._synchronization as sync\n"
        "httpx.Client(base_url='https://example.test').close()\n"  # its TLS context built
        "assert 'def request' in inspect.getsource(httpx._api)\n"
        "assert importlib.resources.files('httpx').joinpath('py.typed').is_file()\n"
        "finders = sum(type(finder).__name__ == '_Finder' for finder in sys.meta_path)\n"
        "print(sync.trio is None, finders, 'trio' in sys.modules, 'h2' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "1", "False", "False"]
