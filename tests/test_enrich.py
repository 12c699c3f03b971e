"""Enrichment through the engine: every hit gets its anime's titles, MAL ID and adult flag from AniList, in
one request, cached per AniList ID, never fatally; the adult filter; respx in front of both upstreams."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import respx

from anisearch import Client, Settings
from anisearch._enrich import fill_hit
from anisearch._models import Anime, Hit, SearchResult, Title

TRACEMOE = "http://tracemoe.test"
ANILIST = "http://anilist.test"


def settings(**extra: Any) -> Settings:
    options = {"tracemoe": {"url": TRACEMOE}, "anilist": {"url": ANILIST}}
    return Settings.load(providers=["tracemoe"], provider_options=options, **{"metadata": "anilist", **extra})


def client(mock: respx.MockRouter, **extra: Any) -> Client:
    return Client(settings(**extra), httpx.MockTransport(mock.async_handler))


def media(anilist_id: int, romaji: str, *, adult: bool = False, mal: int | None = None) -> dict[str, Any]:
    return {
        "id": anilist_id,
        "idMal": mal,
        "title": {"romaji": romaji, "english": None, "native": None},
        "synonyms": [],
        "isAdult": adult,
        "format": "TV",
        "coverImage": {"large": f"https://img.test/{anilist_id}.jpg"},
        "siteUrl": f"https://anilist.co/anime/{anilist_id}",
    }


def page(*items: dict[str, Any]) -> dict[str, Any]:
    return {"data": {"Page": {"media": list(items)}}}


KNOWN = page(
    media(11887, "Kokoro Connect", mal=11887),
    media(21703, "Fune o Amu", adult=True),
    media(21, "ONE PIECE", mal=21),
)


def asked_ids(route: respx.Route) -> list[list[int]]:
    return [json.loads(call.request.content)["variables"]["ids"] for call in route.calls]


def test_every_hit_is_titled_from_one_request_without_asking_tracemoe_for_anilist_info(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path
) -> None:
    search = mock.post(f"{TRACEMOE}/search").respond(200, json=body)
    lookup = mock.post(ANILIST).respond(200, json=KNOWN, headers={"X-RateLimit-Limit": "90"})
    with client(mock) as engine:
        result = engine.search(samples / "tinted-good.jpg", anilist_info=True)
    assert "anilistInfo" not in search.calls.last.request.url.params
    assert lookup.call_count == 1
    assert asked_ids(lookup) == [[11887, 21703, 21, 4562, 97821, 12431]]
    best = result.best
    assert best is not None
    assert best.title is not None
    assert best.title.romaji == "Kokoro Connect"
    assert (best.mal_id, best.is_adult, best.format) == (11887, False, "TV")
    assert best.cover_image_url == "https://img.test/11887.jpg"
    assert all(hit.title is not None for hit in result.hits if hit.anilist_id in (11887, 21703, 21))
    assert all(hit.title is None for hit in result.hits if hit.anilist_id == 12431)  # AniList left it out
    assert [(a.provider, a.outcome) for a in result.attempts] == [("tracemoe", "ok"), ("anilist", "ok")]


def test_ids_in_the_cache_are_not_asked_again_even_by_another_client(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path
) -> None:
    mock.post(f"{TRACEMOE}/search").respond(200, json=body)
    lookup = mock.post(ANILIST).respond(200, json=KNOWN)
    with client(mock) as engine:
        engine.search(samples / "tinted-good.jpg", anilist_info=True)
        again = engine.search(samples / "tinted-good.jpg", anilist_info=True, cache=False)
    with client(mock) as engine:
        third = engine.search(samples / "tinted-good.jpg", anilist_info=True, cache=False)
    assert lookup.call_count == 1  # unknown IDs were remembered too
    for result in (again, third):
        assert result.best is not None
        assert result.best.title is not None
        assert result.best.title.romaji == "Kokoro Connect"
        assert [a.provider for a in result.attempts] == ["tracemoe"]


def test_an_expired_entry_is_asked_again(mock: respx.MockRouter, body: dict[str, Any], samples: Path) -> None:
    mock.post(f"{TRACEMOE}/search").respond(200, json=body)
    lookup = mock.post(ANILIST).respond(200, json=KNOWN)
    options = {"tracemoe": {"url": TRACEMOE}, "anilist": {"url": ANILIST, "ttl": 0.001}}
    with Client(
        Settings.load(providers=["tracemoe"], provider_options=options, metadata="anilist"),
        httpx.MockTransport(mock.async_handler),
    ) as engine:
        engine.search(samples / "tinted-good.jpg", anilist_info=True)
        engine.search(samples / "tinted-good.jpg", anilist_info=True, cache=False)
    assert lookup.call_count == 2


@pytest.mark.parametrize(
    ("ttl_then", "ttl_now", "lookups"),
    [
        (None, 0.001, 2),  # lowered from 7 days: titles cached under the old TTL are asked again
        (0.001, None, 1),  # raised to 7 days: titles a shorter TTL let go are good again
    ],
)
def test_the_ttl_in_force_at_the_search_applies_to_titles_already_cached(
    mock: respx.MockRouter,
    body: dict[str, Any],
    samples: Path,
    *,
    ttl_then: float | None,
    ttl_now: float | None,
    lookups: int,
) -> None:
    """``ANISEARCH_ANILIST_TTL`` changed between two runs (None: the default, 7 days)."""
    mock.post(f"{TRACEMOE}/search").respond(200, json=body)
    lookup = mock.post(ANILIST).respond(200, json=KNOWN)
    for ttl in (ttl_then, ttl_now):
        anilist = {"url": ANILIST} if ttl is None else {"url": ANILIST, "ttl": ttl}
        options = {"tracemoe": {"url": TRACEMOE}, "anilist": anilist}
        with Client(
            Settings.load(providers=["tracemoe"], provider_options=options, metadata="anilist"),
            httpx.MockTransport(mock.async_handler),
        ) as engine:
            result = engine.search(samples / "tinted-good.jpg", anilist_info=True, cache=False)
        assert result.best is not None
        assert result.best.title is not None
        assert result.best.title.romaji == "Kokoro Connect"
    assert lookup.call_count == lookups


def test_a_metadata_cache_another_process_holds_waits_no_longer_than_the_searchs_deadline(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path
) -> None:
    """The first search opens the metadata cache; an older version's file, another process writing to
    it, held a search with a 1 s deadline for 10 s, and the search then failed with no time left."""
    import sqlite3
    import time

    from anisearch._enrich import metadata_cache_path

    mock.post(f"{TRACEMOE}/search").respond(200, json=body)
    mock.post(ANILIST).respond(200, json=KNOWN)
    options = {"tracemoe": {"url": TRACEMOE}, "anilist": {"url": ANILIST}}
    settings = Settings.load(providers=["tracemoe"], provider_options=options, metadata="anilist")
    path = metadata_cache_path(settings)
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE anime (provider, anilist_id, expires_at, anime)")  # version 0's
    writer.execute("BEGIN IMMEDIATE")
    try:
        with Client(settings, httpx.MockTransport(mock.async_handler)) as engine:
            started = time.monotonic()
            result = engine.search(samples / "tinted-good.jpg", anilist_info=True, cache=False, deadline=1.0)
            waited = time.monotonic() - started
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert waited < 5  # at most its 1 s; 10 s before, and then no time was left for trace.moe
    assert result.best is not None


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (
            httpx.Response(
                429,
                json={"data": None, "errors": [{"message": "Too Many Requests.", "status": 429}]},
                headers={"Retry-After": "30"},
            ),
            "RateLimitedError",
        ),
        (
            httpx.Response(
                500, json={"data": None, "errors": [{"message": "Internal Server Error", "status": 500}]}
            ),
            "ProviderServerError",
        ),
        (httpx.Response(200, text="<html>"), "UpstreamResponseError"),
        (httpx.ConnectError("refused"), "ProviderConnectionError"),
    ],
)
def test_an_anilist_failure_leaves_the_hits_untitled_and_says_why(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path, answer: Any, error: str
) -> None:
    mock.post(f"{TRACEMOE}/search").respond(200, json=body)
    if isinstance(answer, Exception):
        mock.post(ANILIST).mock(side_effect=answer)
    else:
        mock.post(ANILIST).mock(return_value=answer)
    with client(mock) as engine:
        result = engine.search(samples / "tinted-good.jpg", anilist_info=True)
    assert result.provider == "tracemoe"
    assert result.best is not None
    assert result.best.anilist_id == 11887
    assert result.best.title is None
    failed = result.attempts[-1]
    assert (failed.provider, failed.outcome, failed.error) == ("anilist", "failed", error)
    assert failed.reason is not None
    assert "hits left as their provider gave them" in failed.reason


def test_after_a_429_anilist_is_not_asked_until_its_retry_after(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path
) -> None:
    mock.post(f"{TRACEMOE}/search").respond(200, json=body)
    limited = {"data": None, "errors": [{"message": "Too Many Requests.", "status": 429}]}
    lookup = mock.post(ANILIST).respond(429, json=limited, headers={"Retry-After": "30"})
    with client(mock) as engine:
        engine.search(samples / "tinted-good.jpg", anilist_info=True)
        second = engine.search(samples / "tinted-good.jpg", anilist_info=True, cache=False)
    assert lookup.call_count == 1
    skipped = second.attempts[-1]
    assert (skipped.provider, skipped.outcome, skipped.error) == ("anilist", "skipped", "RateLimitedError")


def test_more_than_50_ids_take_one_request_per_50(mock: respx.MockRouter) -> None:
    from anisearch._models import SearchResult

    lookup = mock.post(ANILIST).mock(
        side_effect=lambda request: httpx.Response(
            200, json=page(*(media(i, f"anime {i}") for i in json.loads(request.content)["variables"]["ids"]))
        )
    )
    hits = [Hit(provider="tracemoe", anilist_id=i, similarity=0.5) for i in range(1, 121)]
    result = SearchResult(hits=hits, provider="tracemoe")
    with client(mock) as engine:
        enrich = engine._async._enrichment(fill=True, include_adult=None)
        engine._run(enrich, result)
        enriched = engine._run(enrich, result)
    assert [len(ids) for ids in asked_ids(lookup)] == [50, 50, 20]
    assert all(
        hit.title is not None and hit.title.romaji == f"anime {hit.anilist_id}" for hit in enriched.hits
    )


def test_no_adult_drops_adult_hits_and_counts_them(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path
) -> None:
    mock.post(f"{TRACEMOE}/search").respond(200, json=body)
    mock.post(ANILIST).respond(200, json=KNOWN)
    with client(mock) as engine:
        everything = engine.search(samples / "tinted-good.jpg")
        safe = engine.search(samples / "tinted-good.jpg", include_adult=False)
    adult = [hit for hit in everything.hits if hit.anilist_id == 21703]
    assert len(adult) == 2
    assert safe.adult_hits_dropped == 2
    assert [hit.anilist_id for hit in safe.hits] == [
        h.anilist_id for h in everything.hits if h.anilist_id != 21703
    ]
    assert everything.adult_hits_dropped == 0
    assert everything.best is not None
    assert everything.best.title is None  # anilist_info=False: the library asked nothing
    # the adult filter looked each hit up, and filled only the adult flag: titles stay off
    kokoro = [hit for hit in safe.hits if hit.anilist_id == 11887]
    assert kokoro
    assert all(hit.is_adult is False for hit in kokoro)
    assert all(hit.title is None and hit.mal_id is None for hit in safe.hits)


def test_a_bot_makes_no_adult_the_default_in_its_settings(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANISEARCH_INCLUDE_ADULT", "false")
    mock.post(f"{TRACEMOE}/search").respond(200, json=body)
    mock.post(ANILIST).respond(200, json=KNOWN)
    with client(mock) as engine:
        assert engine.search(samples / "tinted-good.jpg").adult_hits_dropped == 2
        assert engine.search(samples / "tinted-good.jpg", include_adult=True).adult_hits_dropped == 0


def test_a_setting_restores_tracemoes_own_anilist_info(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path
) -> None:
    search = mock.post(f"{TRACEMOE}/search").respond(200, json=body)
    mock.post(ANILIST).respond(200, json=KNOWN)
    with client(mock, upstream_anilist_info=True) as engine:
        engine.search(samples / "tinted-good.jpg", anilist_info=True)
    assert "anilistInfo" in search.calls.last.request.url.params


def test_with_metadata_off_tracemoe_is_asked_for_titles_as_before(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path
) -> None:
    search = mock.post(f"{TRACEMOE}/search").respond(200, json=body)
    lookup = mock.post(ANILIST).respond(200, json=KNOWN)
    with client(mock, metadata="off") as engine:
        result = engine.search(samples / "tinted-good.jpg", anilist_info=True)
    assert "anilistInfo" in search.calls.last.request.url.params
    assert lookup.call_count == 0
    assert [a.provider for a in result.attempts] == ["tracemoe"]


def test_hits_an_upstream_flagged_adult_are_dropped_without_a_lookup(mock: respx.MockRouter) -> None:
    from anisearch._models import SearchResult

    lookup = mock.post(ANILIST).respond(200, json=KNOWN)
    hits = [
        Hit(provider="whatanime-ga", anilist_id=1, similarity=0.9, is_adult=True),
        Hit(provider="whatanime-ga", anilist_id=2, similarity=0.8, is_adult=False),
    ]
    for metadata in ("anilist", "off"):
        with client(mock, metadata=metadata) as engine:
            kept = engine._run(
                engine._async._enrichment(fill=False, include_adult=False), SearchResult(hits=hits)
            )
        assert [hit.anilist_id for hit in kept.hits] == [2]
        assert kept.adult_hits_dropped == 1
    assert lookup.call_count == 0


def test_a_bad_anilist_setting_fails_before_any_request(mock: respx.MockRouter, samples: Path) -> None:
    from anisearch import ConfigurationError

    search = mock.post(f"{TRACEMOE}/search").respond(200, json={"frameCount": 1, "error": "", "result": []})
    options = {"tracemoe": {"url": TRACEMOE}, "anilist": {"url": "graphql.anilist.co"}}
    settings = Settings.load(providers=["tracemoe"], provider_options=options, metadata="anilist")
    with Client(settings, httpx.MockTransport(mock.async_handler)) as engine:
        with pytest.raises(ConfigurationError, match="ANISEARCH_ANILIST_URL"):
            engine.search(samples / "tinted-good.jpg", anilist_info=True)
        engine.search(samples / "tinted-good.jpg", anilist_info=False, include_adult=True)
    assert search.call_count == 1


# ---------------------------------------------------------------------------------------------- filling


def test_titles_an_upstream_gave_are_kept_and_missing_ones_filled() -> None:
    hit = Hit(
        provider="whatanime-ga",
        anilist_id=11887,
        similarity=0.97,
        title=Title(english="Kokoro Connect (legacy)", chinese="心連·情結"),
        mal_id=11887,
        synonyms=["Kokoroco"],
    )
    anime = Anime(
        anilist_id=11887,
        mal_id=99,
        title=Title(romaji="Kokoro Connect", english="Kokoro Connect", native="ココロコネクト"),
        synonyms=["other"],
        is_adult=False,
        episode_count=13,
        site_url="https://anilist.co/anime/11887",
    )
    filled = fill_hit(hit, anime)
    assert filled.title == Title(
        romaji="Kokoro Connect",
        english="Kokoro Connect (legacy)",
        native="ココロコネクト",
        chinese="心連·情結",
    )
    assert (filled.mal_id, filled.synonyms) == (11887, ["Kokoroco"])
    assert (filled.is_adult, filled.episode_count, filled.site_url) == (
        False,
        13,
        "https://anilist.co/anime/11887",
    )
    assert fill_hit(filled, anime) == filled


def test_the_limit_anilist_reports_goes_through_the_ledger(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path
) -> None:
    mock.post(f"{TRACEMOE}/search").respond(200, json=body)
    degraded = {"X-RateLimit-Limit": "1", "X-RateLimit-Remaining": "0"}
    lookup = mock.post(ANILIST).respond(200, json=KNOWN, headers=degraded)
    with client(mock, cache="off") as engine:  # no metadata cache either: every search needs a lookup
        first = engine.search(samples / "tinted-good.jpg", anilist_info=True)
        second = engine.search(samples / "tinted-good.jpg", anilist_info=True)
    assert lookup.call_count == 1
    assert first.attempts[-1].outcome == "ok"
    skipped = second.attempts[-1]
    assert (skipped.provider, skipped.outcome, skipped.error) == ("anilist", "skipped", "RateLimitedError")
    assert skipped.reason is not None
    assert "rate limited until" in skipped.reason
    assert second.best is not None
    assert second.best.title is None


def test_providers_lists_anilist_as_the_metadata_provider(mock: respx.MockRouter) -> None:
    with client(mock) as engine:
        infos = {info.name: info for info in engine.providers()}
    with client(mock, metadata="off") as engine:
        off = {info.name: info for info in engine.providers()}
    assert infos["anilist"].capabilities == ["metadata"]
    assert infos["anilist"].base_url == ANILIST
    assert infos["anilist"].enabled
    assert not off["anilist"].enabled
    assert "metadata" not in infos["tracemoe"].capabilities


def test_a_ledger_failure_during_the_lookup_leaves_the_answer_as_it_came(mock: respx.MockRouter) -> None:
    import anyio

    from anisearch import LedgerError
    from anisearch._enrich import Enricher
    from anisearch._models import SearchResult
    from anisearch_providers.anilist import AniList

    lookup = mock.post(ANILIST).respond(200, json=KNOWN)

    async def broken_ledger() -> Any:
        raise LedgerError("the ledger file is locked", ledger="sqlite:///x")

    async def send(provider: Any, request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing is sent without a reservation")

    hits = [
        Hit(provider="tracemoe", anilist_id=11887, similarity=0.97),
        Hit(provider="x", anilist_id=0, similarity=0.5),
    ]
    enricher = Enricher(AniList(ANILIST), broken_ledger, send, cache=None)
    result = anyio.run(lambda: enricher(SearchResult(hits=hits), fill=True, include_adult=True))
    assert result.hits == hits
    failed = result.attempts[-1]
    assert (failed.provider, failed.outcome, failed.error) == ("anilist", "failed", "LedgerError")
    assert lookup.call_count == 0


def test_only_positive_anilist_ids_are_asked(mock: respx.MockRouter) -> None:
    from anisearch._models import SearchResult

    lookup = mock.post(ANILIST).respond(200, json=KNOWN)
    hits = [
        Hit(provider="x", anilist_id=0, similarity=0.9),
        Hit(provider="x", anilist_id=11887, similarity=0.8),
    ]
    with client(mock) as engine:
        result = engine._run(
            engine._async._enrichment(fill=True, include_adult=None), SearchResult(hits=hits)
        )
    assert asked_ids(lookup) == [[11887]]
    assert result.hits[0].title is None
    assert result.hits[1].title is not None


def tracemoe_answer(*anilist_ids: int) -> dict[str, Any]:
    """trace.moe's answer with one hit per AniList ID, best first."""
    hits = [
        {"anilist": anilist_id, "filename": f"{n}.mp4", "episode": 1, "from": 1.0, "to": 2.0, "at": 1.5,
         "duration": 1440.0, "similarity": 0.95 - n / 100, "video": "", "image": ""}
        for n, anilist_id in enumerate(anilist_ids)
    ]  # fmt: skip
    return {"frameCount": 1, "error": "", "result": hits}


