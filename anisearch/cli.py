"""The ``anisearch`` command: search, quota, providers, account features, cache and emulators.

Exit codes: 0 ok, 1 no hit, 2 usage or configuration, 3 bad input, 4 every provider failed (or the
upstream failed), 5 authentication, 6 local state unusable (the quota ledger). Errors are one line on
stderr, never a traceback.
"""

from __future__ import annotations

import contextlib
import getpass
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from anisearch._config import Settings
from anisearch._exceptions import (
    AllProvidersFailedError,
    AnisearchError,
    AuthenticationError,
    ConfigurationError,
    ImageFetchError,
    InvalidImageError,
    LedgerError,
    ProviderError,
)
from anisearch._models import Quota, SearchResult
from anisearch._provider import available_emulators, load_emulator
from anisearch._router import Strategy
from anisearch._sync import Client

__all__ = ["app", "main"]

EXIT_OK, EXIT_NO_HIT, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_ALL_FAILED, EXIT_AUTH, EXIT_STATE = 0, 1, 2, 3, 4, 5, 6

app = typer.Typer(
    name="anisearch",
    help="Which anime, which episode, which second is this screenshot from?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="API keys of the signed-in whatanimeisthis.com account.", no_args_is_help=True)
cache_app = typer.Typer(help="The local result cache.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(cache_app, name="cache")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _fail(message: str, code: int) -> NoReturn:
    err.print(f"anisearch: error: {' '.join(message.split())}", markup=False, highlight=False)
    raise typer.Exit(code)


def _exit_code(exc: AnisearchError) -> int:
    local_fetch = isinstance(exc, ImageFetchError) and exc.provider is None
    bad_input = isinstance(exc, InvalidImageError) or local_fetch
    ordered: list[tuple[bool, int]] = [
        (isinstance(exc, AllProvidersFailedError), EXIT_ALL_FAILED),
        (bad_input, EXIT_BAD_INPUT),
        (isinstance(exc, AuthenticationError), EXIT_AUTH),
        (isinstance(exc, LedgerError), EXIT_STATE),
        (isinstance(exc, ConfigurationError), EXIT_USAGE),
        (isinstance(exc, ProviderError), EXIT_ALL_FAILED),
    ]
    return next((code for matched, code in ordered if matched), EXIT_USAGE)


def _describe(exc: AnisearchError) -> str:
    if isinstance(exc, AllProvidersFailedError):
        parts = [f"{a.provider} {a.outcome}: {a.reason or a.error}" for a in exc.attempts]
        return "every provider failed: " + "; ".join(parts or [str(e) for e in exc.exceptions])
    return str(exc)


@contextlib.contextmanager
def _client() -> Iterator[Client]:
    try:
        with Client(Settings.load()) as client:
            yield client
    except AnisearchError as exc:
        _fail(_describe(exc), _exit_code(exc))


def _waiting(message: str, func: Callable[[], T]) -> T:
    """Run ``func`` with a spinner on a terminal (stderr), plainly elsewhere."""
    if err.is_terminal:
        with err.status(message, spinner="dots"):
            return func()
    return func()


def _print_json(payload: Any) -> None:
    out.print_json(json.dumps(payload, ensure_ascii=False), indent=2)


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{rest:05.2f}" if hours else f"{minutes}:{rest:05.2f}"


def _result_table(result: SearchResult) -> Table:
    source = "cache" if result.cached else (result.provider or "-")
    table = Table(title=f"{len(result.hits)} hit(s) from {source}", title_justify="left")
    for column in ("similarity", "anilist", "title", "episode", "from", "to"):
        table.add_column(column, justify="right" if column in {"similarity", "anilist"} else "left")
    for hit in result.hits:
        title = hit.title.preferred() if hit.title else None
        table.add_row(
            f"{hit.similarity:.2%}",
            str(hit.anilist_id or "-"),
            title or hit.filename or "-",
            "-" if hit.episode is None else str(hit.episode),
            _fmt_time(hit.start_seconds),
            _fmt_time(hit.end_seconds),
        )
    return table


def _read_input(image: str) -> Any:
    if image == "-":
        data = sys.stdin.buffer.read()
        if not data:
            _fail("standard input is empty: pipe an image into 'anisearch search -'", EXIT_BAD_INPUT)
        return data
    if image.startswith(("http://", "https://")):
        return image
    if not os.path.exists(image):  # noqa: PTH110 - a str path straight from the command line
        _fail(f"no such file: {image}", EXIT_BAD_INPUT)
    return image


@app.command()
def search(
    image: Annotated[str, typer.Argument(help="An image or video file, an http(s) URL, or - for stdin.")],
    provider: Annotated[
        list[str] | None, typer.Option("--provider", "-p", help="Provider to ask (repeat for an order).")
    ] = None,
    anilist_id: Annotated[int | None, typer.Option(help="Only hits of this AniList ID.", min=1)] = None,
    cut_borders: Annotated[bool, typer.Option("--cut-borders", help="Trim black borders first.")] = False,
    anilist_info: Annotated[
        bool, typer.Option("--anilist-info", help="Ask for titles and metadata.")
    ] = False,
    min_similarity: Annotated[
        float | None, typer.Option(help="0..1: a weaker best hit also asks the next provider.", min=0, max=1)
    ] = None,
    strategy: Annotated[
        str, typer.Option(help="fallback (one at a time) or fanout (all at once).")
    ] = "fallback",
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the cache.")] = False,
    as_json: JsonOption = False,
    raw: Annotated[bool, typer.Option("--raw", help="With --json, include each upstream item.")] = False,
) -> None:
    """Find which anime, episode and second an image comes from."""
    if strategy not in ("fallback", "fanout"):
        _fail(f"--strategy must be fallback or fanout, not {strategy!r}", EXIT_USAGE)
    chosen: Strategy = "fanout" if strategy == "fanout" else "fallback"
    source = _read_input(image)
    with _client() as client:
        result = _waiting(
            "searching…",
            lambda: client.search(
                source,
                providers=provider or None,
                strategy=chosen,
                anilist_id=anilist_id,
                cut_borders=cut_borders,
                anilist_info=anilist_info,
                min_similarity=min_similarity,
                cache=not no_cache,
            ),
        )
    if as_json:
        _print_json(result.model_dump(mode="json", exclude=None if raw else {"hits": {"__all__": {"raw"}}}))
    else:
        out.print(_result_table(result))
        for attempt in result.attempts:
            if attempt.outcome in ("skipped", "failed"):
                err.print(f"{attempt.provider} {attempt.outcome}: {attempt.reason}", markup=False)
    if not result.hits:
        raise typer.Exit(EXIT_NO_HIT)


def _quota_rows(quotas: list[Quota]) -> Table:
    table = Table(title="quota", title_justify="left")
    for column in (
        "provider",
        "scope",
        "window",
        "limit",
        "used",
        "remaining",
        "resets at",
        "cooldown",
        "source",
    ):
        table.add_column(column)
    for q in quotas:
        table.add_row(
            q.provider,
            q.scope,
            q.window,
            "-" if q.limit is None else str(q.limit),
            "-" if q.used is None else str(q.used),
            "-" if q.remaining is None else str(q.remaining),
            q.resets_at.strftime("%Y-%m-%d %H:%M UTC") if q.resets_at else "-",
            q.cooldown_until.strftime("%H:%M:%S UTC") if q.cooldown_until else "-",
            q.source,
        )
    return table


@app.command()
def quota(
    provider: Annotated[
        str | None, typer.Argument(help="One provider; all configured ones by default.")
    ] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="Ask the free quota endpoints first.")] = False,
    as_json: JsonOption = False,
) -> None:
    """What each provider allows, what is used and when it frees."""
    with _client() as client:
        quotas = _waiting("asking…", lambda: client.quota(provider, refresh=refresh))
    if as_json:
        _print_json([q.model_dump(mode="json", exclude={"raw"}) for q in quotas])
    else:
        out.print(_quota_rows(quotas))


