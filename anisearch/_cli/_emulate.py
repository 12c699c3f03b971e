"""``anisearch emulate`` (the upstreams on loopback) and ``anisearch cache``."""

# No `from __future__ import annotations`: typer reads every command's annotations when it builds the
# command line (even for --help); evaluated once here they cost less than strings evaluated then.

import contextlib
import inspect
import json
import re
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
import typer._click.core
import typer._click.formatting

from anisearch._cli._common import (
    EXIT_USAGE,
    Command,
    JsonOption,
    complete_emulators,
    err,
    examples,
    exit_code,
    fail,
    listening_socket,
    out,
    own_warnings,
    print_json,
)
from anisearch._exceptions import AnisearchError

T = TypeVar("T")

_JSON_NAMES = frozenset({"bool", "int", "float", "str", "Any"})
"""Types JSON gives a value of on the command line (``None`` aside: a knob that takes only None is none)."""
_JSON_CONTAINERS = frozenset({"Mapping", "Sequence", "dict", "list", "tuple"})
"""Generic types JSON gives (as an object or an array) when it can give what they hold."""
EXTRA_HINT = "pip install 'anisearch-gateway[emulator]'"
MAX_PORT = 65535
FIRST_PORT = 8000
"""Where emulators without a ``DEFAULT_PORT`` start counting (after the highest declared one)."""


def available_emulators() -> list[str]:
    """The registry's emulator names (loaded on use: ``anisearch --help`` reads no entry point)."""
    from anisearch._provider import available_emulators as registered

    return registered()


def load_emulator(name: str) -> Any:
    """The registry's emulator factory ``name``.

    Raises:
        UnknownProviderError: No emulator is registered under ``name``.
        ConfigurationError: It cannot be imported (install the ``emulator`` extra).
    """
    from anisearch._provider import load_emulator as registered

    return registered(name)


def _emulators() -> list[str]:
    """Installed emulator names, each once (two installed distributions may register the same ones)."""
    return sorted(set(available_emulators()))


def _takes_json(annotation: Any) -> bool:
    """Whether JSON can give a knob of this annotation (``int | None``, ``Literal["a", "b"]``,
    ``Mapping[str, str]``...), not an object only code makes (a callable, a transport, a dataclass).

    A union takes JSON when one of its members does, so ``Mapping[str, EmulatedUser | int] | None`` (a JSON
    object of tiers) is a knob while ``Callable[[], float]`` and ``httpx.AsyncBaseTransport | None`` are
    not. Annotations come as strings (``from __future__ import annotations``) or as types.
    """
    if annotation is inspect.Parameter.empty:
        return True
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    return _json_gives(text.replace("typing.", "").replace("collections.abc.", ""))


