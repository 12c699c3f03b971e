"""The common schema: every provider's answer is normalised into these frozen pydantic models.

Units: times are seconds (float) within the episode, similarity is 0..1, datetimes are timezone-aware
(UTC unless an upstream said otherwise). Every model keeps the upstream item it was built from in
``raw`` (left out of ``repr`` and, in the CLI, out of JSON unless ``--raw``). Models are frozen (a field is
never reassigned) and hashable: equal hits (or results, quotas) collapse in a set. The lists and dicts they
hold are plain ones: changing one inside a model kept in a set changes its hash.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, SecretStr
from pydantic_core import CoreSchema

__all__ = [
    "DEFAULT_MIN_SIMILARITY",
    "Anime",
    "ApiKey",
    "Attempt",
    "CreatedApiKey",
    "Credits",
    "Episode",
    "Hit",
    "PagedList",
    "ProviderInfo",
    "Quota",
    "QuotaScope",
    "QuotaSource",
    "QuotaWindow",
    "RankingEntry",
    "RecentSearch",
    "SearchResult",
    "Title",
    "coerce_episode",
]

Episode = int | float | str | list[int | float | str] | None
"""An episode as the upstream gave it: ``5``, ``16.5``, ``"5|17"`` (alternatives), ``[1, 2]`` (joined),
or None."""


def _episode_part(value: Any) -> int | float | str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return None


def coerce_episode(value: Any) -> Episode:
    """An upstream ``episode`` kept as it came when it is a valid :data:`Episode`, else None.

    ``5``, ``16.5``, ``"5|17"`` and ``[1, 2]`` pass through; an object, a boolean, a non-finite number or a
    list holding any of those becomes None (the hit's ``raw`` still has it).
    """
    if isinstance(value, list):
        parts = [_episode_part(item) for item in value]
        kept = [part for part in parts if part is not None]
        return kept if kept and len(kept) == len(value) else None
    return _episode_part(value)


DEFAULT_MIN_SIMILARITY = 0.9
"""The similarity (0..1) a hit needs to count as a match: :attr:`SearchResult.match` and the CLI's exit code.

Source: trace.moe's API documentation (https://soruly.github.io/trace.moe-api/) warns that results under
90 % similarity are usually wrong; the legacy whatanime.ga documentation put the line at 85 %. Pass
``min_similarity`` to :meth:`SearchResult.match_at`, or ``--min-similarity`` to the CLI, to choose another."""

QuotaWindow = str
"""A window's name as its provider declares it: ``rolling-24h``, ``day``, ``month``, ``minute``, ``hour``, or
any other a provider defines (``WindowSpec``)."""
QuotaScope = Literal["guest", "api-key", "session"]
QuotaSource = Literal["upstream", "headers", "ledger", "default"]
AttemptOutcome = Literal["ok", "skipped", "failed", "cached"]

_TITLE_ORDER = ("english", "romaji", "native", "chinese")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _hashable(value: Any) -> Any:
    """``value`` with its dicts, lists, tuples and sets turned into frozensets and tuples, recursively: values
    that compare equal give equal results (a dict's key order aside), which hash alike."""
    if isinstance(value, dict):
        return frozenset((key, _hashable(item)) for key, item in value.items())
    if isinstance(value, list | tuple):
        return tuple(_hashable(item) for item in value)
    if isinstance(value, set | frozenset):
        return frozenset(_hashable(item) for item in value)
    return value


class _Model(BaseModel):
    # Each model's validator is built when first used: a search never uses the account models, and
    # building them at import cost every command-line search about a hundredth of its instructions.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants", defer_build=True)

    def __hash__(self) -> int:
        """Models that compare equal hash alike, list and dict fields (``hits``, ``synonyms``, ``raw``)
        included: a frozen model goes into a set or is a dict key (pydantic's own hash refuses a list)."""
        return hash((type(self), _hashable(self.__dict__)))


class Title(_Model):
    """An anime's titles as the upstream gave them (AniList ``title{romaji, english, native}``)."""

    romaji: str | None = None
    """Romanised Japanese title (AniList ``title.romaji``)."""
    english: str | None = None
    """Official English title, when there is one (AniList ``title.english``)."""
    native: str | None = None
    """Title in its original script (AniList ``title.native``)."""
    chinese: str | None = None
    """Chinese title (trace.moe ``title.chinese``, legacy ``title_chinese``), when known."""

    def preferred(self, order: Sequence[str] = _TITLE_ORDER) -> str | None:
        """The first non-empty title in ``order`` (field names), or None when all are empty.

        Raises:
            ValueError: An entry of ``order`` is not a title field.
        """
        for name in order:
            if name not in _TITLE_ORDER:
                raise ValueError(f"unknown title field {name!r}; use one of {', '.join(_TITLE_ORDER)}")
            value = getattr(self, name)
            if value:
                return str(value)
        return None


class Hit(_Model):
    """One candidate scene: which anime, which episode, which seconds, how similar."""

    provider: str
    """Entry-point name of the provider that found it (``"tracemoe"``)."""
    anilist_id: int | None = None
    """AniList ID of the anime (trace.moe ``anilist`` or ``anilist.id``; legacy ``anilist_id``)."""
    mal_id: int | None = None
    """MyAnimeList ID (AniList ``idMal``; legacy ``mal_id``), when known."""
    title: Title | None = None
    """Titles, when the provider sent them (trace.moe with ``anilistInfo``, legacy, whatanimeisthis)."""
    synonyms: list[str] = Field(default_factory=list)
    """Alternative titles (AniList ``synonyms``)."""
    is_adult: bool | None = None
    """Whether AniList marks the anime adult-only (``isAdult``), when known."""
    episode: Episode = None
    """Episode as upstream: ``5``, ``16.5``, ``"5|17"``, ``[1, 2]`` or None (trace.moe ``episode``)."""
    episode_start: int | None = None
    """First episode the matched file covers (trace.moe ``episode_start``, 2026-08+)."""
    episode_end: int | None = None
    """Last episode the matched file covers (trace.moe ``episode_end``, 2026-08+)."""
    start_seconds: float | None = None
    """Start of the matched scene, seconds into the episode (upstream ``from``)."""
    end_seconds: float | None = None
    """End of the matched scene, seconds into the episode (upstream ``to``)."""
    at_seconds: float | None = None
    """Best-matching frame, seconds into the episode (upstream ``at``), when sent."""
    episode_duration_seconds: float | None = None
    """Length of the whole episode file in seconds (trace.moe ``duration``), when sent."""
    similarity: float = Field(ge=0.0, le=1.0)
    """How close the frame is, 0..1 (below about 0.9 is usually a wrong match)."""
    filename: str | None = None
    """The upstream's file name for the matched video, when sent."""
    video_url: str | None = None
    """Preview clip URL; expires (see ``preview_expires_at``)."""
    image_url: str | None = None
    """Preview frame URL; expires (see ``preview_expires_at``)."""
    preview_expires_at: datetime | None = None
    """Latest time the preview URLs are known to work, when the provider documents it."""
    format: str | None = None
    """The anime's format: ``TV``, ``TV_SHORT``, ``MOVIE``, ``SPECIAL``, ``OVA``, ``ONA``, ``MUSIC`` (AniList
    ``format``), when known."""
    episode_count: int | None = None
    """How many episodes the anime has (AniList ``episodes``), when known."""
    episode_minutes: int | None = None
    """Usual length of one episode, minutes (AniList ``duration``), when known."""
    season: str | None = None
    """Season it began airing: ``WINTER``, ``SPRING``, ``SUMMER``, ``FALL`` (AniList ``season``)."""
    season_year: int | None = None
    """Year of that season (AniList ``seasonYear``)."""
    cover_image_url: str | None = None
    """The anime's cover image (AniList ``coverImage.large``, else ``medium``)."""
    site_url: str | None = None
    """The anime's AniList page (AniList ``siteUrl``)."""
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)
    """The upstream item this hit was built from."""


class Anime(_Model):
    """What a metadata provider knows of one anime (AniList ``Media``), to fill :class:`Hit` fields.

    Field names are the :class:`Hit` fields they fill.
    """

    anilist_id: int
    """AniList ID (``id``)."""
    mal_id: int | None = None
    """MyAnimeList ID (``idMal``)."""
    title: Title | None = None
    """``title{romaji, english, native}``."""
    synonyms: list[str] = Field(default_factory=list)
    """Alternative titles (``synonyms``)."""
    is_adult: bool | None = None
    """Adult-only (``isAdult``)."""
    episode_count: int | None = None
    """Episodes (``episodes``)."""
    episode_minutes: int | None = None
    """Usual episode length, minutes (``duration``)."""
    format: str | None = None
    """``TV``, ``MOVIE``, ``OVA`` ... (``format``)."""
    season: str | None = None
    """``WINTER``, ``SPRING``, ``SUMMER``, ``FALL`` (``season``)."""
    season_year: int | None = None
    """Year of ``season`` (``seasonYear``)."""
    cover_image_url: str | None = None
    """Cover image URL (``coverImage.large``, else ``medium``)."""
    site_url: str | None = None
    """AniList page (``siteUrl``)."""
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)
    """The upstream ``Media`` object."""