@app.command()
def providers(as_json: JsonOption = False) -> None:
    """The registered providers, where they point and what they can do."""
    with _client() as client:
        infos = client.providers()
    if as_json:
        _print_json([info.model_dump(mode="json") for info in infos])
        return
    table = Table(title="providers", title_justify="left")
    for column in ("name", "enabled", "signed in", "url", "capabilities"):
        table.add_column(column)
    for info in infos:
        table.add_row(
            info.name,
            "yes" if info.enabled else "no",
            "yes" if info.authenticated else "no",
            info.base_url,
            ", ".join(info.capabilities),
        )
    out.print(table)


@app.command()
def rankings(
    period: Annotated[str, typer.Option(help="daily, weekly, monthly, yearly or all.")] = "all",
    limit: Annotated[int, typer.Option(min=1, help="How many entries.")] = 50,
    include_adult: Annotated[bool, typer.Option("--include-adult", help="Include adult titles.")] = False,
    as_json: JsonOption = False,
) -> None:
    """The most-searched anime on whatanimeisthis.com."""
    with _client() as client:
        entries = _waiting("asking…", lambda: client.rankings(period, limit, include_adult))
    if as_json:
        _print_json([e.model_dump(mode="json", exclude={"raw"}) for e in entries])
        return
    table = Table(title=f"rankings ({period})", title_justify="left")
    for column in ("rank", "anilist", "title", "searches"):
        table.add_column(column)
    for e in entries:
        title = e.title.preferred() if e.title else None
        table.add_row(str(e.rank), str(e.anilist_id or "-"), title or "-", str(e.searches or "-"))
    out.print(table)


