"""The engine's HTTP layer for provider requests: one pool, one attempt's time and size, typed failures.

The router and the account features send through :class:`ProviderTransport`; neither knows about sockets,
and nothing here knows about quota or routing.
"""

from __future__ import annotations

import functools
import os
import ssl
import sys
import threading
from typing import TYPE_CHECKING, Any, Self

import anyio
import httpx

from anisearch import _fetch, _redact
from anisearch._exceptions import (
    AnisearchError,
    ClientClosedError,
    ConfigurationError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    UpstreamResponseError,
)
from anisearch._limits import MAX_RESPONSE_BYTES, remaining_seconds, timed_out
from anisearch._version import DISTRIBUTION, __version__

if TYPE_CHECKING:
    from anisearch._provider import Provider

__all__ = ["ACCEPT_ENCODING", "ProviderTransport", "tls_context", "user_agent"]

ACCEPT_ENCODING = "gzip, deflate"
"""Only decoders whose output httpx hands over chunk by chunk (a brotli or zstd bomb is refused unasked)."""

_ONE_PIECE_BYTES = 1 << 20
"""A request body up to this many bytes is joined into one piece before it is sent (:func:`_in_one_piece`)."""

_redact.install()


@functools.cache
def tls_context(*, trust_env: bool = True) -> ssl.SSLContext:
    """The one verifying TLS context of the process, shared by every anisearch HTTP client.

    It verifies certificates and host names as ``httpx.create_ssl_context()`` does, against certifi's CA
    bundle, or ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when ``trust_env``. httpx would load the bundle for each
    client it builds; a context holds no per-connection state, so one serves every client and every
    thread. The bundle (tens of milliseconds to load) is read at the first TLS connection, so a process
    that only talks plain HTTP (an emulator, a self-hosted server on a LAN) never reads it.

    Args:
        trust_env: Honour ``SSL_CERT_FILE``/``SSL_CERT_DIR``, as they are at the first call: the context is
            made once per process, so a later change of those variables is not seen.

    Returns:
        The shared ``ssl.SSLContext``.
    """
    if trust_env and os.environ.get("SSL_CERT_FILE"):
        return _TrustLoadedOnFirstUse(os.environ["SSL_CERT_FILE"], None, "SSL_CERT_FILE")
    if trust_env and os.environ.get("SSL_CERT_DIR"):
        return _TrustLoadedOnFirstUse(None, os.environ["SSL_CERT_DIR"], "SSL_CERT_DIR")
    return _TrustLoadedOnFirstUse(None, None, "certifi's CA bundle")


class _TrustLoadedOnFirstUse(ssl.SSLContext):
    """``ssl.create_default_context(cafile=..., capath=...)`` (certifi's bundle when both are None),
    reading the CA certificates at the first connection it wraps instead of when it is made.

    The first TLS connection pays the load. When the certificates cannot be read (``SSL_CERT_FILE`` names
    no file), that connection fails with a :class:`ConfigurationError` naming the variable, and the next
    one tries again. anyio wraps connections of a context subclass in a worker thread, so the load never
    blocks an event loop.
    """

    def __new__(cls, cafile: str | None, capath: str | None, named: str) -> Self:  # noqa: ARG004 - __init__
        return super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)  # verify_mode CERT_REQUIRED, check_hostname

    def __init__(self, cafile: str | None, capath: str | None, named: str) -> None:
        self._trust = (cafile, capath)
        self._named = named
        if sys.version_info >= (3, 13):  # as ssl.create_default_context() sets them there
            self.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
        self._trusted = False
        self._lock = threading.Lock()
        keylog = os.environ.get("SSLKEYLOGFILE")  # as ssl.create_default_context() does
        if keylog and not sys.flags.ignore_environment:
            self.keylog_filename = keylog

    def _load_trust(self) -> None:
        if self._trusted:
            return
        with self._lock:
            if not self._trusted:
                cafile, capath = self._trust
                if cafile is None and capath is None:
                    import certifi  # httpx's own dependency, and its default bundle

                    cafile = certifi.where()
                try:
                    self.load_verify_locations(cafile, capath)
                except OSError as exc:  # ssl.SSLError too: a file that holds no certificate
                    where = cafile if cafile is not None else capath
                    raise ConfigurationError(
                        f"cannot read the CA certificates of {self._named} ({where}):"
                        f" {exc.strerror or exc}; TLS connections need them"
                    ) from exc
                self._trusted = True

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self._load_trust()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self._load_trust()
        return super().wrap_bio(*args, **kwargs)


def user_agent() -> str:
    """The ``User-Agent`` every anisearch request carries (``anisearch/<version> (+<project page>)``)."""
    return f"anisearch/{__version__} (+https://pypi.org/project/{DISTRIBUTION}/)"