def _split(text: str, separator: str) -> list[str]:
    """``text`` cut at each ``separator`` outside brackets, each part stripped."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += (char == "[") - (char == "]")
        if char == separator and depth == 0:
            parts.append(text[start:index].strip())
            start = index + 1
    return [*parts, text[start:].strip()]


def _json_gives(text: str) -> bool:
    """Whether a value JSON can express, other than null, fits the annotation ``text``."""
    for member in _split(text, "|"):
        head, bracket, inner = member.partition("[")
        arguments = _split(inner.removesuffix("]"), ",") if bracket else []
        if (head in _JSON_NAMES and not bracket) or head == "Literal":
            return True
        if head in {"Optional", "Union"} and any(_json_gives(argument) for argument in arguments):
            return True
        if head in _JSON_CONTAINERS and all(a == "..." or _json_gives(a) for a in arguments):
            return True
    return False


def _json_default(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def knobs_of(factory: Any) -> dict[str, Any] | None:
    """The knobs an emulator factory takes that can be given on the command line, with their defaults.

    Only knobs JSON can give are listed (numbers, strings, flags, lists and mappings of them, also where
    code may give an object instead: ``keys`` of trace.moe's emulator takes ``{"MYKEY": 4}``); one only
    code can give (a callable, an object, bytes) is not, even with a None default. None when the
    factory takes arbitrary keywords (``**knobs``) without declaring them.
    """
    parameters = inspect.signature(factory).parameters.values()
    named = {
        p.name: p.default
        for p in parameters
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        and p.default is not p.empty
        and _json_default(p.default)
        and (isinstance(p.default, bool | int | float | str) or _takes_json(p.annotation))
    }
    if not named and any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return named


def _takes_any(factory: Any) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values())


def knobs_help() -> str:
    """The knobs of every installed emulator, for ``emulate --help`` (computed when help is asked for)."""
    lines = []
    factories: dict[str, Any] = {}
    for name in _emulators():
        try:
            knobs = knobs_of(factories.setdefault(name, load_emulator(name)))
        except AnisearchError:
            lines.append(f"  {name}: needs the emulator extra ({EXTRA_HINT})")
            continue
        if knobs is None:
            lines.append(f"  {name}: takes knobs its factory does not list")
        else:
            listed = ", ".join(f"{k}={json.dumps(v)}" for k, v in knobs.items()) or "none"
            lines.append(f"  {name}: {listed}")
    ports = ", ".join(f"{name} {where}" for name, where in plan_ports(factories, None).items())
    return (
        f"Default ports: {ports or f'none here: the emulators need the emulator extra ({EXTRA_HINT})'}\n\n"
        "Knobs (-o KEY=VALUE, VALUE as JSON; defaults shown):\n\n" + "\n\n".join(lines)
    )


def default_port(factory: Any) -> int | None:
    """The port an emulator declares (``DEFAULT_PORT`` in its factory's module), or None."""
    module = sys.modules.get(getattr(factory, "__module__", "") or "")
    port = getattr(module, "DEFAULT_PORT", None)
    return port if isinstance(port, int) and not isinstance(port, bool) and 0 < port <= MAX_PORT else None


def plan_ports(factories: dict[str, Any], base: int | None) -> dict[str, int]:
    """Each emulator's port: its own ``DEFAULT_PORT`` (so adding an emulator moves no other), then the
    ones that declare none after the highest, by name. ``base`` moves them all by the same offset so
    that the lowest lands on it (one emulator: exactly ``base``).
    """
    declared = {name: default_port(factory) for name, factory in factories.items()}
    ports = {name: port for name, port in declared.items() if port is not None}
    after = max(ports.values(), default=FIRST_PORT - 1) + 1
    for name in sorted(name for name, port in declared.items() if port is None):
        ports[name], after = after, after + 1
    if base is not None and ports:
        shift = base - min(ports.values())
        ports = {name: port + shift for name, port in ports.items()}
    return dict(sorted(ports.items(), key=lambda item: item[1]))


class EmulateCommand(Command):
    """Adds the installed emulators' knobs to ``--help`` when it is shown (not at every start-up)."""

    def format_help(
        self, ctx: typer._click.core.Context, formatter: typer._click.formatting.HelpFormatter
    ) -> None:
        if "Knobs (" not in (self.epilog or ""):
            self.epilog = f"{self.epilog or ''}\n\n{knobs_help()}"
        super().format_help(ctx, formatter)


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        fail(f"--option takes KEY=VALUE, not {text!r}", EXIT_USAGE, "for example -o latency=0.5")
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value


def _check_extra() -> None:
    """Import what the emulators need at request time too (Starlette; python-multipart for uploads).

    Raises:
        ImportError: One is missing (``name`` says which).
    """
    import importlib

    importlib.import_module("starlette")
    try:
        importlib.import_module("python_multipart")
    except ImportError:  # python-multipart before 0.0.13 has only the old module name
        try:
            importlib.import_module("multipart")
        except ImportError:
            raise ModuleNotFoundError("python_multipart", name="python_multipart") from None


def _bind_all(host: str, ports: list[int]) -> list[socket.socket]:
    """One bound socket per port; a port that cannot be had closes the others and ends the command in one
    line."""
    bound: list[socket.socket] = []
    try:
        bound.extend(listening_socket(host, port) for port in ports)
    except BaseException:
        for other in bound:
            other.close()
        raise
    return bound


def _load(emulator: str) -> Any:
    try:
        return load_emulator(emulator)
    except AnisearchError as exc:
        fail(str(exc), exit_code(exc), "'anisearch emulate -h' lists the emulators")


def _build(emulator: str, knobs: dict[str, Any], *, strict: bool, factory: Any = None) -> Any:
    """The emulator's app with the knobs it takes; with ``strict``, an unknown knob is an error."""
    factory = factory if factory is not None else _load(emulator)
    try:
        return _call(emulator, factory, knobs, strict=strict)
    except TypeError as exc:  # a factory taking **knobs refused one
        fail(
            f"the {emulator} emulator refused its knobs: {exc}",
            EXIT_USAGE,
            "'anisearch emulate -h' lists them",
        )


def _call(emulator: str, factory: Any, knobs: dict[str, Any], *, strict: bool) -> Any:
    known = knobs_of(factory)
    if known is not None and not _takes_any(factory):
        accepted = set(inspect.signature(factory).parameters)
        unknown = sorted(set(knobs) - accepted)
        if unknown and strict:
            listed = ", ".join(sorted(known)) or "none"
            fail(
                f"the {emulator} emulator has no knob {', '.join(unknown)}",
                EXIT_USAGE,
                f"its knobs: {listed}",
            )
        knobs = {k: v for k, v in knobs.items() if k in accepted}
        parameters = inspect.signature(factory).parameters
        for name, value in knobs.items():
            annotation = parameters[name].annotation
            if name in known and (wanted := _kind_mismatch(known[name], annotation, value)) is not None:
                example = known[name]
                fail(
                    f"the {emulator} emulator's knob {name} takes {wanted}, not {json.dumps(value)}",
                    EXIT_USAGE,
                    "'anisearch emulate -h' lists its knobs"
                    if example is None
                    else f"for example -o {name}={json.dumps(example)}",
                )
    try:
        return factory(**knobs)
    except TypeError:
        if strict or not knobs:
            raise
        return factory()  # "all": a knob is for the emulators that take it; this one takes none of them
    except ValueError as exc:
        fail(
            f"the {emulator} emulator refused its knobs: {exc}",
            EXIT_USAGE,
            "'anisearch emulate -h' lists them",
        )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_KINDS: dict[frozenset[str], tuple[str, Callable[[Any], bool]]] = {
    frozenset({"bool"}): ("true or false", lambda v: isinstance(v, bool)),
    frozenset({"int"}): ("a whole number", lambda v: _number(v) and isinstance(v, int)),
    frozenset({"float"}): ("a number", _number),
    frozenset({"int", "float"}): ("a number", _number),
    frozenset({"str"}): ("a string", lambda v: isinstance(v, str)),
}
"""The plain kinds of knob, by the type names of their annotation: what each takes, and the test."""


def _kind_mismatch(default: Any, annotation: Any, value: Any) -> str | None:
    """What a knob of a plain kind (a flag, a number, a string, or None) takes when ``value`` is something
    else (``-o quota=lots`` arrives as the string "lots"); None when it fits or the kind is not plain."""
    if annotation is inspect.Parameter.empty:
        names = {type(default).__name__}
    else:
        text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
        names = set(re.findall(r"[A-Za-z_]\w*", text.replace("typing.", "")))
    optional = "None" in names
    kind = _KINDS.get(frozenset(names - {"None"}))
    if kind is None or (value is None and optional) or kind[1](value):
        return None
    return kind[0] + (" or null" if optional else "")


def _plan(names: list[str], knobs: dict[str, Any], port: int | None) -> list[tuple[str, int, Any]]:
    """(name, port, app) per emulator, in port order; an impossible port or a bad knob ends the command."""
    factories = {emulator: _load(emulator) for emulator in names}
    ports = plan_ports(factories, port)
    if max(ports.values()) > MAX_PORT:
        fail(f"--port {port} moves a port past {MAX_PORT}", EXIT_USAGE, "choose a lower --port")
    return [
        (emulator, where, _build(emulator, knobs, strict=len(names) == 1, factory=factories[emulator]))
        for emulator, where in ports.items()
    ]


def emulate(
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME",
            help="tracemoe, whatanimeisthis, whatanime-ga, anilist, or all.",
            autocompletion=complete_emulators,
        ),
    ] = "all",
    port: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Port (default: the emulator's own, listed below; with all, every port moves by the same "
            "offset so that the lowest is N).",
            min=1,
            max=65535,
            show_default=False,
        ),
    ] = None,
    host: Annotated[str, typer.Option(metavar="HOST", help="Address to listen on.")] = "127.0.0.1",
    quota: Annotated[
        int | None,
        typer.Option(metavar="N", help="Searches allowed per window (emulators with a quota knob).", min=0),
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-o",
            metavar="KEY=VALUE",
            help="An emulator knob (VALUE as JSON).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the upstreams' emulators on loopback, for offline work.

    Each emulator follows its upstream's contract: routes, bodies, status codes, quota windows,
    concurrency and rate limits. Stop with Ctrl-C.
    """
    try:
        import anyio
        import uvicorn

        _check_extra()
    except ImportError as exc:
        fail(f"the emulators need the 'emulator' extra ({exc.name} is missing)", EXIT_USAGE, EXTRA_HINT)

    names = _emulators() if name == "all" else [name]
    if not names:
        fail("no emulator is installed", EXIT_USAGE, EXTRA_HINT)
    knobs = dict(_parse_option(o) for o in option or [])
    if quota is not None:
        knobs["quota"] = quota
    planned = _plan(names, knobs, port)
    sockets = _bind_all(host, [where for _, where, _ in planned])
    servers = []
    for emulator, where, app in planned:
        config = uvicorn.Config(app, host=host, port=where, log_level="warning", lifespan="off")
        servers.append(uvicorn.Server(config))
        url = f"http://{host}:{where}"
        env = f"ANISEARCH_{emulator.upper().replace('-', '_')}_URL"
        out().print(f"{emulator}: {url}   export {env}={url}", markup=False, highlight=False)
        demo = getattr(app.state, "demo_accounts", None)
        for email, password in dict(demo or {}).items():
            out().print(f"  demo account: {email} / {password}", markup=False, highlight=False)
    err().print("serving; Ctrl-C stops", style="dim", highlight=False)

    async def serve() -> None:
        async with anyio.create_task_group() as group:
            for server, sock in zip(servers, sockets, strict=True):
                group.start_soon(server.serve, [sock])

    try:
        with contextlib.suppress(KeyboardInterrupt):
            anyio.run(serve)
    finally:
        for sock in sockets:
            sock.close()


cache_app = typer.Typer(
    help="The local result cache.",
    no_args_is_help=True,
    epilog=examples("anisearch cache info", "anisearch cache clear"),
)


def _cache() -> Any:
    """The configured result cache: a ``ResultCache`` (SQLite) or a ``RedisResultCache``."""
    from anisearch._cache import ResultCache
    from anisearch._cache_redis import RedisResultCache
    from anisearch._config import Settings, is_redis_url

    try:
        settings = Settings.load()
    except AnisearchError as exc:
        fail(str(exc), exit_code(exc))
    if is_redis_url(settings.cache):
        try:
            return RedisResultCache(str(settings.cache), ttl_seconds=settings.cache_ttl)
        except ImportError:
            fail(
                "ANISEARCH_CACHE names Redis but the redis client is not installed",
                EXIT_USAGE,
                "pip install 'anisearch-gateway[redis]'",
            )
    if settings.cache_path is None:
        fail("the cache is off (ANISEARCH_CACHE=off)", EXIT_USAGE, "unset ANISEARCH_CACHE to use it")
    with own_warnings():  # _unusable() says what is wrong with it
        return ResultCache(settings.cache_path, ttl_seconds=settings.cache_ttl)


def _on_redis(store: Any, step: Callable[[], Awaitable[T]]) -> T:
    """``step()`` on the Redis cache ``store``; Redis out of reach is one line and exit 2."""
    import anyio
    from redis.exceptions import RedisError

    async def run() -> T:
        try:
            return await step()
        finally:
            await store.aclose()

    try:
        return anyio.run(run)
    except (RedisError, OSError) as exc:
        fail(
            f"the result cache {store.url} cannot be reached ({exc}); searches run without it",
            EXIT_USAGE,
            "check that Redis runs there (or set ANISEARCH_CACHE=off)",
        )


def _unusable(store: Any) -> None:
    """Stop with what is wrong when the cache cannot be used (searches then run without it)."""
    from anisearch._sqlite_busy import foreign

    if not store.usable:
        hint = (
            "point ANISEARCH_CACHE at a file of its own, or set it to off"
            if foreign(store.path, zeroed_ours=True)
            else "check that the file and its directory can be read and written (or set ANISEARCH_CACHE=off)"
        )
        fail(
            f"the result cache {store.path} cannot be used ({store.problem})",
            EXIT_USAGE,
            hint,
        )


@cache_app.command(
    "info", cls=Command, epilog=examples("anisearch cache info", "anisearch cache info --json")
)
def cache_info(as_json: JsonOption = False) -> None:
    """Where the cache is, how many results it holds and its size."""
    from anisearch._cache_redis import RedisResultCache

    store = _cache()
    if isinstance(store, RedisResultCache):  # shared in Redis: it drops expired answers itself
        where, (entries, size) = store.url, _on_redis(store, store.info)
        expired = 0
    else:
        _unusable(store)
        info = store.info()
        where, entries, expired, size = str(info.path), info.entries, info.expired, info.size_bytes
    if as_json:
        print_json({"path": where, "entries": entries, "expired": expired, "size_bytes": size})
        return
    out().print(
        f"{where}: {entries} result(s), {expired} expired, {size} bytes", markup=False, highlight=False
    )


@cache_app.command("clear", cls=Command, epilog=examples("anisearch cache clear"))
def cache_clear() -> None:
    """Delete every cached result (in a shared Redis cache, every process's), and the cached titles."""
    from anisearch._cache_redis import RedisResultCache

    store = _cache()
    if isinstance(store, RedisResultCache):
        removed = _on_redis(store, store.clear)
    else:
        with own_warnings():
            removed = store.clear()
        _unusable(store)
    out().print(f"removed {removed} cached result(s)")
    titles = _clear_titles()
    if titles:
        out().print(f"removed the cached titles of {titles} AniList ID(s)")


def _clear_titles() -> int:
    """Empty the metadata cache (titles per AniList ID), which sits next to the results; how many IDs."""
    from anisearch._anime_cache import AnimeCache
    from anisearch._config import Settings
    from anisearch._enrich import metadata_cache_path

    path = metadata_cache_path(Settings.load())
    if path is None or not path.exists():
        return 0
    with own_warnings():
        titles = AnimeCache(path)
        try:
            cleared = titles.clear()
        finally:
            titles.close()
    if cleared is None:
        held = "holds" in (titles.problem or "")
        hint = "try again once the other anisearch process is done" if held else None
        fail(f"the cached titles in {path} were not cleared ({titles.problem})", EXIT_USAGE, hint)
    return cleared
