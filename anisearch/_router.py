"""The router: which provider to ask, in what order, and what to do when one fails.

Per search, for each provider in order (``fallback``) or all at once (``fanout``):

1. **Reserve** in the ledger: one atomic step checks every window of the provider's scope (counting the
   searches in flight), the cooldown and a concurrency slot. A spent quota, a rate limit or a cooldown
   skips the provider *without a request*, with the typed error its state means
   (:class:`QuotaExhaustedError` with ``resets_at``, :class:`RateLimitedError` with ``retry_after``,
   :class:`ProviderBusyError`); a taken slot is waited for (woken when one frees; a holder known dead
   frees at once). When the ledger's estimate that a unit freed was never confirmed upstream, the
   provider's free quota endpoint (trace.moe ``/me``) is asked first.
2. **Send**, retrying on the same provider only when the request never left (a refused connection).
   A long search renews its slot's lease. When other searches wait for the slot, it is handed to the
   next one as soon as the answer has arrived, before the answer is parsed and settled. (trace.moe counts
   a search down a moment after answering, once it has logged it; over a network the next search cannot
   arrive sooner. An upstream on the same host may answer that search "concurrency": the shared backoff
   below absorbs it, nothing is miscounted, and from then on that provider's slot is freed at settle.)
3. **Settle** once with everything the answer said: counts, concurrency, priority, a cooldown for
   ``Retry-After`` (at most 24 h), a spent window, or the backoff that every search sharing the ledger
   honours after a "queue full" / "concurrency" answer (then this search waits it out and tries again,
   a few times). A request that was sent but not answered is counted as charged until the upstream's next
   count says otherwise, and never re-sent.
4. Return the answer, or fall through to the next provider. Bad input (:class:`InvalidImageError` raised
   locally) stops at once, because no provider would take it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import anyio
import anyio.lowlevel
import httpx

from anisearch._exceptions import (
    AllProvidersFailedError,
    AnisearchError,
    AuthenticationError,
    ClientClosedError,
    ConcurrencyLimitError,
    InvalidImageError,
    LedgerError,
    ProviderBusyError,
    ProviderError,
    ProviderTimeoutError,
    QuotaExhaustedError,
    UpstreamResponseError,
)
from anisearch._ledger import Refusal, Stale, Ticket, holder_is_dead
from anisearch._ledger._base import Nap
from anisearch._ledger._windows import from_us
from anisearch._limits import remaining_seconds, search_deadline
from anisearch._merge import merge_answers, merge_hits
from anisearch._models import Attempt, QuotaScope, SearchResult
from anisearch._plan import Route
from anisearch._verdict import (
    Settlement,
    answered,
    checked,
    failure_outcome,
    guarded,
    holders_text,
    never_sent,
    read,
    reason,
    refusal_error,
)

if TYPE_CHECKING:
    from anisearch._ledger import Ledger
    from anisearch._provider import Provider, ProviderAnswer, SearchQuery

__all__ = [
    "AttemptCallback",
    "Route",
    "Router",
    "Strategy",
    "WaitCallback",
    "all_failed",
    "merge_hits",
]

logger = logging.getLogger("anisearch")

Strategy = Literal["fallback", "fanout"]
Answered = Callable[["Route"], Awaitable["SearchResult | None"]]
"""Gives a route's provider's answer from the result cache, or None (see :meth:`Router.search`)."""
AttemptCallback = Callable[[Attempt], None]
WaitCallback = Callable[[str], None]
"""Called with one line whenever a search starts waiting (``"waiting for a tracemoe slot (held by pid
1234)"``), for a spinner."""
Sender = Callable[["Provider", "httpx.Request"], Awaitable["httpx.Response"]]

BUSY_RETRIES = 3
"""Times one search waits out the shared backoff after "queue full" / "concurrency" before moving on."""
_GATES: weakref.WeakValueDictionary[tuple[int, str, str, int], anyio.Lock] = weakref.WeakValueDictionary()
"""One gate per (ledger, provider, scope, event loop), alive while a search holds or awaits it."""
_GATES_LOCK = threading.Lock()
_BATONS: dict[tuple[int, str, str, int], _Baton] = {}
"""Per gate key: the slot a search of this event loop hands over early, until the next search takes it."""
_HOLDERS: dict[tuple[int, str, str, int], _Baton] = {}
"""Per gate key: the baton of the search that last took the slot through the gate. The next search in the
gate asks the ledger once that one's request is sent: sooner it would be refused, and hold up that send."""
_BATON_SECONDS = 0.05
"""The longest a search waits for another search of its event loop (see :class:`_Baton`)."""
_ANSWER_SECONDS: dict[tuple[str, str], collections.deque[float]] = {}
"""Per provider and address: how long its last answers took, seconds from sending to the whole answer."""
_COUNTDOWN_SECONDS: dict[tuple[str, str], float] = {}
"""Per provider and address: how long a search that waited for its slot waits before sending, learnt from
the concurrency refusals such searches met. An upstream may count a search down a moment after answering
it (trace.moe before 2026-02-26: after an awaited database insert); a search sent sooner meets
"Concurrency limit exceeded"."""
_CONCURRENCY_CHECK_SECONDS = 2.0
"""Longest wait for the free quota endpoint when it is asked for an account's concurrency (the searches go
on waiting for their slot without it)."""
_CONCURRENCY_ASKED: set[tuple[str, str, str]] = set()
"""Per provider, address and scope of an account (a key, a session): whether this process learnt from its
free quota endpoint the concurrency it allows, the first time two of its searches met at one slot (asked
again at the next such meeting when that failed, a minute after at the soonest). A paid key may allow
several at once where a guest has one: without asking, they would run one after another."""
_CONCURRENCY_PROBES: set[tuple[str, str, str]] = set()
"""The scopes whose concurrency is being asked now: the other searches meeting at the slot do not ask too;
they wait for the slot, and the search asking wakes them when the answer allows more."""
_CONCURRENCY_PAUSED: dict[tuple[str, str, str], float] = {}
"""When (``time.monotonic()``) asking a scope's concurrency last failed or was cut short: not asked again for
:data:`_QUOTA_CHECK_PAUSE_SECONDS`. Its own: the regular quota checks are not paused by it."""
_COUNTDOWN_FIRST_SECONDS = 0.05
_COUNTDOWN_MAX_SECONDS = 1.0
_COUNTDOWN_FLOOR_SECONDS = 0.01
_COUNTDOWN_FADE = 0.98
_UNANSWERED_SECONDS = 2.0
"""How long a provider is taken to need for an answer before any was timed in this process."""
_UNREACHED: dict[tuple[str, str], float] = {}
"""Per provider and address: when (``time.monotonic()``) a search last failed to reach it in all its
attempts. For :data:`_UNREACHED_SECONDS` after that, a search tries it once, without retries: a batch or a
bot does not pay every input's backoff (and, at concurrency 1, every input's wait behind it) for a server
that is down, and the first answer ends the mark."""
_UNREACHED_SECONDS = 30.0
_DEADLINE_MARGIN = 0.5
"""A request that timed out with this little of the search's deadline left (seconds) was cut short by it."""
_QUOTA_CHECK_PAUSE_SECONDS = 60.0
"""After asking a provider's free quota endpoint failed (an error answer, or no answer within the whole
timeout: not a search's own deadline running out), how long a router decides on the ledger's own count
instead of asking before every search, seconds."""
_QUOTA_CHECK_SECONDS = 10.0
"""The longest a search waits for a provider's free quota endpoint (within its deadline), seconds, as the
gateway's checks at start-up: it answers a small GET at once when it is up, even slowly under load, and a
hanging one would hold every search of a spent window for the whole timeout (30 s) in each new process,
as the pause after a failure is kept in memory."""
_HOLD_MARGIN_SECONDS = 0.2
"""Beyond that, before a slot left by a search given up in flight goes to the next search."""
_DEAD_SINCE: dict[str, float] = {}
"""Per holder found dead on this host: when (``time.monotonic()``) it was first found dead (see
``Router._freed_here``). A holder is a process that ended, so the few entries never change."""
_UNSETTLED: weakref.WeakKeyDictionary[Ledger, dict[str, tuple[Ticket, Settlement]]] = (
    weakref.WeakKeyDictionary()
)
"""Per ledger: answered searches whose settle failed (the ledger was down, the disk full), by token.
The next search on that ledger refused a slot settles them, so their slots do not stay held until the
lease lapses."""


