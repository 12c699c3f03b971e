"""User URLs: downloaded once by anisearch, to public addresses only, then searched like any upload."""

from __future__ import annotations

import dataclasses
from typing import Any

import anyio
import httpx

from anisearch import _fetch, _redact, _worker
from anisearch._exceptions import ImageFetchError, ProviderError
from anisearch._limits import HASH_IN_PLACE_BYTES, MAX_DOWNLOAD_BYTES, remaining_seconds, timed_out
from anisearch._transport import ACCEPT_ENCODING, tls_context, user_agent

__all__ = ["Downloader", "is_url"]


def is_url(image: object) -> bool:
    """Whether a search input is an ``http(s)://`` URL (scheme in any case)."""
    return isinstance(image, str) and image[:8].lower().startswith(("http://", "https://"))


class Downloader:
    """Downloads users' URLs with a client of its own: no cookie jar, no provider credential, no proxy env.

    Args:
        timeout: One download's time as a whole, seconds (bounded further by a search's deadline).
        allow_private: Allow private, loopback and link-local addresses (``ANISEARCH_ALLOW_PRIVATE_URLS``).
        transport: An httpx async transport to send through instead of the network; with one, addresses
            are checked but connections are not pinned to them (the transport decides where bytes go).
    """

    def __init__(
        self, timeout: float, *, allow_private: bool, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._timeout = timeout
        self._allow_private = allow_private
        self._pin = transport is None
        self._transport = transport
        # Made at the first download: most searches are of files, and the client's TLS context (a CA
        # bundle of its own, trust_env=False) takes tens of milliseconds to load.
        self._http: httpx.AsyncClient | None = None
        self._closed = False

    def _client(self) -> httpx.AsyncClient:
        if self._closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        if self._http is None:
            self._http = httpx.AsyncClient(
                transport=self._transport,
                verify=tls_context(trust_env=False),
                timeout=httpx.Timeout(self._timeout),
                headers={"User-Agent": user_agent(), "Accept-Encoding": ACCEPT_ENCODING},
                follow_redirects=False,
                cookies=_fetch.no_cookies(),
                trust_env=False,
            )
        return self._http

    async def aclose(self) -> None:
        """Close the download client (idempotent)."""
        self._closed = True
        if self._http is not None:
            await self._http.aclose()

    async def resolve(self, image: Any) -> Any:
        """An http(s) URL becomes its downloaded bytes, read and hashed as :func:`anisearch._image.read`
        does and named by the URL in messages about them; anything else is returned as it came."""
        if not is_url(image):
            return image
        data = await self.download(image)  # never empty: an empty body is an ImageFetchError naming the URL
        from anisearch import _image  # Pillow: only once there is an image to prepare

        small = len(data) <= HASH_IN_PLACE_BYTES
        source = _image.read(data) if small else await _worker.run_sync(_image.read, data)
        assert isinstance(source, _image.SourceBytes)  # noqa: S101 - bytes are never a PIL image
        return dataclasses.replace(source, where=f"{_redact.display_url(image)}: ")

    async def download(self, url: str) -> bytes:
        """Download a user's URL to public addresses only, within one attempt's time (see ``_fetch``).

        Returns:
            The body, at most :data:`~anisearch._limits.MAX_DOWNLOAD_BYTES` bytes.

        Raises:
            ImageFetchError: Refused, unreachable, an HTTP error, too many redirects, an empty body, or too
                slow.
            ImageTooLargeError: Over the input limit.
        """
        budget = remaining_seconds(self._timeout)
        shown = _redact.display_url(url)
        if budget <= 0:
            raise ImageFetchError(f"cannot download {shown}: the search's deadline passed")
        try:
            with anyio.fail_after(budget):
                return await _fetch.download(
                    self._client(),
                    url,
                    allow_private=self._allow_private,
                    pin=self._pin,
                    limit=MAX_DOWNLOAD_BYTES,
                )
        except TimeoutError as exc:
            if isinstance(exc, ProviderError):
                raise
            raise ImageFetchError(f"cannot download {shown}: {timed_out(budget, self._timeout)}") from exc
