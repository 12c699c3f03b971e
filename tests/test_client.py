"""The engine through its public API (sync and async), with respx in front of the real trace.moe provider."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import operator
import os
import re
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import numpy as np
import pytest
import respx
from PIL import Image

import anisearch
from anisearch import (
    AllProvidersFailedError,
    AsyncClient,
    Attempt,
    Client,
    ClientClosedError,
    ConcurrencyLimitError,
    ConfigurationError,
    ImageFetchError,
    InvalidImageError,
    ProviderError,
    ProviderTimeoutError,
    QuotaExhaustedError,
    Settings,
    UnknownProviderError,
    _fetch,
)
from anisearch._limits import MAX_HITS
from anisearch._provider import load_provider

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from tests.conftest import LiveServer

BASE = "https://trace.test"

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def public_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Name lookups answered from a table (no query leaves the machine); edit it per test."""
    table = {"img.test": ["93.184.215.14"]}

    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"{host} is not in the test's DNS table")
        return table[host]

    monkeypatch.setattr(_fetch, "resolve", resolve)
    return table


def settings(**extra: Any) -> Settings:
    return Settings.load(providers=["tracemoe"], provider_options={"tracemoe": {"url": BASE}}, **extra)


def transport(mock: respx.MockRouter) -> httpx.AsyncBaseTransport:
    return httpx.MockTransport(mock.async_handler)


def with_quota(body: dict[str, Any], quota: int, used: int) -> dict[str, Any]:
    return {"quota": quota, "quotaUsed": used, **body}


def test_sync_search_uploads_a_small_jpeg_and_normalises_hits(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path
) -> None:
    route = mock.post(f"{BASE}/search").respond(200, json=with_quota(body, 100, 7))
    seen: list[Attempt] = []
    with Client(settings(), transport(mock), on_attempt=seen.append) as client:
        result = client.search(samples / "tinted-good.jpg", anilist_info=True)
    assert result.provider == "tracemoe"
    assert result.best is not None
    assert (result.best.anilist_id, result.best.episode) == (11887, 5)
    assert [h.similarity for h in result.hits] == sorted((h.similarity for h in result.hits), reverse=True)
    assert result.quota is not None
    assert (result.quota.limit, result.quota.used) == (100, 8)
    assert [a.outcome for a in seen] == ["ok"]
    request = route.calls.last.request
    assert b'name="image"' in request.content
    assert b"image/jpeg" in request.content
    assert "anilistInfo" in request.url.params
    assert request.headers["user-agent"].startswith("anisearch/")


def test_a_callback_that_raises_costs_no_answer(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path, caplog: pytest.LogCaptureFixture
) -> None:
    route = mock.post(f"{BASE}/search").respond(200, json=body)

    def broken(_attempt: Attempt) -> None:
        raise ZeroDivisionError("a bug in the caller's metrics")

    with (
        caplog.at_level(logging.ERROR, logger="anisearch"),
        Client(settings(cache="off"), transport(mock), on_attempt=broken) as client,
    ):
        result = client.search(samples / "tinted-good.jpg")
    assert route.call_count == 1
    assert result.best is not None  # the answer the search paid for
    assert "the on_attempt callback raised; the search goes on" in caplog.text
    assert "ZeroDivisionError: a bug in the caller's metrics" in caplog.text


async def test_async_search_from_a_pil_image_and_bytes(mock: respx.MockRouter, body: dict[str, Any]) -> None:
    mock.post(f"{BASE}/search").respond(200, json=body)
    picture = Image.new("RGB", (1280, 720), (40, 90, 160))
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    async with AsyncClient(settings(cache="off"), transport(mock)) as client:
        from_pil = await client.search(picture)
        from_bytes = await client.search(buffer.getvalue())
        from_file = await client.search(io.BytesIO(buffer.getvalue()))
    assert from_pil.best == from_bytes.best == from_file.best
    assert mock.calls.call_count == 3


def test_a_url_is_downloaded_once_and_uploaded(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path, public_dns: dict[str, list[str]]
) -> None:
    image = mock.get("https://img.test/frame.jpg?size=large&x=1").respond(
        200, content=(samples / "tinted-good.jpg").read_bytes(), headers={"content-type": "image/jpeg"}
    )
    search = mock.post(f"{BASE}/search").respond(200, json=body)
    with Client(settings(), transport(mock)) as client:
        result = client.search("https://img.test/frame.jpg?size=large&x=1")
    assert result.best is not None
    assert image.call_count == search.call_count == 1
    assert "url" not in search.calls.last.request.url.params


def test_a_url_that_fails_to_download_is_an_image_fetch_error(
    mock: respx.MockRouter, public_dns: dict[str, list[str]]
) -> None:
    mock.get("https://img.test/gone.jpg").respond(404)
    with Client(settings(), transport(mock)) as client, pytest.raises(ImageFetchError, match="HTTP 404"):
        client.search("https://img.test/gone.jpg")


@pytest.mark.parametrize(
    ("status", "words"),
    [(302, "HTTP 302 without a Location$"), (304, "HTTP 304$"), (300, "HTTP 300 without a Location$")],
)
def test_a_3xx_that_leads_nowhere_is_asked_once(
    mock: respx.MockRouter, public_dns: dict[str, list[str]], status: int, words: str
) -> None:
    """A redirect without a Location (or a 304) was asked again six times, then "more than 5 redirects"."""
    route = mock.get("https://img.test/moved.jpg").respond(
        status, headers={"Location": "/elsewhere.jpg"} if status == 304 else {}
    )
    with Client(settings(), transport(mock)) as client, pytest.raises(ImageFetchError, match=words):
        client.search("https://img.test/moved.jpg")
    assert route.call_count == 1


@pytest.mark.parametrize("status", [200, 204])
def test_an_empty_answer_names_the_url(
    mock: respx.MockRouter, public_dns: dict[str, list[str]], status: int
) -> None:
    mock.get("https://img.test/empty.jpg").respond(status)
    with Client(settings(), transport(mock)) as client, pytest.raises(ImageFetchError) as caught:
        client.search("https://img.test/empty.jpg")
    assert str(caught.value) == f"https://img.test/empty.jpg answered HTTP {status} with an empty body"


@pytest.mark.parametrize("url", ["http://xn--/", "http://xn--a.test/a.jpg"])
def test_a_url_with_a_malformed_host_is_an_image_fetch_error(mock: respx.MockRouter, url: str) -> None:
    with (
        Client(settings(), transport(mock)) as client,
        pytest.raises(ImageFetchError, match="not a valid URL"),
    ):
        client.search(url)
    assert not mock.calls


def test_a_url_that_cannot_be_reached_says_so_in_words(
    mock: respx.MockRouter, public_dns: dict[str, list[str]]
) -> None:
    mock.get("https://img.test/frame.jpg").mock(
        side_effect=httpx.ConnectError("All connection attempts failed")
    )
    with Client(settings(), transport(mock)) as client, pytest.raises(ImageFetchError) as caught:
        client.search("https://img.test/frame.jpg")
    assert str(caught.value) == (
        "cannot download https://img.test/frame.jpg: "
        "the connection was refused, or the host cannot be reached"
    )


def test_a_url_that_serves_no_image_is_named_in_the_error(
    mock: respx.MockRouter, public_dns: dict[str, list[str]]
) -> None:
    mock.get("https://img.test/notes.txt").respond(200, text="just some notes\n" * 20)
    with Client(settings(), transport(mock)) as client, pytest.raises(InvalidImageError) as caught:
        client.search("https://img.test/notes.txt")
    assert str(caught.value) == "https://img.test/notes.txt: this is text, not an image"


def test_bad_input_raises_before_any_request(mock: respx.MockRouter, tmp_path: Path) -> None:
    text = tmp_path / "shot.png"
    text.write_text("hello")
    with Client(settings(), transport(mock)) as client:
        with pytest.raises(InvalidImageError):
            client.search(text)
        with pytest.raises(InvalidImageError):
            client.search(b"")
        with pytest.raises(InvalidImageError, match=r"^an empty path names no image$"):
            client.search("")  # not the working directory
        with pytest.raises(InvalidImageError, match="this is a directory, not an image file"):
            client.search(tmp_path)
    assert mock.calls.call_count == 0


def test_the_same_image_costs_quota_once(mock: respx.MockRouter, body: dict[str, Any], samples: Path) -> None:
    route = mock.post(f"{BASE}/search").respond(200, json=body)
    with Client(settings(), transport(mock)) as client:
        first = client.search(samples / "tinted-good.jpg")
        second = client.search(samples / "tinted-good.jpg")
        fresh = client.search(samples / "tinted-good.jpg", cache=False)
    assert (first.cached, second.cached, fresh.cached) == (False, True, False)
    assert second.attempts == [
        Attempt(provider="tracemoe", outcome="cached", reason="answered from the cache")
    ]
    assert second.hits == first.hits
    assert route.call_count == 2


async def test_identical_searches_in_flight_are_merged(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path
) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.2)
        return httpx.Response(200, json=body)

    route = mock.post(f"{BASE}/search").mock(side_effect=slow)
    data = (samples / "tinted-good.jpg").read_bytes()
    results: list[anisearch.SearchResult] = []
    async with AsyncClient(settings(), transport(mock)) as client:

        async def one() -> None:
            results.append(await client.search(data))

        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(one)
    assert route.call_count == 1
    assert sorted(r.cached for r in results) == [False, True, True]


@pytest.mark.parametrize("cache", [True, False])
async def test_a_search_waiting_for_an_identical_one_stops_at_its_deadline(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path, cache: bool
) -> None:
    asked, answer = anyio.Event(), anyio.Event()

    async def held(request: httpx.Request) -> httpx.Response:
        asked.set()
        await answer.wait()  # the first search holds trace.moe's only slot until the second is done
        return httpx.Response(200, json=body)

    route = mock.post(f"{BASE}/search").mock(side_effect=held)
    data = (samples / "tinted-good.jpg").read_bytes()
    async with AsyncClient(settings(), transport(mock)) as client, anyio.create_task_group() as group:
        group.start_soon(partial(client.search, data, cache=cache))
        with anyio.fail_after(10):
            await asked.wait()
            with pytest.raises(AllProvidersFailedError) as caught:
                await client.search(data, cache=cache, deadline=0.3)  # would wait for the first's answer
        answer.set()
    assert caught.group_contains(ConcurrencyLimitError)  # refused at its deadline, while the slot was held
    assert route.call_count == 1


async def test_a_deadline_holds_behind_searches_of_this_process_queued_for_the_slot(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path
) -> None:
    """A search with a deadline, queued behind another search of the process that waits for trace.moe's
    one slot (with no deadline of its own), is refused at its deadline, not when the slot comes free."""
    asked, answer, queued = anyio.Event(), anyio.Event(), anyio.Event()

    async def held(request: httpx.Request) -> httpx.Response:
        asked.set()
        await answer.wait()  # the first search holds trace.moe's only slot until the third is done
        return httpx.Response(200, json=body)

    route = mock.post(f"{BASE}/search").mock(side_effect=held)
    first, second, third = (
        (samples / name).read_bytes() for name in ("tinted-good.jpg", "flipped-good.webp", "border-bad.jpg")
    )
    client = AsyncClient(settings(), transport(mock), on_wait=lambda _: queued.set())
    async with client, anyio.create_task_group() as group:
        group.start_soon(partial(client.search, first, cache=False))
        with anyio.fail_after(10):
            await asked.wait()
            group.start_soon(partial(client.search, second, cache=False))  # waits for the slot, unbounded
            await queued.wait()
            with pytest.raises(AllProvidersFailedError) as caught:
                await client.search(third, cache=False, deadline=0.3)  # queued behind the second
        answer.set()
    assert caught.group_contains(ConcurrencyLimitError, match="queued behind other searches")
    assert route.call_count == 2  # the first and the second; the third never sent