class _Asking:
    """A provider being asked for one cache key in one event loop: an identical ask (the same picture
    re-encoded, resized, or sent again; the same options and server) waits for its answer instead of
    spending quota on the same question."""

    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: SearchResult | None = None


_ASKING: dict[tuple[int, str], _Asking] = {}
"""Per event loop and result-cache key: the ask in flight (see :class:`_Asking`). Only searches that use the
result cache merge: with the cache off, each search asks on its own."""


def _upstream(provider: Provider) -> tuple[str, str]:
    """Whose answer times are pooled: one provider at one address."""
    return provider.name, str(getattr(provider, "base_url", ""))


async def _counted_down(provider: Provider, *, waited: bool) -> float:
    """Before a search that ``waited`` for its slot sends: wait for the upstream to count the last search
    down (see :data:`_COUNTDOWN_SECONDS`; nothing until a refusal taught it; never past the search's
    deadline). The time to send at (``time.monotonic()``)."""
    countdown = _COUNTDOWN_SECONDS.get(_upstream(provider)) if waited else None
    if countdown:
        await anyio.sleep(max(remaining_seconds(countdown), 0.0))
    return time.monotonic()


def _counted_down_later(provider: Provider, *, waited: bool, refused: bool, answered: bool) -> None:
    """After a search that ``waited`` for its slot: a concurrency refusal (``refused``) makes the next such
    search wait longer (from 50 ms, doubling, at most a second); an answer (``answered``) a fiftieth less,
    so a wait learnt from a passing cause fades (below 10 ms it is dropped); anything else (cancelled, a
    failure) leaves it."""
    if not waited:
        return
    upstream = _upstream(provider)
    known = _COUNTDOWN_SECONDS.get(upstream)
    if refused:
        grown = _COUNTDOWN_FIRST_SECONDS if known is None else known * 2
        _COUNTDOWN_SECONDS[upstream] = min(grown, _COUNTDOWN_MAX_SECONDS)
    elif answered and known is not None:
        if known * _COUNTDOWN_FADE < _COUNTDOWN_FLOOR_SECONDS:
            del _COUNTDOWN_SECONDS[upstream]
        else:
            _COUNTDOWN_SECONDS[upstream] = known * _COUNTDOWN_FADE


def _answered_in(upstream: tuple[str, str], seconds: float) -> None:
    _ANSWER_SECONDS.setdefault(upstream, collections.deque(maxlen=16)).append(seconds)


def all_failed(attempts: Sequence[Attempt], errors: Sequence[ProviderError]) -> AllProvidersFailedError:
    """The error of a search no provider answered: each provider's error, and every attempt."""
    names = ", ".join(f"{attempt.provider} ({attempt.outcome})" for attempt in attempts) or "none"
    group = AllProvidersFailedError(
        f"no provider answered: {names}",
        list(errors) or [ProviderError("no provider was configured for this search")],
    )
    group.attempts = list(attempts)
    return group


class _Baton:
    """A concurrency slot passed from one search to the next within one event loop.

    The search that hands the slot over reads and settles its own answer once the next one's request is
    sent (``sent``), so the slot does not stand idle while the event loop and the ledger are busy with it.
    The next search decides whether to hand the slot on early only once the first has settled
    (``settled``): its answer may have said the slot was handed over too early. Each waits for the other
    for at most :data:`_BATON_SECONDS`.
    """

    __slots__ = ("freed", "sent", "settled")

    def __init__(self) -> None:
        self.freed = False
        """The slot is free in the ledger: a search refused from now on lost it to another process."""
        self.sent = anyio.Event()
        self.settled = anyio.Event()


@dataclass(slots=True)
class _Outcome:
    attempt: Attempt
    result: SearchResult | None = None
    error: ProviderError | None = None


async def _from_cache(route: Route, answered: Answered | None) -> _Outcome | None:
    """The outcome of a route whose provider's answer came from the result cache, or None."""
    result = None if answered is None else await answered(route)
    if result is None:
        return None
    attempt = Attempt(provider=route.provider.name, outcome="cached", reason="answered from the cache")
    return _Outcome(attempt, result.model_copy(update={"cached": True}))