def picture() -> bytes:
    from io import BytesIO

    from PIL import Image

    out = BytesIO()
    Image.effect_noise((64, 36), 60).convert("RGB").save(out, "JPEG")
    return out.getvalue()


def test_an_anilist_id_past_32_bits_is_left_untitled_and_the_search_answers_every_time(
    mock: respx.MockRouter,
) -> None:
    """An upstream's ID past AniList's 32-bit range (past SQLite's 64 bits even) is never looked up: the
    search answered with an OverflowError, and kept failing once the cache held the answer."""
    mock.post(f"{TRACEMOE}/search").respond(200, json=tracemoe_answer(11887, 2**31, 2**63))
    lookup = mock.post(ANILIST).respond(200, json=KNOWN)
    image = picture()
    with client(mock) as engine:
        first = engine.search(image, anilist_info=True)
        again = engine.search(image, anilist_info=True, include_adult=False)  # from the result cache
    assert asked_ids(lookup) == [[11887]]
    for result in (first, again):
        assert [hit.anilist_id for hit in result.hits] == [11887, 2**31, 2**63]
        assert [hit.title is not None for hit in result.hits] == [True, False, False]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def romaji(result: Any) -> str | None:
    """The best hit's romaji title, or None when it has none."""
    title = result.best.title if result.best is not None else None
    return None if title is None else title.romaji


