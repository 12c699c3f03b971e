"""End to end: the `anisearch` command in its own process against the trace.moe emulator over loopback."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from tests.cli_runner import run_in_process

from anisearch_emulators.tracemoe import create_app

pytestmark = pytest.mark.e2e

Cli = Callable[..., "subprocess.CompletedProcess[str]"]
"""Runs ``anisearch ARGS``: in process here (see ``cli_runner``); conftest's ``cli`` starts a process."""


@pytest.fixture
def cli() -> Cli:
    return run_in_process


@pytest.fixture
def tracemoe(emulated: Callable[[Any], Any]) -> Any:
    return emulated(create_app())


def search_json(
    cli: Cli, server: Any, image: str | Path, *extra: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    done = cli("search", str(image), "--json", *extra, env={"ANISEARCH_TRACEMOE_URL": server.url})
    return done, json.loads(done.stdout) if done.stdout.strip() else {}


def assert_kokoro_connect_ep5(result: dict[str, Any]) -> None:
    best = result["hits"][0]
    assert best["provider"] == "tracemoe"
    assert best["anilist_id"] == 11887
    assert best["episode"] == 5
    assert best["start_seconds"] <= 1175
    assert best["end_seconds"] >= 1169
    assert best["similarity"] >= 0.9


def test_a_real_screenshot_is_identified(cli: Cli, tracemoe: Any, samples: Path) -> None:
    done, result = search_json(cli, tracemoe, samples / "tinted-good.jpg", "-p", "tracemoe")
    assert done.returncode == 0, done.stderr
    assert_kokoro_connect_ep5(result)
    assert result["provider"] == "tracemoe"
    assert result["attempts"][0]["outcome"] == "ok"
    assert "raw" not in result["hits"][0]
    assert result["quota"]["limit"] == 100  # what trace.moe said of the quota, without its own item
    assert "raw" not in result["quota"]
    assert set(result) == {
        "hits",
        "provider",
        "frames_searched",
        "cached",
        "attempts",
        "quota",
        "adult_hits_dropped",
    }


def test_raw_adds_the_upstream_items(cli: Cli, tracemoe: Any, samples: Path) -> None:
    done, result = search_json(cli, tracemoe, samples / "tinted-good.jpg", "-p", "tracemoe", "--raw")
    assert done.returncode == 0, done.stderr
    assert result["hits"][0]["raw"]["anilist"]["id"] == 11887  # trace.moe's own item
    assert result["quota"]["raw"]


def test_a_1080p_png_upscale_gives_the_same_answer_in_a_small_upload(
    cli: Cli, tracemoe: Any, samples: Path, tmp_path: Path
) -> None:
    big = tmp_path / "upscaled.png"
    Image.open(samples / "tinted-good.jpg").convert("RGB").resize(
        (1920, 1080), Image.Resampling.LANCZOS
    ).save(big)
    assert big.stat().st_size > 500_000
    done, result = search_json(cli, tracemoe, big, "-p", "tracemoe")
    assert done.returncode == 0, done.stderr
    assert_kokoro_connect_ep5(result)
    uploads = tracemoe.app.state.emulator.upload_sizes
    assert len(uploads) == 1
    assert uploads[0] <= 100_000


def test_stdin_and_the_cache(cli: Cli, tracemoe: Any, samples: Path) -> None:
    data = (samples / "tinted-good.jpg").read_bytes()
    first = cli(
        "search", "-", "--json", "-p", "tracemoe", env={"ANISEARCH_TRACEMOE_URL": tracemoe.url}, stdin=data
    )
    assert first.returncode == 0, first.stderr
    # A re-encode of the same frame is the same search: answered from the cache, no quota spent.
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buffer, "PNG")
    again = cli(
        "search",
        "-",
        "--json",
        "-p",
        "tracemoe",
        env={"ANISEARCH_TRACEMOE_URL": tracemoe.url},
        stdin=buffer.getvalue(),
    )
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["cached"] is True
    assert_kokoro_connect_ep5(result)
    assert tracemoe.app.state.emulator.search_requests == 1


def test_a_text_file_is_bad_input_and_sends_nothing(cli: Cli, tracemoe: Any, tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("these are my notes, not a screenshot\n")
    done = cli("search", str(text), env={"ANISEARCH_TRACEMOE_URL": tracemoe.url})
    assert done.returncode == 3
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("anisearch: error:")
    assert "not an image" in lines[0]
    assert "Traceback" not in done.stderr
    assert tracemoe.app.state.emulator.search_requests == 0


def test_missing_file_and_unknown_provider_are_clear(
    cli: Cli, tracemoe: Any, samples: Path, tmp_path: Path
) -> None:
    missing = cli("search", str(tmp_path / "nope.png"))
    assert missing.returncode == 3
    assert "no such file" in missing.stderr
    unknown = cli("search", str(samples / "tinted-good.jpg"), "-p", "tracemo")
    assert unknown.returncode == 2
    assert "known providers:" in unknown.stderr
    assert "tracemoe" in unknown.stderr


def test_quota_after_a_search_shows_the_upstream_count(cli: Cli, tracemoe: Any, samples: Path) -> None:
    env = {"ANISEARCH_TRACEMOE_URL": tracemoe.url, "ANISEARCH_PROVIDERS": "tracemoe"}
    assert cli("search", str(samples / "tinted-good.jpg"), env=env).returncode == 0
    done = cli("quota", "tracemoe", "--json", env=env)
    assert done.returncode == 0, done.stderr
    windows = {q["window"]: q for q in json.loads(done.stdout)}
    assert windows["rolling-24h"]["limit"] == 100
    assert windows["rolling-24h"]["used"] == 1
    refreshed = cli("quota", "tracemoe", "--refresh", "--json", env=env)
    assert refreshed.returncode == 0, refreshed.stderr
    body = json.loads(refreshed.stdout)
    day = next(q for q in body if q["window"] == "rolling-24h")
    assert (day["used"], day["concurrency"], day["source"]) == (1, 1, "upstream")
    assert "127.0.0.1" not in refreshed.stdout  # the caller's address (/me `id`) is never shown


def test_providers_lists_the_registered_ones(cli: Cli, tracemoe: Any) -> None:
    done = cli("providers", "--json", env={"ANISEARCH_TRACEMOE_URL": tracemoe.url})
    assert done.returncode == 0, done.stderr
    infos = {p["name"]: p for p in json.loads(done.stdout)}
    assert infos["tracemoe"]["base_url"] == tracemoe.url
    assert infos["tracemoe"]["enabled"] is True
    assert "upload" in infos["tracemoe"]["capabilities"]
