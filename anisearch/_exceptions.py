"""The anisearch error tree.

Every error anisearch raises derives from :class:`AnisearchError`. There are two branches: *you misused
it* (bad configuration, bad input: fix the call, retrying will not help) and *a service failed* (a
:class:`ProviderError` carrying the provider name, the HTTP status and, where the upstream said so, how
long to wait). Builtins are mixed in where they fit, so ``except ValueError`` and ``except TimeoutError``
keep working in code that knows nothing about anisearch::

    AnisearchError
    ├── ConfigurationError (ValueError)          a setting or argument is wrong
    │   └── UnknownProviderError (LookupError)   a provider name nobody registered
    ├── ClientClosedError (RuntimeError)         the client was closed: open a new one
    ├── InvalidImageError (ValueError)           empty, not an image, truncated, a decompression bomb
    │   └── ImageTooLargeError (+ ProviderError) over a size limit, locally or as the upstream's 413
    ├── LedgerError                              the quota ledger cannot be used (Redis down, a corrupt file)
    ├── ProviderError                            a service answered with an error, or not at all
    │   ├── QuotaExhaustedError                  the search quota or the credits are spent (no retry)
    │   ├── ConcurrencyLimitError                too many searches in flight (wait for a slot, retry)
    │   ├── RateLimitedError                     too many requests per minute/hour (wait retry_after)
    │   │   └── SignInRateLimitedError           too many sign-ins (wait retry_after); searches go on
    │   ├── ProviderBusyError                    the upstream's queue is full (short backoff)
    │   ├── AuthenticationError                  bad API key, bad password, session expired
    │   ├── ImageFetchError                      the upstream could not download an image URL
    │   ├── BadRequestError                      the upstream refused the request as malformed
    │   ├── UpstreamResponseError                an answer anisearch cannot interpret
    │   ├── ProviderServerError                  the upstream failed (5xx)
    │   ├── ProviderConnectionError (ConnectionError)
    │   └── ProviderTimeoutError (TimeoutError)
    └── AllProvidersFailedError (ExceptionGroup) every provider asked failed; holds each error

Errors are translated once, where the response is parsed, to the most specific class, and chained
(``raise ... from exc``) to whatever caused them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Self

__all__ = [
    "AllProvidersFailedError",
    "AnisearchError",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "ConcurrencyLimitError",
    "ConfigurationError",
    "ImageFetchError",
    "ImageTooLargeError",
    "InvalidImageError",
    "LedgerError",
    "ProviderBusyError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderServerError",
    "ProviderTimeoutError",
    "QuotaExhaustedError",
    "RateLimitedError",
    "SignInRateLimitedError",
    "UnknownProviderError",
    "UpstreamResponseError",
]


class AnisearchError(Exception):
    """The root of every error anisearch raises."""


class ConfigurationError(AnisearchError, ValueError):
    """A setting, an environment variable or an argument is wrong. Fix the call; retrying will not help."""


class UnknownProviderError(ConfigurationError, LookupError):
    """A provider name that no installed package registers.

    Attributes:
        name: The name asked for.
        known: The names that are registered (entry-point group ``anisearch.providers``), sorted.
    """

    def __init__(self, name: str, known: Sequence[str], *, note: str = "", kind: str = "provider") -> None:
        self.name = name
        self.known = sorted(known)
        what = f" ({note})" if note else ""
        super().__init__(f"unknown {kind} {name!r}{what}; known {kind}s: {', '.join(self.known) or '(none)'}")

    def __str__(self) -> str:  # LookupError would repr() the message otherwise
        return str(self.args[0])

    def __reduce__(self) -> tuple[object, ...]:
        state = (type(self), str(self), self.name, self.known, self.__dict__)
        return (_rebuild_unknown_provider_error, state)


def _rebuild_unknown_provider_error(
    cls: type[UnknownProviderError], message: str, name: str, known: list[str], state: dict[str, object]
) -> UnknownProviderError:
    exc = cls.__new__(cls)
    ConfigurationError.__init__(exc, message)
    exc.name = name
    exc.known = known
    exc.__dict__.update(state)
    return exc


class ClientClosedError(AnisearchError, RuntimeError):
    """The client was closed (``aclose()``, ``close()`` or its ``with`` block ended): open a new one.

    A closed client sends and records nothing, so no quota is spent. A search or call still running when the
    client closes ends with it too; a request it had already sent stays counted, as the upstream counts it.
    """


class InvalidImageError(AnisearchError, ValueError):
    """The input is not a usable image: empty, not an image, truncated, or a decompression bomb.

    Raised before any request is sent, so no quota is spent.
    """


class LedgerError(AnisearchError):
    """The quota ledger cannot be used: Redis unreachable, a SQLite file unwritable or corrupt, bad values
    stored in it. The message names the ledger (any password masked) and what to do: run
    ``anisearch quota --reset``, or remove the file it names.

    Attributes:
        ledger: The ledger URL (password masked), when known.
    """

    def __init__(self, message: str, *, ledger: str | None = None) -> None:
        super().__init__(message)
        self.ledger = ledger

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_ledger_error, (str(self), self.ledger))


def _rebuild_ledger_error(message: str, ledger: str | None) -> LedgerError:
    return LedgerError(message, ledger=ledger)


class ProviderError(AnisearchError):
    """A provider answered with an error, or could not be reached.

    Attributes:
        provider: The provider's entry-point name (``"tracemoe"``), or None when not tied to one.
        status_code: The HTTP status of the answer, or None when there was no answer.
        retry_after: Seconds to wait before trying this provider again, when the upstream said so
            (``Retry-After``, ``X-Retry-After``, ``RateLimit-Reset``), else None.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = self.provider or "provider"
        status = f" (HTTP {self.status_code})" if self.status_code is not None else ""
        return f"{where}: {self.message}{status}"

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_provider_error,
            (type(self), self.message, self.provider, self.status_code, self.retry_after, self.__dict__),
        )


