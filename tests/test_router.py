"""The router's decisions, with scripted providers and a real in-memory ledger."""

from __future__ import annotations

import asyncio
import contextlib
import io
import ssl
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Self

import anyio
import anyio.lowlevel
import httpcore
import httpx
import pytest
import trustme
from PIL import Image

from anisearch import (
    AllProvidersFailedError,
    Attempt,
    AuthenticationError,
    Capabilities,
    ConcurrencyLimitError,
    Credential,
    Hit,
    ImageTooLargeError,
    InvalidImageError,
    LedgerError,
    ProviderAnswer,
    ProviderConnectionError,
    ProviderContext,
    ProviderError,
    ProviderServerError,
    ProviderTimeoutError,
    Quota,
    QuotaExhaustedError,
    RateLimitedError,
    SearchOptions,
    SearchQuery,
    SearchResult,
    UploadLimits,
    _router,
)
from anisearch._image import PreparedImage
from anisearch._ledger import Ledger, Refusal, Ticket, WindowSpec, open_ledger
from anisearch._ledger._windows import from_us, to_us
from anisearch._limits import search_deadline
from anisearch._plan import PlannedQuery, Route
from anisearch._router import Router, merge_hits
from anisearch._transport import ProviderTransport, tls_context

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


Step = Callable[[], ProviderAnswer]


class Scripted:
    """A provider whose parse_search plays a script of answers and errors, one per request."""

    default_order: ClassVar[bool] = True
    capabilities = Capabilities(upload=True)
    limits = UploadLimits()

    def __init__(self, name: str, *steps: Step | ProviderError, quota: Quota | None = None) -> None:
        self.name = name
        self.base_url = f"https://{name}.example"
        self.steps = list(steps)
        self.requests = 0
        self._quota = quota

    @classmethod
    def from_context(cls, context: ProviderContext) -> Self:  # pragma: no cover - not used by the router
        raise NotImplementedError

    @property
    def credential(self) -> Credential:
        return Credential()

    def assumed_quotas(self) -> list[Quota]:
        return []

    def search_request(self, query: SearchQuery) -> httpx.Request:
        return httpx.Request("POST", f"{self.base_url}/search")

    def parse_search(self, response: httpx.Response) -> ProviderAnswer:
        self.requests += 1
        step = self.steps.pop(0)
        if isinstance(step, ProviderError):
            raise step
        return step()

    def quota_request(self) -> httpx.Request | None:
        return None

    def parse_quota(self, response: httpx.Response) -> list[Quota]:
        return []

    def observe(self, response: httpx.Response) -> list[Quota]:
        return []

    def auth(self) -> httpx.Auth | None:
        return None


def answer(provider: str, *similarities: float, quota: Quota | None = None) -> Step:
    def build() -> ProviderAnswer:
        hits = [
            Hit(
                provider=provider,
                anilist_id=100 + i,
                episode=1,
                start_seconds=10.0,
                end_seconds=12.0,
                similarity=s,
            )
            for i, s in enumerate(similarities)
        ]
        return ProviderAnswer(hits=hits, frames_searched=1000, quota=quota)

    return build


async def send(provider: Any, request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, request=request)


WINDOWS = (WindowSpec("rolling-24h", span_seconds=86400),)
FITS = PreparedImage(data=b"\xff\xd8", mime_type="image/jpeg", width=1, height=1, digest="0")
"""A prepared image within every upload limit: sent as it is."""


@pytest.fixture
async def ledger() -> Ledger:
    return open_ledger("memory://", clock=lambda: datetime.now(UTC))  # a fresh one, not the process's


def router(ledger: Ledger, attempts: list[Attempt] | None = None, wait_seconds: float = 1) -> Router:
    return Router(
        ledger,
        send,
        wait_seconds=wait_seconds,
        lease_seconds=5,
        on_attempt=attempts.append if attempts is not None else None,
    )


def routes(*providers: Scripted) -> list[Route]:
    return [
        Route(provider=p, scope="guest", windows=WINDOWS, query=PlannedQuery(p, FITS, SearchOptions()))  # type: ignore[arg-type]
        for p in providers
    ]


async def test_first_provider_answers_and_the_rest_are_not_asked(ledger: Ledger) -> None:
    first, second = Scripted("one", answer("one", 0.97)), Scripted("two", answer("two", 0.99))
    result = await router(ledger).search(routes(first, second))
    assert result.provider == "one"
    assert [a.outcome for a in result.attempts] == ["ok"]
    assert second.requests == 0


async def test_spent_quota_falls_through_and_is_remembered(ledger: Ledger) -> None:
    spent = QuotaExhaustedError("Search quota depleted", provider="one", status_code=402)
    first = Scripted("one", spent)
    second = Scripted("two", answer("two", 0.95), answer("two", 0.95))
    await ledger.observe(
        "one", "guest", WINDOWS, [Quota(provider="one", limit=100, used=99, window="rolling-24h")]
    )
    result = await router(ledger).search(routes(first, second))
    assert result.provider == "two"
    assert [(a.provider, a.outcome, a.error) for a in result.attempts] == [
        ("one", "failed", "QuotaExhaustedError"),
        ("two", "ok", None),
    ]
    # The next search does not send to the spent provider at all, and says why.
    again = await router(ledger).search(routes(first, second))
    assert first.requests == 1
    skipped = again.attempts[0]
    assert (skipped.provider, skipped.outcome) == ("one", "skipped")
    assert skipped.reason is not None
    assert "quota exhausted until" in skipped.reason


async def test_rate_limit_sets_a_cooldown_for_retry_after(ledger: Ledger) -> None:
    limited = RateLimitedError("Too many requests", provider="one", status_code=429, retry_after=120)
    first = Scripted("one", limited)
    second = Scripted("two", answer("two", 0.95), answer("two", 0.95))
    await router(ledger).search(routes(first, second))
    refusal = await ledger.reserve("one", "guest", WINDOWS)
    assert isinstance(refusal, Refusal)
    assert refusal.kind == "rate"
    until = datetime.fromtimestamp(refusal.until / 1e6, UTC)
    assert timedelta(seconds=100) < until - datetime.now(UTC) <= timedelta(seconds=121)
    again = await router(ledger).search(routes(first, second))
    assert again.attempts[0].outcome == "skipped"
    assert first.requests == 1


async def test_a_busy_provider_is_waited_out_briefly_and_asked_again(ledger: Ledger) -> None:
    busy = ConcurrencyLimitError("Concurrency limit exceeded", provider="one", status_code=402)
    first = Scripted("one", busy, busy, answer("one", 0.93))
    result = await router(ledger, wait_seconds=5).search(routes(first))
    assert result.provider == "one"
    assert first.requests == 3


async def test_server_errors_fall_through_without_retry(ledger: Ledger) -> None:
    first = Scripted("one", ProviderServerError("Search failed", provider="one", status_code=500))
    second = Scripted("two", answer("two", 0.9))
    result = await router(ledger).search(routes(first, second))
    assert first.requests == 1
    assert result.attempts[0].reason == "Search failed"
    assert result.attempts[0].status_code == 500


