"""The ledger interface, and what every backend shares: reserve, settle, observe, wait, snapshot.

A *scope* is ``(provider, scope_id)``: ``scope_id`` is ``"guest"`` or ``"<kind>:<keyed hash>"`` (never the
key itself; see :func:`scope_id`). A backend (memory, SQLite, Redis) makes four steps atomic — reserve,
settle, renew, inspect (see ``_logic.py``) — and can wake the searches waiting for a slot; everything
else (argument checks, turning window specs and ``Quota`` observations into numbers, snapshots) lives
here once.

All datetimes are timezone-aware UTC. All durations are seconds.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import os
import re
import secrets
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from anisearch._address import provider_address
from anisearch._exceptions import ConfigurationError, LedgerError
from anisearch._ledger._logic import (
    Refusal,
    ReserveRequest,
    ScopeView,
    SettleRequest,
    Stale,
    TruthFact,
    WindowArgs,
    WindowView,
)
from anisearch._ledger._windows import WindowSpec, aware, from_us, spec_for, to_us
from anisearch._models import Quota, QuotaScope

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from anisearch._ledger._logic import Outcome

__all__ = [
    "QUEUE_SECONDS",
    "UPSTREAM_HOLDER",
    "Clock",
    "Ledger",
    "Nap",
    "Refusal",
    "ScopeView",
    "Stale",
    "Ticket",
    "WindowView",
    "holder_is_dead",
    "scope_id",
    "system_clock",
    "this_holder",
    "upstream_holder",
]

Clock = Callable[[], datetime]
"""Returns the current instant as an aware datetime (tests inject a fake one)."""
QUEUE_SECONDS = 2.0
"""How long a search refused a slot stays queued for one handed over directly, unless it asks again (which
queues it anew, in the same place) or stops waiting. A queued search naps for at most a second."""

_SCOPE_KEY = b"anisearch ledger scope v1"
_PROVIDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SCOPE = re.compile(r"(?:guest|api-key|session)(?::[0-9a-f]{8,64})?")
_SCOPE_KINDS: tuple[QuotaScope, ...] = get_args(QuotaScope)
_MAX_COUNT = 2**31 - 1
_COUNT_LAG = timedelta(seconds=1)
"""How long after answering a search an upstream may take to count it (trace.moe writes the log row its
counts read once the answer has left): a search answered this shortly before another was reserved may be
missing from the count in the other's answer."""


def scope_id(scope: QuotaScope, secret: str | None) -> str:
    """The ledger's name for a credential: ``"guest"``, or the scope kind and a keyed BLAKE2b hash.

    The same secret gives the same id on every machine (so a Redis ledger is shared by a fleet), and the
    secret cannot be read back from it.
    """
    if secret is None:
        return scope
    digest = hashlib.blake2b(secret.encode(), key=_SCOPE_KEY, digest_size=10).hexdigest()
    return f"{scope}:{digest}"


def provider_scope(provider: Any) -> str:
    """The ledger scope of a provider's requests: its credential (:func:`scope_id`), and its address when
    that is not the provider's own (``base_url`` other than ``default_url``).

    A self-hosted instance, a mirror or an emulator keeps quota of its own: a spent quota at the public
    service does not refuse searches at another address, nor the reverse. At the provider's own address,
    and for a provider that declares none (``default_url``), the scope is the credential's alone, as
    ledgers written before kept it.
    """
    credential = provider.credential
    base = provider_address(provider)
    if base is None:  # no address of its own to tell apart: as before
        return scope_id(credential.scope, credential.secret)
    return scope_id(credential.scope, f"{base}\n{credential.secret or ''}")


def system_clock() -> datetime:
    """A ledger's clock unless one is given: the system's, in UTC."""
    return datetime.now(UTC)


def _machine() -> str:
    """Where this process's PIDs mean something: the host name, and on Linux the PID namespace (containers
    sharing a host name, such as a pod's sidecars or ``--network host``, each number their own processes).
    """
    try:
        namespace = Path("/proc/self/ns/pid").stat().st_ino
    except OSError:  # not Linux, or no /proc: the host name alone
        return socket.gethostname()
    return f"{socket.gethostname()}/pid-ns-{namespace}"


