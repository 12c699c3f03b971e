"""``whatanime-ga``: the legacy whatanime.ga / trace.moe ``/api`` search (base64 images), sans-IO.

The public server was shut down in 2021-07, so this provider has no default address: it talks to a
self-hosted legacy server, or to the bundled emulator (``anisearch emulate whatanime-ga``), at the URL
set with ``ANISEARCH_WHATANIME_GA_URL`` (or ``url`` in the ``[whatanime-ga]`` table of the config file).
It is never in the default provider order; name it (``providers=["whatanime-ga", ...]``) or configure it.

Without a URL the provider can still be built (so it is listed by ``anisearch providers``), but every
request it is asked to build raises :class:`~anisearch.ConfigurationError` naming the setting. That way
the error appears exactly when, and only when, someone tries to use it.

Settings (all optional but ``url``):

- ``url``: the server's base URL, e.g. ``http://127.0.0.1:8000`` (requests go to ``{url}/api/search``).
- ``token``: an API token, sent as ``?token=`` (``ANISEARCH_WHATANIME_GA_TOKEN``). Required by 2017-2018
  servers; optional later, where it raises the daily quota (typically 10/min, 1000/day).
- ``body``: ``form`` (``application/x-www-form-urlencoded``, the original contract, default) or ``json``
  (``{"image": ..., "filter": ...}``, accepted from 2018-10).
- ``max_body_bytes``: the server's request body limit in bytes. Default 1 000 000 (the docs' "1MB"):
  servers count "1M" as 1 MiB (1 048 576), so 10^6 stays under either reading. Servers from 2019-09
  allow 10 MB: set ``10000000``.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Self
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from anisearch.provider import (
    BaseProvider,
    Capabilities,
    ConfigurationError,
    Credential,
    Hit,
    ImageTooLargeError,
    InvalidImageError,
    ProviderAnswer,
    Quota,
    SearchOptions,
    SearchQuery,
    UploadLimits,
    UpstreamResponseError,
    WindowSpec,
    loads,
    redact,
)

from ._parse import (
    classify_error,
    frames_searched,
    parse_hit,
    quotas_from_body,
    quotas_from_headers,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from anisearch.provider import PreparedImage, ProviderContext

__all__ = ["DEFAULT_MAX_BODY_BYTES", "WhatanimeGa"]

DEFAULT_MAX_BODY_BYTES: Final = 1_000_000
"""The 2017 server's documented "hard limit of 1MB post size", in bytes, read as 10^6 to be safe."""

_MIN_BODY_BYTES: Final = 4096
_BODY_OVERHEAD: Final = 96
"""Bytes of a body that are not the data URL: ``image=``, ``&filter=<id>``, the JSON punctuation."""
_FORM_INFLATION: Final = 1.04
"""Form encoding turns each ``+`` of the base64 text (1 character in 64 on average) into ``%2B``:
about 3 % more bytes. The image budget keeps 4 % for it, so an image fitted to ``limits.max_bytes``
gives a body under ``max_body_bytes``."""
_DAY_SECONDS: Final = 86400
"""The TTL the server gives its day counter at the first search (``quota_ttl`` / ``user_quota_ttl``)."""
_URL_SETTING: Final = "ANISEARCH_WHATANIME_GA_URL"
_FORM_SAFE: Final = "/:;,="
"""Data URL characters a form value may carry unescaped (WHATWG and PHP split a pair at the first ``=``)."""


class _Settings(BaseModel):
    """The ``[whatanime-ga]`` settings (env ``ANISEARCH_WHATANIME_GA_URL``, ``..._TOKEN``, ``..._BODY``,
    ``..._MAX_BODY_BYTES``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None
    token: SecretStr | None = None
    body: Literal["form", "json"] = "form"
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=_MIN_BODY_BYTES)


_DATA_URL_PREFIX: Final = len("data:image/jpeg;base64,")


def data_url(image: PreparedImage) -> str:
    """The image as a ``data:<mime>;base64,...`` URL, the legacy API's ``image`` field."""
    return f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode('ascii')}"


