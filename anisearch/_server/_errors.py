"""A failed search, answered in trace.moe's words (trace.moe API) or as a typed error (native API)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from anisearch._exceptions import (
    AllProvidersFailedError,
    AnisearchError,
    ConcurrencyLimitError,
    ConfigurationError,
    ImageFetchError,
    ImageTooLargeError,
    InvalidImageError,
    LedgerError,
    ProviderBusyError,
    ProviderError,
    QuotaExhaustedError,
    RateLimitedError,
)
from anisearch._server import _tracemoe

if TYPE_CHECKING:
    from collections.abc import Sequence

    from starlette.responses import Response

__all__ = ["BUSY_RETRY_SECONDS", "native_error", "retry_after_header", "tracemoe_error"]

_WAITABLE = (RateLimitedError, ConcurrencyLimitError, ProviderBusyError)
BUSY_RETRY_SECONDS = 5
"""``Retry-After`` of a busy 503 when no provider said how long to wait (a slot not freed in time): what
trace.moe's own web app waits between retries of its 503."""


def _retry_after(errors: Sequence[Exception]) -> int | None:
    waits = [e.retry_after for e in errors if isinstance(e, ProviderError) and e.retry_after]
    return math.ceil(min(waits)) if waits else None


def retry_after_header(exc: AnisearchError) -> dict[str, str]:
    """The ``Retry-After`` header of a search that failed because every provider is spent or busy.

    Some busy (a 503): the first moment one of the busy ones may answer, each at the wait it gave, or in
    :data:`BUSY_RETRY_SECONDS` when it gave none (a spent one's reset, hours away, is not the time to come
    back). Every one spent (a 402): the shortest wait until one resets, when known.
    """
    errors: list[Exception] = list(exc.exceptions) if isinstance(exc, AllProvidersFailedError) else [exc]
    if not errors or not all(isinstance(e, (*_WAITABLE, QuotaExhaustedError)) for e in errors):
        return {}
    busy = [e for e in errors if isinstance(e, _WAITABLE)]
    if not busy:
        wait = _retry_after(errors)
        return {"Retry-After": str(wait)} if wait else {}
    # each busy one frees when it said, or in a few seconds when it did not say: the first of them
    waits = [e.retry_after or BUSY_RETRY_SECONDS for e in busy if isinstance(e, ProviderError)]
    return {"Retry-After": str(math.ceil(min(waits)))}


def _summary(errors: list[Exception]) -> str:
    """Each failure once, after its provider's name (a provider's own message often starts with it)."""
    parts = []
    for exc in errors:
        provider, text = getattr(exc, "provider", None), str(exc)
        parts.append(f"{provider}: {text}" if provider and not text.startswith(f"{provider}: ") else text)
    return "; ".join(parts)[:500]


def _fetch_failed(exc: ImageFetchError, url: str) -> Response:
    """trace.moe's answer to a ``?url=`` that could not be downloaded (contract §4): the image host's own
    status when it answered 400 or more (a 404 there is a 404 here), else 400 (refused, unreachable, too
    many redirects), with ``Failed to fetch image <url>``; a host's success with an empty body is what an
    empty upload is, ``Failed to process file``."""
    # the image host's status only when anisearch downloaded it (provider None), not a provider's
    status = exc.status_code if exc.provider is None else None
    if status is not None and 200 <= status < 300:  # noqa: PLR2004 - HTTP's successes
        return _tracemoe.error(400, "Failed to process file")
    if status is None or not 400 <= status < 600:  # noqa: PLR2004 - HTTP's error statuses
        status = 400
    return _tracemoe.error(status, f"Failed to fetch image {url}")


def tracemoe_error(exc: AnisearchError, url: str | None) -> Response:  # noqa: PLR0911 - one answer per class
    """trace.moe's answer for what went wrong (contract §4)."""
    if isinstance(exc, ImageTooLargeError):
        return _tracemoe.express_page(413, "Payload Too Large")
    if isinstance(exc, InvalidImageError):
        return _tracemoe.error(400, "Failed to process image")
    if isinstance(exc, ImageFetchError) and url is not None:
        return _fetch_failed(exc, url)
    if isinstance(exc, LedgerError):
        return _tracemoe.error(500, "Search failed. Database temporarily unavailable.")
    if isinstance(exc, ConfigurationError):
        return _tracemoe.error(400, str(exc))
    errors: list[Exception] = list(exc.exceptions) if isinstance(exc, AllProvidersFailedError) else [exc]
    wait = _retry_after(errors)
    headers = retry_after_header(exc) or ({"Retry-After": str(wait)} if wait else None)
    if url is not None and all(isinstance(e, ImageFetchError) for e in errors):
        return _tracemoe.error(400, f"Failed to fetch image {url}")
    if all(isinstance(e, QuotaExhaustedError) for e in errors):
        return _tracemoe.error(
            402, "Search quota depleted (every provider behind this gateway is spent)", headers
        )
    if all(isinstance(e, (*_WAITABLE, QuotaExhaustedError)) for e in errors):
        return _tracemoe.error(503, "Error: Search queue is full", headers)
    return _tracemoe.error(502, f"Search failed. {_summary(errors)}", headers)


def native_status(exc: AnisearchError) -> int:  # noqa: PLR0911 - one status per class
    """The native API's HTTP status for a failed search."""
    if isinstance(exc, ImageTooLargeError):
        return 413
    if isinstance(exc, InvalidImageError | ConfigurationError):
        return 422 if isinstance(exc, ConfigurationError) else 400
    if isinstance(exc, LedgerError):
        return 500
    errors: list[Exception] = list(exc.exceptions) if isinstance(exc, AllProvidersFailedError) else [exc]
    if all(isinstance(e, ImageFetchError) for e in errors):
        return 400
    if all(isinstance(e, QuotaExhaustedError) for e in errors):
        return 402
    if all(isinstance(e, (*_WAITABLE, QuotaExhaustedError)) for e in errors):
        return 503
    return 502


def native_error(exc: AnisearchError) -> tuple[int, dict[str, Any]]:
    """The native API's status and body: ``{"error": {"type", "message", "errors", "attempts"}}``."""
    errors = list(exc.exceptions) if isinstance(exc, AllProvidersFailedError) else []
    body: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": str(exc.message if isinstance(exc, AllProvidersFailedError) else exc),
        "errors": [
            {
                "type": type(e).__name__,
                "provider": getattr(e, "provider", None),
                "status_code": getattr(e, "status_code", None),
                "retry_after": getattr(e, "retry_after", None),
                "message": str(e),
            }
            for e in errors
        ],
        "attempts": [a.model_dump(mode="json") for a in getattr(exc, "attempts", ())],
    }
    return native_status(exc), {"error": body}
