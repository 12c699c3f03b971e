"""The provider registry: entry points are found, loaded and checked, and a bad one names its package."""

from __future__ import annotations

import importlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from anisearch import ConfigurationError, QuotaExhaustedError, UnknownProviderError, UpstreamResponseError
from anisearch._provider import PROVIDER_GROUP, available_providers, check_provider, load_provider
from anisearch.provider import BaseProvider, ProviderAnswer, SearchQuery, WindowSpec

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


class Good(BaseProvider):
    name: ClassVar[str] = "good"
    default_url: ClassVar[str] = "https://good.example"

    def search_request(self, query: SearchQuery) -> httpx.Request:
        return self.request("POST", "/search", content=query.image.data)

    def parse_search(self, response: httpx.Response) -> ProviderAnswer:
        return ProviderAnswer(hits=[])


class Nameless:
    name = "Not A Name!"


class Partial:
    name = "partial"

    def search_request(self, query: SearchQuery) -> httpx.Request:
        raise NotImplementedError


class Unfinished(BaseProvider):
    """Derived from BaseProvider, its parser forgotten: the stub would raise only once a search was spent."""

    name: ClassVar[str] = "unfinished"

    def search_request(self, query: SearchQuery) -> httpx.Request:
        return self.request("POST", "/search", content=query.image.data)


class WindowsAsAList(Good):
    name: ClassVar[str] = "listed"
    windows = (WindowSpec("day", calendar="day", limit=5),)  # type: ignore[assignment]  # the slip tested


def a_function() -> None:
    """Not a class."""


@dataclass
class Dist:
    name: str


@dataclass
class Entry:
    """What the registry reads of an ``importlib.metadata.EntryPoint``."""

    name: str
    target: Any
    dist: Dist | None = field(default_factory=lambda: Dist("acme-anisearch"))
    value: str = "acme_anisearch:Provider"
    group: str = PROVIDER_GROUP

    def load(self) -> Any:
        if isinstance(self.target, BaseException):
            raise self.target
        return self.target


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> dict[str, Entry]:
    """The entry points the registry sees, replaced by a dict the test fills."""
    entries: dict[str, Entry] = {}
    monkeypatch.setattr("anisearch._provider._provider_entry_points", lambda: entries)
    return entries


def test_a_conforming_provider_is_loaded_and_listed(registered: dict[str, Entry]) -> None:
    registered["good"] = Entry("good", Good)
    assert load_provider("good") is Good
    assert available_providers() == ["good"]


def test_an_unknown_name_lists_the_known_ones(registered: dict[str, Entry]) -> None:
    registered["good"] = Entry("good", Good)
    with pytest.raises(UnknownProviderError, match="good"):
        load_provider("nope")


def test_a_metadata_provider_named_as_a_search_provider_is_told_apart() -> None:
    with pytest.raises(
        UnknownProviderError, match=r"'anilist' \(a metadata provider: it fills titles, it does"
    ):
        load_provider("anilist")


@pytest.mark.parametrize(
    ("target", "words"),
    [
        (a_function, "not a provider class"),
        (Nameless, "lower-case name"),
        (Partial, "lacks capabilities, limits"),
        (ImportError("No module named 'acme_anisearch'"), "cannot be loaded: ImportError: No module named"),
        (ValueError("could not convert string to float: 'thirty'"), "cannot be loaded: ValueError: could"),
        (Unfinished, "Unfinished must define parse_search"),
        (WindowsAsAList, "windows must be a method returning WindowSpec values, not a tuple"),
    ],
    ids=[
        "function",
        "bad-name",
        "missing-members",
        "import-error",
        "error-at-import",
        "stub-parser",
        "windows",
    ],
)
def test_a_bad_entry_point_names_itself_and_its_distribution(
    registered: dict[str, Entry], target: Any, words: str
) -> None:
    name = getattr(target, "name", "acme")
    name = name if isinstance(name, str) and name.islower() else "acme"
    registered[name] = Entry(name, target)
    with pytest.raises(ConfigurationError, match=words) as caught:
        load_provider(name)
    assert f"entry point {name!r}" in str(caught.value)
    assert "distribution 'acme-anisearch'" in str(caught.value)