def _started_ms(pid: int) -> int:
    """When process ``pid`` started, in milliseconds: since the machine booted on Linux, since the epoch
    elsewhere.

    On Linux psutil gives the start as the boot time read now plus the start's offset from boot, so a clock
    step (NTP, a resumed VM) would move it and make a live holder look like another process: the offset
    alone does not move. Elsewhere psutil's boot time is recomputed from the clock in each process (it may
    differ by a second between two), while the start it gives is stamped once: that is kept as it is.

    Raises:
        psutil.Error: No such process, or it cannot be read.
    """
    import psutil

    started = psutil.Process(pid).create_time()
    if sys.platform.startswith("linux"):
        started -= psutil.boot_time()
    return round(started * 1000)


@cache
def this_holder() -> str:
    """This process as a slot holder: ``machine:pid:start`` (see :func:`_machine` and :func:`_started_ms`)."""
    return f"{_machine()}:{os.getpid()}:{_started_ms(os.getpid())}"


os.register_at_fork(after_in_child=this_holder.cache_clear)  # a forked child is a holder of its own


UPSTREAM_HOLDER = "upstream-runs:"
"""What a held search's holder starts with (see :meth:`Ledger.hold`): the process that gave it up, which
may have ended since, while the upstream still runs the search until the hold's end."""


def upstream_holder() -> str:
    """This process's searches, once given up and held until the upstream is done with them: never dead
    (:func:`holder_is_dead`), so a search held past this process's end keeps its slot until then."""
    return UPSTREAM_HOLDER + this_holder()


def holder_is_dead(holder: str) -> bool:
    """True when ``holder`` is a process of this host that no longer runs (or a new one reusing its pid).

    A holder on another host is never known dead here, nor a search held for the upstream
    (:func:`upstream_holder`): their short lease lapses instead.
    """
    import psutil

    parts = holder.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != _machine():  # noqa: PLR2004 - machine:pid:start
        return False
    try:
        pid, started = int(parts[1]), int(parts[2])
    except ValueError:
        return False
    try:
        return abs(_started_ms(pid) - started) > 1
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True
    except psutil.Error:
        return False


def check_provider(provider: str) -> str:
    """``provider`` unchanged.

    Raises:
        ConfigurationError: It is not an entry-point style name (letters, digits, ``.``, ``_``, ``-``).
    """
    if not _PROVIDER.fullmatch(provider):
        raise ConfigurationError(f"invalid provider name for the ledger: {provider!r}")
    return provider


def check_scope(scope: str) -> str:
    """``scope`` unchanged.

    Raises:
        ConfigurationError: It is not what :func:`scope_id` makes. The check keeps a raw API key, cookie or
            address from ever being written to the ledger by mistake.
    """
    if not _SCOPE.fullmatch(scope):
        raise ConfigurationError(
            "invalid ledger scope: use scope_id() ('guest' or '<kind>:<hash>'), never a raw credential"
        )
    return scope


@dataclass(frozen=True, slots=True)
class Ticket:
    """An admitted search. Settle it exactly once with :meth:`Ledger.settle`; renew a long one."""

    provider: str
    scope: str
    token: str
    lease_until: datetime
    windows: tuple[WindowSpec, ...]
    reserved_at: datetime | None = None
    """When the search was admitted (an upstream count in its answer may miss the searches settled after)."""


class Nap:
    """What :meth:`Ledger.listening` gives a search waiting for a slot of one scope.

    ``await nap(seconds)`` returns when a slot of the scope was freed (spurious early returns are allowed)
    or after ``seconds``, with None: then ask again. Passed to :meth:`Ledger.reserve` as ``waiting=``, it
    also lets a ledger that hands freed slots over directly (Redis) queue the search when it is refused a
    slot: the nap then returns the search's :class:`Ticket` once a freed slot was reserved for it, which
    saves the search one more step after the wake-up. Leaving :meth:`Ledger.listening` takes a search that
    stopped waiting out of the queue (and gives up a slot reserved for it that it never took).
    """

    __slots__ = ("_wait", "lease_seconds", "provider", "scope", "token", "windows")

    def __init__(self, provider: str, scope: str, wait: Callable[[float], Awaitable[None]]) -> None:
        self.provider = provider
        self.scope = scope
        self._wait = wait
        self.token: str | None = None
        """The queued search's reservation token, until it is handed its ticket or stops being queued."""
        self.lease_seconds = 0.0
        self.windows: tuple[WindowSpec, ...] = ()

    async def __call__(self, seconds: float) -> Ticket | None:
        await self._wait(seconds)
        return None

    def _queued(self, token: str, lease_seconds: float, windows: tuple[WindowSpec, ...]) -> None:
        self.token, self.lease_seconds, self.windows = token, lease_seconds, windows

    def _ticket(self, reserved_at: int) -> Ticket:
        """The queued search's ticket, for the slot reserved for it at ``reserved_at`` (microseconds)."""
        assert self.token is not None  # noqa: S101 - called for a queued search only
        at = from_us(reserved_at)
        token, self.token = self.token, None
        return Ticket(
            self.provider,
            self.scope,
            token,
            at + timedelta(seconds=self.lease_seconds),
            self.windows,
            reserved_at=at,
        )