async def test_every_provider_failing_raises_a_group_of_their_errors(ledger: Ledger) -> None:
    first = Scripted("one", AuthenticationError("Invalid API key", provider="one", status_code=403))
    second = Scripted("two", ProviderServerError("down", provider="two", status_code=503))
    with pytest.raises(AllProvidersFailedError) as caught:
        await router(ledger).search(routes(first, second))
    group = caught.value
    assert [type(e) for e in group.exceptions] == [AuthenticationError, ProviderServerError]
    assert [getattr(e, "provider", None) for e in group.exceptions] == ["one", "two"]
    auth_only = group.subgroup(AuthenticationError)
    assert auth_only is not None
    assert isinstance(auth_only, AllProvidersFailedError)


async def test_bad_input_stops_at_once(ledger: Ledger) -> None:
    first, second = Scripted("one"), Scripted("two", answer("two", 0.9))

    # A prepared image the upload limits make anisearch decode again, and it does not decode.
    broken = PreparedImage(data=b"not an image", mime_type="image/bmp", width=1, height=1, digest="0")
    planned = [
        Route(provider=p, scope="guest", windows=WINDOWS, query=PlannedQuery(p, broken, SearchOptions()))  # type: ignore[arg-type]
        for p in (first, second)
    ]
    with pytest.raises(InvalidImageError):
        await router(ledger).search(planned)
    assert second.requests == 0


async def test_weak_answer_asks_for_a_second_opinion_and_keeps_the_strongest(ledger: Ledger) -> None:
    first = Scripted("one", answer("one", 0.70))
    second = Scripted("two", answer("two", 0.80))
    result = await router(ledger).search(routes(first, second), min_similarity=0.9)
    assert result.provider == "two"
    assert result.best is not None
    assert result.best.similarity == 0.80
    assert [a.provider for a in result.attempts] == ["one", "two"]
    assert result.attempts[0].reason is not None
    assert "0.700 < 0.9" in result.attempts[0].reason


def cached_weak(name: str, similarity: float) -> Callable[[Route], Awaitable[Any]]:
    """An ``answered`` callback: provider ``name``'s answer is in the result cache, with one weak hit."""

    async def answered(route: Route) -> Any:
        if route.provider.name != name:
            return None
        hit = Hit(provider=name, anilist_id=1, episode=1, similarity=similarity)
        return SearchResult(hits=[hit], provider=name, cached=True)

    return answered


async def test_a_weak_cached_answer_that_asks_the_next_provider_is_not_cached(ledger: Ledger) -> None:
    first = Scripted("one")
    second = Scripted("two", answer("two", 0.20))
    for strategy in ("fallback", "fanout"):
        result = await router(ledger).search(
            routes(first, second), strategy=strategy, min_similarity=0.9, answered=cached_weak("one", 0.5)
        )
        assert result.best is not None
        assert (result.best.provider, result.best.similarity) == ("one", 0.5)  # the strongest is cached
        assert [a.outcome for a in result.attempts] == ["cached", "ok"]
        assert result.cached is False  # yet "two" was sent a request: quota was spent
        second.steps.append(answer("two", 0.20))
    assert (first.requests, second.requests) == (0, 2)


async def test_a_weak_cached_answer_whose_next_provider_is_skipped_is_cached(ledger: Ledger) -> None:
    ticket = await ledger.reserve("two", "guest", WINDOWS)
    assert isinstance(ticket, Ticket)
    await ledger.settle(
        ticket, "uncharged", cooldown=(datetime.now(UTC) + timedelta(hours=5), "spent", "quota")
    )
    first, second = Scripted("one"), Scripted("two")
    result = await router(ledger).search(
        routes(first, second), min_similarity=0.9, answered=cached_weak("one", 0.5)
    )
    assert [a.outcome for a in result.attempts] == ["cached", "skipped"]
    assert result.cached is True  # nobody was sent a request
    assert (first.requests, second.requests) == (0, 0)


async def test_a_weak_answer_says_it_asked_the_next_only_when_there_is_a_next(ledger: Ledger) -> None:
    first, second = Scripted("one", answer("one", 0.70)), Scripted("two", answer("two", 0.60))
    result = await router(ledger).search(routes(first, second), min_similarity=0.9)
    assert [a.reason for a in result.attempts] == [
        "best similarity 0.700 < 0.9: asked the next",
        "best similarity 0.600 < 0.9: no other provider to ask",
    ]
    alone = await router(ledger).search(routes(Scripted("one", answer("one", 0.0))), min_similarity=0.9)
    assert [a.reason for a in alone.attempts] == ["best similarity 0.000 < 0.9: no other provider to ask"]
    cached = await router(ledger).search(
        routes(Scripted("one")), min_similarity=0.9, answered=cached_weak("one", 0.5)
    )
    assert [a.reason for a in cached.attempts] == [
        "answered from the cache; best similarity 0.500 < 0.9: no other provider to ask"
    ]


async def test_body_quota_is_the_truth_and_local_successes_are_counted(ledger: Ledger) -> None:
    told = Quota(provider="one", limit=3, used=2, remaining=1, window="rolling-24h")
    first = Scripted("one", answer("one", 0.95, quota=told), answer("one", 0.95))
    second = Scripted("two", answer("two", 0.9))
    await router(ledger).search(routes(first, second))
    state = [q for q in await ledger.snapshot("one") if q.window == "rolling-24h"]
    assert state[0].used == 2
    assert state[0].remaining == 1
    await router(ledger).search(routes(first, second))  # a success without a body count
    third = await router(ledger).search(routes(first, second))
    assert third.provider == "two"
    assert third.attempts[0].outcome == "skipped"


async def test_fanout_asks_everyone_and_merges_the_same_scene(ledger: Ledger) -> None:
    first = Scripted("one", answer("one", 0.95))
    second = Scripted("two", answer("two", 0.97, 0.5))
    seen: list[Attempt] = []
    result = await router(ledger, seen).search(routes(first, second), strategy="fanout")
    assert first.requests == second.requests == 1
    assert [h.similarity for h in result.hits] == [0.97, 0.5]  # 0.95 merged into the 0.97 twin
    assert sorted(a.provider for a in seen) == ["one", "two"]


def test_merge_keeps_distinct_scenes_and_fills_titles() -> None:
    from anisearch import Title

    a = Hit(provider="x", anilist_id=1, episode=5, start_seconds=100, end_seconds=104, similarity=0.9)
    b = Hit(
        provider="y",
        anilist_id=1,
        episode=5,
        start_seconds=103,
        end_seconds=108,
        similarity=0.8,
        title=Title(romaji="Kokoro Connect"),
    )
    c = Hit(provider="y", anilist_id=1, episode=5, start_seconds=900, end_seconds=905, similarity=0.85)
    d = Hit(provider="y", anilist_id=1, episode=6, start_seconds=100, end_seconds=104, similarity=0.95)
    merged = merge_hits([a, b, c, d])
    assert [(h.episode, h.start_seconds) for h in merged] == [(6, 100), (5, 100), (5, 900)]
    assert merged[1].title is not None
    assert merged[1].title.romaji == "Kokoro Connect"


