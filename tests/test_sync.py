"""The sync facade: ``Client`` is the engine on a private loop thread, and it never holds a process open.

A client left unclosed is closed by a finalizer with a ``ResourceWarning`` (as httpx warns); closing is
idempotent; every sync method takes the async one's arguments and documents them itself.
"""

from __future__ import annotations

import gc
import inspect
import io
import os
import re
import subprocess
import sys
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import httpx
import pytest
from PIL import Image

import anisearch
from anisearch import (
    ApiKeys,
    AsyncApiKeys,
    AsyncClient,
    Client,
    ClientClosedError,
    ConfigurationError,
    Settings,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.conftest import LiveServer

SETTINGS = {"cache": "off", "ledger": "memory://"}


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "anisearch-client"]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "ANISEARCH_CACHE": "off"},
    )


def test_an_unclosed_client_lets_the_interpreter_exit_and_says_so() -> None:
    done = _run("import anisearch\nc = anisearch.Client()\nprint('made')")
    assert (done.returncode, done.stdout.strip()) == (0, "made"), done.stderr
    assert "ResourceWarning: unclosed <Client>" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_closed_client_exits_silently() -> None:
    done = _run("import anisearch\nwith anisearch.Client() as c:\n    pass\nc.close()")
    assert (done.returncode, done.stderr) == (0, "")


def test_a_dropped_client_is_closed_with_a_resource_warning() -> None:
    before = len(_loop_threads())
    client = Client(Settings.load(**SETTINGS))
    engine = client._async
    assert len(_loop_threads()) == before + 1
    with pytest.warns(ResourceWarning, match="unclosed <Client>"):
        del client  # the last reference: the finalizer runs here
    assert engine._closed
    assert len(_loop_threads()) == before  # the loop thread is gone too


FORKED = """
import os, sys, signal
import anisearch
client = anisearch.Client()  # opened at import, as under gunicorn --preload
pid = os.fork()
if pid == 0:
    signal.alarm(20)  # a hang ends the child with SIGALRM instead of the test's timeout
    try:
        client.quota("tracemoe")
    except anisearch.ClientClosedError as exc:
        print("child:", exc, flush=True)
    with anisearch.Client() as own:  # a client of its own works
        print("child: own client", own.quota("tracemoe")[0].provider, flush=True)
    sys.exit(0)  # and the inherited client does not hold the exit
_, status = os.waitpid(pid, 0)
print("parent: child ended", os.waitstatus_to_exitcode(status), flush=True)
print("parent: still works", client.quota("tracemoe")[0].provider, flush=True)
client.close()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX only")
def test_a_client_opened_before_a_fork_is_refused_in_the_child_which_exits_cleanly() -> None:
    done = _run(FORKED)
    assert done.stdout.splitlines() == [
        (
            "child: this client was opened before os.fork() and its loop runs in the parent only; open a"
            " new Client in this process"
        ),
        "child: own client tracemoe",
        "parent: child ended 0",
        "parent: still works tracemoe",
    ], done.stderr
    assert "unclosed" not in done.stderr  # the child does not warn of the parent's client


ASYNC_FORKED = """
import asyncio, os, signal
import anisearch

async def main():
    async with anisearch.AsyncClient() as engine:
        await engine.quota("tracemoe")
        pid = os.fork()  # as multiprocessing's fork does, from inside the running loop
        if pid == 0:
            signal.alarm(20)
            try:
                await engine.quota("tracemoe")
            except anisearch.ClientClosedError as exc:
                print("child:", exc, flush=True)
            await engine.aclose()  # the parent's to close: at once, and nothing of the parent's is touched
            print("child: closed", flush=True)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("parent: child ended", os.waitstatus_to_exitcode(status), flush=True)
        print("parent: still works", (await engine.quota("tracemoe"))[0].provider, flush=True)

asyncio.run(main())
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX only")
def test_an_async_client_forked_with_its_loop_is_refused_in_the_child_and_closes_at_once() -> None:
    done = _run(ASYNC_FORKED)
    assert done.stdout.splitlines() == [
        (
            "child: this AsyncClient was opened before os.fork() and belongs to the parent process; open a"
            " new AsyncClient in this process"
        ),
        "child: closed",
        "parent: child ended 0",
        "parent: still works tracemoe",
    ], done.stderr