async def test_the_same_picture_re_encoded_and_searched_at_once_costs_one_search(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path, tmp_path: Path
) -> None:
    """A picture posted by several users at once, re-encoded by each one's app: other bytes, the same
    question to trace.moe (its result-cache key). It is asked once; the others take that answer."""
    asked, answer = anyio.Event(), anyio.Event()

    async def held(request: httpx.Request) -> httpx.Response:
        asked.set()
        await answer.wait()  # every copy is searched while the first is in flight
        return httpx.Response(200, json=body)

    route = mock.post(f"{BASE}/search").mock(side_effect=held)
    with Image.open(samples / "tinted-good.jpg") as picture:
        rgb = picture.convert("RGB")
    copies = []
    for n in range(6):  # each app changes the picture a little: a pixel, and the encoding
        changed = rgb.copy()
        changed.putpixel((n, n), (255, 0, 0))
        out = io.BytesIO()
        changed.save(out, "JPEG", quality=90)
        copies.append(out.getvalue())
    assert len(set(copies)) == len(copies)
    results: list[anisearch.SearchResult] = []
    cache = str(tmp_path / "results.sqlite3")

    async def search(data: bytes) -> None:
        results.append(await client.search(data))

    client = AsyncClient(settings(cache=cache), transport(mock))
    async with client, anyio.create_task_group() as group:
        for copy in copies:
            group.start_soon(search, copy)
        with anyio.fail_after(10):
            await asked.wait()
            await anyio.sleep(0.05)  # let every copy reach the provider
        answer.set()
    assert route.call_count == 1
    assert sorted(result.cached for result in results) == [False] + [True] * 5
    merged = [result.attempts[0] for result in results if result.cached]
    assert {attempt.reason for attempt in merged} == {"answered by an identical search in flight"}
    assert {result.best.anilist_id for result in results if result.best} == {11887}  # Kokoro Connect


async def test_a_search_that_waited_for_an_identical_one_keeps_its_deadline(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path, tmp_path: Path
) -> None:
    """The same picture re-encoded waits for the first search's answer, then for the slot that search
    holds: within its one deadline, not a deadline for each wait."""
    import time

    asked, answer = anyio.Event(), anyio.Event()

    async def held(request: httpx.Request) -> httpx.Response:
        asked.set()
        await answer.wait()  # the first search holds trace.moe's only slot
        return httpx.Response(200, json=body)

    mock.post(f"{BASE}/search").mock(side_effect=held)
    with Image.open(samples / "tinted-good.jpg") as picture:
        rgb = picture.convert("RGB")
    copies = []
    for n in (1, 2):
        changed = rgb.copy()
        changed.putpixel((n, n), (255, 0, 0))
        out = io.BytesIO()
        changed.save(out, "JPEG", quality=90)
        copies.append(out.getvalue())
    client = AsyncClient(settings(cache=str(tmp_path / "results.sqlite3")), transport(mock))
    async with client, anyio.create_task_group() as group:
        group.start_soon(client.search, copies[0])  # no deadline of its own
        with anyio.fail_after(10):
            await asked.wait()
            started = time.monotonic()
            with pytest.raises(AllProvidersFailedError):
                await client.search(copies[1], deadline=1.0)
            waited = time.monotonic() - started
        answer.set()
    assert waited < 1.8  # one deadline (two would be 2 s)


def test_a_provider_without_an_address_of_its_own_caches_per_server(
    mock: respx.MockRouter, samples: Path, tmp_path: Path
) -> None:
    """whatanime-ga has no public server: an emulator's answer is never given for another server's."""
    legacy = json.loads((samples / "legacy-api-search-tinted-good-2020.json").read_text())
    emulator = mock.post("http://127.0.0.1:8301/api/search").respond(200, json=legacy)
    server = mock.post("https://legacy.example/api/search").respond(200, json=legacy)
    cache = str(tmp_path / "results.sqlite3")
    for url in ("http://127.0.0.1:8301", "https://legacy.example", "http://127.0.0.1:8301"):
        chosen = Settings.load(
            providers=["whatanime-ga"],
            provider_options={"whatanime-ga": {"url": url}},
            cache=cache,
            metadata="off",
        )
        with Client(chosen, transport(mock)) as client:
            client.search(samples / "tinted-good.jpg")
    assert (emulator.call_count, server.call_count) == (1, 1)  # each asked once; the third search cached


async def test_a_closed_client_sends_and_records_nothing(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path, tmp_path: Path
) -> None:
    route = mock.post(f"{BASE}/search").respond(json=body)
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    client = AsyncClient(settings(ledger=ledger, cache="off"), transport(mock))
    await client.aclose()
    data = (samples / "tinted-good.jpg").read_bytes()
    for call in (partial(client.search, data), partial(client.quota, "tracemoe"), client.reset_quota):
        with pytest.raises(ClientClosedError, match="the client is closed; open a new AsyncClient"):
            await call()
    assert route.call_count == 0
    async with AsyncClient(settings(ledger=ledger, cache="off"), transport(mock)) as fresh:
        (window,) = [q for q in await fresh.quota("tracemoe") if q.window == "rolling-24h"]
    assert window.used == 0  # nothing was charged for the searches never sent


async def test_a_search_waiting_for_a_pipe_or_socket_is_given_up_when_its_caller_gives_up(
    mock: respx.MockRouter, body: dict[str, Any]
) -> None:
    """``sys.stdin.buffer`` in a pipeline or ``sock.makefile("rb")`` with nothing written yet: the read ran
    in a worker thread, which cannot be cancelled, so a caller's timeout took effect only after
    ``ANISEARCH_TIMEOUT`` (10 s here), as an InvalidImageError instead of a cancellation."""
    import socket

    route = mock.post(f"{BASE}/search").respond(json=body)
    reader_fd, writer_fd = os.pipe()
    quiet_peer, ours = socket.socketpair()
    sources: list[io.BufferedReader] = [open(reader_fd, "rb"), ours.makefile("rb")]  # noqa: SIM115, PTH123
    try:
        async with AsyncClient(settings(timeout=10.0, cache="off"), transport(mock)) as client:
            for source in sources:
                started = time.monotonic()
                with anyio.move_on_after(0.3) as scope:
                    await client.search(source)
                assert scope.cancelled_caught
                assert time.monotonic() - started < 3
    finally:
        for source in sources:
            source.close()
        quiet_peer.close()
        ours.close()
        os.close(writer_fd)
    assert route.call_count == 0


def _open_files_under(folder: Path) -> int:
    """This process's open descriptors of files in ``folder`` (Linux's ``/proc/self/fd``)."""
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if str(fd.resolve(strict=False)).startswith(str(folder)))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors through /proc")
async def test_a_client_closed_in_a_cancelled_scope_still_closes_its_ledger(
    samples: Path, tmp_path: Path
) -> None:
    """``async with AsyncClient()`` under ``anyio.move_on_after`` (a web request cancelled by its caller's
    disconnect): the timeout cancelled aclose() at its first await, leaving the SQLite ledger open with
    the client already marked closed (a second aclose() closed nothing): a descriptor or more per client."""

    async def slow(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(5)
        return httpx.Response(200, json={"result": []})

    ledger = tmp_path / "ledger"
    ledger.mkdir()
    data = (samples / "tinted-good.jpg").read_bytes()
    for _ in range(3):
        client = AsyncClient(
            settings(ledger=f"sqlite:///{ledger / 'ledger.sqlite3'}", cache="off"), httpx.MockTransport(slow)
        )
        with anyio.move_on_after(0.3):
            async with client:
                await client.search(data)
    assert _open_files_under(ledger) == 0


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ({"providers": ["tracemo"]}, r"unknown provider 'tracemo'; known"),  # given in code: no variable
        ({"metadata": "anilst"}, r"unknown provider 'anilst'; known"),
        ({"ledger": "bogus://x"}, "unsupported ledger URL"),
        ({"timezone": "Mars/Base"}, "Mars/Base"),
        ({"provider_options": {"tracemo": {"url": "http://x.test"}}}, "not installed: tracemo"),
    ],
)
@pytest.mark.filterwarnings("error::ResourceWarning")  # nothing is left open by a client never made
def test_bad_settings_fail_when_the_client_is_made(setting: dict[str, Any], says: str) -> None:
    for make in (AsyncClient, Client):
        with pytest.raises(ConfigurationError, match=says):
            make(Settings.load(cache="off", **setting))


def test_an_unknown_provider_names_the_variable_that_named_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANISEARCH_PROVIDERS", "tracemo")
    with pytest.raises(ConfigurationError, match=r"unknown provider 'tracemo' \(ANISEARCH_PROVIDERS\)"):
        AsyncClient(Settings.load(cache="off"))


def test_an_unreachable_ipv6_address_is_named_in_brackets() -> None:
    from anisearch._transport import _transfer_error

    request = httpx.Request("GET", "http://[::1]:8080/search")
    error = _transfer_error(httpx.ConnectError("refused"), "tracemoe", request, "too slow", None)
    assert str(error) == "tracemoe: cannot reach [::1]:8080: refused"


def test_the_tls_context_verifies_as_httpx_would() -> None:
    """The context that reads its certificates late sets what the standard library's default one sets on
    this Python (verify flags, options, minimum version, host names)."""
    import ssl

    from anisearch._transport import tls_context

    tls_context.cache_clear()
    try:
        ours, theirs = tls_context(trust_env=False), httpx.create_ssl_context(trust_env=False)
        for name in ("verify_mode", "check_hostname", "verify_flags", "options", "minimum_version"):
            assert getattr(ours, name) == getattr(theirs, name), name
        assert ours.verify_mode == ssl.CERT_REQUIRED
    finally:
        tls_context.cache_clear()


def test_a_misspelt_provider_table_in_the_config_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[tracemo]\nurl = "http://x.test"\n[server]\nport = 9000\n[anilist]\nurl = "http://a.test"\n'
    )
    monkeypatch.setenv("ANISEARCH_CONFIG", str(config))
    with pytest.raises(ConfigurationError, match=r"not installed: tracemo \(a table of the config file"):
        AsyncClient(Settings.load(cache="off"))
    config.write_text(
        '[tracemoe]\nurl = "http://x.test"\n[server]\nport = 9000\n[anilist]\nurl = "http://a.test"\n'
        '[provider_options.whatanimeisthis]\nurl = "http://w.test"\n'
    )
    Client(Settings.load(cache="off")).close()  # installed providers' tables, [server], a setting's table


