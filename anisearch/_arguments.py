"""The type checks of the clients' public arguments: one refusal, worded alike, for every method.

A wrong type is refused up front as a :class:`ConfigurationError` naming the argument, what it takes and
what it got (and its type), rather than read loosely (``"false"`` as true) or failing deep inside as a bare
``TypeError``. numpy scalars count as what they are: ``numpy.bool_`` is a flag, ``numpy.int64`` a whole
number (returned as a plain ``int``); a ``bool`` is never a number.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

from anisearch._exceptions import ConfigurationError

__all__ = ["check_flags", "check_names", "check_secret", "check_text", "type_name", "whole_number"]


def check_flags(*, none_allowed: bool = False, **flags: object) -> None:
    """Refuse a flag that is not a ``bool`` (or None, where ``none_allowed``): a string such as
    ``"false"`` from a bot's configuration would otherwise be read as true. numpy's bool scalars
    (``numpy.bool_``, what ``array.any()`` returns) are bools too.

    Raises:
        ConfigurationError: A flag is of another type; the message names it and its type
            (module-qualified: ``numpy.int64``, ``str``).
    """
    for name, value in flags.items():
        if isinstance(value, bool) or _numpy_bool(value) or (none_allowed and value is None):
            continue
        allowed = "True, False or None" if none_allowed else "True or False"
        raise ConfigurationError(f"{name} must be {allowed}, got {value!r} (type {type_name(value)})")


def whole_number(name: str, value: object, *, minimum: int, what: str | None = None) -> int:
    """``value`` as a plain ``int`` when it is a whole number of at least ``minimum``.

    Any integral number is one (``numpy.int64`` too); a ``bool``, a float or a string is not.

    Args:
        name: The argument's name, for the message.
        value: What the caller gave.
        minimum: The smallest value allowed.
        what: What the argument takes, for the message (default "a whole number of at least <minimum>").

    Raises:
        ConfigurationError: ``value`` is not a whole number, or below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        takes = what or f"a whole number of at least {minimum}"
        raise ConfigurationError(f"{name} must be {takes}, got {value!r} (type {type_name(value)})")
    return int(value)


def check_text(name: str, value: object, *, what: str = "a str", none_allowed: bool = False) -> None:
    """Refuse a text argument (a provider name, a period, a title, an email) that is not a ``str``.

    Args:
        name: The argument's name, for the message.
        value: What the caller gave.
        what: What the argument takes, for the message.
        none_allowed: None is allowed too.

    Raises:
        ConfigurationError: ``value`` is of another type; the message names the argument, what it takes,
            the value and its type.
    """
    if isinstance(value, str) or (none_allowed and value is None):
        return
    raise ConfigurationError(f"{name} must be {what}, got {value!r} (type {type_name(value)})")


def check_secret(name: str, value: object) -> None:
    """Refuse a secret (a password) that is not a ``str``, naming only its type: the value is never shown.

    Raises:
        ConfigurationError: ``value`` is not a ``str``.
    """
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a str, got a value of type {type_name(value)}")


def check_names(name: str, value: object) -> list[str] | None:
    """A list of provider names (``providers=``) as a ``list``, or None when None was given.

    Raises:
        ConfigurationError: ``value`` is a single string or bytes (each letter would be a name), not a
            collection, or holds something other than a ``str``.
    """
    if value is None:
        return None
    if isinstance(value, str):
        raise ConfigurationError(f"{name} takes a list of names, not a string: use [{value!r}]")
    if isinstance(value, bytes | bytearray | memoryview):  # iterated, each byte would be a number
        raise ConfigurationError(
            f"{name} takes a list of names (str), not bytes: use [{bytes(value).decode(errors='replace')!r}]"
        )
    if not isinstance(value, Iterable):
        raise ConfigurationError(
            f"{name} must be a list of provider names, got {value!r} (type {type_name(value)})"
        )
    names = list(value)
    for item in names:
        if not isinstance(item, str):
            raise ConfigurationError(
                f"each name in {name} must be a str, got {item!r} (type {type_name(item)})"
            )
    return names


def _numpy_bool(value: object) -> bool:
    """Whether ``value`` is numpy's bool scalar (``numpy.bool_``; ``numpy.bool`` in numpy 2), told by its
    type's module and name so that numpy is not imported when it is not installed."""
    kind = type(value)
    return kind.__module__ == "numpy" and kind.__name__ in {"bool_", "bool"}


def type_name(value: object) -> str:
    """``value``'s type, module-qualified unless it is a builtin: ``numpy.int64``, ``str``."""
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