async def searches_at_once(
    answer: Callable[[httpx.Request], Coroutine[None, None, httpx.Response]], starts: Sequence[float]
) -> list[Any]:
    """Searches of one picture with titles by one client, each started ``starts[n]`` seconds in; their
    results, in the order they ended."""
    from anisearch import AsyncClient

    results: list[Any] = []
    async with AsyncClient(settings(cache="off"), httpx.MockTransport(answer)) as engine:

        async def search(after: float) -> None:
            await anyio.sleep(after)
            results.append(await engine.search(picture(), anilist_info=True))

        async with anyio.create_task_group() as searches:
            for after in starts:
                searches.start_soon(search, after)
    return results


@pytest.mark.anyio
async def test_searches_at_once_share_one_lookup_of_the_same_ids() -> None:
    """Ten searches of one picture at once (a bot's users pasting the same screenshot) ask AniList once."""

    lookups: list[list[int]] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "anilist.test":
            lookups.append(json.loads(request.content)["variables"]["ids"])
            await anyio.sleep(0.2)  # the others arrive while it is asked
            return httpx.Response(200, json=KNOWN)
        return httpx.Response(200, json=tracemoe_answer(11887, 21))

    results = await searches_at_once(answer, [0.0] * 10)
    assert lookups == [[11887, 21]]
    assert [romaji(result) for result in results] == ["Kokoro Connect"] * 10
    assert sum(1 for result in results if result.attempts[-1].provider == "anilist") == 1