def test_a_client_called_from_its_own_callback_refuses_and_stays_open() -> None:
    failures: list[BaseException] = []
    client: Client

    def on_attempt(_: object) -> None:
        for call in (client.close, partial(client.quota, "tracemoe")):
            try:
                call()
            except RuntimeError as exc:
                failures.append(exc)

    answer = {"frameCount": 1, "error": "", "result": []}
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json=answer))
    client = Client(Settings.load(**SETTINGS), transport, on_attempt=on_attempt)
    picture = io.BytesIO()
    Image.effect_noise((64, 36), 60).convert("RGB").save(picture, "JPEG")
    with client:
        client.search(picture.getvalue(), providers=["tracemoe"])
        assert not client.closed  # the refused close changed nothing
        assert [str(exc) for exc in failures] == [
            "a Client cannot be closed from its own on_attempt or on_wait callback (they run on its loop)",
            "a Client cannot be called from its own on_attempt or on_wait callback (they run on its loop)",
        ]
        assert client.quota("tracemoe")[0].provider == "tracemoe"  # and it works after
    assert client.closed


def test_a_client_whose_callback_ended_its_loop_says_it_is_closed_at_once() -> None:
    """A callback's SystemExit may end the loop; a call made right after, while it ends, is refused as
    closed (it raised a bare CancelledError, or anyio's RuntimeError)."""
    answer = {"frameCount": 1, "error": "", "result": []}
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json=answer))

    def leave(_: object) -> None:
        raise SystemExit(0)

    picture = io.BytesIO()
    Image.effect_noise((64, 36), 60).convert("RGB").save(picture, "JPEG")
    for _ in range(5):  # the loop's end races the next call
        client = Client(Settings.load(**SETTINGS), transport, on_attempt=leave)
        with pytest.raises(SystemExit):
            client.search(picture.getvalue(), providers=["tracemoe"])
        with pytest.raises((SystemExit, ClientClosedError)):  # the loop survived it, or is ending
            client.search(picture.getvalue(), providers=["tracemoe"])
        client.close()
        assert client.closed


def test_a_client_whose_loop_ended_says_it_is_closed() -> None:
    client = Client(Settings.load(**SETTINGS))
    client._loop.stop()  # as a callback's SystemExit ends it
    with pytest.raises(ClientClosedError, match="event loop has ended"):
        client.quota("tracemoe")
    engine = client._async
    client.close()  # and closing it raises nothing, and closes its files
    assert client.closed
    assert engine._closed


def test_close_is_idempotent_and_a_closed_client_sends_nothing() -> None:
    calls: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500)

    client = Client(Settings.load(**SETTINGS), httpx.MockTransport(record))
    client.close()
    client.close()
    with client:  # leaving the block closes a third time
        pass
    assert client.closed
    with pytest.raises(ClientClosedError, match="the client is closed; open a new Client"):
        client.quota("tracemoe", refresh=True)
    assert calls == []


def test_closing_from_another_thread_ends_a_search_with_client_closed_error(
    live_server: Callable[[Any], LiveServer], samples: Path
) -> None:
    from anisearch_emulators.tracemoe import create_app

    app = create_app(latency=2.0)
    server = live_server(app)
    client = Client(
        Settings.load(providers=["tracemoe"], provider_options={"tracemoe": {"url": server.url}}, **SETTINGS)
    )
    ended: list[BaseException] = []

    def search() -> None:
        try:
            client.search((samples / "tinted-good.jpg").read_bytes())
        except BaseException as exc:  # noqa: BLE001 - what the search ended with is the test
            ended.append(exc)

    searching = threading.Thread(target=search)
    searching.start()
    deadline = time.monotonic() + 10
    while app.state.emulator.search_requests < 1 and time.monotonic() < deadline:
        time.sleep(0.01)  # a plain thread waits until the upstream has the request
    client.close()
    searching.join(10)
    assert [type(exc) for exc in ended] == [ClientClosedError]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_aclose_is_idempotent() -> None:
    client = AsyncClient(Settings.load(**SETTINGS))
    await client.aclose()
    await client.aclose()
    async with client:
        pass


@pytest.mark.anyio
async def test_an_unclosed_async_client_warns_when_collected() -> None:
    client = AsyncClient(Settings.load(**SETTINGS))
    del client
    with pytest.warns(ResourceWarning, match="unclosed AsyncClient"):
        gc.collect()


