"""The quota engine's promises, end to end over loopback HTTP against the trace.moe emulator.

- 200 concurrent searches in one process, or 8 processes x 25, against a quota of 40 send exactly 40
  requests: no 402, no 429, and the rest say when the first slot frees.
- A search killed with ``kill -9`` mid-request does not keep its slot: the next search on the same ledger
  answers within seconds, sent once the upstream is likely done with the killed one (no 402) as far as the
  waiting process's answer times tell.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image
from tests.cli_runner import run_in_process
from tests.forked import Job, run_forked

from anisearch import AllProvidersFailedError, AsyncClient, Client, QuotaExhaustedError, Settings
from anisearch_emulators.tracemoe import InjectedFailure
from anisearch_emulators.tracemoe import create_app as tracemoe_app

pytestmark = [pytest.mark.e2e]


def variants(samples: Path, count: int) -> list[bytes]:
    """``count`` different encodings of the demo frame (so no search is merged or cached), small so that
    preparing them costs little: these tests count requests."""
    base = Image.open(samples / "tinted-good.jpg").convert("RGB").resize((160, 90))
    out = []
    for index in range(count):
        buffer = io.BytesIO()
        base.save(buffer, "JPEG", quality=60 + index % 35, comment=str(index).encode())
        out.append(buffer.getvalue())
    return out


def settings(url: str, ledger: str) -> Settings:
    return Settings.load(providers=["tracemoe"], provider_options={"tracemoe": {"url": url}}, ledger=ledger)


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    return str(request.getfixturevalue("redis_url"))


def test_concurrent_searches_send_exactly_the_quota(
    live_server: Callable[[Any], Any], samples: Path, ledger_url: str
) -> None:
    trace = live_server(tracemoe_app(quota=40, latency=0.05, rate_limit=1_000_000, queue_size=1000))
    images = variants(samples, 200)
    outcomes: list[object] = []

    async def one(client: AsyncClient, data: bytes) -> None:
        try:
            outcomes.append(await client.search(data, cache=False))
        except AllProvidersFailedError as exc:
            outcomes.append(exc)

    async def main() -> None:
        async with AsyncClient(settings(trace.url, ledger_url)) as client, anyio.create_task_group() as group:
            for data in images:
                group.start_soon(one, client, data)

    started = datetime.now(UTC)
    anyio.run(main)
    log = trace.app.state.emulator.log
    assert [row.code for row in log].count(200) == 40
    assert [row.code for row in log if row.code != 200] == []  # not one 402 or 429
    failures = [o for o in outcomes if isinstance(o, AllProvidersFailedError)]
    assert len(failures) == len(images) - 40
    for failure in failures:
        spent = failure.exceptions[0]
        assert isinstance(spent, QuotaExhaustedError)
        assert spent.resets_at is not None  # the first counted search + 24 h
        assert started + timedelta(hours=24) <= spent.resets_at <= datetime.now(UTC) + timedelta(hours=24)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def shared_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    return str(request.getfixturevalue("redis_url"))


def test_a_search_killed_mid_request_frees_its_slot(
    live_server: Callable[[Any], Any], samples: Path, shared_ledger: str
) -> None:
    """The next search takes the slot once the upstream is likely done with the killed one: as long as
    the waiting process's answers took (3 s here, past the 2 s it assumes before timing any)."""
    trace = live_server(tracemoe_app(latency=3.0))
    env = {
        **os.environ,
        "ANISEARCH_TRACEMOE_URL": trace.url,
        "ANISEARCH_PROVIDERS": "tracemoe",
        "ANISEARCH_LEDGER": shared_ledger,
    }
    with Client(settings(trace.url, env["ANISEARCH_LEDGER"])) as client:
        client.search(samples / "border-bad.jpg", cache=False)  # this process times one answer
        victim = subprocess.Popen(
            [sys.executable, "-m", "anisearch", "search", str(samples / "tinted-good.jpg"), "--no-cache"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not any(trace.app.state.emulator.concurrent.values()):  # the request is at the upstream
            assert time.monotonic() < deadline, "the search never reached the emulator"
            assert victim.poll() is None
            time.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed = time.monotonic()
        result = client.search(samples / "tinted-good.jpg", cache=False)
    assert result.provider == "tracemoe"
    assert time.monotonic() - killed < 15  # within the lease the killed search held
    # the killed search ran on upstream to its end: the next one was sent after it, never into a 402
    assert [row.code for row in trace.app.state.emulator.log] == [200, 200, 200]


class MovingClock:
    """One fake clock for the client's ledger, the provider and the emulator, moved by hand; it starts at
    ``hour`` o'clock UTC on 2026-11-21."""

    def __init__(self, hour: int = 9) -> None:
        self.now = datetime(2026, 11, 21, hour, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def epoch(self) -> float:
        return self.now.timestamp()


def test_a_rolling_window_frees_a_day_after_each_search_without_a_refresh(
    live_server: Callable[[Any], Any], samples: Path, tmp_path: Path
) -> None:
    """Quota 3; searches at T, T+1h, T+2h; at T+23h skipped until T+24h; at T+24h01 sent and answered."""
    clock = MovingClock()
    start = clock.now
    trace = live_server(tracemoe_app(quota=3, clock=clock.epoch))
    images = variants(samples, 5)
    with Client(settings(trace.url, f"sqlite:///{tmp_path / 'ledger.sqlite3'}"), clock=clock) as client:
        for index in range(3):
            clock.now = start + timedelta(hours=index)
            assert client.search(images[index], cache=False).provider == "tracemoe"
        clock.now = start + timedelta(hours=23)
        skipped_until(client, images[3], start + timedelta(hours=24))
        assert trace.app.state.emulator.search_requests == 3  # skipped without a request
        clock.now = start + timedelta(hours=24, minutes=1)
        assert client.search(images[4], cache=False).provider == "tracemoe"
    # asked for free twice: at T+23h, whether the limit was raised since the count of T+2h (it was not);
    # at T+24h01, the freed slot confirmed before the search
    assert trace.app.state.emulator.requests["/me"] == 2
    assert [row.code for row in trace.app.state.emulator.log] == [200, 200, 200, 200]


def skipped_until(client: Client, image: bytes, resets_at: datetime) -> None:
    """Search ``image``: its only provider is skipped, unasked, as spent until ``resets_at``."""
    with pytest.raises(AllProvidersFailedError) as caught:
        client.search(image, cache=False)
    spent = caught.value.exceptions[0]
    assert isinstance(spent, QuotaExhaustedError)
    assert spent.resets_at == resets_at
    assert caught.value.attempts[0].outcome == "skipped"


class CheckedQuota:
    """trace.moe's emulator with its /me counted (``asked``) and, while ``failing``, failing: a 503, or
    ``wait`` seconds before the answer."""

    def __init__(self, trace: Any, *, wait: float = 0.0) -> None:
        self.trace, self.wait = trace, wait
        self.failing, self.asked = False, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/me":
            self.asked += 1
            if self.failing and not self.wait:
                headers = [(b"content-type", b"application/json")]
                await send({"type": "http.response.start", "status": 503, "headers": headers})
                await send({"type": "http.response.body", "body": b'{"error":"down"}'})
                return
            if self.failing:
                await anyio.sleep(self.wait)
        await self.trace(scope, receive, send)


def raise_the_limit(trace: Any, quota: int) -> None:
    """Give the running trace.moe emulator app ``trace`` a new quota: a paid tier."""
    import dataclasses
    import gc

    state = trace.state.emulator
    (emulator,) = [o for o in gc.get_objects() if type(o).__name__ == "_Emulator" and o.state is state]
    emulator.config = dataclasses.replace(emulator.config, quota=quota)


def spent_quarter_hour_ago(client: Client, clock: MovingClock, images: list[bytes]) -> None:
    """Spend the emulator's quota of 2, then move on a quarter of an hour: the count is old."""
    for image in images[:2]:
        client.search(image, cache=False)
    clock.now += timedelta(minutes=15)


def test_a_failing_quota_check_is_not_asked_before_every_search_of_a_spent_window(
    live_server: Callable[[Any], Any], samples: Path, tmp_path: Path
) -> None:
    """Quota 2, spent; a quarter of an hour later the count is old: the free /me is asked before the
    provider is skipped, but while /me fails, not before every search (it was, ten times for ten)."""
    clock = MovingClock()
    trace = tracemoe_app(quota=2, clock=clock.epoch)
    check = CheckedQuota(trace)
    server = live_server(check)
    images = variants(samples, 12)
    with Client(settings(server.url, f"sqlite:///{tmp_path / 'ledger.sqlite3'}"), clock=clock) as client:
        spent_quarter_hour_ago(client, clock, images)
        check.failing = True
        for image in images[2:]:
            with pytest.raises(AllProvidersFailedError):
                client.search(image, cache=False)
    assert check.asked == 1  # once, then a minute's pause: the ledger's own count decides
    assert trace.state.emulator.search_requests == 2  # and no search was wasted


def test_a_quota_check_that_hangs_pauses_even_searches_with_a_far_deadline(
    live_server: Callable[[Any], Any], samples: Path, tmp_path: Path
) -> None:
    """The gateway gives every search a 60 s deadline: a /me that hangs for the whole timeout is a failed
    check all the same, and is not waited for again before each search."""
    clock = MovingClock()
    check = CheckedQuota(tracemoe_app(quota=2, clock=clock.epoch), wait=3.0)
    server = live_server(check)
    images = variants(samples, 6)
    config = settings(server.url, f"sqlite:///{tmp_path / 'ledger.sqlite3'}").model_copy(
        update={"timeout": 1.0}
    )
    with Client(config, clock=clock) as client:
        spent_quarter_hour_ago(client, clock, images)
        check.failing = True
        for image in images[2:]:
            with pytest.raises(AllProvidersFailedError):
                client.search(image, cache=False, deadline=60)
    assert check.asked == 1


def test_a_quota_check_that_hangs_is_given_up_long_before_the_timeout(
    live_server: Callable[[Any], Any], samples: Path, tmp_path: Path
) -> None:
    """A /me that hangs held a search of a spent window for the whole 30 s timeout before it was skipped,
    in every new process (the pause after a failure is kept in memory): the free check gets 10 s."""
    clock = MovingClock()
    check = CheckedQuota(tracemoe_app(quota=2, clock=clock.epoch), wait=16.0)
    server = live_server(check)
    images = variants(samples, 3)
    with Client(settings(server.url, f"sqlite:///{tmp_path / 'ledger.sqlite3'}"), clock=clock) as client:
        spent_quarter_hour_ago(client, clock, images)
        check.failing = True
        started = time.monotonic()
        with pytest.raises(AllProvidersFailedError) as caught:
            client.search(images[2], cache=False)
        waited = time.monotonic() - started
    assert isinstance(caught.value.exceptions[0], QuotaExhaustedError)  # skipped on the ledger's count
    assert check.asked == 1
    assert waited < 14  # 10 s and the search's own steps; 16 s (the hang) before


def test_a_check_its_own_10_s_ended_pauses_though_the_search_had_a_moment_more(
    live_server: Callable[[Any], Any], samples: Path, tmp_path: Path
) -> None:
    """Searches with a 10.2 s deadline and a /me that hangs: the check's 10 s ran out first, a failed check,
    not one the search's deadline cut short; the next search does not wait for it again."""
    clock = MovingClock()
    check = CheckedQuota(tracemoe_app(quota=2, clock=clock.epoch), wait=12.0)
    server = live_server(check)
    images = variants(samples, 4)
    with Client(settings(server.url, f"sqlite:///{tmp_path / 'ledger.sqlite3'}"), clock=clock) as client:
        spent_quarter_hour_ago(client, clock, images)
        check.failing = True
        for image in images[2:]:
            with pytest.raises(AllProvidersFailedError):
                client.search(image, cache=False, deadline=10.2)
    assert check.asked == 1


def test_a_slow_quota_check_still_learns_a_raised_limit(
    live_server: Callable[[Any], Any], samples: Path, tmp_path: Path
) -> None:
    """A spent window, then a paid tier (limit 10) and a /me that answers in 6 s: the check waits for it,
    and the search is sent (a 5 s cap skipped it on the old count in every new process)."""
    clock = MovingClock()
    trace = tracemoe_app(quota=2, clock=clock.epoch)
    check = CheckedQuota(trace, wait=6.0)
    server = live_server(check)
    images = variants(samples, 3)
    with Client(settings(server.url, f"sqlite:///{tmp_path / 'ledger.sqlite3'}"), clock=clock) as client:
        spent_quarter_hour_ago(client, clock, images)
        raise_the_limit(trace, 10)
        check.failing = True
        assert client.search(images[2], cache=False).provider == "tracemoe"
    assert check.asked == 1


def test_a_quota_check_cut_short_by_a_searchs_deadline_pauses_nothing(
    live_server: Callable[[Any], Any], samples: Path, tmp_path: Path
) -> None:
    """A search whose own deadline ends before /me answers says nothing of /me: the next search, with time
    to spare, asks it and learns the raised limit (it was refused for a minute on the ledger's count)."""
    clock = MovingClock()
    trace = tracemoe_app(quota=2, clock=clock.epoch)
    check = CheckedQuota(trace, wait=1.0)
    server = live_server(check)
    images = variants(samples, 4)
    with Client(settings(server.url, f"sqlite:///{tmp_path / 'ledger.sqlite3'}"), clock=clock) as client:
        spent_quarter_hour_ago(client, clock, images)
        raise_the_limit(trace, 10)
        check.failing = True
        with pytest.raises(AllProvidersFailedError):
            client.search(images[2], cache=False, deadline=0.5)  # /me cannot answer within 0.5 s
        check.failing = False
        asked = check.asked
        assert client.search(images[3], cache=False).provider == "tracemoe"
    assert check.asked == asked + 1


def test_a_queue_full_storm_is_one_backoff_for_every_search(
    live_server: Callable[[Any], Any], samples: Path, tmp_path: Path
) -> None:
    """Five searches while every answer is 503 "queue full": the fleet probes on one growing backoff."""
    storm = [InjectedFailure(503, {"error": "Error: Search queue is full"})] * 100
    trace = live_server(tracemoe_app(failures=storm))
    images = variants(samples, 5)
    config = settings(trace.url, f"sqlite:///{tmp_path / 'ledger.sqlite3'}").model_copy(
        update={"timeout": 4.0}
    )
    failed: list[AllProvidersFailedError] = []

    async def one(client: AsyncClient, data: bytes) -> None:
        try:
            await client.search(data, cache=False)
        except AllProvidersFailedError as exc:
            failed.append(exc)

    async def main() -> None:
        async with AsyncClient(config) as client, anyio.create_task_group() as group:
            for data in images:
                group.start_soon(one, client, data)

    anyio.run(main)
    assert len(failed) == 5
    assert trace.app.state.emulator.search_requests <= 8  # not 5 searches x 4 tries


@pytest.mark.skipif(shutil.which("faketime") is None, reason="needs Debian's faketime (installed by .ci/run)")
def test_the_cli_a_day_later_under_faketime_finds_the_slot_free(
    live_server: Callable[[Any], Any], samples: Path, tmp_path: Path
) -> None:
    """The real command, its clock moved a day on by libfaketime; the emulator's clock moved to match.

    Today's two searches run in process (the first spends the slot, the second is skipped); the one a day
    later is a process of its own under faketime, sharing the SQLite ledger file."""
    shift = [0.0]
    trace = live_server(tracemoe_app(quota=1, clock=lambda: time.time() + shift[0]))  # a 24 h window
    settings = {
        "ANISEARCH_TRACEMOE_URL": trace.url,
        "ANISEARCH_PROVIDERS": "tracemoe",
        "ANISEARCH_LEDGER": f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
        "ANISEARCH_CACHE": "off",
    }
    image = str(samples / "tinted-good.jpg")
    first = run_in_process("search", image, env=settings)
    assert first.returncode == 0, first.stderr
    skipped = run_in_process("search", image, env=settings)
    assert skipped.returncode == 4
    assert "quota exhausted until" in skipped.stderr
    shift[0] = 86_400.0  # a day later for trace.moe too: its rolling window has freed the slot
    command = [sys.executable, "-m", "anisearch", "search", image]
    later = subprocess.run(
        ["faketime", "-f", "+1d", *command],
        env={**os.environ, **settings},
        capture_output=True,
        text=True,
        check=False,
    )
    assert later.returncode == 0, later.stderr
    assert trace.app.state.emulator.requests["/me"] == 1  # the freed slot was confirmed first
    assert [row.code for row in trace.app.state.emulator.log] == [200, 200]


WORKER = """
import io, json, sys
import anyio
import anisearch
from PIL import Image

url, ledger, count, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
options = {"tracemoe": {"url": url}}
settings = anisearch.Settings.load(providers=["tracemoe"], provider_options=options, ledger=ledger)

def image(n):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 36), (seed * 31 % 256, n * 17 % 256, 7)).save(buffer, "JPEG")
    return buffer.getvalue()

async def main():
    outcomes = []
    async with anisearch.AsyncClient(settings) as client:
        for n in range(count):
            try:
                await client.search(image(n), cache=False)
                outcomes.append("ok")
            except anisearch.AllProvidersFailedError as exc:
                outcomes.append(type(exc.exceptions[0]).__name__)
    print(json.dumps(outcomes))

anyio.run(main)
"""


def test_eight_processes_share_one_quota_exactly(
    live_server: Callable[[Any], Any], shared_ledger: str, tmp_path: Path
) -> None:
    """Eight processes (forked from one parent that imported anisearch once: see ``tests/forked.py``)."""
    trace = live_server(tracemoe_app(quota=40, latency=0.02, rate_limit=1_000_000, queue_size=1000))
    jobs = [Job([trace.url, shared_ledger, "25", str(seed)]) for seed in range(8)]
    outcomes: list[str] = []
    for worker in run_forked(WORKER, jobs, tmp_path / "processes", together=True):
        assert worker.returncode == 0, worker.stderr
        outcomes += json.loads(worker.stdout)
    codes = [row.code for row in trace.app.state.emulator.log]
    assert codes == [200] * 40  # exactly the quota, not one 402 or 429
    assert outcomes.count("ok") == 40
    assert outcomes.count("QuotaExhaustedError") == 8 * 25 - 40


def test_an_upstream_that_counts_a_search_down_late_refuses_few_searches(
    live_server: Callable[[Any], Any], samples: Path, tmp_path: Path
) -> None:
    """A trace.moe server before 2026-02-26 (a self-hosted one not updated) counts a search down only after
    an awaited database insert that follows its answer: a search sent the moment the slot is handed over
    meets "Concurrency limit exceeded". The client learns how long to wait from the first refusals,
    instead of meeting one (and backing off) at every hand-over."""
    trace = live_server(tracemoe_app(latency=0.05, log_seconds=0.1, quota=10**6, rate_limit=10**6))
    images = variants(samples, 16)

    async def main() -> None:
        ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
        async with AsyncClient(settings(trace.url, ledger)) as client, anyio.create_task_group() as group:
            for data in images:
                group.start_soon(partial(client.search, data, cache=False))

    anyio.run(main)
    codes = [row.code for row in trace.app.state.emulator.log]
    assert codes.count(200) == len(images)
    assert codes.count(402) <= 4, codes  # 50 ms, 100 ms, 200 ms: the insert's 100 ms is learnt