def test_titles_from_another_anilist_address_are_cached_apart(mock: respx.MockRouter) -> None:
    """An emulator's or a mirror's answers (an ID it does not know, remembered for a week) are never taken
    for another address's."""
    mock.post(f"{TRACEMOE}/search").respond(200, json=tracemoe_answer(11887))
    emulator = mock.post("http://127.0.0.1:8003").respond(200, json=page())  # knows nothing
    anilist = mock.post(ANILIST).respond(200, json=KNOWN)
    options = {"tracemoe": {"url": TRACEMOE}, "anilist": {"url": "http://127.0.0.1:8003"}}
    local = Settings.load(providers=["tracemoe"], provider_options=options, metadata="anilist")
    with Client(local, httpx.MockTransport(mock.async_handler)) as engine:
        assert romaji(engine.search(picture(), anilist_info=True, cache=False)) is None
    with client(mock) as engine:
        titled = engine.search(picture(), anilist_info=True, cache=False)
    assert (emulator.call_count, anilist.call_count) == (1, 1)
    assert romaji(titled) == "Kokoro Connect"


def test_after_anilist_did_not_answer_it_is_not_asked_for_a_while(mock: respx.MockRouter) -> None:
    """A lookup that got no answer at all is not tried again at every search (each would wait out the
    timeout again for its titles): for 30 s the lookup is skipped, saying why."""
    mock.post(f"{TRACEMOE}/search").respond(200, json=tracemoe_answer(11887))
    lookup = mock.post(ANILIST).mock(side_effect=httpx.ConnectError("refused"))
    with client(mock) as engine:
        first = engine.search(picture(), anilist_info=True, cache=False)
        second = engine.search(picture(), anilist_info=True, cache=False)
    assert lookup.call_count == 1
    assert [(a.provider, a.outcome) for a in first.attempts] == [("tracemoe", "ok"), ("anilist", "failed")]
    skipped = second.attempts[-1]
    assert (skipped.provider, skipped.outcome, skipped.error) == (
        "anilist",
        "skipped",
        "ProviderConnectionError",
    )
    assert "not asked again for 30 s" in (skipped.reason or "")