def _since_leave(spec: WindowSpec, since: datetime | None, now: datetime, tz: ZoneInfo) -> int:
    """``TruthFact.since_leave``: in a rolling window, when a unit settled at ``since`` (less the upstream's
    counting lag) leaves; 0 without ``since`` or in a calendar window, whose units all leave at once and
    give no order to go by."""
    if since is None or spec.span_seconds is None:
        return 0
    return to_us(spec.leave(min(aware(since, "the counted request's start"), now) - _COUNT_LAG, tz))


def _count(quota: Quota, name: str) -> int | None:
    value = getattr(quota, name)
    if value is None:
        return None
    if not 0 <= value <= _MAX_COUNT:
        raise ConfigurationError(f"Quota.{name} must be within 0..{_MAX_COUNT}, got {value}")
    return int(value)


class Ledger(abc.ABC):
    """Quota, rate, cooldown and concurrency state per (provider, scope), shared by every process (SQLite)
    or machine (Redis) that uses the same store.

    Args:
        url: The URL the ledger was opened from (any password masked).
        timezone: Zone of calendar windows that do not name their own.
        clock: The current instant; the system clock by default. Tests inject a fake one.
    """

    url: str
    """The ledger URL (``memory://``, ``sqlite:///path``, ``redis://host:port/db``; password masked)."""
    hands_over: bool = False
    """A freed slot is reserved for the search queued first; its nap returns the ticket (see :class:`Nap`)."""

    def __init__(self, url: str, *, timezone: ZoneInfo, clock: Clock | None = None) -> None:
        self.url = url
        self.timezone = timezone
        self._clock = clock or system_clock

    def now(self) -> datetime:
        """The ledger's current instant (its clock)."""
        return aware(self._clock(), "the ledger clock")

    # ------------------------------------------------------------------ backend steps

    @abc.abstractmethod
    async def _reserve(self, provider: str, scope: str, request: ReserveRequest) -> Any:
        """Run :func:`~anisearch._ledger._logic.reserve` atomically; return its result."""

    @abc.abstractmethod
    async def _settle(self, provider: str, scope: str, request: SettleRequest) -> None:
        """Run :func:`~anisearch._ledger._logic.settle` atomically and wake the waiters of the scope."""

    @abc.abstractmethod
    async def _free_slot(self, provider: str, scope: str, token: str) -> None:
        """Run :func:`~anisearch._ledger._logic.free_slot` atomically and wake the waiters of the scope."""

    @abc.abstractmethod
    async def _renew(
        self, provider: str, scope: str, token: str, lease_until: int, holder: str | None = None
    ) -> bool:
        """Move a reservation's lease (and give it to ``holder``, when given); False when it is gone
        (expired and taken over)."""

    @abc.abstractmethod
    async def _inspect(self, provider: str, scope: str, now: int, windows: Sequence[WindowArgs]) -> ScopeView:
        """The scope's state at ``now`` (units that left are dropped)."""

    @abc.abstractmethod
    async def _scopes(self, provider: str | None) -> list[tuple[str, str]]:
        """Every ``(provider, scope)`` the store holds (of one provider)."""

    @abc.abstractmethod
    async def _clear(self, provider: str | None) -> None:
        """Forget everything (of one provider)."""

    @abc.abstractmethod
    async def wait(self, provider: str, scope: str, seconds: float) -> None:
        """Return when a reservation of the scope was settled (a slot may have freed), or after
        ``seconds``, whichever is first. Spurious early returns are allowed."""

    @contextlib.asynccontextmanager
    async def listening(self, provider: str, scope: str) -> AsyncIterator[Nap]:
        """Listen for freed slots of the scope from now on, for a search that waits for one.

        Enter it *before* asking for the slot that may be refused: a slot freed between the refusal and
        the nap is then not missed. The context gives ``nap(seconds)``, which returns when a slot of the
        scope was freed (spurious early returns are allowed) or after ``seconds``.

        Raises:
            LedgerError: The store cannot be used.
        """

        async def nap(seconds: float) -> None:
            await self.wait(provider, scope, seconds)

        yield Nap(provider, scope, nap)

    async def _sync_clock(self) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Bring :meth:`now` in line with the store's own clock, when it has one (a shared Redis)."""

    def rebased(self, moment: datetime) -> datetime:
        """An instant read on this machine's clock (an upstream's answer, stamped by its provider) on the
        ledger's clock: the same, unless the store keeps its own (a shared Redis)."""
        return moment

    def _on_its_clock(self, quotas: Sequence[Quota]) -> Sequence[Quota]:
        """``quotas``' instants on the ledger's clock: each is taken as read on this machine's clock, as
        most are (``observed_at``; a reset or a cool-down worked out from a ``Retry-After`` or a TTL), so
        that one quota's instants stay on one clock. An upstream's own absolute instant (a ``resetsAt``)
        moves by this machine's clock error too: early when it runs ahead."""
        if type(self).rebased is Ledger.rebased:
            return quotas
        return [
            quota.model_copy(
                update={
                    field: self.rebased(moment)
                    for field in ("observed_at", "resets_at", "cooldown_until")
                    if (moment := getattr(quota, field)) is not None
                }
            )
            for quota in quotas
        ]

    async def aclose(self) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Release connections and files."""

    # ------------------------------------------------------------------ numbers for the steps

    def _args(self, windows: Sequence[WindowSpec], at: datetime) -> tuple[WindowArgs, ...]:
        return tuple(
            WindowArgs(
                name=spec.name,
                kind=spec.kind,
                counts=spec.counts,
                limit=spec.limit,
                reported=spec.reported,
                leave=to_us(spec.leave(at, self.timezone)),
                span=round(spec.span_seconds * 1_000_000) if spec.span_seconds is not None else 0,
            )
            for spec in windows
        )

    def _truth(
        self, quota: Quota, spec: WindowSpec, now: datetime, since: datetime | None
    ) -> TruthFact | None:
        limit, used, remaining = _count(quota, "limit"), _count(quota, "used"), _count(quota, "remaining")
        if limit is None and used is None and remaining is None:
            return None
        # Never later than the ledger's own clock: a count cannot come from the future (and a provider
        # stamps it with the system clock, which an injected ledger clock may trail).
        observed = min(aware(quota.observed_at, "Quota.observed_at"), now)
        resets = aware(quota.resets_at, "Quota.resets_at") if quota.resets_at is not None else None
        unknown_leave = (
            resets if resets is not None and resets > observed else spec.leave(observed, self.timezone)
        )
        return TruthFact(
            window=spec.name,
            observed_at=to_us(observed),
            limit=limit,
            used=used,
            remaining=remaining,
            unknown_leave=to_us(unknown_leave),
            resets_at=to_us(resets) if resets is not None else 0,
            source=quota.source if quota.source in ("upstream", "headers") else "upstream",
            since_leave=_since_leave(spec, since, now, self.timezone),
        )

    def _facts(
        self, windows: Sequence[WindowSpec], quotas: Sequence[Quota], now: datetime, since: datetime | None
    ) -> tuple[tuple[TruthFact, ...], int | None, int | None]:
        declared = {spec.name: spec for spec in windows}
        truths: list[TruthFact] = []
        concurrency = priority = None
        for quota in quotas:
            spec = spec_for(quota.window, declared)
            fact = self._truth(quota, spec, now, since) if spec is not None else None
            if fact is not None:
                truths.append(fact)
            value = _count(quota, "concurrency")
            concurrency = value or concurrency
            value = _count(quota, "priority")
            priority = value if value is not None else priority
        return tuple(truths), concurrency, priority

    # ------------------------------------------------------------------ the interface

    async def reserve(
        self,
        provider: str,
        scope: str,
        windows: Sequence[WindowSpec],
        *,
        slots: int = 1,
        lease_seconds: float = 15.0,
        take_slot: bool = True,
        trust_estimate: bool = False,
        dead_holders: frozenset[str] = frozenset(),
        waiting: Nap | None = None,
    ) -> Ticket | Refusal | Stale:
        """One atomic step: check every window, the cooldown and the concurrency, and hold a slot.

        Args:
            provider: Provider name.
            scope: A :func:`scope_id`.
            windows: The provider's windows (``WindowSpec``); a search counts one unit in each.
            slots: Searches allowed in flight at once until the upstream reports its own concurrency.
            lease_seconds: The reservation lapses after this many seconds unless renewed or settled
                (a process killed mid-search never holds its slot for longer).
            take_slot: Take a concurrency slot (False for requests that do not search).
            trust_estimate: Admit on the ledger's own estimate even where the upstream was not asked
                since a unit freed (after asking failed).
            dead_holders: Holders known dead (``holder_is_dead``): their reservations end now.
            waiting: The nap of :meth:`listening` the search waits with when refused a slot: a ledger that
                hands freed slots over directly queues it then (see :class:`Nap`).

        Returns:
            A :class:`Ticket`, a :class:`Refusal` (``kind``: quota, rate, busy, concurrency; ``until`` in
            microseconds since the epoch) or :class:`Stale` (ask the upstream's quota endpoint first).

        Raises:
            ConfigurationError: Invalid provider, scope or arguments.
            LedgerError: The store cannot be used.
        """
        check_provider(provider)
        check_scope(scope)
        if slots < 1 or not lease_seconds > 0:
            raise ConfigurationError(
                f"reserve() needs slots >= 1 and lease_seconds > 0, got {slots}, {lease_seconds}"
            )
        await self._sync_clock()
        now = self.now()
        queued = waiting if waiting is not None and self.hands_over and take_slot else None
        token = queued.token if queued is not None and queued.token else secrets.token_hex(12)
        lease_until = now + timedelta(seconds=lease_seconds)
        args = self._args(windows, now)
        request = ReserveRequest(
            now=to_us(now),
            token=token,
            holder=this_holder(),
            lease_until=to_us(lease_until),
            slots=slots,
            windows=args,
            take_slot=take_slot,
            trust_estimate=trust_estimate,
            dead_holders=dead_holders,
            # never past the end of a calendar period: a slot handed over later would count in the next one
            queue_until=min(
                [to_us(now) + round(QUEUE_SECONDS * 1_000_000)] + [a.leave for a in args if not a.span]
            )
            if queued is not None
            else 0,
        )
        if queued is not None:  # before the step: a search cancelled during it is withdrawn
            queued._queued(token, lease_seconds, tuple(windows))  # noqa: SLF001 - the nap's own state
        try:
            result = await self._reserve(provider, scope, request)
        except LedgerError:
            if queued is not None:
                queued.token = None  # the store failed: there is no queue to leave
            raise
        if queued is not None and not (isinstance(result, Refusal) and result.queued):
            queued.token = None  # admitted, or refused for another reason: no longer in the queue
        if isinstance(result, (Refusal, Stale)):
            return result
        if result.reserved_at:  # a slot handed over to this queued search while it asked again
            at = from_us(result.reserved_at)
            return Ticket(provider, scope, token, from_us(result.lease_until), tuple(windows), reserved_at=at)
        return Ticket(provider, scope, token, lease_until, tuple(windows), reserved_at=now)

    async def settle(
        self,
        ticket: Ticket,
        outcome: Outcome,
        *,
        observations: Sequence[Quota] = (),
        cooldown: tuple[datetime, str, str] | None = None,
        busy: str | None = None,
        blocks: Sequence[tuple[str, datetime]] = (),
    ) -> None:
        """One atomic step after the answer: count, reconcile, cool down, free the slot, wake a waiter.

        Args:
            ticket: What :meth:`reserve` gave.
            outcome: ``charged`` (answered, or sent and maybe run upstream), ``uncharged`` (the upstream
                answered an error; request windows still count it) or ``unsent`` (nothing left).
            observations: What the answer said (``Quota`` values: counts, concurrency, priority).
            cooldown: ``(until, reason, kind)``: ask nothing before ``until`` (kind ``rate`` or ``quota``).
            busy: A "queue full" / "concurrency" answer's reason: grow the backoff shared by every search
                on this ledger (0.5 s doubling to 30 s).
            blocks: ``(window, until)``: the upstream said that window's quota is spent.

        Raises:
            ConfigurationError: An observation with a naive datetime or a count outside 0..2**31-1.
            LedgerError: The store cannot be used.
        """
        now = self.now()
        observations = self._on_its_clock(observations)
        truths, concurrency, priority = self._facts(ticket.windows, observations, now, ticket.reserved_at)
        request = SettleRequest(
            now=to_us(now),
            token=ticket.token,
            outcome=outcome,
            windows=self._args(ticket.windows, now),
            truths=truths,
            concurrency=concurrency,
            priority=priority,
            cooldown=(to_us(aware(cooldown[0], "until")), " ".join(cooldown[1].split()), cooldown[2])
            if cooldown
            else None,
            busy=" ".join(busy.split()) if busy else None,
            busy_jitter=0.5 + secrets.randbelow(500) / 1000,
            blocks=tuple((name, to_us(aware(until, "until"))) for name, until in blocks),
        )
        await self._settle(ticket.provider, ticket.scope, request)

    async def free_slot(self, ticket: Ticket) -> None:
        """Hand the reservation's concurrency slot to the next search before it is settled.

        Call it once the upstream's answer has arrived (the upstream counts the search as in flight until
        it answers, or a moment after), while the answer is still being read; the units stay pending until
        :meth:`settle`, which then frees nothing more. It costs one more step than a plain settle, so the
        router uses it only when other searches wait for the slot.

        Raises:
            LedgerError: The store cannot be used.
        """
        await self._free_slot(ticket.provider, ticket.scope, ticket.token)

    async def hold(self, ticket: Ticket, seconds: float) -> bool:
        """Give a search up but keep its slot ``seconds`` more: the upstream still works on it (its caller
        stopped waiting). Its lease is cut to that; when it lapses the slot frees and its units stay counted,
        as a ``charged`` settle leaves them. Searches waiting for the slot are told, to wait exactly that
        long. False when its lease had lapsed already (then settle it).

        Raises:
            LedgerError: The store cannot be used.
        """
        until = to_us(self.now() + timedelta(seconds=seconds))
        # held by the upstream now: this process may end (Ctrl-C, SIGTERM) while the upstream still runs it
        if not await self._renew(ticket.provider, ticket.scope, ticket.token, until, upstream_holder()):
            return False
        await self._wake(ticket.provider, ticket.scope)
        return True

    async def _wake(self, provider: str, scope: str) -> None:  # noqa: B027 - a hook, not abstract
        """Wake a search waiting for a slot of the scope, to look again (a lease was cut short)."""

    async def wake(self, provider: str, scope: str) -> None:
        """Wake the searches waiting for a slot of the scope, to look again: its slots grew (the upstream
        said the account allows more at once than was assumed).

        Raises:
            LedgerError: The store cannot be used.
        """
        await self._wake(provider, scope)

    async def renew(self, ticket: Ticket, lease_seconds: float) -> bool:
        """Keep a running search's slot for ``lease_seconds`` more; False when its lease had lapsed.

        Raises:
            LedgerError: The store cannot be used.
        """
        until = to_us(self.now() + timedelta(seconds=lease_seconds))
        return await self._renew(ticket.provider, ticket.scope, ticket.token, until)

    async def observe(
        self,
        provider: str,
        scope: str,
        windows: Sequence[WindowSpec],
        quotas: Sequence[Quota],
        *,
        sent_at: datetime | None = None,
    ) -> None:
        """Record what an answer that was not a search said (trace.moe ``/me``, credits): one settle step
        without a reservation. ``sent_at``: when its request was sent (a count in it may miss the searches
        settled after; without it the count is taken to cover every search settled before it).

        Raises:
            ConfigurationError: Invalid provider or scope, a naive datetime or a count out of range.
            LedgerError: The store cannot be used.
        """
        check_provider(provider)
        check_scope(scope)
        await self._sync_clock()
        ticket = Ticket(provider, scope, "", self.now(), tuple(windows), reserved_at=sent_at)
        await self.settle(ticket, "unsent", observations=quotas)

    async def snapshot(
        self,
        provider: str | None = None,
        windows: Callable[[str], Sequence[WindowSpec]] | None = None,
        *,
        scope: str | None = None,
    ) -> list[Quota]:
        """Every known window of every scope (of ``provider``; of one ``scope`` of it, which needs a
        ``provider`` and reads only that scope), as ``Quota`` values estimated now.

        ``windows`` gives each provider's declared windows (their defaults show before the upstream said
        anything, with source ``default``). ``used`` counts in-flight searches; ``resets_at`` is when a
        spent window admits again, else when its next unit frees; ``observed_at`` is when the upstream
        last confirmed the count (or now, for an estimate); ``raw`` holds ``{"scope_id": ...}``.

        Raises:
            ConfigurationError: An invalid ``provider`` or ``scope``, or a ``scope`` without ``provider``.
            LedgerError: The store cannot be used.
        """
        if provider is not None:
            check_provider(provider)
        if scope is not None and provider is None:
            raise ConfigurationError("snapshot(scope=...) needs the provider too")
        await self._sync_clock()
        now = self.now()
        quotas: list[Quota] = []
        if provider is not None and scope is not None:
            pairs = [(provider, check_scope(scope))]
        else:
            pairs = sorted(await self._scopes(provider))
        for name, one in pairs:
            specs = list(windows(name)) if windows is not None else []
            view = await self._inspect(name, one, to_us(now), self._args(specs, now))
            defaults = {spec.name: spec.limit for spec in specs}
            quotas.extend(_quotas(name, one, view, now, defaults))
        return quotas

    async def clear(self, provider: str | None = None) -> None:
        """Forget everything the ledger believes (of one provider): ``anisearch quota --reset``.

        Raises:
            ConfigurationError: An invalid ``provider`` name.
            LedgerError: The store cannot be used.
        """
        if provider is not None:
            check_provider(provider)
        await self._clear(provider)


def _shown_limit(window: WindowView, default: int | None) -> int | None:
    """The limit a window reports: the upstream's stated one, else the declared default in force; None
    when the limit in force was only derived from a remaining count (the ledger's own count plus what the
    upstream said is left), which other clients' searches make no limit at all."""
    if window.declared is not None:
        return window.declared
    return window.limit if window.limit == default else None


