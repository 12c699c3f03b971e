"""The ``anisearch`` command in the test's own process (typer's CliRunner): no interpreter start-up per call.

Same arguments and result shape as conftest's ``run_cli`` (a ``CompletedProcess`` with text stdout/stderr),
so a test reads the same either way; a few smoke tests keep running the real console script.
"""

from __future__ import annotations

import functools
import subprocess

import typer.testing
from typer.testing import CliRunner

from anisearch.cli import app

# typer's CliRunner builds the click command line from the Typer app on every call (about 10 ms, twice that
# under the coverage tracer, for every command's options); the console script builds it once per process,
# so the runner does too. The command keeps no state between runs: each run gets a new click context.
assert hasattr(typer.testing, "_get_command"), "typer.testing changed: see tests/cli_runner.py"
typer.testing._get_command = functools.cache(typer.testing._get_command)


def run_in_process(
    *args: str, env: dict[str, str] | None = None, stdin: bytes = b""
) -> subprocess.CompletedProcess[str]:
    """Run ``anisearch ARGS`` in process with ``env`` added to the environment and ``stdin`` as input."""
    runner = CliRunner()
    done = runner.invoke(app, list(args), env=env, input=stdin, prog_name="anisearch")
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception
    return subprocess.CompletedProcess(["anisearch", *args], done.exit_code, done.stdout, done.stderr)


def run_on_a_terminal(*args: str, typed: bytes = b"") -> subprocess.CompletedProcess[str]:
    """Run ``python -m anisearch ARGS`` in a new process whose standard input is a terminal (a pty), with
    ``typed`` typed ahead on it; stdout and stderr are captured (pipes, not the terminal)."""
    import os
    import pty
    import sys

    controller, terminal = pty.openpty()
    try:
        if typed:
            os.write(controller, typed)
        return subprocess.run(
            [sys.executable, "-m", "anisearch", *args],
            stdin=terminal,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(terminal)
        os.close(controller)
