"""Bounded HTTP: capped bodies for upstream answers, and downloads of user URLs to public addresses only.

A user's URL is fetched by anisearch itself (then uploaded), so a bot that searches URLs from a chat must
not become a proxy into its own network. :func:`download`:

1. accepts ``http``/``https`` only (any case), at most :data:`~anisearch._limits.MAX_URL_LENGTH` characters,
   a valid port and host;
2. resolves the host itself and refuses it when *any* address is loopback, private, link-local,
   unique-local, multicast, reserved, unspecified, shared (100.64/10) or a cloud metadata address, in its
   IPv4, IPv6, IPv4-mapped, 6to4, Teredo or NAT64 form (and refuses metadata host names before any lookup);
3. connects to the address it checked (the URL's host goes in ``Host`` and in TLS SNI, and the
   certificate is verified against it), so a second DNS answer cannot move the connection elsewhere;
4. follows at most :data:`~anisearch._limits.MAX_REDIRECTS` redirects itself, checking each as in 1-3;
5. reads at most the limit it is given (:data:`~anisearch._limits.MAX_SOURCE_BYTES` by default), and
   refuses a body whose ``Content-Length`` announces more before reading any of it.

Its client has no cookie jar and no provider credential. ``allow_private`` (``ANISEARCH_ALLOW_PRIVATE_URLS``)
skips steps 2 and 3 for self-hosted setups and tests, except that cloud metadata addresses and names are
still refused when the URL names them (a literal address or a well-known name: no lookup is made).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import zlib
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING

import anyio
import httpx

from anisearch._exceptions import ImageFetchError, ImageTooLargeError
from anisearch._limits import MAX_REDIRECTS, MAX_SOURCE_BYTES, MAX_URL_LENGTH
from anisearch._redact import display_url
from anisearch._source import human_size

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator

__all__ = [
    "BodyTooLargeError",
    "BoundedAuth",
    "check_address",
    "download",
    "no_cookies",
    "read_capped",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
        "metadata.tencentyun.com",
    }
)
_METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, DigitalOcean ...
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    }
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class BodyTooLargeError(Exception):
    """A body passed its byte limit (decoded size); the caller turns it into its own typed error."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than {limit} bytes")
        self.limit = limit


