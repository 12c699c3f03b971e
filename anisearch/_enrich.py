"""Enrichment: every hit, whichever provider found it, gets its anime's titles, MAL ID, adult flag, format
and cover from a metadata provider (``anilist``), in one request per 50 AniList IDs, cached per ID.

The steps, after the search has answered:

1. Collect the result's AniList IDs (the ones whose adult flag is unknown, when only the adult filter
   needs them); take what the metadata cache (:class:`AnimeCache`) knows.
2. Ask the provider for the rest, 50 IDs a request: each request is reserved in the ledger like any
   provider's (its windows are data: AniList's 90 requests a minute), sent through the engine, and settled
   with what the answer said (``X-RateLimit-*``, a 429's ``Retry-After`` cool-down).
3. Fill each hit's missing fields. What an upstream already gave is kept (a trace.moe ``chinese`` title, a
   legacy ``mal_id``); only empty fields are filled.
4. With ``include_adult=False``, drop the hits whose anime is adult-only and count them in
   :attr:`SearchResult.adult_hits_dropped` (a hit whose flag stayed unknown is kept).

It is never fatal: a refusal, a failed or unreadable answer leaves the hits as they came and adds an
:class:`Attempt` for the metadata provider saying why. The core knows no provider: the metadata provider
comes from the ``anisearch.metadata`` entry-point group.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from anisearch._address import cache_name
from anisearch._anime_cache import SEARCH_OPEN_WAIT_MS, AnimeCache
from anisearch._config import is_redis_url
from anisearch._exceptions import (
    AnisearchError,
    ConfigurationError,
    LedgerError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    UpstreamResponseError,
)
from anisearch._ledger import Refusal, Stale, Ticket, provider_scope
from anisearch._ledger._windows import from_us
from anisearch._limits import remaining_seconds
from anisearch._models import Anime, Attempt, Hit, ProviderInfo, SearchResult, Title
from anisearch._provider import (
    PartialLookup,
    ProviderContext,
    available_metadata_providers,
    load_metadata_provider,
)
from anisearch._redact import redact
from anisearch._verdict import (
    DEFAULT_COOLDOWN_SECONDS,
    MAX_COOLDOWN_SECONDS,
    checked,
    failure_outcome,
    guarded,
    refusal_error,
)
from anisearch._verdict import reason as one_line

if TYPE_CHECKING:
    from pathlib import Path

    from anisearch._config import Settings
    from anisearch._ledger import Ledger
    from anisearch._provider import MetadataProvider

__all__ = ["Enricher", "fill_hit", "metadata_infos", "open_enricher"]

logger = logging.getLogger("anisearch")

Sender = Callable[[Any, httpx.Request], Awaitable[httpx.Response]]

_FILLED = (
    "mal_id",
    "is_adult",
    "format",
    "episode_count",
    "episode_minutes",
    "season",
    "season_year",
    "cover_image_url",
    "site_url",
)


def _merged_title(have: Title | None, found: Title | None) -> Title | None:
    if found is None:
        return have
    if have is None:
        return found
    missing = {
        name: getattr(found, name)
        for name in ("romaji", "english", "native")
        if not getattr(have, name) and getattr(found, name)
    }
    return have.model_copy(update=missing) if missing else have


def fill_hit(hit: Hit, anime: Anime) -> Hit:
    """``hit`` with its empty fields filled from ``anime``; what the hit already had is kept."""
    update: dict[str, Any] = {
        name: getattr(anime, name)
        for name in _FILLED
        if getattr(hit, name) is None and getattr(anime, name) is not None
    }
    title = _merged_title(hit.title, anime.title)
    if title is not hit.title:
        update["title"] = title
    if not hit.synonyms and anime.synonyms:
        update["synonyms"] = list(anime.synonyms)
    return hit.model_copy(update=update) if update else hit


def _with(hit: Hit, anime: Anime, *, fill: bool) -> Hit:
    """``hit`` filled from ``anime`` (:func:`fill_hit`); without ``fill`` (only the adult filter asked), only
    its adult flag, so titles stay off when the caller turned them off."""
    if fill:
        return fill_hit(hit, anime)
    if hit.is_adult is None and anime.is_adult is not None:
        return hit.model_copy(update={"is_adult": anime.is_adult})
    return hit


def metadata_provider(settings: Settings, name: str) -> MetadataProvider:
    """The metadata provider registered as ``name``, configured from ``settings``.

    Raises:
        UnknownProviderError: No metadata provider is registered as ``name``.
        ConfigurationError: Its settings are invalid.
    """
    context = ProviderContext(
        config=settings.provider_config(name), state_dir=settings.state_dir, timeout=settings.timeout
    )
    return load_metadata_provider(name).from_context(context)


def metadata_infos(settings: Settings) -> list[ProviderInfo]:
    """Every registered metadata provider as ``providers()`` lists it (``enabled``: the ``metadata``
    setting names it); one whose settings are invalid is left out, as for scene-search providers."""
    infos = []
    for name in available_metadata_providers():
        try:
            provider = metadata_provider(settings, name)
        except ConfigurationError:
            continue
        infos.append(
            ProviderInfo(
                name=name,
                base_url=redact(provider.base_url),
                enabled=settings.metadata_provider == name,
                authenticated=provider.credential.scope != "guest",
                capabilities=provider.capabilities.names(),
            )
        )
    return infos


def open_enricher(
    settings: Settings,
    ledger: Callable[[], Awaitable[Ledger]],
    send: Sender,
    on_attempt: Callable[[Attempt], None] | None = None,
) -> Enricher:
    """The enricher the settings describe: their metadata provider (None when ``metadata`` is ``off``:
    only hits already flagged adult can be dropped) and a metadata cache next to the result cache (in the
    cache dir when the result cache is on Redis; none when the cache is ``off``).

    Raises:
        UnknownProviderError: ``metadata`` names no installed metadata provider.
        ConfigurationError: The provider's settings are invalid (``ANISEARCH_ANILIST_URL`` ...).
    """
    name = settings.metadata_provider
    provider = metadata_provider(settings, name) if name is not None else None
    path = metadata_cache_path(settings)
    cache = (
        AnimeCache(path, open_wait_ms=SEARCH_OPEN_WAIT_MS)
        if path is not None and provider is not None
        else None
    )
    return Enricher(provider, ledger, send, cache if cache is not None and cache.usable else None, on_attempt)


def metadata_cache_path(settings: Settings) -> Path | None:
    """The metadata cache's file: next to the result cache's, or in the cache dir when the result cache
    is on Redis (this one stays a local file); None when the cache is ``off``."""
    if is_redis_url(settings.cache):
        return settings.cache_dir / "anime.sqlite3"
    path = settings.cache_path
    return None if path is None else path.with_name("anime.sqlite3")


ANILIST_ID_MAX = 2**31 - 1
"""The largest AniList ID: its GraphQL ``Int`` is 32-bit. A larger one (from a broken upstream) is never
looked up: one would fail the whole request, and SQLite cannot even hold one past 2**63."""
_UNREACHED_SECONDS = 30.0
"""After a lookup got no answer at all (no connection, or none within the whole timeout: not a search's
own deadline running out), lookups are skipped for this long, seconds: a search does not wait out the
timeout again for its titles."""
_DEADLINE_MARGIN = 0.5
"""A request that timed out with this little of the search's deadline left (seconds) was cut short by it."""


