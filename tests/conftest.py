"""Shared fixtures: isolation from the user's environment, the shared samples, live servers on loopback.

No test touches the network: pytest-socket (``--allow-hosts`` in pyproject) refuses every connection
that is not to loopback.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import stamina
import uvicorn

# Compiled modules are cached even where PYTHONDONTWRITEBYTECODE is set (some containers set it): without
# the cache every xdist worker rewrites and compiles every test module anew (about 6 s of CPU each, most of
# collection), and every `anisearch` process a test starts compiles the package again. Git ignores
# __pycache__.
sys.dont_write_bytecode = False

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ANISEARCH_SHARED_DIR", REPO.parent / "shared"))
SAMPLES = SHARED / "upstream-samples"
REQUIRE_SAMPLES = os.environ.get("ANISEARCH_REQUIRE_SAMPLES") == "1"
"""Set by ``.ci/run``: there, missing recordings fail the run instead of skipping their tests."""


def pytest_configure(config: pytest.Config) -> None:
    """Without the recordings (a plain clone) the coverage floor is not applied: the replay tests that
    cover the parsers are skipped there, so the figure would measure the checkout, not the code. CI has the
    recordings (``ANISEARCH_REQUIRE_SAMPLES=1``) and holds the floor.

    Also keeps the real stderr (pytest captures file descriptor 2 around each test) for :func:`_dump_stuck`.
    """
    capturing = getattr(config.pluginmanager.get_plugin("capturemanager"), "_global_capturing", None)
    saved = getattr(getattr(capturing, "err", None), "targetfd_save", None)
    if isinstance(saved, int):
        _REAL_STDERR.append(os.fdopen(os.dup(saved), "w", closefd=True))
    coverage = config.pluginmanager.get_plugin("_cov")  # pytest-cov, when --cov is given
    options = getattr(coverage, "options", None)
    if not SAMPLES.is_dir() and not REQUIRE_SAMPLES and getattr(options, "cov_fail_under", None):
        options.cov_fail_under = 0  # type: ignore[union-attr]
        config.stash[_NO_FLOOR] = True


def pytest_unconfigure(config: pytest.Config) -> None:
    while _REAL_STDERR:
        _REAL_STDERR.pop().close()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if config.stash.get(_NO_FLOOR, False):
        terminalreporter.write_line(
            f"coverage floor not applied: the shared recordings are not at {SAMPLES} (a plain clone)"
        )


_NO_FLOOR = pytest.StashKey[bool]()


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: two workers per core (4 on 2 cores).

    About a third of a worker's time is spent waiting rather than computing (emulated latency, processes
    starting, windows and deadlines running out), so extra workers fill those waits with other tests: on
    2 cores the suite took 91-95 s with 4 workers against 95-97 s with 3 (same machine, same hour).
    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still decides when set (pytest-xdist's own override).
    """
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS") or config.option.numprocesses != "auto":
        return None  # pytest-xdist's own answer
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 2 * cores


def _hand_out_order(item: pytest.Item) -> int:
    if item.get_closest_marker("e2e") is not None:
        return 0
    function = getattr(item, "function", None)
    return 1 if hasattr(function, "hypothesis") else 2  # property tests run hundreds of examples


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """End-to-end and property tests first: they are the long ones, so the many short tests fill the
    workers' ends instead of one long test running alone at the end. pytest-xdist's ``worksteal`` (pyproject's
    ``addopts``) gives each worker a run of this order and lets an idle worker take the back half of a busy
    worker's queue, so the long tests spread over every worker. The sort is stable: within each group, the
    collection order."""
    items.sort(key=_hand_out_order)


STUCK_SECONDS = 300.0
"""A test still running after this long is taken to be stuck: every thread's stack and every pending
asyncio task's are written to stderr (the test goes on; nothing is killed), so a hang says where it is."""


_REAL_STDERR: list[Any] = []
"""The stderr of the pytest process, past pytest's capture, when it could be had."""