def test_an_engine_that_cannot_start_leaves_no_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> AsyncClient:
        raise anisearch.ConfigurationError("no such ledger")

    monkeypatch.setattr("anisearch._sync.AsyncClient", refuse)
    before = len(_loop_threads())
    with pytest.raises(anisearch.ConfigurationError, match="no such ledger"):
        Client()
    assert len(_loop_threads()) == before


# ---------------------------------------------------------------------------------------------- mirror

PAIRS: list[tuple[type[Any], type[Any]]] = [(Client, AsyncClient), (ApiKeys, AsyncApiKeys)]
SYNC_ONLY = {"close", "closed"}
ASYNC_ONLY = {"aclose"}


def _public(cls: type[Any]) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}  # inherited ones too


def _section(doc: str, title: str) -> str:
    match = re.search(rf"^\s*{title}:\n(.*?)(?:\n\s*\n|\Z)", doc, re.MULTILINE | re.DOTALL)
    return match.group(1) if match else ""


def _raised(doc: str) -> set[str]:
    return set(re.findall(r"^\s+(\w+Error):", _section(doc, "Raises"), re.MULTILINE))


@pytest.mark.parametrize(("sync", "engine"), PAIRS, ids=lambda c: c.__name__)
def test_the_sync_api_has_every_async_method(sync: type[Any], engine: type[Any]) -> None:
    assert _public(sync) - SYNC_ONLY == _public(engine) - ASYNC_ONLY - {"api_keys", "settings"}


METHODS = [
    (sync, engine, name)
    for sync, engine in PAIRS
    for name in sorted(_public(sync) - SYNC_ONLY)
    if callable(getattr(sync, name))
]


@pytest.mark.parametrize(
    ("sync", "engine", "name"), METHODS, ids=lambda v: v if isinstance(v, str) else v.__name__
)
def test_each_sync_method_mirrors_the_async_one(sync: type[Any], engine: type[Any], name: str) -> None:
    ours, theirs = inspect.signature(getattr(sync, name)), inspect.signature(getattr(engine, name))
    assert list(ours.parameters.values()) == list(theirs.parameters.values())
    sync_return = str(ours.return_annotation).replace("Iterator", "AsyncIterator")
    assert sync_return == str(theirs.return_annotation)

    doc = inspect.getdoc(getattr(sync, name)) or ""
    assert "See " not in doc.split("\n")[0], f"{sync.__name__}.{name} documents itself"
    arguments = [p for p in ours.parameters if p != "self"]
    args_section = _section(doc, "Args")
    for argument in arguments:
        assert re.search(rf"^\s+{argument}:", args_section, re.MULTILINE), f"{name}: Args lists {argument}"
    if ours.return_annotation not in ("None", None):
        assert _section(doc, "Returns"), f"{name}: a Returns section"
    assert _raised(inspect.getdoc(getattr(engine, name)) or "") <= _raised(doc), f"{name}: same Raises"
    if name != "iter_recent_searches":  # a generator raises as it is iterated; documented all the same
        assert _raised(doc), f"{name}: a Raises section"


_INTERRUPTED = r"""
import os, signal, sys, threading, time
import anisearch

url, held, given_up = sys.argv[1:4]
settings = anisearch.Settings.load(
    providers=["tracemoe"], provider_options={"tracemoe": {"url": url}}, cache="off", ledger="memory://",
    metadata="off",
)
waiting = threading.Event()
with anisearch.Client(settings, on_wait=lambda _line: waiting.set()) as client:
    holder = threading.Thread(target=client.search, args=(open(held, "rb").read(),))
    holder.start()

    def interrupt() -> None:
        waiting.wait(10)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the search waits for the slot

    threading.Thread(target=interrupt).start()
    try:
        client.search(open(given_up, "rb").read())
    except KeyboardInterrupt:
        print("interrupted")
    holder.join()
    time.sleep(0.5)  # a search left running on the client's loop would be sent now, on the freed slot
"""


def test_an_interrupted_sync_search_is_not_sent_later(
    live_server: Callable[[Any], LiveServer], samples: Path
) -> None:
    """Ctrl-C (or a Jupyter kernel interrupt) while a sync search waits for a slot gives the search up:
    it is not sent once the slot frees, so it costs no quota."""
    from anisearch_emulators.tracemoe import create_app

    app = create_app(latency=1.0, concurrency=1)
    server = live_server(app)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _INTERRUPTED,
            server.url,
            str(samples / "tinted-good.jpg"),
            str(samples / "border-bad.jpg"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "interrupted"), done.stderr
    assert app.state.emulator.search_requests == 1  # the holder's search only


