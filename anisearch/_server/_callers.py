"""Who is calling, and what they may spend: each gateway client is one more scope of the ledger.

A named client is recognised by its token (``x-trace-key`` from trace.moe clients, ``Authorization:
Bearer`` from native ones). On an open gateway a caller without a token is a guest, known by its address:
the connection's peer, or the last address of ``X-Forwarded-For`` that is not a trusted proxy.

Allowances are ledger windows under the pseudo-provider ``gateway``: a rolling 24 h quota of searches and
a number of concurrency slots, per client, shared by every replica that uses the same ledger. The scope
is a keyed hash of the token or of the guest's address (:func:`anisearch._ledger.scope_id`), so the
ledger never holds either.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

import anyio

from anisearch._ledger import Refusal, Stale, Ticket, WindowSpec, scope_id
from anisearch._ledger._windows import to_us

if TYPE_CHECKING:
    from collections.abc import Mapping

    from anisearch._ledger import Ledger
    from anisearch._server._settings import ServerSettings

__all__ = ["GATEWAY", "Caller", "Denied", "Gate", "identify"]

GATEWAY = "gateway"
"""The ledger's provider name for the gateway's own allowances."""
DAY = 86_400.0
WINDOW = "rolling-24h"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Caller:
    """One caller of the gateway.

    Attributes:
        name: The client's name, or the guest's address (``/me``'s ``id``).
        scope: The ledger scope (a keyed hash; never the token or the address).
        quota: Searches per rolling 24 h.
        concurrency: Searches in flight at once.
        guest: True for a caller without a token on an open gateway.
    """

    name: str
    scope: str
    quota: int
    concurrency: int
    guest: bool

    @property
    def windows(self) -> tuple[WindowSpec, ...]:
        return (WindowSpec(WINDOW, span_seconds=DAY, limit=self.quota),)


@dataclass(frozen=True, slots=True)
class Denied:
    """Why a request is refused before any work: no token (401) or an unknown one (403)."""

    status: Literal[401, 403]
    message: str


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]").split("%")[0])
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: str | None, trusted: list[str]) -> str:
    """The caller's address: the peer, or, when the peer is a trusted proxy, the right-most address of
    ``X-Forwarded-For`` that is not itself a trusted proxy."""
    networks = [ipaddress.ip_network(net) for net in trusted]

    def is_trusted(address: IPAddress) -> bool:
        return any(address in net for net in networks)

    current = _address(peer or "")
    if current is None:
        return peer or "unknown"
    if forwarded_for and is_trusted(current):
        for hop in reversed(forwarded_for.split(",")):
            address = _address(hop)
            if address is None:
                break
            current = address
            if not is_trusted(address):
                break
    if isinstance(current, ipaddress.IPv6Address):
        if current.ipv4_mapped is not None:
            return str(current.ipv4_mapped)
        return str(ipaddress.ip_network(f"{current}/64", strict=False))  # trace.moe counts a /64
    return str(current)


def identify(
    headers: Mapping[str, str], peer: str | None, settings: ServerSettings, *, native: bool
) -> Caller | Denied:
    """The caller of a request, or why it is refused.

    Args:
        headers: The request headers (case-insensitive mapping).
        peer: The connection's peer address.
        settings: The gateway's settings (clients, open, trusted proxies).
        native: The native API (``Authorization: Bearer``) rather than trace.moe's (``x-trace-key``);
            either header is accepted on either API.
    """
    token = headers.get("x-trace-key", "").strip()
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if not token and scheme.lower() == "bearer":
        token = credentials.strip()
    if token:
        spec = settings.client_for(token)
        if spec is None:
            return Denied(403, "Invalid API key")
        return Caller(
            name=spec.name,
            scope=scope_id("api-key", "gateway-client:" + token),
            quota=spec.quota if spec.quota is not None else settings.client_quota,
            concurrency=spec.concurrency or settings.client_concurrency,
            guest=False,
        )
    if not settings.open:
        where = "Authorization: Bearer <token>" if native else "x-trace-key: <token>"
        return Denied(401, f"Missing API key: this gateway serves named clients only; send {where}")
    address = client_address(peer, headers.get("x-forwarded-for"), settings.trusted_proxies)
    return Caller(
        name=address,
        scope=scope_id("guest", "gateway-guest:" + address),
        quota=settings.guest_quota,
        concurrency=settings.guest_concurrency,
        guest=True,
    )


@dataclass(frozen=True, slots=True)
class Refused:
    """A caller's own allowance said no."""

    kind: Literal["quota", "concurrency"]
    quota: int
    used: int
    until: datetime | None


class Gate:
    """Reserve and settle a caller's searches in the ledger (one more scope per caller).

    Args:
        ledger: The ledger the library uses (same URL), shared by every replica.
        slot_wait: Seconds a search waits for one of its caller's slots before it is refused.
        lease_seconds: How long a reservation holds without being settled (a search's deadline + margin).
    """

    def __init__(self, ledger: Ledger, *, slot_wait: float, lease_seconds: float) -> None:
        self.ledger = ledger
        self.slot_wait = slot_wait
        self.lease_seconds = lease_seconds

    async def used(self, caller: Caller) -> int:
        """Searches the caller made in the last 24 h (counting those in flight)."""
        windows = caller.windows
        for quota in await self.ledger.snapshot(GATEWAY, lambda _name: windows, scope=caller.scope):
            if quota.window == WINDOW:
                return quota.used or 0
        return 0

    async def admit(self, caller: Caller) -> Ticket | Refused:
        """A ticket for one search, waiting up to ``slot_wait`` seconds for a free slot.

        Raises:
            LedgerError: The ledger cannot be used.
        """
        give_up_at = anyio.current_time() + self.slot_wait
        while True:
            with anyio.CancelScope(shield=True):  # a reserve cut short could hold a slot nobody settles
                result = await self.ledger.reserve(
                    GATEWAY,
                    caller.scope,
                    caller.windows,
                    slots=caller.concurrency,
                    lease_seconds=self.lease_seconds,
                    trust_estimate=True,
                )
            if isinstance(result, Ticket):
                return result
            if isinstance(result, Stale) or result.kind != "concurrency":
                return await self._refused(caller, result)
            left = give_up_at - anyio.current_time()
            if left <= 0:  # slot_wait 0: one try
                return Refused("concurrency", caller.quota, await self.used(caller), None)
            await self.ledger.wait(GATEWAY, caller.scope, left)

    async def _refused(self, caller: Caller, result: Refusal | Stale) -> Refused:
        until = None
        if isinstance(result, Refusal) and result.until > to_us(self.ledger.now()):
            from anisearch._ledger._windows import from_us

            until = from_us(result.until)
        return Refused("quota", caller.quota, await self.used(caller), until)

    async def settle(self, ticket: Ticket, *, answered: bool) -> None:
        """Count an answered search in the caller's window (or not) and free its slot.

        Raises:
            LedgerError: The ledger cannot be used.
        """
        with anyio.CancelScope(shield=True):  # a shutdown or a client gone never leaks the slot
            await self.ledger.settle(ticket, "charged" if answered else "unsent")