def test_a_class_registered_under_another_name_is_refused(registered: dict[str, Entry]) -> None:
    registered["better"] = Entry("better", Good, dist=None)
    with pytest.raises(ConfigurationError, match="name is 'good', not 'better'") as caught:
        load_provider("better")
    assert "unknown distribution" in str(caught.value)


def test_every_provider_this_distribution_registers_conforms() -> None:
    table = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["entry-points"][PROVIDER_GROUP]
    assert set(table) == {"tracemoe", "whatanime-ga", "whatanimeisthis"}
    for name, value in table.items():
        module, _, attribute = value.partition(":")
        cls = getattr(importlib.import_module(module), attribute)
        assert check_provider(cls, Entry(name, cls, value=value)) is cls


def test_a_name_two_packages_register_is_refused_naming_both(
    registered: dict[str, Entry], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which of two same-named entry points Python finds first depends on sys.path: the one found would
    get the other's settings and credentials (ANISEARCH_TRACEMOE_KEY sent to somebody's server)."""
    ours = Entry("good", Good, dist=Dist("anisearch-gateway"), value="anisearch_providers:Good")
    theirs = Entry("good", Good, dist=Dist("acme-anisearch"), value="acme_anisearch:Good")
    registered["good"] = theirs
    monkeypatch.setattr("anisearch._provider._clashing_entry_points", lambda: {"good": [ours, theirs]})
    with pytest.raises(ConfigurationError, match="registered more than once") as caught:
        load_provider("good")
    assert "distribution 'anisearch-gateway'" in str(caught.value)
    assert "distribution 'acme-anisearch'" in str(caught.value)


def test_a_broken_package_nobody_asks_for_leaves_the_default_order_working(
    registered: dict[str, Entry], caplog: pytest.LogCaptureFixture
) -> None:
    """One package whose import fails must not stop every search that does not name it."""
    from anisearch import Client, Settings

    registered["good"] = Entry("good", Good)
    registered["acme"] = Entry("acme", ValueError("could not convert string to float: 'thirty'"))
    with Client(Settings.load(ledger="memory://", cache="off")) as client:
        listed = [info.name for info in client.providers()]
    assert "good" in listed
    assert "acme" not in listed
    assert any("cannot be loaded: ValueError" in r.getMessage() for r in caplog.records)


class Spent(Good):
    """A service whose 402 says when the quota frees only by ``Retry-After``, as the guide's example does."""

    name: ClassVar[str] = "spent"

    def windows(self) -> list[WindowSpec]:
        return [WindowSpec("day", calendar="day", limit=5)]

    def parse_search(self, response: httpx.Response) -> ProviderAnswer:
        raise QuotaExhaustedError("out of searches", provider=self.name, status_code=402, retry_after=3600)


class ListReturning(Good):
    name: ClassVar[str] = "listing"

    def parse_search(self, response: httpx.Response) -> Any:
        return []  # the hits, not a ProviderAnswer: the author's slip


def test_a_parser_that_returns_no_answer_fails_its_attempt_with_a_typed_error() -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from anisearch._verdict import read

    response = httpx.Response(200, json={"hits": []}, request=httpx.Request("POST", "https://x/search"))
    _, answer, error = read(ListReturning(), (), response, datetime.now(UTC), ZoneInfo("UTC"))
    assert answer is None
    assert isinstance(error, UpstreamResponseError)  # a ProviderError: the next provider is asked
    assert "ListReturning.parse_search returned list, not a ProviderAnswer" in error.message


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_spent_quota_with_only_retry_after_blocks_until_then_and_shows_none_left(
    anyio_backend: str,
) -> None:
    """The window is blocked for the upstream's Retry-After (an hour), not until its natural end (the
    next midnight), and ``quota()`` says none is left meanwhile (it said 5 of 5)."""
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from anisearch._ledger import Ticket, open_ledger
    from anisearch._verdict import read

    provider = Spent()
    windows = tuple(provider.windows())
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    response = httpx.Response(402, request=httpx.Request("POST", "https://x/search"))
    settlement, _, error = read(provider, windows, response, now, ZoneInfo("UTC"))
    assert isinstance(error, QuotaExhaustedError)
    assert settlement.blocks == [("day", now + timedelta(hours=1))]
    ledger = open_ledger("memory://", clock=lambda: now)
    ticket = await ledger.reserve("spent", "guest", windows, trust_estimate=True)
    assert isinstance(ticket, Ticket)
    await ledger.settle(ticket, "uncharged", blocks=settlement.blocks)
    (day,) = await ledger.snapshot("spent", lambda _: windows)
    assert (day.remaining, day.resets_at) == (0, now + timedelta(hours=1))


