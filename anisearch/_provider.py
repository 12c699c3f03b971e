"""The provider protocol: small, pure request builders and response parsers, found through entry points.

A provider never does I/O of its own for a search: it builds an :class:`httpx.Request`, and parses the
:class:`httpx.Response` the engine got for it (raising the most specific
:class:`~anisearch.ProviderError`). The engine (``AsyncClient``) owns the sockets, the retries, the
ledger and the cache, so one provider implementation serves the sync and the async client, tests use
``respx`` or an emulator, and a third party adds a provider by registering a class under the entry-point
group ``anisearch.providers``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Protocol, Self, TypeVar, runtime_checkable

from anisearch._exceptions import ConfigurationError, UnknownProviderError
from anisearch._redact import add_secret_headers

if TYPE_CHECKING:
    import httpx

    from anisearch._image import PreparedImage
    from anisearch._models import (
        Anime,
        ApiKey,
        CreatedApiKey,
        Credits,
        Hit,
        Quota,
        QuotaScope,
        RankingEntry,
        RecentSearch,
    )

__all__ = [
    "AccountProvider",
    "Capabilities",
    "Credential",
    "MetadataProvider",
    "Page",
    "PartialLookup",
    "Provider",
    "ProviderAnswer",
    "ProviderContext",
    "SearchMode",
    "SearchOptions",
    "SearchQuery",
    "UploadLimits",
    "available_metadata_providers",
    "available_providers",
    "load_metadata_provider",
    "load_provider",
    "provider_order",
]

PROVIDER_GROUP = "anisearch.providers"
EMULATOR_GROUP = "anisearch.emulators"
METADATA_GROUP = "anisearch.metadata"
"""Entry-point group of metadata providers (``anilist``): they describe anime by ID and search nothing, so
they have a group of their own and never join a search order."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a provider can do. The router skips a provider that lacks what a search needs."""

    upload: bool = True
    """Accepts the image bytes."""
    vector: bool = False
    """Can search by a compact descriptor it computes locally from the prepared image, instead of the
    image (trace.moe's colour layout vector: 57 bytes of JSON). Used with ``mode="vector"``."""
    anilist_filter: bool = False
    """Can restrict the search to one AniList ID (trace.moe ``anilistID``, legacy ``filter``)."""
    cut_borders: bool = False
    """Trims black borders server-side (trace.moe ``cutBorders``); otherwise anisearch crops locally."""
    anilist_info: bool = False
    """Can return titles and AniList metadata with each hit."""
    quota: bool = False
    """Has a free endpoint reporting the caller's quota (trace.moe ``/me``)."""
    account: bool = False
    """Has account features (rankings, recent searches, credits, API keys, sign-in)."""
    metadata: bool = False
    """Describes anime by AniList ID (titles, MAL ID, adult flag, format, cover): a metadata provider."""

    def names(self) -> list[str]:
        """The capabilities that are on, as sorted field names."""
        return sorted(name for name in self.__dataclass_fields__ if getattr(self, name))


@dataclass(frozen=True, slots=True)
class UploadLimits:
    """How a provider wants the image.

    Attributes:
        max_bytes: Largest image the upstream accepts, in bytes (a provider that inflates the image on
            the way, base64 for instance, sets the budget of the raw bytes).
        max_width: Width the image is downscaled to fit, pixels (aspect kept).
        max_height: Height the image is downscaled to fit, pixels (aspect kept).
        formats: MIME types the upstream accepts; anything else is re-encoded as JPEG.
    """

    max_bytes: int = 25 * 1024 * 1024
    max_width: int = 640
    max_height: int = 360
    formats: frozenset[str] = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif"})

    @property
    def box(self) -> tuple[int, int]:
        """``(max_width, max_height)``, pixels: the box the upload is prepared in, from the source."""
        return self.max_width, self.max_height


SearchMode = Literal["image", "vector"]
"""How a search is sent: the image itself, or a descriptor of it where the provider takes one."""


