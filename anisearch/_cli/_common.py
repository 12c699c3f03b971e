"""What every command shares: the consoles, one error style, exit codes, logging, times and layouts.

Exit codes (the same cause gives the same code in every command):
0 ok, 1 no confident match, 2 usage or configuration, 3 bad input, 4 every provider failed (or the upstream
failed), 5 authentication, 6 local state unusable (the quota ledger), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import functools
import json
import logging
import math
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from anisearch._exceptions import (
    AllProvidersFailedError,
    AnisearchError,
    AuthenticationError,
    BadRequestError,
    ConcurrencyLimitError,
    ConfigurationError,
    ImageFetchError,
    InvalidImageError,
    LedgerError,
    ProviderConnectionError,
    ProviderError,
    QuotaExhaustedError,
    RateLimitedError,
    SignInRateLimitedError,
    UnknownProviderError,
)

if TYPE_CHECKING:
    import asyncio

    import httpx
    from rich.console import Console

    from anisearch._sync import Client

EXIT_OK, EXIT_NO_MATCH, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_ALL_FAILED, EXIT_AUTH, EXIT_STATE = (
    0,
    1,
    2,
    3,
    4,
    5,
    6,
)
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
"""Stopped by SIGTERM (``timeout``, systemd, ``docker stop``), after summarising as Ctrl-C does: 128 + 15."""
EXIT_OUTPUT_CLOSED = 141
"""The reader of the output went away (``anisearch search shots/ | head -1``): 128 + SIGPIPE, as a shell
reports a command that a closed pipe stopped."""


class OutputClosedError(Exception):
    """Whoever read stdout or stderr closed it: the command stops quietly (:data:`EXIT_OUTPUT_CLOSED`)."""


def _console(*, stderr: bool) -> Console:
    from rich.console import Console

    class PipedConsole(Console):
        def on_broken_pipe(self) -> None:
            # What rich does (write nothing more; the interpreter's last flush goes to /dev/null), then an
            # exception of ours rather than SystemExit(1): 1 means "no confident match" here, and a
            # SystemExit inside the event loop is printed as an unhandled error.
            self.quiet = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, (sys.stderr if stderr else sys.stdout).fileno())
            raise OutputClosedError

    return PipedConsole(stderr=stderr, soft_wrap=True)


@functools.cache
def out() -> Console:
    """Results: stdout (made on first use: ``--help`` loads no rich)."""
    return _console(stderr=False)


@functools.cache
def err() -> Console:
    """Progress, spinners, notes and errors: stderr."""
    return _console(stderr=True)


T = TypeVar("T")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show each request, attempt, its time and any retry.")
]


def examples(*lines: str) -> str:
    """An epilog of one-line examples for a command's ``--help``."""
    # \b: click keeps the paragraph's lines as written (a wrapped comment would read as a second command);
    # a comment too long for one 80-column line goes on its own line above the command
    blocks = []
    for line in lines:
        command, mark, comment = line.partition("   # ")
        long = mark and len(line) + 6 > _HELP_WIDTH
        blocks.append(f"\b\n  # {comment}\n  $ {command}" if long else f"\b\n  $ {line}")
    return "Examples:\n\n" + "\n\n".join(blocks)


_HELP_WIDTH = 80


def complete_providers(incomplete: str) -> list[str]:
    """Shell completion of a search provider's name (the installed ones)."""
    from anisearch._provider import available_providers

    return [name for name in available_providers() if name.startswith(incomplete)]


def complete_quota_providers(incomplete: str) -> list[str]:
    """Shell completion of a name ``quota`` takes: a search provider's, or a metadata provider's."""
    from anisearch._provider import available_metadata_providers

    metadata = [name for name in available_metadata_providers() if name.startswith(incomplete)]
    return complete_providers(incomplete) + metadata


def complete_emulators(incomplete: str) -> list[str]:
    """Shell completion of an emulator's name, or ``all``."""
    from anisearch._provider import available_emulators

    return [name for name in [*available_emulators(), "all"] if name.startswith(incomplete)]


# ---------------------------------------------------------------------------------------------- errors


