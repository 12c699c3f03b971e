"""Parsers for whatanimeisthis.com's site routes: search, rankings, recent searches, credits, API keys.

Every shape here is a guess (``research/whatanimeisthis-contract.md`` §4), so each parser accepts the
variants §7 lists and raises :class:`~anisearch.UpstreamResponseError` naming what it could not find,
never anything that is not an :class:`~anisearch.AnisearchError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr, ValidationError

from anisearch.provider import (
    ApiKey,
    ConfigurationError,
    CreatedApiKey,
    Credits,
    Hit,
    Page,
    RankingEntry,
    RecentSearch,
    as_bool,
    as_int,
    as_str,
    page_of,
)

from ._errors import KEY_NAME_LIMITS, PROVIDER, check, error_for, problem_of, uninterpretable
from ._fields import (
    adult_of,
    anilist_id_of,
    episode_of,
    looks_masked,
    mal_id_of,
    mask,
    pick_in,
    sources,
    synonyms_of,
    text,
    title_of,
)
from ._tolerant import (
    as_datetime,
    as_similarity,
    find_list,
    in_percent,
    pick,
    pick_seconds,
    unwrap,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    import httpx

__all__ = [
    "MAX_HITS",
    "Payload",
    "frames_searched",
    "parse_api_keys",
    "parse_created_api_key",
    "parse_credits",
    "parse_hits",
    "parse_rankings",
    "parse_recent_searches",
    "payload_of",
    "query_int",
    "remaining_credits",
]

MAX_HITS = 5
"""The site returns up to 5 candidates per search (api-docs)."""

_KEY_LIST = ("items", "apiKeys", "apikeys", "keys", "data", "results", "list", "records", "rows")
_REMAINING = (
    "remainingCredits", "creditsRemaining", "remainingSearches", "searchesRemaining", "remaining",
    "creditsLeft", "leftCredits", "left", "balance",
)  # fmt: skip
_PLAINTEXT = (
    "key",
    "apiKey",
    "plainKey",
    "plaintextKey",
    "plainTextKey",
    "plaintext",
    "secret",
    "token",
    "fullKey",
)
_SCENE_TIME_LIMIT = 1_000_000  # seconds; a larger "timestamp" is a date, not a time in an episode


@dataclass(frozen=True, slots=True)
class Payload:
    """A success body with its envelope peeled off.

    Attributes:
        value: The payload (a list or a dict, or a number for credits).
        meta: The envelope's other keys (``total``, ``hasMore``, ``remainingCredits``...).
    """

    value: Any
    meta: dict[str, Any]

    @property
    def containers(self) -> list[dict[str, Any]]:
        """The dicts to look in for metadata: the payload (if a dict), then the envelope."""
        found = [self.value] if isinstance(self.value, dict) else []
        found.append(self.meta)
        return found


def payload_of(response: httpx.Response) -> Payload:
    """Check a response for errors and peel its envelope.

    Raises:
        ProviderError: The response is an error (see ``_errors.ERROR_RULES``).
    """
    body = check(response)
    value, meta = unwrap(body.json)
    return Payload(value, meta)


def _items(
    response: httpx.Response, payload: Payload, what: str, keys: tuple[str, ...] | None = None
) -> list[Any]:
    found = find_list(payload.value) if keys is None else find_list(payload.value, keys)
    if found is None:
        raise uninterpretable(response, f"no list of {what} in the answer")
    return found


def _object(response: httpx.Response, item: Any, index: int, what: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise uninterpretable(response, f"{what} {index} is not an object")
    return item


_GUEST_REMAINING = ("remainingSearches", "searchesRemaining")
_CREDIT_KEYS = ("remainingCredits", "creditsRemaining", "credits", "creditsLeft", "leftCredits")


def guest_answer(containers: list[dict[str, Any]]) -> bool:
    """Whether a search answer reports a guest's allowance (remaining searches) and no credits."""
    guest = any(pick(container, *_GUEST_REMAINING) is not None for container in containers)
    return guest and not any(pick(container, *_CREDIT_KEYS) is not None for container in containers)


def remaining_credits(containers: list[dict[str, Any]]) -> int | None:
    """A remaining-credits number anywhere the search answer may put it (also under ``quota``/``credits``)."""
    for container in containers:
        value = as_int(pick(container, *_REMAINING))
        if value is None:
            value = as_int(pick(container, "credits"))
        if value is None:
            for key in ("quota", "credits", "usage"):
                value = as_int(pick(pick(container, key), *_REMAINING))
                if value is not None:
                    break
        if value is not None:
            return max(value, 0)
    return None


# ---------------------------------------------------------------- search


_HIT_SIMILARITY = ("similarity", "score", "confidence", "matchScore", "match")
_RECENT_SIMILARITY = ("similarity", "score", "confidence")