@dataclass(frozen=True, slots=True)
class SearchOptions:
    """Per-search options, the same for every provider (DESIGN §2)."""

    anilist_id: int | None = None
    """Search only this AniList ID."""
    cut_borders: bool = False
    """Trim black borders before matching."""
    anilist_info: bool = False
    """Ask for titles and AniList metadata with each hit."""
    mode: SearchMode = "image"
    """``"image"`` uploads the image; ``"vector"`` sends a provider that has the ``vector`` capability a
    descriptor of it instead (any borders are cut locally first), and uploads to the others."""


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """One search as a provider sees it: the prepared image and the search's options.

    Attributes:
        image: The image, already prepared and fitted to the provider's :class:`UploadLimits`.
        options: The options, the same for every provider.
    """

    image: PreparedImage
    options: SearchOptions = field(default_factory=SearchOptions)


@dataclass(frozen=True, slots=True)
class ProviderAnswer:
    """What a provider made of a successful search response."""

    hits: list[Hit]
    """Normalised hits, similarity descending."""
    frames_searched: int | None = None
    """Frames compared upstream, when reported."""
    quota: Quota | None = None
    """The search quota the answer reported, when it did."""


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a paginated upstream list."""

    items: list[T]
    total: int | None = None
    """Total items upstream, when reported."""
    has_more: bool | None = None
    """Whether another page exists, when reported."""
    page_size: int | None = None
    """Items per page the upstream used (it may cap the size asked for), else the size asked for; None
    when neither is known."""


@dataclass(frozen=True, slots=True)
class Credential:
    """Who the provider speaks as, for the ledger's scope. ``secret`` is hashed, never stored."""

    scope: QuotaScope = "guest"
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ProviderContext:
    """What the engine hands a provider when it builds one.

    Attributes:
        config: The provider's settings: its ``[<name>]`` TOML table overlaid by the
            ``ANISEARCH_<NAME>_*`` environment variables, keys lower-cased (``url``, ``key``, ``token``...).
        state_dir: A directory the provider may keep state in (a session cookie jar), created on demand.
        timeout: The request timeout in seconds (``ANISEARCH_TIMEOUT``).
    """

    config: Mapping[str, Any] = field(default_factory=dict)
    state_dir: Path | None = None
    timeout: float = 30.0


class Provider(Protocol):
    """A scene-search service, sans-IO: request builders and response parsers."""

    name: ClassVar[str]
    """Entry-point name, stamped on every Hit (``"tracemoe"``)."""
    capabilities: Capabilities
    limits: UploadLimits
    base_url: str
    """Where requests go (configurable through the provider's ``url`` setting)."""
    default_order: ClassVar[bool]
    """Whether the provider joins the default order when no ``providers=`` is given."""
    default_rank: ClassVar[int]
    """Its place in the default order, lowest first (trace.moe 100, whatanimeisthis.com 200)."""
    secret_headers: ClassVar[frozenset[str]]
    """Request headers carrying its credential, masked in every log record (optional; see
    :class:`~anisearch.provider.BaseProvider`)."""

    @classmethod
    def from_context(cls, context: ProviderContext) -> Self:
        """Build the provider from its settings.

        Raises:
            ConfigurationError: A setting is invalid (a URL that is not http(s), a bad number).
        """
        ...

    @property
    def credential(self) -> Credential:
        """Who the requests speak as (guest, API key, session), for the ledger scope."""
        ...

    def assumed_quotas(self) -> list[Quota]:
        """The documented limits to assume until the upstream reports its own (source ``ledger``)."""
        ...

    def search_request(self, query: SearchQuery) -> httpx.Request:
        """Build the search request. Raises ConfigurationError if the query needs a missing capability.

        Called before the search waits for a concurrency slot (again after a shared backoff, when the
        search asks once more), and again for each retry of a request that never left the machine: what
        depends on the moment of sending (a sign-in, a session cookie) belongs in :meth:`auth`. A
        :class:`ProviderError` raised before the slot (an image over the upload limit) reserves nothing:
        the router moves on to the next provider.
        """
        ...

    def parse_search(self, response: httpx.Response) -> ProviderAnswer:
        """Parse a search response, or raise the ProviderError subclass its status and body mean."""
        ...

    def quota_request(self) -> httpx.Request | None:
        """A free request that reports the caller's quota, or None when the upstream has none."""
        ...

    def parse_quota(self, response: httpx.Response) -> list[Quota]:
        """Parse the quota response (one Quota per window), or raise a ProviderError."""
        ...

    def observe(self, response: httpx.Response) -> list[Quota]:
        """Quota facts any response carries (rate-limit headers, a 402 body), success or not."""
        ...

    def auth(self) -> httpx.Auth | None:
        """An httpx auth flow to send requests with (a session that signs in again on 401), or None."""
        ...

    def cache_key(self, image: PreparedImage) -> str:
        """The image part of the result-cache key for this provider (its answer depends on nothing else
        of the image): the source digest by default, a perceptual descriptor where the upstream matches
        by one."""
        ...


