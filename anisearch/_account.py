"""Account features (whatanimeisthis.com): rankings, recent searches, credits, API keys, sign-in.

They are served by whichever configured provider implements :class:`~anisearch._provider.AccountProvider`;
:class:`AccountFeatures` is the part of ``AsyncClient`` that finds it and asks it.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from anisearch._arguments import check_flags, check_secret, check_text, whole_number
from anisearch._exceptions import ConfigurationError
from anisearch._models import PagedList
from anisearch._provider import AccountProvider, Page, Provider, available_providers, load_provider

if TYPE_CHECKING:
    import httpx

    from anisearch._config import Settings
    from anisearch._models import ApiKey, CreatedApiKey, Credits, RankingEntry, RecentSearch

__all__ = ["AccountFeatures", "AsyncApiKeys"]

_ACCOUNT_MEMBERS = tuple(
    name for name, member in vars(AccountProvider).items() if callable(member) and not name.startswith("_")
)
"""Every method of :class:`AccountProvider`: a provider class without one of them has no account features."""

T = TypeVar("T")

logger = logging.getLogger("anisearch")


class AccountFeatures:
    """The account half of ``AsyncClient`` (it supplies the three abstract members and ``settings``)."""

    settings: Settings

    @abstractmethod
    def _provider(self, name: str) -> Provider: ...

    @abstractmethod
    def _order(self, providers: Sequence[str] | None) -> list[str]: ...

    @abstractmethod
    async def _call(self, provider: Any, request: httpx.Request, parse: Callable[[httpx.Response], T]) -> T:
        """Send, record the quota facts the answer carries, and parse."""

    def account_provider(self) -> str:
        """The name of the provider that serves the account features (rankings, credits, API keys).

        Raises:
            ConfigurationError: No installed provider has account features.
        """
        name: str = self._account_provider().name
        return name

    def _usable(self, name: str) -> Any:
        """Provider ``name``, or None when it cannot be made and nothing of it was configured (a provider
        without a server of its own, a broken package nobody set up).

        Raises:
            ConfigurationError: It cannot be made from the settings it was given (a misspelt key of its
                table, a bad URL): those are said, never passed over.
        """
        try:
            return self._provider(name)
        except ConfigurationError:
            if self.settings.provider_config(name):
                raise
            return None

    def _account_provider(self) -> Any:
        for name in [*self._order(None), *available_providers()]:
            try:
                cls = load_provider(name)
            except ConfigurationError:  # a broken package: its own search says so
                continue
            if not all(callable(getattr(cls, member, None)) for member in _ACCOUNT_MEMBERS):
                continue  # no account features: its settings are not this command's business
            instance = self._usable(name)
            if isinstance(instance, AccountProvider):
                return instance
        raise ConfigurationError("no installed provider has account features (rankings, credits, API keys)")

    async def rankings(
        self, period: str = "all", limit: int = 50, include_adult: bool = False
    ) -> list[RankingEntry]:
        """The most-searched anime of ``period`` (``daily``, ``weekly``, ``monthly``, ``yearly``, ``all``).

        Raises:
            ConfigurationError: An unknown period, a limit that is not a whole number of at least 1, or an
                ``include_adult`` that is not a ``bool``.
            ProviderError: The upstream failed.
        """
        check_text("period", period, what="a period name (a str such as 'weekly')")
        limit = whole_number("limit", limit, minimum=1)
        check_flags(include_adult=include_adult)
        include_adult = bool(include_adult)  # numpy's bool too
        provider = self._account_provider()
        request = provider.rankings_request(period, limit, include_adult)
        entries: list[RankingEntry] = await self._call(provider, request, provider.parse_rankings)
        return entries

    async def recent_searches(self, limit: int = 20, offset: int = 0) -> list[RecentSearch]:
        """One page of recently confirmed public searches (newest first).

        Raises:
            ConfigurationError: A limit that is not a whole number of at least 1, or an offset that is not
                one of at least 0.
            ProviderError: The upstream failed.
        """
        page = await self._recent_page(limit, offset)
        return page.items

    async def _recent_page(self, limit: int, offset: int) -> Page[RecentSearch]:
        limit = whole_number("limit", limit, minimum=1)
        offset = whole_number("offset", offset, minimum=0)
        provider = self._account_provider()
        request = provider.recent_searches_request(limit, offset)
        page: Page[RecentSearch] = await self._call(provider, request, provider.parse_recent_searches)
        return page

    async def iter_recent_searches(
        self, page_size: int = 20, max_items: int | None = None
    ) -> AsyncIterator[RecentSearch]:
        """Every recent public search, page by page, each once; stops on an explicit "no more", the
        reported total, ``max_items``, a page shorter than the site's page size when it says neither, or a
        second page in a row of searches already yielded (a site that ignores ``offset`` would otherwise be
        asked forever). Searches that new ones pushed down from the page before are not yielded again.

        Raises:
            ConfigurationError: ``page_size`` is not a whole number of at least 1, or ``max_items`` not one
                of at least 0 nor None (when iteration starts).
            ProviderError: The upstream failed mid-way.
        """
        pager: RecentPager[RecentSearch] = RecentPager(page_size, max_items)
        while pager.wanted():
            for item in pager.take(await self._recent_page(page_size, pager.offset)):
                yield item

    async def credits(self) -> Credits:
        """The signed-in account's search credits (also recorded in the ledger).

        Raises:
            AuthenticationError: Not signed in.
        """
        provider = self._account_provider()
        result: Credits = await self._call(provider, provider.credits_request(), provider.parse_credits)
        return result

    async def sign_in(self, email: str, password: str) -> None:
        """Sign in (whatanimeisthis.com); the session cookie is kept in the state dir (mode 0600).

        The password is used for this request only and never stored.

        Raises:
            AuthenticationError: Wrong email or password, or the site refused the Origin.
            SignInRateLimitedError: Too many sign-ins; ``retry_after`` says when to sign in again (seconds).
            ConfigurationError: ``email`` or ``password`` is not a ``str``.
        """
        check_text("email", email, what="an email address (a str)")
        check_secret("password", password)
        provider = self._account_provider()
        await self._call(provider, provider.sign_in_request(email, password), provider.parse_sign_in)

    async def sign_out(self) -> bool:
        """Sign out and delete the stored session.

        Returns:
            True when the site ended a session; False when there was none to end (never signed in, or it
            had already ended). Either way no session is stored afterwards.

        Raises:
            ProviderError: The site failed to sign out: the session is still signed in there and still
                stored (the message says where).
        """
        provider = self._account_provider()
        request = provider.sign_out_request()
        if request is None:  # no session stored: none to end, and the site is not asked
            return False
        ended: bool | None = await self._call(provider, request, provider.parse_sign_out)
        return ended is not False  # a provider that says nothing (None) signed a session out


class AsyncApiKeys:
    """API keys of the signed-in account (whatanimeisthis.com ``/api/apikeys``)."""

    def __init__(self, find: Callable[[], Any], call: Callable[..., Awaitable[Any]]) -> None:
        self._find = find
        self._call = call

    async def list(self, page: int = 1, page_size: int = 20) -> PagedList[ApiKey]:
        """One page of the account's keys (masked), 1-based ``page``: a ``list`` that also says how many keys
        the account has (``total``, ``pages``) when the upstream reports it.

        Raises:
            AuthenticationError: Not signed in (``anisearch login``).
            ConfigurationError: ``page`` or ``page_size`` is not a whole number of at least 1, or no
                configured provider has API keys.
        """
        page = whole_number("page", page, minimum=1)
        page_size = whole_number("page_size", page_size, minimum=1)
        provider = self._find()
        result: Page[ApiKey] = await self._call(
            provider, provider.api_keys_request(page, page_size), provider.parse_api_keys
        )
        return PagedList(
            result.items,
            total=result.total,
            page=page,
            page_size=result.page_size or page_size,  # a server may cap the size asked for
            has_more=result.has_more,
        )

    async def create(self, title: str) -> CreatedApiKey:
        """Create a key; the plaintext is in ``.key`` (a SecretStr) this one time only.

        Raises:
            AuthenticationError: Not signed in.
            ConfigurationError: A title that is not a ``str`` or is empty, or no provider with API keys.
        """
        check_text("title", title)
        if not title.strip():
            raise ConfigurationError("an API key needs a non-empty title")
        provider = self._find()
        created: CreatedApiKey = await self._call(
            provider, provider.create_api_key_request(title), provider.parse_created_api_key
        )
        return created


class RecentPager(Generic[T]):
    """The paging of ``iter_recent_searches``, one for the async and the sync iterator: which offset to
    ask next, and which of a page's items to yield.

    It stops on an explicit "no more", the reported total, or ``max_items`` yielded; on a page shorter
    than the site's page size only when the site says neither (a site may cap the size asked for, and
    says so). An item already yielded is not yielded again: on a live feed, searches that arrived between
    two requests push the items of one page down into the next. A page holding only such items is
    skipped; a second one in a row is a site that ignores the offset, which would otherwise be asked
    forever: paging stops there (logged as a warning).

    Args:
        page_size: Items asked per request, at least 1.
        max_items: Stop after yielding this many (at least 0); None for all.

    Raises:
        ConfigurationError: ``page_size`` or ``max_items`` is not a whole number, or below its minimum.
    """

    def __init__(self, page_size: int, max_items: int | None) -> None:
        self.page_size = whole_number("page_size", page_size, minimum=1)
        self.max_items = None if max_items is None else whole_number("max_items", max_items, minimum=0)
        self.offset = 0
        """Where the next request asks: every item received so far, repeated pages included."""
        self.yielded = 0
        """Items yielded so far (what ``max_items`` counts)."""
        self._seen: dict[object, None] = {}
        """The items of the last pages yielded (:func:`_identity`), oldest first (a live feed moves them a
        page at most)."""
        self._repeats = 0
        self._done = False

    def wanted(self) -> bool:
        """Whether to ask for another page (at :attr:`offset`)."""
        return not self._done and (self.max_items is None or self.yielded < self.max_items)

    def take(self, page: Page[T]) -> list[T]:
        """The items of ``page`` (asked at :attr:`offset`) to yield; moves on to the next offset."""
        asked_at = self.offset
        self.offset += len(page.items)
        fresh = [item for item in page.items if _identity(item) not in self._seen]
        if page.items and not fresh:
            self._repeats += 1
            if self._repeats > 1:
                logger.warning(
                    "the items at offsets %d and %d were all yielded before: stopping there (the site does "
                    "not seem to page by offset)",
                    asked_at - len(page.items),
                    asked_at,
                )
                self._done = True
            else:
                logger.debug("the items at offset %d were all yielded before: skipped", asked_at)
                self._done = _last_page(page, self.page_size, self.offset)
            return []
        self._repeats = 0
        items = fresh if self.max_items is None else fresh[: self.max_items - self.yielded]
        self.yielded += len(items)
        self._seen.update(dict.fromkeys(map(_identity, items)))
        for stale in list(self._seen)[: max(len(self._seen) - 4 * max(len(page.items), self.page_size), 0)]:
            del self._seen[stale]
        self._done = _last_page(page, self.page_size, self.offset)
        return items


def _identity(item: object) -> object:
    """What tells an item of a list apart: its ``id`` when the upstream gave one (the rest, a time said
    relative to now among it, may change between two requests), else the whole item."""
    given = getattr(item, "id", None)
    return item if given is None else ("id", given)


def _last_page(page: Page[Any], page_size: int, seen: int) -> bool:
    """A paginator stops on an empty page, an explicit "no more", or once it has seen the reported total;
    on a page shorter than the page size the site used (else ``page_size``) only when the site says
    neither whether there are more nor how many."""
    if not page.items or page.has_more is False or (page.total is not None and seen >= page.total):
        return True
    if page.has_more or page.total is not None:
        return False
    return len(page.items) < (page.page_size or page_size)