class Router:
    """Orders providers, reserves before sending, settles once, falls through, and records it all.

    Args:
        ledger: Where quota, rate, cooldown and slot state is kept.
        send: Sends one provider request (the client's HTTP layer); raises ``ProviderError`` subclasses.
        wait_seconds: How long one search may wait for a slot or a short backoff, per provider.
        lease_seconds: A reservation lapses this long after its last renewal (a crashed process frees
            its slot by then at the latest; on the same host, at once).
        on_attempt: Called with each finished :class:`Attempt`.
        on_wait: Called with one line when a search starts waiting.
        remember: Stores a successful result under a route's cache key.
        settle_first: The providers whose slot is freed at settle only (see :meth:`_hand_over`), shared by
            the routers of one client; a router of its own when None.
        quota_check_failed: When each provider's free quota endpoint last failed (see
            :data:`_QUOTA_CHECK_PAUSE_SECONDS`), shared by the routers of one client; a router of its own
            when None.
    """

    def __init__(
        self,
        ledger: Ledger,
        send: Sender,
        *,
        wait_seconds: float = 30.0,
        lease_seconds: float = 15.0,
        on_attempt: AttemptCallback | None = None,
        on_wait: WaitCallback | None = None,
        remember: Callable[[str, SearchResult], Awaitable[None]] | None = None,
        settle_first: set[str] | None = None,
        quota_check_failed: dict[tuple[str, str, str], float] | None = None,
    ) -> None:
        self._ledger = ledger
        self._send = send
        self._wait_seconds = wait_seconds
        self._lease_seconds = lease_seconds
        self._on_attempt = on_attempt
        self._on_wait = on_wait
        self._contended: set[str] = set()
        """Tokens of this router's reservations that had to wait for their slot."""
        self._quota_check_failed = quota_check_failed if quota_check_failed is not None else {}
        """Per provider, address and scope: when (``time.monotonic()``) its free quota endpoint last failed
        (see :data:`_QUOTA_CHECK_PAUSE_SECONDS`)."""
        self._batons: dict[str, _Baton] = {}
        """Per token of a reservation that took a slot handed over: its baton, until it is asked."""
        self._given: dict[str, _Baton] = {}
        """Per token of a reservation that handed its slot over: the baton, until it is settled."""
        self._settle_first: set[str] = settle_first if settle_first is not None else set()
        """Providers whose slot is freed at settle only: a search handed it early met a concurrency refusal
        (an upstream on the same host, still logging the last search when the next one arrived). Shared by
        the routers of one client, so it lasts beyond the search that learnt it."""
        self._remember = remember

    async def search(
        self,
        routes: Sequence[Route],
        *,
        strategy: Strategy = "fallback",
        min_similarity: float | None = None,
        answered: Answered | None = None,
    ) -> SearchResult:
        """Ask the routes' providers and return the answer (see the module docstring for the rules).

        Each route comes ready from the search's plan: the query it sends (built on first use, before a
        slot is held) and which of its hits the search keeps.

        Args:
            routes: The providers to ask, in order.
            strategy: ``fallback`` (one at a time, until a confident answer) or ``fanout`` (all at once).
            min_similarity: What a confident answer reaches, 0..1 (None: any answer is enough).
            answered: Gives a route's provider's answer from the result cache (None: none), asked just
                before that provider would be. That provider is not asked again: its answer counts as if
                it had just come, with an attempt whose outcome is ``cached``, and costs no quota.

        Raises:
            InvalidImageError: The input cannot be searched by any provider (raised at once).
            LedgerError: The ledger cannot be used.
            AllProvidersFailedError: No provider answered; holds each provider's error in order.
        """
        if strategy == "fanout":
            outcomes = await self._fanout(routes, answered)
            return self._merge_fanout(outcomes)
        outcomes = []
        best: SearchResult | None = None
        for index, route in enumerate(routes):
            outcome = await self._next(route, answered, first=not outcomes)
            weak = False
            if outcome.result is not None:
                weak = min_similarity is not None and (
                    outcome.result.best is None or outcome.result.best.similarity < min_similarity
                )
                if best is None or _strength(outcome.result) > _strength(best):
                    best = outcome.result
                if weak:
                    top = outcome.result.best.similarity if outcome.result.best else 0.0
                    then = "asked the next" if index < len(routes) - 1 else "no other provider to ask"
                    said = f"best similarity {top:.3f} < {min_similarity:g}: {then}"
                    if outcome.attempt.outcome == "cached":
                        said = f"{outcome.attempt.reason}; {said}"
                    outcome.attempt = outcome.attempt.model_copy(update={"reason": said})
            outcomes.append(outcome)
            self._report(outcome.attempt)
            if outcome.result is not None and not weak:
                break
        attempts = [o.attempt for o in outcomes]
        if best is not None:
            return best.model_copy(update={"attempts": attempts, "cached": _asked_nobody(attempts)})
        raise self._all_failed(outcomes)

    async def _next(self, route: Route, answered: Answered | None, *, first: bool) -> _Outcome:
        """The outcome of the next route of a fallback search. Its upload is made when it is asked: when
        that fails for a provider after the first (whose upload was made), only that provider fails.

        Raises:
            InvalidImageError: The first provider's upload cannot be made.
        """
        try:
            return await _from_cache(route, answered) or await self._attempt(route)
        except InvalidImageError as exc:
            if isinstance(exc, ProviderError) or first:
                raise
            failure = ProviderError(f"its upload could not be made: {exc}", provider=route.provider.name)
            failure.__cause__ = exc
            return self._failed(route.provider.name, failure, None, time.monotonic())

    async def _fanout(self, routes: Sequence[Route], answered: Answered | None) -> list[_Outcome]:
        outcomes: list[_Outcome | None] = [None] * len(routes)

        async def run(index: int, route: Route) -> None:
            outcome = await _from_cache(route, answered) or await self._attempt(route)
            outcomes[index] = outcome
            self._report(outcome.attempt)

        try:
            async with anyio.create_task_group() as group:
                for index, route in enumerate(routes):
                    group.start_soon(run, index, route)
        except BaseExceptionGroup as group:  # bad input or a broken ledger: the error fallback raises
            typed = _first_typed(group)
            if typed is None or group.split(AnisearchError)[1] is not None:
                raise  # anything else (a bug in a task) is not hidden behind it
            raise typed from None
        return [o for o in outcomes if o is not None]

    def _merge_fanout(self, outcomes: list[_Outcome]) -> SearchResult:
        answered = [o.result for o in outcomes if o.result is not None]
        if not answered:
            raise self._all_failed(outcomes)
        attempts = [o.attempt for o in outcomes]
        return merge_answers(answered, attempts).model_copy(update={"cached": _asked_nobody(attempts)})

    def _all_failed(self, outcomes: list[_Outcome]) -> AllProvidersFailedError:
        return all_failed([o.attempt for o in outcomes], [o.error for o in outcomes if o.error is not None])

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

    def _waiting(self, line: str) -> None:
        logger.info("%s", line)
        if self._on_wait is not None:
            self._on_wait(line)

    # ------------------------------------------------------------------ one provider

    async def _admit(self, route: Route, give_up_at: float) -> Ticket | ProviderError:
        """Reserve, waiting for a slot or a short backoff within the budget; or the typed refusal.

        The searches of one event loop that wait for the same scope queue up in order behind one gate:
        only the first asks the ledger again when woken, so a hand-over costs one reserve, not one per
        waiting search. A search waits at the gate no longer than its budget (its deadline).
        """
        gate = self._gate(route)
        if not gate.locked():  # else a search of this process waits for a slot already: queue behind it
            result = await self._reserve(route, give_up_at, frozenset())
            if not (isinstance(result, Refusal) and result.kind == "concurrency"):
                return result if isinstance(result, Ticket | ProviderError) else self._error(route, result)
        key = self._gate_key(route)
        with anyio.move_on_after(give_up_at - anyio.current_time()) as queued:
            await gate.acquire()
        if queued.cancelled_caught:  # the searches ahead of it held the gate past its budget
            name = route.provider.name
            return ConcurrencyLimitError(
                f"no {name} slot freed in time (queued behind other searches of this process)", provider=name
            )
        try:
            reserved = await self._reserve_at_gate(route, give_up_at, key)
        finally:
            gate.release()
        if isinstance(reserved, Ticket):
            self._contended.add(reserved.token)
            return reserved
        return reserved if isinstance(reserved, ProviderError) else self._error(route, reserved)

    async def _reserve_at_gate(
        self, route: Route, give_up_at: float, key: tuple[int, str, str, int]
    ) -> Ticket | ProviderError | Refusal:
        """The first search of the queue: reserve, listening for the slot to be freed."""
        async with self._ledger.listening(route.provider.name, route.scope) as nap:
            with _GATES_LOCK:
                holder = _HOLDERS.get(key)
            if holder is not None:
                with anyio.move_on_after(_BATON_SECONDS):
                    await holder.sent.wait()
            reserved: Ticket | ProviderError | Refusal | None = None
            try:
                reserved = await self._reserve(route, give_up_at, frozenset(), nap=nap)
            finally:
                self._take_baton(key, reserved)  # before the gate opens for the next search
            return reserved

    def _take_baton(
        self, key: tuple[int, str, str, int], result: Ticket | ProviderError | Refusal | None
    ) -> None:
        """A slot handed over in this event loop goes with its baton to the search that reserved it; when
        another process took the freed slot, the search that handed it over goes on at once."""
        with _GATES_LOCK:
            baton = _BATONS.get(key)
            if baton is None or not (isinstance(result, Ticket) or baton.freed):
                return  # refused before the slot was freed: the hand-over is still to come
            del _BATONS[key]
            if isinstance(result, Ticket):
                _HOLDERS[key] = self._batons[result.token] = baton
                return
        baton.sent.set()

    def _gate_key(self, route: Route) -> tuple[int, str, str, int]:
        return (id(self._ledger), route.provider.name, route.scope, id(asyncio.get_running_loop()))

    def _gate(self, route: Route) -> anyio.Lock:
        key = self._gate_key(route)
        with _GATES_LOCK:
            gate = _GATES.get(key)
            if gate is None:
                gate = _GATES[key] = anyio.Lock()
            return gate

    def _others_wait(self, route: Route, ticket: Ticket) -> bool:
        """Whether other searches likely wait for this slot: this one had to wait for it (so the slot is
        contended, in this process or another), or a search of this process waits for the scope now."""
        if route.provider.name in self._settle_first:
            return False
        if ticket.token in self._contended:
            return True
        with _GATES_LOCK:
            gate = _GATES.get(self._gate_key(route))
        return gate is not None and gate.locked()

    async def _hand_over(self, route: Route, ticket: Ticket, *, traced: bool) -> None:
        """Free the slot as soon as the answer is in, when others wait for it (one more ledger step).

        When the next search waits for a single slot in this event loop, and the transport reports when a
        request is sent (``traced``, as httpcore's do), this one lets it reserve and send first (see
        :class:`_Baton`). Reading and settling this answer, and whatever the caller does next, would
        otherwise hold up the loop and the ledger while the slot stands idle.
        """
        if not self._others_wait(route, ticket):
            return
        key = self._gate_key(route)
        baton: _Baton | None = None
        if traced and route.slots == 1:
            with _GATES_LOCK:
                gate = _GATES.get(key)
                if gate is not None and gate.locked() and key not in _BATONS:  # a search of this loop waits
                    baton = _BATONS[key] = self._given[ticket.token] = _Baton()
        try:
            try:
                await self._ledger.free_slot(ticket)
            except LedgerError as exc:  # settling frees it anyway, and says whether the ledger is back
                logger.warning("%s: could not hand the slot over early: %s", ticket.provider, exc)
                return
            if baton is not None:
                baton.freed = True
            await anyio.lowlevel.checkpoint()  # a search of this process woken for the slot sends first
            if baton is not None:
                with anyio.move_on_after(_BATON_SECONDS):
                    await baton.sent.wait()
        finally:
            with _GATES_LOCK:
                if baton is not None and _BATONS.get(key) is baton:  # nobody took it
                    del _BATONS[key]

    def _still_working(self, provider: Provider, sending: _Sending, sent_at: float) -> float | None:
        """Seconds the upstream is likely still at a search given up before its answer came (cancelled,
        timed out): the longest of its recent answer times, less the time already spent, plus a margin; at
        most a lease. None when its request never left or its answer's headers came.

        The upstream runs such a search to its end and counts it against the caller's concurrency until
        then (trace.moe answers a request arriving meanwhile with 402 "Concurrency limit exceeded").
        """
        if not sending.writing or sending.headers_in:
            return None
        recent = _ANSWER_SECONDS.get(_upstream(provider))
        longest = max(recent) if recent else _UNANSWERED_SECONDS
        in_flight = time.monotonic() - sent_at
        return min(max(longest - in_flight, 0.0) + _HOLD_MARGIN_SECONDS, self._lease_seconds)

    async def _settle(
        self,
        ticket: Ticket,
        settlement: Settlement,
        *,
        handed_too_early: bool,
        answered: bool = False,
        upstream_busy: float | None = None,
    ) -> None:
        """Settle (shielded from cancellation); then a search this one handed its slot to may go on.

        A search given up while the upstream still works on it (``upstream_busy``: for about that many
        seconds) keeps its slot until then instead (:meth:`Ledger.hold`).

        Raises:
            LedgerError: The ledger could not record it, unless the search was ``answered``: an answer paid
                for is never lost to the ledger (the failure is logged, and the settle is kept in
                :data:`_UNSETTLED` for a later search refused its slot).
        """
        try:
            with anyio.CancelScope(shield=True):
                if not (
                    upstream_busy is not None
                    and settlement == Settlement("charged")  # nothing told but that it may have left
                    and await self._ledger.hold(ticket, upstream_busy)
                ):
                    await self._record(ticket, settlement)
        except LedgerError as exc:
            if not answered:
                raise
            logger.warning("%s: answered, but the ledger could not record it: %s", ticket.provider, exc)
            _UNSETTLED.setdefault(self._ledger, {})[ticket.token] = (ticket, settlement)
        else:
            if handed_too_early:
                self._handed_too_early(ticket.provider)
        finally:
            given = self._given.pop(ticket.token, None)
            if given is not None:
                given.settled.set()

    async def _record(self, ticket: Ticket, settlement: Settlement) -> None:
        """Settle ``ticket`` in the ledger with what ``settlement`` says."""
        await self._ledger.settle(
            ticket,
            settlement.outcome,
            observations=settlement.observations,
            cooldown=settlement.cooldown,
            busy=settlement.busy,
            blocks=settlement.blocks,
        )

    async def _freed_here(
        self, route: Route, refusal: Refusal, dead: frozenset[str]
    ) -> tuple[frozenset[str] | None, float]:
        """After a concurrency refusal: the holders known dead, grown by those of ``refusal`` that died on
        this host long enough ago, or the same set when a slot this process held for an answer given could
        be settled now; None when nothing was freed here. Then the seconds until the slot of a holder that
        died too recently is freed (infinity when none did).

        A holder killed while its request was at the upstream (``kill -9``, the OOM killer) left a search
        the upstream runs to its end and counts against the caller's concurrency until then: its slot is
        freed once that is likely over (the longest of this process's recent answer times, plus a margin,
        from when it was found dead), not at once, so the next search does not meet "Concurrency limit
        exceeded".

        The first such refusal of an account's scope in this process asks how many slots it has
        (:meth:`_learnt_concurrency`): when that answers, the same set, to ask again.
        """
        if await self._learnt_concurrency(route):  # an account may allow more than the one slot
            return dead, math.inf
        newly_dead = frozenset(h for h in refusal.holders if holder_is_dead(h)) - dead
        if newly_dead:
            now = time.monotonic()
            recent = _ANSWER_SECONDS.get(_upstream(route.provider))
            hold = min(
                (max(recent) if recent else _UNANSWERED_SECONDS) + _HOLD_MARGIN_SECONDS, self._lease_seconds
            )
            with _GATES_LOCK:
                since = {h: _DEAD_SINCE.setdefault(h, now) for h in newly_dead}
            done = frozenset(h for h, found in since.items() if now - found >= hold)
            if done:
                return dead | done, math.inf
            return None, min(found + hold - now for found in since.values())
        return (dead if await self._settle_left_over() else None), math.inf

    async def _settle_left_over(self) -> bool:
        """Settle the answered searches whose settle failed on this ledger (see :data:`_UNSETTLED`), when
        a reserve was just refused a slot: the ledger answers again, and the slot may be one of theirs.
        Those that fail again wait for the next refusal. True when one was settled."""
        waiting = _UNSETTLED.get(self._ledger)
        settled = False
        while waiting:
            token, (ticket, settlement) = next(iter(waiting.items()))
            del waiting[token]  # taken by this search: another one running now does not settle it twice
            try:
                with anyio.CancelScope(shield=True):
                    await self._record(ticket, settlement)
            except LedgerError:
                waiting[token] = (ticket, settlement)  # still unusable: the next refusal tries again
                return settled
            except AnisearchError as exc:  # it can never be recorded: its lease ends the reservation
                logger.warning("%s: an answer given earlier cannot be recorded: %s", ticket.provider, exc)
                continue
            logger.info("%s: recorded an answer the ledger could not record before", ticket.provider)
            settled = True
        return settled

    def _sending(self, route: Route, ticket: Ticket, taken: _Baton | None) -> _Sending:
        """How this attempt's request goes: it tells the baton it took once it is sent, and hands the slot
        over once its answer is in. With no auth flow, the response whose headers arrive is the answer,
        and the slot is handed over then, while its body is still being read; an auth flow may send
        another request after a 401, so its slot is handed over once the final answer is read."""
        sending = _Sending(taken.sent if taken is not None else None, early=route.provider.auth() is None)

        async def hand_over() -> None:
            if taken is not None:
                await self._sent(route, taken)
            await self._hand_over(route, ticket, traced=sending.traced)

        sending.on_answer = hand_over
        return sending

    async def _sent(self, route: Route, taken: _Baton) -> None:
        """This search's request was sent and answered: the search that handed it the slot may go on, and
        this one waits for that one to settle before handing the slot on in turn (see :class:`_Baton`)."""
        taken.sent.set()  # a transport that traces nothing says so only now
        if route.provider.name not in self._settle_first:
            with anyio.move_on_after(_BATON_SECONDS):
                await taken.settled.wait()

    def _let_go(self, route: Route, taken: _Baton) -> None:
        """This search is done with the baton it took: nobody waits for its request any more."""
        taken.sent.set()
        key = self._gate_key(route)
        with _GATES_LOCK:
            if _HOLDERS.get(key) is taken:
                del _HOLDERS[key]

    def _handed_too_early(self, name: str) -> None:
        """A search that waited for its slot was refused "concurrency": from now on this client frees the
        provider's slot at settle only (see :meth:`_hand_over`)."""
        if name not in self._settle_first:
            logger.info("%s refused a slot handed over early: freeing it at settle from now on", name)
            self._settle_first.add(name)

    def _error(self, route: Route, refusal: Refusal) -> ProviderError:
        wait = (from_us(refusal.until) - self._ledger.now()).total_seconds()
        return refusal_error(route.provider.name, refusal, wait)

    async def _reserve(
        self, route: Route, give_up_at: float, dead: frozenset[str], *, nap: Nap | None = None
    ) -> Ticket | ProviderError | Refusal:
        """Reserve; with ``nap`` (listening for freed slots), wait for a taken slot within the budget."""
        name = route.provider.name
        asked = trust = False
        while True:
            result = await self._ledger.reserve(
                name,
                route.scope,
                route.windows,
                slots=route.slots,
                lease_seconds=self._lease_seconds,
                trust_estimate=trust,
                dead_holders=dead,
                waiting=nap,
            )
            if isinstance(result, Ticket):
                return result
            if isinstance(result, Stale):
                trust = asked or not await self._checked_quota(route)
                asked = True
                continue
            left = give_up_at - anyio.current_time()
            wait = (from_us(result.until) - self._ledger.now()).total_seconds()
            if result.kind == "concurrency":
                freed, orphan = await self._freed_here(route, result, dead)
                if freed is not None:  # ask again
                    dead = freed
                    continue
                if nap is None or left <= 0:
                    return result
                self._take_baton(self._gate_key(route), result)  # another process took the slot handed over
                self._waiting(f"waiting for a {name} slot (held by {holders_text(result.holders)})")
                # a dead holder's search may still run upstream: ask again once it is likely over
                handed = await nap(min(left, max(min(wait, orphan), 0.001)))
                if handed is not None:  # the ledger reserved the freed slot for this search
                    return handed
                continue
            if result.kind == "busy" and left > 0 and wait <= left:
                if wait > 0:  # else the backoff ran out between the ledger's look and this one: ask again
                    self._waiting(f"waiting {wait:.1f} s for {name}: {result.reason}")
                    await anyio.sleep(wait)
                continue
            return result

    async def _learnt_concurrency(self, route: Route) -> bool:
        """Whether the free quota endpoint was just asked, and answered, for the concurrency an account's
        scope allows: once per process for each (see :data:`_CONCURRENCY_ASKED`); never for a guest."""
        if _scope_kind(route.scope) == "guest" or not route.provider.capabilities.quota:
            return False
        key = (*_upstream(route.provider), route.scope)
        if key in _CONCURRENCY_ASKED or key in _CONCURRENCY_PROBES:  # known, or another search asks now
            return False  # (that one wakes the searches waiting for the slot when it learns more slots)
        failed_at = _CONCURRENCY_PAUSED.get(key)
        if failed_at is not None and 0 <= time.monotonic() - failed_at < _QUOTA_CHECK_PAUSE_SECONDS:
            return False
        _CONCURRENCY_PROBES.add(key)  # one search asks
        try:
            answered = await self._refresh_quota(route, seconds=_CONCURRENCY_CHECK_SECONDS)
        finally:
            _CONCURRENCY_PROBES.discard(key)
        if answered is True:
            _CONCURRENCY_ASKED.add(key)
            _CONCURRENCY_PAUSED.pop(key, None)
            await self._ledger.wake(route.provider.name, route.scope)  # the others: more slots, maybe
            return True
        # failed, or cut short (a hanging endpoint, the search's deadline): not asked again for a minute, so
        # it costs one search at most those seconds, and the searches meanwhile wait for the slot
        _CONCURRENCY_PAUSED[key] = time.monotonic()
        return False

    async def _checked_quota(self, route: Route) -> bool:
        """:meth:`_refresh_quota`, unless asking failed in the last :data:`_QUOTA_CHECK_PAUSE_SECONDS`
        (then False at once: the search is decided on the ledger's own count)."""
        key = (*_upstream(route.provider), route.scope)
        failed_at = self._quota_check_failed.get(key)
        if failed_at is not None and 0 <= time.monotonic() - failed_at < _QUOTA_CHECK_PAUSE_SECONDS:
            return False
        answered = await self._refresh_quota(route)
        if answered is True:
            self._quota_check_failed.pop(key, None)
        elif answered is False:  # the endpoint failed: not the search's deadline running out
            self._quota_check_failed[key] = time.monotonic()
        return answered is True

    async def _refresh_quota(self, route: Route, *, seconds: float = _QUOTA_CHECK_SECONDS) -> bool | None:
        """Ask the provider's free quota endpoint, waiting at most ``seconds``, and record the answer: True
        when it answered; False when it failed (an error answer, no answer in time); None when it has no
        such endpoint or the search's own deadline ran out first."""
        provider = route.provider
        request = provider.quota_request()
        if request is None:
            return None
        cap = anyio.current_time() + seconds
        outer = search_deadline.get()
        cut_by_the_search = outer is not None and outer < cap  # else the 10 s ran out first
        token = search_deadline.set(cap if outer is None else min(outer, cap))
        try:
            sent_at = self._ledger.now()
            try:
                response = await self._send(provider, request)
            finally:
                search_deadline.reset(token)
            quotas = guarded(
                provider.name, lambda: [*provider.observe(response), *provider.parse_quota(response)]
            )
            await self._ledger.observe(
                provider.name, route.scope, route.windows, checked(quotas, provider.name), sent_at=sent_at
            )
        except ProviderError as exc:
            timed_out = isinstance(exc, ProviderTimeoutError)
            if timed_out and not cut_by_the_search:
                waited = seconds - (cap - anyio.current_time())
                logger.info("%s quota check failed: no answer in %.0f s", provider.name, waited)
            else:
                logger.info("%s quota check failed: %s", provider.name, exc)
            # a wait the search's own deadline ended says nothing of the endpoint (a far deadline, the
            # gateway's 60 s, leaves the whole 10 s: that one does)
            deadline_cut = timed_out and cut_by_the_search and remaining_seconds() <= _DEADLINE_MARGIN
            return None if deadline_cut else False
        return True

    async def _attempt(self, route: Route) -> _Outcome:
        """Ask ``route``'s provider; or, when the same question (its cache key) is being asked in this event
        loop, wait for that answer (within this search's budget) and take it as a cached one."""
        try:
            cache_key = await route.key()  # made from the provider's upload, which asking needs anyway
        except (ProviderError, InvalidImageError):  # the upload cannot be made: asking it says so
            cache_key = None
        if cache_key is None:
            return await self._attempt_now(route)
        key = (id(asyncio.get_running_loop()), cache_key)
        asking = _ASKING.get(key)
        if asking is not None:  # the first to ask answers the others
            started = time.monotonic()
            with anyio.move_on_after(remaining_seconds(self._wait_seconds)):  # never past the deadline
                await asking.done.wait()
            if asking.result is not None:
                attempt = Attempt(
                    provider=route.provider.name,
                    outcome="cached",
                    reason="answered by an identical search in flight",
                    elapsed_seconds=time.monotonic() - started,
                )
                return _Outcome(attempt, asking.result.model_copy(update={"cached": True}))
            if _ASKING.get(key) is asking:  # still asking past this one's budget: ask alongside
                return await self._attempt_now(route)
            return await self._attempt(route)  # it failed: ask (or wait for whoever asks now)
        asking = _ASKING[key] = _Asking()
        try:
            outcome = await self._attempt_now(route)
            asking.result = outcome.result
            return outcome
        finally:
            del _ASKING[key]
            asking.done.set()

    async def _attempt_now(self, route: Route) -> _Outcome:
        name = route.provider.name
        started = time.monotonic()
        give_up_at = anyio.current_time() + max(remaining_seconds(self._wait_seconds), 0.0)  # the deadline
        busy_left = BUSY_RETRIES
        try:
            query = await route.ready()  # the image work is done before a slot is held
        except ProviderError as exc:  # too large for this provider's limits alone: the next may take it
            return self._failed(name, exc, None, started)
        answered: _Outcome | None = None  # the upstream's last "busy" answer to this search
        while True:
            try:  # and the request is built before it too: a handed-over slot waits for nothing else
                request = route.provider.search_request(query)
            except ProviderError as exc:  # refused before anything was reserved (an image too large)
                return self._failed(name, exc, None, started)
            admitted = await self._admit(route, give_up_at)
            if isinstance(admitted, ProviderError):  # refused by the ledger: no request was made
                if answered is not None and isinstance(admitted, ConcurrencyLimitError | ProviderBusyError):
                    return answered  # but one was, and the upstream's "busy" is why: that answer
                return self._failed(name, admitted, None, started, outcome="skipped")
            outcome = answered = await self._ask(route, admitted, query, request, started)
            shared_backoff = isinstance(outcome.error, (ConcurrencyLimitError, ProviderBusyError))
            if not shared_backoff or busy_left == 0 or anyio.current_time() >= give_up_at:
                return outcome
            busy_left -= 1

    async def _ask(
        self, route: Route, ticket: Ticket, query: SearchQuery, request: httpx.Request, started: float
    ) -> _Outcome:
        provider = route.provider
        status: int | None = None
        answer: ProviderAnswer | None = None
        error: ProviderError | None = None
        settlement = Settlement("unsent")
        waited = ticket.token in self._contended
        taken = self._batons.pop(ticket.token, None)
        sending = self._sending(route, ticket, taken)
        sent_at = time.monotonic()
        try:
            sent_at = await _counted_down(provider, waited=waited)  # inside: cancelled, it still settles
            response = await self._send_leased(ticket, provider, query, request, sending)
            _answered_in(_upstream(provider), time.monotonic() - sent_at)
            status = response.status_code
            settlement = answered(response)  # until its body is read
            await sending.answered()  # unless the transport reported the answer's headers already
            settlement, answer, error = read(
                provider,
                route.windows,
                response,
                self._ledger.now(),
                self._ledger.timezone,
                rebased=self._ledger.rebased,
            )
        except ProviderError as exc:  # plain InvalidImageError is not one: bad input stops everything
            error = exc
            settlement = Settlement(failure_outcome(exc))
        except ClientClosedError:  # the transport refused before sending: "unsent" stands
            raise
        except BaseException:  # cancelled (the caller's timeout, a failed fanout sibling) while in flight
            if settlement.outcome == "unsent" and sending.may_have_left:
                settlement = Settlement("charged")  # the upstream may run the search to its end
            raise
        finally:
            self._contended.discard(ticket.token)
            _counted_down_later(
                provider,
                waited=waited,
                refused=isinstance(error, ConcurrencyLimitError),
                answered=answer is not None,
            )
            if taken is not None:
                self._let_go(route, taken)
            await self._settle(
                ticket,
                settlement,
                handed_too_early=waited and isinstance(error, ConcurrencyLimitError),
                answered=answer is not None,
                upstream_busy=None if status is not None else self._still_working(provider, sending, sent_at),
            )
        # A search of this process woken by the freed slot sends before this one builds its result.
        await anyio.lowlevel.checkpoint()
        if isinstance(error, QuotaExhaustedError) and error.resets_at is None:
            await self._when_it_frees(route, error)
        if error is not None or answer is None:
            failure = error or UpstreamResponseError("no answer", provider=provider.name)
            return self._failed(provider.name, failure, status, started)
        hits = route.accept(answer.hits)
        result = SearchResult(
            hits=sorted(hits, key=lambda h: h.similarity, reverse=True),
            provider=provider.name,
            frames_searched=answer.frames_searched,
            quota=answer.quota,
        )
        if self._remember is not None and (key := route.known_key()) is not None:
            await self._remember(key, result)
        attempt = Attempt(
            provider=provider.name,
            outcome="ok",
            status_code=status,
            elapsed_seconds=time.monotonic() - started,
            scope=answer.quota.scope if answer.quota is not None else _scope_kind(route.scope),
        )
        return _Outcome(attempt, result=result)

    async def _when_it_frees(self, route: Route, error: QuotaExhaustedError) -> None:
        """An upstream's "quota spent" that said no time gets the ledger's: when the spent window admits
        again, as the ledger's own refusal of the next search would say."""
        try:
            quotas = await self._ledger.snapshot(
                route.provider.name, lambda _: route.windows, scope=route.scope
            )
        except LedgerError:
            return  # the error stands as the upstream gave it
        spent = [
            (q.resets_at, q.window)
            for q in quotas
            if q.remaining == 0 and q.resets_at is not None and error.window in (None, q.window)
        ]
        if spent:  # the latest: every spent window must admit again
            error.resets_at, error.window = max(spent, key=lambda pair: pair[0])

    def _failed(
        self,
        name: str,
        failure: ProviderError,
        status: int | None,
        started: float,
        *,
        outcome: Literal["failed", "skipped"] = "failed",
    ) -> _Outcome:
        """The outcome of an attempt that ended in ``failure`` (``skipped``: the ledger refused it)."""
        if isinstance(failure, AuthenticationError):
            logger.warning(  # an attempt's record too: its outcome says the same
                "%s refused the credentials: %s", name, failure.message, extra={"anisearch_outcome": outcome}
            )
        return _Outcome(
            Attempt(
                provider=name,
                outcome=outcome,
                reason=reason(failure),
                error=type(failure).__name__,
                status_code=failure.status_code if failure.status_code is not None else status,
                elapsed_seconds=time.monotonic() - started,
            ),
            error=failure if failure.provider else _with_provider(failure, name),
        )

    async def _send_leased(
        self,
        ticket: Ticket,
        provider: Provider,
        query: SearchQuery,
        request: httpx.Request,
        sending: _Sending,
    ) -> httpx.Response:
        """Send; a search still running after a third of its lease gets a task renewing the lease.

        Most searches answer well before that, so they start no task at all: a timer costs less.
        """
        loop = asyncio.get_running_loop()
        renewing: list[asyncio.Task[None]] = []

        def start() -> None:
            task = loop.create_task(self._keep_lease(ticket))
            task.add_done_callback(_report_failure)
            renewing.append(task)

        timer = loop.call_later(self._lease_seconds / 3, start)
        try:
            return await self._send_once(provider, query, request, sending)
        finally:
            timer.cancel()
            for task in renewing:
                task.cancel()  # it only renews; nothing to wait for

    async def _keep_lease(self, ticket: Ticket) -> None:
        while True:
            try:
                await self._ledger.renew(ticket, self._lease_seconds)
            except LedgerError as exc:  # the search goes on; settling will say whether the ledger is back
                logger.warning("%s: could not renew the slot's lease: %s", ticket.provider, exc)
            await anyio.sleep(self._lease_seconds / 3)

    async def _send_once(
        self, provider: Provider, query: SearchQuery, request: httpx.Request, sending: _Sending
    ) -> httpx.Response:
        """Send the search (``request`` first, then a fresh one for each retry); retry only while the
        request never left this machine: three attempts in all, with stamina's backoff between them,
        never past the search's deadline.

        The first attempt is made directly: stamina is imported and set up only once it failed, so a
        search that is answered (nearly all of them) costs no retry machinery. A provider that no search
        could reach in the last :data:`_UNREACHED_SECONDS` is tried once.
        """
        budget = remaining_seconds(45.0)  # for every attempt: never past the search's deadline
        started = time.monotonic()
        upstream = _upstream(provider)
        try:
            return await self._reach(provider, sending.traced_request(request))
        except ProviderError as exc:
            if not never_sent(exc):
                raise
            unreached = _UNREACHED.get(upstream)
            if unreached is not None and started - unreached < _UNREACHED_SECONDS:
                logger.info("%s; not retried: it could not be reached %.0f s ago", exc, started - unreached)
                raise
            first: ProviderError | None = exc
            last = exc
        from anisearch._retry import retrying, stamina  # only after a connection failed before sending

        def tell(retry: int, wait: float) -> None:
            logger.info("%s; sending again in %.1f s (retry %d of 2; nothing was sent)", last, wait, retry)

        left = max(budget - (time.monotonic() - started), 0.001)
        tries = [first]  # each attempt made: only all three failing marks the provider unreachable
        with retrying(tell), _marking_unreached(upstream, tries):
            async for attempt in stamina().retry_context(
                on=never_sent, attempts=3, timeout=left, wait_initial=0.2, wait_max=2.0, wait_jitter=0.5
            ):
                if first is None and time.monotonic() - started >= budget:
                    break  # the backoff reached the deadline: the last failure stands (nothing was sent)
                with attempt:
                    if first is not None:  # the attempt made above: stamina counts it and backs off
                        failed, first = first, None
                        raise failed
                    try:
                        tries.append(None)
                        request = sending.traced_request(provider.search_request(query))
                        return await self._reach(provider, request)
                    except ProviderError as again:
                        last = again
                        raise
            raise last

    async def _reach(self, provider: Provider, request: httpx.Request) -> httpx.Response:
        """:meth:`_send`; whatever reached the provider ends its mark as unreachable (:data:`_UNREACHED`)."""
        try:
            response = await self._send(provider, request)
        except ProviderError as exc:
            if not never_sent(exc):
                _UNREACHED.pop(_upstream(provider), None)
            raise
        _UNREACHED.pop(_upstream(provider), None)
        return response


