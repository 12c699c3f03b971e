"""A reader that closes the command's output early (``| head -1``) ends the command quietly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from anisearch_emulators.tracemoe import create_app

pytestmark = pytest.mark.e2e

DEMO = Path(__file__).resolve().parents[1] / "examples" / "tinted-good.jpg"


@pytest.mark.parametrize("flags", [["--json"], []], ids=["json lines", "one line per input"])
def test_a_batch_whose_reader_stops_after_one_line_exits_141_without_a_traceback(
    tmp_path: Path, live_server: Callable[[Any], Any], flags: list[str]
) -> None:
    server = live_server(create_app(quota=10**6, rate_limit=10**6))
    shots = tmp_path / "shots"
    shots.mkdir()
    for n in range(12):
        shutil.copy(DEMO, shots / f"shot-{n:02}.jpg")
    env = os.environ | {
        "ANISEARCH_TRACEMOE_URL": server.url,
        "ANISEARCH_PROVIDERS": "tracemoe",
        "ANISEARCH_METADATA": "off",
    }
    command = [sys.executable, "-m", "anisearch", "search", str(shots), "--no-cache", *flags]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        first = process.stdout.readline()
        process.stdout.close()  # what `| head -1` does after its line
        errors = process.stderr.read()
        code = process.wait(timeout=60)
    assert "shot-" in first
    assert code == 141  # 128 + SIGPIPE, as a shell reports it; never 1, which means "no confident match"
    assert "Traceback" not in errors
    assert "Exception" not in errors
