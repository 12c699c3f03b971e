"""The legacy emulator's limit counters, kept as the PHP server kept them in Redis."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Allowance", "LegacyEmulatorState"]


@dataclass(frozen=True, slots=True)
class Allowance:
    """What one caller may do: ``limit`` searches per ``limit_ttl`` seconds and ``quota`` per
    ``quota_ttl`` seconds. Guests got 10/60 and 150/86400; token owners typically 10/60 and 1000/86400."""

    limit: int = 10
    limit_ttl: int = 60
    quota: int = 150
    quota_ttl: int = 86400

    @classmethod
    def of(cls, value: object, name: str) -> Allowance:
        """``value``, or the allowance a JSON object of its fields describes (``{"limit": 5, "quota": 100}``,
        the others at their defaults), as ``anisearch emulate -o`` gives it; ``name`` is the knob.

        Raises:
            ValueError: Not an object, a field an allowance does not have, or one that is not a whole
                number (0 or more).
        """
        if isinstance(value, Allowance):
            return value
        fields = ("limit", "limit_ttl", "quota", "quota_ttl")
        if not isinstance(value, Mapping):
            message = f"{name} takes an object of {', '.join(fields)}, not {value!r}"
            raise ValueError(message)  # noqa: TRY004 - a bad knob value, reported as such by `emulate`
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ValueError(f"{name} has no field {', '.join(unknown)}; its fields: {', '.join(fields)}")
        for field_name, number in value.items():
            if isinstance(number, bool) or not isinstance(number, int) or number < 0:
                raise ValueError(f"{name}: {field_name} takes a whole number (0 or more), not {number!r}")
        return cls(**value)


@dataclass(slots=True)
class _Counter:
    """A Redis integer with a TTL, as the PHP server kept its limits."""

    value: int
    expires_at: float


@dataclass(slots=True)
class LegacyEmulatorState:
    """What the emulator counted and holds (``app.state.emulator``), for tests and the ``emulate`` CLI.

    Attributes:
        search_requests: Requests that reached ``/api/search`` (any method but OPTIONS, any outcome).
        searches: Searches answered with 200.
        body_sizes: Bytes of each search body the server accepted under its size limit.
        counters: The limit counters by key (``<caller>_limit``, ``<caller>_quota``).
    """

    clock: Callable[[], float]
    search_requests: int = 0
    searches: int = 0
    body_sizes: list[int] = field(default_factory=list)
    counters: dict[str, _Counter] = field(default_factory=dict)

    def _live(self, key: str) -> _Counter | None:
        counter = self.counters.get(key)
        if counter is not None and counter.expires_at <= self.clock():
            del self.counters[key]
            return None
        return counter

    def peek(self, key: str, allowance: int, ttl: int) -> tuple[int, int]:
        """The counter's value and seconds to expiry, or the fresh allowance when it does not exist."""
        counter = self._live(key)
        if counter is None:
            return allowance, ttl
        return counter.value, self._ttl(counter)

    def take(self, key: str, allowance: int, ttl: int) -> tuple[int, int]:
        """Decrement (creating it at ``allowance`` for ``ttl`` seconds first); the new value and its TTL.

        Like the PHP server, the value goes below zero on refused requests and the TTL is never renewed.
        """
        counter = self._live(key)
        if counter is None:
            counter = self.counters[key] = _Counter(allowance, self.clock() + ttl)
        counter.value -= 1
        return counter.value, self._ttl(counter)

    def _ttl(self, counter: _Counter) -> int:
        return max(math.ceil(counter.expires_at - self.clock()), 0)