def test_a_spent_quota_with_a_retry_after_of_zero_blocks_until_the_window_ends() -> None:
    """``Retry-After: 0`` (or a date already past) says nothing of when the quota frees: the window stays
    blocked to its end, as without one (it was not blocked at all)."""
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from anisearch._verdict import read

    class NoWait(Spent):
        def parse_search(self, response: httpx.Response) -> ProviderAnswer:
            raise QuotaExhaustedError("out of searches", provider=self.name, status_code=402, retry_after=0)

    provider = NoWait()
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    response = httpx.Response(402, request=httpx.Request("POST", "https://x/search"))
    settlement, _, _ = read(provider, tuple(provider.windows()), response, now, ZoneInfo("UTC"))
    assert settlement.blocks == [("day", now + timedelta(hours=12))]  # the next midnight


class HalfAccount(Good):
    """Some of the account requests, none of the parsers: no account features."""

    name: ClassVar[str] = "half"

    def rankings_request(self, period: str, limit: int, include_adult: bool) -> httpx.Request:
        return self.request("GET", "/rankings")

    def credits_request(self) -> httpx.Request:
        return self.request("GET", "/credits")

    def api_keys_request(self, page: int, page_size: int) -> httpx.Request:
        return self.request("GET", "/keys")

    def sign_in_request(self, email: str, password: str) -> httpx.Request:
        return self.request("POST", "/sign-in")


def account_provider_despite(order: str, misconfigured: str) -> str:
    """The account provider of a client asking ``order``, with a bad URL set for ``misconfigured``."""
    from anisearch import Client, Settings

    settings = Settings.load(
        providers=[order],
        provider_options={misconfigured: {"url": "http://127.0.0.1:99999"}},
        ledger="memory://",
        cache="off",
    )
    with Client(settings) as client:
        return client.account_provider()


def test_account_commands_pass_over_a_misconfigured_provider_without_every_account_method(
    registered: dict[str, Entry],
) -> None:
    from anisearch_providers.whatanimeisthis import WhatAnimeIsThis

    registered["good"] = Entry("good", Good)
    registered["half"] = Entry("half", HalfAccount)  # looked at before whatanimeisthis
    registered["whatanimeisthis"] = Entry("whatanimeisthis", WhatAnimeIsThis)
    assert account_provider_despite("good", "half") == "whatanimeisthis"


def test_a_broken_setting_of_a_provider_without_account_features_leaves_the_account_commands_alone() -> None:
    """A bad whatanime-ga URL is whatanime-ga's business: credits, keys and rankings still go to
    whatanimeisthis.com (they failed on it)."""
    assert account_provider_despite("tracemoe", "whatanime-ga") == "whatanimeisthis"


def test_a_reset_the_provider_read_on_this_machines_clock_is_moved_onto_the_ledgers() -> None:
    """A Redis ledger keeps the server's time: a spent window's reset, read by the provider on this
    machine's clock (3 h behind here), is blocked until that instant on the ledger's clock."""
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from anisearch._verdict import read

    class SpentUntil(Spent):
        def parse_search(self, response: httpx.Response) -> Any:
            raise QuotaExhaustedError("day spent", provider=self.name, resets_at=local + timedelta(hours=1))

    local = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    ledger_now = local + timedelta(hours=3)
    provider = SpentUntil()
    response = httpx.Response(402, request=httpx.Request("POST", "https://x/search"))
    settlement, _, _ = read(
        provider,
        tuple(provider.windows()),
        response,
        ledger_now,
        ZoneInfo("UTC"),
        rebased=lambda moment: moment + timedelta(hours=3),
    )
    assert settlement.blocks == [("day", ledger_now + timedelta(hours=1))]