@contextlib.contextmanager
def _marking_unreached(upstream: tuple[str, str], tries: Sequence[object]) -> Iterator[None]:
    """Mark ``upstream`` unreachable (:data:`_UNREACHED`) when the block ends in a failure to reach it after
    three attempts (``tries``: one item per attempt made; a deadline may end the block sooner)."""
    try:
        yield
    except ProviderError as exc:
        if never_sent(exc) and len(tries) >= 3:  # noqa: PLR2004 - the attempts _send_once makes
            _UNREACHED[upstream] = time.monotonic()
        raise


class _Sending:
    """Whether an attempt's request may have left this machine.

    Once a request is handed to the transport it may leave, unless httpcore's trace events (which its own
    transports emit) show that no request headers were being written yet: a search cancelled while
    connecting spent nothing, while one cancelled after that may be run to its end and counted upstream.
    Through an HTTPS proxy, the tunnel's ``CONNECT`` comes first, with the same trace: its steps are not
    the search's (``tunnel``).
    """

    __slots__ = ("early", "handed", "headers_in", "on_answer", "sent", "traced", "tunnel", "writing")

    def __init__(self, sent: anyio.Event | None = None, *, early: bool = False) -> None:
        self.handed = self.traced = self.writing = self.tunnel = self.headers_in = False
        self.sent = sent
        """Set once the request's body has been written (see :class:`_Baton`)."""
        self.on_answer: Callable[[], Awaitable[None]] | None = None
        """Awaited once the answer is in (see :meth:`answered`)."""
        self.early = early
        """Call ``on_answer`` as soon as the answer's headers arrive, before its body is read."""

    async def answered(self) -> None:
        """Call ``on_answer``, unless it was called already."""
        if self.on_answer is not None:
            on_answer, self.on_answer = self.on_answer, None
            await on_answer()

    @property
    def may_have_left(self) -> bool:
        return self.handed and (self.writing or not self.traced)

    def traced_request(self, request: httpx.Request) -> httpx.Request:
        """``request``, reporting its transport's progress here; marks it handed over."""
        request.extensions["trace"] = self._event
        self.handed = True
        return request

    async def _event(self, name: str, info: object) -> None:
        self.traced = True
        request = info.get("request") if isinstance(info, dict) else None
        if request is not None:  # each step of a request names it; a proxy's tunnel comes first (CONNECT)
            self.tunnel = getattr(request, "method", b"") == b"CONNECT"
        if self.tunnel:  # the tunnel's own request and answer: the search is still to be sent
            return
        if name.endswith("send_request_headers.started"):
            self.writing = True
        elif name.endswith("send_request_body.complete") and self.sent is not None:
            self.sent.set()
        elif name.endswith("receive_response_headers.complete"):
            self.headers_in = True  # the upstream is done with it
            if self.early:
                await self.answered()