def _percent(items: list[Any], names: tuple[str, ...]) -> bool:
    """Whether this answer sends its similarities as percentages (:func:`in_percent` of all of them)."""
    return in_percent(pick(item, *names) for item in items if isinstance(item, dict))


def _hit(response: httpx.Response, item: Any, index: int, *, percent: bool) -> Hit:
    item = _object(response, item, index, "search result")
    similarity = as_similarity(pick(item, *_HIT_SIMILARITY), percent=percent)
    if similarity is None:
        raise uninterpretable(response, f"search result {index} has no similarity in 0..1 (or 0..100 %)")
    try:
        return Hit(
            provider=PROVIDER,
            anilist_id=anilist_id_of(item),
            mal_id=mal_id_of(item),
            title=title_of(item),
            synonyms=synonyms_of(item),
            is_adult=adult_of(item),
            episode=episode_of(item),
            episode_start=as_int(pick(item, "episodeStart")),
            episode_end=as_int(pick(item, "episodeEnd")),
            start_seconds=pick_seconds(item, "from", "start", "startTime", "begin"),
            end_seconds=pick_seconds(item, "to", "end", "endTime"),
            at_seconds=pick_seconds(item, "at", "timestamp", "time"),
            episode_duration_seconds=pick_seconds(item, "duration", "episodeDuration"),
            similarity=similarity,
            filename=text(pick(item, "filename", "fileName", "file")),
            video_url=text(pick(item, "video", "videoUrl", "videoURL", "previewVideo", "clip")),
            image_url=text(
                pick(item, "image", "imageUrl", "imageURL", "thumbnail", "thumbnailUrl", "previewImage")
            ),
            raw=item,
        )
    except ValidationError as exc:
        raise uninterpretable(
            response, f"search result {index} does not fit a hit: {exc.errors()[0]['msg']}"
        ) from exc


def parse_hits(response: httpx.Response) -> tuple[list[Hit], Payload]:
    """Hits of a search answer, similarity descending, at most :data:`MAX_HITS`; and the payload.

    Raises:
        ProviderError: The answer is an error.
        UpstreamResponseError: No list of results, or a result without a usable similarity.
    """
    payload = payload_of(response)
    items = _items(response, payload, "search results")
    percent = _percent(items, _HIT_SIMILARITY)
    hits = [_hit(response, item, index, percent=percent) for index, item in enumerate(items)]
    hits.sort(key=lambda hit: hit.similarity, reverse=True)
    return hits[:MAX_HITS], payload


def frames_searched(payload: Payload) -> int | None:
    """Frames the engine compared, when said (``frameCount``, trace.moe's name)."""
    return as_int(pick_in(payload.containers, "frameCount", "framesSearched"))


# ---------------------------------------------------------------- rankings and recent searches


def _cover(item: dict[str, Any]) -> str | None:
    value = pick_in(sources(item), "coverImage", "cover", "coverUrl", "poster", "image", "imageUrl")
    if isinstance(value, dict):
        value = pick(value, "large", "extraLarge", "medium", "url")
    return text(value)


def parse_rankings(response: httpx.Response, limit: int | None = None) -> list[RankingEntry]:
    """The most-searched anime, in rank order, at most ``limit`` entries.

    Raises:
        ProviderError: The answer is an error.
        UpstreamResponseError: No list of rankings, or an entry that is not an object.
    """
    payload = payload_of(response)
    entries: list[RankingEntry] = []
    for index, raw in enumerate(_items(response, payload, "rankings")):
        item = _object(response, raw, index, "ranking entry")
        rank = as_int(pick(item, "rank", "position", "place"))
        entries.append(
            RankingEntry(
                rank=rank if rank is not None and rank > 0 else index + 1,
                anilist_id=anilist_id_of(item),
                title=title_of(item),
                searches=as_int(
                    pick(item, "count", "searches", "searchCount", "searchesCount", "total", "hits")
                ),
                is_adult=adult_of(item),
                cover_image_url=_cover(item),
                raw=item,
            )
        )
    entries.sort(key=lambda entry: entry.rank)
    return entries[:limit] if limit else entries


def _recent(response: httpx.Response, raw: Any, index: int, *, percent: bool) -> RecentSearch:
    item = _object(response, raw, index, "recent search")
    searched_at = as_datetime(pick(item, "createdAt", "searchedAt", "created", "date", "updatedAt"))
    at_seconds = pick_seconds(item, "at", "timestamp", "time", "from")
    if at_seconds is not None and at_seconds > _SCENE_TIME_LIMIT:
        searched_at = searched_at or as_datetime(pick(item, "timestamp", "time"))
        at_seconds = None
    try:
        return RecentSearch(
            id=as_str(pick(item, "id", "_id", "uuid", "searchId"), ids=True),
            searched_at=searched_at,
            anilist_id=anilist_id_of(item),
            title=title_of(item),
            episode=episode_of(item),
            at_seconds=at_seconds,
            similarity=as_similarity(pick(item, *_RECENT_SIMILARITY), percent=percent),
            image_url=text(
                pick(item, "imageUrl", "image", "thumbnail", "thumbnailUrl", "screenshot", "screenshotUrl")
            ),
            raw=item,
        )
    except ValidationError as exc:  # pragma: no cover - every field is coerced to its type above
        raise uninterpretable(
            response, f"recent search {index} does not fit: {exc.errors()[0]['msg']}"
        ) from exc


