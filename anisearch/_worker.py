"""Work handed to anyio's worker threads without the worker keeping it afterwards.

An anyio worker thread lets go of its job (the function, its arguments, its result or error) only when it
runs again after reporting the result. The event loop, which gets the result first, may carry on with the
search meanwhile (fitting the upload, building and sending the request) before that thread gets the
interpreter back: a 12 MB picture was still held in full when trace.moe's request was built. Whoever
calls :func:`run_sync` gets the result, and the worker holds nothing of it by then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import anyio.to_thread

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["run_sync"]

T = TypeVar("T")


async def run_sync(function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` in a worker thread, as ``anyio.to_thread.run_sync`` runs it.

    The arguments go in, and the result (or the error) comes out, through lists emptied on the way. So pass
    large data as ``args``: a ``function`` that closes over it (a ``partial`` holding it, a closure) is
    kept with the job.

    Raises:
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
    await anyio.to_thread.run_sync(work)
    if failed:
        raise failed.pop()
    return returned.pop()