@dataclass(eq=False)
class _Lookup:
    """A lookup in flight: what it learnt of each ID (None: unknown to the provider), and when it ended."""

    done: anyio.Event = field(default_factory=anyio.Event)
    answers: dict[int, Anime | None] = field(default_factory=dict)
    attempt: Attempt | None = None
    """Its attempt, once it ended (None: cancelled)."""
    cut_short: bool = False
    """It ended by its own search's deadline, not by AniList's answer: another search asks again."""


def _worse(first: Attempt | None, then: Attempt | None) -> Attempt | None:
    """The attempt a result reports of two lookups: a failure (or a skip) rather than an answer, else
    the later one."""
    if first is None or then is None:
        return then or first
    return then if then.outcome != "ok" or first.outcome == "ok" else first


class _RefusedError(Exception):
    """The ledger refused a lookup, so no request was sent (the attempt is ``skipped``)."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(str(error))
        self.error = error


class Enricher:
    """Fills a result's hits from a metadata provider, through the ledger and the metadata cache.

    Args:
        provider: The metadata provider (``anilist``), or None to fill nothing (the adult filter then
            drops only hits an upstream flagged).
        ledger: Returns the engine's ledger (opened on first use).
        send: The engine's sender (one attempt's time and size limits; raises ``ProviderError``).
        cache: The metadata cache, or None to ask every time.
        on_attempt: Called with the metadata provider's :class:`Attempt`.
    """

    def __init__(
        self,
        provider: MetadataProvider | None,
        ledger: Callable[[], Awaitable[Ledger]],
        send: Sender,
        cache: AnimeCache | None,
        on_attempt: Callable[[Attempt], None] | None = None,
    ) -> None:
        self.provider = provider
        self._ledger = ledger
        self._send = send
        self._cache = cache
        self._on_attempt = on_attempt
        self._in_flight: dict[int, _Lookup] = {}  # AniList ID -> the lookup asking for it now
        # (time.monotonic(), what failed) of the last lookup that got no answer at all
        self._unreached: tuple[float, ProviderError] | None = None

    @property
    def _cache_name(self) -> str:
        """What the cache keeps the answers under: the provider's name, and its address when that is
        not its own (an emulator's or a mirror's answers are never taken for AniList's)."""
        return cache_name(self.provider)

    async def __call__(self, result: SearchResult, *, fill: bool, include_adult: bool) -> SearchResult:
        """``result`` with its hits filled (``fill``) and adult-only hits dropped (not ``include_adult``).

        Never raises for the lookup: a refused or failed one (the upstream, its answer, the ledger) is an
        :class:`Attempt` of the result, whose hits stay as their provider gave them.
        """
        wanted = [
            hit.anilist_id
            for hit in result.hits
            if hit.anilist_id is not None
            and 0 < hit.anilist_id <= ANILIST_ID_MAX
            and (fill or hit.is_adult is None)
        ]
        ids = list(dict.fromkeys(wanted))
        if not fill and include_adult:
            return result
        known, attempt = await self.lookup(ids) if ids else ({}, None)
        hits = [
            _with(hit, known[hit.anilist_id], fill=fill) if hit.anilist_id in known else hit
            for hit in result.hits
        ]
        kept = hits if include_adult else [hit for hit in hits if hit.is_adult is not True]
        update: dict[str, Any] = {
            "hits": kept,
            "adult_hits_dropped": result.adult_hits_dropped + len(hits) - len(kept),
        }
        if attempt is not None:
            update["attempts"] = [*result.attempts, attempt]
        return result.model_copy(update=update)

    async def lookup(self, anilist_ids: Sequence[int]) -> tuple[dict[int, Anime], Attempt | None]:
        """What the cache and the provider know of ``anilist_ids``, and the provider's attempt (None when
        nothing was asked: the cache, or a lookup in flight for another search, knew everything).

        An ID another search of this client is asking for now is not asked twice: this search waits for
        that answer (until its own deadline) and asks for what it did not bring.
        """
        if self.provider is None:
            return {}, None
        cached = (
            await self._cache.get(self._cache_name, anilist_ids, ttl_seconds=self.provider.ttl_seconds)
            if self._cache is not None
            else {}
        )
        known = {anilist_id: anime for anilist_id, anime in cached.items() if anime is not None}
        missing = [anilist_id for anilist_id in anilist_ids if anilist_id not in cached]
        pending = {i: self._in_flight[i] for i in missing if i in self._in_flight}  # others ask for these
        attempt = await self._ask_for([i for i in missing if i not in pending], known)
        waiting_since = time.monotonic()
        failed_once: set[int] = set()  # IDs a lookup this search waited for did not answer
        while pending:  # their answers; what they lacked is asked again once, by one of the searches
            with anyio.move_on_after(max(remaining_seconds(), 0.0)) as waited:
                for lookup in set(pending.values()):
                    await lookup.done.wait()
            if waited.cancelled_caught:
                late = ProviderTimeoutError(
                    "no answer before the search's deadline (another search was looking the same anime up)",
                    provider=self.provider.name,
                )
                return known, _worse(attempt, self._failed(late, waiting_since))
            left = []
            for anilist_id, lookup in pending.items():
                if anilist_id in lookup.answers:
                    if (anime := lookup.answers[anilist_id]) is not None:
                        known[anilist_id] = anime
                elif lookup.attempt is None or lookup.cut_short:  # cancelled, or its search's deadline
                    left.append(anilist_id)  # came first: that says nothing of AniList
                elif anilist_id in failed_once:  # asked again, and failed again: say so, ask no more
                    attempt = _worse(attempt, lookup.attempt)
                else:
                    failed_once.add(anilist_id)
                    left.append(anilist_id)
            pending = {i: self._in_flight[i] for i in left if i in self._in_flight}  # another asks again
            attempt = _worse(attempt, await self._ask_for([i for i in left if i not in pending], known))
        return known, attempt

    async def _ask_for(self, missing: list[int], known: dict[int, Anime]) -> Attempt | None:
        """Ask the provider for ``missing`` (``known`` takes what it finds), as a lookup other searches
        may wait for; its attempt, or None when there was nothing to ask."""
        if not missing:
            return None
        lookup = _Lookup()
        for anilist_id in missing:
            self._in_flight[anilist_id] = lookup
        try:
            lookup.attempt = await self._asked(missing, known, lookup.answers)
            lookup.cut_short = lookup.attempt.error == "ProviderTimeoutError" and (
                remaining_seconds() <= _DEADLINE_MARGIN
            )
            return lookup.attempt
        finally:
            for anilist_id in missing:
                if self._in_flight.get(anilist_id) is lookup:
                    del self._in_flight[anilist_id]
            lookup.done.set()

    async def _asked(
        self, missing: list[int], known: dict[int, Anime], answers: dict[int, Anime | None]
    ) -> Attempt:
        """The requests of one lookup, 50 IDs (``max_batch``) each; ``answers`` gets each batch's answer
        (None: the provider does not know the ID)."""
        provider = self.provider
        assert provider is not None  # noqa: S101 - lookup() returns before without one
        name = provider.name
        started = time.monotonic()
        status: int | None = None
        partial: list[str] = []  # what the upstream said of the parts of its answers that failed
        if (unreached := self._unreached) is not None:
            if time.monotonic() - unreached[0] < _UNREACHED_SECONDS:
                last = unreached[1]
                why = f"{one_line(last)}; not asked again for {_UNREACHED_SECONDS:g} s"
                return self._failed(_RefusedError(type(last)(why, provider=name)), started)
            self._unreached = None
        for start in range(0, len(missing), provider.max_batch):
            batch = missing[start : start + provider.max_batch]
            try:
                answered, status = await self._ask(batch)
            except (ProviderError, LedgerError, _RefusedError) as failure:
                if (
                    isinstance(failure, ProviderConnectionError | ProviderTimeoutError)
                    and failure.status_code is None  # no answer began (not a body cut short)
                    and remaining_seconds() > _DEADLINE_MARGIN  # not cut short by the search's own deadline
                ):
                    self._unreached = (time.monotonic(), failure)
                return self._failed(failure, started)
            found = {anime.anilist_id: anime for anime in answered}
            known.update(found)
            complete = not isinstance(answered, PartialLookup)  # else an ID it lacks may have failed
            if not complete:
                partial.append(getattr(answered, "reason", "") or "part of the answer failed")
            batch_answers: dict[int, Anime | None] = {
                anilist_id: found.get(anilist_id) for anilist_id in batch if anilist_id in found or complete
            }
            answers.update(batch_answers)
            if self._cache is not None:
                await self._cache.put(self._cache_name, batch_answers)
        attempt = Attempt(
            provider=name,
            outcome="ok",
            reason=f"answered in part ({'; '.join(partial)}); the rest is asked again next time"
            if partial
            else None,
            status_code=status,
            elapsed_seconds=time.monotonic() - started,
            scope="guest",
        )
        return self._report(attempt)

    def _failed(self, failure: ProviderError | LedgerError | _RefusedError, started: float) -> Attempt:
        """The attempt of a lookup that was refused (``skipped``: nothing sent) or failed."""
        name = self.provider.name if self.provider is not None else "metadata"
        exc = failure.error if isinstance(failure, _RefusedError) else failure
        asked = "skipped" if isinstance(failure, _RefusedError) else "failed"
        text = one_line(exc) if isinstance(exc, ProviderError) else f"{name}: {exc}"
        attempt = Attempt(
            provider=name,
            outcome=asked,
            reason=f"{text}; hits left as their provider gave them",
            error=type(exc).__name__,
            status_code=exc.status_code if isinstance(exc, ProviderError) else None,
            elapsed_seconds=time.monotonic() - started,
        )
        logger.info("%s %s: %s", name, asked, attempt.reason)
        return self._report(attempt)

    def close(self) -> None:
        """Close the metadata cache."""
        if self._cache is not None:
            self._cache.close()

    def _report(self, attempt: Attempt) -> Attempt:
        if self._on_attempt is not None:
            self._on_attempt(attempt)
        return attempt

    async def _ask(self, batch: list[int]) -> tuple[list[Anime], int]:
        """One lookup request, reserved and settled in the ledger.

        Raises:
            _RefusedError: The ledger refused it (nothing was sent).
            ProviderError: Not answered, or an error answer.
        """
        provider = self.provider
        if provider is None:  # pragma: no cover - lookup() asks nothing without a provider
            raise UpstreamResponseError("no metadata provider")
        try:
            request = guarded(provider.name, lambda: provider.lookup_request(batch))
        except AnisearchError as exc:  # a provider that refuses its own IDs: its failure, not the search's
            if isinstance(exc, ProviderError):
                raise
            raise UpstreamResponseError(str(exc), provider=provider.name) from exc
        ledger = await self._ledger()
        scope = provider_scope(provider)
        windows = tuple(provider.windows())
        reserved = await ledger.reserve(provider.name, scope, windows, take_slot=False)
        if isinstance(reserved, Stale):  # a window the upstream reports but cannot be asked about
            reserved = await ledger.reserve(
                provider.name, scope, windows, take_slot=False, trust_estimate=True
            )
        if isinstance(reserved, Refusal):
            wait = (from_us(reserved.until) - ledger.now()).total_seconds()
            raise _RefusedError(refusal_error(provider.name, reserved, wait))
        if not isinstance(reserved, Ticket):  # pragma: no cover - a trusted estimate is never stale
            raise UpstreamResponseError("the ledger could not decide", provider=provider.name)
        try:
            response = await self._send(provider, request)
        except ProviderError as exc:
            await ledger.settle(reserved, failure_outcome(exc))
            raise
        observations: list[Any] = []
        try:
            observations = checked(guarded(provider.name, lambda: provider.observe(response)), provider.name)
            answer: list[Anime] = guarded(provider.name, lambda: provider.parse_lookup(response))
        except ProviderError as exc:
            cooldown = None
            if isinstance(exc, RateLimitedError):
                wait = exc.retry_after if exc.retry_after is not None else DEFAULT_COOLDOWN_SECONDS
                until = ledger.now() + timedelta(seconds=min(max(wait, 0.0), MAX_COOLDOWN_SECONDS))
                cooldown = (until, one_line(exc), "rate")
                observations = [quota for quota in observations if quota.cooldown_until is None]
            await ledger.settle(reserved, "uncharged", observations=observations, cooldown=cooldown)
            raise
        await ledger.settle(reserved, "charged", observations=observations)
        return answer, response.status_code
