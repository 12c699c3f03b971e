"""End to end: the legacy whatanime.ga provider through the CLI and the engine, against its emulator."""

from __future__ import annotations

import io
import json
import random
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from tests.cli_runner import run_in_process
from tests.ledger.test_acceptance import MovingClock, skipped_until

from anisearch import Client, Settings
from anisearch._cli import _common
from anisearch._sdk import _base as sdk_base
from anisearch_emulators.tracemoe import create_app as tracemoe_app
from anisearch_emulators.whatanime_ga import Allowance
from anisearch_emulators.whatanime_ga import create_app as legacy_app

pytestmark = pytest.mark.e2e

Cli = Callable[..., "subprocess.CompletedProcess[str]"]
"""Runs ``anisearch ARGS``: in process here (see ``cli_runner``); conftest's ``cli`` starts a process."""


@pytest.fixture
def cli() -> Cli:
    return run_in_process


def test_the_legacy_api_identifies_the_screenshot(
    cli: Cli, emulated: Callable[[Any], Any], samples: Path
) -> None:
    legacy = emulated(legacy_app())
    env = {"ANISEARCH_WHATANIME_GA_URL": legacy.url}
    done = cli("search", str(samples / "tinted-good.jpg"), "-p", "whatanime-ga", "--json", env=env)
    assert done.returncode == 0, done.stderr
    best = json.loads(done.stdout)["hits"][0]
    assert (best["provider"], best["anilist_id"], best["episode"]) == ("whatanime-ga", 11887, 5)
    assert best["start_seconds"] <= 1175
    assert best["end_seconds"] >= 1169
    assert best["title"]["chinese"]