def image_budget(data_url_bytes: int) -> int:
    """The largest image, in bytes, whose data URL fits in ``data_url_bytes`` (base64: 4 bytes per 3)."""
    return max((data_url_bytes - _DATA_URL_PREFIX) // 4 * 3, 0)


class WhatanimeGa(BaseProvider):
    """The legacy whatanime.ga search API (``POST /api/search``, ``GET /api/me``), 2017-2021 contract.

    Attributes:
        base_url: The configured server (no trailing slash), or ``""`` when none is configured.
        body: ``"form"`` or ``"json"``: how the base64 image is posted.
        max_body_bytes: The server's request body limit, in bytes.
        limits: How the image must arrive: JPEG only (2017 servers strip only a JPEG data-URL prefix),
            with ``max_bytes`` the image budget whose base64 data URL keeps the whole body within
            ``max_body_bytes``.
    """

    name: ClassVar[str] = "whatanime-ga"
    default_order: ClassVar[bool] = False
    default_rank: ClassVar[int] = 300
    Settings: ClassVar[type[BaseModel]] = _Settings
    capabilities: Capabilities = Capabilities(
        upload=True,
        anilist_filter=True,  # filter=<AniList ID>
        cut_borders=True,  # the server crops black borders of every image, always
        anilist_info=True,  # titles, MAL ID, synonyms and is_adult come with every result
        quota=True,  # GET /api/me is free
    )

    def __init__(
        self,
        base_url: str = "",
        *,
        token: str | None = None,
        body: Literal["form", "json"] = "form",
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """Build the provider.

        Args:
            base_url: The legacy server's base URL, or ``""`` for none (requests then raise).
            token: API token for ``?token=``, or None.
            body: ``"form"`` or ``"json"``.
            max_body_bytes: The server's body limit in bytes.
            clock: Returns the current aware datetime (resets are ``now + ttl``).

        Raises:
            ConfigurationError: ``base_url`` is not an http(s) URL, or ``max_body_bytes`` is too small.
        """
        if body not in {"form", "json"}:
            raise ConfigurationError(f"whatanime-ga body must be 'form' or 'json', got {body!r}")
        if max_body_bytes < _MIN_BODY_BYTES:
            raise ConfigurationError(f"whatanime-ga max_body_bytes must be at least {_MIN_BODY_BYTES}")
        super().__init__(base_url, token, clock=clock)
        self.body: Literal["form", "json"] = body
        self.max_body_bytes = max_body_bytes
        budget = self.max_body_bytes - _BODY_OVERHEAD
        url_budget = int(budget / _FORM_INFLATION) if self.body == "form" else budget
        self.limits = UploadLimits(max_bytes=image_budget(url_budget), formats=frozenset({"image/jpeg"}))

    @classmethod
    def from_context(cls, context: ProviderContext) -> Self:
        """Build from settings ``url``, ``token``, ``body`` and ``max_body_bytes`` (see the module doc).

        Raises:
            ConfigurationError: An unknown setting (named in the message) or an invalid value. A missing
                ``url`` is not an error here; building a request is.
        """
        return super().from_context(context)

    @classmethod
    def from_settings(cls, settings: Any, context: ProviderContext) -> Self:
        """Build from validated :class:`_Settings`.

        Raises:
            ConfigurationError: A value the constructor refuses.
        """
        del context
        return cls(
            settings.url or "",
            token=settings.token.get_secret_value() if settings.token else None,
            body=settings.body,
            max_body_bytes=settings.max_body_bytes,
        )

    def __repr__(self) -> str:
        token = "***" if self.key else None
        return f"{type(self).__name__}(base_url={redact(self.base_url)!r}, token={token})"

    # ------------------------------------------------------------ identity and assumptions

    @property
    def credential(self) -> Credential:
        """``api-key`` scope with the token when one is set, else ``guest`` (limited by address)."""
        return Credential(scope="api-key", secret=self.key) if self.key else Credential()

    def windows(self) -> list[WindowSpec]:
        """The legacy API's windows (contract §7 Limits): a rate limit of 10 search requests a minute, and
        a daily quota of 150 searches (1000 with a token).

        The server keeps each as a Redis counter whose TTL is set by the first search while none exists
        (``quota_ttl``, 86400 seconds), not by the clock's midnight: the day ends 24 h after its first
        search. Here both are rolling windows of that span: a counted search leaves 24 h after it was made,
        never before the server's counter expires (a calendar day would free the quota at midnight, into
        the server's 429). Every answer reports what is left with the counter's TTL (``quota_ttl``), so
        searches counted elsewhere leave at the server's own reset; the day is ``reported``, so when the
        ledger's estimate frees a search (the counter's first one aged out) it asks the free ``/api/me``
        first, which says the counter expired and frees the searches counted after it too."""
        daily = 1000 if self.key else 150
        return [
            WindowSpec("minute", span_seconds=60, counts="requests", kind="rate", limit=10),
            WindowSpec("day", span_seconds=_DAY_SECONDS, limit=daily, reported=True),
        ]

    # ------------------------------------------------------------ requests

    def _url(self, path: str, **params: str) -> httpx.URL:
        if not self.base_url:
            raise ConfigurationError(
                f"set {_URL_SETTING} (or url in the [whatanime-ga] config table) to a legacy whatanime.ga "
                "server: the public one was shut down in 2021 (`anisearch emulate whatanime-ga` runs one)"
            )
        if self.key:
            params["token"] = self.key
        return httpx.URL(f"{self.base_url}{path}", params=params)

    def _encode(self, fields: dict[str, str | int]) -> tuple[bytes, str]:
        if self.body == "json":
            return json.dumps(fields, separators=(",", ":")).encode(), "application/json"
        pairs = (f"{key}={quote(str(value), safe=_FORM_SAFE)}" for key, value in fields.items())
        return "&".join(pairs).encode("ascii"), "application/x-www-form-urlencoded"

    def search_request(self, query: SearchQuery) -> httpx.Request:
        """``POST {url}/api/search[?token=]`` with the image as a base64 data URL.

        The body is ``image=data:image/jpeg;base64,...[&filter=<AniList ID>]`` (form) or
        ``{"image": ..., "filter": ...}`` (JSON).

        Raises:
            ConfigurationError: No server URL is configured.
            InvalidImageError: The image is empty.
            ImageTooLargeError: The encoded body is over ``max_body_bytes`` (``provider`` None: nothing
                was sent).
        """
        if not query.image.data:
            raise InvalidImageError("the image is empty (0 bytes)")
        return self._search({"image": data_url(query.image)}, {}, query.options)

    def url_search_request(self, url: str, options: SearchOptions | None = None) -> httpx.Request:
        """``POST {url}/api/search?url=<image URL>[&token=]``: the server fetches the image (2019-09+);
        the body carries only ``filter``. Not used by the engine, which downloads URLs itself.

        Raises:
            ConfigurationError: No server URL is configured.
        """
        return self._search({}, {"url": url}, options or SearchOptions())

    def _search(
        self, fields: dict[str, str | int], params: dict[str, str], options: SearchOptions
    ) -> httpx.Request:
        url = self._url("/api/search", **params)
        if options.anilist_id is not None:
            fields["filter"] = int(options.anilist_id)
        content, content_type = self._encode(fields) if fields else (b"", "")
        if len(content) > self.max_body_bytes:
            raise ImageTooLargeError(
                f"the encoded image makes a {len(content)}-byte request body; whatanime-ga accepts at most "
                f"{self.max_body_bytes} bytes (max_body_bytes)",
                size_bytes=len(content),
                limit_bytes=self.max_body_bytes,
            )
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        return httpx.Request("POST", url, content=content, headers=headers)

    def quota_request(self) -> httpx.Request:
        """``GET {url}/api/me[?token=]``: what remains of the minute and day windows (free).

        Raises:
            ConfigurationError: No server URL is configured.
        """
        return httpx.Request("GET", self._url("/api/me"), headers={"Accept": "application/json"})

    # ------------------------------------------------------------ responses

    def _json(self, response: httpx.Response, endpoint: str) -> dict[str, Any]:
        try:
            body = loads(response.content)  # strict, and at most 64 levels deep
        except ValueError as exc:
            raise UpstreamResponseError(
                f"the answer is not JSON: {response.text[:120]!r}",
                provider=self.name,
                status_code=response.status_code,
                endpoint=endpoint,
            ) from exc
        if not isinstance(body, dict):
            raise UpstreamResponseError(
                f"expected a JSON object, got {type(body).__name__}: {str(body)[:120]}",
                provider=self.name,
                status_code=response.status_code,
                endpoint=endpoint,
            )
        return body

    def _raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code != 200:  # noqa: PLR2004 - the only success the server sends
            raise classify_error(
                response, provider=self.name, now=self.now(), max_body_bytes=self.max_body_bytes
            )

    def parse_search(self, response: httpx.Response) -> ProviderAnswer:
        """Hits from a ``/api/search`` body (``docs[]``, similarity descending), frames searched from
        ``RawDocsCount``, and the daily quota (else the minute rate) the body reported.

        Raises:
            RateLimitedError: 429 ``Search limit exceeded`` (``retry_after`` from the text, else
                ``Retry-After``, else ``x-whatanime-limit-ttl``).
            QuotaExhaustedError: 429 ``Search quota exceeded``.
            AuthenticationError: 401 ``Missing API token``, 403 ``Invalid API token``.
            ImageFetchError: 400 ``Failed to fetch image`` (URL mode).
            BadRequestError: 400 ``No image received`` / ``Image is empty``, other 4xx.
            ImageTooLargeError: 413 from the web server.
            ProviderServerError: 500 ``Failed to process image``, a Solr error, 503 database errors, 5xx.
            UpstreamResponseError: A 200 that is not a legacy search body.
        """
        self._raise_for_status(response)
        body = self._json(response, "/api/search")
        docs = body.get("docs")
        if not isinstance(docs, list):
            raise UpstreamResponseError(
                "the search answer has no docs[] list",
                provider=self.name,
                status_code=response.status_code,
                endpoint="/api/search",
            )
        hits: list[Hit] = [
            parse_hit(doc, provider=self.name, base_url=self.base_url)
            for doc in docs
            if isinstance(doc, dict)
        ]
        hits.sort(key=lambda hit: hit.similarity, reverse=True)
        quotas = quotas_from_body(body, provider=self.name, scope=self.scope, now=self.now())
        reported = next((q for q in quotas if q.window == "day"), quotas[0] if quotas else None)
        return ProviderAnswer(
            hits=hits, frames_searched=frames_searched(body.get("RawDocsCount")), quota=reported
        )

    def parse_quota(self, response: httpx.Response) -> list[Quota]:
        """The minute and day windows from ``/api/me`` (``limit``/``limit_ttl``/``user_limit``...).

        Raises:
            AuthenticationError: 401/403 for a missing or unknown token.
            ProviderServerError: 503 ``Failed to connect to database``.
            UpstreamResponseError: The body is not a quota object.
        """
        self._raise_for_status(response)
        body = self._json(response, "/api/me")
        quotas = quotas_from_body(body, provider=self.name, scope=self.scope, now=self.now())
        if not quotas:
            raise UpstreamResponseError(
                "the /api/me answer has neither limit nor quota",
                provider=self.name,
                status_code=response.status_code,
                endpoint="/api/me",
            )
        return quotas

    def observe(self, response: httpx.Response) -> list[Quota]:
        """Quota facts any response carries: the ``x-whatanime-*`` headers (on success, and the spent
        pair on a 429, which then also sets ``cooldown_until``), and the ``limit``/``quota`` fields of a
        JSON object body for windows the headers did not cover. One Quota per window."""
        now = self.now()
        refused = response.status_code == 429  # noqa: PLR2004 - Too Many Requests
        quotas = quotas_from_headers(
            response.headers, provider=self.name, scope=self.scope, now=now, refused=refused
        )
        if response.status_code == 200:  # noqa: PLR2004 - only a success carries a body with quota fields
            try:
                body = loads(response.content)
            except ValueError:  # not JSON, or nested absurdly deep: nothing to learn
                body = None
            if isinstance(body, dict):
                seen = {quota.window for quota in quotas}
                quotas += [
                    quota
                    for quota in quotas_from_body(body, provider=self.name, scope=self.scope, now=now)
                    if quota.window not in seen
                ]
        return quotas