def test_under_trio_a_search_says_to_use_the_sync_client(mock: respx.MockRouter, samples: Path) -> None:
    route = mock.post(f"{BASE}/search")

    async def run() -> None:
        async with AsyncClient(settings(cache="off"), transport(mock)) as client:
            with pytest.raises(ConfigurationError, match=r"under trio, call the sync anisearch\.Client"):
                await client.search((samples / "tinted-good.jpg").read_bytes())

    anyio.run(run, backend="trio")
    assert route.call_count == 0


async def test_closing_ends_the_searches_in_flight_and_counts_what_was_sent(
    live_server: Callable[[Any], LiveServer], samples: Path, tmp_path: Path
) -> None:
    """A bot shutting down closes its client while one search waits for the upstream's answer and another
    waits for the slot: both end with ClientClosedError, and the ledger counts the one request that left
    (the upstream may run that search to its end), not the one that never did."""
    from anisearch_emulators.tracemoe import create_app

    app = create_app(latency=1.0)
    server = live_server(app)
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    configured = Settings.load(
        providers=["tracemoe"], provider_options={"tracemoe": {"url": server.url}}, ledger=ledger, cache="off"
    )
    data = (samples / "tinted-good.jpg").read_bytes()
    client = AsyncClient(configured)
    ended: list[BaseException] = []

    async def search() -> None:
        try:
            await client.search(data)
        except Exception as exc:  # noqa: BLE001 - what each search ended with is the test
            ended.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(search)
        group.start_soon(search)
        with anyio.fail_after(10):
            while app.state.emulator.search_requests < 1:  # one is in flight, the other waits for the slot
                await anyio.sleep(0.01)
        await client.aclose()
    assert [type(exc) for exc in ended] == [ClientClosedError, ClientClosedError]
    assert "closed while this search" in str(ended[0])
    assert app.state.emulator.search_requests == 1
    async with AsyncClient(configured) as fresh:
        (window,) = [q for q in await fresh.quota("tracemoe") if q.window == "rolling-24h"]
    assert window.used == 1


@pytest.mark.parametrize("give_up", ["cancel", "deadline"])
async def test_a_search_given_up_in_flight_keeps_the_slot_while_the_upstream_works_on_it(
    live_server: Callable[[Any], LiveServer], samples: Path, tmp_path: Path, give_up: str
) -> None:
    """A bot's timeout ends a search whose request trace.moe is still working on: the next search waits for
    that one to end upstream instead of meeting "Concurrency limit exceeded" (402) and backing off."""
    from anisearch_emulators.tracemoe import create_app

    app = create_app(latency=1.0)
    server = live_server(app)
    configured = Settings.load(
        providers=["tracemoe"],
        provider_options={"tracemoe": {"url": server.url}},
        ledger=f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
        cache="off",
    )
    data = (samples / "tinted-good.jpg").read_bytes()
    async with AsyncClient(configured) as client:
        await client.search(data)  # how long trace.moe takes to answer, as the client sees it
        if give_up == "cancel":
            with anyio.move_on_after(0.3):
                await client.search(data)
        else:
            with pytest.raises(AllProvidersFailedError):
                await client.search(data, deadline=0.3)
        result = await client.search(data)
    assert result.provider == "tracemoe"
    assert [a.outcome for a in result.attempts] == ["ok"]
    assert app.state.emulator.search_requests == 3  # no request refused with 402 and sent again


async def test_numbers_from_numpy_are_numbers(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path
) -> None:
    import numpy as np

    route = mock.post(f"{BASE}/search").respond(json=body)
    similarity: Any = np.float32(0.5)  # what a bot computing thresholds with numpy passes
    anilist_id: Any = np.int64(11887)
    async with AsyncClient(settings(cache="off"), transport(mock)) as client:
        image = (samples / "tinted-good.jpg").read_bytes()
        result = await client.search(image, min_similarity=similarity, anilist_id=anilist_id)
        assert route.calls.last.request.url.params["anilistID"] == "11887"
        for deadline in (np.float32(30), np.int64(30)):  # seconds computed with numpy
            assert (await client.search(image, deadline=deadline)).best is not None  # type: ignore[arg-type]
    assert result.best is not None
    assert result.best.anilist_id == 11887


@pytest.mark.parametrize(
    ("argument", "value"),
    [("anilist_id", "11887"), ("anilist_id", True), ("min_similarity", "0.9"), ("min_similarity", True)],
)
async def test_an_argument_of_the_wrong_type_is_a_configuration_error(
    mock: respx.MockRouter, samples: Path, argument: str, value: Any
) -> None:
    route = mock.post(f"{BASE}/search")
    async with AsyncClient(settings(cache="off"), transport(mock)) as client:
        with pytest.raises(ConfigurationError, match=argument):
            await client.search((samples / "tinted-good.jpg").read_bytes(), **{argument: value})
    assert route.call_count == 0


@pytest.mark.parametrize(
    ("argument", "value", "says"),
    [
        ("include_adult", "false", "include_adult must be True, False or None, got 'false' (type str)"),
        ("include_adult", 0, "include_adult must be True, False or None, got 0 (type int)"),
        ("cache", "no", "cache must be True or False, got 'no' (type str)"),
        ("cache", None, "cache must be True or False, got None (type NoneType)"),
        ("cut_borders", "yes", "cut_borders must be True or False, got 'yes' (type str)"),
        ("anilist_info", 1, "anilist_info must be True or False, got 1 (type int)"),
        ("cache", np.int64(0), "(type numpy.int64)"),  # its repr depends on the numpy version
    ],
)
async def test_a_flag_that_is_not_a_bool_is_refused_not_read_as_true(
    mock: respx.MockRouter, samples: Path, argument: str, value: Any, says: str
) -> None:
    # include_adult="false" from a bot's configuration would otherwise keep the adult hits
    anywhere = mock.route()
    async with AsyncClient(settings(cache="off"), transport(mock)) as client:
        with pytest.raises(ConfigurationError, match=re.escape(says)):
            await client.search((samples / "tinted-good.jpg").read_bytes(), **{argument: value})
    assert anywhere.call_count == 0


async def test_numpy_bools_are_flags_like_bools(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path
) -> None:
    # what df["adult"].any() or array.all() gives
    route = mock.post(f"{BASE}/search").respond(200, json=body)
    flags: dict[str, Any] = {
        "cache": np.False_,
        "cut_borders": np.True_,
        "anilist_info": np.False_,
        "include_adult": np.True_,
    }
    async with AsyncClient(settings(), transport(mock)) as client:
        result = await client.search((samples / "tinted-good.jpg").read_bytes(), **flags)
    assert result.best is not None
    assert route.call_count == 1
    assert "cutBorders" in route.calls.last.request.url.params
    assert "anilistInfo" not in route.calls.last.request.url.params


@pytest.mark.parametrize(
    ("timeout", "deadline", "says"),
    [
        (0.3, None, "no complete answer within 0.3 s"),
        # a deadline far enough away that a loaded machine still reaches the request before it
        (30.0, 1.5, "no complete answer before the search's deadline"),
    ],
)
async def test_a_slow_answer_says_which_limit_it_met(
    mock: respx.MockRouter, samples: Path, timeout: float, deadline: float | None, says: str
) -> None:
    async def stalled(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(30)
        raise AssertionError("never answered")

    mock.post(f"{BASE}/search").mock(side_effect=stalled)
    async with AsyncClient(settings(timeout=timeout, cache="off"), transport(mock)) as client:
        with pytest.raises(AllProvidersFailedError) as caught:
            await client.search((samples / "tinted-good.jpg").read_bytes(), deadline=deadline)
    assert caught.group_contains(ProviderTimeoutError, match=re.escape(says))


def test_a_spent_quota_is_known_before_the_next_request(mock: respx.MockRouter, samples: Path) -> None:
    depleted = {
        "quota": 100,
        "quotaUsed": 100,
        "error": "Search quota depleted (quota per 24 hours: 100, used: 100)",
    }
    route = mock.post(f"{BASE}/search").respond(402, json=depleted)
    with Client(settings(), transport(mock)) as client:
        with pytest.raises(AllProvidersFailedError) as first:
            client.search(samples / "tinted-good.jpg")
        assert [type(e) for e in first.value.exceptions] == [QuotaExhaustedError]
        with pytest.raises(AllProvidersFailedError) as second:
            client.search(samples / "flipped-good.webp")
    assert route.call_count == 1
    spent, skipped = first.value.exceptions[0], second.value.exceptions[0]
    assert isinstance(spent, QuotaExhaustedError)
    assert isinstance(skipped, QuotaExhaustedError)
    assert "quota exhausted until" in str(skipped)
    # the upstream's 402 names no time: the ledger's, the same the refusal of the next search gives
    assert spent.resets_at is not None
    assert (spent.resets_at, spent.window) == (skipped.resets_at, skipped.window)


def test_quota_refresh_reads_me_and_hides_the_caller_id(mock: respx.MockRouter) -> None:
    mock.get(f"{BASE}/me").respond(
        200, json={"id": "203.0.113.9", "priority": 0, "concurrency": 1, "quota": 100, "quotaUsed": "18"}
    )
    with Client(settings(), transport(mock)) as client:
        before = client.quota("tracemoe")
        after = client.quota("tracemoe", refresh=True)
    assert {q.source for q in before} == {"default"}  # nothing learned yet: the documented limits
    window = next(q for q in after if q.window == "rolling-24h")
    assert (window.limit, window.used, window.remaining, window.concurrency) == (100, 18, 82, 1)
    assert (window.priority, window.source) == (0, "upstream")
    assert "203.0.113.9" not in repr(after)
    assert all("203.0.113.9" not in json.dumps(q.model_dump(mode="json")) for q in after)


def test_a_quota_refresh_asks_every_provider_before_it_reports_the_one_that_failed(
    mock: respx.MockRouter,
) -> None:
    mock.get(f"{BASE}/me").respond(503, text="Service Unavailable")
    legacy = mock.get("https://legacy.test/api/me").respond(
        200, json={"limit": 9, "limit_ttl": 42, "user_limit": 10, "user_limit_ttl": 60}
    )
    options = {"tracemoe": {"url": BASE}, "whatanime-ga": {"url": "https://legacy.test"}}
    configured = Settings.load(providers=["tracemoe", "whatanime-ga"], provider_options=options)
    with Client(configured, transport(mock)) as client:
        with pytest.raises(ProviderError) as failed:
            client.quota(refresh=True)
        known = client.quota()
    assert failed.value.provider == "tracemoe"
    assert legacy.call_count == 1  # asked although the first provider failed
    minute = next(q for q in known if q.provider == "whatanime-ga" and q.window == "minute")
    assert (minute.limit, minute.remaining, minute.source) == (10, 9, "upstream")


def test_unknown_names_and_bad_arguments_are_usage_errors(mock: respx.MockRouter, samples: Path) -> None:
    with Client(settings(), transport(mock)) as client:
        with pytest.raises(UnknownProviderError, match=r"known providers: .*tracemoe"):
            client.search(samples / "tinted-good.jpg", providers=["tracemo"])
        with pytest.raises(ConfigurationError, match="min_similarity"):
            client.search(samples / "tinted-good.jpg", min_similarity=1.5)
        with pytest.raises(ConfigurationError, match="strategy"):
            client.search(samples / "tinted-good.jpg", strategy="shuffle")  # type: ignore[arg-type]
        with pytest.raises(
            ConfigurationError, match=r"providers takes a list of names, not a string: use \['tracemoe'\]"
        ):
            client.search(samples / "tinted-good.jpg", providers="tracemoe")
        with pytest.raises(ConfigurationError, match=r"providers must be a list of provider names, got 5"):
            client.search(samples / "tinted-good.jpg", providers=5)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match=r"not bytes: use \['tracemoe'\]"):
            client.search(samples / "tinted-good.jpg", providers=b"tracemoe")  # type: ignore[arg-type]
        with pytest.raises(
            ConfigurationError, match=r"each name in providers must be a str, got \['tracemoe'\]"
        ):
            client.search(samples / "tinted-good.jpg", providers=[["tracemoe"]])  # type: ignore[list-item]
        for deadline in (0, -1.0, float("nan"), float("inf"), "5", True):
            with pytest.raises(ConfigurationError, match="deadline must be a positive number of seconds"):
                client.search(samples / "tinted-good.jpg", deadline=deadline)  # type: ignore[arg-type]
    assert mock.calls.call_count == 0