def no_cookies() -> CookieJar:
    """A cookie jar that never stores nor sends a cookie (httpx clients always have a jar)."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


_PIECE = 256 * 1024
"""Most bytes one decompression step may produce (a bomb never inflates beyond this at once)."""


class _Inflater:
    """Decodes ``gzip``/``deflate`` (or nothing) in pieces of at most :data:`_PIECE` bytes."""

    def __init__(self, encoding: str, request: httpx.Request) -> None:
        self._request = request
        codings = [part.strip().lower() for part in encoding.split(",") if part.strip()]
        codings = [coding for coding in codings if coding != "identity"]
        if len(codings) > 1 or (codings and codings[0] not in {"gzip", "x-gzip", "deflate"}):
            raise httpx.DecodingError(f"unsupported content encoding {encoding!r}", request=request)
        self._coding = codings[0] if codings else None
        wbits = zlib.MAX_WBITS | 16 if self._coding in {"gzip", "x-gzip"} else zlib.MAX_WBITS
        self._zlib = zlib.decompressobj(wbits) if self._coding else None
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._zlib is None:
            yield data
            return
        if not self._started and self._coding == "deflate":  # some servers send raw deflate
            self._started = True
            try:
                zlib.decompressobj().decompress(data[:2])
            except zlib.error:
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            while data:
                piece = self._zlib.decompress(data, _PIECE)
                data = self._zlib.unconsumed_tail
                if piece:
                    yield piece
        except zlib.error as exc:
            raise httpx.DecodingError(f"broken {self._coding} data", request=self._request) from exc

    def flush(self) -> bytes:
        return self._zlib.flush(_PIECE) if self._zlib is not None else b""


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    """Read a streamed response's body, at most ``limit`` bytes after decompression, then close it.

    The body is decompressed here in small pieces (``gzip``, ``deflate``), so a compression bomb costs
    no more than ``limit`` plus a few hundred KiB. The decoded body is kept on the response
    (``response.content`` and ``response.json()`` work afterwards).

    Raises:
        BodyTooLargeError: The decoded body is longer than ``limit`` (reading stops there).
        httpx.HTTPError: The transfer failed, or the body's encoding is broken or unsupported.
    """
    try:
        return response.content  # already read (by an auth flow)
    except httpx.ResponseNotRead:
        pass
    chunks: list[bytes] = []
    size = 0
    try:
        inflater = _Inflater(response.headers.get("content-encoding", ""), response.request)
        async for raw in response.aiter_raw():
            for piece in inflater.feed(raw):
                size += len(piece)
                if size > limit:
                    raise BodyTooLargeError(limit)
                chunks.append(piece)
        tail = inflater.flush()
        if size + len(tail) > limit:
            raise BodyTooLargeError(limit)
        chunks.append(tail)
    finally:
        await response.aclose()
    content = b"".join(chunks)
    response._content = content  # noqa: SLF001 - what Response.aread() sets; read here with a bound
    return content


class BoundedAuth(httpx.Auth):
    """Runs a provider's auth flow, reading each response body it needs with a byte limit.

    httpx reads the body for a flow that ``requires_response_body`` without any bound; this wrapper
    reads it through :func:`read_capped` instead. A flow that overrides ``async_auth_flow`` runs as is.
    """

    def __init__(self, inner: httpx.Auth, limit: int) -> None:
        self._inner = inner
        self._limit = limit
        self.requires_request_body = inner.requires_request_body

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        inner = self._inner
        if type(inner).async_auth_flow is not httpx.Auth.async_auth_flow:
            flow = inner.async_auth_flow(request)
            next_request = await flow.__anext__()
            while True:
                response = yield next_request
                try:
                    next_request = await flow.asend(response)
                except StopAsyncIteration:
                    return
        if inner.requires_request_body:
            await request.aread()
        sync_flow = inner.auth_flow(request)
        next_request = next(sync_flow)
        while True:
            response = yield next_request
            if inner.requires_response_body:
                await read_capped(response, self._limit)
            try:
                next_request = sync_flow.send(response)
            except StopIteration:
                return


# ---------------------------------------------------------------- addresses


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _why_not_public(address: IPAddress) -> str | None:  # noqa: PLR0911 - one reason per range
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None and (reason := _why_not_public(embedded)) is not None:
            return reason
    if address in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "an unspecified address"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "a carrier-grade NAT address"
    site_local = getattr(address, "is_site_local", False)  # IPv6 fec0::/10, which is_global calls global
    if address.is_private or address.is_reserved or not address.is_global or site_local:
        return "a private or reserved address"
    return None


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is one, in any form a resolver would accept, else None.

    Besides the usual forms this reads the legacy IPv4 spellings (``2852039166``, ``0xa9fea9fe``,
    ``169.254.43518``) without a lookup.
    """
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        pass
    if text and all(c in "0123456789abcdefxABCDEFX." for c in text) and text[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def check_address(address: IPAddress, host: str) -> None:
    """Refuse a non-public address.

    Raises:
        ImageFetchError: ``address`` is not a public unicast address.
    """
    reason = _why_not_public(address)
    if reason is not None:
        raise ImageFetchError(
            f"refusing to download from {display_url(host, 80)}: it is {reason} ({address}); "
            "set ANISEARCH_ALLOW_PRIVATE_URLS=1 to allow private addresses"
        )


async def _system_resolve(host: str, port: int) -> list[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


resolve: Callable[[str, int], Awaitable[list[str]]] = _system_resolve
"""How host names are resolved (``getaddrinfo``); replaced in tests so no lookup leaves the machine."""


async def public_address(host: str, port: int) -> IPAddress:
    """The address to connect to for ``host``, after checking every address it resolves to.

    Raises:
        ImageFetchError: The name is a metadata name, does not resolve, or any address is not public.
    """
    literal = literal_address(host)
    if literal is not None:
        check_address(literal, host)
        return literal
    name = host.lower().rstrip(".")
    if name in _METADATA_NAMES or name == "localhost" or name.endswith((".localhost", ".internal")):
        raise ImageFetchError(
            f"refusing to download from {display_url(host, 80)}: it names a local or metadata service; "
            "set ANISEARCH_ALLOW_PRIVATE_URLS=1 to allow private addresses"
        )
    try:
        found = await resolve(name, port)
    except (OSError, UnicodeError) as exc:
        raise ImageFetchError(f"cannot download: {display_url(host, 80)} does not resolve") from exc
    addresses = [ipaddress.ip_address(text.split("%", 1)[0]) for text in found]
    if not addresses:
        raise ImageFetchError(f"cannot download: {display_url(host, 80)} does not resolve")
    for address in addresses:
        check_address(address, host)
    return next((a for a in addresses if isinstance(a, ipaddress.IPv4Address)), addresses[0])


# ---------------------------------------------------------------- downloads


def parse_url(text: str) -> httpx.URL:
    """A user's URL, checked for what would otherwise fail deep inside httpx or the socket layer.

    Raises:
        ImageFetchError: Too long, not http(s), no host, a bad port, control characters.
    """
    shown = display_url(text)
    if len(text) > MAX_URL_LENGTH:
        raise ImageFetchError(f"the URL is {len(text)} characters long, over the {MAX_URL_LENGTH} limit")
    try:
        url = httpx.URL(text)
        port, host = url.port, url.host  # the host decodes IDNA: a malformed A-label raises here
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        raise ImageFetchError(f"not a valid URL: {shown}") from exc
    if url.scheme not in {"http", "https"}:
        raise ImageFetchError(f"only http and https URLs are downloaded, not {shown}")
    if not host:
        raise ImageFetchError(f"the URL has no host: {shown}")
    if port is not None and not 0 < port < 65536:  # noqa: PLR2004 - TCP ports
        raise ImageFetchError(f"the URL's port {port} is not a TCP port (1-65535): {shown}")
    return url


def _host_header(url: httpx.URL) -> str:
    host = url.raw_host.decode("ascii")
    if ":" in host:
        host = f"[{host}]"
    return host if url.port is None else f"{host}:{url.port}"


def refuse_metadata(host: str) -> None:
    """Refuse a cloud metadata service named by address or by a well-known name (no lookup).

    Raises:
        ImageFetchError: ``host`` is one.
    """
    literal = literal_address(host)
    embedded = _embedded_ipv4(literal) if isinstance(literal, ipaddress.IPv6Address) else None
    named = host.lower().rstrip(".") in _METADATA_NAMES
    if named or literal in _METADATA_ADDRESSES or embedded in _METADATA_ADDRESSES:
        raise ImageFetchError(
            f"refusing to download from {display_url(host, 80)}: it is a cloud metadata service"
        )


async def _request(
    url: httpx.URL, client: httpx.AsyncClient, *, allow_private: bool, pin: bool
) -> httpx.Request:
    if allow_private:
        refuse_metadata(url.host)
        return client.build_request("GET", url)
    address = await public_address(url.host, url.port or (443 if url.scheme == "https" else 80))
    if not pin:
        return client.build_request("GET", url)
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    return client.build_request(
        "GET",
        url.copy_with(host=str(address)),
        headers={"Host": _host_header(url)},
        extensions=extensions,
    )


_WHY = (
    (httpx.ConnectTimeout, "connecting timed out"),
    (httpx.ConnectError, "the connection was refused, or the host cannot be reached"),
    (httpx.TimeoutException, "the server stopped answering"),
    (httpx.RemoteProtocolError, "the server broke off the answer"),
    (httpx.DecodingError, "the answer's content encoding is broken"),
    (httpx.TransportError, "the connection failed"),
)


def _why(exc: Exception, *, reading: bool = False) -> str:
    """A transfer failure in words (the exception's own text may hold a URL's secrets or say nothing);
    ``reading``: it broke the body off, after the handshake."""
    tls = _tls_failure(exc)
    if isinstance(tls, ssl.SSLCertVerificationError):  # the host answered: its certificate is the problem
        reason = (tls.verify_message or tls.reason or "").rstrip(".") or type(tls).__name__
        return (
            f"the server's HTTPS certificate did not verify ({reason}); image downloads trust certifi's CA "
            "bundle"
        )
    if tls is None:
        return next((why for kind, why in _WHY if isinstance(exc, kind)), type(exc).__name__)
    reason = getattr(tls, "reason", None) or type(tls).__name__  # OpenSSL's code; not set on every SSLError
    if reading or isinstance(exc, httpx.ReadError | httpx.WriteError):  # a broken record, after the handshake
        return f"the HTTPS connection failed while reading ({reason})"
    # an HTTPS handshake that failed otherwise (a plain-HTTP port, no common protocol)
    return f"the HTTPS handshake failed ({reason})"


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The :class:`ssl.SSLError` behind a transfer failure (httpx chains httpcore's, which chains it)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _announced_size(response: httpx.Response) -> int | None:
    """The body's size in bytes as its ``Content-Length`` announces it, when that is the size it will have
    once read: None without one (or an unreadable one), or when a content encoding (gzip ...) makes the
    decoded body another size."""
    if response.headers.get("content-encoding", "identity").strip().lower() not in {"", "identity"}:
        return None
    try:
        size = int(response.headers.get("content-length", ""))
    except ValueError:
        return None
    return size if size >= 0 else None


def _in_words(size: int) -> str:
    """``"50.0 MiB (52428800 bytes)"``: readable, and exact."""
    return f"{human_size(size)} ({size} bytes)" if size >= 1024 else human_size(size)  # noqa: PLR2004


async def download(
    client: httpx.AsyncClient,
    text: str,
    *,
    allow_private: bool = False,
    pin: bool = True,
    limit: int = MAX_SOURCE_BYTES,
) -> bytes:
    """The body of a user's URL, fetched as the module docstring says.

    Args:
        client: A client with no cookie jar, no credentials and ``follow_redirects=False``.
        text: The URL as the user gave it.
        allow_private: Skip the public-address check (``ANISEARCH_ALLOW_PRIVATE_URLS``).
        pin: Connect to the checked address (False when a caller-given transport decides where bytes go).
        limit: Largest body accepted, bytes.

    Raises:
        ImageFetchError: A refused or bad URL, a refused address, too many redirects, an HTTP error (a
            3xx that leads nowhere too), an empty body, or a failed transfer (``provider`` is None:
            anisearch itself could not download it).
        ImageTooLargeError: The body is over ``limit``: refused from its ``Content-Length`` before it is read
            when that announces more (``size_bytes`` is then the size announced), else once ``limit`` bytes
            were read.
    """
    url = parse_url(text)
    for _ in range(MAX_REDIRECTS + 1):
        shown = display_url(str(url))
        request = await _request(url, client, allow_private=allow_private, pin=pin)
        try:
            response = await client.send(request, stream=True)
        except (httpx.HTTPError, ssl.SSLError) as exc:  # httpx lets a TLS error after the handshake through
            after = isinstance(exc, ssl.SSLError)  # a handshake's own failure comes wrapped (ConnectError)
            raise ImageFetchError(f"cannot download {shown}: {_why(exc, reading=after)}") from exc
        try:
            if response.has_redirect_location:
                location = response.headers.get("location", "")
                try:
                    url = parse_url(str(url.join(location)))
                except (httpx.InvalidURL, ValueError) as exc:
                    raise ImageFetchError(f"{shown} redirects to an invalid URL") from exc
                continue
            if not response.is_success:  # an error, or a 3xx httpx would not follow either (no Location, 304)
                missing = (
                    " without a Location"
                    if response.is_redirect and "location" not in response.headers
                    else ""
                )
                raise ImageFetchError(
                    f"cannot download {shown}: HTTP {response.status_code}{missing}",
                    status_code=response.status_code,
                )
            announced = _announced_size(response)
            if announced is not None and announced > limit:  # refused before a byte of the body is read
                raise ImageTooLargeError(
                    f"{shown} is {_in_words(announced)} by its Content-Length, over the "
                    f"{_in_words(limit)} download limit",
                    size_bytes=announced,
                    limit_bytes=limit,
                )
            try:
                body = await read_capped(response, limit)
            except BodyTooLargeError:
                raise ImageTooLargeError(
                    f"{shown} is larger than the {_in_words(limit)} download limit", limit_bytes=limit
                ) from None
            except (httpx.HTTPError, ssl.SSLError) as exc:  # httpx lets a TLS error mid-body through as is
                raise ImageFetchError(f"cannot download {shown}: {_why(exc, reading=True)}") from exc
            if not body:
                raise ImageFetchError(
                    f"{shown} answered HTTP {response.status_code} with an empty body",
                    status_code=response.status_code,
                )
            return body
        finally:
            await response.aclose()
    raise ImageFetchError(f"cannot download {display_url(text)}: more than {MAX_REDIRECTS} redirects")