@app.command()
def recent(
    limit: Annotated[int, typer.Option(min=1, help="How many searches.")] = 20,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Recently confirmed public searches on whatanimeisthis.com."""
    with _client() as client:
        items = _waiting("asking…", lambda: client.recent_searches(limit, offset))
    if as_json:
        _print_json([i.model_dump(mode="json", exclude={"raw"}) for i in items])
        return
    table = Table(title="recent searches", title_justify="left")
    for column in ("when", "anilist", "title", "episode", "at", "similarity"):
        table.add_column(column)
    for i in items:
        table.add_row(
            i.searched_at.strftime("%Y-%m-%d %H:%M") if i.searched_at else "-",
            str(i.anilist_id or "-"),
            (i.title.preferred() if i.title else None) or "-",
            "-" if i.episode is None else str(i.episode),
            _fmt_time(i.at_seconds),
            "-" if i.similarity is None else f"{i.similarity:.2%}",
        )
    out.print(table)


@app.command()
def credits(as_json: JsonOption = False) -> None:  # noqa: A001 - the pinned command name
    """The signed-in account's search credits (whatanimeisthis.com)."""
    with _client() as client:
        result = _waiting("asking…", client.credits)
    if as_json:
        _print_json(result.model_dump(mode="json", exclude={"raw"}))
        return
    free = f" ({result.free_remaining} free today)" if result.free_remaining is not None else ""
    resets = f", renewed {result.resets_at:%Y-%m-%d %H:%M %Z}" if result.resets_at else ""
    out.print(f"{result.remaining} credits left{free}{resets}", markup=False)


@app.command()
def login(
    email: Annotated[
        str | None, typer.Option(help="Account email (or ANISEARCH_WHATANIMEISTHIS_EMAIL).")
    ] = None,
) -> None:
    """Sign in to whatanimeisthis.com; the session cookie is kept in the state dir (mode 0600)."""
    with _client() as client:
        name = client.account_provider()
        config = client.settings.provider_config(name)
        variable = f"ANISEARCH_{name.upper().replace('-', '_')}"
        email = email or config.get("email")
        password = config.get("password")
        if not email:
            if not sys.stdin.isatty():
                _fail(f"no email: pass --email or set {variable}_EMAIL", EXIT_USAGE)
            email = typer.prompt("email")
        if not password:
            if not sys.stdin.isatty():
                _fail(f"no password: set {variable}_PASSWORD or run on a terminal", EXIT_USAGE)
            password = getpass.getpass("password: ")
        _waiting("signing in…", lambda: client.sign_in(str(email), str(password)))
    out.print(f"signed in as {email}", markup=False)


@app.command()
def logout() -> None:
    """Sign out of whatanimeisthis.com and delete the stored session."""
    with _client() as client:
        _waiting("signing out…", client.sign_out)
    out.print("signed out")


@keys_app.command("list")
def keys_list(
    page: Annotated[int, typer.Option(min=1)] = 1,
    page_size: Annotated[int, typer.Option(min=1)] = 20,
    as_json: JsonOption = False,
) -> None:
    """List the account's API keys (masked)."""
    with _client() as client:
        items = _waiting("asking…", lambda: client.api_keys.list(page, page_size))
    if as_json:
        _print_json([k.model_dump(mode="json", exclude={"raw"}) for k in items])
        return
    table = Table(title="API keys", title_justify="left")
    for column in ("id", "title", "key", "status", "created"):
        table.add_column(column)
    for k in items:
        table.add_row(
            k.id,
            k.title or "-",
            k.masked_key or "-",
            k.status or "-",
            k.created_at.strftime("%Y-%m-%d %H:%M") if k.created_at else "-",
        )
    out.print(table)


@keys_app.command("create")
def keys_create(
    title: Annotated[str, typer.Argument(help="A name for the key.")], as_json: JsonOption = False
) -> None:
    """Create an API key; the key is printed this one time only."""
    with _client() as client:
        created = _waiting("creating…", lambda: client.api_keys.create(title))
        variable = f"ANISEARCH_{client.account_provider().upper().replace('-', '_')}_KEY"
    secret = created.key.get_secret_value()
    if as_json:
        _print_json({**created.model_dump(mode="json", exclude={"raw", "key"}), "key": secret})
        return
    out.print(f"created API key {created.title or title!r} ({created.id})", markup=False)
    out.print(secret, markup=False, highlight=False)
    err.print(f"this is the only time the key is shown: store it now (for example as {variable})")


@cache_app.command("info")
def cache_info(as_json: JsonOption = False) -> None:
    """Where the cache is, how many results it holds and its size."""
    from anisearch._cache import ResultCache

    settings = Settings.load()
    if settings.cache_path is None:
        _fail("the cache is off (ANISEARCH_CACHE=off)", EXIT_USAGE)
    info = ResultCache(settings.cache_path, ttl_seconds=settings.cache_ttl).info()
    if as_json:
        _print_json(
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
    )


@cache_app.command("clear")
def cache_clear() -> None:
    """Delete every cached result."""
    from anisearch._cache import ResultCache

    settings = Settings.load()
    if settings.cache_path is None:
        _fail("the cache is off (ANISEARCH_CACHE=off)", EXIT_USAGE)
    removed = ResultCache(settings.cache_path, ttl_seconds=settings.cache_ttl).clear()
    out.print(f"removed {removed} cached result(s)")


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        _fail(f"--option takes KEY=VALUE, not {text!r}", EXIT_USAGE)
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value


@app.command()
def emulate(
    name: Annotated[str, typer.Argument(help="tracemoe, whatanimeisthis, whatanime-ga, or all.")] = "all",
    port: Annotated[
        int, typer.Option(help="Port (all: consecutive ports from here).", min=1, max=65535)
    ] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    quota: Annotated[int | None, typer.Option(help="Searches allowed per window.", min=0)] = None,
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="Emulator knob KEY=VALUE (JSON value).")
    ] = None,
) -> None:
    """Serve the upstreams' emulators on loopback, for offline development and tests."""
    import anyio
    import uvicorn

    names = available_emulators() if name == "all" else [name]
    knobs = dict(_parse_option(o) for o in option or [])
    if quota is not None:
        knobs["quota"] = quota
    servers = []
    try:
        for offset, emulator in enumerate(names):
            factory = load_emulator(emulator)
            accepted = inspect.signature(factory).parameters
            usable = {k: v for k, v in knobs.items() if k in accepted}
            unknown = set(knobs) - set(accepted)
            if unknown and len(names) == 1:
                _fail(f"the {emulator} emulator has no knob {', '.join(sorted(unknown))}", EXIT_USAGE)
            config = uvicorn.Config(factory(**usable), host=host, port=port + offset, log_level="warning")
            servers.append(uvicorn.Server(config))
            env = f"ANISEARCH_{emulator.upper().replace('-', '_')}_URL"
            err.print(
                f"{emulator}: http://{host}:{port + offset}  (export {env}=http://{host}:{port + offset})"
            )
    except AnisearchError as exc:
        _fail(str(exc), _exit_code(exc))

    async def serve() -> None:
        async with anyio.create_task_group() as group:
            for server in servers:
                group.start_soon(server.serve)

    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(serve)


def main() -> None:
    """Entry point of the ``anisearch`` console script."""
    try:
        app()
    except AnisearchError as exc:  # pragma: no cover - every command catches its own
        err.print(f"anisearch: error: {_describe(exc)}", markup=False, highlight=False)
        sys.exit(_exit_code(exc))
