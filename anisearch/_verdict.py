"""What an answer, a failure or a refusal means: one response decoded once and classified once.

The router asks; this module decides what the ledger records (a :class:`Settlement`) and which error a
caller sees, so the same state always gives the same class (spent quota :class:`QuotaExhaustedError`, a rate
limit :class:`RateLimitedError`, a busy upstream :class:`ProviderBusyError`). A provider parser that raises
anything but an anisearch error, or an answer with an absurd number, is an :class:`UpstreamResponseError`
for that one attempt, and the router falls through.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import httpx

from anisearch._exceptions import (
    AnisearchError,
    ConcurrencyLimitError,
    ConfigurationError,
    InvalidImageError,
    ProviderBusyError,
    ProviderConnectionError,
    ProviderError,
    ProviderServerError,
    ProviderTimeoutError,
    QuotaExhaustedError,
    RateLimitedError,
    SignInRateLimitedError,
    UpstreamResponseError,
)
from anisearch._ledger import UPSTREAM_HOLDER, Refusal, WindowSpec, this_holder
from anisearch._ledger._windows import STANDARD_WINDOWS, from_us
from anisearch._models import Quota
from anisearch._provider import ProviderAnswer

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from anisearch._provider import Provider

__all__ = [
    "DEFAULT_COOLDOWN_SECONDS",
    "MAX_COOLDOWN_SECONDS",
    "Settlement",
    "answered",
    "checked",
    "failure_outcome",
    "guarded",
    "holders_text",
    "iso_minute",
    "maybe_sent",
    "never_sent",
    "provider_windows",
    "read",
    "reason",
    "refusal_error",
]

DEFAULT_COOLDOWN_SECONDS = 30.0
"""Cooldown after a rate limit that did not say how long to wait."""
MAX_COOLDOWN_SECONDS = 86400.0
"""No cooldown an upstream asks for lasts longer than 24 hours."""
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
_MAX_COUNT = 2**31 - 1


@dataclass(slots=True)
class Settlement:
    """What one answer or failure means for the ledger."""

    outcome: Literal["charged", "uncharged", "unsent"]
    observations: list[Quota] = field(default_factory=list)
    cooldown: tuple[datetime, str, str] | None = None
    busy: str | None = None
    blocks: list[tuple[str, datetime]] = field(default_factory=list)


def iso_minute(moment: datetime) -> str:
    """``2026-12-04T12:04Z``: the UTC minute by which ``moment`` has passed (rounded up), as every message
    and the ``quota`` table give a moment to come."""
    return (moment + timedelta(seconds=59)).astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def reason(exc: ProviderError) -> str:
    text = exc.message
    if isinstance(exc, QuotaExhaustedError) and exc.resets_at is not None and " until " not in text:
        text = f"{text} (frees at {iso_minute(exc.resets_at)})"
    if exc.retry_after is not None and not isinstance(exc, QuotaExhaustedError) and " until " not in text:
        text = f"{text} (retry after {exc.retry_after:g} s)"
    return " ".join(text.split())[:200]


def provider_windows(provider: Provider) -> tuple[WindowSpec, ...]:
    """The provider's declared windows (``windows()``), or, for a provider that declares none, the
    standard windows its ``assumed_quotas()`` name, with their limits."""
    declare = getattr(provider, "windows", None)  # not a method: refused when the provider was loaded
    if callable(declare):
        try:
            return tuple(declare())
        except ConfigurationError as exc:  # a WindowSpec it builds refused a value: say whose
            raise ConfigurationError(f"provider {provider.name!r}: {exc}") from exc
    specs: dict[str, WindowSpec] = {}
    for quota in provider.assumed_quotas():
        standard = STANDARD_WINDOWS.get(quota.window)
        if standard is not None and quota.window not in specs:
            specs[quota.window] = WindowSpec(
                name=standard.name,
                span_seconds=standard.span_seconds,
                calendar=standard.calendar,
                counts=standard.counts,
                kind=standard.kind,
                limit=quota.limit,
            )
    return tuple(specs.values())


def answered(response: httpx.Response) -> Settlement:
    """What an answer counts as before its body is read: a success is ``charged``, an error answer
    ``uncharged`` (request-counting windows still count it)."""
    return Settlement("charged" if response.is_success else "uncharged")


def read(
    provider: Provider,
    windows: Sequence[WindowSpec],
    response: httpx.Response,
    now: datetime,
    tz: ZoneInfo,
    *,
    rebased: Callable[[datetime], datetime] = lambda moment: moment,
) -> tuple[Settlement, ProviderAnswer | None, ProviderError | None]:
    """One response, read once and classified once: what the ledger records, and the answer or the error.

    The upstream counts only answered searches: a success is ``charged``, an error answer ``uncharged``
    (request-counting windows still count it). ``now`` is the ledger's; ``rebased`` moves an instant the
    provider read on this machine's clock (an error's ``resets_at``) onto the ledger's.
    """
    settlement = answered(response)
    try:
        settlement.observations = checked(
            guarded(provider.name, lambda: provider.observe(response)), provider.name
        )
        answer = guarded(provider.name, lambda: provider.parse_search(response))
        if not isinstance(answer, ProviderAnswer):  # the provider's own defect: its attempt fails alone
            raise UpstreamResponseError(
                f"{type(provider).__qualname__}.parse_search returned {type(answer).__name__}, not a "
                "ProviderAnswer (a defect of the provider)",
                provider=provider.name,
                status_code=response.status_code,
            )
        if answer.quota is not None:
            settlement.observations.extend(checked([answer.quota], provider.name))
    except ProviderError as exc:
        _consequences(windows, exc, settlement, now, tz, rebased)
        return settlement, None, exc
    return settlement, answer, None


def _consequences(  # noqa: PLR0917 - read()'s, passed on
    windows: Sequence[WindowSpec],
    exc: ProviderError,
    settlement: Settlement,
    now: datetime,
    tz: ZoneInfo,
    rebased: Callable[[datetime], datetime],
) -> None:
    if isinstance(exc, QuotaExhaustedError):
        told = {
            quota.window
            for quota in settlement.observations
            if quota.remaining == 0
            or (quota.limit is not None and quota.used is not None and quota.used >= quota.limit)
        }
        window = getattr(exc, "window", None) or first_quota_window(windows)
        if window is not None and window not in told:
            spec = next((w for w in windows if w.name == window), STANDARD_WINDOWS.get(window))
            if exc.resets_at is not None:  # the upstream's word: its reset, else its Retry-After
                until = rebased(exc.resets_at)
            elif exc.retry_after:  # (a wait of 0 says nothing of when it frees)
                until = now + timedelta(seconds=exc.retry_after)
            else:
                until = spec.leave(now, tz) if spec else now + timedelta(days=1)
            settlement.blocks.append((window, min(until, now + timedelta(seconds=MAX_COOLDOWN_SECONDS))))
    elif isinstance(exc, SignInRateLimitedError):
        # A limit on signing in (the search was never sent): it spends and holds back no search quota;
        # the caller hears its wait in the error. A cooldown here would stop searches that need no sign-in.
        settlement.outcome = "unsent"
        settlement.observations = [q for q in settlement.observations if q.cooldown_until is None]
    elif isinstance(exc, RateLimitedError):
        # The server's own wait (Retry-After, X-Retry-After) is the whole truth of a 429: a count of 0
        # left in some window would only guess at when it frees.
        settlement.observations = [q for q in settlement.observations if q.cooldown_until is None]
        wait = exc.retry_after if exc.retry_after is not None else DEFAULT_COOLDOWN_SECONDS
        wait = min(max(wait, 0.0), MAX_COOLDOWN_SECONDS)
        settlement.cooldown = (now + timedelta(seconds=wait), reason(exc), "rate")
    elif isinstance(exc, (ConcurrencyLimitError, ProviderBusyError, ProviderServerError)):
        # A full queue, a concurrency collision, or a server failure that may have kept the caller's slot
        # (trace.moe's HTML 500): every search sharing the ledger backs off together.
        settlement.busy = reason(exc)


def guarded(name: str, call: Callable[[], Any]) -> Any:
    """Run provider ``name``'s parser; anything but an anisearch error means an answer it could not read."""
    try:
        return call()
    except AnisearchError:
        raise
    except Exception as exc:
        raise UpstreamResponseError(
            f"an answer anisearch cannot read ({type(exc).__name__})", provider=name
        ) from exc