def _dump_stuck(name: str) -> None:  # pragma: no cover - only when a test hangs
    import asyncio
    import faulthandler
    import gc

    out = _REAL_STDERR[0] if _REAL_STDERR else sys.__stderr__
    if out is None:
        return
    out.write(f"\n=== {name} has run for {STUCK_SECONDS:.0f} s: thread stacks, then pending asyncio tasks\n")
    out.flush()  # before faulthandler writes to the descriptor itself
    faulthandler.dump_traceback(out, all_threads=True)
    for task in [o for o in gc.get_objects() if isinstance(o, asyncio.Task) and not o.done()]:
        out.write(f"--- {task!r}\n")
        task.print_stack(file=out)
    out.flush()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Watch each test for :data:`STUCK_SECONDS` (see :func:`_dump_stuck`)."""
    watchdog = threading.Timer(STUCK_SECONDS, _dump_stuck, (item.nodeid,))
    watchdog.daemon = True
    watchdog.start()
    try:
        return (yield)
    finally:
        watchdog.cancel()


@pytest.fixture(scope="session")
def samples() -> Path:
    """``../shared/upstream-samples``: real upstream responses and screenshots, read in place.

    A plain clone has no ``../shared`` beside it: the tests that read the recordings are skipped there,
    each saying so. CI sets ``ANISEARCH_REQUIRE_SAMPLES=1``, and there their absence fails the run.
    """
    if not SAMPLES.is_dir():  # pragma: no cover - depends on the checkout, not on the code
        message = f"the shared recordings are not at {SAMPLES} (set ANISEARCH_SHARED_DIR)"
        if REQUIRE_SAMPLES:
            pytest.fail(message)
        pytest.skip(message)
    return SAMPLES


@pytest.fixture
def body(samples: Path) -> dict[str, Any]:
    """trace.moe's answer to the demo frame (``api-v1-search-tinted-good-2021.json``), as JSON."""
    data: dict[str, Any] = json.loads((samples / "api-v1-search-tinted-good-2021.json").read_text())
    return data


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    """respx over the test's requests: a request no route matches fails the test."""
    with respx.MockRouter(assert_all_called=False, assert_all_mocked=True) as router:
        yield router


@pytest.fixture(scope="session")
def _homes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One numbered home per test, under one directory per worker: made without pytest's numbered-directory
    scan (``tmp_path`` lists its parent on every call), which cost every test a few milliseconds."""
    root = tmp_path_factory.mktemp("homes")
    return (root / str(number) for number in itertools.count())


@pytest.fixture(autouse=True)
def _isolated_environment(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, _homes: Iterator[Path]
) -> None:
    """Every test gets empty config/state/cache dirs and no ANISEARCH_* variables from the caller (metadata
    lookups off). The dirs are under ``tmp_path/xdg`` when the test asks for ``tmp_path``, else in a home of
    their own."""
    home = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else next(_homes)
    for name in list(os.environ):
        if name.startswith("ANISEARCH_") and name != "ANISEARCH_SHARED_DIR":
            monkeypatch.delenv(name)
    # No AniList lookups unless a test starts the AniList emulator and turns them on (ANISEARCH_METADATA).
    monkeypatch.setenv("ANISEARCH_METADATA", "off")
    for kind in ("CONFIG", "STATE", "CACHE", "DATA"):
        path = home / "xdg" / kind.lower()
        path.mkdir(parents=True)
        monkeypatch.setenv(f"XDG_{kind}_HOME", str(path))


@pytest.fixture(autouse=True)
def _fresh_process_ledger() -> Iterator[None]:
    """The process-wide ``memory://`` ledger starts empty in every test, as in a new process, and no
    provider is remembered as unreachable."""
    from anisearch import _ledger, _router

    _ledger._SHARED_MEMORY.clear()
    _router._UNREACHED.clear()
    yield
    _ledger._SHARED_MEMORY.clear()
    _router._UNREACHED.clear()


@pytest.fixture(autouse=True)
def _stamina_testing() -> Iterator[None]:
    """Retries happen without waiting in tests (stamina's testing mode keeps the attempt count)."""
    stamina.set_testing(True, attempts=3)
    yield
    stamina.set_testing(False)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    """An ASGI app served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():  # pragma: no cover
                raise RuntimeError("the emulator did not start")
            time.sleep(0.01)
        return self

    def request_stop(self) -> None:
        """Tell the server to shut down (it finishes on its own thread; :meth:`stop` waits for it)."""
        self._server.should_exit = True

    def stop(self) -> None:
        self.request_stop()
        self._thread.join(timeout=10)


def stop_all(servers: Sequence[LiveServer]) -> None:
    """Stop servers together: each shutdown takes uvicorn a tick or two (0.1 s each), so let them overlap."""
    for server in servers:
        server.request_stop()
    for server in servers:
        server.stop()


@pytest.fixture
def live_server() -> Iterator[Callable[[Any], LiveServer]]:
    """Start ASGI apps on free loopback ports; all are stopped after the test."""
    servers: list[LiveServer] = []

    def start(app: Any) -> LiveServer:
        server = LiveServer(app).start()
        servers.append(server)
        return server

    yield start
    stop_all(servers)


class EmulatedHost:
    """An ASGI app reached in process (``httpx.ASGITransport``) at ``url``: no socket, no server thread."""

    def __init__(self, app: Any, host: str) -> None:
        self.app = app
        self.url = f"http://{host}"


class HostRouter(httpx.AsyncBaseTransport):
    """Sends each request to the app of its host; any other host cannot be reached."""

    def __init__(self, apps: dict[str, Any]) -> None:
        self._routes = {host: httpx.ASGITransport(app) for host, app in apps.items()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        route = self._routes.get(request.url.host)
        if route is None:
            raise httpx.ConnectError(f"nothing is emulated at {request.url.host}", request=request)
        return await route.handle_async_request(request)


class WeakerWhatAnimeIsThis(HostRouter):
    """Both emulators in process; whatanimeisthis's similarities scaled by 0.8 (below a 0.9 threshold)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if request.url.host != "wait.test" or not request.url.path.endswith("search"):
            return response

        def scaled(value: Any) -> Any:
            if isinstance(value, dict):
                return {
                    k: v * 0.8 if k == "similarity" and isinstance(v, float) else scaled(v)
                    for k, v in value.items()
                }
            return [scaled(item) for item in value] if isinstance(value, list) else value

        body = scaled(json.loads(await response.aread()))
        return httpx.Response(response.status_code, json=body)


@pytest.fixture
def emulated(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], EmulatedHost]:
    """Serve ASGI apps (the emulators) to every ``anisearch`` command run in this process, in process.

    ``emulated(app).url`` is the base URL to configure; the commands' clients send through one
    ``httpx.ASGITransport`` per app (the command line's private transport hook), so no port is opened.
    """
    from anisearch._cli import _common

    apps: dict[str, Any] = {}
    monkeypatch.setattr(_common, "_transport_factory", lambda: HostRouter(apps))

    def add(app: Any) -> EmulatedHost:
        host = f"emulator-{len(apps) + 1}.test"
        apps[host] = app
        return EmulatedHost(app, host)

    return add


