"""trace.moe (``https://api.trace.moe``): the ``tracemoe`` provider, sans-IO.

Builds ``/search`` and ``/me`` requests and parses every answer shape the API has had since 2021
(``research/tracemoe-contract.md``): ``anilist`` as an int, an object or missing; ``episode`` as a
number, a ``"5|17"`` string, a list or null; the 2026 ``quota``/``quotaUsed`` members; and every error
of the contract's §4 table, each translated once to its own exception class.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from io import BytesIO
from typing import TYPE_CHECKING, Any, ClassVar, Self

import httpx

from anisearch.provider import (
    BaseProvider,
    Capabilities,
    ConfigurationError,
    ImageTooLargeError,
    InvalidImageError,
    ProviderAnswer,
    Quota,
    SearchOptions,
    SearchQuery,
    ShapeError,
    UploadLimits,
    UpstreamResponseError,
    WindowSpec,
    as_int,
    loads,
    redact,
    request_of,
    response_date,
)

from ._errors import MAX_UPLOAD_BYTES, error_for
from ._parse import (
    UsageBucket,
    answer_quota,
    hits_from_items,
    me_quota,
    observed_quotas,
    percent_similarity,
    usage_buckets,
)
from ._requests import MAX_BATCH, Params, image_url, search_params, vector_text

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from anisearch.provider import PreparedImage, ProviderContext

__all__ = ["DEFAULT_URL", "TraceMoe", "UsageBucket"]

DEFAULT_URL = "https://api.trace.moe"
"""Where the ``tracemoe`` provider sends requests unless ``ANISEARCH_TRACEMOE_URL`` says otherwise."""

GUEST_QUOTA = 100
"""Guest searches per rolling 24 h (trace.moe tier 0, since 2026-02-22)."""
RATE_PER_MINUTE = 100
"""Requests per 60 s per client address, with or without a key (express-rate-limit)."""
_USAGE_PERIODS = frozenset({"minute", "hour", "day"})
_IMAGE_FILENAMES = {"image/png": "image.png", "image/webp": "image.webp", "image/gif": "image.gif"}

logger = logging.getLogger("anisearch")

_IN_PERCENT: set[tuple[str, str]] = set()
"""(provider, base URL) of the servers that answered similarities in percent: their answers are read so from
then on in this process (one in 0..1 cannot tell its scale), and each was warned of once."""


class TraceMoe(BaseProvider):
    """The current trace.moe API as an anisearch provider (entry point ``tracemoe``).

    Guests get 100 searches per rolling 24 h and one search in flight; an API key (sent only as the
    ``x-trace-key`` header: the server ignores ``?key=`` and would count the search as a guest's) gets
    its tier's numbers, which :meth:`quota_request` reads from ``/me``. Every address is also limited to
    100 HTTP requests a minute.

    Args:
        base_url: The API root, ``https://api.trace.moe`` by default (setting ``url``,
            ``ANISEARCH_TRACEMOE_URL``); a trailing slash is dropped.
        key: The API key (setting ``key``, ``ANISEARCH_TRACEMOE_KEY``), or None to search as a guest.
        clock: Returns the current aware time; for tests. Defaults to UTC now.

    Raises:
        ConfigurationError: ``base_url`` is not an http(s) URL.
    """

    name: ClassVar[str] = "tracemoe"
    default_order: ClassVar[bool] = True
    default_rank: ClassVar[int] = 100
    default_url: ClassVar[str] = DEFAULT_URL
    capabilities: Capabilities = Capabilities(
        upload=True, vector=True, anilist_filter=True, cut_borders=True, anilist_info=True, quota=True
    )
    limits: UploadLimits = UploadLimits(  # the server describes every image at 320x320 at most
        max_bytes=MAX_UPLOAD_BYTES, max_width=320, max_height=320
    )
    secret_headers: ClassVar[frozenset[str]] = frozenset({"x-trace-key"})

    @classmethod
    def from_context(cls, context: ProviderContext) -> Self:
        """Build the provider from its settings: ``url`` and ``key``.

        Raises:
            ConfigurationError: An unknown setting (named in the message), a value of the wrong type, or a
                ``url`` that is not http(s).
        """
        return super().from_context(context)

    # ------------------------------------------------------------ identity and limits

    def windows(self) -> list[WindowSpec]:
        """trace.moe's windows (contract §5, §6).

        - ``rolling-24h``: answered searches in the last 24 hours, each ageing out 24 h after it was made;
          100 for a guest, the tier's quota for a key (learned from ``/me`` or a search answer). Reported by
          the free ``/me``, so the ledger asks it before trusting its own estimate that a search aged out.
        - ``minute``: every HTTP request, 100 per fixed 60 s window per address, a rate limit (429).
        """
        guest = self.scope == "guest"
        return [
            WindowSpec(
                "rolling-24h", span_seconds=86400, limit=GUEST_QUOTA if guest else None, reported=True
            ),
            WindowSpec("minute", span_seconds=60, counts="requests", kind="rate", limit=RATE_PER_MINUTE),
        ]

    def assumed_quotas(self) -> list[Quota]:
        """What to assume before trace.moe says (source ``ledger``).

        A guest: 100 searches per rolling 24 h, one in flight. A key: one in flight, the rest unknown
        until ``/me`` answers. Both: 100 HTTP requests per minute.
        """
        now, guest = self.now(), self.scope == "guest"
        search = {"limit": GUEST_QUOTA if guest else None, "concurrency": 1, "priority": 0 if guest else None}
        return [
            Quota(
                provider=self.name,
                scope=self.scope,
                window="rolling-24h",
                source="ledger",
                observed_at=now,
                **search,
            ),
            Quota(
                provider=self.name,
                scope=self.scope,
                limit=RATE_PER_MINUTE,
                window="minute",
                source="ledger",
                observed_at=now,
            ),
        ]

    def cache_key(self, image: PreparedImage) -> str:
        """``cld:`` and the colour layout descriptor trace.moe computes for the upload: its answer depends
        on nothing else of the image, so the same picture re-encoded or resized finds the same answer."""
        return "cld:" + ",".join(map(str, self._descriptor(image)))

    @staticmethod
    def _descriptor(image: PreparedImage) -> tuple[int, ...]:
        """The colour layout descriptor trace.moe's server computes for this upload."""
        from PIL import Image

        from .descriptor import search_descriptor

        with Image.open(BytesIO(image.data)) as picture:
            return search_descriptor(picture)

    # ------------------------------------------------------------ requests

    def headers(self) -> dict[str, str]:
        """JSON, anisearch's User-Agent, and the key in ``x-trace-key`` (never ``?key=``)."""
        headers = super().headers()
        if self.key:
            headers["x-trace-key"] = self.key
        return headers

    def search_request(self, query: SearchQuery) -> httpx.Request:
        """``POST /search``, multipart, the image in the field ``image``; with ``mode="vector"``, JSON
        ``{"vector": ...}``, the image's colour layout descriptor (see :meth:`vector_search_request`).

        ``anilistID``, ``cutBorders`` and ``anilistInfo`` go in the query string; the key in ``x-trace-key``.

        Raises:
            ConfigurationError: A negative ``anilist_id``.
            InvalidImageError: The image is empty.
            ImageTooLargeError: The image is over 25 MiB (checked before sending; ``provider`` is None).
        """
        image = self._checked_image(query.image)
        if query.options.mode == "vector":
            return self.vector_search_request(self._descriptor(image), query.options)
        filename = _IMAGE_FILENAMES.get(image.mime_type, "image.jpg")
        files = {"image": (filename, image.data, image.mime_type)}
        return self.request("POST", "/search", params=search_params(query.options), files=files)

    def url_search_request(self, url: str, options: SearchOptions | None = None) -> httpx.Request:
        """``GET /search?url=<percent-encoded URL>``: trace.moe downloads the image itself.

        Not used by the engine (it downloads URLs itself, within its own limits, so the cache and the
        other providers see the same bytes); for callers who want trace.moe to fetch.

        Raises:
            ConfigurationError: A URL that is not absolute http(s); a negative ``anilist_id``.
        """
        params: Params = [("url", image_url(url)), *search_params(options or SearchOptions())]
        return self.request("GET", "/search", params=params)

    def vector_search_request(
        self, vector: Sequence[int], options: SearchOptions | None = None
    ) -> httpx.Request:
        """``POST /search`` with JSON ``{"vector": "<base64 of 33 bytes>"}``: 44 bytes instead of an image.

        ``cutBorders`` is not sent: the server cannot crop a descriptor, so it must describe the already
        cropped image (see :func:`~anisearch_providers.tracemoe.descriptor.search_descriptor`). Parse the
        answer with :meth:`parse_search`.

        Raises:
            ConfigurationError: A vector that is not 33 integers 0..255; a negative ``anilist_id``.
        """
        params = search_params(options or SearchOptions(), cut_borders=False)
        return self.request("POST", "/search", params=params, json={"vector": vector_text(vector)})

    def search_batch_request(
        self, vectors: Sequence[Sequence[int]], options: SearchOptions | None = None
    ) -> httpx.Request:
        """One ``/search`` for 1 to 10 colour layout vectors (each one search against the quota).

        Parse the answer with :meth:`parse_search_batch`.

        Raises:
            ConfigurationError: No vector, more than 10, or one that is not 33 integers 0..255.
        """
        if not 1 <= len(vectors) <= MAX_BATCH:
            raise ConfigurationError(
                f"a trace.moe vector batch holds 1 to {MAX_BATCH} vectors, got {len(vectors)}"
            )
        params = search_params(options or SearchOptions(), cut_borders=False)
        return self.request(
            "POST", "/search", params=params, json={"vector": [vector_text(v) for v in vectors]}
        )

    def _checked_image(self, image: PreparedImage) -> PreparedImage:
        if not image.data:
            raise InvalidImageError("the image is empty (0 bytes)")
        if len(image.data) > self.limits.max_bytes:
            raise ImageTooLargeError(
                f"the image is {len(image.data)} bytes; trace.moe accepts at most {self.limits.max_bytes}",
                size_bytes=len(image.data),
                limit_bytes=self.limits.max_bytes,
            )
        return image

    def quota_request(self) -> httpx.Request:
        """``GET /me``: the caller's quota, usage, concurrency and priority. Costs no search."""
        return self.request("GET", "/me")

    def usage_request(self, period: str) -> httpx.Request:
        """``GET /me?period=minute|hour|day``: searches per status over the last 60 min, 72 h or 60 days.

        Raises:
            ConfigurationError: ``period`` is not ``minute``, ``hour`` or ``day``.
        """
        if period not in _USAGE_PERIODS:
            raise ConfigurationError(
                f"period must be one of {', '.join(sorted(_USAGE_PERIODS))}, got {period!r}"
            )
        return self.request("GET", "/me", params={"period": period})

    # ------------------------------------------------------------ responses

    @contextmanager
    def _shape(self, response: httpx.Response, endpoint: str) -> Iterator[None]:
        try:
            yield
        except ShapeError as exc:
            raise UpstreamResponseError(
                str(exc), provider=self.name, status_code=response.status_code, endpoint=endpoint
            ) from exc

    def _ok_body(self, response: httpx.Response, endpoint: str) -> Any:
        if response.status_code != httpx.codes.OK:
            raise error_for(response, provider=self.name, now=self.now(), endpoint=endpoint)
        body = self.json(response, endpoint)
        if isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]:
            raise error_for(response, provider=self.name, now=self.now(), endpoint=endpoint)
        return body

    def _search_body(self, response: httpx.Response) -> tuple[dict[str, Any], list[Any]]:
        body = self._ok_body(response, "/search")
        if not isinstance(body, dict) or not isinstance(body.get("result"), list):
            raise UpstreamResponseError(
                "the search answer has no 'result' array",
                provider=self.name,
                status_code=200,
                endpoint="/search",
            )
        return body, body["result"]

    def _answer(
        self,
        body: dict[str, Any],
        items: list[Any],
        response: httpx.Response,
        *,
        searches: int,
        percent: bool | None = None,
    ) -> ProviderAnswer:
        with self._shape(response, "/search"):
            if percent is None:
                percent = self._in_percent(items)
            hits = hits_from_items(items, provider=self.name, date=response_date(response), percent=percent)
            quota = answer_quota(
                body, provider=self.name, scope=self.scope, searches=searches, now=self.now()
            )
        frames = as_int(body.get("frameCount"))  # can pass 2**31 (Milvus counts every frame)
        frames = frames if frames is not None and frames >= 0 else None
        return ProviderAnswer(hits=hits, frames_searched=frames, quota=quota)

    def _in_percent(self, *answers: list[Any]) -> bool:
        """Whether this server's similarities are in percent: one of ``answers`` (``result`` arrays: one, or
        a vector batch's) holds one above 1, or an earlier answer of this server did. The first time, a
        warning names the server and the value."""
        server = (self.name, self.base_url)
        highest = max(
            (high for items in answers if (high := percent_similarity(items)) is not None), default=None
        )
        if highest is not None and server not in _IN_PERCENT:
            _IN_PERCENT.add(server)
            logger.warning(
                "%s at %s answered a similarity of %s, above 1: its similarities are read as percentages "
                "(divided by 100)",
                self.name,
                redact(self.base_url),
                highest,
            )
        return server in _IN_PERCENT

    def parse_search(self, response: httpx.Response) -> ProviderAnswer:
        """Hits (similarity descending), ``frameCount`` and the reported quota of a ``/search`` answer.

        Similarities are 0..1. An answer with a similarity above 1 (beyond rounding) comes from a server
        that answers in percent (a self-hosted one): each of its similarities is divided by 100, and so are
        those of its later answers in this process; a warning (logger ``anisearch``, once per process for
        each address) names the address and the value.

        Preview URLs get ``preview_expires_at`` (the next full hour after the response ``Date`` plus 300 s
        for opaque URLs, ``now`` + 300 s for 2022-2025 URLs). ``quota.used`` counts this search.

        Raises:
            QuotaExhaustedError, ConcurrencyLimitError, RateLimitedError, ProviderBusyError,
            AuthenticationError, ImageFetchError, BadRequestError, ImageTooLargeError, ProviderServerError:
                The answer is that error (see ``_errors.ERROR_RULES``).
            UpstreamResponseError: A 200 that is not JSON or not a single search's shape (a vector batch
                answer belongs to :meth:`parse_search_batch`).
        """
        body, items = self._search_body(response)
        if items and all(isinstance(item, list) for item in items):
            raise UpstreamResponseError(
                "this is a vector batch answer (one list per vector); parse it with parse_search_batch",
                provider=self.name,
                status_code=response.status_code,
                endpoint="/search",
            )
        return self._answer(body, items, response, searches=1)

    def parse_search_batch(self, response: httpx.Response) -> list[ProviderAnswer]:
        """One answer per vector of a :meth:`search_batch_request`, in request order.

        Each answer carries the same ``frames_searched`` and quota (``used`` counts every vector). An
        ``anilistID`` with no indexed files is answered at once with one flat empty ``result`` whatever was
        sent (contract §2.3): that is an empty answer for each vector of the request (read from
        ``response.request``; one when the request is not known).

        Raises:
            ProviderError: As :meth:`parse_search`.
            UpstreamResponseError: ``result`` is not a list of lists.
        """
        body, items = self._search_body(response)
        if not items:
            return [self._answer(body, [], response, searches=1)] * _vectors_sent(response)
        if not all(isinstance(item, list) for item in items):
            raise UpstreamResponseError(
                "a vector batch answer holds one result list per vector",
                provider=self.name,
                status_code=response.status_code,
                endpoint="/search",
            )
        percent = self._in_percent(*items)  # one scale for the whole answer
        return [self._answer(body, item, response, searches=len(items), percent=percent) for item in items]

    def parse_quota(self, response: httpx.Response) -> list[Quota]:
        """The ``/me`` answer as one rolling-24h quota (limit, used, remaining, concurrency, priority).

        The caller's ``id`` (an address, a network or an email) is never kept.

        Raises:
            AuthenticationError: ``Invalid API key``.
            RateLimitedError, ProviderServerError, BadRequestError: As the status says.
            UpstreamResponseError: A 200 that is not a ``/me`` object.
        """
        body = self._ok_body(response, "/me")
        with self._shape(response, "/me"):
            return [me_quota(body, provider=self.name, scope=self.scope, now=self.now())]

    def parse_usage(self, response: httpx.Response) -> list[UsageBucket]:
        """The ``/me?period=`` answer: searches per HTTP status, one bucket per minute, hour or day.

        Raises:
            BadRequestError: ``Invalid period``.
            AuthenticationError: ``Invalid API key``.
            UpstreamResponseError: Not an array of buckets.
        """
        body = self._ok_body(response, "/me")
        with self._shape(response, "/me"):
            return usage_buckets(body)

    def observe(self, response: httpx.Response) -> list[Quota]:
        """What any answer says about the limits, for the ledger; never raises.

        - Rate-limit headers (every route, errors too): the 100-per-minute window (source ``headers``).
        - A 429: that window with ``remaining`` 0 and ``cooldown_until`` = now + ``Retry-After``.
        - A 402 ``Search quota depleted``: the search quota, spent (``remaining`` 0).
        """
        return observed_quotas(response, provider=self.name, scope=self.scope, now=self.now())


def _vectors_sent(response: httpx.Response) -> int:
    """How many vectors the batch request of ``response`` held (1 when that cannot be read)."""
    request = request_of(response)
    try:
        vectors = loads(request.content)["vector"] if request is not None else None
    except (httpx.RequestNotRead, ValueError, TypeError, KeyError):
        return 1
    return len(vectors) if isinstance(vectors, list) and vectors else 1