def _page_meta(payload: Payload) -> tuple[int | None, bool | None]:
    """(total, has_more) as §7.4 reads them, None where the answer does not say."""
    total: int | None = None
    has_more: bool | None = None
    for nested in _paging_places(payload):
        if total is None:
            total = as_int(pick(nested, "total", "totalCount", "count", "allCount", "totalItems"))
        if has_more is None:
            has_more = as_bool(pick(nested, "hasMore", "hasNextPage", "hasNext", "more"), loose=True)
        if has_more is None and isinstance(nested, dict):
            for key in ("nextOffset", "nextCursor", "nextPage"):
                if any(spelling in nested for spelling in (key, _snake(key))):
                    has_more = pick(nested, key) is not None
    return total, has_more


def _snake(name: str) -> str:
    return "".join(f"_{char.lower()}" if char.isupper() else char for char in name)


def query_int(response: httpx.Response, name: str) -> int | None:
    """An integer query parameter of the request that got ``response``, or None."""
    try:
        return as_int(response.request.url.params.get(name))
    except RuntimeError:  # a response built without its request
        return None


def parse_recent_searches(response: httpx.Response) -> Page[RecentSearch]:
    """One page of recent public searches, with ``total``/``has_more`` as reported or inferred.

    Raises:
        ProviderError: The answer is an error.
        UpstreamResponseError: No list of searches, or an entry that is not an object.
    """
    payload = payload_of(response)
    raws = _items(response, payload, "searches")
    percent = _percent(raws, _RECENT_SIMILARITY)
    items = [_recent(response, raw, index, percent=percent) for index, raw in enumerate(raws)]
    offset = query_int(response, "offset") or 0
    total, has_more = _page_meta(payload)
    size = _reported(payload, "limit", "pageSize", "perPage") or query_int(response, "limit")  # a cap, if any
    return page_of(items, total=total, has_more=has_more, first=offset, size=size)


# ---------------------------------------------------------------- credits


def _credits_containers(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, dict):
        return []
    found = [value]
    for key in ("credits", "data", "balance", "user"):
        nested = value.get(key)
        if isinstance(nested, dict):
            found.append(nested)
    return found


def parse_credits(response: httpx.Response) -> Credits:
    """The signed-in user's credits: a bare number, or ``{credits|remaining|remainingCredits...}``.

    Raises:
        ProviderError: The answer is an error (401: not signed in).
        UpstreamResponseError: No remaining-credits number in the answer.
    """
    payload = payload_of(response)
    bare = as_int(payload.value)
    if bare is not None:
        return Credits(remaining=max(bare, 0), raw={"credits": payload.value})
    containers = _credits_containers(payload.value)
    free_remaining = as_int(
        pick_in(containers, "freeCreditsRemaining", "freeRemaining", "remainingFreeCredits", "dailyRemaining",
                "freeCreditsLeft", "dailyCreditsRemaining")
    )  # fmt: skip
    paid = as_int(pick_in(containers, "paidCredits", "purchasedCredits", "paidRemaining", "paid"))
    remaining = remaining_credits(containers)
    if remaining is None and (free_remaining is not None or paid is not None):
        remaining = (free_remaining or 0) + (paid or 0)
    if remaining is None:
        raise uninterpretable(
            response, "no remaining-credits number (credits, remaining, remainingCredits...)"
        )
    return Credits(
        remaining=remaining,
        free_remaining=free_remaining,
        free_daily=as_int(
            pick_in(
                containers,
                "freeCredits",
                "dailyFreeCredits",
                "freeDaily",
                "dailyCredits",
                "freeCreditsPerDay",
            )
        ),
        paid=paid,
        resets_at=as_datetime(
            pick_in(
                containers,
                "resetsAt",
                "resetAt",
                "nextReset",
                "nextResetAt",
                "freeCreditsResetAt",
                "resetTime",
            )
        ),
        raw=payload.value if isinstance(payload.value, dict) else {},
    )


# ---------------------------------------------------------------- API keys


def _status(item: dict[str, Any]) -> str | None:
    status = text(pick(item, "status", "state"))
    if status is not None:
        return status
    if as_bool(pick(item, "revoked"), loose=True):
        return "revoked"
    enabled = as_bool(pick(item, "enabled", "active", "isActive"), loose=True)
    return None if enabled is None else ("active" if enabled else "disabled")