def test_an_answer_failing_in_part_titles_what_it_holds_and_asks_again_for_the_rest(
    mock: respx.MockRouter,
) -> None:
    """GraphQL errors beside some anime: those titles are used; a missing ID is not remembered as one
    AniList does not know (it is asked again), and the attempt says the answer was partial."""
    mock.post(f"{TRACEMOE}/search").respond(200, json=tracemoe_answer(11887, 21))
    partial = {
        **page(media(11887, "Kokoro Connect")),
        "errors": [{"message": "Internal Error", "status": 500}],
    }
    lookup = mock.post(ANILIST).mock(
        side_effect=[httpx.Response(200, json=partial), httpx.Response(200, json=KNOWN)]
    )
    with client(mock) as engine:
        first = engine.search(picture(), anilist_info=True, cache=False)
        second = engine.search(picture(), anilist_info=True, cache=False)
    assert asked_ids(lookup) == [[11887, 21], [21]]
    assert [hit.title is not None for hit in first.hits] == [True, False]
    assert "answered in part (ProviderServerError: anilist: Internal Error" in (
        first.attempts[-1].reason or ""
    )
    assert [hit.title is not None for hit in second.hits] == [True, True]


@pytest.mark.anyio
async def test_a_search_waiting_for_anothers_lookup_says_so_when_its_deadline_passes() -> None:
    """The shared lookup outlives a waiting search's deadline: that search's hits stay untitled, with an
    `anilist` attempt saying why (it had none)."""
    from anisearch import AsyncClient

    async def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "anilist.test":
            await anyio.sleep(1.0)
            return httpx.Response(200, json=KNOWN)
        return httpx.Response(200, json=tracemoe_answer(11887))

    late: list[Any] = []
    async with AsyncClient(settings(cache="off"), httpx.MockTransport(answer)) as engine:

        async def patient() -> None:
            await engine.search(picture(), anilist_info=True)

        async def hurried() -> None:
            await anyio.sleep(0.1)  # the other search's lookup is in flight
            late.append(await engine.search(picture(), anilist_info=True, deadline=0.5))

        async with anyio.create_task_group() as searches:
            searches.start_soon(patient)
            searches.start_soon(hurried)
    (result,) = late
    assert romaji(result) is None
    failed = result.attempts[-1]
    assert (failed.provider, failed.outcome, failed.error) == ("anilist", "failed", "ProviderTimeoutError")


