"""What the command writes wherever it writes: an ASCII locale, ``FORCE_COLOR`` in CI, a narrow terminal."""

from __future__ import annotations

import json
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


def run(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m anisearch ARGS`` against the trace.moe emulator at ``url``, output as bytes decoded
    leniently (what a reader of the pipe gets)."""
    environment = os.environ | {
        "ANISEARCH_TRACEMOE_URL": url,
        "ANISEARCH_PROVIDERS": "tracemoe",
        "ANISEARCH_METADATA": "off",
        "ANISEARCH_LEDGER": "memory://",
        "ANISEARCH_CACHE": "off",
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-m", "anisearch", *args],
        env=environment,
        capture_output=True,
        timeout=120,
        check=False,
    )
    return subprocess.CompletedProcess(
        done.args,
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
    )


@pytest.fixture
def url(live_server: Callable[[Any], Any]) -> str:
    return str(live_server(create_app(quota=10**6, rate_limit=10**6)).url)


def test_an_ascii_locale_gets_escaped_text_and_ascii_json_never_a_traceback(url: str) -> None:
    ascii_only = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}
    text = run(url, "search", str(DEMO), **ascii_only)
    assert text.returncode == 0, text.stderr
    assert "Traceback" not in text.stderr
    assert "19:29\\u201319:34" in text.stdout  # the en dash, escaped
    as_json = run(url, "search", str(DEMO), "--json", **ascii_only)
    assert as_json.returncode == 0, as_json.stderr
    assert as_json.stdout.isascii()
    assert json.loads(as_json.stdout)["hits"][0]["anilist_id"] == 11887


def test_force_color_never_reaches_json_nor_moves_results_off_stdout(url: str, tmp_path: Path) -> None:
    """CI systems set FORCE_COLOR: ``--json | jq .`` must still parse, and a folder's results must still be
    on stdout (they went to stderr, above a progress bar drawn there)."""
    quota = run(url, "quota", "--json", FORCE_COLOR="1")
    assert quota.returncode == 0, quota.stderr
    json.loads(quota.stdout)
    shots = tmp_path / "shots"
    shots.mkdir()
    for n in range(3):
        shutil.copy(DEMO, shots / f"{n}.jpg")
    batch = run(url, "search", str(shots), "--json", FORCE_COLOR="1")
    assert batch.returncode == 0, batch.stderr
    inputs = sorted(json.loads(line)["input"] for line in batch.stdout.splitlines())
    assert inputs == [str(shots / f"{n}.jpg") for n in range(3)]


def test_a_narrow_terminal_gets_a_block_per_hit_with_its_title(url: str) -> None:
    done = run(url, "search", str(DEMO), "--all", "-n", "2", COLUMNS="40")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1] == "Kokoro Connect"  # the title heads the first hit's block: never squeezed out
    assert "  scene     19:29\u201319:34" in lines
    assert "more hit(s) not shown (--limit N shows them)" in done.stderr  # the notes, as in the table