async def test_anilist_filter_is_applied_to_every_answer(ledger: Ledger) -> None:
    first = Scripted("one", answer("one", 0.9, 0.8))
    route = Route(
        provider=first,  # type: ignore[arg-type]
        scope="guest",
        windows=WINDOWS,
        query=PlannedQuery(first, FITS, SearchOptions(anilist_id=101)),  # type: ignore[arg-type]
    )
    result = await router(ledger).search([route])
    assert [h.anilist_id for h in result.hits] == [101]


async def test_the_failure_group_lists_every_attempt(ledger: Ledger) -> None:
    ticket = await ledger.reserve("one", "guest", WINDOWS)
    assert isinstance(ticket, Ticket)
    await ledger.settle(
        ticket, "uncharged", cooldown=(datetime.now(UTC) + timedelta(minutes=5), "HTTP 429", "rate")
    )
    second = Scripted("two", ProviderServerError("down", provider="two", status_code=503))
    with pytest.raises(AllProvidersFailedError) as caught:
        await router(ledger).search(routes(Scripted("one"), second))
    assert [(a.provider, a.outcome) for a in caught.value.attempts] == [("one", "skipped"), ("two", "failed")]
    assert (caught.value.attempts[0].reason or "").startswith("rate limited until ")
    assert caught.value.attempts[0].error == "RateLimitedError"
    errors = caught.value.errors  # the group's exceptions, typed
    assert [(type(e).__name__, e.provider) for e in errors] == [
        ("RateLimitedError", "one"),
        ("ProviderServerError", "two"),
    ]
    spent = caught.value.subgroup(ProviderServerError)
    assert isinstance(spent, AllProvidersFailedError)  # split and subgroup keep the class and its attempts
    assert [e.status_code for e in spent.errors] == [503]
    assert spent.attempts == caught.value.attempts


# ---------------------------------------------------------------------------------------------- quota engine

DAY_AND_HOUR = (
    WindowSpec("day", calendar="day", limit=10),
    WindowSpec("hour", span_seconds=3600, kind="rate", limit=100),
)


def windowed(*providers: Scripted, windows: tuple[WindowSpec, ...] = DAY_AND_HOUR) -> list[Route]:
    return [
        Route(provider=p, scope="guest", windows=windows, query=PlannedQuery(p, FITS, SearchOptions()))  # type: ignore[arg-type]
        for p in providers
    ]


class Observing(Scripted):
    """A scripted provider whose every response also says something about its windows."""

    def __init__(self, name: str, *steps: Step | ProviderError, observed: list[Quota]) -> None:
        super().__init__(name, *steps)
        self.observed = observed

    def observe(self, response: httpx.Response) -> list[Quota]:
        return self.observed


async def test_every_window_counts_a_search_whatever_window_the_answer_reported(ledger: Ledger) -> None:
    day = Quota(provider="one", window="day", remaining=500)  # purchased credits: the day is far from spent
    steps = [answer("one", 0.95, quota=day) for _ in range(100)]
    first = Scripted("one", *steps)
    for _ in range(100):
        assert (await router(ledger).search(windowed(first), strategy="fallback")).provider == "one"
    with pytest.raises(AllProvidersFailedError) as caught:
        await router(ledger).search(windowed(first))
    assert first.requests == 100  # the 101st was not sent
    assert isinstance(caught.value.exceptions[0], RateLimitedError)
    assert caught.value.attempts[0].outcome == "skipped"


async def test_retry_after_sets_the_cooldown_exactly(ledger: Ledger) -> None:
    told = Quota(
        provider="one", window="hour", remaining=0, cooldown_until=datetime.now(UTC), source="headers"
    )
    limited = RateLimitedError("Too many requests", provider="one", status_code=429, retry_after=42)
    first = Observing("one", limited, observed=[told])
    await router(ledger).search(windowed(first, Scripted("two", answer("two", 0.9))))
    refusal = await ledger.reserve("one", "guest", DAY_AND_HOUR)
    assert isinstance(refusal, Refusal)
    left = datetime.fromtimestamp(refusal.until / 1e6, UTC) - datetime.now(UTC)
    assert (refusal.kind, round(left.total_seconds())) == ("rate", 42)


async def test_spent_credits_mark_only_the_credit_window_and_keep_their_class(ledger: Ledger) -> None:
    spent = QuotaExhaustedError("Insufficient credits", provider="one", status_code=402, window="day")
    told = Quota(provider="one", window="day", remaining=0)
    first = Observing("one", spent, observed=[told])
    second = Scripted("two", answer("two", 0.9), answer("two", 0.9))
    result = await router(ledger).search(windowed(first, second))
    assert result.attempts[0].error == "QuotaExhaustedError"
    again = await router(ledger).search(windowed(first, second))
    assert (again.attempts[0].outcome, again.attempts[0].error) == ("skipped", "QuotaExhaustedError")
    assert first.requests == 1
    hour = next(q for q in await ledger.snapshot("one", lambda _: DAY_AND_HOUR) if q.window == "hour")
    assert (hour.limit, hour.used, hour.remaining) == (100, 1, 99)  # counted, not marked spent


async def test_a_request_that_was_sent_is_counted_and_never_resent(ledger: Ledger) -> None:
    calls: list[str] = []

    def dropping(cause: Exception) -> Callable[[Any, httpx.Request], Any]:
        async def sender(provider: Any, request: httpx.Request) -> httpx.Response:
            calls.append(provider.name)
            raise ProviderConnectionError("connection dropped", provider=provider.name) from cause

        return sender

    windows = (WindowSpec("rolling-24h", span_seconds=86400, limit=5),)
    sent = Router(ledger, dropping(httpx.ReadError("reset")), wait_seconds=1)
    with pytest.raises(AllProvidersFailedError):
        await sent.search(windowed(Scripted("one"), windows=windows))
    assert calls == ["one"]  # after the request left: no retry
    assert (await ledger.snapshot("one", lambda _: windows))[0].used == 1  # possibly charged: counted
    calls.clear()
    unsent = Router(ledger, dropping(httpx.ConnectError("refused")), wait_seconds=1)
    with pytest.raises(AllProvidersFailedError):
        await unsent.search(windowed(Scripted("two"), windows=windows))
    assert calls == ["two", "two", "two"]  # never left: retried, and counted nowhere
    assert (await ledger.snapshot("two", lambda _: windows))[0].used == 0


class Numbered(Scripted):
    """A provider whose every request says which build of it this is, and which notes each build."""

    def __init__(self, name: str, *steps: Step | ProviderError, events: list[str]) -> None:
        super().__init__(name, *steps)
        self.events = events

    def search_request(self, query: SearchQuery) -> httpx.Request:
        self.events.append("built")
        build = str(self.events.count("built"))
        return httpx.Request("POST", f"{self.base_url}/search", headers={"x-build": build})