class FailingAniList:
    """AniList answering 500 to its first ``failures`` lookups (every one: None), each after ``delay`` s;
    trace.moe finds Kokoro Connect."""

    def __init__(self, delay: float, failures: int | None = None) -> None:
        self.delay, self.failures, self.lookups = delay, failures, 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != "anilist.test":
            return httpx.Response(200, json=tracemoe_answer(11887))
        self.lookups += 1
        await anyio.sleep(self.delay)
        if self.failures is None or self.lookups <= self.failures:
            return httpx.Response(500, json={"data": None, "errors": [{"message": "oops", "status": 500}]})
        return httpx.Response(200, json=KNOWN)


@pytest.mark.anyio
async def test_searches_waiting_for_a_lookup_that_failed_ask_again_once_for_all() -> None:
    """The shared lookup failed (a 500): of the searches waiting for it, one asks again and the others
    wait for that one: all but the first are titled."""
    answer = FailingAniList(0.3, failures=1)
    results = await searches_at_once(answer, [0.0, 0.05, 0.1])
    assert answer.lookups == 2
    assert sorted(str(romaji(result)) for result in results) == ["Kokoro Connect", "Kokoro Connect", "None"]


def test_an_answer_cut_short_does_not_pause_the_lookups(mock: respx.MockRouter) -> None:
    """AniList answered, and the connection broke while the body came: that is not "no answer at all",
    so the next search asks again."""

    class CutShort(httpx.AsyncByteStream):
        async def __aiter__(self) -> Any:
            yield b'{"data": {"Pa'
            raise httpx.ReadError("connection reset")

    mock.post(f"{TRACEMOE}/search").respond(200, json=tracemoe_answer(11887))
    lookup = mock.post(ANILIST).mock(
        side_effect=[httpx.Response(200, stream=CutShort()), httpx.Response(200, json=KNOWN)]
    )
    with client(mock) as engine:
        first = engine.search(picture(), anilist_info=True, cache=False)
        second = engine.search(picture(), anilist_info=True, cache=False)
    assert lookup.call_count == 2
    assert (first.attempts[-1].outcome, first.attempts[-1].status_code) == ("failed", 200)
    assert romaji(second) == "Kokoro Connect"