class MetadataProvider(Protocol):
    """A service that describes anime by AniList ID (AniList's GraphQL API), sans-IO.

    The engine looks every AniList ID of a result up in as few requests as :attr:`max_batch` allows,
    through the ledger (:meth:`windows`), and fills the hits' missing fields from the answers.
    """

    name: ClassVar[str]
    """Entry-point name in the ``anisearch.metadata`` group (``"anilist"``)."""
    capabilities: Capabilities
    base_url: str
    max_batch: int
    """Most IDs one request may ask for."""
    ttl_seconds: float
    """How old an answer in the local metadata cache may be, seconds; the value at each lookup applies, also
    to answers stored under another."""

    @classmethod
    def from_context(cls, context: ProviderContext) -> Self:
        """Build the provider from its settings.

        Raises:
            ConfigurationError: An unknown setting, or one with a bad value.
        """
        ...

    @property
    def credential(self) -> Credential:
        """Who the requests speak as, for the ledger scope."""
        ...

    def windows(self) -> Sequence[Any]:
        """The upstream's rate and quota windows (``WindowSpec`` values; typed loosely here because the
        registry sits below the ledger)."""
        ...

    def lookup_request(self, anilist_ids: Sequence[int]) -> httpx.Request:
        """One request for 1 to :attr:`max_batch` AniList IDs.

        Raises:
            ConfigurationError: No ID, too many, or one that is not a positive integer.
        """
        ...

    def parse_lookup(self, response: httpx.Response) -> list[Anime]:
        """The anime the answer describes (IDs it does not know are absent; a :class:`PartialLookup` when
        part of it failed), or the error it means."""
        ...

    def auth(self) -> httpx.Auth | None:
        """An httpx auth flow to send requests with, or None."""
        ...

    def observe(self, response: httpx.Response) -> list[Quota]:
        """Quota facts any response carries (rate-limit headers, a 429), success or not."""
        ...


class PartialLookup(list["Anime"]):
    """What :meth:`MetadataProvider.parse_lookup` returns for an answer that says part of it failed
    (AniList: GraphQL ``errors`` beside ``data``): the anime it holds are good, but an ID it lacks is not
    known to be unknown, so it is asked again next time rather than remembered as unknown.

    Args:
        anime: The anime the answer describes.
        reason: What the upstream said went wrong (one line).
    """

    def __init__(self, anime: Iterable[Anime] = (), reason: str = "") -> None:
        super().__init__(anime)
        self.reason = reason


@runtime_checkable
class AccountProvider(Protocol):
    """A provider with account features (whatanimeisthis.com): rankings, recent searches, credits, keys."""

    name: ClassVar[str]

    def rankings_request(self, period: str, limit: int, include_adult: bool) -> httpx.Request: ...
    def parse_rankings(self, response: httpx.Response) -> list[RankingEntry]: ...
    def recent_searches_request(self, limit: int, offset: int) -> httpx.Request: ...
    def parse_recent_searches(self, response: httpx.Response) -> Page[RecentSearch]: ...
    def credits_request(self) -> httpx.Request: ...
    def parse_credits(self, response: httpx.Response) -> Credits: ...
    def api_keys_request(self, page: int, page_size: int) -> httpx.Request: ...
    def parse_api_keys(self, response: httpx.Response) -> Page[ApiKey]: ...
    def create_api_key_request(self, title: str) -> httpx.Request: ...
    def parse_created_api_key(self, response: httpx.Response) -> CreatedApiKey: ...
    def sign_in_request(self, email: str, password: str) -> httpx.Request: ...
    def parse_sign_in(self, response: httpx.Response) -> None: ...
    def sign_out_request(self) -> httpx.Request | None:
        """The sign-out request; None when no session is stored, so there is none to end and nothing is
        sent (``sign_out()`` then returns False)."""
        ...

    def parse_sign_out(self, response: httpx.Response) -> bool:
        """Whether the site ended a session (False: there was none to end, never signed in or already
        over); either way none is stored afterwards. Raises the :class:`~anisearch.ProviderError` of a
        site that failed to sign out."""
        ...