def _rebuild_provider_error(  # noqa: PLR0917 - pickle passes the state positionally
    cls: type[ProviderError],
    message: str,
    provider: str | None,
    status_code: int | None,
    retry_after: float | None,
    state: dict[str, object],
) -> ProviderError:
    exc = cls.__new__(cls)
    ProviderError.__init__(exc, message, provider=provider, status_code=status_code, retry_after=retry_after)
    exc.__dict__.update(state)
    return exc


class ImageTooLargeError(InvalidImageError, ProviderError):
    """The image is over a size limit: a local guard before sending, or the upstream's 413.

    ``provider`` is None when anisearch refused the image itself before any request.

    Attributes:
        size_bytes: The size that was too large, in bytes, when known.
        limit_bytes: The limit, in bytes, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = None,
        size_bytes: int | None = None,
        limit_bytes: int | None = None,
    ) -> None:
        ProviderError.__init__(self, message, provider=provider, status_code=status_code)
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes

    def __str__(self) -> str:
        if self.provider is None:
            return self.message
        return ProviderError.__str__(self)


class QuotaExhaustedError(ProviderError):
    """The provider's search quota (or credit balance) is spent. Not retried; the router moves on.

    Attributes:
        limit: The quota the upstream reported, when it did (trace.moe 402 ``quota``).
        used: The searches it counted as used, when it did (trace.moe 402 ``quotaUsed``).
        resets_at: When the window frees at least one search, when known (aware datetime).
        window: The window that is spent (``"rolling-24h"``, ``"day"``), when known.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
        limit: int | None = None,
        used: int | None = None,
        resets_at: datetime | None = None,
        window: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status_code=status_code, retry_after=retry_after)
        self.limit = limit
        self.used = used
        self.resets_at = resets_at
        self.window = window


class ConcurrencyLimitError(ProviderError):
    """Too many of the caller's searches are in flight (trace.moe 402 ``Concurrency limit exceeded``)."""


class RateLimitedError(ProviderError):
    """Too many requests in the provider's rate window; ``retry_after`` says how long to wait (seconds)."""


class SignInRateLimitedError(RateLimitedError):
    """Too many sign-ins: the upstream's limit on its sign-in route, not its search quota.

    ``retry_after`` says when to sign in again (seconds). The search quota is neither spent nor held back:
    the ledger records nothing, and searches that need no sign-in (an API key, a guest, a session already
    held) go on. (whatanimeisthis.com: better-auth allows 3 sign-ins per 10 s per address, failed ones
    included, and answers the 4th with 429 and ``X-Retry-After``.)
    """


class ProviderBusyError(ProviderError):
    """The provider's search queue is full (trace.moe 503 ``Error: Search queue is full``)."""


class AuthenticationError(ProviderError):
    """The API key, the password or the session was refused (trace.moe 403 ``Invalid API key``)."""


class ImageFetchError(ProviderError):
    """The provider could not download the image URL it was given (trace.moe ``Failed to fetch image``).

    Uploading the bytes instead usually works. ``provider`` is None when anisearch itself could not (or
    would not) download a URL the caller gave.
    """

    def __str__(self) -> str:
        if self.provider is None:
            return self.message
        return ProviderError.__str__(self)


class BadRequestError(ProviderError):
    """The provider refused the request as malformed (400, 405): a bug or an unsupported option."""


class UpstreamResponseError(ProviderError):
    """The provider answered something anisearch cannot interpret (a changed or truncated payload).

    Attributes:
        endpoint: The path that was asked (``"/api/anime/search"``), when known.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = None,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status_code=status_code)
        self.endpoint = endpoint


class ProviderServerError(ProviderError):
    """The provider failed on its side (5xx other than a full queue)."""


class ProviderConnectionError(ProviderError, ConnectionError):
    """The provider could not be reached (DNS, refused connection, TLS)."""


class ProviderTimeoutError(ProviderError, TimeoutError):
    """The provider did not answer within the configured timeout (``ANISEARCH_TIMEOUT``, seconds)."""


class AllProvidersFailedError(ExceptionGroup[ProviderError], AnisearchError):
    """No provider answered. ``exceptions`` holds each provider's error, in the order they were asked.

    It is an :class:`ExceptionGroup`, so ``except* QuotaExhaustedError`` picks out the spent ones.

    Attributes:
        attempts: Every provider considered, in order, with what happened (``anisearch.Attempt``), as a
            successful ``SearchResult.attempts`` would list them.
    """

    attempts: Sequence[Any] = ()  # anisearch.Attempt: the exceptions sit below the models' layer

    def __new__(cls, message: str, exceptions: Sequence[ProviderError]) -> Self:
        return super().__new__(cls, message, exceptions)

    @property
    def errors(self) -> tuple[ProviderError, ...]:
        """Each provider's error, in the order they were asked: ``exceptions`` typed as what they are
        (``error.provider``, ``error.status_code`` ... without an ``isinstance`` check)."""
        return tuple(error for error in self.exceptions if isinstance(error, ProviderError))

    def derive(self, excs: Sequence[ProviderError]) -> AllProvidersFailedError:  # type: ignore[override]
        derived = AllProvidersFailedError(self.message, excs)
        derived.attempts = self.attempts
        return derived