@pytest.mark.anyio
async def test_an_async_client_used_on_a_second_event_loop_fails_before_sending(
    live_server: Callable[[Any], LiveServer], samples: Path
) -> None:
    """Its connections belong to the loop it first ran on: on another loop (a second asyncio.run) a
    search is a ConfigurationError saying so, raised before anything is sent or charged."""
    import asyncio

    from anisearch_emulators.tracemoe import create_app

    app = create_app()
    server = live_server(app)
    client = AsyncClient(
        Settings.load(providers=["tracemoe"], provider_options={"tracemoe": {"url": server.url}}, **SETTINGS)
    )
    image = (samples / "tinted-good.jpg").read_bytes()
    assert (await client.search(image)).provider == "tracemoe"

    def on_another_loop() -> BaseException | None:
        try:
            asyncio.run(client.search(image))
        except BaseException as exc:  # noqa: BLE001 - what the search ended with is the test
            return exc
        return None

    error = await anyio.to_thread.run_sync(on_another_loop)
    assert isinstance(error, ConfigurationError)
    assert "another event loop" in str(error)

    def quota_on_another_loop() -> BaseException | None:  # the quota calls are checked too
        try:
            asyncio.run(client.quota())
        except BaseException as exc:  # noqa: BLE001 - what the call ended with is the test
            return exc
        return None

    assert isinstance(await anyio.to_thread.run_sync(quota_on_another_loop), ConfigurationError)
    assert app.state.emulator.search_requests == 1
    assert (await client.search(image)).provider == "tracemoe"  # on its own loop it goes on working
    await client.aclose()


def test_an_async_client_first_used_for_its_quota_is_bound_to_that_loop_and_closes_from_another(
    live_server: Callable[[Any], LiveServer], samples: Path
) -> None:
    import asyncio

    from anisearch_emulators.tracemoe import create_app

    app = create_app()
    server = live_server(app)
    client = AsyncClient(
        Settings.load(providers=["tracemoe"], provider_options={"tracemoe": {"url": server.url}}, **SETTINGS)
    )
    asyncio.run(client.quota())
    with pytest.raises(ConfigurationError, match="another event loop"):
        asyncio.run(client.search((samples / "tinted-good.jpg").read_bytes()))
    asyncio.run(client.aclose())  # from a third loop: what belongs to the first goes with it
    assert client._closed
    with pytest.raises(ClientClosedError):
        asyncio.run(client.quota())
    assert app.state.emulator.search_requests == 0


def test_closing_an_async_client_from_another_thread_ends_its_search_as_closed(
    live_server: Callable[[Any], LiveServer], samples: Path, tmp_path: Path
) -> None:
    """Its loop still runs a search in another thread: closing from here is done on that loop, so the
    search ends with ClientClosedError at once (not when the slow upstream answers), and is counted."""
    import asyncio

    from anisearch_emulators.tracemoe import create_app

    app = create_app(latency=10.0)
    server = live_server(app)
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    client = AsyncClient(
        Settings.load(
            providers=["tracemoe"],
            provider_options={"tracemoe": {"url": server.url}},
            cache="off",
            ledger=ledger,
        )
    )
    ended: list[BaseException | object] = []

    def search() -> None:
        async def run() -> None:
            try:
                ended.append(await client.search((samples / "tinted-good.jpg").read_bytes()))
            except BaseException as exc:  # noqa: BLE001 - what the search ended with is the test
                ended.append(exc)

        asyncio.run(run())

    searching = threading.Thread(target=search)
    searching.start()
    deadline = time.monotonic() + 10
    while not any(app.state.emulator.concurrent.values()) and time.monotonic() < deadline:
        time.sleep(0.01)  # the request is at the upstream
    closing = time.monotonic()
    asyncio.run(client.aclose())
    # at once: neither when the upstream answers (10 s) nor after the whole close wait (5 s)
    assert time.monotonic() - closing < 3
    searching.join(3)
    assert not searching.is_alive()
    assert [type(exc) for exc in ended] == [ClientClosedError]

    async def used() -> int | None:
        settings = Settings.load(
            providers=["tracemoe"],
            provider_options={"tracemoe": {"url": server.url}},
            cache="off",
            ledger=ledger,
        )
        async with AsyncClient(settings) as other:
            quotas = await other.quota("tracemoe")
        return next(q.used for q in quotas if q.window == "rolling-24h")

    assert asyncio.run(used()) == 1  # what it sent stays counted