_NOT_A_PROVIDER_NAME = (
    "provider must be one provider name (a str such as 'tracemoe') or None for every provider"
)

WRONG_TYPES: list[tuple[str, dict[str, Any], str]] = [
    ("rankings", {"limit": "5"}, "limit must be a whole number of at least 1, got '5' (type str)"),
    ("rankings", {"limit": True}, "limit must be a whole number of at least 1, got True (type bool)"),
    ("rankings", {"period": 7}, "period must be a period name (a str such as 'weekly'), got 7 (type int)"),
    ("rankings", {"include_adult": "false"}, "include_adult must be True or False, got 'false' (type str)"),
    ("recent_searches", {"limit": "x"}, "limit must be a whole number of at least 1, got 'x' (type str)"),
    ("recent_searches", {"offset": None}, "offset must be a whole number of at least 0, got None"),
    ("iter_recent_searches", {"page_size": "x"}, "page_size must be a whole number of at least 1, got 'x'"),
    ("iter_recent_searches", {"max_items": 2.5}, "max_items must be a whole number of at least 0, got 2.5"),
    ("quota", {"provider": ["tracemoe"]}, f"{_NOT_A_PROVIDER_NAME}, got ['tracemoe'] (type list)"),
    ("quota", {"refresh": "no"}, "refresh must be True or False, got 'no' (type str)"),
    ("reset_quota", {"provider": ["tracemoe"]}, f"{_NOT_A_PROVIDER_NAME}, got ['tracemoe'] (type list)"),
    ("sign_in", {"email": 5, "password": "pw"}, "email must be an email address (a str), got 5 (type int)"),
    (
        "sign_in",
        {"email": "a@site.test", "password": 1234},
        "password must be a str, got a value of type int",
    ),
    ("api_keys.list", {"page": "1"}, "page must be a whole number of at least 1, got '1' (type str)"),
    (
        "api_keys.list",
        {"page_size": 2.0},
        "page_size must be a whole number of at least 1, got 2.0 (type float)",
    ),
    ("api_keys.create", {"title": 5}, "title must be a str, got 5 (type int)"),
]
"""Wrong types given to the clients' other methods, and the refusal each gets (a TypeError from deep
inside, an AttributeError, or ``"false"`` read as true, before)."""

_SITE = {"tracemoe": {"url": BASE}, "whatanimeisthis": {"url": "https://site.test"}}


def _site_client(mock: respx.MockRouter, **site: str) -> Client:
    """A client asking whatanimeisthis alone, at ``https://site.test`` (with ``site``'s settings: an email,
    a password)."""
    options = {"whatanimeisthis": {"url": "https://site.test", **site}}
    return Client(Settings.load(providers=["whatanimeisthis"], provider_options=options), transport(mock))


def _call(client: Client, method: str, arguments: dict[str, Any]) -> object:
    answer = operator.attrgetter(method)(client)(**arguments)
    return list(answer) if method.startswith("iter_") else answer  # a generator checks when iterated


async def _acall(client: AsyncClient, method: str, arguments: dict[str, Any]) -> object:
    answer = operator.attrgetter(method)(client)(**arguments)
    return [item async for item in answer] if method.startswith("iter_") else await answer


@pytest.mark.parametrize(("method", "arguments", "says"), WRONG_TYPES)
def test_a_wrong_type_given_to_an_extra_is_refused_by_name(
    mock: respx.MockRouter, method: str, arguments: dict[str, Any], says: str
) -> None:
    settings = Settings.load(providers=["tracemoe", "whatanimeisthis"], provider_options=_SITE)
    with Client(settings, transport(mock)) as client, pytest.raises(ConfigurationError) as caught:
        _call(client, method, arguments)
    assert str(caught.value).startswith(says)
    assert "1234" not in str(caught.value)  # a password is never shown
    assert mock.calls.call_count == 0


@pytest.mark.parametrize(("method", "arguments", "says"), WRONG_TYPES)
async def test_a_wrong_type_given_to_an_extra_is_refused_by_name_async(
    mock: respx.MockRouter, method: str, arguments: dict[str, Any], says: str
) -> None:
    settings = Settings.load(providers=["tracemoe", "whatanimeisthis"], provider_options=_SITE)
    async with AsyncClient(settings, transport(mock)) as client:
        with pytest.raises(ConfigurationError) as caught:
            await _acall(client, method, arguments)
    assert str(caught.value).startswith(says)
    assert mock.calls.call_count == 0


@pytest.mark.parametrize(
    ("made_with", "message"),
    [
        ({"settings": "https://api.trace.moe"}, r"settings must be an anisearch.Settings .*got 'https://api"),
        (
            {"settings": {"providers": ["tracemoe"]}},
            r"settings must be an anisearch.Settings .*\(type dict\)",
        ),
        (
            {"transport": "http://proxy:3128"},
            r"transport must be an httpx.AsyncBaseTransport, got a value of type str",
        ),
        ({"on_attempt": 5}, r"on_attempt must be callable or None, got 5 \(type int\)"),
        ({"on_wait": "print"}, r"on_wait must be callable or None"),
    ],
)
@pytest.mark.parametrize("kind", [Client, AsyncClient])
def test_a_client_made_with_the_wrong_thing_says_which(
    kind: type[Client | AsyncClient], made_with: dict[str, Any], message: str
) -> None:
    """``Client("https://…")`` failed with a bare ``AttributeError``, and ``on_attempt=5`` at the first
    attempt; both are refused by name where the client is made."""
    with pytest.raises(ConfigurationError, match=message):
        kind(**made_with)


def test_numpy_integers_are_whole_numbers_for_the_extras(mock: respx.MockRouter) -> None:
    # what df["n"].max() or len(array) arithmetic gives; the site is sent plain numbers
    rankings = mock.get("https://site.test/api/anime/rankings").respond(200, json=[])
    recent = mock.get("https://site.test/api/anime/recent-searches").respond(200, json={"items": []})
    keys = mock.get("https://site.test/api/apikeys").respond(200, json=[])
    ranked: dict[str, Any] = {"limit": np.int64(5), "include_adult": np.False_}
    paged: dict[str, Any] = {"limit": np.int32(3), "offset": np.int64(6)}
    iterated: dict[str, Any] = {"page_size": np.int64(2), "max_items": np.int64(4)}
    listed: dict[str, Any] = {"page": np.int64(2), "page_size": np.int64(10)}
    with Client(Settings.load(providers=["whatanimeisthis"], provider_options=_SITE), transport(mock)) as c:
        assert c.rankings(**ranked) == []
        assert c.recent_searches(**paged) == []
        assert list(c.iter_recent_searches(**iterated)) == []
        assert c.api_keys.list(**listed) == []
    assert dict(rankings.calls.last.request.url.params) == {"period": "all", "limit": "5"}
    assert dict(recent.calls[0].request.url.params) == {"limit": "3", "offset": "6"}
    assert dict(keys.calls.last.request.url.params) == {"page": "2", "pageSize": "10"}


EMPTY_PROVIDERS = "providers is empty: name at least one provider"


def _configured_and_default() -> list[Settings]:
    return [settings(cache="off"), Settings.load(cache="off")]


async def test_an_empty_providers_list_asks_nobody(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path
) -> None:
    # an allow-list filtered down to nothing: not "the default providers", whose quota it would spend
    anywhere = mock.route().respond(200, json=body)
    image = (samples / "tinted-good.jpg").read_bytes()
    for configured in _configured_and_default():
        async with AsyncClient(configured, transport(mock)) as client:
            with pytest.raises(ConfigurationError, match=EMPTY_PROVIDERS):
                await client.search(image, providers=[])
            with pytest.raises(ConfigurationError, match=EMPTY_PROVIDERS):
                await client.search(image, providers=(), strategy="fanout")
    assert anywhere.call_count == 0


def test_an_empty_providers_list_asks_nobody_sync(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path
) -> None:
    anywhere = mock.route().respond(200, json=body)
    for configured in _configured_and_default():
        with (
            Client(configured, transport(mock)) as client,
            pytest.raises(ConfigurationError, match=EMPTY_PROVIDERS),
        ):
            client.search(samples / "tinted-good.jpg", providers=[])
        with pytest.raises(ConfigurationError, match=EMPTY_PROVIDERS):
            anisearch.search(samples / "tinted-good.jpg", providers=[], settings=configured)
    assert anywhere.call_count == 0


def test_a_search_that_outlives_its_deadline_fails_without_asking(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path
) -> None:
    search = mock.post(f"{BASE}/search").respond(200, json=body)
    with Client(settings(), transport(mock)) as client:
        result = client.search(samples / "tinted-good.jpg", deadline=30)
        assert result.best is not None
        with pytest.raises(AllProvidersFailedError) as caught:
            client.search(samples / "tinted-good.jpg", deadline=1e-9, cache=False)
    assert caught.group_contains(ProviderTimeoutError, match="deadline passed")
    assert search.call_count == 1


def test_providers_lists_every_registered_one() -> None:
    with Client(settings()) as client:
        infos = {info.name: info for info in client.providers()}
    assert {"tracemoe", "whatanimeisthis"} <= set(infos)
    assert infos["tracemoe"].base_url == BASE
    assert infos["tracemoe"].enabled
    assert not infos["whatanimeisthis"].enabled


def test_module_level_search_uses_the_settings(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path
) -> None:
    # No transport argument here: respx patches httpx itself for the module-level helper.
    mock.post(f"{BASE}/search").respond(200, json=body)
    result = anisearch.search(samples / "tinted-good.jpg", settings=settings())
    assert result.best is not None
    assert result.best.anilist_id == 11887


