"""Fixtures of the gateway tests: emulators and gateways on loopback, started with their lifespan."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from tests.conftest import LiveServer, free_port

from anisearch import Settings
from anisearch._server import ServerSettings, create_app
from anisearch_emulators.tracemoe import create_app as tracemoe_app
from anisearch_emulators.whatanimeisthis import create_app as whatanimeisthis_app

TOKEN = "bot-token-0123456789"
"""The token of the client ``bot`` on every test gateway."""


class Served:
    """An ASGI app served by uvicorn on loopback in a thread, with its lifespan (start-up and shutdown)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # As `anisearch serve` runs it: X-Forwarded-For is the gateway's business (trusted_proxies), never
        # uvicorn's (which would otherwise believe it from 127.0.0.1, the tests' own address).
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", proxy_headers=False
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> Served:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():  # pragma: no cover
                raise RuntimeError("the gateway did not start")
            time.sleep(0.01)
        return self

    def request_stop(self) -> None:
        """Tell the gateway to shut down (it finishes on its own thread; :meth:`stop` waits for it)."""
        self.server.should_exit = True

    def stop(self) -> None:
        self.request_stop()
        self._thread.join(timeout=30)


@dataclass
class Upstreams:
    """The two emulators behind a test gateway."""

    tracemoe: LiveServer
    whatanimeisthis: LiveServer

    @property
    def trace_state(self) -> Any:
        return self.tracemoe.app.state.emulator

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "providers": ["tracemoe", "whatanimeisthis"],
            "provider_options": {
                "tracemoe": {"url": self.tracemoe.url},
                "whatanimeisthis": {"url": self.whatanimeisthis.url},
            },
            "ledger": "memory://",
            "cache": "off",
        }
        values.update(overrides)
        return Settings.load(**values)


GatewayFactory = Callable[..., Served]


@pytest.fixture
def upstreams(live_server: Callable[[Any], LiveServer], request: pytest.FixtureRequest) -> Upstreams:
    """trace.moe's emulator (knobs from ``@pytest.mark.tracemoe(...)``) and whatanimeisthis's."""
    marker = request.node.get_closest_marker("tracemoe_knobs")
    knobs = dict(marker.kwargs) if marker else {}
    other = request.node.get_closest_marker("whatanimeisthis_knobs")
    return Upstreams(
        live_server(tracemoe_app(**knobs)),
        live_server(whatanimeisthis_app(**(other.kwargs if other else {}))),
    )


@pytest.fixture
def gateway(upstreams: Upstreams) -> Iterator[GatewayFactory]:
    """Start gateways in front of ``upstreams``: ``gateway(open=True, settings={...})``; ``transport=`` sends
    every upstream request (and download) through it."""
    started: list[Served] = []

    def start(
        settings: dict[str, Any] | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        **server: Any,
    ) -> Served:
        server.setdefault("clients", f"bot={TOKEN}")
        app = create_app(
            upstreams.settings(**(settings or {})), ServerSettings.load(**server), transport=transport
        )
        served = Served(app).start()
        started.append(served)
        return served

    yield start
    for served in started:  # shutdowns overlap (each takes uvicorn a tick or two)
        served.request_stop()
    for served in started:
        served.stop()