@cache
def _provider_entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=PROVIDER_GROUP)}


@cache
def _clashing_entry_points() -> dict[str, list[Any]]:
    """The provider names that more than one entry point registers (different targets): which one Python
    finds first depends on the order of ``sys.path``, so neither is taken."""
    found: dict[str, dict[str, Any]] = {}
    for ep in entry_points(group=PROVIDER_GROUP):
        found.setdefault(ep.name, {}).setdefault(ep.value, ep)
    return {name: list(targets.values()) for name, targets in found.items() if len(targets) > 1}


def provider_order(
    requested: Sequence[str] | None,
    configured: Sequence[str] | None,
    candidates: Iterable[tuple[str, bool, int]],
    has_url: Callable[[str], bool],
) -> list[str]:
    """The providers a search asks, in order, each once.

    Args:
        requested: The search's own ``providers``, first if given (None: not given).
        configured: ``Settings.providers`` (``ANISEARCH_PROVIDERS``), next.
        candidates: Else every installed provider as ``(name, default_order, default_rank)``: those in the
            default order, and those left out of it (the legacy whatanime.ga API) whose base URL is
            configured, by rank. Read only when neither list is given.
        has_url: Whether a provider's base URL is configured.

    Returns:
        Provider names, duplicates dropped.

    Raises:
        ConfigurationError: ``requested`` is empty: asking nobody is refused rather than read as "the
            default providers" (an allow-list filtered down to nothing must not spend their quota).
    """
    if requested is not None and not requested:
        raise ConfigurationError(
            "providers is empty: name at least one provider, or pass None for the configured order"
        )
    names = list(requested) if requested is not None else list(configured or ())
    if not names:
        ranked = sorted((rank, name) for name, default, rank in candidates if default or has_url(name))
        names = [name for _, name in ranked]
    return list(dict.fromkeys(names))


def available_providers() -> list[str]:
    """Names registered under the ``anisearch.providers`` entry-point group, sorted."""
    return sorted(_provider_entry_points())


_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_REQUIRED = (
    "capabilities",
    "limits",
    "default_order",
    "default_rank",
    "from_context",
    "credential",
    "assumed_quotas",
    "search_request",
    "parse_search",
    "quota_request",
    "parse_quota",
    "observe",
    "auth",
    "cache_key",
)
"""What a provider class must have, besides its ``name`` (see :class:`Provider`)."""


STUB_MARK = "__anisearch_stub__"
"""Set on ``BaseProvider``'s own ``search_request`` and ``parse_search``, which only raise: a provider that
inherits them defines no search."""


def _origin(entry: Any) -> str:
    dist = getattr(entry, "dist", None)
    where = (
        f"distribution {dist.name!r}"
        if dist is not None and getattr(dist, "name", None)
        else "an unknown distribution"
    )
    return f"entry point {entry.name!r} = {entry.value!r} (group {PROVIDER_GROUP}, from {where})"


def check_provider(cls: Any, entry: Any) -> type[Provider]:
    """``cls`` if it is a provider class conforming to :class:`Provider`, registered under its own name.

    Args:
        cls: What the entry point loaded.
        entry: The entry point (``name``, ``value``, ``dist``), for the message.

    Raises:
        ConfigurationError: It is not a class, its ``name`` is not a lower-case name (letters, digits,
            dashes) equal to the entry point's, it lacks members of the protocol (listed), or it derives
            from ``BaseProvider`` without defining ``search_request`` and ``parse_search``. The message
            names the entry point and the distribution that registered it.
    """
    if not isinstance(cls, type):
        raise ConfigurationError(f"{_origin(entry)} loads {type(cls).__name__} {cls!r}, not a provider class")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"{_origin(entry)}: {cls.__qualname__}.name must be a lower-case name (letters, digits, dashes), "
            f"got {name!r}"
        )
    if name != entry.name:
        raise ConfigurationError(f"{_origin(entry)}: {cls.__qualname__}.name is {name!r}, not {entry.name!r}")
    missing = [member for member in _REQUIRED if not hasattr(cls, member)]
    if missing:
        raise ConfigurationError(
            f"{_origin(entry)}: {cls.__qualname__} is not a provider; it lacks {', '.join(missing)} "
            "(derive it from anisearch.provider.BaseProvider)"
        )
    declared = getattr(cls, "windows", None)
    if declared is not None and not callable(declared):
        raise ConfigurationError(
            f"{_origin(entry)}: {cls.__qualname__}.windows must be a method returning WindowSpec values, "
            f"not a {type(declared).__name__}"
        )
    stubs = [
        member
        for member in ("search_request", "parse_search")
        if getattr(getattr(cls, member, None), STUB_MARK, False)
    ]
    if stubs:  # BaseProvider's own raise NotImplementedError: found only after a search was spent
        raise ConfigurationError(
            f"{_origin(entry)}: {cls.__qualname__} must define {' and '.join(stubs)} (see "
            "docs/providers/writing.md)"
        )
    provider: type[Provider] = cls
    return provider