class Attempt(_Model):
    """What happened with one provider during one search."""

    provider: str
    outcome: AttemptOutcome
    """``ok`` (it answered), ``skipped`` (not asked), ``failed`` (asked, it failed), ``cached``."""
    reason: str | None = None
    """Why it was skipped or failed, one line ("quota exhausted until 2026-11-22T09:14Z")."""
    error: str | None = None
    """Exception class name of the failure (``"QuotaExhaustedError"``), or None."""
    status_code: int | None = None
    """HTTP status of the last answer, or None when none came."""
    elapsed_seconds: float = 0.0
    """Time spent on this provider, seconds (0 for a skip)."""
    scope: QuotaScope | None = None
    """Who the provider answered as (``guest``, ``api-key``, ``session``), when it answered: a session
    that died mid-way shows here as ``guest`` (the answer's own quota says whose it was)."""


class Quota(_Model):
    """What one provider allows one caller in one window, and how much of it is used."""

    provider: str
    scope: QuotaScope = "guest"
    """Whose allowance: ``guest`` (by address), ``api-key`` or ``session``."""
    limit: int | None = None
    """Searches (or requests, for ``minute`` windows) allowed per window, when known."""
    used: int | None = None
    """Used in the current window, when known."""
    remaining: int | None = None
    """Left in the current window, when known."""
    window: QuotaWindow = "rolling-24h"
    """The window's name: ``rolling-24h``, calendar ``day``/``month``, a ``minute``/``hour`` rate window, or
    another window a provider declares."""
    resets_at: datetime | None = None
    """When a spent window admits again, else when it next frees a unit (aware datetime), when known."""
    concurrency: int | None = None
    """Searches allowed in flight at once (trace.moe ``/me`` ``concurrency``)."""
    priority: int | None = None
    """Queue priority, 0 lowest (trace.moe ``/me`` ``priority``)."""
    cooldown_until: datetime | None = None
    """The provider is not asked before this time (after a 429 or a spent quota)."""
    source: QuotaSource = "upstream"
    """``upstream`` (a body said so), ``headers`` (rate-limit headers), ``ledger`` (an estimate counted
    locally since the upstream last said) or ``default`` (the provider's documented limit, nothing counted
    yet)."""
    observed_at: datetime = Field(default_factory=_utcnow)
    """When the upstream last confirmed these figures (now, for an estimate or a default)."""
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)


