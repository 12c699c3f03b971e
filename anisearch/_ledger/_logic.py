"""Reserve and settle: the ledger's two atomic steps, as pure logic over one scope's state.

The memory and SQLite backends run these functions inside their atomic step (a lock, one ``BEGIN
IMMEDIATE`` transaction); the Redis backend runs a Lua port of them (``_redis_scripts.py``) in one script
call each. All instants are integer microseconds since the Unix epoch; all time arithmetic (spans,
calendar periods, zones) is done by the caller, which passes each window's *leave* instants ready-made
(see ``_windows.py``), so this module and the Lua port only count and compare.

reserve (per search, before anything is sent):
    1. Expire reservations whose lease lapsed or whose holder is known dead: their units stay counted
       (the request may have reached the upstream) and their slot frees.
    2. A running cooldown refuses, with the kind it was set for (rate, busy, quota).
    3. Per window: drop the units that have left; a window whose used + 1 exceeds its limit refuses,
       until the instant enough units leave; a window blocked by a spent-quota answer refuses until then.
    4. A window the upstream reports, admitted only thanks to units that left since its last upstream
       count, answers *stale*: the caller asks the upstream's free quota endpoint, then reserves again.
    5. A concurrency slot is taken, or refused (with the holders, and when the first lease lapses).
    6. Admitted: one pending unit per window and the reservation (holder, lease, slot) are stored.

settle (per search, after the answer or the failure):
    The reservation's units become counted (``charged``: the upstream ran the search, or may have), stay
    only in request-counting windows (``uncharged``: it answered an error), or go (``unsent``). Then every
    upstream count reconciles its window, concurrency and priority are stored, a cooldown or a spent-quota
    block is set, and the busy backoff grows or resets. The slot frees.

free_slot (optional, between the two, when others wait):
    The reservation gives up its concurrency slot and keeps its units pending until it is settled. The
    upstream counts a search as in flight until it answers (or a moment after), so once the answer has
    arrived the slot can go to the next search while this one still reads and settles the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = [
    "BUSY_BACKOFF_CAP_SECONDS",
    "Refusal",
    "Reservation",
    "ReserveRequest",
    "ScopeState",
    "ScopeView",
    "SettleRequest",
    "Stale",
    "TruthFact",
    "Units",
    "WindowArgs",
    "WindowState",
    "WindowView",
    "busy_backoff_seconds",
    "free_slot",
    "inspect",
    "reserve",
    "settle",
]

Outcome = Literal["charged", "uncharged", "unsent"]
RefusalKind = Literal["quota", "rate", "busy", "concurrency"]

BUSY_BACKOFF_CAP_SECONDS = 30.0
"""The longest shared backoff after repeated "queue full" / "concurrency" answers, seconds."""
_BUSY_BACKOFF_BASE_SECONDS = 0.5
_SECOND = 1_000_000


def busy_backoff_seconds(streak: int, jitter: float) -> float:
    """The shared backoff after the ``streak``-th busy answer in a row: 0.5 s doubling, capped at 30 s,
    times ``jitter`` (0.5..1.0, drawn by the caller)."""
    return float(min(_BUSY_BACKOFF_BASE_SECONDS * 2 ** max(streak - 1, 0), BUSY_BACKOFF_CAP_SECONDS) * jitter)


class Units(Protocol):
    """The units of one scope: per window, one row per counted search or request, with its leave instant.

    A unit is *pending* while its reservation is in flight, *settled* after.
    """

    def purge(self, window: str, now: int) -> int:
        """Drop the units whose leave instant is at or before ``now``; how many were dropped."""

    def count(self, window: str) -> int:
        """Units in the window (pending and settled)."""

    def count_settled(self, window: str) -> int:
        """Settled units in the window."""

    def count_before(self, window: str, instant: int) -> int:
        """Units leaving strictly before ``instant``."""

    def count_settled_before(self, window: str, instant: int) -> int:
        """Settled units leaving strictly before ``instant``."""

    def kth_leave(self, window: str, k: int) -> int | None:
        """The ``k``-th earliest leave instant (1-based), or None when there are fewer units."""

    def add(self, window: str, member: str, leave: int) -> None:
        """Add a pending unit."""

    def settle(self, window: str, member: str, leave: int | None) -> None:
        """Make a pending unit settled, leaving at ``leave`` (None: as it was); no-op when it is gone."""

    def remove(self, window: str, member: str) -> None:
        """Drop one unit (no-op when it is gone)."""

    def drop_oldest_settled(self, window: str, k: int) -> None:
        """Drop the ``k`` settled units that leave first."""


@dataclass(slots=True)
class WindowState:
    """What the ledger holds for one window of one scope besides its units.

    Attributes:
        limit: The limit enforced: the upstream's, or one derived from a remaining count; None means
            the declared default applies.
        declared: The limit the upstream itself stated, for display.
        truth_at: When the upstream last counted this window (microseconds), or None.
        source: Where that count came from (``upstream``, ``headers``).
        unknown: Units the upstream counted that the ledger has no record of.
        unknown_leave: When those leave.
        freed: Units that left since the last upstream count (or ever, before the first).
        blocked_until: A spent-quota answer blocks the window until then (0: not blocked).
        resets_at: A reset instant the upstream named, for display (0: none).
    """

    limit: int | None = None
    declared: int | None = None
    truth_at: int | None = None
    source: str = "ledger"
    unknown: int = 0
    unknown_leave: int = 0
    freed: int = 0
    blocked_until: int = 0
    resets_at: int = 0


@dataclass(slots=True)
class Held:
    """A reservation in flight."""

    holder: str
    lease_until: int
    slot: bool
    at: int


@dataclass(slots=True)
class ScopeState:
    """Everything the ledger holds for one ``(provider, scope)`` except units."""

    windows: dict[str, WindowState] = field(default_factory=dict)
    cooldown_until: int = 0
    cooldown_reason: str = ""
    cooldown_kind: str = ""
    concurrency: int | None = None
    priority: int | None = None
    busy_streak: int = 0
    held: dict[str, Held] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WindowArgs:
    """One window as a reserve or settle step needs it: its spec, reduced to numbers.

    Attributes:
        name: The window's name.
        kind: ``quota`` or ``rate``.
        counts: ``searches`` or ``requests``.
        limit: The declared default limit, or None.
        reported: The upstream reports the window (see ``WindowSpec.reported``).
        leave: When a unit counted now leaves (microseconds).
        span: A rolling window's span (microseconds: a unit counted at ``t`` leaves at ``t + span``); 0 for
            a calendar window.
    """

    name: str
    kind: str
    counts: str
    limit: int | None
    reported: bool
    leave: int
    span: int = 0


@dataclass(frozen=True, slots=True)
class ReserveRequest:
    """The arguments of one reserve step."""

    now: int
    token: str
    holder: str
    lease_until: int
    slots: int
    windows: tuple[WindowArgs, ...]
    take_slot: bool = True
    trust_estimate: bool = False
    dead_holders: frozenset[str] = frozenset()
    queue_until: int = 0
    """Refused a slot, the search waits for one: until this instant a ledger that hands freed slots over
    directly may reserve one for it (0: it does not wait)."""


@dataclass(frozen=True, slots=True)
class Reservation:
    """An admitted search: settle it exactly once."""

    token: str
    lease_until: int
    reserved_at: int = 0
    """When a freed slot was reserved for a queued search (0: now)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Not now: why, until when, and who holds the slots (for ``concurrency``)."""

    kind: RefusalKind
    until: int
    reason: str
    window: str | None = None
    holders: tuple[str, ...] = ()
    queued: bool = False
    """Refused a slot, the search was queued for the next one to free (see ``ReserveRequest.queue_until``)."""


@dataclass(frozen=True, slots=True)
class Stale:
    """Admission would rest on units that left since the upstream last counted: ask it first."""

    window: str


@dataclass(frozen=True, slots=True)
class TruthFact:
    """An upstream count of one window, ready for reconciliation.

    Attributes:
        window: The window's name.
        observed_at: When it was counted (microseconds).
        limit, used, remaining: As the upstream said (None when it did not).
        unknown_leave: When units the ledger did not know of leave (microseconds).
        resets_at: The reset instant the upstream named, or 0.
        source: ``upstream`` or ``headers``.
        since_leave: In a rolling window, when a unit settled as the counted search was reserved (less the
            upstream's counting lag) would leave; else 0. The searches settled after that instant ran
            alongside the counted one, and the upstream may have counted it before they reached it: a count
            lower than the ledger's can then only prove the earlier units missing.
    """

    window: str
    observed_at: int
    limit: int | None
    used: int | None
    remaining: int | None
    unknown_leave: int
    resets_at: int = 0
    source: str = "upstream"
    since_leave: int = 0


@dataclass(frozen=True, slots=True)
class SettleRequest:
    """The arguments of one settle step (everything the answer or the failure said)."""

    now: int
    token: str
    outcome: Outcome
    windows: tuple[WindowArgs, ...]
    truths: tuple[TruthFact, ...] = ()
    concurrency: int | None = None
    priority: int | None = None
    cooldown: tuple[int, str, str] | None = None
    """``(until, reason, kind)`` with kind ``rate`` or ``quota``."""
    busy: str | None = None
    """A busy answer's one-line reason: grow the shared backoff."""
    busy_jitter: float = 1.0
    blocks: tuple[tuple[str, int], ...] = ()
    """``(window, until)``: the upstream said this window's quota is spent."""


@dataclass(frozen=True, slots=True)
class WindowView:
    """One window at one instant, as a backend's inspect step reads it (instants in microseconds)."""

    name: str
    limit: int | None
    declared: int | None
    used: int
    next_leave: int | None
    spent_until: int | None
    truth_at: int | None
    source: str
    blocked_until: int


@dataclass(frozen=True, slots=True)
class ScopeView:
    """One scope at one instant: its windows, cooldown, concurrency and priority."""

    windows: tuple[WindowView, ...]
    cooldown_until: int
    cooldown_reason: str
    concurrency: int | None
    priority: int | None
    held: int


def inspect(state: ScopeState, units: Units, now: int, windows: tuple[WindowArgs, ...]) -> ScopeView:
    """The scope at ``now``: every window it holds or ``windows`` declares (units that left are dropped)."""
    declared = {window.name: window for window in windows}
    views = []
    for name in sorted({*state.windows, *declared}):
        ws = state.windows.setdefault(name, WindowState())
        _purge(units, name, ws, now)
        default = declared[name].limit if name in declared else None
        limit = ws.limit if ws.limit is not None else default
        used = units.count(name) + ws.unknown
        spent = None
        if ws.blocked_until > now:
            spent = ws.blocked_until
        elif limit is not None and used >= limit:
            spent = _kth(units, name, ws, used - limit + 1)
        views.append(
            WindowView(
                name=name,
                limit=limit,
                declared=ws.declared,
                used=used,
                next_leave=_kth(units, name, ws, 1) if used else None,
                spent_until=spent,
                truth_at=ws.truth_at,
                source=ws.source,
                blocked_until=ws.blocked_until,
            )
        )
    held = sum(1 for item in state.held.values() if item.lease_until > now)
    return ScopeView(
        windows=tuple(views),
        cooldown_until=state.cooldown_until,
        cooldown_reason=state.cooldown_reason,
        concurrency=state.concurrency,
        priority=state.priority,
        held=held,
    )


def _expire(
    state: ScopeState,
    units: Units,
    windows: tuple[WindowArgs, ...],
    now: int,
    *,
    dead_holders: frozenset[str] = frozenset(),
    but: str = "",
) -> None:
    """End the reservations (other than ``but``) whose lease lapsed or whose holder is dead."""
    for token, held in list(state.held.items()):
        if token != but and (held.lease_until <= now or held.holder in dead_holders):
            del state.held[token]
            for window in windows:  # possibly charged: it stays counted from when it was sent
                units.settle(window.name, token, None)


def _kth(units: Units, window: str, ws: WindowState, k: int) -> int:
    """The k-th earliest leave among the units and the unknown ones."""
    if ws.unknown:
        before = units.count_before(window, ws.unknown_leave)
        if k > before:
            if k <= before + ws.unknown:
                return ws.unknown_leave
            k -= ws.unknown
    found = units.kth_leave(window, k)
    return found if found is not None else ws.unknown_leave


def _purge(units: Units, window: str, ws: WindowState, now: int) -> None:
    gone = units.purge(window, now)
    if ws.unknown and ws.unknown_leave <= now:
        gone += ws.unknown
        ws.unknown = 0
    ws.freed += gone


CLOCK_SKEW_US = 60 * _SECOND
"""How far apart the clocks of processes sharing a ledger may be (microseconds) for their counts to be
ordered by time; a count stored further "ahead" than that came from a clock that was wrong."""
RECOUNT_US = 600 * _SECOND
"""A reported window found spent on a count the upstream gave longer ago than this (microseconds) is asked
about again before a search is refused for it: a paid tier raises the limit, and the ledger would refuse
for up to a day."""


def _told_long_ago(ws: WindowState, now: int) -> bool:
    return ws.truth_at is not None and now - ws.truth_at > RECOUNT_US


def _windows_refusal(state: ScopeState, units: Units, request: ReserveRequest) -> Refusal | Stale | None:
    now = request.now
    blockers: list[Refusal] = []
    stale: str | None = None
    for window in request.windows:
        ws = state.windows.setdefault(window.name, WindowState())
        _purge(units, window.name, ws, now)
        kind: RefusalKind = "rate" if window.kind == "rate" else "quota"
        if ws.blocked_until > now:
            blockers.append(Refusal(kind, ws.blocked_until, "spent", window.name))
            continue
        limit = ws.limit if ws.limit is not None else window.limit
        if limit is None:
            continue
        used = units.count(window.name) + ws.unknown
        if used + 1 > limit:
            if window.reported and not request.trust_estimate and _told_long_ago(ws, now):
                stale = window.name  # spent by a count older than RECOUNT: the limit may have been raised
                continue
            until = _kth(units, window.name, ws, used - limit + 1)
            # a limit derived from what is left, not the one the provider documents
            counted = ws.limit is not None and ws.declared is None and ws.limit != window.limit
            reason = (
                "none left by the upstream's count and the searches since"
                if counted
                else f"{used} of {limit} used"
            )
            blockers.append(Refusal(kind, until, reason, window.name))
        elif window.reported and not request.trust_estimate and ws.freed and used + 1 + ws.freed > limit:
            stale = window.name
    if blockers:
        return max(blockers, key=lambda refusal: refusal.until)
    return Stale(stale) if stale is not None else None


def reserve(state: ScopeState, units: Units, request: ReserveRequest) -> Reservation | Refusal | Stale:
    """One reserve step (see the module docstring). Mutates ``state`` and ``units``."""
    now = request.now
    _expire(state, units, request.windows, now, dead_holders=request.dead_holders)
    refusal = _windows_refusal(state, units, request)
    if state.cooldown_until > now:  # unless a spent window frees later: that is the longer wait
        kind: RefusalKind = (
            "busy" if state.cooldown_kind == "busy" else "quota" if state.cooldown_kind == "quota" else "rate"
        )
        if not (isinstance(refusal, Refusal) and refusal.until > state.cooldown_until):
            return Refusal(kind, state.cooldown_until, state.cooldown_reason)
    if refusal is not None:
        return refusal
    if request.take_slot:
        holding = [held for held in state.held.values() if held.slot]
        slots = state.concurrency or request.slots
        if len(holding) >= slots:
            until = min(held.lease_until for held in holding)
            holders = tuple(sorted({held.holder for held in holding}))
            return Refusal("concurrency", until, f"{len(holding)} of {slots} slots held", holders=holders)
    state.held[request.token] = Held(request.holder, request.lease_until, request.take_slot, now)
    for window in request.windows:
        units.add(window.name, request.token, window.leave)
    return Reservation(request.token, request.lease_until)


def free_slot(state: ScopeState, token: str) -> bool:
    """Give up the reservation's concurrency slot, keeping its units pending. False when it held none."""
    held = state.held.get(token)
    if held is None or not held.slot:
        return False
    held.slot = False
    return True


def _reconcile(units: Units, ws: WindowState, fact: TruthFact, counted: bool, now: int) -> None:
    # An older count arriving late is ignored; a stored one more than CLOCK_SKEW_US "later" than now came
    # from a clock that ran ahead (a machine sharing the ledger, or this one before its clock was stepped
    # back): it orders nothing, and the newer count is taken (else every count is thrown away until that
    # moment passes). Within that, clocks of machines sharing a ledger may differ: the order stands.
    if ws.truth_at is not None and fact.observed_at < ws.truth_at <= now + CLOCK_SKEW_US:
        return
    units.purge(fact.window, fact.observed_at)
    settled = units.count_settled(fact.window)
    if fact.limit is not None:
        ws.limit = ws.declared = fact.limit
    used = fact.used
    if used is None and fact.remaining is not None:
        if ws.declared is not None:
            used = max(ws.declared - fact.remaining, 0)
        else:  # no limit known: what is left on top of what the ledger counted (at least one if spent)
            used = settled if settled or fact.remaining else 1
            ws.limit = used + fact.remaining
    if used is None:
        return
    if used >= settled:
        ws.unknown, ws.unknown_leave = used - settled, fact.unknown_leave
    else:
        before = max(used - int(counted), 0)
        units.drop_oldest_settled(fact.window, _missing(units, fact, settled - used, before))
        ws.unknown = 0
    ws.truth_at, ws.source, ws.freed, ws.blocked_until = fact.observed_at, fact.source, 0, 0
    ws.resets_at = fact.resets_at


def _missing(units: Units, fact: TruthFact, excess: int, before: int) -> int:
    """How many of the oldest settled units an upstream count (``excess`` below the ledger's) proves
    missing upstream. Only those settled before the counted search was reserved can be judged: the count
    holds ``before`` units of the searches that came before it."""
    if not fact.since_leave:
        return excess
    earlier = units.count_settled_before(fact.window, fact.since_leave)
    return min(excess, max(earlier - before, 0))


def _kept(outcome: Outcome, window: WindowArgs) -> bool:
    """Whether a search settled with ``outcome`` counts in ``window`` (the upstream counted it there)."""
    return outcome == "charged" or (outcome == "uncharged" and window.counts == "requests")


def _release(state: ScopeState, units: Units, request: SettleRequest) -> bool:
    held = state.held.pop(request.token, None)
    for window in request.windows:
        if not _kept(request.outcome, window):
            units.remove(window.name, request.token)
        elif held is not None:
            units.settle(window.name, request.token, window.leave)
    return held is not None and held.slot


def settle(state: ScopeState, units: Units, request: SettleRequest) -> bool:
    """One settle step (see the module docstring). Mutates ``state`` and ``units``; True when it freed a
    concurrency slot (one that was not handed over already)."""
    # Searches whose lease lapsed (given up while the upstream ran them to their end) are counted as
    # settled before a count is taken as the truth: the upstream's count holds them.
    _expire(state, units, request.windows, request.now, but=request.token)
    freed = _release(state, units, request)
    counted = {window.name for window in request.windows if _kept(request.outcome, window)}
    for fact in request.truths:
        ws = state.windows.setdefault(fact.window, WindowState())
        _reconcile(units, ws, fact, fact.window in counted, request.now)
    if request.concurrency is not None:
        state.concurrency = request.concurrency
    if request.priority is not None:
        state.priority = request.priority
    if request.outcome == "charged" and request.busy is None:
        state.busy_streak = 0
    if request.busy is not None:
        state.busy_streak += 1
        seconds = busy_backoff_seconds(state.busy_streak, request.busy_jitter)
        _cool(state, request.now + int(seconds * _SECOND), request.busy, "busy")
    if request.cooldown is not None:
        _cool(state, *request.cooldown)
    for name, until in request.blocks:
        ws = state.windows.setdefault(name, WindowState())
        ws.blocked_until = max(ws.blocked_until, until)
    return freed


def _cool(state: ScopeState, until: int, reason: str, kind: str) -> None:
    if until > state.cooldown_until:
        state.cooldown_until, state.cooldown_reason, state.cooldown_kind = until, reason, kind
