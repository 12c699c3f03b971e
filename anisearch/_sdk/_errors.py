"""The error-rule engine: a provider's error table as data, first match wins.

A provider writes its errors as a tuple of :class:`ErrorRule` rows, most specific first, each with a
comment saying which upstream answer it stands for (``tracemoe/_errors.py`` is the model). A row matches
on the things an upstream's answer tells apart, in the order they are usually decisive:

1. ``prefix``: the start of the upstream's own message (its words decide; case-folded when
   ``ignore_case``);
2. ``codes``: the upstream's error code (better-auth's ``INVALID_ORIGIN``), when it sends one;
3. ``statuses``: the HTTP status (a set, so ``statuses(401, range(500, 600))`` reads as one row);
4. ``contains``: markers in the raw body (an HTML page, a framework's error class);
5. ``when``: any further test on the provider's own view of the answer (the request that was sent).

A row names the exception class it means; ``build`` (optional) makes the exception with the numbers the
answer carries attached (``retry_after``, the quota, the size limit). Re-exported by
:mod:`anisearch.provider`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from anisearch._sdk._common import body_text, error_message, is_multipart_request, loads, request_bytes

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import httpx

    from anisearch._exceptions import ProviderError

__all__ = [
    "CDN_BLOCKED",
    "ErrorAnswer",
    "ErrorRule",
    "cdn_challenge",
    "classify_error",
    "first_rule",
    "statuses",
]

CDN_BLOCKED = (
    "blocked by the site's CDN (an anti-bot challenge page); try again later or from another network"
)
"""The message of a :class:`~anisearch.ProviderServerError` for an answer :func:`cdn_challenge` recognises."""

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """An error answer as the standard rows see it.

    Attributes:
        response: The answer.
        status: Its HTTP status.
        message: The upstream's message, one line (:func:`~anisearch.provider.error_message`).
        body: The raw body as text.
        upload_bytes: Bytes of the multipart upload that was sent; None when it was not one, or unknown.
    """

    response: httpx.Response
    status: int
    message: str
    body: str
    upload_bytes: int | None

    @classmethod
    def of(cls, response: httpx.Response, message: str | None = None) -> ErrorAnswer:
        """Boil ``response`` down; ``message`` overrides the standard reading of its error text."""
        return cls(
            response=response,
            status=response.status_code,
            message=error_message(response) if message is None else message,
            body=body_text(response),
            upload_bytes=request_bytes(response) if is_multipart_request(response) else None,
        )


@dataclass(frozen=True, slots=True)
class ErrorRule(Generic[S]):
    """One row of a provider's error table: which answers mean which exception class.

    A row matches when every condition it sets holds: the status is in ``statuses``, the message starts
    with ``prefix``, the code is in ``codes``, the raw body contains one of ``contains``, and ``when``
    holds for the provider's view of the answer (an :class:`ErrorAnswer`, or the provider's own type).

    Attributes:
        error: The exception class the row means.
        statuses: HTTP statuses (see :func:`statuses`); None for any. An answer without a status (a
            200 envelope that names none) never matches a row that sets them.
        prefix: The start of the upstream's message.
        codes: The upstream's error codes.
        contains: Markers, one of which the raw body must contain.
        when: A further test on the answer.
        build: Makes the exception with the answer's numbers attached; None lets the caller build
            ``error(message, provider=..., status_code=...)``.
        ignore_case: Compare ``prefix`` case-insensitively.
    """

    error: type[ProviderError]
    statuses: frozenset[int] | None = None
    prefix: str | None = None
    codes: frozenset[str] | None = None
    contains: tuple[str, ...] = ()
    when: Callable[[S], bool] | None = None
    build: Callable[[S], ProviderError] | None = None
    ignore_case: bool = False

    def matches(
        self, subject: S, *, status: int | None, message: str, body: str = "", code: str | None = None
    ) -> bool:
        """Whether an answer with this status, message, body and code falls under this row."""
        if self.statuses is not None and status not in self.statuses:
            return False
        if self.prefix is not None:
            head, prefix = (
                (message.casefold(), self.prefix.casefold()) if self.ignore_case else (message, self.prefix)
            )
            if not head.startswith(prefix):
                return False
        if self.codes is not None and code not in self.codes:
            return False
        if self.contains and not any(marker in body for marker in self.contains):
            return False
        return self.when is None or self.when(subject)


def first_rule(
    rules: Sequence[ErrorRule[S]],
    subject: S,
    *,
    status: int | None,
    message: str,
    body: str = "",
    code: str | None = None,
) -> ErrorRule[S] | None:
    """The first row of ``rules`` that matches, or None.

    Args:
        rules: The table, most specific row first.
        subject: The provider's view of the answer, passed to each row's ``when`` (and ``build``).
        status: The HTTP status, or None when the answer implies none.
        message: The upstream's message.
        body: The raw body, for ``contains``.
        code: The upstream's error code, when it sent one.
    """
    for rule in rules:
        if rule.matches(subject, status=status, message=message, body=body, code=code):
            return rule
    return None


def classify_error(
    rules: Sequence[ErrorRule[ErrorAnswer]], response: httpx.Response, message: str | None = None
) -> tuple[ErrorRule[ErrorAnswer] | None, ErrorAnswer]:
    """The first row of ``rules`` that matches ``response`` (None when none does), and the answer read.

    Args:
        rules: The table, over :class:`ErrorAnswer`.
        response: The error answer.
        message: The upstream's message when the provider reads it its own way (default: the standard
            :func:`~anisearch.provider.error_message`).
    """
    answer = ErrorAnswer.of(response, message)
    rule = first_rule(rules, answer, status=answer.status, message=answer.message, body=answer.body)
    return rule, answer


def cdn_challenge(response: httpx.Response) -> bool:
    """Whether an error answer is the CDN's rather than the site's: an HTTP 403 carrying Cloudflare's
    ``cf-ray`` header whose body is not JSON (an anti-bot challenge such as "Just a moment...", or a block
    page). api.trace.moe and whatanimeisthis.com both sit behind Cloudflare; their own 403s are JSON.

    Such a page says nothing about the request, the image or the key: a provider's table maps it to
    :class:`~anisearch.ProviderServerError` with the message :data:`CDN_BLOCKED`, ahead of its 4xx rows, so
    that the router tries the next provider.
    """
    if response.status_code != 403 or "cf-ray" not in response.headers:  # noqa: PLR2004 - Forbidden
        return False
    text = body_text(response).strip()
    if not text:
        return False  # an empty body reads as JSON null: the site's own answer
    try:
        loads(text)
    except ValueError:
        return True
    return False


def statuses(*codes: int | range) -> frozenset[int]:
    """A status set for an :class:`ErrorRule` from codes and ranges (``statuses(401, range(500, 600))``)."""
    result: set[int] = set()
    for code in codes:
        result.update(code if isinstance(code, range) else (code,))
    return frozenset(result)