class SearchResult(_Model):
    """The answer to one search: hits, who answered, and what every provider attempt did."""

    hits: list[Hit] = Field(default_factory=list)
    """Candidates, similarity descending."""
    provider: str | None = None
    """Who answered (``"fanout"`` results name the first that answered), or None when nobody did."""
    frames_searched: int | None = None
    """Frames the upstream compared (trace.moe ``frameCount``; legacy ``RawDocsCount``)."""
    cached: bool = False
    """True when no provider was sent a request for this search: its answer came from the local result
    cache (or an identical search in flight) and cost no quota. False once any provider was asked, even
    when the answer kept is one from the cache (a weak cached answer asks the next provider)."""
    attempts: list[Attempt] = Field(default_factory=list)
    """Every provider considered, in order, with what happened."""
    quota: Quota | None = None
    """The quota the answer reported (trace.moe body ``quota``/``quotaUsed``), when it did."""
    adult_hits_dropped: int = 0
    """Hits left out because their anime is adult-only (``include_adult=False``, CLI ``--no-adult``)."""

    @property
    def best(self) -> Hit | None:
        """The most similar hit, or None when there is none (however weak it is; see :attr:`match`)."""
        return self.hits[0] if self.hits else None

    @property
    def match(self) -> Hit | None:
        """The most similar hit when it reaches :data:`DEFAULT_MIN_SIMILARITY` (0.9), else None.

        A search always returns candidates, even for a frame no provider has indexed; only a hit at or above
        the threshold is an answer.
        """
        return self.match_at(DEFAULT_MIN_SIMILARITY)

    def match_at(self, min_similarity: float) -> Hit | None:
        """The most similar hit when its similarity is at least ``min_similarity`` (0..1), else None.

        Raises:
            ValueError: ``min_similarity`` is outside 0..1.
        """
        if not 0.0 <= min_similarity <= 1.0:
            raise ValueError(f"min_similarity must be within 0..1, got {min_similarity}")
        best = max(self.hits, key=lambda hit: hit.similarity, default=None)
        return best if best is not None and best.similarity >= min_similarity else None


class ProviderInfo(_Model):
    """A registered provider, as ``Client.providers()`` lists it."""

    name: str
    """Entry-point name (``"tracemoe"``)."""
    base_url: str
    """Where it sends requests (configurable; see the ``ANISEARCH_*_URL`` settings)."""
    enabled: bool
    """Whether it is in the configured provider order."""
    authenticated: bool
    """Whether an API key, token or session is configured for it."""
    capabilities: list[str] = Field(default_factory=list)
    """What it can do: ``upload``, ``url``, ``anilist_filter``, ``rankings``, ..."""