def say_error(message: str, hint: str | None = None) -> None:
    """Print ``anisearch: error: MESSAGE`` (one line) and an optional ``hint:`` line on stderr."""
    err().print(f"anisearch: error: {inert(' '.join(message.split()))}", markup=False, highlight=False)
    if hint:
        err().print(f"hint: {hint}", markup=False, highlight=False, style="dim")


def fail(message: str, code: int, hint: str | None = None) -> NoReturn:
    """Print the error in the one style and leave with ``code``."""
    say_error(message, hint)
    raise typer.Exit(code)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _single_code(exc: BaseException) -> int:
    local_fetch = isinstance(exc, ImageFetchError) and exc.provider is None
    ordered: list[tuple[bool, int]] = [
        (isinstance(exc, InvalidImageError) or local_fetch, EXIT_BAD_INPUT),
        (isinstance(exc, AuthenticationError), EXIT_AUTH),
        (isinstance(exc, LedgerError), EXIT_STATE),
        (isinstance(exc, ConfigurationError), EXIT_USAGE),
        (isinstance(exc, ProviderError), EXIT_ALL_FAILED),
    ]
    return next((code for matched, code in ordered if matched), EXIT_USAGE)


def exit_code(exc: AnisearchError) -> int:
    """The exit code of an error; a group whose every provider failed for the same cause keeps that cause's
    code (a bad key everywhere is 5, as it is from ``quota``), otherwise 4."""
    if isinstance(exc, AllProvidersFailedError):
        codes = {_single_code(leaf) for leaf in _leaves(exc)}
        return codes.pop() if len(codes) == 1 else EXIT_ALL_FAILED
    return _single_code(exc)


def describe(exc: AnisearchError) -> str:
    """One line for an error; a failed search names each provider and why."""
    if isinstance(exc, AllProvidersFailedError):
        parts = [f"{a.provider} {a.outcome}: {a.reason or a.error}" for a in exc.attempts]
        return "every provider failed: " + "; ".join(parts or [str(e) for e in exc.exceptions])
    return str(exc)


def _unresolved(exc: BaseException) -> bool:
    """Whether ``exc`` came from a failed name lookup (``socket.gaierror`` somewhere in its chain)."""
    import socket

    seen: BaseException | None = exc
    for _ in range(8):  # the transport's error, httpx's, httpcore's, the socket's
        if seen is None:
            return False
        if isinstance(seen, socket.gaierror):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _credentials_hint(leaf: AuthenticationError) -> str | None:
    if "ANISEARCH_" in leaf.message:  # it names the setting to fix (an Origin the site refused)
        return None
    name = getattr(leaf, "provider", None) or "the provider"
    login = ", or 'anisearch login'" if _signs_in(name) else ""
    return f"check the credentials for {name}: its API key or token{login}"


def _connection_hint(leaf: ProviderConnectionError, urls: dict[str, str]) -> str:
    name = leaf.provider or ""
    where = host_port(urls.get(name, ""))
    if _unresolved(leaf):
        return f"{where or 'the host'} is not a name this machine resolves: check the network and DNS"
    target = f" at {where}" if where else ""
    return f"is {name or 'the service'}{target} running? 'anisearch emulate' serves one offline"


def hint_for(exc: AnisearchError, urls: dict[str, str] | None = None) -> str | None:
    """What to do next, for the most telling error inside ``exc``."""
    leaves = _leaves(exc)
    for leaf in leaves:
        if isinstance(leaf, AuthenticationError):
            return _credentials_hint(leaf)
    for leaf in leaves:
        if isinstance(leaf, ProviderConnectionError):
            return _connection_hint(leaf, urls or {})
    if (waiting := _wait_hint(leaves)) is not None:
        return waiting
    if isinstance(exc, UnknownProviderError):
        return "'anisearch providers' lists the providers"
    return None  # a LedgerError's message names its own way out (a reset, another ANISEARCH_LEDGER)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` for a server to listen on; a port that is taken or a host that cannot
    be listened on ends the command in one line (exit 2).

    Binding before serving (rather than checking, then letting the server bind) leaves no moment in which
    another process can take the port and turn a one-line refusal into a server's traceback.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            free = _free_port_near(host, family, port)
            fail(
                f"port {port} on {host} is in use",
                EXIT_USAGE,
                f"choose another with --port (--port {free} is free now)"
                if free
                else "choose another with --port",
            )
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        fail(f"cannot listen on {host} port {port}: {reason}", EXIT_USAGE, "check --host and --port")
    return sock