def load_provider(name: str) -> type[Provider]:
    """The provider class registered as ``name``, checked to conform to :class:`Provider`.

    Raises:
        UnknownProviderError: No installed package registers ``name``; the message lists the known names.
        ConfigurationError: The entry point exists but cannot be imported (any exception its import
            raises), what it loads is not a conforming provider class, or another installed package
            registers the same name; the message names the entry points and their distributions.
    """
    eps = _provider_entry_points()
    if name not in eps:
        note = (
            "a metadata provider: it fills titles, it does not search scenes"
            if name in _metadata_entry_points()
            else ""
        )
        raise UnknownProviderError(name, list(eps), note=note)
    clashing = _clashing_entry_points().get(name)
    if clashing:
        raise ConfigurationError(
            f"the provider name {name!r} is registered more than once: "
            + "; ".join(_origin(ep) for ep in clashing)
            + ". Uninstall one of them: neither is used (one would receive the other's credentials)"
        )
    try:
        loaded = eps[name].load()
    except Exception as exc:  # an import-time error of somebody's package: a typed error, never a crash
        raise ConfigurationError(
            f"{_origin(eps[name])} cannot be loaded: {type(exc).__name__}: {exc}"
        ) from exc
    provider = check_provider(loaded, eps[name])
    add_secret_headers(getattr(provider, "secret_headers", ()))
    return provider


def load_emulator(name: str) -> Any:
    """The emulator app factory registered as ``name`` (group ``anisearch.emulators``).

    Raises:
        UnknownProviderError: No emulator is registered under ``name``.
        ConfigurationError: It cannot be imported (install the ``emulator`` extra).
    """
    eps = {ep.name: ep for ep in entry_points(group=EMULATOR_GROUP)}
    if name not in eps:
        raise UnknownProviderError(name, list(eps), kind="emulator")
    try:
        return eps[name].load()
    except ImportError as exc:
        raise ConfigurationError(
            f"the {name} emulator needs the 'emulator' extra: "
            f"pip install 'anisearch-gateway[emulator]' ({exc})"
        ) from exc


@cache
def _metadata_entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=METADATA_GROUP)}


def available_metadata_providers() -> list[str]:
    """Names registered under the ``anisearch.metadata`` entry-point group, sorted."""
    return sorted(_metadata_entry_points())


def check_registered(name: str) -> str:
    """``name`` unchanged when a provider or a metadata provider is registered under it.

    Raises:
        UnknownProviderError: Neither is; the message lists both kinds.
    """
    if name not in _provider_entry_points() and name not in _metadata_entry_points():
        raise UnknownProviderError(name, [*_provider_entry_points(), *_metadata_entry_points()])
    return name


def load_metadata_provider(name: str) -> type[MetadataProvider]:
    """The metadata provider class registered as ``name`` (group ``anisearch.metadata``).

    Raises:
        UnknownProviderError: No installed package registers ``name``; the message lists the known names.
        ConfigurationError: The entry point exists but cannot be imported.
    """
    eps = _metadata_entry_points()
    if name not in eps:
        raise UnknownProviderError(name, list(eps))
    try:
        cls: type[MetadataProvider] = eps[name].load()
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"metadata provider {name!r} is registered but cannot be loaded: {exc}"
        ) from exc
    return cls


def available_emulators() -> list[str]:
    """Names registered under the ``anisearch.emulators`` entry-point group, sorted."""
    return sorted({ep.name for ep in entry_points(group=EMULATOR_GROUP)})