@pytest.fixture
def tracemoe(emulated: Callable[[Any], EmulatedHost], monkeypatch: pytest.MonkeyPatch) -> EmulatedHost:
    """The trace.moe emulator, in process, as the only provider of every ``anisearch`` command run here."""
    from anisearch_emulators.tracemoe import create_app

    server = emulated(create_app())
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", server.url)
    monkeypatch.setenv("ANISEARCH_PROVIDERS", "tracemoe")
    return server


class RedisServer:
    """A real redis-server on a free loopback port, with its data in a temporary directory."""

    def __init__(self, binary: str) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.mkdtemp(prefix="anisearch-redis-")
        self._proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or self._proc.poll() is not None:  # pragma: no cover
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)

    def flush(self) -> None:
        import redis

        with redis.Redis.from_url(self.url) as client:
            client.flushdb()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Redis stops answering (SIGSTOP) without closing a connection, as a hung server does."""
        self._proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server for the session (``.ci/run`` installs Debian's ``redis-server``)."""
    binary = shutil.which("redis-server")
    if binary is None:  # pragma: no cover - .ci/run installs it; a developer machine without it fails loudly
        pytest.fail("redis-server is not installed: apt-get install redis-server (see .ci/run)")
    server = RedisServer(binary)
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of an empty database on the session's redis-server."""
    redis_server.flush()
    return redis_server.url


Cli = Callable[..., subprocess.CompletedProcess[str]]


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: bytes = b""
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m anisearch ARGS`` in its own process, with the test's environment plus ``env``."""
    done = subprocess.run(
        [sys.executable, "-m", "anisearch", *args],
        env={**os.environ, **(env or {})},
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


@pytest.fixture
def cli() -> Cli:
    """The ``anisearch`` command as a user runs it: ``cli("search", path, env={...}, stdin=b"...")``."""
    return run_cli