def _free_port_near(host: str, family: socket.AddressFamily, port: int) -> int | None:
    """A port that ``host`` can listen on now, from ``port + 100`` up (20 tried), or None."""
    for candidate in range(port + 100, min(port + 120, 65536)):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, candidate))
            except OSError:
                continue
            return candidate
    return None


def _signs_in(provider: str) -> bool:
    """Whether ``provider`` has account features, sign-in among them (``anisearch login``)."""
    from anisearch._provider import load_provider

    try:
        return bool(load_provider(provider).capabilities.account)
    except (AnisearchError, AttributeError):
        return False


def _wait_hint(leaves: Sequence[BaseException]) -> str | None:
    """What to do about a provider that is spent, rate limited, or whose one slot another search holds."""
    for leaf in leaves:
        if isinstance(leaf, SignInRateLimitedError):
            who = leaf.provider or "the provider"
            wait = f"in {math.ceil(leaf.retry_after)} s" if leaf.retry_after else "in a few seconds"
            return f"try again {wait} ({who} limits sign-ins, not searches)"
        if isinstance(leaf, RateLimitedError) and leaf.retry_after:
            return f"try again in {math.ceil(leaf.retry_after)} s ({leaf.provider or 'the provider'} said so)"
        if isinstance(leaf, QuotaExhaustedError | RateLimitedError):
            return "'anisearch quota' shows what is left and when it frees"
    for leaf in leaves:
        if isinstance(leaf, ConcurrencyLimitError):
            return (
                f"another search holds {leaf.provider or 'the provider'}'s slot (a search given up by its "
                "caller may still run upstream until it answers): try again in a minute"
            )
    return None


def host_port(url: str) -> str:
    """``host:port`` of a URL (the scheme's default port when none is written), or ''."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return ""
    if not parsed.host:
        return ""
    port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme)
    return f"{parsed.host}:{port}" if port else parsed.host


def provider_urls(client: Client) -> dict[str, str]:
    """Each provider's base URL, for messages; empty when even that cannot be read."""
    try:
        return {info.name: info.base_url for info in client.providers()}
    except AnisearchError:
        return {}


def with_host_port(message: str, urls: dict[str, str]) -> str:
    """Name ``host:port`` where a message says a provider cannot be reached at a bare host."""
    for name, url in urls.items():
        where = host_port(url)
        host = where.rsplit(":", 1)[0]
        if where:
            message = re.sub(
                rf"({re.escape(name)} failed: cannot reach ){re.escape(host)}(?!:\d|[\w.])",
                rf"\g<1>{where}",
                message,
            )
    return message


@contextlib.contextmanager
def open_client(verbose: bool = False, *, asks_the_site: bool = False) -> Iterator[Client]:
    """A sync client from the environment; anisearch errors become one line and the right exit code.

    ``asks_the_site``: the command sends the user's own arguments to a site (``recent -n 500``), so the
    site refusing them (:class:`BadRequestError`) is a usage error (2), not a failed provider (4).
    """
    from anisearch._config import Settings
    from anisearch._sync import Client

    try:
        client = Client(
            Settings.load(), _transport(), on_attempt=log_attempt if verbose else None, on_wait=_show_wait
        )
    except AnisearchError as exc:
        fail(describe(exc), exit_code(exc), hint_for(exc))
    try:
        with client:
            try:
                yield client
            except AnisearchError as exc:
                urls = provider_urls(client)
                code = EXIT_USAGE if asks_the_site and isinstance(exc, BadRequestError) else exit_code(exc)
                fail(with_host_port(describe(exc), urls), code, hint_for(exc, urls))
    except AnisearchError as exc:  # closing: the ledger or the cache could not be written
        fail(describe(exc), exit_code(exc), hint_for(exc))


_transport_factory: Callable[[], httpx.AsyncBaseTransport] | None = None
"""Where every command's client sends: None is the network. Tests set an in-process transport here
(``httpx.ASGITransport`` around the emulators), so the whole command runs in the test's process."""


def _transport() -> httpx.AsyncBaseTransport | None:
    return None if _transport_factory is None else _transport_factory()


