"""Never run: mypy checks that the public API types the way users will call it."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

import anisearch


def sync_usage() -> None:
    result: anisearch.SearchResult = anisearch.search("shot.jpg", providers=["tracemoe", "whatanimeisthis"])
    best: anisearch.Hit | None = result.best
    match: anisearch.Hit | None = result.match
    lenient: anisearch.Hit | None = result.match_at(0.85)
    threshold: float = anisearch.DEFAULT_MIN_SIMILARITY
    print(match, lenient, threshold)
    if best is not None:
        anilist_id: int | None = best.anilist_id
        start: float | None = best.start_seconds
        similarity: float = best.similarity
        title: str | None = best.title.preferred() if best.title else None
        print(anilist_id, start, similarity, title, best.episode)
    with anisearch.Client() as client:
        client.search(Path("shot.png"), min_similarity=0.9, strategy="fanout")
        client.search(b"\xff\xd8", cut_borders=True, anilist_id=11887, cache=False)
        client.search(io.BytesIO(b""), anilist_info=True)
        safe = client.search(b"...", anilist_info=True, include_adult=False)
        dropped: int = safe.adult_hits_dropped
        mal_id: int | None = safe.best.mal_id if safe.best else None
        cover: str | None = safe.best.cover_image_url if safe.best else None
        print(dropped, mal_id, cover)
        client.search(Image.new("RGB", (4, 4)), deadline=20.0)
        quotas: list[anisearch.Quota] = client.quota("tracemoe", refresh=True)
        infos: list[anisearch.ProviderInfo] = client.providers()
        ranks: list[anisearch.RankingEntry] = client.rankings(period="weekly", limit=10, include_adult=False)
        recent: list[anisearch.RecentSearch] = client.recent_searches(limit=5, offset=0)
        balance: anisearch.Credits = client.credits()
        keys: list[anisearch.ApiKey] = client.api_keys.list(page=1, page_size=20)
        paged: anisearch.PagedList[anisearch.ApiKey] = client.api_keys.list()
        total: int | None = paged.total
        pages: int | None = paged.pages
        more: bool | None = paged.has_more
        created: anisearch.CreatedApiKey = client.api_keys.create("bot")
        secret: str = created.key.get_secret_value()
        client.sign_in("a@b.c", "pw")
        client.sign_out()
        print(quotas, infos, ranks, recent, balance, keys, secret, total, pages, more)


def callbacks_and_lifecycle() -> None:
    attempts: list[anisearch.Attempt] = []
    on_attempt: anisearch.AttemptCallback = attempts.append
    on_wait: anisearch.WaitCallback = print
    strategy: anisearch.Strategy = "fanout"
    client = anisearch.Client(on_attempt=on_attempt, on_wait=on_wait)
    keys: anisearch.ApiKeys = client.api_keys
    window: anisearch.QuotaWindow = client.quota()[0].window
    client.search("shot.jpg", strategy=strategy)
    client.close()
    client.close()  # closing twice is harmless
    closed: bool = client.closed
    print(keys, window, closed)


async def async_usage() -> None:
    result = await anisearch.asearch("https://example.com/a.jpg", deadline=30)
    anisearch.search(b"...", strategy="fanout", deadline=12.5)
    print(result.attempts[0].outcome, result.cached, result.frames_searched)
    async with anisearch.AsyncClient(settings=anisearch.Settings.load(timeout=60)) as client:
        await client.search("shot.jpg")
        async for item in client.iter_recent_searches(page_size=10, max_items=30):
            print(item.anilist_id)
        api_keys: anisearch.AsyncApiKeys = client.api_keys
        print(await api_keys.list())
    await client.aclose()  # closing twice is harmless
    try:
        anisearch.search("x.jpg")
    except* anisearch.QuotaExhaustedError as group:
        print(group.exceptions)
    try:
        anisearch.search("x.jpg")
    except anisearch.AllProvidersFailedError as failed:
        for error in failed.errors:  # each provider's error, typed
            name: str | None = error.provider
            status: int | None = error.status_code
            print(name, status)
        for attempt in failed.attempts:
            outcome: str = attempt.outcome
            print(outcome, attempt.reason)
