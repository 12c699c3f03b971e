""":class:`BaseProvider`: the plumbing every provider shares; a provider writes only its upstream's facts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Self

import httpx
from pydantic import BaseModel

from anisearch._exceptions import ConfigurationError
from anisearch._models import Quota, QuotaScope
from anisearch._provider import (
    STUB_MARK,
    Capabilities,
    Credential,
    ProviderAnswer,
    ProviderContext,
    SearchQuery,
    UploadLimits,
)
from anisearch._redact import add_secret_headers, redact
from anisearch._sdk._common import json_body
from anisearch._sdk._http import (
    ProviderSettings,
    http_base_url,
    rate_limit_quota,
    user_agent,
    validate_settings,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from anisearch._image import PreparedImage
    from anisearch._ledger import WindowSpec

__all__ = ["BaseProvider"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class BaseProvider:
    """Sensible defaults for every member of :class:`~anisearch.provider.Provider` but the two a provider
    must write: :meth:`search_request` and :meth:`parse_search`.

    What a subclass sets (class attributes): ``name`` (the entry-point name), ``default_url``,
    ``capabilities``, ``limits``, ``default_order``/``default_rank``, ``Settings`` (a
    :class:`~anisearch.provider.ProviderSettings` subclass when it takes more than ``url`` and ``key``),
    and usually :meth:`windows` (its quota and rate windows as data). The defaults:

    - settings: ``url`` and ``key``, unknown keys refused (:meth:`from_context`);
    - credential: ``api-key`` with a key, else ``guest``;
    - windows: none (an upstream without limits); :meth:`assumed_quotas` follows :meth:`windows`;
    - no quota endpoint; :meth:`observe` reads the standard rate-limit headers;
    - no auth flow; the cache key is the prepared image's digest;
    - requests carry ``Accept: application/json`` and anisearch's ``User-Agent``.

    Args:
        base_url: The upstream's root URL (trailing slash dropped); None or ``""`` for ``default_url``
            (when that is ``""`` too, :meth:`request` raises until one is configured).
        key: An API key, or None to speak as a guest.
        clock: Returns the current aware time; for tests. Defaults to UTC now.

    Raises:
        ConfigurationError: ``base_url`` is not an http(s) URL without query or fragment.
    """

    name: ClassVar[str]
    default_url: ClassVar[str] = ""
    """Where requests go unless the ``url`` setting says otherwise."""
    default_order: ClassVar[bool] = False
    default_rank: ClassVar[int] = 1000
    capabilities: Capabilities = Capabilities()
    limits: UploadLimits = UploadLimits()
    Settings: ClassVar[type[BaseModel]] = ProviderSettings
    """The settings model :meth:`from_context` validates against."""
    secret_headers: ClassVar[frozenset[str]] = frozenset()
    """Request headers that carry this provider's credential (``x-trace-key``), masked in every log
    record like ``Authorization`` (``Authorization``, ``Cookie`` and ``X-Api-Key`` always are)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        add_secret_headers(cls.secret_headers)

    def __init__(
        self,
        base_url: str | None = None,
        key: str | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        url = base_url or self.default_url
        where = f"{self.url_setting} (or url in the [{self.name}] config table)"
        self.base_url = http_base_url(url, where, allow_empty=not self.default_url)
        self.key = key.strip() if key and key.strip() else None
        self._clock = clock or _utcnow

    @property
    def url_setting(self) -> str:
        """The environment variable that sets the base URL (``ANISEARCH_TRACEMOE_URL``)."""
        return f"ANISEARCH_{self.name.upper().replace('-', '_')}_URL"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={redact(self.base_url)!r}, scope={self.credential.scope!r})"

    @classmethod
    def from_context(cls, context: ProviderContext) -> Self:
        """Build the provider from its settings (validated against :attr:`Settings`).

        Raises:
            ConfigurationError: An unknown setting, a value of the wrong type, or a ``url`` that is not
                http(s).
        """
        return cls.from_settings(validate_settings(cls.name, cls.Settings, context.config), context)

    @classmethod
    def from_settings(cls, settings: Any, context: ProviderContext) -> Self:
        """Build from validated settings; override when :attr:`Settings` has more than ``url`` and ``key``.

        Raises:
            ConfigurationError: A value the constructor refuses.
        """
        del context  # the defaults need no state directory nor timeout
        key = settings.key.get_secret_value() if settings.key else None
        return cls(settings.url, key)

    # ------------------------------------------------------------ identity and limits

    def now(self) -> datetime:
        """The current aware time (the injected clock)."""
        return self._clock()

    @property
    def credential(self) -> Credential:
        """``Credential("api-key", key)`` with a key, else ``Credential("guest")``."""
        return Credential("api-key", self.key) if self.key else Credential("guest")

    @property
    def scope(self) -> QuotaScope:
        """Who the requests speak as: the credential's scope."""
        return self.credential.scope

    def windows(self) -> list[WindowSpec]:
        """The upstream's quota and rate windows, as data; none by default."""
        return []

    def assumed_quotas(self) -> list[Quota]:
        """One quota per declared window with a documented limit (source ``ledger``)."""
        now = self.now()
        return [
            Quota(
                provider=self.name,
                scope=self.scope,
                limit=spec.limit,
                window=spec.name,
                source="ledger",
                observed_at=now,
            )
            for spec in self.windows()
            if spec.limit is not None
        ]

    def auth(self) -> httpx.Auth | None:
        """None: no session to keep."""
        return None

    def cache_key(self, image: PreparedImage) -> str:
        """The image part of the result-cache key: ``sha256:<digest of the source bytes>``."""
        return f"sha256:{image.digest}"

    # ------------------------------------------------------------ requests and answers

    def headers(self) -> dict[str, str]:
        """Headers every request carries: ``Accept: application/json`` and anisearch's ``User-Agent``."""
        return {"Accept": "application/json", "User-Agent": user_agent()}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Request:
        """An :class:`httpx.Request` to ``base_url + path`` with :meth:`headers` (``headers=`` adds more).

        Raises:
            ConfigurationError: No base URL is configured (a provider without a default server).
        """
        if not self.base_url:
            raise ConfigurationError(f"set {self.url_setting} (or url in the [{self.name}] config table)")
        headers = {**self.headers(), **kwargs.pop("headers", {})}
        return httpx.Request(method, f"{self.base_url}{path}", headers=headers, **kwargs)

    def json(self, response: httpx.Response, endpoint: str | None = None) -> Any:
        """The body as strict JSON.

        Raises:
            UpstreamResponseError: It is not JSON, not UTF-8, or nested absurdly deep.
        """
        return json_body(response, provider=self.name, endpoint=endpoint)

    def search_request(self, query: SearchQuery) -> httpx.Request:
        """Build the search request; every provider writes its own.

        The router calls it before the search waits for a slot, again after a shared backoff and for
        each retry of a request that never left, so it depends on nothing but ``query`` (a sign-in
        belongs in :meth:`auth`).

        Raises:
            NotImplementedError: Always, here.
        """
        raise NotImplementedError(f"{type(self).__name__} must define search_request")

    def parse_search(self, response: httpx.Response) -> ProviderAnswer:
        """Parse a search answer; every provider writes its own.

        Raises:
            NotImplementedError: Always, here.
        """
        raise NotImplementedError(f"{type(self).__name__} must define parse_search")

    setattr(search_request, STUB_MARK, True)  # the registry refuses a provider that keeps these two
    setattr(parse_search, STUB_MARK, True)

    def quota_request(self) -> httpx.Request | None:
        """None: no free quota endpoint."""
        return None

    def parse_quota(self, response: httpx.Response) -> list[Quota]:
        """What the quota answer's rate-limit headers say (override with the endpoint's own reading)."""
        return self.observe(response)

    def observe(self, response: httpx.Response) -> list[Quota]:
        """The standard rate-limit headers' window, when an answer carries them; never raises."""
        quota = rate_limit_quota(response, provider=self.name, scope=self.scope, now=self.now())
        return [quota] if quota is not None else []