_SPINNERS: list[Any] = []


def _show_wait(line: str) -> None:
    """The engine started waiting (for a slot, a short backoff): say so on the spinner."""
    if _SPINNERS:
        _SPINNERS[-1].update(line)


def waiting(message: str, func: Callable[[], T]) -> T:
    """Run ``func`` with a spinner on a terminal (stderr), plainly elsewhere. While the engine waits, the
    spinner says for what (``waiting for a tracemoe slot (held by pid 1234)``)."""
    if err().is_terminal:
        with err().status(message, spinner="dots") as status:
            _SPINNERS.append(status)
            try:
                return func()
            finally:
                _SPINNERS.pop()
    return func()


def print_json(payload: Any) -> None:
    """Indented JSON on stdout, plain (no colours, whatever ``FORCE_COLOR`` says: it is for programs),
    UTF-8 unless :func:`json_line` says otherwise."""
    print_line(_json(payload, indent=2))


_STOPPED_BY: list[int] = []
"""The signals that stopped the command (SIGINT, SIGTERM), in order: what its exit code says."""


class _Insisted(Exception):  # noqa: N818 - a signal, not an error
    """A second Ctrl-C or SIGTERM while a line waited for its reader."""


@contextlib.contextmanager
def whole_lines() -> Iterator[None]:
    """Write a line of output whole: Ctrl-C or SIGTERM arriving while it is written (a reader that lags
    fills the pipe, and the write waits) takes effect once the line is out, not halfway through it.

    A second one stops the write at once (a reader that never reads again must not keep the command
    alive): the rest of the output goes to ``/dev/null``, stderr says that the last line written is cut
    short (unless it is the same file as stdout), and the first signal takes effect as it would have. A
    signal that is ignored, or handled outside Python, is left as it is.
    """
    numbers = [
        number
        for number in (signal.SIGINT, signal.SIGTERM)
        if signal.getsignal(number) not in (None, signal.SIG_IGN)
    ]
    if threading.current_thread() is not threading.main_thread() or not numbers:
        yield
        return
    came: list[int] = []
    previous = {number: signal.getsignal(number) for number in numbers}

    def later(signum: int, _frame: object) -> None:
        came.append(signum)
        if len(came) > 1:  # the user insists
            raise _Insisted

    try:
        for number in numbers:
            signal.signal(number, later)
        yield
    except _Insisted:
        with contextlib.suppress(AttributeError, OSError, ValueError):  # nothing more blocks on the reader
            out = sys.stdout.fileno()
            if not os.path.samestat(os.fstat(out), os.fstat(2)):  # a reader of a line cut short is told so
                os.write(2, b"anisearch: stopped while writing: the last line of output is cut short\n")
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out)
            os.close(devnull)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _STOPPED_BY.extend(came)
        if came:
            signal.raise_signal(came[0])


