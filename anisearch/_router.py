"""The router: which provider to ask, in what order, and what to do when one fails.

Per search, for each provider in order: skip it (with a reason in ``attempts``) when the ledger says its
quota window is spent or it is cooling down; otherwise take a concurrency slot, send (stamina retries only
the transient errors of that one send: a full queue, a concurrency collision, a dropped connection),
record what the response says in the ledger, and either return or fall through to the next provider.

Fall-through rules, by error class: a spent quota marks the window exhausted; a rate limit sets a
cooldown for ``retry_after``; an authentication failure is reported and skipped; bad input
(:class:`InvalidImageError` raised locally) stops at once because no provider would take it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

import anyio
import stamina

from anisearch._exceptions import (
    AllProvidersFailedError,
    AuthenticationError,
    ConcurrencyLimitError,
    ProviderBusyError,
    ProviderConnectionError,
    ProviderError,
    QuotaExhaustedError,
    RateLimitedError,
)
from anisearch._models import Attempt, Hit, SearchResult

if TYPE_CHECKING:
    import httpx

    from anisearch._ledger._base import Ledger
    from anisearch._provider import Provider, ProviderAnswer, SearchQuery

__all__ = ["AttemptCallback", "Route", "Router", "Strategy", "merge_hits"]

logger = logging.getLogger("anisearch")

Strategy = Literal["fallback", "fanout"]
AttemptCallback = Callable[[Attempt], None]
Sender = Callable[["Provider", "httpx.Request"], Awaitable["httpx.Response"]]
QueryBuilder = Callable[["Provider"], Awaitable["SearchQuery"]]

TRANSIENT = (ConcurrencyLimitError, ProviderBusyError, ProviderConnectionError)
"""Errors retried against the same provider (bounded, jittered) before falling through."""
DEFAULT_COOLDOWN_SECONDS = 30.0
"""Cooldown after a rate limit that did not say how long to wait."""


@dataclass(frozen=True, slots=True)
class Route:
    """One provider as the router sees it.

    Attributes:
        provider: The provider instance.
        scope: The ledger scope id of its credential (see ``scope_id``).
        slots: Concurrency assumed until the upstream reports its own (trace.moe guest: 1).
        cache_key: The result-cache key of this search for this provider, or None when not caching.
    """

    provider: Provider
    scope: str
    slots: int = 1
    cache_key: str | None = None


@dataclass(slots=True)
class _Outcome:
    attempt: Attempt
    result: SearchResult | None = None
    error: ProviderError | None = None


def _iso_minute(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _reason(exc: ProviderError) -> str:
    text = exc.message
    if isinstance(exc, QuotaExhaustedError) and exc.resets_at is not None:
        text = f"{text} (frees at {_iso_minute(exc.resets_at)})"
    if exc.retry_after is not None and not isinstance(exc, QuotaExhaustedError):
        text = f"{text} (retry after {exc.retry_after:g} s)"
    return " ".join(text.split())[:200]


def _overlaps(a: Hit, b: Hit, slack: float = 5.0) -> bool:
    a_start, a_end, b_start, b_end = a.start_seconds, a.end_seconds, b.start_seconds, b.end_seconds
    if a_start is None or a_end is None or b_start is None or b_end is None:
        return False
    return a_start <= b_end + slack and b_start <= a_end + slack


def merge_hits(hits: Sequence[Hit]) -> list[Hit]:
    """Merge hits of the same AniList ID, episode and overlapping time window (within 5 s).

    The most similar hit of each group is kept; titles, MAL ID and synonyms missing from it are filled
    from the others. Returns similarity descending.
    """
    kept: list[Hit] = []
    for hit in sorted(hits, key=lambda h: h.similarity, reverse=True):
        twin = next(
            (
                k
                for k in kept
                if hit.anilist_id is not None
                and k.anilist_id == hit.anilist_id
                and str(k.episode) == str(hit.episode)
                and _overlaps(k, hit)
            ),
            None,
        )
        if twin is None:
            kept.append(hit)
            continue
        fill = {
            name: getattr(hit, name)
            for name in ("title", "mal_id", "is_adult", "episode_duration_seconds")
            if getattr(twin, name) is None and getattr(hit, name) is not None
        }
        if not twin.synonyms and hit.synonyms:
            fill["synonyms"] = hit.synonyms
        if fill:
            kept[kept.index(twin)] = twin.model_copy(update=fill)
    return kept


class Router:
    """Orders providers, skips spent ones, retries transient errors, falls through, and records it all."""

    def __init__(
        self,
        ledger: Ledger,
        send: Sender,
        *,
        wait_seconds: float = 30.0,
        lease_seconds: float = 90.0,
        on_attempt: AttemptCallback | None = None,
        remember: Callable[[str, SearchResult], Awaitable[None]] | None = None,
    ) -> None:
        self._ledger = ledger
        self._send = send
        self._wait_seconds = wait_seconds
        self._lease_seconds = lease_seconds
        self._on_attempt = on_attempt
        self._remember = remember

    async def search(
        self,
        routes: Sequence[Route],
        query_for: QueryBuilder,
        *,
        strategy: Strategy = "fallback",
        min_similarity: float | None = None,
        anilist_id: int | None = None,
    ) -> SearchResult:
        """Ask the routes' providers and return the answer (see the module docstring for the rules).

        Raises:
            InvalidImageError: The input cannot be searched by any provider (raised at once).
            AllProvidersFailedError: No provider answered; holds each provider's error in order.
        """
        if strategy == "fanout":
            outcomes = await self._fanout(routes, query_for, anilist_id)
            return self._merge_fanout(outcomes)
        outcomes = []
        best: SearchResult | None = None
        for route in routes:
            outcome = await self._attempt(route, query_for, anilist_id)
            weak = False
            if outcome.result is not None:
                weak = min_similarity is not None and (
                    outcome.result.best is None or outcome.result.best.similarity < min_similarity
                )
                if best is None or _strength(outcome.result) > _strength(best):
                    best = outcome.result
                if weak:
                    top = outcome.result.best.similarity if outcome.result.best else 0.0
                    outcome.attempt = outcome.attempt.model_copy(
                        update={"reason": f"best similarity {top:.3f} < {min_similarity:g}: asked the next"}
                    )
            outcomes.append(outcome)
            self._report(outcome.attempt)
            if outcome.result is not None and not weak:
                break
        attempts = [o.attempt for o in outcomes]
        if best is not None:
            return best.model_copy(update={"attempts": attempts})
        raise self._all_failed(outcomes)

    async def _fanout(
        self, routes: Sequence[Route], query_for: QueryBuilder, anilist_id: int | None
    ) -> list[_Outcome]:
        outcomes: list[_Outcome | None] = [None] * len(routes)

        async def run(index: int, route: Route) -> None:
            outcome = await self._attempt(route, query_for, anilist_id)
            outcomes[index] = outcome
            self._report(outcome.attempt)

        async with anyio.create_task_group() as group:
            for index, route in enumerate(routes):
                group.start_soon(run, index, route)
        return [o for o in outcomes if o is not None]

    def _merge_fanout(self, outcomes: list[_Outcome]) -> SearchResult:
        answered = [o.result for o in outcomes if o.result is not None]
        if not answered:
            raise self._all_failed(outcomes)
        hits = merge_hits([hit for result in answered for hit in result.hits])
        frames = [r.frames_searched for r in answered if r.frames_searched is not None]
        return SearchResult(
            hits=hits,
            provider=answered[0].provider,
            frames_searched=sum(frames) if frames else None,
            cached=all(r.cached for r in answered),
            attempts=[o.attempt for o in outcomes],
            quota=next((r.quota for r in answered if r.quota is not None), None),
        )

    def _all_failed(self, outcomes: list[_Outcome]) -> AllProvidersFailedError:
        errors: list[Exception] = [o.error for o in outcomes if o.error is not None]
        if not errors:
            errors = [ProviderError("no provider was configured for this search")]
        names = ", ".join(f"{o.attempt.provider} ({o.attempt.outcome})" for o in outcomes) or "none"
        group = AllProvidersFailedError(f"no provider answered: {names}", errors)
        group.attempts = [o.attempt for o in outcomes]
        return group

    def _report(self, attempt: Attempt) -> None:
        logger.info(
            "%s %s%s",
            attempt.provider,
            attempt.outcome,
            f": {attempt.reason}" if attempt.reason else "",
            extra={
                "anisearch_provider": attempt.provider,
                "anisearch_outcome": attempt.outcome,
                "anisearch_reason": attempt.reason,
                "anisearch_error": attempt.error,
                "anisearch_status_code": attempt.status_code,
                "anisearch_elapsed_seconds": attempt.elapsed_seconds,
            },
        )
        if self._on_attempt is not None:
            self._on_attempt(attempt)

    async def _attempt(self, route: Route, query_for: QueryBuilder, anilist_id: int | None) -> _Outcome:
        name = route.provider.name
        admission = await self._ledger.admit(name, route.scope)
        if not admission.allowed:
            reason = admission.reason or "not admitted by the ledger"
            error_cls = RateLimitedError if reason.startswith("cooling") else QuotaExhaustedError
            return _Outcome(
                Attempt(provider=name, outcome="skipped", reason=reason, error=error_cls.__name__),
                error=error_cls(reason, provider=name),
            )
        started = time.monotonic()
        lease = await self._ledger.acquire(
            name,
            route.scope,
            slots=route.slots,
            lease_seconds=self._lease_seconds,
            wait_seconds=self._wait_seconds,
        )
        if lease is None:
            reason = f"no concurrency slot freed within {self._wait_seconds:g} s"
            return _Outcome(
                Attempt(
                    provider=name,
                    outcome="skipped",
                    reason=reason,
                    error=ConcurrencyLimitError.__name__,
                    elapsed_seconds=time.monotonic() - started,
                ),
                error=ConcurrencyLimitError(reason, provider=name),
            )
        try:
            return await self._ask(route, query_for, anilist_id, started)
        finally:
            await self._ledger.release(lease)

    async def _ask(
        self, route: Route, query_for: QueryBuilder, anilist_id: int | None, started: float
    ) -> _Outcome:
        provider = route.provider
        last_status: list[int | None] = [None]
        try:
            query = await query_for(provider)
            answer = await self._send_with_retries(route, query, last_status)
        except ProviderError as exc:  # plain InvalidImageError is not one: bad input stops everything
            await self._after_failure(route, exc)
            return _Outcome(
                Attempt(
                    provider=provider.name,
                    outcome="failed",
                    reason=_reason(exc),
                    error=type(exc).__name__,
                    status_code=exc.status_code if exc.status_code is not None else last_status[0],
                    elapsed_seconds=time.monotonic() - started,
                ),
                error=exc if exc.provider else _with_provider(exc, provider.name),
            )
        hits = answer.hits
        if anilist_id is not None:
            hits = [hit for hit in hits if hit.anilist_id == anilist_id]
        result = SearchResult(
            hits=sorted(hits, key=lambda h: h.similarity, reverse=True),
            provider=provider.name,
            frames_searched=answer.frames_searched,
            quota=answer.quota,
        )
        if self._remember is not None and route.cache_key is not None:
            await self._remember(route.cache_key, result)
        attempt = Attempt(
            provider=provider.name,
            outcome="ok",
            status_code=last_status[0],
            elapsed_seconds=time.monotonic() - started,
        )
        return _Outcome(attempt, result=result)

    async def _send_with_retries(
        self, route: Route, query: SearchQuery, last_status: list[int | None]
    ) -> ProviderAnswer:
        provider = route.provider
        async for attempt in stamina.retry_context(
            on=TRANSIENT, attempts=4, wait_initial=0.5, wait_max=5.0, wait_jitter=1.0
        ):
            with attempt:
                response = await self._send(provider, provider.search_request(query))
                last_status[0] = response.status_code
                await self._ledger.record_request(provider.name, route.scope)
                observed = provider.observe(response)
                if observed:
                    await self._ledger.observe(route.scope, observed)
                answer = provider.parse_search(response)
                if answer.quota is not None:
                    # The body's count already includes this search: it is the truth, not +1.
                    await self._ledger.observe(route.scope, [answer.quota])
                else:
                    await self._ledger.record_success(provider.name, route.scope)
                return answer
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    async def _after_failure(self, route: Route, exc: ProviderError) -> None:
        name = route.provider.name
        if isinstance(exc, QuotaExhaustedError):
            await self._ledger.mark_exhausted(name, route.scope, until=exc.resets_at)
        elif isinstance(exc, RateLimitedError):
            wait = exc.retry_after if exc.retry_after is not None else DEFAULT_COOLDOWN_SECONDS
            until = datetime.now(UTC) + timedelta(seconds=wait)
            await self._ledger.set_cooldown(name, route.scope, until, _reason(exc))
        elif isinstance(exc, AuthenticationError):
            logger.warning("%s refused the credentials: %s", name, exc.message)


def _strength(result: SearchResult) -> float:
    return result.best.similarity if result.best is not None else -1.0


def _with_provider(exc: ProviderError, name: str) -> ProviderError:
    exc.provider = name
    return exc
