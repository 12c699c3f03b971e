"""What one worker holds for its callers: request bodies within a budget, a deadline from a request's arrival,
callers that go away, and the edges of its trace.moe surface (CORS, ``/anilist``)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import LiveServer, free_port
from tests.server.conftest import TOKEN, GatewayFactory, Served, Upstreams

from anisearch_emulators.anilist import create_app as anilist_app

pytestmark = pytest.mark.e2e

AUTH = {"x-trace-key": TOKEN}
BODY = 600_000
"""Bytes of each upload: two of them are over the test gateway's 1 MB budget."""


def _open_upload(
    served: Served, path: str, sent: int, headers: str = f"x-trace-key: {TOKEN}\r\n"
) -> socket.socket:
    """A connection that announces a ``BODY``-byte JPEG and sends ``sent`` bytes of it, then nothing more."""
    connection = socket.create_connection(("127.0.0.1", served.port), timeout=30)
    connection.sendall(
        f"POST {path} HTTP/1.1\r\nHost: gateway\r\n{headers}Content-Type: image/jpeg\r\n"
        f"Content-Length: {BODY}\r\n\r\n".encode()
        + b"\xff" * sent
    )
    return connection


def _held(served: Served) -> int:
    return int(served.app.state.bodies.held)


def _until(condition: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not callable(condition) or not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the gateway never got there")
        time.sleep(0.02)


def test_bodies_past_the_workers_budget_get_a_full_queue_and_the_budget_comes_back(
    gateway: GatewayFactory, samples: Path, upstreams: Upstreams, caplog: pytest.LogCaptureFixture
) -> None:
    """An upload most of the way in holds what arrived: past ``max_bodies_bytes`` another caller gets
    trace.moe's 503 (the native API's problem, the status page's line), and nothing is asked upstream. A
    connection that only announces a body holds nothing. Callers that go away free what they held, without
    a traceback in the log."""
    served = gateway(settings={"providers": ["tracemoe"]}, max_bodies_bytes=1_000_000)
    caplog.set_level(logging.INFO)
    announcing = [_open_upload(served, "/", 0, headers="") for _ in range(3)]  # no token, no byte sent
    holding = _open_upload(served, "/search", BODY - 100_000)
    try:
        _until(lambda: _held(served) == BODY - 100_000)
        over = {"Content-Type": "image/jpeg", "Content-Length": str(BODY)}
        body = b"\xff" * BODY
        busy = httpx.post(served.url + "/search", content=body, headers={**AUTH, **over}, timeout=30)
        assert (busy.status_code, busy.json()) == (503, {"error": "Error: Search queue is full"})
        assert busy.headers["Retry-After"] == "1"
        native = httpx.post(
            served.url + "/v1/search",
            content=body,
            headers={"Authorization": f"Bearer {TOKEN}", **over},
            timeout=30,
        )
        assert native.status_code == 503
        assert native.json()["error"]["type"] == "ServiceUnavailable"
        page = httpx.post(
            served.url + "/",
            files={"image": ("shot.jpg", body, "image/jpeg")},
            data={"token": TOKEN},
            timeout=30,
        )
        assert page.status_code == 503
        assert "try again in a moment" in page.text
        _until(lambda: _held(served) == BODY - 100_000)  # the refused ones let go, announcements hold none
    finally:
        holding.close()
        for connection in announcing:
            connection.close()
    _until(lambda: _held(served) == 0)  # the caller went away: its bytes are free
    image = (samples / "tinted-good.jpg").read_bytes()
    answer = httpx.post(
        served.url + "/search", content=image, headers={**AUTH, "Content-Type": "image/jpeg"}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    assert upstreams.trace_state.search_requests == 1  # only the search that was let in
    _until(lambda: _held(served) == 0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [
        r.getMessage() for r in caplog.records
    ]
    assert any(" 499 " in record.getMessage() for record in caplog.records if record.name.endswith("access"))


def test_a_lone_upload_larger_than_the_budget_is_still_taken(
    gateway: GatewayFactory, samples: Path, upstreams: Upstreams
) -> None:
    served = gateway(settings={"providers": ["tracemoe"]}, max_bodies_bytes=1024)
    image = (samples / "tinted-good.jpg").read_bytes()
    assert len(image) > 1024
    answer = httpx.post(
        served.url + "/search", content=image, headers={**AUTH, "Content-Type": "image/jpeg"}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    _until(lambda: _held(served) == 0)  # given back once the answer is sent


@pytest.mark.tracemoe_knobs(latency=6.0)
def test_the_deadline_counts_from_the_requests_arrival(
    gateway: GatewayFactory, samples: Path, upstreams: Upstreams
) -> None:
    """A body that takes most of ``deadline`` to arrive leaves its search only the rest: the caller is
    answered about ``deadline`` after it began, not ``deadline`` after its last byte."""
    served = gateway(settings={"providers": ["tracemoe"]}, deadline=2.5)
    image = (samples / "tinted-good.jpg").read_bytes()
    connection = socket.create_connection(("127.0.0.1", served.port), timeout=30)
    try:
        started = time.monotonic()
        connection.sendall(
            f"POST /search HTTP/1.1\r\nHost: gateway\r\nx-trace-key: {TOKEN}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(image)}\r\nConnection: close\r\n\r\n".encode()
            + image[:100]
        )
        time.sleep(1.5)  # most of the deadline
        connection.sendall(image[100:])
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
        elapsed = time.monotonic() - started
    finally:
        connection.close()
    assert answer.startswith(b"HTTP/1.1 502"), answer[:200]
    assert b"deadline" in answer
    assert elapsed < 2.5 + 1.2, elapsed  # not 1.5 s of reading + a whole 2.5 s more


def _slow_post(served: Served, path: str, content_type: str, body: bytes, pause: float) -> bytes:
    """The whole answer to a POST whose body's first 100 bytes come at once and the rest ``pause`` s later."""
    connection = socket.create_connection(("127.0.0.1", served.port), timeout=30)
    try:
        connection.sendall(
            f"POST {path} HTTP/1.1\r\nHost: gateway\r\nx-trace-key: {TOKEN}\r\nContent-Type: {content_type}"
            f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body[:100]
        )
        time.sleep(pause)
        connection.sendall(body[100:])
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
        return answer
    finally:
        connection.close()


def test_a_body_that_took_the_deadline_is_a_408_and_asks_no_provider(
    gateway: GatewayFactory, samples: Path, upstreams: Upstreams
) -> None:
    """With less than a quarter of a 2 s deadline left once the body is in, no provider could answer: the
    search was sent all the same, charged, and the caller got a 502 (which trace.moe's clients retry,
    uploading and spending again). It is the 408 of a body that did not arrive in time; the status page
    says so on the page."""
    served = gateway(settings={"providers": ["tracemoe"]}, deadline=2.0)
    image = (samples / "tinted-good.jpg").read_bytes()
    answer = _slow_post(served, "/search", "image/jpeg", image, 1.7)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert answer.endswith(b'{"error":"Request Timeout"}')
    form = (
        b'--b\r\nContent-Disposition: form-data; name="token"\r\n\r\n' + TOKEN.encode() + b"\r\n"
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="shot.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + image + b"\r\n--b--\r\n"
    )
    page = _slow_post(served, "/", "multipart/form-data; boundary=b", form, 1.7)
    assert page.startswith(b"HTTP/1.1 200"), page[:200]
    assert b'id="outcome">The upload did not arrive in time.' in page
    assert b"<form" in page  # the whole page, to try again
    assert upstreams.trace_state.search_requests == 0


def test_cross_origin_callers_are_answered_as_trace_moe_answers_them(gateway: GatewayFactory) -> None:
    """trace.moe reflects the origin with credentials and the headers a preflight asks for, and answers any
    ``OPTIONS`` with 204 (contract §5): a browser's ``fetch`` with credentials or its own header works."""
    served = gateway(open=True)
    origin = "https://bot-dashboard.example"

    def preflight_of(path: str, headers: str) -> httpx.Response:
        asks = {
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers,
        }
        return httpx.options(served.url + path, headers=asks)

    preflight = preflight_of("/search", "x-trace-key, x-requested-with")
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == origin
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert set(preflight.headers["access-control-allow-headers"].lower().replace(" ", "").split(",")) >= {
        "x-trace-key",
        "x-requested-with",
    }
    simple = httpx.get(served.url + "/me", headers={"Origin": origin})
    assert simple.status_code == 200
    assert simple.headers["access-control-allow-origin"] == origin
    assert simple.headers["access-control-allow-credentials"] == "true"
    for path in ("/me", "/search"):
        assert httpx.options(served.url + path).status_code == 204
    for path in ("/", "/metrics", "/v1/quota"):  # the gateway's own: any origin, never with credentials
        other = httpx.get(served.url + path, headers={"Origin": origin})
        assert other.headers["access-control-allow-origin"] == "*", path
        assert "access-control-allow-credentials" not in other.headers, path
    native = preflight_of("/v1/search", "content-type, x-request-id")  # a native client's own header
    assert native.status_code == 200, native.text
    assert "access-control-allow-credentials" not in native.headers


@pytest.mark.parametrize("raw_id", ["Infinity", "-Infinity", "1e400", "NaN", '"x"', "[1]"])
def test_an_anilist_query_with_an_id_no_number_can_be_is_a_400(gateway: GatewayFactory, raw_id: str) -> None:
    served = gateway()
    answer = httpx.post(
        served.url + "/anilist",
        content=f'{{"query": "q", "variables": {{"id": {raw_id}}}}}',
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["errors"][0]["message"] == "Invalid query"


def test_a_hit_whose_titles_could_not_be_looked_up_keeps_its_bare_anilist_id(
    gateway: GatewayFactory,
    samples: Path,
    upstreams: Upstreams,
    live_server: Callable[[Any], LiveServer],
) -> None:
    """With ``anilistInfo``, a hit whose AniList lookup failed is answered with its bare ID, as trace.moe
    answers an ID its table lacks: a record made up of nulls and ``isAdult: false`` would let a bot's
    adult filter pass an anime nobody looked up. Once the lookup works, the record is whole."""
    image = (samples / "tinted-good.jpg").read_bytes()
    options = {"tracemoe": {"url": upstreams.tracemoe.url}}

    def top_anilist(anilist_url: str) -> object:
        served = gateway(
            settings={
                "providers": ["tracemoe"],
                "metadata": "anilist",
                "provider_options": {**options, "anilist": {"url": anilist_url}},
            }
        )
        answer = httpx.post(
            served.url + "/search?anilistInfo",
            content=image,
            headers={**AUTH, "Content-Type": "image/jpeg"},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["result"][0]["anilist"]

    assert top_anilist(f"http://127.0.0.1:{free_port()}") == 11887  # nothing listens there
    record = top_anilist(live_server(anilist_app()).url)
    assert isinstance(record, dict)
    assert (record["id"], record["isAdult"], record["title"]["romaji"]) == (11887, False, "Kokoro Connect")


def test_a_native_search_for_an_anilist_id_no_anime_can_have_asks_nobody(
    gateway: GatewayFactory, samples: Path, upstreams: Upstreams
) -> None:
    """AniList's IDs end at 2**31-1: the native API refuses one past them (422) without sending anything,
    as the trace.moe route answers it without asking, where it was sent upstream and charged."""
    served = gateway(settings={"providers": ["tracemoe"]})
    image = (samples / "tinted-good.jpg").read_bytes()
    answer = httpx.post(
        served.url + "/v1/search?anilist_id=99999999999999999999",
        content=image,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/jpeg"},
        timeout=60,
    )
    assert answer.status_code in {400, 422}, answer.text
    assert upstreams.trace_state.search_requests == 0