def _raise_interrupt() -> None:
    raise KeyboardInterrupt


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any (asyncio is not imported for the question)."""
    if "asyncio" not in sys.modules:
        return None
    import asyncio

    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[list[int]]:
    """SIGTERM stops the command as Ctrl-C does (the searches end, what was done is summarised); the list
    given holds the signals that stopped it (SIGTERM there: exit :data:`EXIT_TERMINATED`)."""
    _STOPPED_BY.clear()
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is None:
        yield _STOPPED_BY
        return

    calls: list[int] = []

    def interrupt(signum: int, frame: Any) -> None:
        _STOPPED_BY.append(signum)
        calls.append(signum)
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):  # Python's (raises KeyboardInterrupt) or the event loop's (cancels the run)
            handler(signal.SIGINT, frame)
            return
        # SIGINT ignored (a background job of a script, cron): the event loop installed no handler of its
        # own. Raised here, the interrupt would come out of whichever search's frame was running, through
        # its task group, as a traceback; raised by the loop between two steps, it ends the run as
        # Ctrl-C does, every search cancelled. A second signal, or no loop running, raises it here.
        loop = _running_loop()
        if loop is None or len(calls) > 1:
            raise KeyboardInterrupt
        loop.call_soon_threadsafe(_raise_interrupt)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield _STOPPED_BY
    finally:
        signal.signal(signal.SIGTERM, previous)


def print_line(text: str) -> None:
    """One line of machine-readable output on stdout, written whole (see :func:`whole_lines`).

    The UTF-8 bytes go to the file descriptor in a loop of ``os.write``: a signal that interrupts a write
    to a full pipe leaves a short write, and Python's buffered stdout (and rich over it) can lose the rest.

    Raises:
        OutputClosedError: The reader of stdout went away.
    """
    data = (text + "\n").encode("utf-8")
    with whole_lines():
        try:
            sys.stdout.flush()  # what rich wrote before goes first
            try:
                descriptor = sys.stdout.fileno()
            except (AttributeError, OSError, ValueError):  # not a file (captured output): write it there
                sys.stdout.write(data.decode("utf-8"))
                sys.stdout.flush()
                return
            left = memoryview(data)
            while left:
                left = left[os.write(descriptor, left) :]
        except BrokenPipeError:
            with contextlib.suppress(AttributeError, OSError, ValueError):  # stdout is not a file: no fd
                out().on_broken_pipe()  # raises OutputClosedError
            raise OutputClosedError from None


def json_line(payload: Any) -> str:
    """``payload`` as one line of JSON: UTF-8 text, except where it holds a name that is not valid UTF-8
    (a file name's raw bytes, which Python keeps as lone surrogates) or stdout is not UTF-8: the line is
    then written in ASCII with ``\\u`` escapes, still valid JSON, from which ``json.loads`` and
    ``os.fsencode`` give the bytes back."""
    return _json(payload)


def _json(payload: Any, indent: int | None = None) -> str:
    text = json.dumps(payload, ensure_ascii=False, indent=indent)
    return text if _utf8(text) and writes_utf8(sys.stdout) else json.dumps(payload, indent=indent)


def writes_utf8(stream: object) -> bool:
    """Whether ``stream`` encodes UTF-8 (one that names no encoding is taken to): else JSON goes out in
    ASCII (``\\u`` escapes) and text escaped, which no ASCII or Latin-1 reader garbles. While a progress
    bar runs, rich stands a proxy in for stdout: the stream asked about is the one under it."""
    stream = getattr(stream, "rich_proxied_file", stream)
    try:
        return codecs.lookup(getattr(stream, "encoding", None) or "utf-8").name == "utf-8"
    except LookupError:
        return False


_PLAIN: dict[str, str] = {
    # Typographic punctuation, in ASCII where the output cannot carry it (as glibc's iconv //TRANSLIT
    # writes it): a scene reads 19:29-19:34, not 19:29\u201319:34 (six characters for its en dash).
    "\u00a0": " ",  # no-break space
    "\u00ab": "<<",
    "\u00b7": ".",  # middle dot
    "\u00bb": ">>",
    "\u00d7": "x",  # multiplication sign
    "\u2009": " ",  # thin space
    "\u2010": "-",  # hyphen
    "\u2011": "-",  # non-breaking hyphen
    "\u2012": "-",  # figure dash
    "\u2013": "-",  # en dash
    "\u2014": "--",  # em dash
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": ",",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": ",,",
    "\u2022": "o",  # bullet
    "\u2026": "...",  # ellipsis
    "\u202f": " ",  # narrow no-break space (some locales' times)
    "\u2039": "<",
    "\u203a": ">",
    "\u2212": "-",  # minus sign
}
_UNENCODABLE = "anisearch.plain"
"""The codec error handler (see :func:`unencodable`)."""


def _plain_or_escaped(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    char = exc.object[exc.start]
    return _PLAIN.get(char) or char.encode("ascii", "backslashreplace").decode("ascii"), exc.start + 1


@functools.cache
def unencodable() -> str:
    """The name of a codec error handler (registered on first use) for text an output cannot carry: its
    typographic punctuation in ASCII (an en dash as ``-``, an ellipsis as ``...``), anything else escaped
    (``\\u30b3``) as ``backslashreplace`` escapes it."""
    codecs.register_error(_UNENCODABLE, _plain_or_escaped)
    return _UNENCODABLE


def legible(text: str) -> str:
    """``text`` as stdout's encoding carries it (see :func:`unencodable`), and :func:`inert`: otherwise
    unchanged in UTF-8.

    Tables and blocks are laid out on what this returns, so a column is as wide as what is printed in it:
    rich measures an en dash or a Japanese title in cells, and the stream's own escaping, after the
    layout, would make the row longer than the others.
    """
    return _carried(inert(text), out().file, unencodable())


def inert(text: str) -> str:
    """``text`` as a terminal shows it rather than acts on it: control characters (an escape sequence's ESC,
    a carriage return or line break, C1 controls), the line and paragraph separators, and the bidirectional
    embeddings, overrides and isolates, written as escapes (``\\x1b``, ``\\n``, ``\\u202e``). Titles, file
    names and messages an upstream sends reach the terminal through this: a title could otherwise clear the
    screen, retitle the window, forge a line of output or show its text reordered. Every other character is
    kept: an ideographic or no-break space, an emoji's zero-width joiner, a right-to-left mark."""
    return _ACTING.sub(lambda found: found[0].encode("unicode_escape").decode("ascii"), text)


_ACTING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""What a terminal acts on (see :func:`inert`)."""


def _carried(text: str, stream: object, errors: str) -> str:
    """``text`` as ``stream``'s encoding (UTF-8 when it names none) carries it, what it cannot carry
    written by the codec error handler ``errors``."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        return text.encode(encoding, errors).decode(encoding)
    except LookupError:  # an encoding Python does not know: what any can carry
        return text.encode("ascii", errors).decode("ascii")


def with_bytes_shown(text: str) -> str:
    """``text`` with the bytes of a name that are not valid UTF-8 (kept by Python as lone surrogates) as
    ``\\xNN``."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


_ASTRAL = 0x10000
"""The first code point past the Basic Multilingual Plane: written ``\\U0001f600``, not ``\\u``."""


def _code_point(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    point = ord(exc.object[exc.start])
    return (f"\\u{point:04x}" if point < _ASTRAL else f"\\U{point:08x}"), exc.start + 1


@functools.cache
def _code_points() -> str:
    """A codec error handler writing a character as ``\\u00e9``: never as ``\\xe9``, which
    :func:`with_bytes_shown` writes for a byte."""
    codecs.register_error("anisearch.code-points", _code_point)
    return "anisearch.code-points"


def _unmistakable(char: str) -> str:
    """``char`` of a name as :func:`shown` writes it before the bytes and the encoding are seen to."""
    if char == "\\":
        return "\\\\"  # so that a name's own "\\xe9" is not read as the escape of a byte
    point = ord(char)
    if char.isprintable() or _SURROGATES[0] <= point <= _SURROGATES[1]:  # a byte: with_bytes_shown's
        return char
    return f"\\u{point:04x}" if point < _ASTRAL else f"\\U{point:08x}"  # a tab, a zero-width space


_SURROGATES = (0xD800, 0xDFFF)


def shown(name: str) -> str:
    """A file name as text a terminal can show, never as a look-alike of another file's name: bytes that
    are not valid UTF-8 as ``\\xNN``; characters stdout's encoding cannot carry, and invisible ones (a tab,
    a zero-width space), as ``\\u2013`` (``\\u00e9`` for é: ``-`` for an en dash, or ``\\xe9``, would name
    another file); and a backslash as ``\\\\``."""
    text = with_bytes_shown("".join(_unmistakable(char) for char in name))
    return _carried(text, getattr(sys.stdout, "rich_proxied_file", sys.stdout), _code_points())


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---------------------------------------------------------------------------------------------- logging

_LOGGERS = ("anisearch", "anisearch_providers", "stamina", "httpx", "py.warnings")
"""Library warnings (Pillow's, among others) are logged through ``py.warnings``: shown with ``-v`` only."""

searching: ContextVar[str | None] = ContextVar("anisearch_cli_searching", default=None)
"""The input a batch's search is for, as the batch's result line shows it: its ``-v`` lines (attempts,
requests, retries) start with it, since searches in flight at once (``-j``) interleave. Warnings without
``-v`` do not: they are about what every search shares (the cache, the ledger)."""


def for_input(line: str) -> str:
    """``line``, named after the input being searched when a batch searches several (:data:`searching`)."""
    label = searching.get()
    return line if label is None else f"{label}: {line}"


class _NamesInput(logging.Filter):
    """Gives each record the input it came from (``anisearch_input``: ``"shot.jpg: "``, or nothing), which
    the ``-v`` formats put before the message."""

    def filter(self, record: logging.LogRecord) -> bool:
        label = searching.get()
        record.anisearch_input = "" if label is None else f"{label}: "
        return True


class _AttemptsApart(logging.Filter):
    """An attempt's record is left out: :func:`log_attempt` prints each attempt once, with its time."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not hasattr(record, "anisearch_outcome")


class _Warnings(logging.Handler):
    """Without ``-v``: anisearch's own warnings (a cache it cannot use, a ledger it had to start afresh),
    one line each on stderr, since they mean searches may cost quota the user expects to keep."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "anisearch_outcome"):  # an attempt: the command reports its outcome itself
            return
        err().print(f"warning: {record.getMessage()}", markup=False, highlight=False, style="yellow")


@contextlib.contextmanager
def own_warnings() -> Iterator[None]:
    """For a command that says itself what is wrong (``cache info``): anisearch's warnings stay off stderr
    meanwhile, so the problem is told once."""
    logger = logging.getLogger("anisearch")
    previous, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = previous


_INSTALLED: list[tuple[logging.Logger, logging.Handler]] = []
"""The handlers this module added, so a second command in one process replaces them."""


_ROOT = {"verbose": False}
"""``anisearch -v COMMAND``: the flag given before the command, for the command to honour."""


def root_verbose(value: bool) -> None:
    """Remember ``-v`` given before the command (``anisearch -v search ...``)."""
    _ROOT["verbose"] = value


def _verbose_handler() -> logging.Handler:
    """``-v`` records: rich's columns on a terminal; one plain line per record into a file or a pipe, never
    wrapped at a width (``grep`` finds a whole URL)."""
    console = err()
    if console.is_terminal:
        from rich.logging import RichHandler

        rich = RichHandler(console=console, show_path=False, log_time_format="%H:%M:%S.%f")
        rich.addFilter(_NamesInput())
        rich.setFormatter(logging.Formatter("%(anisearch_input)s%(message)s"))
        return rich
    handler = logging.StreamHandler(console.file)
    handler.addFilter(_NamesInput())
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s.%(msecs)03d %(levelname)-7s %(anisearch_input)s%(message)s", "%H:%M:%S"
        )
    )
    return handler