@pytest.mark.anyio
async def test_a_lookup_that_keeps_failing_is_asked_again_once_not_once_per_waiting_search() -> None:
    """Six searches of the same anime while AniList answers 500: one lookup, one more for all the waiting
    searches, and each of them says the lookup failed."""
    answer = FailingAniList(0.2)
    results = await searches_at_once(answer, [n * 0.02 for n in range(6)])
    assert answer.lookups == 2
    assert [(r.attempts[-1].provider, r.attempts[-1].outcome) for r in results] == [("anilist", "failed")] * 6


@pytest.mark.anyio
async def test_a_search_takes_the_answer_of_a_lookup_that_ended_while_it_asked_its_own() -> None:
    """A search needs IDs 1 and 2 while another search asks for 1: it asks for 2 alone, and takes 1 from
    the other's answer though that ended first (it asked for 1 again)."""
    from anisearch import AsyncClient

    asked: list[list[int]] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        ids = json.loads(request.content)["variables"]["ids"]
        asked.append(ids)
        await anyio.sleep(0.2 if ids == [11887] else 0.5)
        return httpx.Response(200, json=KNOWN)

    titled: dict[tuple[int, ...], list[bool]] = {}
    async with AsyncClient(settings(cache="off"), httpx.MockTransport(answer)) as engine:
        enrich = engine._enrichment(fill=True, include_adult=None)

        async def search(ids: tuple[int, ...], after: float) -> None:
            await anyio.sleep(after)
            hits = [Hit(provider="x", anilist_id=anilist_id, similarity=0.9) for anilist_id in ids]
            result = await enrich(SearchResult(hits=hits))
            titled[ids] = [hit.title is not None for hit in result.hits]

        async with anyio.create_task_group() as searches:
            searches.start_soon(search, (11887,), 0.0)
            searches.start_soon(search, (11887, 21), 0.05)
    assert asked == [[11887], [21]]
    assert titled == {(11887,): [True], (11887, 21): [True, True]}


@pytest.mark.anyio
async def test_a_lookup_cut_short_by_its_own_searchs_deadline_does_not_end_anothers_wait() -> None:
    """A's lookup fails; B (deadline 0.5 s) asks again and its deadline cuts that short; C, with no
    deadline, does not take B's timeout for AniList's answer: it asks itself, and is titled."""
    from anisearch import AsyncClient

    answer = FailingAniList(0.3, failures=1)
    titles: dict[str, str | None] = {}
    async with AsyncClient(settings(cache="off"), httpx.MockTransport(answer)) as engine:

        async def search(name: str, after: float, deadline: float | None) -> None:
            await anyio.sleep(after)
            titles[name] = romaji(await engine.search(picture(), anilist_info=True, deadline=deadline))

        async with anyio.create_task_group() as searches:
            searches.start_soon(search, "A", 0.0, None)
            searches.start_soon(search, "B", 0.05, 0.5)
            searches.start_soon(search, "C", 0.1, None)
    assert titles == {"A": None, "B": None, "C": "Kokoro Connect"}