def checked(quotas: Sequence[Quota], provider: str) -> list[Quota]:
    """``quotas`` unchanged when every number is sane.

    Raises:
        UpstreamResponseError: A negative or absurd count, or a naive time.
    """
    for quota in quotas:
        for name in ("limit", "used", "remaining", "concurrency", "priority"):
            value = getattr(quota, name)
            if value is not None and not 0 <= value <= _MAX_COUNT:
                raise UpstreamResponseError(f"the answer says {name} = {value}", provider=provider)
        for moment in (quota.observed_at, quota.resets_at, quota.cooldown_until):
            if moment is not None and moment.tzinfo is None:
                raise UpstreamResponseError("the answer has a time without a zone", provider=provider)
    return list(quotas)


def never_sent(exc: Exception) -> bool:
    """Retry only a connection that failed before any byte of the request left."""
    return isinstance(exc, ProviderConnectionError) and isinstance(exc.__cause__, _NOT_SENT)


def maybe_sent(exc: ProviderError) -> bool:
    """A transport failure after the request left: the upstream may have run (and charged) the search."""
    if isinstance(exc, ProviderConnectionError):  # no cause: refused before sending (a bad header)
        return exc.__cause__ is not None and not isinstance(exc.__cause__, _NOT_SENT)
    if isinstance(exc, ProviderTimeoutError) and exc.__cause__ is None:  # the deadline passed before it
        return False
    # An image refused locally (a size guard while the request was built) never left, nor did a search
    # held back by a sign-in limit (no sign-in is sent while its wait runs); an upstream's 413 carries its
    # status.
    local = ConfigurationError | InvalidImageError | SignInRateLimitedError
    return exc.status_code is None and not isinstance(exc, local)


