"""``/metrics`` in Prometheus's text format (prometheus-client), one registry per gateway.

Searches by provider and outcome, answers (and cache hits), merged identical searches, callers refused
by their allowance, searches in flight, quota remaining per provider and window (read from the ledger
at each scrape), upstream latency and the wait for a caller's slot.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.responses import Response

from anisearch._cache_redis import merged_searches
from anisearch._exceptions import AnisearchError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from starlette.requests import Request

    from anisearch._models import Attempt, SearchResult

__all__ = ["Metrics"]

_LATENCY = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


class Metrics:
    """The gateway's metrics (its own registry: several gateways in one process never collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.attempts = Counter(
            "anisearch_attempts",
            "Provider attempts by provider and outcome",
            ["provider", "outcome"],
            registry=r,
        )
        self.answers = Counter(
            "anisearch_searches", "Searches answered, by the provider that answered", ["provider"], registry=r
        )
        self.cache_hits = Counter(
            "anisearch_cache_hits", "Searches answered from the result cache", registry=r
        )
        self.failures = Counter("anisearch_search_failures", "Searches no provider answered", registry=r)
        self.refused = Counter(
            "anisearch_refused", "Searches refused by the caller's own allowance", ["kind"], registry=r
        )
        self.merged = Gauge(
            "anisearch_merged_searches", "Searches answered by an identical search in flight", registry=r
        )
        self.in_flight = Gauge("anisearch_searches_in_flight", "Searches running now", registry=r)
        self.remaining = Gauge(
            "anisearch_quota_remaining",
            "Searches left per provider and window",
            ["provider", "window"],
            registry=r,
        )
        self.latency = Histogram(
            "anisearch_upstream_latency_seconds",
            "Time of one provider attempt, seconds",
            ["provider"],
            buckets=_LATENCY,
            registry=r,
        )
        self.slot_wait = Histogram(
            "anisearch_slot_wait_seconds", "Time a search waited for its caller's slot, seconds", registry=r
        )
        self._quota: object = None

    def attempt(self, attempt: Attempt) -> None:
        """Count one provider attempt (the engine's ``on_attempt``)."""
        self.attempts.labels(attempt.provider, attempt.outcome).inc()
        if attempt.elapsed_seconds is not None and attempt.outcome in {"ok", "failed"}:
            self.latency.labels(attempt.provider).observe(attempt.elapsed_seconds)

    def answered(self, result: SearchResult) -> None:
        self.answers.labels(result.provider or "none").inc()
        if result.cached:
            self.cache_hits.inc()

    def refusal(self, kind: str) -> None:
        self.refused.labels(kind).inc()

    @contextlib.contextmanager
    def searching(self) -> Iterator[None]:
        self.in_flight.inc()
        try:
            yield
        finally:
            self.in_flight.dec()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.slot_wait.observe(time.monotonic() - started)

    async def endpoint(self, request: Request) -> Response:
        """``GET /metrics``."""
        gateway = request.app.state.gateway
        self.merged.set(merged_searches())
        with contextlib.suppress(AnisearchError):
            for quota in await gateway.client.quota():
                if quota.remaining is not None and quota.window:
                    self.remaining.labels(quota.provider, quota.window).set(quota.remaining)
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
