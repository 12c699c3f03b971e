"""stamina, imported only when a retry is first needed, and how anisearch's own retries are logged.

stamina logs each retry it schedules as a warning (logger ``stamina``) whose facts are in ``extra``: a
program logging with a plain format gets ``WARNING:stamina:stamina.retry_scheduled`` and nothing more. The
retries anisearch schedules (:func:`retrying`) are told instead on anisearch's own logger, in words, at
INFO: a request retried never left this machine and costs nothing. stamina's record of them is dropped;
the retries of the program's own stamina calls are left as they are. A ``NullHandler`` on the ``stamina``
logger keeps those off stderr in a program that configured no logging, as a library's own logger does.
"""

from __future__ import annotations

import contextlib
import logging
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import ModuleType

__all__ = ["log_retries_with_logging", "retrying", "stamina"]

_TELL: ContextVar[Callable[[int, float], None] | None] = ContextVar("anisearch_retrying", default=None)


class _Retold(logging.Filter):
    """Drops stamina's record of a retry that :func:`retrying` tells itself, and has it told."""

    def filter(self, record: logging.LogRecord) -> bool:
        tell = _TELL.get()
        if tell is None or record.msg != "stamina.retry_scheduled":
            return True
        facts = record.__dict__
        tell(int(facts.get("stamina.retry_num") or 0), float(facts.get("stamina.wait_for") or 0.0))
        return False


_STANDARD_LOGGING_ONLY = False


def log_retries_with_logging() -> None:
    """For the ``anisearch`` command, which owns its process: stamina logs its retries through the standard
    library's logging even when structlog is installed (structlog would print them on stdout, into the
    command's output), so that they are told as :func:`retrying` says, on stderr."""
    global _STANDARD_LOGGING_ONLY  # noqa: PLW0603 - one switch for the process
    _STANDARD_LOGGING_ONLY = True


def stamina() -> ModuleType:
    """The ``stamina`` module, its logger quiet unless the program configured logging.

    A program with structlog installed gets stamina's retry lines through structlog, as stamina does by
    itself; only the ``anisearch`` command sends them through logging (:func:`log_retries_with_logging`).
    """
    import stamina as module

    if _STANDARD_LOGGING_ONLY:
        from stamina.instrumentation import LoggingOnRetryHook, set_on_retry_hooks

        set_on_retry_hooks([LoggingOnRetryHook])
    logger = logging.getLogger("stamina")
    if not any(isinstance(handler, logging.NullHandler) for handler in logger.handlers):
        logger.addHandler(logging.NullHandler())
    if not any(isinstance(found, _Retold) for found in logger.filters):
        logger.addFilter(_Retold())
    return module


@contextlib.contextmanager
def retrying(tell: Callable[[int, float], None]) -> Iterator[None]:
    """Within this block, each retry stamina schedules calls ``tell(retry, wait_seconds)`` (``retry`` counts
    from 1) instead of logging its own record."""
    token = _TELL.set(tell)
    try:
        yield
    finally:
        _TELL.reset(token)