class ProviderTransport:
    """Sends provider requests through one connection pool, with no cookie jar of its own.

    Args:
        timeout: One attempt's time as a whole (connect, send, any sign-in, read the whole body), seconds.
        transport: An httpx async transport to send through instead of the network (respx, an ASGI app).
    """

    def __init__(self, timeout: float, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._timeout = timeout
        # Providers that keep a session keep their own jar (an auth flow); the engine stores no cookie.
        self._http = httpx.AsyncClient(
            transport=transport,
            verify=tls_context(),
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": user_agent(), "Accept-Encoding": ACCEPT_ENCODING},
            follow_redirects=False,
            cookies=_fetch.no_cookies(),
        )

    async def aclose(self) -> None:
        """Close the pool (idempotent)."""
        await self._http.aclose()

    async def send(self, provider: Provider, request: httpx.Request) -> httpx.Response:
        """Send one provider request and read its whole answer within one attempt's time and size.

        ``ANISEARCH_TIMEOUT`` (or what is left of the search's ``deadline``, if less) bounds the attempt as
        a whole: connecting, sending, any sign-in the provider's auth flow makes, and reading the entire
        body. The body is read up to the provider's ``max_response_bytes`` (default
        :data:`~anisearch._limits.MAX_RESPONSE_BYTES`), counted after decompression.

        Raises:
            ClientClosedError: The pool was closed (nothing was sent).
            ConfigurationError: The CA certificates (``SSL_CERT_FILE``, ``SSL_CERT_DIR``) cannot be read; they
                are read at the first TLS connection (nothing was sent).
            ProviderTimeoutError: The attempt did not complete in time (or the deadline had passed).
            ProviderConnectionError: The request could not be sent or the connection failed.
            UpstreamResponseError: The answer is over the size limit or its encoding is broken.
        """
        if self._http.is_closed:  # httpx would raise a RuntimeError; nothing was sent
            raise ClientClosedError("the client is closed; open a new one")
        budget = remaining_seconds(self._timeout)
        if budget <= 0:
            raise ProviderTimeoutError(
                "the search's deadline passed before this attempt", provider=provider.name
            )
        request.extensions.setdefault("timeout", httpx.Timeout(self._timeout).as_dict())
        if "user-agent" not in request.headers:
            request.headers["User-Agent"] = user_agent()
        limit = getattr(provider, "max_response_bytes", None) or MAX_RESPONSE_BYTES
        auth = provider.auth()
        status: int | None = None
        try:
            with anyio.fail_after(budget):
                _in_one_piece(request)  # a provider's file that cannot be read fails as a transfer does
                if auth is None:
                    response = await self._http.send(request, stream=True)
                else:
                    bounded = _fetch.BoundedAuth(auth, limit)
                    response = await self._http.send(request, auth=bounded, stream=True)
                status = response.status_code
                await _fetch.read_capped(response, limit)
        except AnisearchError:
            raise
        except (
            TimeoutError,
            _fetch.BodyTooLargeError,
            httpx.HTTPError,
            OSError,
            ValueError,
            OverflowError,
        ) as exc:
            error = _transfer_error(exc, provider.name, request, timed_out(budget, self._timeout), status)
            quotes_header = isinstance(exc, httpx.LocalProtocolError | UnicodeError)
            raise error from (None if quotes_header else exc)
        return response


def _in_one_piece(request: httpx.Request) -> None:
    """Join ``request``'s body into one piece when httpx can read it without an event loop (a sync stream,
    a multipart form holding a file included) and it is at most :data:`_ONE_PIECE_BYTES`.

    httpx writes a multipart upload as it renders it: the boundary, the part's headers, the picture and
    the closing boundary, each a write to the socket of its own, and a server reading it wakes for each.
    Joined, the body follows the request's headers in one write (a search against trace.moe's emulator on
    loopback, answering at once: about 0.35 ms less of some 5 ms, ``docs/performance.md``). An async
    stream, or a body of unknown length, is sent as it is.
    """
    length = request.headers.get("Content-Length", "")
    if (
        isinstance(request.stream, httpx.SyncByteStream)
        and length.isdigit()
        and int(length) <= _ONE_PIECE_BYTES
    ):
        request.read()


def _transfer_error(
    exc: BaseException, name: str, request: httpx.Request, too_slow: str, status: int | None
) -> ProviderError:
    """The attempt's typed error for what went wrong while sending or reading (messages hold no secret)."""
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return ProviderTimeoutError(too_slow, provider=name, status_code=status)
    if isinstance(exc, _fetch.BodyTooLargeError):
        return UpstreamResponseError(
            f"the answer is larger than {exc.limit} bytes (decoded); refused",
            provider=name,
            status_code=status,
            endpoint=request.url.path,
        )
    if isinstance(exc, httpx.DecodingError):
        return UpstreamResponseError(
            "the answer's content encoding is broken", provider=name, status_code=status
        )
    if isinstance(exc, httpx.LocalProtocolError | UnicodeError):  # the message may quote a header: a key
        return ProviderConnectionError(
            "the request could not be sent (a header value is not valid HTTP)", provider=name
        )
    detail = _redact.printable(_redact.redact(str(exc)), 160)
    host = _redact.display_url(request.url.host, 80)
    if request.url.port is not None:  # a port of its own: two emulators on one host are told apart
        host = f"[{host}]:{request.url.port}" if ":" in host else f"{host}:{request.url.port}"
    # With a status, the answer had begun (a connection dropped mid-body): counted by that status.
    return ProviderConnectionError(f"cannot reach {host}: {detail}", provider=name, status_code=status)