def failure_outcome(exc: ProviderError) -> Literal["charged", "uncharged", "unsent"]:
    """What an attempt that failed in transport means for the ledger.

    An answer's status came back, then its body failed (a stall, over the size limit, a broken encoding):
    the upstream counted a 2xx as a search (``charged``) and an error status as a request only
    (``uncharged``). Without a status, ``charged`` when the request may have left (:func:`maybe_sent`),
    else ``unsent``.
    """
    status = exc.status_code
    if status is not None:
        return "charged" if 200 <= status < 300 else "uncharged"  # noqa: PLR2004 - the 2xx range
    return "charged" if maybe_sent(exc) else "unsent"


def first_quota_window(windows: Sequence[WindowSpec]) -> str | None:
    return next((w.name for w in windows if w.kind == "quota" and w.counts == "searches"), None)


def holders_text(holders: Sequence[str]) -> str:
    """Who holds a scope's slots, for people: ``pid 1234``, ``another search of this process``, and for
    a search given up while the upstream still runs it, ``(given up; the upstream still runs it)``."""
    me = this_holder()
    said = []
    for holder in holders:
        process = holder.removeprefix(UPSTREAM_HOLDER)
        if process == me:
            who = "another search of this process"
        elif process.count(":") >= 2:  # noqa: PLR2004 - machine:pid:start
            who = f"pid {process.rsplit(':', 2)[-2]}"
        else:
            who = process
        said.append(f"{who} (given up; the upstream still runs it)" if holder != process else who)
    return ", ".join(said) or "another search"


def refusal_error(name: str, refusal: Refusal, wait: float) -> ProviderError:
    """The error a refusal means: the same state always gives the same class."""
    until = from_us(refusal.until)
    stamp = iso_minute(until)
    detail = f" ({refusal.window}: {refusal.reason})" if refusal.window else f": {refusal.reason}"
    retry = max(wait, 0.0)
    if refusal.kind == "quota":
        return QuotaExhaustedError(
            f"quota exhausted until {stamp}{detail}",
            provider=name,
            resets_at=until,
            retry_after=retry,
            window=refusal.window,
        )
    if refusal.kind == "rate":
        return RateLimitedError(f"rate limited until {stamp}{detail}", provider=name, retry_after=retry)
    if refusal.kind == "busy":
        return ProviderBusyError(f"busy until {stamp}{detail}", provider=name, retry_after=retry)
    return ConcurrencyLimitError(
        f"no {name} slot freed in time (held by {holders_text(refusal.holders)})",
        provider=name,
        retry_after=retry,
    )