def _remaining(window: WindowView, now: int) -> int | None:
    """What is left of a window at ``now`` (microseconds): none while a spent answer blocks it."""
    if window.blocked_until > now:
        return 0
    return max(window.limit - window.used, 0) if window.limit is not None else None


def _quotas(
    provider: str, scope: str, view: ScopeView, now: datetime, defaults: dict[str, int | None]
) -> list[Quota]:
    kind = scope.partition(":")[0]
    cooldown = from_us(view.cooldown_until) if view.cooldown_until > to_us(now) else None
    common: dict[str, Any] = {
        "provider": provider,
        "scope": kind if kind in _SCOPE_KINDS else "guest",
        "concurrency": view.concurrency,
        "priority": view.priority,
        "cooldown_until": cooldown,
        "raw": {"scope_id": scope, **({"cooldown_reason": view.cooldown_reason} if cooldown else {})},
    }
    quotas = []
    for window in view.windows:
        blocked = window.blocked_until > to_us(now)
        if window.limit is None and window.truth_at is None and not window.used and not blocked:
            continue
        estimate = "default" if window.used == 0 else "ledger"
        source = estimate if window.truth_at is None else window.source
        until = window.spent_until or window.next_leave
        quotas.append(
            Quota(
                **common,
                window=window.name,
                limit=_shown_limit(window, defaults.get(window.name)),
                used=window.used,
                remaining=_remaining(window, to_us(now)),
                resets_at=from_us(until) if until else None,
                source=source,
                observed_at=from_us(window.truth_at) if window.truth_at is not None else now,
            )
        )
    if not quotas and (cooldown or view.concurrency or view.priority is not None):
        quotas.append(Quota(**common, source="ledger", observed_at=now))
    return quotas
