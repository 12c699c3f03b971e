"""The sync facade: ``Client`` runs an :class:`AsyncClient` on a private event-loop thread.

It uses an anyio blocking portal, as Starlette's TestClient does, so the sync API works in scripts,
inside Jupyter and inside async applications alike. Every method is the engine's, called through the
portal: there is one implementation of each behaviour.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack
from functools import partial
from typing import IO, TYPE_CHECKING, Any, TypeVar

import anyio.from_thread
import httpx

from anisearch._account import _last_page
from anisearch._client import AsyncClient
from anisearch._config import Settings
from anisearch._models import (
    ApiKey,
    CreatedApiKey,
    Credits,
    ProviderInfo,
    Quota,
    RankingEntry,
    RecentSearch,
    SearchResult,
)
from anisearch._router import AttemptCallback, Strategy, WaitCallback

if TYPE_CHECKING:
    from datetime import datetime
    from types import TracebackType

    from PIL import Image

__all__ = ["ApiKeys", "Client"]

T = TypeVar("T")


class ApiKeys:
    """Sync view of :class:`AsyncApiKeys`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self, page: int = 1, page_size: int = 20) -> list[ApiKey]:
        """See :meth:`AsyncApiKeys.list`."""
        return self._client._run(self._client._async.api_keys.list, page, page_size)

    def create(self, title: str) -> CreatedApiKey:
        """See :meth:`AsyncApiKeys.create`."""
        return self._client._run(self._client._async.api_keys.create, title)


class Client(AbstractContextManager["Client"]):
    """The synchronous client: the same engine as :class:`AsyncClient`, run on a private loop thread.

    Use it as ``with Client() as client: client.search("shot.jpg")``. Arguments as for AsyncClient.

    Raises:
        ConfigurationError: As AsyncClient.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        on_attempt: AttemptCallback | None = None,
        on_wait: WaitCallback | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._stack = ExitStack()
        self._portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal())
        make = partial(AsyncClient, settings, transport, on_attempt=on_attempt, on_wait=on_wait, clock=clock)
        try:
            self._async = self._portal.call(partial(_make_async, make))
        except BaseException:
            self._stack.close()
            raise
        self.settings = self._async.settings
        self.api_keys = ApiKeys(self)

    def _run(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        return self._portal.call(partial(func, *args, **kwargs))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the engine and stop its loop thread."""
        try:
            self._portal.call(self._async.aclose)
        finally:
            self._stack.close()

    def search(
        self,
        image: str | os.PathLike[str] | bytes | IO[bytes] | Image.Image,
        *,
        providers: Sequence[str] | None = None,
        strategy: Strategy = "fallback",
        anilist_id: int | None = None,
        cut_borders: bool = False,
        anilist_info: bool = False,
        min_similarity: float | None = None,
        cache: bool = True,
        deadline: float | None = None,
    ) -> SearchResult:
        """See :meth:`AsyncClient.search` (same arguments, same errors)."""
        return self._run(
            self._async.search,
            image,
            providers=providers,
            strategy=strategy,
            anilist_id=anilist_id,
            cut_borders=cut_borders,
            anilist_info=anilist_info,
            min_similarity=min_similarity,
            cache=cache,
            deadline=deadline,
        )

    def quota(self, provider: str | None = None, *, refresh: bool = False) -> list[Quota]:
        """See :meth:`AsyncClient.quota`."""
        return self._run(self._async.quota, provider, refresh=refresh)

    def reset_quota(self, provider: str | None = None) -> None:
        """Forget what the ledger believes about every provider (or one): counts, cooldowns, slots.

        The next search asks the upstream again (``anisearch quota --reset``).

        Raises:
            LedgerError: The ledger cannot be used.
        """
        self._run(self._async.reset_quota, provider)

    def providers(self) -> list[ProviderInfo]:
        """See :meth:`AsyncClient.providers`."""
        return self._run(self._async.providers)

    def rankings(
        self, period: str = "all", limit: int = 50, include_adult: bool = False
    ) -> list[RankingEntry]:
        """See :meth:`AsyncClient.rankings`."""
        return self._run(self._async.rankings, period, limit, include_adult)

    def recent_searches(self, limit: int = 20, offset: int = 0) -> list[RecentSearch]:
        """See :meth:`AsyncClient.recent_searches`."""
        return self._run(self._async.recent_searches, limit, offset)

    def iter_recent_searches(
        self, page_size: int = 20, max_items: int | None = None
    ) -> Iterator[RecentSearch]:
        """See :meth:`AsyncClient.iter_recent_searches`; fetches page by page as you iterate."""
        offset = 0
        while max_items is None or offset < max_items:
            page = self._run(self._async._recent_page, page_size, offset)
            for item in page.items:
                if max_items is not None and offset >= max_items:
                    return
                offset += 1
                yield item
            if _last_page(page, page_size, offset):
                return

    def account_provider(self) -> str:
        """See :meth:`AsyncClient.account_provider`."""
        return self._async.account_provider()

    def credits(self) -> Credits:
        """See :meth:`AsyncClient.credits`."""
        return self._run(self._async.credits)

    def sign_in(self, email: str, password: str) -> None:
        """See :meth:`AsyncClient.sign_in`."""
        self._run(self._async.sign_in, email, password)

    def sign_out(self) -> None:
        """See :meth:`AsyncClient.sign_out`."""
        self._run(self._async.sign_out)


async def _make_async(make: Callable[[], AsyncClient]) -> AsyncClient:
    return make()  # inside the portal's loop: the engine's HTTP pool belongs to it
