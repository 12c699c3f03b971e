"""trace.moe (``https://api.trace.moe``): the ``tracemoe`` provider, sans-IO.

Builds ``/search`` and ``/me`` requests and parses every answer shape the API has had since 2021
(``research/tracemoe-contract.md``): ``anilist`` as an int, an object or missing; ``episode`` as a
number, a ``"5|17"`` string, a list or null; the 2026 ``quota``/``quotaUsed`` members; and every error
of the contract's §4 table, each translated once to its own exception class.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Self

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from anisearch._exceptions import (
    ConfigurationError,
    ImageTooLargeError,
    InvalidImageError,
    UpstreamResponseError,
)
from anisearch._ledger import WindowSpec
from anisearch._models import Quota, QuotaScope
from anisearch._provider import (
    Capabilities,
    Credential,
    ProviderAnswer,
    ProviderContext,
    SearchOptions,
    SearchQuery,
    UploadLimits,
)
from anisearch._redact import redact

from ._common import ShapeError, as_int, json_body, response_date
from ._errors import MAX_UPLOAD_BYTES, error_for
from ._parse import (
    UsageBucket,
    answer_quota,
    hits_from_items,
    me_quota,
    observed_quotas,
    usage_buckets,
)
from ._requests import MAX_BATCH, Params, http_base_url, image_url, search_params, user_agent, vector_text

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from anisearch._image import PreparedImage

__all__ = ["DEFAULT_URL", "TraceMoe", "UsageBucket"]

DEFAULT_URL = "https://api.trace.moe"
"""Where the ``tracemoe`` provider sends requests unless ``ANISEARCH_TRACEMOE_URL`` says otherwise."""

GUEST_QUOTA = 100
"""Guest searches per rolling 24 h (trace.moe tier 0, since 2026-02-22)."""
RATE_PER_MINUTE = 100
"""Requests per 60 s per client address, with or without a key (express-rate-limit)."""
_USAGE_PERIODS = frozenset({"minute", "hour", "day"})
_IMAGE_FILENAMES = {"image/png": "image.png", "image/webp": "image.webp", "image/gif": "image.gif"}


class _Settings(BaseModel):
    """The ``[providers.tracemoe]`` settings (env ``ANISEARCH_TRACEMOE_URL``, ``ANISEARCH_TRACEMOE_KEY``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None
    key: SecretStr | None = None


class TraceMoe:
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
    capabilities: Capabilities = Capabilities(
        upload=True,
        url=True,
        vector=True,
        anilist_filter=True,
        cut_borders=True,
        anilist_info=True,
        quota=True,
    )
    limits: UploadLimits = UploadLimits(
        max_bytes=MAX_UPLOAD_BYTES, max_width=640, max_height=360, encoding="multipart"
    )

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        key: str | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.base_url = http_base_url(base_url, "ANISEARCH_TRACEMOE_URL")
        self._key = key.strip() if key and key.strip() else None
        self._clock = clock or (lambda: datetime.now(UTC))

    def __repr__(self) -> str:
        return f"TraceMoe(base_url={redact(self.base_url)!r}, scope={self.credential.scope!r})"

    @classmethod
    def from_context(cls, context: ProviderContext) -> Self:
        """Build the provider from its settings: ``url`` and ``key``.

        Raises:
            ConfigurationError: An unknown setting (named in the message), a value of the wrong type, or a
                ``url`` that is not http(s).
        """
        config = dict(context.config)
        unknown = sorted(set(config) - set(_Settings.model_fields))
        if unknown:
            raise ConfigurationError(
                f"unknown tracemoe setting(s): {', '.join(unknown)}; "
                f"known: {', '.join(sorted(_Settings.model_fields))}"
            )
        try:
            settings = _Settings.model_validate(config)
        except ValidationError as exc:  # the message names the setting, never its value (it may be a key)
            fields = ", ".join(".".join(str(part) for part in error["loc"]) for error in exc.errors())
            raise ConfigurationError(f"invalid tracemoe setting(s): {fields} (expected text)") from None
        key = settings.key.get_secret_value() if settings.key else None
        return cls(settings.url or DEFAULT_URL, key)

    # ------------------------------------------------------------ identity and limits

    @property
    def credential(self) -> Credential:
        """``Credential("api-key", key)`` with a key, else ``Credential("guest")``."""
        return Credential("api-key", self._key) if self._key else Credential("guest")

    @property
    def _scope(self) -> QuotaScope:
        return self.credential.scope

    def windows(self) -> list[WindowSpec]:
        """trace.moe's windows (contract §5, §6).

        - ``rolling-24h``: answered searches in the last 24 hours, each ageing out 24 h after it was made;
          100 for a guest, the tier's quota for a key (learned from ``/me`` or a search answer). Reported by
          the free ``/me``, so the ledger asks it before trusting its own estimate that a search aged out.
        - ``minute``: every HTTP request, 100 per fixed 60 s window per address, a rate limit (429).
        """
        guest = self._scope == "guest"
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
        now = self._clock()
        guest = self._scope == "guest"
        return [
            Quota(
                provider=self.name,
                scope=self._scope,
                limit=GUEST_QUOTA if guest else None,
                window="rolling-24h",
                concurrency=1,
                priority=0 if guest else None,
                source="ledger",
                observed_at=now,
            ),
            Quota(
                provider=self.name,
                scope=self._scope,
                limit=RATE_PER_MINUTE,
                window="minute",
                source="ledger",
                observed_at=now,
            ),
        ]

    def auth(self) -> httpx.Auth | None:
        """None: the key travels in a header, there is no session to keep."""
        return None

    # ------------------------------------------------------------ requests

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": user_agent()}
        if self._key:
            headers["x-trace-key"] = self._key
        return headers

    def search_request(self, query: SearchQuery) -> httpx.Request:
        """The ``/search`` request for one image, image URL or colour layout vector.

        - image: ``POST`` multipart, the file in the field ``image``.
        - url: ``GET ?url=<percent-encoded URL>``; trace.moe downloads it.
        - vector: ``POST`` JSON ``{"vector": "<base64 of 33 bytes>"}``. ``cutBorders`` is not sent: the
          server cannot crop a descriptor, so it must describe the already cropped image.

        ``anilistID``, ``cutBorders`` and ``anilistInfo`` go in the query string; the key in ``x-trace-key``.

        Raises:
            ConfigurationError: Not exactly one of image, url, vector; a URL that is not http(s); a vector
                that is not 33 bytes; a negative ``anilist_id``.
            InvalidImageError: The image is empty.
            ImageTooLargeError: The image is over 25 MiB (checked before sending; ``provider`` is None).
        """
        inputs = [value for value in (query.image, query.url, query.vector) if value is not None]
        if len(inputs) > 1:
            raise ConfigurationError("a search needs exactly one of image, url or vector")
        url = f"{self.base_url}/search"
        if query.image is not None:
            image = self._checked_image(query.image)
            filename = _IMAGE_FILENAMES.get(image.mime_type, "image.jpg")
            return httpx.Request(
                "POST",
                url,
                params=search_params(query.options),
                headers=self._headers(),
                files={"image": (filename, image.data, image.mime_type)},
            )
        if query.url is not None:
            params: Params = [("url", image_url(query.url)), *search_params(query.options)]
            return httpx.Request("GET", url, params=params, headers=self._headers())
        if query.vector is not None:
            return httpx.Request(
                "POST",
                url,
                params=search_params(query.options, cut_borders=False),
                headers=self._headers(),
                json={"vector": vector_text(query.vector)},
            )
        raise ConfigurationError("a search needs exactly one of image, url or vector")

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
        return httpx.Request(
            "POST",
            f"{self.base_url}/search",
            params=search_params(options or SearchOptions(), cut_borders=False),
            headers=self._headers(),
            json={"vector": [vector_text(vector) for vector in vectors]},
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
        return httpx.Request("GET", f"{self.base_url}/me", headers=self._headers())

    def usage_request(self, period: str) -> httpx.Request:
        """``GET /me?period=minute|hour|day``: searches per status over the last 60 min, 72 h or 60 days.

        Raises:
            ConfigurationError: ``period`` is not ``minute``, ``hour`` or ``day``.
        """
        if period not in _USAGE_PERIODS:
            raise ConfigurationError(
                f"period must be one of {', '.join(sorted(_USAGE_PERIODS))}, got {period!r}"
            )
        return httpx.Request("GET", f"{self.base_url}/me", params={"period": period}, headers=self._headers())

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
            raise error_for(response, provider=self.name, now=self._clock(), endpoint=endpoint)
        body = json_body(response, provider=self.name, endpoint=endpoint)
        if isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]:
            raise error_for(response, provider=self.name, now=self._clock(), endpoint=endpoint)
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
        self, body: dict[str, Any], items: list[Any], response: httpx.Response, *, searches: int
    ) -> ProviderAnswer:
        with self._shape(response, "/search"):
            hits = hits_from_items(items, provider=self.name, date=response_date(response))
            quota = answer_quota(
                body, provider=self.name, scope=self._scope, searches=searches, now=self._clock()
            )
        frames = as_int(body.get("frameCount"))  # can pass 2**31 (Milvus counts every frame)
        frames = frames if frames is not None and frames >= 0 else None
        return ProviderAnswer(hits=hits, frames_searched=frames, quota=quota)

    def parse_search(self, response: httpx.Response) -> ProviderAnswer:
        """Hits (similarity descending), ``frameCount`` and the reported quota of a ``/search`` answer.

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

        Each answer carries the same ``frames_searched`` and quota (``used`` counts every vector).

        Raises:
            ProviderError: As :meth:`parse_search`.
            UpstreamResponseError: ``result`` is not a list of lists.
        """
        body, items = self._search_body(response)
        if not all(isinstance(item, list) for item in items):
            raise UpstreamResponseError(
                "a vector batch answer holds one result list per vector",
                provider=self.name,
                status_code=response.status_code,
                endpoint="/search",
            )
        return [self._answer(body, item, response, searches=len(items)) for item in items]

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
            return [me_quota(body, provider=self.name, scope=self._scope, now=self._clock())]

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
        return observed_quotas(response, provider=self.name, scope=self._scope, now=self._clock())