def configure_logging(verbose: bool) -> bool:
    """``-v``: requests, attempts and retries on stderr with times. Otherwise only anisearch's warnings
    reach stderr, one line each (a cache it cannot use, a damaged file it started afresh).

    Returns whether verbose output is on (``-v`` after the command, or before it).
    """
    verbose = verbose or _ROOT["verbose"]
    from anisearch._retry import log_retries_with_logging

    log_retries_with_logging()  # never through structlog onto stdout: told on stderr, as -v shows
    logging.captureWarnings(True)  # noqa: FBT003 - stdlib API; warnings obey -v like every log record
    while _INSTALLED:
        logger, old = _INSTALLED.pop()
        logger.removeHandler(old)
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        handler: logging.Handler
        if verbose:
            handler = _verbose_handler()
            handler.addFilter(_AttemptsApart())
            logger.setLevel(logging.INFO)
        else:  # a handler is found before logging's last resort, which would print every warning
            handler = _Warnings() if name == "anisearch" else logging.NullHandler()
            logger.setLevel(logging.NOTSET)
        logger.addHandler(handler)
        _INSTALLED.append((logger, handler))
    return verbose


def log_attempt(attempt: Any) -> None:
    """``-v``: one stderr line per provider attempt with its outcome and time (in a batch, after its
    input's name)."""
    reason = f": {attempt.reason}" if attempt.reason else ""
    err().print(
        for_input(f"{attempt.provider} {attempt.outcome} in {attempt.elapsed_seconds:.2f} s{reason}"),
        markup=False,
        highlight=False,
        style="dim",
    )


