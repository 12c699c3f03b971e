"""Work handed to anyio's worker threads without the worker keeping it afterwards.

An anyio worker thread lets go of its job (the function, its arguments, its result or error) only when it
runs again after reporting the result. The event loop, which gets the result first, may carry on with the
search meanwhile (fitting the upload, building and sending the request) before that thread gets the
interpreter back: a 12 MB picture was still held in full when trace.moe's request was built. Whoever
calls :func:`run_sync` gets the result, and the worker holds nothing of it by then.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

from anisearch._exceptions import ProviderTimeoutError
from anisearch._limits import remaining_seconds

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DECODES_AT_ONCE", "decodes", "run_sync"]

T = TypeVar("T")

DECODES_AT_ONCE = max(2, os.cpu_count() or 2)
"""Pictures and video frames decoded at once on one event loop. A decode is CPU work in C (more at once than
cores gains nothing) and holds up to 16 bytes a pixel (800 MB for a 50 MP picture): with anyio's 40 worker
threads, a few uploads of small files that decode large (a 7000x7000 WebP is 88 KB) took a gateway past 2.9
GB."""
_DECODES: RunVar[anyio.CapacityLimiter] = RunVar("anisearch_decodes")


def decodes() -> anyio.CapacityLimiter:
    """The limiter of decoding on the running event loop (:data:`DECODES_AT_ONCE` at once); a search
    waiting for it stays cancellable, so its deadline holds."""
    try:
        return _DECODES.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(DECODES_AT_ONCE)
        _DECODES.set(limiter)
        return limiter


async def run_sync(function: Callable[..., T], *args: object, decoding: bool = False) -> T:
    """``function(*args)`` in a worker thread, as ``anyio.to_thread.run_sync`` runs it.

    The arguments go in, and the result (or the error) comes out, through lists emptied on the way. So pass
    large data as ``args``: a ``function`` that closes over it (a ``partial`` holding it, a closure) is
    kept with the job. A ``decoding`` job takes a turn among the event loop's decodes (:func:`decodes`),
    besides anyio's own limit of worker threads, and waits for it no longer than the search's deadline.

    Raises:
        ProviderTimeoutError: The search's deadline passed while the job waited for its turn.
        Whatever ``function`` raises.
    """
    handed: list[tuple[object, ...]] = [args]
    returned: list[T] = []
    failed: list[BaseException] = []

    def work() -> None:
        try:
            returned.append(function(*handed.pop()))
        except BaseException as exc:  # noqa: BLE001 - given back to the caller, below
            failed.append(exc)

    job = getattr(function, "func", function)  # a partial's function
    work.__name__ = work.__qualname__ = getattr(job, "__name__", work.__name__)  # what a profile shows
    if not decoding:
        await anyio.to_thread.run_sync(work)
    else:
        limiter = decodes()
        try:
            limiter.acquire_nowait()
        except anyio.WouldBlock:  # every turn is taken: wait for one, no longer than the search's deadline
            with anyio.move_on_after(max(remaining_seconds(), 0.0)) as waited:
                await limiter.acquire()
            if waited.cancelled_caught:
                raise ProviderTimeoutError(
                    "no complete answer before the search's deadline (the picture waited its turn to be"
                    " decoded)"
                ) from None
        try:
            await anyio.to_thread.run_sync(work)
        finally:
            limiter.release()
    if failed:
        raise failed.pop()
    return returned.pop()