def _masked(item: dict[str, Any]) -> str | None:
    for name in ("maskedKey", "keyPreview", "preview", "key", "apiKey", "displayKey"):
        value = text(pick(item, name))
        if value is not None:
            return mask(value)
    start = text(pick(item, "start", "prefix"))
    return f"{start}…" if start is not None else None


def _api_key(response: httpx.Response, raw: Any, index: int) -> ApiKey:
    item = _object(response, raw, index, "API key")
    masked = _masked(item)
    key_id = as_str(pick(item, "id", "_id", "keyId", "uuid"), ids=True) or masked
    if key_id is None:
        raise uninterpretable(response, f"API key {index} has no id")
    redacted = {
        name: mask(value) if isinstance(value, str) and name in _PLAINTEXT else value
        for name, value in item.items()
    }
    return ApiKey(
        id=key_id,
        title=text(pick(item, "title", "name", "label", "description")),
        masked_key=masked,
        status=_status(item),
        created_at=as_datetime(pick(item, "createdAt", "created")),
        last_used_at=as_datetime(pick(item, "lastUsedAt", "lastUsed", "lastRequest", "lastUsedTime")),
        raw=redacted,
    )


def parse_api_keys(response: httpx.Response) -> Page[ApiKey]:
    """One page of the account's keys, masked (a full key in a list is masked here).

    Raises:
        ProviderError: The answer is an error (401: not signed in).
        UpstreamResponseError: No list of keys, or a key without an id.
    """
    payload = payload_of(response)
    items = [
        _api_key(response, raw, index)
        for index, raw in enumerate(_items(response, payload, "API keys", _KEY_LIST))
    ]
    # the paging the answer reports (a server may cap the size asked for), else the request's
    offset = _reported(payload, "offset")
    # "limit" is a page size only beside an offset (better-auth's paging): alone it may be another limit
    limit = _reported(payload, "limit") if offset is not None else None
    size = _reported(payload, "pageSize", "perPage") or limit or query_int(response, "pageSize")
    page = _reported(payload, "page") or query_int(response, "page") or 1
    first = offset if offset is not None else (page - 1) * size if size else 0
    total, has_more = _page_meta(payload)
    return page_of(items, total=total, has_more=has_more, first=first, size=size)


def _reported(payload: Payload, *names: str) -> int | None:
    """A paging number the answer reports (at its top, or under ``pagination``/``meta``), else None."""
    for nested in _paging_places(payload):
        value = as_int(pick(nested, *names))
        if value is not None and value >= 0:
            return value
    return None


def _paging_places(payload: Payload) -> Iterator[Any]:
    """Where an answer may say how it pages (§7.4): each container, and its ``pagination`` and ``meta``."""
    for container in payload.containers:
        yield from (container, pick(container, "pagination"), pick(container, "meta"))


def parse_created_api_key(response: httpx.Response) -> CreatedApiKey:
    """A new key with its plaintext, which the site shows this one time only.

    Raises:
        ConfigurationError: The site refused the title (``INVALID_NAME_LENGTH``: titles are 1 to 32
            characters); nothing was created. It is the caller's argument that is wrong, so it is a
            usage error (``anisearch keys create`` exits 2), never an image-size error.
        ProviderError: The answer is another error.
        UpstreamResponseError: No plaintext key in the answer (it cannot be recovered later: revoke
            the key on the site and create another).
    """
    problem = problem_of(response)
    if problem is not None and problem.code == "INVALID_NAME_LENGTH":
        raise ConfigurationError(
            f"the API key title was refused: {problem.message} (titles are {KEY_NAME_LIMITS} characters)"
        ) from error_for(response)
    payload = payload_of(response)
    value = payload.value
    if not isinstance(value, dict):
        raise uninterpretable(response, "the created API key is not an object")
    containers = [
        value,
        *(
            nested
            for key in ("apiKey", "key", "record", "item")
            if isinstance(nested := value.get(key), dict)
        ),
    ]
    plaintext: str | None = None
    for container in containers:
        for name in _PLAINTEXT:
            candidate = text(pick(container, name))
            if candidate is not None and not looks_masked(candidate):
                plaintext = candidate
                break
        if plaintext is not None:
            break
    base = _api_key(response, containers[-1] if len(containers) > 1 else value, 0)
    if plaintext is None:
        raise uninterpretable(
            response,
            f"the site created API key {base.id!r} but sent no plaintext key, and it cannot be shown again: "
            "revoke it on the site and create another",
        )
    return CreatedApiKey(
        **base.model_dump(exclude={"masked_key", "raw"}),
        masked_key=mask(plaintext),
        key=SecretStr(plaintext),
        raw=base.raw,
    )