# ---------------------------------------------------------------------------------------------- times


def clock(seconds: float | None) -> str:
    """Seconds into an episode as ``mm:ss`` (``h:mm:ss`` past an hour), or ``-``."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _span(delta_seconds: float) -> str:
    total = int(abs(delta_seconds) // 60)
    days, rest = divmod(total, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days} d"] if days else []
    if hours:
        parts.append(f"{hours} h")
    if minutes or not parts:
        parts.append(f"{minutes} min")
    return " ".join(parts[:2])  # "2 d 3 h", "3 h 12 min": two units are enough


_DAY = 24 * 3600


def when(moment: datetime | None, now: datetime | None = None) -> str:
    """A time as the user reads it: local time with its zone plus how far away (``in 3 h 12 min``).

    A moment to come is shown at the minute by which it has passed (rounded up), as the errors give it
    ("quota exhausted until 2026-12-04T12:04Z"): a quota that frees at 12:03:20 reads 12:04 in both, and
    how far away is rounded up too, so a moment to come never reads "now" (12:03:20 at 12:02:40: "in
    1 min"). A moment past under a minute ago reads "now".
    """
    if moment is None:
        return "-"
    now = now or datetime.now(UTC)
    delta = (moment - now).total_seconds()
    local = (moment + timedelta(seconds=59) if delta > 0 else moment).astimezone()
    stamp = local.strftime("%H:%M %Z" if abs(delta) < _DAY else "%Y-%m-%d %H:%M %Z")
    if delta > 0:
        return f"{stamp} (in {_span(math.ceil(delta / 60) * 60)})"
    if delta > -60:  # noqa: PLR2004 - under a minute ago reads as now
        return f"{stamp} (now)"
    return f"{stamp} ({_span(delta)} ago)"


# ---------------------------------------------------------------------------------------------- layouts


def records(
    rows: Sequence[dict[str, str]],
    *,
    title: str,
    empty: str,
    key: str | None = None,
    styles: Sequence[str] = (),
    blocks: bool = False,
) -> None:
    """Print rows as a table when it fits the terminal, else (or with ``blocks``) one block per row; never
    cut a value.

    ``key`` names the column that heads each block in the vertical layout. The values and the title are
    laid out as stdout's encoding carries them (:func:`legible`).
    """
    if not rows:
        err().print(empty, markup=False, highlight=False)
        return
    rows = [{column: legible(value) for column, value in row.items()} for row in rows]
    title = legible(title)
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    columns = [
        c for c in rows[0] if c == key or any(row[c] not in {"-", ""} for row in rows)
    ]  # no empty column
    widths = [max(len(column), *(len(row[column]) for row in rows)) for column in columns]
    natural = sum(widths) + 3 * len(columns) + 1
    if natural <= out().width and not blocks:
        table = Table(title=title, title_justify="left", expand=False)
        for column in columns:
            table.add_column(column, no_wrap=True, overflow="fold")
        for index, row in enumerate(rows):
            table.add_row(
                *(Text(row[c]) for c in columns), style=styles[index] if index < len(styles) else None
            )
        out().print(table)
        return
    if title:
        out().print(Text(title, style="bold"))
    head = key or columns[0]
    for index, row in enumerate(rows):
        style = styles[index] if index < len(styles) else ""
        out().print(Text(row[head], style=f"bold {style}".strip()))
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")  # a long value wraps under itself, never cut short
        for column in columns:
            if column != head:
                grid.add_row(column, Text(row[column]), style=style or None)
        block = Padding(grid, (0, 0, 0, 2), expand=False)
        if out().is_terminal:
            out().print(block)
        else:  # a pipe gets no trailing spaces (grep, diff)
            with out().capture() as captured:
                out().print(block)
            lines = "\n".join(line.rstrip() for line in captured.get().splitlines())
            out().print(Text.from_ansi(lines), soft_wrap=True)  # colours kept when forced


class Command(typer.core.TyperCommand):
    """A command whose arguments show their metavar alone (``IMAGE...``, not ``{inputs}... <list[str]>``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, typer.core.TyperArgument) and param.metavar:
                suffix = "..." if param.nargs != 1 else ""
                usage = (param.metavar if param.required else f"[{param.metavar}]") + suffix
                param.display_type_rich = _no_type  # type: ignore[method-assign]  # the metavar says it
                # typer's hook for the usage line (``{inputs}...`` otherwise)
                param._usage_display_name = functools.partial(str, usage)  # type: ignore[method-assign]  # noqa: SLF001


def _no_type(ctx: Any) -> None:  # noqa: ARG001 - typer's display_type_rich(ctx) signature
    return None