def test_secrets_in_urls_never_reach_the_log(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mock.post("https://legacy.test/api/search").respond(200, json={"RawDocsCount": 1, "docs": []})
    options = {"whatanime-ga": {"url": "https://legacy.test", "token": "s3cr3t-token"}}
    with (
        caplog.at_level("INFO"),
        Client(
            Settings.load(providers=["whatanime-ga"], provider_options=options), transport(mock)
        ) as client,
    ):
        client.search(samples / "tinted-good.jpg")
    assert mock.calls.last.request.url.params["token"] == "s3cr3t-token"
    assert "s3cr3t-token" not in caplog.text


DISCORD = "https://img.test/attachments/1/2/a.jpg?ex=65f1a2b3&is=65e07f33&hm=4f2a9c0d1e2f&"
S3 = "https://img.test/a.jpg?X-Amz-Credential=AKIAEXAMPLE%2F20261203&X-Amz-Signature=abcdef012345"


@pytest.mark.parametrize(
    "case",
    [(DISCORD, ["4f2a9c0d1e2f"]), (S3, ["AKIAEXAMPLE", "abcdef012345"])],
    ids=["discord attachment", "s3 presigned"],
)
def test_a_signed_image_url_keeps_its_signature_out_of_the_log(
    mock: respx.MockRouter,
    samples: Path,
    public_dns: dict[str, list[str]],
    caplog: pytest.LogCaptureFixture,
    case: tuple[str, list[str]],
) -> None:
    """A bot searches the signed URL of a chat attachment: the signature is a credential to that file."""
    url, secrets = case
    body = json.loads((samples / "api-v1-search-tinted-good-2021.json").read_text())
    mock.get(url).respond(
        200, content=(samples / "tinted-good.jpg").read_bytes(), headers={"content-type": "image/jpeg"}
    )
    mock.post(f"{BASE}/search").respond(200, json=body)
    with caplog.at_level("DEBUG"), Client(settings(cache="off"), transport(mock)) as client:
        client.search(url)
    assert "img.test" in caplog.text  # the download was logged
    for secret in secrets:
        assert secret not in caplog.text


def test_anilist_filter_falls_back_to_a_provider_without_one(mock: respx.MockRouter, samples: Path) -> None:
    mock.post(f"{BASE}/search").respond(
        500, json={"error": "Search failed. Database temporarily unavailable."}
    )
    site = mock.post("https://site.test/api/anime/search").respond(
        200,
        json={
            "results": [
                {"anilistId": 21, "episode": 780, "from": 716.1, "to": 716.7, "similarity": 0.91},
                {"anilistId": 11887, "episode": 5, "from": 1169.2, "to": 1174.9, "similarity": 0.88},
            ]
        },
    )
    options = {"tracemoe": {"url": BASE}, "whatanimeisthis": {"url": "https://site.test"}}
    with Client(
        Settings.load(providers=["tracemoe", "whatanimeisthis"], provider_options=options), transport(mock)
    ) as client:
        result = client.search(samples / "tinted-good.jpg", anilist_id=11887)
    assert result.provider == "whatanimeisthis"
    assert [h.anilist_id for h in result.hits] == [11887]
    assert [(a.provider, a.outcome) for a in result.attempts] == [
        ("tracemoe", "failed"),
        ("whatanimeisthis", "ok"),
    ]
    assert b"11887" not in site.calls.last.request.content  # it cannot filter; anisearch does


@pytest.mark.parametrize(
    ("pages", "expected_calls"),
    [
        ([{"items": [1, 2], "total": 5}, {"items": [3, 4], "total": 5}, {"items": [5], "total": 5}], 3),
        ([{"items": [1, 2]}, {"items": [3]}], 2),  # a short page is the last
        ([{"items": [1, 2], "total": 4}, {"items": [3, 4], "total": 4}], 2),  # never asks past the total
        ([{"items": [1, 2], "hasMore": False}], 1),
    ],
)
def test_recent_searches_paginate_until_the_end(
    mock: respx.MockRouter, pages: list[dict[str, Any]], expected_calls: int
) -> None:
    def page(request: httpx.Request) -> httpx.Response:
        index = int(request.url.params["offset"]) // 2
        body = pages[index]
        items = [{"id": str(n), "anilistId": 100 + n, "similarity": 0.9} for n in body["items"]]
        return httpx.Response(200, json={**body, "items": items})

    route = mock.get("https://site.test/api/anime/recent-searches").mock(side_effect=page)
    with _site_client(mock) as client:
        seen = [item.anilist_id for item in client.iter_recent_searches(page_size=2)]
        capped = [item.anilist_id for item in client.iter_recent_searches(page_size=2, max_items=1)]
    expected = [100 + n for body in pages for n in body["items"]]
    assert seen == expected
    assert capped == expected[:1]
    assert route.call_count == expected_calls + 1


def test_recent_searches_stop_where_a_site_that_ignores_the_offset_repeats_a_page(
    mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    """A site answering every offset with its first page, with no total and no "has more", was asked
    forever (``list(iter_recent_searches())`` never returned, its memory growing): it stops at the second
    repeated page in a row."""
    items = [{"id": str(n), "anilistId": 100 + n, "similarity": 0.9} for n in (1, 2)]
    route = mock.get("https://site.test/api/anime/recent-searches").mock(
        return_value=httpx.Response(200, json={"items": items})
    )
    with _site_client(mock) as client:
        seen = [item.anilist_id for item in client.iter_recent_searches(page_size=2, max_items=10)]
    assert seen == [101, 102]  # not the same two again and again (up to the 10 this test allows)
    assert route.call_count == 3  # one repeated page is a live feed's; two in a row, a site ignoring it
    assert "does not seem to page by offset" in caplog.text


_LIVE_FEED = {0: [1, 2], 2: [1, 2], 4: [3, 4], 6: [5]}
"""Offset -> items: two new searches arrived after the first request, pushing its page to offset 2."""


def _live_feed(request: httpx.Request) -> httpx.Response:
    numbers = _LIVE_FEED[int(request.url.params["offset"])]
    return httpx.Response(200, json={"items": [{"id": str(n), "anilistId": 100 + n} for n in numbers]})


def test_recent_searches_skip_one_repeated_page_of_a_live_feed_and_go_on(
    mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    """A repeated page is what a live feed gives when a page's worth of searches arrives between two
    requests: it is skipped, and the older searches after it are still listed."""
    route = mock.get("https://site.test/api/anime/recent-searches").mock(side_effect=_live_feed)
    with _site_client(mock) as client:
        seen = [item.anilist_id for item in client.iter_recent_searches(page_size=2)]
        capped = [item.anilist_id for item in client.iter_recent_searches(page_size=2, max_items=3)]
    assert seen == [101, 102, 103, 104, 105]
    assert capped == [101, 102, 103]  # max_items counts what was yielded, not the offsets asked
    assert route.call_count == 4 + 3
    assert "does not seem to page by offset" not in caplog.text


def test_recent_searches_go_on_past_a_page_the_site_capped(mock: respx.MockRouter) -> None:
    """Asked for 100 a page, a site that sends 50 (its cap, which it reports as ``limit``) and says there
    are more: every search is listed. Paging stopped at the short first page, 50 of 130."""

    def capped(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["offset"])
        numbers = range(offset, min(offset + 50, 130))
        items = [{"id": str(n), "anilistId": 1000 + n} for n in numbers]
        return httpx.Response(200, json={"items": items, "limit": 50, "offset": offset, "total": 130})

    route = mock.get("https://site.test/api/anime/recent-searches").mock(side_effect=capped)
    with _site_client(mock) as client:
        seen = [item.anilist_id for item in client.iter_recent_searches(page_size=100)]
    assert seen == [1000 + n for n in range(130)]
    assert route.call_count == 3


def test_recent_searches_yield_each_search_once_when_fewer_than_a_page_arrive_meanwhile(
    mock: respx.MockRouter,
) -> None:
    """One new search between two requests pushes one item of the first page into the second: it was
    listed twice (the pager skipped only a page that repeated the one before it whole)."""
    feed = {0: [1, 2, 3], 3: [3, 4, 5], 6: [6]}  # search 0 arrived after the first request

    def live(request: httpx.Request) -> httpx.Response:
        numbers = feed[int(request.url.params["offset"])]
        return httpx.Response(200, json={"items": [{"id": str(n), "anilistId": 100 + n} for n in numbers]})

    mock.get("https://site.test/api/anime/recent-searches").mock(side_effect=live)
    with _site_client(mock) as client:
        seen = [item.anilist_id for item in client.iter_recent_searches(page_size=3)]
    assert seen == [101, 102, 103, 104, 105, 106]


async def test_recent_searches_skip_one_repeated_page_of_a_live_feed_async(mock: respx.MockRouter) -> None:
    mock.get("https://site.test/api/anime/recent-searches").mock(side_effect=_live_feed)
    options = {"whatanimeisthis": {"url": "https://site.test"}}
    async with AsyncClient(
        Settings.load(providers=["whatanimeisthis"], provider_options=options), transport(mock)
    ) as client:
        seen = [item.anilist_id async for item in client.iter_recent_searches(page_size=2)]
    assert seen == [101, 102, 103, 104, 105]


def test_documented_limits_hold_when_the_upstream_reports_none(mock: respx.MockRouter, samples: Path) -> None:
    # A site that never says how much is left: anisearch still stops at the documented 5 guest searches a day.
    route = mock.post("https://site.test/api/anime/search").respond(
        200,
        json={
            "results": [{"anilistId": 11887, "episode": 5, "from": 1169.2, "to": 1174.9, "similarity": 0.9}]
        },
    )
    settings = Settings.load(
        providers=["whatanimeisthis"], provider_options={"whatanimeisthis": {"url": "https://site.test"}}
    )
    with Client(settings, transport(mock)) as client:
        for _ in range(5):
            assert client.search(samples / "tinted-good.jpg", cache=False).provider == "whatanimeisthis"
        with pytest.raises(AllProvidersFailedError, match="whatanimeisthis"):
            client.search(samples / "tinted-good.jpg", cache=False)
        day = next(q for q in client.quota("whatanimeisthis") if q.window == "day")
    assert route.call_count == 5
    assert (day.limit, day.used, day.remaining) == (5, 5, 0)


def test_a_sign_in_refused_for_now_holds_back_no_search(mock: respx.MockRouter, samples: Path) -> None:
    """A session search that must sign in first meets the sign-in limit (better-auth: 3 per 10 s per
    address): its error says when to sign in again, and the search quota neither shows it nor waits for it
    (a search by API key, or one in another process holding a session, has no sign-in to wait for)."""
    limited = {"message": "Too many requests. Please try again later."}
    sign_in = mock.post("https://site.test/api/auth/sign-in/email").respond(
        429, json=limited, headers={"X-Retry-After": "8"}
    )
    search = mock.post("https://site.test/api/anime/search").respond(200, json={"results": []})
    with _site_client(mock, email="a@b.example", password="pw") as c:
        waits = []
        for _ in range(2):
            with pytest.raises(AllProvidersFailedError) as caught:
                c.search(samples / "tinted-good.jpg", cache=False)
            (error,) = caught.value.exceptions
            assert isinstance(error, anisearch.SignInRateLimitedError)
            assert error.retry_after is not None
            waits.append(error.retry_after)
            assert [a.outcome for a in caught.value.attempts] == ["failed"]  # asked, not skipped
        quotas = c.quota("whatanimeisthis")
    assert waits[0] == 8
    assert 0 < waits[1] <= 8  # what is left of it
    assert sign_in.call_count == 1  # no sign-in sent while the site's wait runs (contract 2.7)
    assert search.call_count == 0
    assert sorted(q.window for q in quotas) == ["day", "hour"]
    assert all(q.cooldown_until is None and q.used == 0 for q in quotas), quotas


def test_the_sign_in_wait_holds_in_the_next_process_too(mock: respx.MockRouter, samples: Path) -> None:
    """Each new ``anisearch`` command sent one sign-in into the limit an earlier one had met: the site's
    wait is kept beside the session, and a client opened afterwards waits it out without sending."""
    limited = {"message": "Too many requests. Please try again later."}
    sign_in = mock.post("https://site.test/api/auth/sign-in/email").respond(
        429, json=limited, headers={"X-Retry-After": "30"}
    )
    mock.post("https://site.test/api/anime/search").respond(200, json={"results": []})
    options = {"whatanimeisthis": {"url": "https://site.test", "email": "a@b.example", "password": "pw"}}
    settings = Settings.load(providers=["whatanimeisthis"], provider_options=options)
    for _ in range(3):  # three commands, one after the other
        with Client(settings, transport(mock)) as client, pytest.raises(AllProvidersFailedError) as caught:
            client.search(samples / "tinted-good.jpg", cache=False)
        (error,) = caught.value.exceptions
        assert isinstance(error, anisearch.SignInRateLimitedError)
        assert error.retry_after is not None
        assert 0 < error.retry_after <= 30
    assert sign_in.call_count == 1


def test_a_sign_out_keeps_the_sites_wait_for_the_next_sign_in(mock: respx.MockRouter) -> None:
    """The site's wait is for this address, whoever signs in: signing out (which forgets the session and
    its file) kept no trace of it, and the next sign-in went into the limit."""
    limited = {"message": "Too many requests. Please try again later."}
    sign_in = mock.post("https://site.test/api/auth/sign-in/email").respond(
        429, json=limited, headers={"X-Retry-After": "30"}
    )
    mock.post("https://site.test/api/auth/sign-out").respond(200, json={"success": True})
    options = {"whatanimeisthis": {"url": "https://site.test", "email": "a@b.example", "password": "pw"}}
    settings = Settings.load(providers=["whatanimeisthis"], provider_options=options)
    with Client(settings, transport(mock)) as client:
        with pytest.raises(anisearch.SignInRateLimitedError):
            client.sign_in("a@b.example", "pw")
        client.sign_out()
    with Client(settings, transport(mock)) as client, pytest.raises(anisearch.SignInRateLimitedError):
        client.sign_in("a@b.example", "pw")
    assert sign_in.call_count == 1


def test_sign_ins_wait_out_the_wait_a_refused_one_was_given(mock: respx.MockRouter, samples: Path) -> None:
    """Every search sent a sign-in into the site's limit while it ran (each refused, none waited for); a
    sign-in is sent again once the wait named is over."""
    import time

    limited = {"message": "Too many requests. Please try again later."}
    sign_in = mock.post("https://site.test/api/auth/sign-in/email").respond(
        429, json=limited, headers={"X-Retry-After": "1"}
    )
    mock.post("https://site.test/api/anime/search").respond(200, json={"results": []})
    with _site_client(mock, email="a@b.example", password="pw") as c:
        for _ in range(3):
            with pytest.raises(AllProvidersFailedError):
                c.search(samples / "tinted-good.jpg", cache=False)
        assert sign_in.call_count == 1
        time.sleep(1.05)
        with pytest.raises(AllProvidersFailedError):
            c.search(samples / "tinted-good.jpg", cache=False)
    assert sign_in.call_count == 2


def test_an_explicit_sign_in_waits_out_a_refused_ones_wait_and_starts_one(mock: respx.MockRouter) -> None:
    """``anisearch login`` went into the site's limit whatever it had said, and its own 429 held back no
    later sign-in."""
    limited = {"message": "Too many requests. Please try again later."}
    sign_in = mock.post("https://site.test/api/auth/sign-in/email").respond(
        429, json=limited, headers={"X-Retry-After": "30"}
    )
    with _site_client(mock, email="a@b.example", password="pw") as c:
        for _ in range(3):
            with pytest.raises(anisearch.SignInRateLimitedError) as caught:
                c.sign_in("a@b.example", "pw")
            assert caught.value.retry_after is not None
            assert 0 < caught.value.retry_after <= 30
        with pytest.raises(anisearch.SignInRateLimitedError):
            c.credits()  # needs a session: no sign-in is sent for it either
    assert sign_in.call_count == 1


@pytest.mark.parametrize(
    ("body", "total", "pages", "has_more", "page_size"),
    [
        ({"items": "KEYS", "total": 5, "page": 2, "pageSize": 2}, 5, 3, True, 2),  # the api-docs' paging
        ({"apiKeys": "KEYS", "total": 4, "limit": 2, "offset": 2}, 4, 2, False, 2),  # better-auth 1.5+
        ("KEYS", None, None, None, 2),  # better-auth <= 1.4: a bare array says no total
        # a server that caps the size asked for says so: 45 keys are 3 pages of 20 (it said 1 page of 50)
        ({"items": "KEYS", "total": 45, "page": 2, "pageSize": 20}, 45, 3, True, 20),
    ],
)
def test_api_keys_list_is_a_list_that_knows_the_total(
    mock: respx.MockRouter,
    body: Any,
    *,
    total: int | None,
    pages: int | None,
    has_more: bool | None,
    page_size: int,
) -> None:
    keys = [{"id": "k3", "title": "three", "key": "sk-…cccc"}, {"id": "k4", "title": "four"}]
    payload = keys if body == "KEYS" else {**body, next(k for k, v in body.items() if v == "KEYS"): keys}
    route = mock.get("https://site.test/api/apikeys").respond(200, json=payload)
    with _site_client(mock) as c:
        listed = c.api_keys.list(page=2, page_size=2)
    assert dict(route.calls.last.request.url.params) == {"page": "2", "pageSize": "2"}
    assert isinstance(listed, list)  # callers of list[ApiKey] keep working
    assert isinstance(listed, anisearch.PagedList)
    assert len(listed) == 2
    assert listed[0].id == "k3"
    assert [k.title for k in listed] == ["three", "four"]
    assert listed == [listed[0], listed[1]]
    assert (listed.total, listed.pages, listed.page, listed.page_size) == (total, pages, 2, page_size)
    assert listed.has_more is has_more
    assert "total=" in repr(listed)


def test_a_paged_list_is_a_pydantic_field_type() -> None:
    """``PagedList[ApiKey]``, the type ``api_keys.list()`` returns, raised PydanticSchemaGenerationError as
    a model field or a TypeAdapter: a bot's own models hold what it lists."""
    from pydantic import BaseModel, TypeAdapter

    class Listing(BaseModel):
        keys: anisearch.PagedList[anisearch.ApiKey]

    listed = anisearch.PagedList([anisearch.ApiKey(id="k1")], total=5, page=1, page_size=1)
    kept = Listing(keys=listed).keys
    assert isinstance(kept, anisearch.PagedList)
    assert (kept.total, kept.pages, [k.id for k in kept]) == (5, 5, ["k1"])
    again = Listing.model_validate_json(Listing(keys=listed).model_dump_json())  # serialised as its list
    assert [k.id for k in again.keys] == ["k1"]
    assert again.keys.total is None
    assert TypeAdapter(anisearch.PagedList[anisearch.ApiKey]).json_schema()["type"] == "array"
    with pytest.raises(ValueError, match="id"):
        Listing.model_validate({"keys": [{"title": "no id"}]})


def test_a_configured_legacy_api_joins_the_default_order() -> None:
    plain = Settings.load()
    configured = Settings.load(provider_options={"whatanime-ga": {"url": "http://127.0.0.1:9"}})
    with Client(plain) as client:
        assert "whatanime-ga" not in [p.name for p in client.providers() if p.enabled]
    with Client(configured) as client:
        enabled = [p.name for p in client.providers() if p.enabled]
    assert sorted(enabled) == ["tracemoe", "whatanime-ga", "whatanimeisthis"]


def test_at_most_max_hits_are_kept_the_most_similar(
    mock: respx.MockRouter, body: dict[str, Any], samples: Path
) -> None:
    item = body["result"][0]
    many = {**body, "result": [{**item, "similarity": (i % 997) / 1000} for i in range(1500)]}
    mock.post(f"{BASE}/search").respond(200, json=many)
    with Client(settings(), transport(mock)) as client:
        fresh = client.search(samples / "tinted-good.jpg")
        cached = client.search(samples / "tinted-good.jpg")
    assert cached.cached
    for result in (fresh, cached):
        assert len(result.hits) == MAX_HITS
        expected = sorted((item["similarity"] for item in many["result"]), reverse=True)[:MAX_HITS]
        assert [hit.similarity for hit in result.hits] == expected


@contextlib.contextmanager
def _tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An HTTPS server on loopback answering ``{}`` to any request, trusted through ``SSL_CERT_FILE``;
    yields its base URL. The process's TLS context is made again before and after."""
    import http.server
    import ssl
    import threading

    import trustme

    from anisearch._transport import tls_context

    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(served)

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    server.socket = served.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    tls_context.cache_clear()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        tls_context.cache_clear()  # the next test's is made from the usual certificates


def test_a_url_whose_certificate_does_not_verify_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host answered and its certificate is the problem; downloads trust certifi's bundle (not the
    SSL_CERT_FILE that trusts this server for the providers), which the message says."""
    with (
        _tls_server(tmp_path, monkeypatch) as url,
        Client(settings(allow_private_urls=True, cache="off")) as client,
        pytest.raises(ImageFetchError) as caught,
    ):
        client.search(f"{url}/shot.jpg")
    assert str(caught.value) == (
        f"cannot download {url}/shot.jpg: the server's HTTPS certificate did not verify (unable to get local "
        "issuer certificate); image downloads trust certifi's CA bundle"
    )


def test_an_https_url_to_a_plain_http_port_says_the_handshake_failed(
    live_server: Callable[[Any], LiveServer],
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:  # never reached: no TLS is spoken here
        raise AssertionError(scope)

    server = live_server(app)
    url = server.url.replace("http://", "https://") + "/shot.jpg"
    with (
        Client(settings(allow_private_urls=True, cache="off")) as client,
        pytest.raises(ImageFetchError) as caught,
    ):
        client.search(url)
    assert str(caught.value).startswith(f"cannot download {url}: the HTTPS handshake failed (")
    assert "certificate" not in str(caught.value)


async def test_a_tls_error_in_the_middle_of_a_download_is_an_image_fetch_error() -> None:
    """A broken TLS record after the handshake (httpx lets the ssl error through as is) is the download's
    typed error, which says it came while reading, not that the handshake failed."""
    import ssl

    from anisearch import _fetch

    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b"\xff\xd8" + b"x" * 1000
            raise ssl.SSLError(1, "[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC] decryption failed")

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "image/jpeg"}, stream=Broken())

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(ImageFetchError) as caught:
            await _fetch.download(client, "https://127.0.0.1/shot.jpg", allow_private=True, pin=False)
    assert str(caught.value).startswith(
        "cannot download https://127.0.0.1/shot.jpg: the HTTPS connection failed while reading ("
    )
    assert isinstance(caught.value.__cause__, ssl.SSLError)


async def test_a_tls_error_before_the_answers_headers_is_an_image_fetch_error() -> None:
    """The same broken record one step earlier, while the answer's headers are read: it escaped as a raw
    ``ssl.SSLError`` from ``search(url)``."""
    import ssl

    from anisearch import _fetch

    def answer(request: httpx.Request) -> httpx.Response:
        raise ssl.SSLError(1, "[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC] decryption failed")

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(ImageFetchError) as caught:
            await _fetch.download(client, "https://127.0.0.1/shot.jpg", allow_private=True, pin=False)
    assert "the HTTPS connection failed while reading (" in str(caught.value)

    def wrapped(request: httpx.Request) -> httpx.Response:  # as httpx wraps an unexpected EOF
        raise httpx.ReadError("EOF") from ssl.SSLEOFError(8, "EOF occurred in violation of protocol")

    async with httpx.AsyncClient(transport=httpx.MockTransport(wrapped)) as client:
        with pytest.raises(ImageFetchError, match=r"the HTTPS connection failed while reading \("):
            await _fetch.download(client, "https://127.0.0.1/shot.jpg", allow_private=True, pin=False)


def _count_ca_loads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    import ssl

    loads: list[object] = []
    real = ssl.SSLContext.load_verify_locations

    def counted(context: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append(args or kwargs)
        real(context, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    return loads


async def test_the_ca_bundle_is_read_once_at_the_first_tls_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Making clients reads no certificate (a process that talks plain HTTP never pays for it); the first
    TLS connection reads the bundle, verifies against it, and no later client or connection reads it again."""
    from anisearch._transport import ProviderTransport

    loads = _count_ca_loads(monkeypatch)
    with _tls_server(tmp_path, monkeypatch) as url:
        with Client(settings()):
            pass
        assert loads == []
        provider = load_provider("tracemoe")()
        for _ in range(3):
            transport = ProviderTransport(10.0)
            try:
                response = await transport.send(provider, httpx.Request("GET", url + "/me"))
            finally:
                await transport.aclose()
            assert response.json() == {}
        assert loads == [(str(tmp_path / "ca.pem"), None)]


class _Pieces(httpx.AsyncBaseTransport):
    """Answers ``{}`` to every request, keeping the pieces its body came in (each a write to the socket)."""

    def __init__(self) -> None:
        self.bodies: list[list[bytes]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        self.bodies.append([bytes(piece) async for piece in request.stream])
        return httpx.Response(200, json={})


async def test_an_upload_is_written_in_one_piece() -> None:
    """An upload reaches the connection as one body, whole, where httpx renders a multipart form in four
    pieces (each a write to the socket, and a wake-up of the server reading it); a body over 1 MiB is sent
    as httpx renders it, not copied."""
    from anisearch._transport import ProviderTransport

    pieces = _Pieces()
    transport = ProviderTransport(10.0, pieces)
    provider = load_provider("tracemoe")()
    small, large = b"\xff\xd8" + bytes(10_000), b"\xff\xd8" + bytes(2 << 20)
    sent = [
        httpx.Request(
            "POST", "http://tracemoe.test/search", files={"image": ("image.jpg", picture, "image/jpeg")}
        )
        for picture in (small, large)
    ]
    try:
        for request in sent:
            await transport.send(provider, request)
    finally:
        await transport.aclose()
    one, many = pieces.bodies
    assert len(one) == 1
    assert small in one[0]
    assert len(one[0]) == int(sent[0].headers["Content-Length"])
    assert len(many) > 1
    assert large in b"".join(many)


async def test_a_certificate_file_that_is_missing_fails_the_first_tls_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``SSL_CERT_FILE`` naming no file is a typed error naming the variable and the file at the first TLS
    connection, not at the making of the client; once the file is there, the next connection succeeds."""
    from anisearch._transport import ProviderTransport

    with _tls_server(tmp_path, monkeypatch) as url:
        (tmp_path / "ca.pem").rename(tmp_path / "later.pem")
        transport = ProviderTransport(10.0)  # no certificate read yet: nothing to fail
        provider = load_provider("tracemoe")()
        try:
            with pytest.raises(ConfigurationError, match=r"SSL_CERT_FILE \(.*ca\.pem\): No such file"):
                await transport.send(provider, httpx.Request("GET", url + "/me"))
            (tmp_path / "later.pem").rename(tmp_path / "ca.pem")
            response = await transport.send(provider, httpx.Request("GET", url + "/me"))
        finally:
            await transport.aclose()
        assert response.status_code == 200


def test_each_upstream_address_keeps_its_own_quota(tmp_path: Path) -> None:
    """A quota spent at the public service does not refuse searches at a self-hosted instance."""
    from tests.conftest import HostRouter

    from anisearch_emulators.tracemoe import create_app as tracemoe_app

    demo = Path(__file__).resolve().parents[1] / "examples" / "tinted-good.jpg"
    public, own = tracemoe_app(quota=1), tracemoe_app(quota=100)
    transport = HostRouter({"public.test": public, "own.test": own})
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"

    def at(url: str) -> Settings:
        options = {"tracemoe": {"url": url}}
        return Settings.load(
            providers=["tracemoe"], provider_options=options, ledger=ledger, cache="off", metadata="off"
        )

    with Client(at("http://public.test"), transport) as client:
        client.search(demo)
        with pytest.raises(AllProvidersFailedError) as spent:
            client.search(demo)
    assert isinstance(spent.value.exceptions[0], QuotaExhaustedError)
    with Client(at("http://own.test"), transport) as client:
        result = client.search(demo)  # the same ledger file, another address: its own quota
        (own_quota,) = [q for q in client.quota() if q.window == "rolling-24h"]
    assert result.provider == "tracemoe"
    assert own.state.emulator.search_requests == 1
    assert (own_quota.limit, own_quota.used) == (100, 1)


@pytest.mark.parametrize("level", ["", "WARNING", "INFO"], ids=["no logging set up", "warnings", "info"])
def test_retries_are_told_in_words_at_info(level: str) -> None:
    """A search whose connection is refused before sending is retried twice. A program that set up no
    logging sees nothing of it; one logging warnings sees nothing either (nothing was sent, nothing is
    lost); one logging INFO reads, on anisearch's logger, what failed and when it is tried again."""
    import os
    import subprocess
    import sys

    from tests.conftest import free_port

    demo = Path(__file__).resolve().parents[1] / "examples" / "tinted-good.jpg"
    script = (
        "import logging, sys, anisearch\n"
        "if sys.argv[1]:\n"
        "    logging.basicConfig(level=sys.argv[1])\n"
        "try:\n"
        "    anisearch.search(sys.argv[2])\n"
        "except anisearch.AllProvidersFailedError:\n"
        "    print('failed')\n"
    )
    env = os.environ | {
        "ANISEARCH_TRACEMOE_URL": f"http://127.0.0.1:{free_port()}",  # refused: retried, never sent
        "ANISEARCH_PROVIDERS": "tracemoe",
        "ANISEARCH_LEDGER": "memory://",
        "ANISEARCH_CACHE": "off",
        "ANISEARCH_METADATA": "off",
    }
    done = subprocess.run(
        [sys.executable, "-c", script, level, str(demo)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.stdout == "failed\n"
    assert "stamina" not in done.stderr
    told = re.findall(
        r"INFO:anisearch:tracemoe: cannot reach 127\.0\.0\.1:\d+: .*; sending again in \d\.\d s"
        r" \(retry (\d) of 2; nothing was sent\)",
        done.stderr,
    )
    assert told == (["1", "2"] if level == "INFO" else []), done.stderr


def test_a_locked_sqlite_ledger_fails_a_search_by_its_deadline(tmp_path: Path) -> None:
    """Another process holds the ledger file's lock (a long transaction, a stuck tool): a search with a
    deadline gets a LedgerError by then, not after the 15-second busy timeout."""
    import sqlite3
    import time

    from tests.conftest import HostRouter

    from anisearch_emulators.tracemoe import create_app as tracemoe_app

    demo = Path(__file__).resolve().parents[1] / "examples" / "tinted-good.jpg"
    path = tmp_path / "ledger.sqlite3"
    settings = Settings.load(
        providers=["tracemoe"],
        provider_options={"tracemoe": {"url": "http://trace.test"}},
        ledger=f"sqlite:///{path}",
        cache="off",
        metadata="off",
    )
    with Client(settings, HostRouter({"trace.test": tracemoe_app()})) as client:
        client.search(demo)  # the ledger file exists, its connection open
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            started = time.monotonic()
            with pytest.raises(anisearch.LedgerError):
                client.search(demo, deadline=1.0)
            took = time.monotonic() - started
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert client.search(demo).provider == "tracemoe"  # the lock gone, searches go on
    assert took < 5


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_a_reserve_waits_behind_another_step_of_its_process_no_longer_than_its_deadline(
    tmp_path: Path,
) -> None:
    """An answered search records its answer (it may wait 15 s for a lock another process holds) while a
    search with a 1-second deadline asks for a slot: that one fails by its deadline, not behind it."""
    import sqlite3
    import time

    from anisearch._ledger import Ticket, open_ledger
    from anisearch._ledger._windows import WindowSpec
    from anisearch._limits import search_deadline

    windows = (WindowSpec("rolling-24h", span_seconds=86400),)
    path = tmp_path / "ledger.sqlite3"
    ledger = open_ledger(f"sqlite:///{path}")
    ticket = await ledger.reserve("one", "guest", windows, slots=4)
    assert isinstance(ticket, Ticket)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    took: list[float] = []

    async def settle() -> None:
        with contextlib.suppress(anisearch.LedgerError):
            await ledger.settle(ticket, "charged")

    async def reserve() -> None:
        await anyio.sleep(0.2)  # the settle holds the ledger's own lock by now
        token = search_deadline.set(anyio.current_time() + 1.0)
        started = time.monotonic()
        try:
            with pytest.raises(anisearch.LedgerError):
                await ledger.reserve("one", "guest", windows, slots=4)
        finally:
            search_deadline.reset(token)
        took.append(time.monotonic() - started)

    async def release() -> None:
        await anyio.sleep(6)
        holder.execute("ROLLBACK")

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(settle)
            group.start_soon(reserve)
            group.start_soon(release)
    finally:
        holder.close()
        await ledger.aclose()
    assert took[0] < 3


def test_the_ledger_scope_of_a_provider_at_its_own_address_is_as_it_always_was() -> None:
    from anisearch._ledger import provider_scope, scope_id
    from anisearch_providers.anilist import AniList
    from anisearch_providers.tracemoe import TraceMoe

    assert provider_scope(TraceMoe()) == "guest"  # ledgers written before keep their counts
    assert provider_scope(TraceMoe(base_url="https://api.trace.moe/")) == "guest"
    assert provider_scope(TraceMoe(base_url="http://127.0.0.1:8000")).startswith("guest:")
    assert provider_scope(TraceMoe(base_url="http://127.0.0.1:8000")) != provider_scope(
        TraceMoe(base_url="http://127.0.0.1:8001")
    )
    anilist = AniList()  # declares no default address: its scope is its credential's alone
    assert provider_scope(anilist) == scope_id(anilist.credential.scope, anilist.credential.secret)


def test_a_provider_no_search_could_reach_is_tried_once_until_it_answers(
    body: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch or a bot whose provider is down pays its three attempts (and their backoff) once, not for
    every input: for 30 s after that, a search tries it once; whatever reaches it ends that."""
    from tests.conftest import free_port

    from anisearch import _router

    demo = Path(__file__).resolve().parents[1] / "examples" / "tinted-good.jpg"
    down = f"http://127.0.0.1:{free_port()}"  # refused: never sent
    settings = Settings.load(
        providers=["tracemoe"], provider_options={"tracemoe": {"url": down}}, cache="off", metadata="off"
    )

    def attempts() -> tuple[int, int]:
        """(retries told, searches not retried) since the last call."""
        records = [r.getMessage() for r in caplog.records if r.name == "anisearch"]
        caplog.clear()
        return sum("sending again" in m for m in records), sum("not retried" in m for m in records)

    caplog.set_level(logging.INFO, logger="anisearch")
    with Client(settings) as client:
        for _ in range(3):
            with pytest.raises(AllProvidersFailedError) as raised:
                client.search(demo)
            assert "cannot reach" in str(raised.value.exceptions[0])
            if _ == 0:
                assert attempts() == (2, 0)  # the first search retries twice
        assert attempts() == (0, 2)  # the next ones try once
        unreached = _router._UNREACHED[("tracemoe", down)]
        monkeypatch.setitem(_router._UNREACHED, ("tracemoe", down), unreached - 30.0)
        with pytest.raises(AllProvidersFailedError):
            client.search(demo)
        assert attempts() == (2, 0)  # 30 s later, it is retried again
    answer = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    with Client(settings, answer) as client:  # the same address, reached at last
        assert client.search(demo).hits
    assert ("tracemoe", down) not in _router._UNREACHED


def test_a_deadline_that_cut_the_retries_short_marks_no_provider_unreachable() -> None:
    """One refused connection and a deadline too short to retry say nothing about the server: the next
    search still gets its three attempts."""
    import stamina
    from tests.conftest import free_port

    from anisearch import _router

    demo = Path(__file__).resolve().parents[1] / "examples" / "tinted-good.jpg"
    down = f"http://127.0.0.1:{free_port()}"
    settings = Settings.load(
        providers=["tracemoe"], provider_options={"tracemoe": {"url": down}}, cache="off", metadata="off"
    )
    stamina.set_testing(False)  # the real backoff: its first wait outlasts the deadline
    with Client(settings) as client, pytest.raises(AllProvidersFailedError):
        client.search(demo, deadline=0.15)
    assert ("tracemoe", down) not in _router._UNREACHED


@pytest.mark.parametrize(
    ("options", "ask"),
    [
        ({"whatanime-ga": {"ulr": "http://127.0.0.1:9"}}, "providers"),
        ({"whatanimeisthis": {"pasword": "hunter2"}}, "account_provider"),
    ],
    ids=["providers", "account"],
)
def test_a_provider_configured_wrongly_is_said_even_outside_the_search_order(
    options: dict[str, dict[str, str]], ask: str
) -> None:
    """Only trace.moe searches; a typo in another provider's settings still says so (``anisearch
    providers`` hid that provider, ``anisearch credits`` said no provider had account features)."""
    settings = Settings.load(
        providers=["tracemoe"], provider_options=options, ledger="memory://", cache="off"
    )
    with Client(settings) as client, pytest.raises(ConfigurationError, match=r"unknown .* setting"):
        getattr(client, ask)()


def _tracemoe_at(host: str, **options: str) -> Settings:
    """Settings asking the trace.moe at ``http://<host>`` alone (with ``options``: a key), on a memory
    ledger, with no cache and no titles."""
    return Settings.load(
        providers=["tracemoe"],
        provider_options={"tracemoe": {"url": f"http://{host}", **options}},
        ledger="memory://",
        cache="off",
        metadata="off",
    )


def _me_after(seconds: float, apps: dict[str, Any], asked: list[float]) -> httpx.AsyncBaseTransport:
    """A transport to the emulators ``apps`` whose ``/me`` answers ``seconds`` late, each time noted in
    ``asked``."""
    from tests.conftest import HostRouter

    class SlowMe(HostRouter):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == "/me":
                asked.append(time.monotonic())
                await anyio.sleep(seconds)
            return await super().handle_async_request(request)

    return SlowMe(apps)


def test_a_search_that_met_a_held_slot_upstream_reports_that_answer_not_a_skip() -> None:
    """Another machine holds trace.moe's one slot: the search is answered 402 "Concurrency limit exceeded",
    waits the backoff, is answered 402 again, and then its deadline leaves no time for another try. It
    failed on the upstream's answer: a ``ConcurrencyLimitError`` with the 402, attempted "failed", not
    "skipped" (never asked) as a ``ProviderBusyError``."""
    from tests.conftest import HostRouter

    from anisearch_emulators.tracemoe import create_app as tracemoe_app

    demo = Path(__file__).resolve().parents[1] / "examples" / "tinted-good.jpg"
    emulator = tracemoe_app(concurrency=0)  # every search finds the caller's one slot taken
    settings = _tracemoe_at("trace.test")
    with (
        Client(settings, HostRouter({"trace.test": emulator})) as client,
        pytest.raises(AllProvidersFailedError) as caught,
    ):
        client.search(demo, deadline=0.8)
    assert emulator.state.emulator.search_requests >= 1
    (attempt,) = caught.value.attempts
    assert (attempt.outcome, attempt.status_code, attempt.error) == ("failed", 402, "ConcurrencyLimitError")
    assert caught.group_contains(ConcurrencyLimitError, match="Concurrency limit exceeded")


def test_a_paid_keys_concurrency_is_learnt_before_its_searches_queue_for_one_slot() -> None:
    """A trace.moe key of the $20 tier allows 2 searches at once: four searches started together ran one
    after another (the guest's one slot assumed) until ``quota(refresh=True)`` was called. The first time
    they contend, the free ``/me`` is asked once, and they run two by two."""
    from tests.conftest import HostRouter

    from anisearch_emulators.tracemoe import create_app as tracemoe_app

    demo = Path(__file__).resolve().parents[1] / "examples" / "tinted-good.jpg"
    emulator = tracemoe_app(keys={"paid-key": 4}, latency=1.0)
    settings = _tracemoe_at("paid.test", key="paid-key")
    images = [demo.read_bytes() + bytes([n]) for n in range(4)]  # four different inputs: four searches

    async def main() -> float:
        async with AsyncClient(settings, HostRouter({"paid.test": emulator})) as client:
            started = time.monotonic()
            async with anyio.create_task_group() as group:
                for image in images:
                    group.start_soon(partial(client.search, image))
            return time.monotonic() - started

    took = anyio.run(main)
    state = emulator.state.emulator
    assert state.search_requests == 4
    assert state.requests["/me"] == 1, state.requests  # asked once
    assert took < 3.5, took  # one at a time takes 4 s at the least; two by two, 2 s


def test_a_paid_keys_concurrency_is_asked_again_after_a_failed_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``/me`` that failed once (a CDN's 502) left the key at one search at a time for the rest of the
    process: the next time its searches meet at one slot (its pause over), it is asked again."""
    from tests.conftest import HostRouter

    from anisearch import _router
    from anisearch_emulators.tracemoe import create_app as tracemoe_app

    monkeypatch.setattr(_router, "_QUOTA_CHECK_PAUSE_SECONDS", 0.0)  # else a minute later
    demo = Path(__file__).resolve().parents[1] / "examples" / "tinted-good.jpg"
    emulator = tracemoe_app(keys={"paid-key": 4}, latency=0.5)
    me_answers: list[int] = []

    class FirstMeFails(HostRouter):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == "/me":
                me_answers.append(502 if not me_answers else 200)
                if me_answers == [502]:
                    return httpx.Response(502, text="<html>Bad gateway</html>")
            return await super().handle_async_request(request)

    settings = _tracemoe_at("retry.test", key="paid-key")

    async def main() -> float:
        async with AsyncClient(settings, FirstMeFails({"retry.test": emulator})) as client:
            started = time.monotonic()
            async with anyio.create_task_group() as group:
                for n in range(4):
                    group.start_soon(partial(client.search, demo.read_bytes() + bytes([n])))
            return time.monotonic() - started

    took = anyio.run(main)
    assert me_answers == [502, 200]
    assert took < 1.8, took  # two by two once /me said so; one at a time takes 2 s


def test_a_hanging_quota_endpoint_is_asked_once_and_costs_one_search_two_seconds() -> None:
    """A key's ``/me`` that never answers: asked at every meeting at the slot, it made each contended search
    with a deadline under 10 s wait its whole deadline for it and fail. It is given 2 s, once a minute, by
    one search while the others wait for the slot."""

    from anisearch_emulators.tracemoe import create_app as tracemoe_app

    demo = Path(__file__).resolve().parents[1] / "examples" / "tinted-good.jpg"
    emulator = tracemoe_app(keys={"hung-key": 1}, latency=0.5)
    asked: list[float] = []
    settings = _tracemoe_at("hung.test", key="hung-key")

    async def main() -> tuple[list[str], int]:
        outcomes: list[str] = []

        async def one(client: AsyncClient, n: int) -> None:
            try:
                await client.search(demo.read_bytes() + bytes([n]), deadline=3.0)
                outcomes.append("ok")
            except anisearch.AnisearchError as exc:
                outcomes.append(type(exc).__name__)

        async with AsyncClient(settings, _me_after(30.0, {"hung.test": emulator}, asked)) as client:
            for round_ in range(3):
                async with anyio.create_task_group() as group:
                    for k in range(3):  # two meet the one holding the slot: one of them asks
                        group.start_soon(one, client, round_ * 3 + k)
            paused = len(client._quota_check_failed)  # what the quota checks would skip
        return outcomes, paused

    outcomes, paused = anyio.run(main)
    assert outcomes == ["ok"] * 9
    assert len(asked) == 1
    assert paused == 0  # the probe's own pause: a check of a stale quota still asks /me (10 s for it)


def test_the_searches_waiting_while_a_keys_concurrency_is_asked_take_the_slots_it_learns() -> None:
    """One search asks a key's ``/me`` (half a second here) while the others wait for the slot: when it
    says the key allows 4 at once, they are woken and sent, not left waiting for the first to end."""

    from anisearch_emulators.tracemoe import create_app as tracemoe_app

    demo = Path(__file__).resolve().parents[1] / "examples" / "tinted-good.jpg"
    emulator = tracemoe_app(keys={"wide-key": 6}, latency=1.0)  # the $100 tier: 4 at once
    asked: list[float] = []

    async def main() -> float:
        async with AsyncClient(
            _tracemoe_at("wide.test", key="wide-key"), _me_after(0.5, {"wide.test": emulator}, asked)
        ) as c:
            started = time.monotonic()
            async with anyio.create_task_group() as group:
                for n in range(4):
                    group.start_soon(partial(c.search, demo.read_bytes() + bytes([n])))
            return time.monotonic() - started

    took = anyio.run(main)
    assert len(asked) == 1
    assert took < 1.8, took  # 1 s, then the other three at once after the half-second /me; not 2 s
