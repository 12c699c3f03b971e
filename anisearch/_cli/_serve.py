"""``anisearch serve``: run the trace.moe-compatible gateway under uvicorn."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from anisearch._cli._common import (
    EXIT_USAGE,
    VerboseOption,
    configure_logging,
    describe,
    exit_code,
    fail,
    listening_socket,
)
from anisearch._exceptions import AnisearchError

SERVER_HINT = "pip install 'anisearch-gateway[server]'"


def serve(
    host: Annotated[
        str | None,
        typer.Option(
            "--host", metavar="HOST", help="Address to listen on [default: 127.0.0.1, or [server] host]."
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            "-p",
            metavar="N",
            help="TCP port [default: 8080, or [server] port].",
            min=0,
            max=65535,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            "-w",
            metavar="N",
            help="Worker processes (share a sqlite:// or redis:// ledger).",
            min=1,
            max=64,
        ),
    ] = None,
    open_gateway: Annotated[
        bool,
        typer.Option(
            "--open", help="Serve callers without a token as guests (a small allowance per address)."
        ),
    ] = False,
    verbose: VerboseOption = False,
) -> None:
    """Serve trace.moe's API with fallback, for bots in any language.

    trace.moe's /search and /me, and a native /v1 API, over one quota-aware engine.

    Clients: ANISEARCH_SERVER_CLIENTS="name=token,..." or a [server.clients] table; trace.moe clients
    send their token as x-trace-key, native ones as Authorization: Bearer. Without a token a request
    gets 401, unless --open.
    """
    configure_logging(verbose)
    from anisearch._config import Settings

    try:
        import uvicorn

        from anisearch._server import ServerSettings
    except ImportError as exc:
        fail(f"the gateway needs the 'server' extra ({exc.name} is missing)", EXIT_USAGE, SERVER_HINT)
    # Worker processes read their settings from the environment: the options travel there.
    for name, value in (("HOST", host), ("PORT", port), ("WORKERS", workers)):
        if value is not None:
            os.environ[f"ANISEARCH_SERVER_{name}"] = str(value)
    if open_gateway:
        os.environ["ANISEARCH_SERVER_OPEN"] = "true"
    try:
        server = ServerSettings.load()
        from anisearch._server import create_app

        create_app(Settings.load(), server)  # every setting is checked once, before any worker starts
    except AnisearchError as exc:
        fail(describe(exc), exit_code(exc))
    ledger = Settings.load().ledger_url
    if server.workers > 1 and ledger.startswith("memory:"):
        typer.echo(
            f"anisearch serve: {server.workers} workers with a memory:// ledger do not share quotas; "
            "use the default SQLite ledger or a redis:// one",
            err=True,
        )
    if not server.clients and not server.open:
        typer.echo(
            "anisearch serve: no client is configured and the gateway is closed: every request gets 401 "
            "(set ANISEARCH_SERVER_CLIENTS or pass --open)",
            err=True,
        )
    # A taken port or a host nobody listens on: one line, before claiming to serve (uvicorn binds again,
    # with its workers: a port taken in between is then its error, not ours). Port 0: the free port the
    # system gives is the one served, and said.
    probe = listening_socket(server.host, server.port)
    port = int(probe.getsockname()[1])
    probe.close()
    typer.echo(
        f"anisearch gateway on http://{server.host}:{port} ({server.workers} worker(s)); Ctrl-C stops",
        err=True,
    )
    uvicorn.run(
        "anisearch._server:create_app",
        factory=True,
        host=server.host,
        port=port,
        workers=server.workers,
        access_log=False,  # the gateway logs requests itself, without query strings or headers
        log_level="debug" if verbose else "warning",
        timeout_graceful_shutdown=int(server.deadline + server.slot_wait) + 5,
        proxy_headers=False,  # X-Forwarded-For is read only from [server] trusted_proxies
        server_header=False,
    )