class RankingEntry(_Model):
    """One anime in whatanimeisthis.com's most-searched list (``GET /api/anime/rankings``)."""

    rank: int
    """1-based position."""
    anilist_id: int | None = None
    title: Title | None = None
    searches: int | None = None
    """How many searches found it in the period (upstream ``count``)."""
    is_adult: bool | None = None
    cover_image_url: str | None = None
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)


class RecentSearch(_Model):
    """A recently confirmed public search (whatanimeisthis.com ``GET /api/anime/recent-searches``)."""

    id: str | None = None
    searched_at: datetime | None = None
    anilist_id: int | None = None
    title: Title | None = None
    episode: Episode = None
    at_seconds: float | None = None
    """Matched time in the episode, seconds."""
    similarity: float | None = Field(default=None, ge=0.0, le=1.0)
    image_url: str | None = None
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)


class Credits(_Model):
    """The signed-in user's search credits (whatanimeisthis.com ``GET /api/user/anime-credits``)."""

    remaining: int
    """Searches the user can still run now (free + paid)."""
    free_remaining: int | None = None
    """Today's free credits left (10 a day, expiring at midnight)."""
    free_daily: int | None = None
    """Free credits granted per day."""
    paid: int | None = None
    """Purchased credits left."""
    resets_at: datetime | None = None
    """When today's free credits are renewed, when the upstream said."""
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)


class ApiKey(_Model):
    """An API key as listed (``GET /api/apikeys``); the key itself is shown masked, never in full."""

    id: str
    title: str | None = None
    masked_key: str | None = None
    """The key as the upstream shows it in lists (for example ``sk-…abcd``), when it does."""
    status: str | None = None
    created_at: datetime | None = None
    last_used_at: datetime | None = None
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)


class CreatedApiKey(ApiKey):
    """A newly created API key: the one time the plaintext ``key`` is available (``POST /api/apikeys``)."""

    key: SecretStr
    """The plaintext key; ``key.get_secret_value()`` reveals it. Never logged or cached."""


T = TypeVar("T")


class PagedList(list[T]):
    r"""One page of an upstream list: a plain ``list`` of the page's items, plus what the upstream said
    about the whole (``client.api_keys.list()``).

    It iterates, indexes, slices, ``len()``\ s and compares as the list of its items, so code that takes a
    list keeps working.

    Attributes:
        total: Items upstream across every page, when the upstream reported it (``total``), else None.
        page: This page's number, from 1.
        page_size: Items per page: what the upstream used when it said (it may cap the size asked for),
            else the size asked for.
        has_more: Whether a later page holds more items: as reported, else worked out from ``total`` or a
            short page; None when nothing says.
    """

    total: int | None
    page: int
    page_size: int
    has_more: bool | None

    def __init__(
        self,
        items: Iterable[T] = (),
        *,
        total: int | None = None,
        page: int = 1,
        page_size: int | None = None,
        has_more: bool | None = None,
    ) -> None:
        super().__init__(items)
        self.total = total
        self.page = page
        self.page_size = page_size if page_size is not None else max(len(self), 1)
        self.has_more = has_more

    @property
    def pages(self) -> int | None:
        """How many pages of ``page_size`` the ``total`` fills (at least 1), or None without a total."""
        if self.total is None:
            return None
        return max(math.ceil(self.total / self.page_size), 1)

    def __repr__(self) -> str:
        return (
            f"PagedList({list.__repr__(self)}, total={self.total!r}, page={self.page!r}, "
            f"page_size={self.page_size!r}, has_more={self.has_more!r})"
        )

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        """As a pydantic field (``keys: PagedList[ApiKey]``): validated as a list of its items, serialised as
        that list. A ``PagedList`` keeps what the upstream said of the whole; a plain list gets nothing."""
        from types import GenericAlias

        from pydantic_core import core_schema

        (item,) = get_args(source) or (Any,)

        def keep_paging(value: Any, validate: core_schema.ValidatorFunctionWrapHandler) -> PagedList[Any]:
            items = validate(value)
            if not isinstance(value, PagedList):
                return cls(items)
            return cls(
                items, total=value.total, page=value.page, page_size=value.page_size, has_more=value.has_more
            )

        return core_schema.no_info_wrap_validator_function(
            keep_paging, handler.generate_schema(GenericAlias(list, (item,)))
        )


def fresh_previews(result: SearchResult, now: datetime) -> SearchResult:
    """``result`` without the preview URLs that have expired."""
    hits = [
        hit
        if hit.preview_expires_at is None or hit.preview_expires_at > now
        else hit.model_copy(update={"video_url": None, "image_url": None, "preview_expires_at": None})
        for hit in result.hits
    ]
    return result.model_copy(update={"hits": hits})