async def test_the_first_attempt_sends_the_request_built_before_the_slot_and_each_retry_a_fresh_one(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    reserve = type(ledger).reserve

    async def reserving(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        events.append("reserved")
        return await reserve(self, *args, **kwargs)

    async def refused_twice(provider: Any, request: httpx.Request) -> httpx.Response:
        events.append(f"sent {request.headers['x-build']}")
        if events.count("built") < 3:  # a refused connection: the request never left
            raise ProviderConnectionError("refused", provider=provider.name) from httpx.ConnectError("no")
        return httpx.Response(200, request=request)

    monkeypatch.setattr(type(ledger), "reserve", reserving)
    provider = Numbered("one", answer("one", 0.9), events=events)
    result = await Router(ledger, refused_twice, wait_seconds=1).search(windowed(provider))
    assert result.provider == "one"
    assert events == ["built", "reserved", "sent 1", "built", "sent 2", "built", "sent 3"]


class RefusesLocally(Scripted):
    """A provider whose own size guard refuses the image while building the request."""

    def search_request(self, query: SearchQuery) -> httpx.Request:
        raise ImageTooLargeError("the image is over 25 MiB", size_bytes=26 << 20, limit_bytes=25 << 20)


async def test_a_request_refused_while_being_built_reserves_nothing_and_falls_through(
    ledger: Ledger,
) -> None:
    windows = (WindowSpec("rolling-24h", span_seconds=86400, limit=5),)
    attempts: list[Attempt] = []
    result = await router(ledger, attempts).search(
        windowed(RefusesLocally("one"), Scripted("two", answer("two", 0.9)), windows=windows)
    )
    assert result.provider == "two"
    assert [(a.provider, a.outcome, a.error) for a in attempts] == [
        ("one", "failed", "ImageTooLargeError"),
        ("two", "ok", None),
    ]
    counted = [quota.used for quota in await ledger.snapshot("one", lambda _: windows)]
    assert counted in ([], [0])  # never sent: never counted
    assert isinstance(await ledger.reserve("one", "guest", windows), Ticket)  # and its one slot is free


class ShrinksLimitOnRetry(Scripted):
    """A provider whose size guard refuses the image the second time the request is built."""

    built = 0

    def search_request(self, query: SearchQuery) -> httpx.Request:
        self.built += 1
        if self.built > 1:
            raise ImageTooLargeError("the image is over the upload limit", size_bytes=2, limit_bytes=1)
        return httpx.Request("POST", f"{self.base_url}/search")


async def test_a_retry_refused_while_being_built_is_not_counted_as_charged(ledger: Ledger) -> None:
    async def refused(provider: Any, request: httpx.Request) -> httpx.Response:
        raise ProviderConnectionError("refused", provider=provider.name) from httpx.ConnectError("no")

    windows = (WindowSpec("rolling-24h", span_seconds=86400, limit=5),)
    with pytest.raises(AllProvidersFailedError) as caught:
        await Router(ledger, refused, wait_seconds=1).search(
            windowed(ShrinksLimitOnRetry("one"), windows=windows)
        )
    assert [type(e).__name__ for e in caught.value.exceptions] == ["ImageTooLargeError"]
    assert (await ledger.snapshot("one", lambda _: windows))[0].used == 0  # nothing left: nothing charged


async def test_absurd_numbers_and_parser_crashes_fall_through(ledger: Ledger) -> None:
    negative = Quota(provider="one", window="rolling-24h", limit=-5)
    first = Scripted("one", answer("one", 0.99, quota=negative))

    def deep() -> ProviderAnswer:
        raise RecursionError("maximum recursion depth exceeded")

    second = Scripted("two", deep)
    third = Scripted("three", answer("three", 0.9))
    result = await router(ledger).search(routes(first, second, third))
    assert result.provider == "three"
    assert [(a.provider, a.error) for a in result.attempts[:2]] == [
        ("one", "UpstreamResponseError"),
        ("two", "UpstreamResponseError"),
    ]


async def test_except_star_keeps_the_attempts(ledger: Ledger) -> None:
    first = Scripted("one", QuotaExhaustedError("Search quota depleted", provider="one", status_code=402))
    caught: list[BaseExceptionGroup[QuotaExhaustedError]] = []
    try:
        await router(ledger).search(routes(first))
    except* QuotaExhaustedError as spent:
        caught.append(spent)
    assert isinstance(caught[0], AllProvidersFailedError)
    assert [a.provider for a in caught[0].attempts] == ["one"]


async def test_an_answer_served_as_a_guest_says_so_in_its_attempt(ledger: Ledger) -> None:
    as_guest = Quota(provider="one", scope="guest", window="day", remaining=4)
    first = Scripted("one", answer("one", 0.95, quota=as_guest), answer("one", 0.95))
    session = [
        Route(
            provider=first,  # type: ignore[arg-type]
            scope="session:0123456789abcdef",
            windows=DAY_AND_HOUR,
            query=PlannedQuery(first, FITS, SearchOptions()),  # type: ignore[arg-type]
        )
    ]
    dead = await router(ledger).search(session)
    assert dead.attempts[0].scope == "guest"  # the session had died: the site answered a guest
    alive = await router(ledger).search(session)
    assert alive.attempts[0].scope == "session"


async def test_a_search_outliving_a_third_of_its_lease_keeps_renewing_its_slot(ledger: Ledger) -> None:
    renewed: list[datetime] = []
    original = ledger.renew

    async def counting(ticket: Ticket, lease_seconds: float) -> bool:
        renewed.append(datetime.now(UTC))
        return await original(ticket, lease_seconds)

    ledger.renew = counting  # type: ignore[method-assign]
    held: list[object] = []

    async def slow(_provider: Any, request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.9)  # past the 0.6 s lease: only a renewal keeps the slot
        held.append(await ledger.reserve("one", "guest", WINDOWS))
        return httpx.Response(200, request=request)

    slow_router = Router(ledger, slow, wait_seconds=2, lease_seconds=0.6)
    result = await slow_router.search(routes(Scripted("one", answer("one", 0.9))))
    assert result.provider == "one"
    assert renewed  # from 0.2 s on, every 0.2 s
    assert isinstance(held[0], Refusal)  # the slot was still this search's
    assert held[0].kind == "concurrency"


async def test_a_quick_search_starts_no_renewal(ledger: Ledger) -> None:
    renewed: list[Ticket] = []

    async def counting(ticket: Ticket, lease_seconds: float) -> bool:
        renewed.append(ticket)
        return lease_seconds > 0

    ledger.renew = counting  # type: ignore[method-assign]
    await router(ledger).search(routes(Scripted("one", answer("one", 0.9))))
    assert renewed == []


async def test_a_slot_handed_over_too_early_is_handed_over_at_settle_from_then_on(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    freed: list[Ticket] = []
    original = ledger.free_slot

    async def counting(ticket: Ticket) -> None:
        freed.append(ticket)
        await original(ticket)

    monkeypatch.setattr(ledger, "free_slot", counting)
    monkeypatch.setattr("anisearch._ledger._logic.busy_backoff_seconds", lambda streak, jitter: 0.05)
    too_soon = ConcurrencyLimitError("Concurrency limit exceeded", provider="one", status_code=402)
    provider = Scripted("one", *[answer("one", 0.9)] * 2, too_soon, *[answer("one", 0.9)] * 3)

    async def slow(_provider: Any, request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.02)  # long enough that the others queue for the slot
        return httpx.Response(200, request=request)

    learnt: set[str] = set()  # what one client's routers share
    the_router = Router(ledger, slow, wait_seconds=5, lease_seconds=5, settle_first=learnt)
    results: list[object] = []

    async def one(router: Router) -> None:
        results.append(await router.search(routes(provider)))

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(one, the_router)
    assert len(results) == 5  # every search answered, the refused one after the backoff
    assert provider.requests == 6
    assert len(freed) == 3  # handed over early up to the refused third request, never after it
    assert learnt == {"one"}
    provider.steps = [answer("one", 0.9)] * 3
    next_router = Router(ledger, slow, wait_seconds=5, lease_seconds=5, settle_first=learnt)
    async with anyio.create_task_group() as group:  # the client's next searches, with routers of their own
        for _ in range(3):
            group.start_soon(one, next_router)
    assert len(results) == 8
    assert len(freed) == 3  # still handed over at settle only


async def traced_upstream(request: httpx.Request) -> None:
    """Report a request's progress as httpcore's transports do (the router hands a slot over by it)."""
    await anyio.lowlevel.checkpoint()  # as a transport takes a connection from its pool
    await request.extensions["trace"]("http11.send_request_headers.started", {})
    await request.extensions["trace"]("http11.send_request_body.complete", {})


def recording(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What reaches ``ledger``: ``asking``, then ``ticket`` or ``refused``, per reserve; ``settled`` per
    settle."""
    events: list[str] = []
    settle, reserve = ledger.settle, ledger.reserve

    async def settling(ticket: Ticket, *args: Any, **kwargs: Any) -> None:
        await settle(ticket, *args, **kwargs)
        events.append("settled")

    async def reserving(*args: Any, **kwargs: Any) -> Any:
        events.append("asking")
        result = await reserve(*args, **kwargs)
        events.append("ticket" if isinstance(result, Ticket) else "refused")
        return result

    monkeypatch.setattr(ledger, "settle", settling)
    monkeypatch.setattr(ledger, "reserve", reserving)
    return events


async def until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while not condition():
            await anyio.sleep(0.001)


def queued(ledger: Ledger, events: list[str]) -> bool:
    """Both other searches queue for the slot, one in the gate, the other at it, and none is asking."""
    gates = [gate for key, gate in list(_router._GATES.items()) if key[0] == id(ledger)]
    answered = events.count("ticket") + events.count("refused")
    waiting = any(gate.locked() and gate.statistics().tasks_waiting >= 1 for gate in gates)
    return waiting and events.count("asking") == answered


def handed_over(
    ledger: Ledger, events: list[str], second: Callable[[], Awaitable[None]]
) -> tuple[Callable[[Any, httpx.Request], Awaitable[httpx.Response]], list[int]]:
    """An upstream for three searches on one slot, and the calls it took. The first answers once the other
    two queue for the slot; the second, on the slot handed over, runs ``second`` once its request is sent."""
    calls: list[int] = []

    async def upstream(_provider: Any, request: httpx.Request) -> httpx.Response:
        calls.append(len(calls) + 1)
        call = len(calls)
        if call == 1:
            await until(lambda: queued(ledger, events))
        await traced_upstream(request)
        events.append("sent")
        if call == 2:
            await second()
        return httpx.Response(200, request=request)

    return upstream, calls


async def test_a_search_handing_its_slot_over_settles_once_the_next_request_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_router, "_BATON_SECONDS", 5.0)  # only what the searches do ends their waits
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")  # its steps take a worker thread
    events = recording(ledger, monkeypatch)
    # the search the slot was handed to answers once the one before it settled
    upstream, _ = handed_over(ledger, events, lambda: until(lambda: events.count("settled") >= 1))

    provider = Scripted("one", *[answer("one", 0.9)] * 3)
    the_router = Router(ledger, upstream, wait_seconds=5, lease_seconds=5)

    async def one() -> None:
        await the_router.search(routes(provider))
        events.append("returned")

    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(one)
    await ledger.aclose()
    # A search that took a slot handed over sent its request before anything else reached the ledger:
    # the search that handed the slot over settled after that (before that request was answered), and
    # the next one in line asked after it.
    taken = [i for i, event in enumerate(events) if event == "ticket"]
    assert len(taken) == 3
    assert [events[i + 1] for i in taken[1:]] == ["sent"] * 2, events
    assert events.count("settled") == events.count("returned") == 3


async def test_a_search_handed_a_slot_does_not_wait_for_a_giver_whose_settle_failed(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_router, "_BATON_SECONDS", 60.0)  # only what the searches do ends their waits
    events = recording(ledger, monkeypatch)
    settle = ledger.settle
    failed: list[Ticket] = []

    async def failing_once(ticket: Ticket, *args: Any, **kwargs: Any) -> None:
        if not failed:  # the first search, which handed its slot over, cannot record its answer
            failed.append(ticket)
            raise LedgerError("the quota ledger cannot be used (gone)", ledger=ledger.url)
        await settle(ticket, *args, **kwargs)

    monkeypatch.setattr(ledger, "settle", failing_once)
    upstream, calls = handed_over(ledger, events, anyio.lowlevel.checkpoint)
    provider = Scripted("one", *[answer("one", 0.9)] * 3)
    the_router = Router(ledger, upstream, wait_seconds=5, lease_seconds=5)
    outcomes: list[str] = []

    async def one() -> None:
        try:
            await the_router.search(routes(provider))
        except LedgerError:
            outcomes.append("ledger failed")
        else:
            outcomes.append("answered")

    with anyio.fail_after(10):  # the search the slot was handed to would wait out the baton's 60 s
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(one)
    assert outcomes == ["answered"] * 3  # the first keeps its answer too: it was paid for
    assert len(calls) == 3
    assert batons_of(ledger) == []


async def test_an_answer_the_ledger_could_not_record_is_recorded_by_the_next_search(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk was full (or Redis down) only while the first search recorded its answer: its slot, still
    held in the ledger, is freed by the next search of the process instead of when its lease lapses."""
    settle = ledger.settle
    failures: list[Ticket] = []

    async def failing_once(ticket: Ticket, *args: Any, **kwargs: Any) -> None:
        if not failures:
            failures.append(ticket)
            raise LedgerError("the quota ledger cannot be used (disk full)", ledger=ledger.url)
        await settle(ticket, *args, **kwargs)

    monkeypatch.setattr(ledger, "settle", failing_once)
    provider = Scripted("one", answer("one", 0.9), answer("one", 0.9))
    first = await router(ledger, wait_seconds=1).search(routes(provider))
    with anyio.fail_after(3):  # the held slot's 5-second lease would have outlasted the 1 s wait
        second = await router(ledger, wait_seconds=1).search(routes(provider))
    assert (first.provider, second.provider) == ("one", "one")
    assert [a.outcome for a in second.attempts] == ["ok"]
    (day,) = await ledger.snapshot("one", lambda _: WINDOWS)
    assert day.used == 2  # both searches counted, the first one once


async def test_an_answer_is_kept_when_the_ledger_cannot_record_it(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The ledger fails after the upstream answered (Redis went down mid-search): the answer, paid for, is
    returned and the failure logged. After a failed attempt there is nothing to keep: the error says the
    ledger cannot be used."""

    async def gone(*_: Any, **__: Any) -> None:
        raise LedgerError("the quota ledger cannot be used (gone)", ledger=ledger.url)

    monkeypatch.setattr(ledger, "settle", gone)
    result = await router(ledger).search(routes(Scripted("one", answer("one", 0.9))))
    assert result.provider == "one"
    assert "one: answered, but the ledger could not record it" in caplog.text
    with pytest.raises(LedgerError):
        await router(ledger).search(routes(Scripted("two", ProviderServerError("down", provider="two"))))


def batons_of(ledger: Ledger) -> list[object]:
    return [key for key in (*_router._BATONS, *_router._HOLDERS) if key[0] == id(ledger)]


async def test_a_search_cancelled_while_handing_its_slot_over_leaves_no_baton_behind(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def upstream(_provider: Any, request: httpx.Request) -> httpx.Response:
        await traced_upstream(request)
        await anyio.sleep(0.02)
        return httpx.Response(200, request=request)

    provider = Scripted("one", *[answer("one", 0.9)] * 2)
    the_router = Router(ledger, upstream, wait_seconds=5, lease_seconds=5)
    free_slot = ledger.free_slot
    with anyio.move_on_after(5):
        async with anyio.create_task_group() as group:

            async def cancelling(ticket: Ticket) -> None:
                group.cancel_scope.cancel()  # say, the caller's timeout around both searches
                await free_slot(ticket)

            monkeypatch.setattr(ledger, "free_slot", cancelling)
            for _ in range(2):
                group.start_soon(the_router.search, routes(provider))
    assert batons_of(ledger) == []  # no baton outlives its searches


async def test_a_search_cancelled_while_sending_on_a_slot_handed_over_leaves_no_baton_behind(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = recording(ledger, monkeypatch)

    async def give_up() -> None:  # the caller gives up while the search that took the slot is in flight
        group.cancel_scope.cancel()

    upstream, calls = handed_over(ledger, events, give_up)

    provider = Scripted("one", *[answer("one", 0.9)] * 3)
    the_router = Router(ledger, upstream, wait_seconds=5, lease_seconds=5)
    with anyio.move_on_after(5):
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(the_router.search, routes(provider))
    assert len(calls) == 2, events
    assert batons_of(ledger) == []  # no baton outlives its searches


async def test_a_backoff_that_ran_out_while_refusing_is_asked_again_not_failed(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    reserve = ledger.reserve
    refused: list[Refusal] = []

    async def late(*args: Any, **kwargs: Any) -> Any:
        if (
            not refused
        ):  # the shared backoff ended between the ledger's look and the router's (a busy machine)
            refused.append(Refusal("busy", to_us(ledger.now() - timedelta(milliseconds=5)), "queue full"))
            return refused[0]
        return await reserve(*args, **kwargs)

    monkeypatch.setattr(ledger, "reserve", late)
    result = await router(ledger).search(routes(Scripted("one", answer("one", 0.9))))
    assert result.provider == "one"
    assert len(refused) == 1


async def test_a_slot_nobody_waits_for_is_freed_at_settle_only(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    freed: list[Ticket] = []

    async def counting(ticket: Ticket) -> None:
        freed.append(ticket)

    monkeypatch.setattr(ledger, "free_slot", counting)
    for _ in range(3):
        await router(ledger).search(routes(Scripted("one", answer("one", 0.9))))
    assert freed == []  # one step per search less than a hand-over
    assert isinstance(await ledger.reserve("one", "guest", WINDOWS), Ticket)  # and the slot is free


async def test_an_answer_whose_body_failed_is_counted_by_its_status(ledger: Ledger) -> None:
    def failing_body(status: int) -> Callable[[Any, httpx.Request], Any]:
        async def sender(provider: Any, request: httpx.Request) -> httpx.Response:
            raise ProviderTimeoutError(
                "no complete answer within 0.5 s", provider=provider.name, status_code=status
            ) from TimeoutError()

        return sender

    windows = (WindowSpec("rolling-24h", span_seconds=86400, limit=5),)
    for name, status, counted in (("one", 200, 1), ("two", 503, 0)):
        with pytest.raises(AllProvidersFailedError):
            await Router(ledger, failing_body(status), wait_seconds=1).search(
                windowed(Scripted(name), windows=windows)
            )
        # a 200 is a search the upstream counted, even when its body then stalled; an error status is not
        assert (await ledger.snapshot(name, lambda _: windows))[0].used == counted


async def test_an_attempt_the_deadline_stopped_before_sending_is_not_counted(ledger: Ledger) -> None:
    async def late(provider: Any, request: httpx.Request) -> httpx.Response:
        raise ProviderTimeoutError("the search's deadline passed before this attempt", provider=provider.name)

    windows = (WindowSpec("rolling-24h", span_seconds=86400, limit=5),)
    with pytest.raises(AllProvidersFailedError):
        await Router(ledger, late, wait_seconds=1).search(windowed(Scripted("one"), windows=windows))
    assert (await ledger.snapshot("one", lambda _: windows))[0].used == 0


async def test_no_retry_starts_past_the_deadline_and_the_connection_error_stands(ledger: Ledger) -> None:
    calls: list[str] = []

    async def refused(provider: Any, request: httpx.Request) -> httpx.Response:
        calls.append(provider.name)
        await anyio.sleep(0.06)  # the connection attempt outlives what is left of the search
        raise ProviderConnectionError("connection refused", provider=provider.name) from httpx.ConnectError(
            "no"
        )

    windows = (WindowSpec("rolling-24h", span_seconds=86400, limit=5),)
    token = search_deadline.set(anyio.current_time() + 0.05)
    try:
        with pytest.raises(AllProvidersFailedError) as caught:
            await Router(ledger, refused, wait_seconds=1).search(windowed(Scripted("one"), windows=windows))
    finally:
        search_deadline.reset(token)
    assert calls == ["one"]
    assert [type(e).__name__ for e in caught.value.exceptions] == ["ProviderConnectionError"]
    assert (await ledger.snapshot("one", lambda _: windows))[0].used == 0


async def test_fanout_raises_bad_input_as_the_typed_error_fallback_raises(ledger: Ledger) -> None:
    broken = PreparedImage(data=b"not an image", mime_type="image/bmp", width=1, height=1, digest="0")
    planned = [
        Route(provider=p, scope="guest", windows=WINDOWS, query=PlannedQuery(p, broken, SearchOptions()))  # type: ignore[arg-type]
        for p in (Scripted("one"), Scripted("two"))
    ]
    for strategy in ("fallback", "fanout"):
        with pytest.raises(InvalidImageError):
            await router(ledger).search(planned, strategy=strategy)


async def test_an_image_too_large_for_one_provider_falls_through_to_the_next(ledger: Ledger) -> None:
    tiny = Scripted("tiny", answer("tiny", 0.9))
    tiny.limits = UploadLimits(max_bytes=10)  # no JPEG of any size fits in 10 bytes
    big = Scripted("big", answer("big", 0.9))
    image = PreparedImage(data=_jpeg(), mime_type="image/jpeg", width=64, height=36, digest="0")
    planned = [
        Route(provider=p, scope="guest", windows=WINDOWS, query=PlannedQuery(p, image, SearchOptions()))  # type: ignore[arg-type]
        for p in (tiny, big)
    ]
    attempts: list[Attempt] = []
    result = await router(ledger, attempts).search(planned)
    assert result.provider == "big"
    assert [(a.provider, a.outcome, a.error) for a in attempts] == [
        ("tiny", "failed", "ImageTooLargeError"),
        ("big", "ok", None),
    ]
    assert tiny.requests == 0


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 36), (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


def stalled_after(event: str | None) -> Callable[[Any, httpx.Request], Any]:
    """A transport that reports ``event`` through httpcore's trace extension, then never answers."""

    async def sender(provider: Any, request: httpx.Request) -> httpx.Response:
        trace = request.extensions["trace"]
        if event is not None:
            await trace(event, {})
        await anyio.sleep(30)
        raise AssertionError("cancelled before")  # pragma: no cover

    return sender


@pytest.mark.parametrize(
    ("event", "counted"),
    [
        ("connection.connect_tcp.started", 0),  # still connecting: nothing left this machine
        ("http11.send_request_headers.started", 1),  # the upstream may run it to its end
        (None, 1),  # a transport that reports nothing: it may have left
    ],
)
async def test_a_search_cancelled_by_its_caller_is_counted_once_its_request_may_have_left(
    ledger: Ledger, event: str | None, counted: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_router, "_UNANSWERED_SECONDS", 0.5)  # how long the upstream is taken to need
    monkeypatch.setattr(_router, "_ANSWER_SECONDS", {})  # no answer timed yet (other tests' are quick)
    windows = (WindowSpec("rolling-24h", span_seconds=86400, limit=5),)
    with anyio.move_on_after(0.1) as scope:  # the caller's own timeout
        await Router(ledger, stalled_after(event), wait_seconds=1).search(
            windowed(Scripted("one"), windows=windows)
        )
    assert scope.cancelled_caught
    assert (await ledger.snapshot("one", lambda _: windows))[0].used == counted
    free = await ledger.reserve("one", "guest", windows)
    if event == "http11.send_request_headers.started":  # the upstream is still at it: its slot stays taken
        assert isinstance(free, Refusal)
        assert free.kind == "concurrency"
        assert from_us(free.until) - ledger.now() <= timedelta(seconds=0.5 + 0.2)  # about what is left of it
        await anyio.sleep((from_us(free.until) - ledger.now()).total_seconds())
        free = await ledger.reserve("one", "guest", windows)
        assert (await ledger.snapshot("one", lambda _: windows))[0].used == 2  # it stayed counted
    assert isinstance(free, Ticket)  # the slot is free again


@pytest.mark.parametrize("backend", ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def test_a_search_waiting_for_a_held_slot_goes_on_when_the_hold_ends(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first search is given up while the upstream works on it: the search waiting for its slot is
    told how long the hold lasts, and sends once it ends, not once the old 15-second lease would have."""
    if backend == "redis":
        url = request.getfixturevalue("redis_url")
    else:
        url = "memory://" if backend == "memory" else f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    ledger = open_ledger(url, clock=lambda: datetime.now(UTC))
    monkeypatch.setattr(_router, "_UNANSWERED_SECONDS", 0.5)  # how long the upstream is taken to need
    monkeypatch.setattr(_router, "_ANSWER_SECONDS", {})  # no answer timed yet (other tests' are quick)
    sent: list[float] = []
    first_sent = anyio.Event()

    async def upstream(provider: Any, request: httpx.Request) -> httpx.Response:
        sent.append(anyio.current_time())
        await request.extensions["trace"]("http11.send_request_headers.started", {})
        if len(sent) == 1:
            first_sent.set()
            await anyio.sleep(30)  # given up by its caller long before
        return httpx.Response(200, request=request)

    searching = Router(ledger, upstream, wait_seconds=30, lease_seconds=15)
    provider = Scripted("one", answer("one", 0.9), answer("one", 0.9))
    try:
        with anyio.fail_after(10):  # the waiting search would sleep out the first one's 15 s lease
            async with anyio.create_task_group() as group:

                async def given_up() -> None:
                    with anyio.move_on_after(0.1):
                        await searching.search(routes(provider))

                group.start_soon(given_up)
                await first_sent.wait()
                result = await searching.search(routes(provider))
    finally:
        await ledger.clear()
        await ledger.aclose()
    assert result.provider == "one"
    assert len(sent) == 2
    assert sent[1] - sent[0] >= 0.5  # not before the hold (0.5 s less the 0.1 s spent, plus 0.2 s) ended


async def test_a_caller_timeout_after_the_request_reached_a_real_server_is_counted(
    ledger: Ledger, live_server: Callable[[Any], Any]
) -> None:
    arrived = threading.Event()

    async def slow_upstream(scope: Any, receive: Any, send: Any) -> None:
        arrived.set()
        await anyio.sleep(1)  # the caller gives up first

    server = live_server(slow_upstream)
    provider = Scripted("one")
    provider.base_url = server.url
    transport = ProviderTransport(30.0)
    windows = (WindowSpec("rolling-24h", span_seconds=86400, limit=5),)
    try:
        with anyio.move_on_after(0.5) as scope:
            await Router(ledger, transport.send, wait_seconds=1).search(windowed(provider, windows=windows))
    finally:
        await transport.aclose()
    assert scope.cancelled_caught
    assert arrived.is_set()
    assert (await ledger.snapshot("one", lambda _: windows))[0].used == 1


class _BrokenBody(httpx.AsyncByteStream):
    """An answer's body that breaks off after its first bytes (the connection dropped)."""

    async def __aiter__(self) -> Any:
        yield b'{"error": "'
        raise httpx.ReadError("connection reset")


@pytest.mark.parametrize(("status", "counted"), [(200, 1), (503, 0)])
async def test_an_answer_whose_connection_drops_mid_body_is_counted_by_its_status(
    ledger: Ledger, status: int, counted: int
) -> None:
    transport = ProviderTransport(
        5.0, httpx.MockTransport(lambda _: httpx.Response(status, stream=_BrokenBody()))
    )
    windows = (WindowSpec("rolling-24h", span_seconds=86400, limit=5),)
    try:
        with pytest.raises(AllProvidersFailedError) as caught:
            await Router(ledger, transport.send, wait_seconds=1).search(
                windowed(Scripted("one"), windows=windows)
            )
    finally:
        await transport.aclose()
    assert [getattr(e, "status_code", None) for e in caught.value.exceptions] == [status]
    assert (await ledger.snapshot("one", lambda _: windows))[0].used == counted


class SignsIn(Scripted):
    """A provider with an auth flow: another request may follow a response (a 401, then a sign-in)."""

    def auth(self) -> httpx.Auth | None:
        return httpx.BasicAuth("user", "secret")


async def through_a_tunnel(request: httpx.Request) -> None:
    """The steps httpcore reports for an HTTPS proxy's tunnel, with the request's own trace: the proxy's
    ``CONNECT`` and its answer, then the TLS handshake through it."""
    trace = request.extensions["trace"]
    tunnel = {"request": httpcore.Request(b"CONNECT", "http://proxy.example:3128/")}
    for step in ("send_request_headers", "send_request_body", "receive_response_headers"):
        await trace(f"http11.{step}.started", tunnel)
        await trace(f"http11.{step}.complete", {"return_value": None})
    await trace("connection.start_tls.started", {"server_hostname": "one.example", "timeout": None})
    await trace("connection.start_tls.complete", {"return_value": None})


@pytest.mark.parametrize(
    ("provider", "proxied", "freed_at_headers"),
    [(Scripted, False, True), (Scripted, True, True), (SignsIn, False, False)],
)
async def test_a_waited_for_slot_is_handed_over_when_the_answers_headers_arrive(
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
    provider: type[Scripted],
    proxied: bool,
    freed_at_headers: bool,
) -> None:
    """The slot goes to the next search before the answer's body is read (the answer of an HTTPS proxy's
    tunnel is not the search's), unless an auth flow may send another request after the response (then
    once the whole answer is in)."""
    events: list[str] = []
    free_slot = ledger.free_slot

    async def freeing(ticket: Ticket) -> None:
        events.append("freed")
        await free_slot(ticket)

    monkeypatch.setattr(ledger, "free_slot", freeing)
    first = anyio.Event()

    async def upstream(_provider: Any, request: httpx.Request) -> httpx.Response:
        trace = request.extensions["trace"]
        if proxied:
            await through_a_tunnel(request)
        sent = {"request": httpcore.Request(b"POST", "https://one.example/search")}
        await trace("http11.send_request_headers.started", sent)
        await trace("http11.send_request_body.complete", {"return_value": None})
        if not first.is_set():
            first.set()
            await until(lambda: events.count("asking") == 2)  # the second search waits in the gate
        await trace("http11.receive_response_headers.started", sent)
        await trace("http11.receive_response_headers.complete", {"return_value": None})
        events.append("body read")
        return httpx.Response(200, request=request)

    reserve = ledger.reserve

    async def reserving(*args: Any, **kwargs: Any) -> Any:
        result = await reserve(*args, **kwargs)
        if isinstance(result, Refusal):
            events.append("asking")
        return result

    monkeypatch.setattr(ledger, "reserve", reserving)
    scripted = provider("one", *[answer("one", 0.9)] * 2)
    the_router = Router(ledger, upstream, wait_seconds=5, lease_seconds=5)
    async with anyio.create_task_group() as group:
        for _ in range(2):
            group.start_soon(the_router.search, routes(scripted))
    handed = events.index("freed")
    assert (events[handed - 1 : handed + 1] == ["asking", "freed"]) is freed_at_headers, events
    assert (events[handed - 1 : handed + 1] == ["body read", "freed"]) is not freed_at_headers, events
    assert scripted.requests == 2


async def test_a_search_cancelled_while_its_proxy_tunnel_opens_spent_nothing(ledger: Ledger) -> None:
    async def upstream(_provider: Any, request: httpx.Request) -> httpx.Response:
        await through_a_tunnel(request)  # the CONNECT's own headers were written: not the search's
        await anyio.sleep(30)  # the TLS handshake through the tunnel hangs
        raise AssertionError("cancelled before")

    windows = (WindowSpec("rolling-24h", span_seconds=86400, limit=5),)
    with anyio.move_on_after(0.2):
        await Router(ledger, upstream, wait_seconds=1).search(windowed(Scripted("one"), windows=windows))
    assert (await ledger.snapshot("one", lambda _: windows))[0].used == 0  # never sent: not counted


class SlowUpstream:
    """An HTTP/1.1 server taking 0.2 s per request; ``most``: the most requests it worked on at once."""

    def __init__(self) -> None:
        self.in_flight = self.most = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).lower()
                length = head.partition(b"content-length:")[2].split(b"\r\n")[0]
                await reader.readexactly(int(length or 0))
                self.in_flight += 1
                self.most = max(self.most, self.in_flight)
                await asyncio.sleep(0.2)
                self.in_flight -= 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()


class Connections:
    """The connections of a test's asyncio servers: each closed when its handler ends, and the test waits
    for every handler before its event loop closes."""

    def __init__(self) -> None:
        self.handlers: set[asyncio.Task[object]] = set()

    def __call__(
        self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                self.handlers.add(task)
            try:
                await handler(reader, writer)
            finally:
                writer.close()

        return tracked

    async def closed(self) -> None:
        if self.handlers:
            await asyncio.wait(self.handlers, timeout=5)


async def connect_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An HTTPS proxy: answers a ``CONNECT 127.0.0.1:port``, then pipes bytes both ways."""
    head = await reader.readuntil(b"\r\n\r\n")
    port = int(head.split(b" ")[1].rsplit(b":", 1)[1])
    upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    await writer.drain()

    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()

    await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


async def test_through_a_real_https_proxy_one_slot_means_one_search_at_the_upstream(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """End to end over loopback: an HTTPS upstream that takes 200 ms per search, reached through a CONNECT
    proxy (``HTTPS_PROXY``) by the real transport. The proxy's "Connection established" is not the answer:
    the slot is handed over only at the upstream's, so three searches on one slot never overlap there."""
    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(served)
    slow, connections = SlowUpstream(), Connections()
    upstream = await asyncio.start_server(connections(slow), "127.0.0.1", 0, ssl=served)
    proxy = await asyncio.start_server(connections(connect_proxy), "127.0.0.1", 0)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    provider = Scripted("one", *[answer("one", 0.9)] * 3)
    provider.base_url = f"https://127.0.0.1:{upstream.sockets[0].getsockname()[1]}"
    tls_context.cache_clear()  # the process's one TLS context, made again with the test CA
    transport = ProviderTransport(10.0)
    the_router = Router(ledger, transport.send, wait_seconds=10, lease_seconds=10)
    answered: list[str | None] = []

    async def one() -> None:
        answered.append((await the_router.search(routes(provider))).provider)

    try:
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(one)
    finally:
        await transport.aclose()
        proxy.close()
        upstream.close()
        await connections.closed()
        tls_context.cache_clear()  # the next test's is made from the usual certificates
    assert answered == ["one"] * 3
    assert slow.most == 1


async def test_a_search_cancelled_while_it_waits_for_the_count_down_leaves_no_slot_held(
    ledger: Ledger,
) -> None:
    """A search that waited for its slot waits a learnt moment before sending (the upstream counts searches
    down late); cancelled then (the caller's timeout, a fanout sibling, the client closing), it sent
    nothing, and its slot is free at once."""
    from anisearch import _router

    provider = Scripted("one", answer("one", 0.9), answer("one", 0.9))
    upstream = _router._upstream(provider)  # type: ignore[arg-type]
    _router._COUNTDOWN_SECONDS[upstream] = 1.0
    try:
        the_router = router(ledger, wait_seconds=5)
        other = await ledger.reserve("one", "guest", WINDOWS)  # another holder has the only slot a moment
        assert isinstance(other, Ticket)

        async def free_soon() -> None:
            await anyio.sleep(0.1)
            await ledger.settle(other, "charged")

        with anyio.move_on_after(0.5):  # while the search waits out the count-down
            async with anyio.create_task_group() as group:
                group.start_soon(free_soon)
                await the_router.search(routes(provider))
        again = await ledger.reserve("one", "guest", WINDOWS)
        assert isinstance(again, Ticket)  # not refused: the cancelled search's slot was settled
        await ledger.settle(again, "unsent")
    finally:
        _router._COUNTDOWN_SECONDS.pop(upstream, None)