def test_an_8_mb_photo_is_re_encoded_under_the_1_mb_body_limit(
    cli: Cli, emulated: Callable[[Any], Any], samples: Path, tmp_path: Path
) -> None:
    legacy = emulated(legacy_app())
    # The screenshot, upscaled to 4000 px and sprinkled with noise: a large, hard-to-compress photo.
    photo = Image.open(samples / "tinted-good.jpg").convert("RGB").resize((4000, 2250))
    rng = random.Random(7)
    noise = Image.frombytes("L", photo.size, rng.randbytes(photo.width * photo.height))
    photo = Image.blend(photo, Image.merge("RGB", (noise, noise, noise)), 0.08)
    path = tmp_path / "photo.jpg"
    photo.save(path, quality=100, subsampling=0)
    assert path.stat().st_size > 8_000_000
    done = cli(
        "search", str(path), "-p", "whatanime-ga", "--json", env={"ANISEARCH_WHATANIME_GA_URL": legacy.url}
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["hits"][0]["anilist_id"] == 11887
    sizes = legacy.app.state.emulator.body_sizes
    assert len(sizes) == 1
    assert sizes[0] <= 1_000_000


def test_the_eleventh_search_in_a_minute_is_not_sent(
    cli: Cli, emulated: Callable[[Any], Any], samples: Path
) -> None:
    legacy = emulated(legacy_app())
    settings = Settings.load(
        providers=["whatanime-ga"], provider_options={"whatanime-ga": {"url": legacy.url}}
    )
    base = Image.open(samples / "tinted-good.jpg").convert("RGB")
    with Client(settings, _common._transport()) as client:  # where the commands send: the emulator
        for shade in range(10):
            buffer = io.BytesIO()
            base.point([min(255, v + shade) for v in range(256)] * 3).save(buffer, "PNG")
            assert client.search(buffer.getvalue(), cache=False).provider == "whatanime-ga"
    assert legacy.app.state.emulator.search_requests == 10
    done = cli(
        "search",
        str(samples / "tinted-good.jpg"),
        "-p",
        "whatanime-ga",
        "--no-cache",
        env={"ANISEARCH_WHATANIME_GA_URL": legacy.url},
    )
    assert done.returncode == 4
    assert "whatanime-ga skipped: rate limited until " in done.stderr  # a per-minute limit is a rate limit
    assert legacy.app.state.emulator.search_requests == 10


def test_a_rate_limited_legacy_server_falls_back_to_tracemoe(
    cli: Cli, emulated: Callable[[Any], Any], samples: Path
) -> None:
    from anisearch_emulators.whatanime_ga import Allowance

    legacy = emulated(legacy_app(guest=Allowance(limit=0)))
    trace = emulated(tracemoe_app())
    env = {"ANISEARCH_WHATANIME_GA_URL": legacy.url, "ANISEARCH_TRACEMOE_URL": trace.url}
    image = str(samples / "tinted-good.jpg")
    done = cli("search", image, "-p", "whatanime-ga", "-p", "tracemoe", "--json", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["provider"] == "tracemoe"
    first = result["attempts"][0]
    assert (first["provider"], first["outcome"], first["error"], first["status_code"]) == (
        "whatanime-ga",
        "failed",
        "RateLimitedError",
        429,
    )
    # The cooldown is remembered: the next run does not ask the legacy server at all.
    again = cli("search", image, "-p", "whatanime-ga", "-p", "tracemoe", "--json", "--no-cache", env=env)
    assert json.loads(again.stdout)["attempts"][0]["outcome"] == "skipped"
    assert legacy.app.state.emulator.search_requests == 1


def shades(samples: Path, count: int) -> list[bytes]:
    """``count`` different small pictures (so no search is merged or cached)."""
    base = Image.open(samples / "tinted-good.jpg").convert("RGB").resize((160, 90))
    out = []
    for shade in range(count):
        buffer = io.BytesIO()
        base.point([min(255, v + shade) for v in range(256)] * 3).save(buffer, "JPEG")
        out.append(buffer.getvalue())
    return out


@pytest.fixture
def day_of_three(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[MovingClock, Any, Client]:
    """A legacy server allowing 3 searches a day, its client on a SQLite ledger in UTC, one moving clock."""
    clock = MovingClock(hour=10)
    monkeypatch.setattr(sdk_base, "_utcnow", clock)
    app = legacy_app(clock=clock.epoch, guest=Allowance(quota=3))
    settings = Settings.load(
        providers=["whatanime-ga"],
        provider_options={"whatanime-ga": {"url": "http://legacy.test"}},
        ledger=f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
    )
    return clock, app, Client(settings, httpx.ASGITransport(app=app), clock=clock)


def test_a_spent_day_frees_when_the_servers_counter_expires_not_at_midnight(
    day_of_three: tuple[MovingClock, Any, Client], samples: Path
) -> None:
    """The server's day is a counter with a 24 h TTL from its first search (10:00): at 00:01 it still
    refuses, so the search is skipped without a request (it was sent into a 429 from midnight on), and
    ``quota()`` says 3 of 3 used until 10:00 (it said limit None, 1 used); at 10:01 it is answered."""
    clock, app, client = day_of_three
    start = clock.now
    images = shades(samples, 5)
    with client:
        for image in images[:3]:
            assert client.search(image, cache=False).provider == "whatanime-ga"
            clock.now += timedelta(minutes=1)
        clock.now = start + timedelta(hours=14, minutes=1)  # 00:01 the next day
        skipped_until(client, images[3], start + timedelta(hours=24))
        assert app.state.emulator.search_requests == 3  # not one 429
        (day,) = [quota for quota in client.quota("whatanime-ga") if quota.window == "day"]
        assert (day.limit, day.used, day.remaining) == (3, 3, 0)
        assert day.resets_at == start + timedelta(hours=24)
        clock.now = start + timedelta(hours=24, minutes=1)
        assert client.search(images[4], cache=False).provider == "whatanime-ga"
    assert app.state.emulator.search_requests == 4


def test_searches_made_after_the_counters_first_free_with_it(
    day_of_three: tuple[MovingClock, Any, Client], samples: Path
) -> None:
    """Searches at 10:00, 20:00 and 09:00 the next day spend the day the server counts from 10:00; at
    10:01 its counter has expired, and the search is sent and answered (it was refused until midnight)."""
    clock, app, client = day_of_three
    start = clock.now
    images = shades(samples, 4)
    with client:
        for hours, image in zip((0, 10, 23), images, strict=False):
            clock.now = start + timedelta(hours=hours)
            assert client.search(image, cache=False).provider == "whatanime-ga"
        clock.now = start + timedelta(hours=24, minutes=1)
        assert client.search(images[3], cache=False).provider == "whatanime-ga"
        (day,) = [quota for quota in client.quota("whatanime-ga") if quota.window == "day"]
        assert (day.limit, day.used, day.remaining) == (3, 1, 2)
        assert day.resets_at == clock.now + timedelta(hours=24)  # the new counter's
    assert app.state.emulator.search_requests == 4