def _asked_nobody(attempts: Sequence[Attempt]) -> bool:
    """Whether a search with these ``attempts`` sent no provider a request: every answer it kept came
    from the result cache (or an identical search in flight), and the others were skipped unasked. One
    provider asked, even one that failed, may have spent quota: the answer is then not ``cached``."""
    return all(attempt.outcome in {"cached", "skipped"} for attempt in attempts)


def _first_typed(group: BaseExceptionGroup[BaseException]) -> AnisearchError | None:
    """The first anisearch error in ``group`` (searched depth first), or None."""
    for exc in group.exceptions:
        if isinstance(exc, AnisearchError):
            return exc
        if isinstance(exc, BaseExceptionGroup) and (typed := _first_typed(exc)) is not None:
            return typed
    return None


def _report_failure(task: asyncio.Task[None]) -> None:
    """Log what ended a lease-renewing task other than its cancellation (it never goes unread)."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("renewing a slot's lease failed", exc_info=exc)


def _scope_kind(scope: str) -> QuotaScope:
    """``guest``, ``api-key`` or ``session``: the kind a ledger scope id starts with."""
    kind = scope.partition(":")[0]
    return "api-key" if kind == "api-key" else "session" if kind == "session" else "guest"


def _strength(result: SearchResult) -> float:
    return result.best.similarity if result.best is not None else -1.0


def _with_provider(exc: ProviderError, name: str) -> ProviderError:
    exc.provider = name
    return exc
