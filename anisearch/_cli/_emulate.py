"""``anisearch emulate`` (the upstreams on loopback) and ``anisearch cache``."""

from __future__ import annotations

import contextlib
import inspect
import json
import socket
from typing import Annotated, Any

import typer
import typer._click.core
import typer._click.formatting

from anisearch._cli._common import (
    EXIT_USAGE,
    Command,
    JsonOption,
    err,
    examples,
    exit_code,
    fail,
    out,
    print_json,
)
from anisearch._config import Settings
from anisearch._exceptions import AnisearchError
from anisearch._provider import available_emulators, load_emulator

_SCALARS = (bool, int, float, str, type(None))
_STRUCTURED = ("Mapping", "Sequence", "Iterable", "Callable", "Transport", "dict", "list", "tuple")
"""Annotations of knobs that only code can give (a None default does not make them command-line knobs)."""
EXTRA_HINT = "pip install 'anisearch-gateway[emulator]'"


def _emulators() -> list[str]:
    """Installed emulator names, each once (two installed distributions may register the same ones)."""
    return sorted(set(available_emulators()))


def knobs_of(factory: Any) -> dict[str, Any] | None:
    """The knobs an emulator factory takes that can be given on the command line, with their defaults.

    None when the factory takes arbitrary keywords (``**knobs``) without declaring them.
    """
    parameters = inspect.signature(factory).parameters.values()
    named = {
        p.name: p.default
        for p in parameters
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        and p.default is not p.empty
        and isinstance(p.default, _SCALARS)
        and not (p.default is None and any(word in str(p.annotation) for word in _STRUCTURED))
    }
    if not named and any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return named


def _takes_any(factory: Any) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values())


def knobs_help() -> str:
    """The knobs of every installed emulator, for ``emulate --help`` (computed when help is asked for)."""
    lines = []
    for name in _emulators():
        try:
            knobs = knobs_of(load_emulator(name))
        except AnisearchError:
            lines.append(f"  {name}: needs the emulator extra ({EXTRA_HINT})")
            continue
        if knobs is None:
            lines.append(f"  {name}: takes knobs its factory does not list")
        else:
            listed = ", ".join(f"{k}={json.dumps(v)}" for k, v in knobs.items()) or "none"
            lines.append(f"  {name}: {listed}")
    return "Knobs (-o KEY=VALUE, VALUE as JSON; defaults shown):\n\n" + "\n\n".join(lines)


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


def _port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _build(emulator: str, knobs: dict[str, Any], *, strict: bool) -> Any:
    """The emulator's app with the knobs it takes; with ``strict``, an unknown knob is an error."""
    try:
        factory = load_emulator(emulator)
    except AnisearchError as exc:
        fail(str(exc), exit_code(exc), "'anisearch emulate -h' lists the emulators")
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


def emulate(
    name: Annotated[
        str,
        typer.Argument(metavar="NAME", help="tracemoe, whatanimeisthis, whatanime-ga, or all."),
    ] = "all",
    port: Annotated[
        int, typer.Option(metavar="N", help="Port (all: consecutive ports from here).", min=1, max=65535)
    ] = 8000,
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
    except ImportError as exc:
        fail(f"the emulators need the 'emulator' extra ({exc.name} is missing)", EXIT_USAGE, EXTRA_HINT)
    names = _emulators() if name == "all" else [name]
    if not names:
        fail("no emulator is installed", EXIT_USAGE, EXTRA_HINT)
    knobs = dict(_parse_option(o) for o in option or [])
    if quota is not None:
        knobs["quota"] = quota
    single = len(names) == 1
    planned = []
    for offset, emulator in enumerate(names):
        where = port + offset
        if not _port_is_free(host, where):
            fail(
                f"port {where} on {host} is in use",
                EXIT_USAGE,
                f"choose another with --port (e.g. --port {port + 100})",
            )
        app = _build(emulator, knobs, strict=single)
        planned.append((emulator, where, app))
    servers = []
    for emulator, where, app in planned:
        config = uvicorn.Config(app, host=host, port=where, log_level="warning", lifespan="off")
        servers.append(uvicorn.Server(config))
        url = f"http://{host}:{where}"
        env = f"ANISEARCH_{emulator.upper().replace('-', '_')}_URL"
        out.print(f"{emulator}: {url}   export {env}={url}", markup=False, highlight=False)
        demo = getattr(app.state, "demo_accounts", None)
        for email, password in dict(demo or {}).items():
            out.print(f"  demo account: {email} / {password}", markup=False, highlight=False)
    err.print("serving; Ctrl-C stops", style="dim", highlight=False)

    async def serve() -> None:
        async with anyio.create_task_group() as group:
            for server in servers:
                group.start_soon(server.serve)

    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(serve)


cache_app = typer.Typer(
    help="The local result cache.",
    no_args_is_help=True,
    epilog=examples("anisearch cache info", "anisearch cache clear"),
)


def _cache() -> Any:
    from anisearch._cache import ResultCache

    try:
        settings = Settings.load()
    except AnisearchError as exc:
        fail(str(exc), exit_code(exc))
    if settings.cache_path is None:
        fail("the cache is off (ANISEARCH_CACHE=off)", EXIT_USAGE, "unset ANISEARCH_CACHE to use it")
    return ResultCache(settings.cache_path, ttl_seconds=settings.cache_ttl)


@cache_app.command(
    "info", cls=Command, epilog=examples("anisearch cache info", "anisearch cache info --json")
)
def cache_info(as_json: JsonOption = False) -> None:
    """Where the cache is, how many results it holds and its size."""
    info = _cache().info()
    if as_json:
        print_json(
            {
                "path": str(info.path),
                "entries": info.entries,
                "expired": info.expired,
                "size_bytes": info.size_bytes,
            }
        )
        return
    out.print(
        f"{info.path}: {info.entries} result(s), {info.expired} expired, {info.size_bytes} bytes",
        markup=False,
        highlight=False,
    )


@cache_app.command("clear", cls=Command, epilog=examples("anisearch cache clear"))
def cache_clear() -> None:
    """Delete every cached result."""
    removed = _cache().clear()
    out.print(f"removed {removed} cached result(s)")
