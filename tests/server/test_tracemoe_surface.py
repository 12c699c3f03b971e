"""The gateway's trace.moe API answers with trace.moe's statuses, content types and error bodies."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx
import pytest
from tests.server.conftest import TOKEN, GatewayFactory, Upstreams

from anisearch import _fetch

pytestmark = pytest.mark.e2e

AUTH = {"x-trace-key": TOKEN}
JSON = "application/json; charset=utf-8"


def test_a_closed_gateway_answers_401_without_a_token_and_403_for_an_unknown_one(
    gateway: GatewayFactory, samples: Path, upstreams: Upstreams
) -> None:
    served = gateway()
    image = (samples / "tinted-good.jpg").read_bytes()
    for path in ("/search", "/me"):
        answer = httpx.post(served.url + path, files={"image": image}) if path == "/search" else None
        answer = answer or httpx.get(served.url + path)
        assert answer.status_code == 401
        assert answer.headers["content-type"] == JSON
        assert answer.json()["error"].startswith("Missing API key")
    native = httpx.post(served.url + "/v1/search", files={"image": image})
    assert native.status_code == 401
    assert native.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = httpx.post(
        served.url + "/search", files={"image": image}, headers={"x-trace-key": "not-a-client"}
    )
    assert (wrong.status_code, wrong.json()) == (403, {"error": "Invalid API key"})
    assert upstreams.trace_state.search_requests == 0


def test_request_forms_and_their_errors_match_tracemoe(
    gateway: GatewayFactory, samples: Path, upstreams: Upstreams
) -> None:
    served = gateway(max_body_bytes=64 * 1024)
    url = served.url + "/search"
    no_input = httpx.get(url, headers=AUTH)
    assert (no_input.status_code, no_input.json()) == (405, {"error": "Method Not Allowed"})
    assert no_input.headers["content-type"] == JSON
    empty = httpx.post(url, files={"image": ("a.jpg", b"")}, headers=AUTH)
    assert (empty.status_code, empty.json()) == (400, {"error": "Failed to process file"})
    garbage = httpx.post(url, content=b"not an image at all", headers={**AUTH, "Content-Type": "image/jpeg"})
    assert (garbage.status_code, garbage.json()) == (400, {"error": "Failed to process image"})
    big = httpx.post(url, content=b"\xff" * (65 * 1024), headers={**AUTH, "Content-Type": "image/jpeg"})
    assert big.status_code == 413
    assert big.headers["content-type"].startswith("text/html")
    assert "Payload Too Large" in big.text
    big_form = httpx.post(url, files={"image": ("a.jpg", b"\xff" * (200 * 1024))}, headers=AUTH)
    assert big_form.status_code == 500  # multer's error: trace.moe answers its HTML 500 page
    assert big_form.headers["content-type"].startswith("text/html")
    post_me = httpx.post(served.url + "/me", headers=AUTH)
    assert post_me.status_code == 404
    assert "Cannot POST /me" in post_me.text
    unknown = httpx.get(served.url + "/nothing-here", headers=AUTH)
    assert (unknown.status_code, "Cannot GET /nothing-here" in unknown.text) == (404, True)
    period = httpx.get(served.url + "/me?period=week", headers=AUTH)
    assert (period.status_code, period.json()) == (400, {"error": "Invalid period"})
    assert upstreams.trace_state.search_requests == 0  # nothing reached an upstream


def test_a_malformed_multipart_body_is_answered_in_each_apis_shape(
    gateway: GatewayFactory, upstreams: Upstreams
) -> None:
    served = gateway()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    garbage = {"Content-Type": "multipart/form-data; boundary=b"}
    for form in (
        {"content": b"garbage"},
        {"data": {f"f{n}": "x" for n in range(5000)}, "files": {"image": b"x"}},  # too many fields
        {"data": {"big": "x" * (2 * 1024 * 1024)}, "files": {"image": b"x"}},  # a field over 1 MiB
    ):
        extra = garbage if "content" in form else {}
        trace = httpx.post(served.url + "/search", headers=AUTH | extra, timeout=30, **form)
        assert trace.status_code == 500  # multer's error: trace.moe's HTML 500 page
        assert trace.headers["content-type"].startswith("text/html")
        native = httpx.post(served.url + "/v1/search", headers=bearer | extra, timeout=30, **form)
        assert native.status_code == 400
        assert native.json()["error"]["message"].startswith("the multipart body does not parse")
    assert upstreams.trace_state.search_requests == 0


def test_raw_body_and_options_reach_the_provider(
    gateway: GatewayFactory, samples: Path, upstreams: Upstreams
) -> None:
    served = gateway()
    answer = httpx.post(
        served.url + "/search?anilistID=11887&cutBorders&anilistInfo",
        content=(samples / "tinted-good.jpg").read_bytes(),
        headers={**AUTH, "Content-Type": "application/octet-stream"},
        timeout=60,
    )
    assert answer.status_code == 200
    body = answer.json()
    assert {item["anilist"]["id"] for item in body["result"]} == {11887}
    assert body["result"][0]["anilist"]["title"]["romaji"] == "Kokoro Connect"
    assert answer.headers["X-Anisearch-Provider"] == "tracemoe"
    assert answer.headers["X-Anisearch-Cached"] == "false"


@pytest.mark.parametrize(
    ("value", "read_as"),
    [
        ("\u00b2", "ignored"),  # digits to Python, not to JavaScript's \\d
        ("\u0661\u0661\u0668\u0668\u0667", "ignored"),
        ("00000000011887", "11887"),  # Number() drops the zeros
        ("0", "no files"),  # ASCII digits: a filter, for an anime that has no files
        ("2147483648", "no files"),
        ("1" * 5000, "no files"),
    ],
)
def test_an_anilist_id_is_read_as_trace_moe_reads_it(
    gateway: GatewayFactory, samples: Path, upstreams: Upstreams, value: str, read_as: str
) -> None:
    """trace.moe filters by anilistID when it matches ^\\d+$ (ASCII digits) and ignores it otherwise, never
    an error page; an ID no AniList anime can have gets its "no indexed files" answer, asking no provider
    but counted against the caller like any search (a spent caller gets the 402 first)."""
    served = gateway(settings={"providers": ["tracemoe"]}, client_quota=1)

    def search() -> httpx.Response:
        return httpx.post(
            served.url + "/search",
            params={"anilistID": value},
            content=(samples / "tinted-good.jpg").read_bytes(),
            headers={**AUTH, "Content-Type": "image/jpeg"},
            timeout=60,
        )

    answer = search()
    assert (answer.status_code, answer.headers["content-type"]) == (200, JSON)
    anime = {item["anilist"] for item in answer.json()["result"]}
    if read_as == "no files":
        assert answer.json() == {"frameCount": 0, "error": "", "result": []}
        assert upstreams.trace_state.search_requests == 0
        assert search().status_code == 402  # the caller's one search was that one
        not_an_image = httpx.post(
            gateway(settings={"providers": ["tracemoe"]}).url + "/search",
            params={"anilistID": value},
            content=b"not an image at all",
            headers={**AUTH, "Content-Type": "image/jpeg"},
            timeout=60,
        )
        assert (not_an_image.status_code, not_an_image.json()) == (400, {"error": "Failed to process image"})
    elif read_as == "11887":
        assert anime == {11887}
    else:
        assert len(anime) > 1  # not filtered


@pytest.mark.parametrize(
    "case",
    [
        (500, "<!DOCTYPE html><pre>Internal Server Error</pre>", 502, "Search failed."),
        (429, {"error": "Too many requests"}, 503, "Error: Search queue is full"),
        (403, {"error": "Invalid API key"}, 502, "Search failed."),
    ],
    ids=["500 page", "429", "403 key refused"],
)
def test_an_upstream_failure_is_answered_in_each_apis_shape(
    gateway: GatewayFactory, samples: Path, upstreams: Upstreams, case: tuple[int, object, int, str]
) -> None:
    """The upstream fails (status, body): the gateway answers trace.moe's status and error, and the native
    API the same status with the typed error of each provider."""
    status, body, trace_status, trace_error = case
    served = gateway(settings={"providers": ["tracemoe"]})
    upstreams.trace_state.fail_next(status, body, times=20)
    image = (samples / "tinted-good.jpg").read_bytes()
    trace = httpx.post(served.url + "/search", files={"image": image}, headers=AUTH, timeout=60)
    assert trace.status_code == trace_status
    assert trace.headers["content-type"] == JSON
    assert trace.json()["error"].startswith(trace_error)
    assert "tracemoe: tracemoe:" not in trace.json()["error"]  # each failure names its provider once
    native = httpx.post(
        served.url + "/v1/search",
        files={"image": image},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=60,
    )
    assert native.status_code == trace_status
    error = native.json()["error"]
    assert error["type"] == "AllProvidersFailedError"
    assert [e["provider"] for e in error["errors"]] == ["tracemoe"]


def test_urls_that_point_inside_the_network_are_refused_without_a_request(
    gateway: GatewayFactory, upstreams: Upstreams
) -> None:
    served = gateway(settings={"allow_private_urls": True})  # a library setting the gateway never honours
    for target in (
        upstreams.tracemoe.url + "/image/x",  # loopback
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://10.0.0.1/a.jpg",
        "http://[::1]:80/a.jpg",
    ):
        answer = httpx.get(served.url + "/search", params={"url": target}, headers=AUTH, timeout=30)
        assert answer.status_code == 400, target
        assert answer.json() == {"error": f"Failed to fetch image {target}"}
    assert upstreams.tracemoe.app.state.emulator.requests["/image/x"] == 0
    assert upstreams.trace_state.search_requests == 0


class ImageHost(httpx.AsyncBaseTransport):
    """``img.test`` answers the status its path names (``/404.jpg``; ``/200.jpg`` with an empty body); the
    emulators are reached as usual."""

    def __init__(self) -> None:
        self.onward = httpx.AsyncHTTPTransport()
        self.asked: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != "img.test":
            return await self.onward.handle_async_request(request)
        self.asked.append(request.url.path)
        status = int(request.url.path.strip("/").removesuffix(".jpg"))
        return httpx.Response(status, text="" if status == 200 else "<h1>no</h1>")

    async def aclose(self) -> None:
        await self.onward.aclose()


def test_an_image_hosts_error_status_is_passed_through_and_a_failed_fetch_is_400(
    gateway: GatewayFactory, upstreams: Upstreams, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As trace.moe answers: the image host's 404 is a 404 (its 403 a 403, its 503 a 503), with the same body
    as a download that could not happen at all (a name that does not resolve), which is a 400; an empty
    answer is what trace.moe calls an empty upload."""

    async def resolve(host: str, port: int) -> list[str]:
        if host != "img.test":
            raise OSError(f"{host} is not in the test's DNS table")
        return ["93.184.215.14"]

    monkeypatch.setattr(_fetch, "resolve", resolve)
    host = ImageHost()
    served = gateway(transport=host)
    for status in (404, 403, 503):
        target = f"http://img.test/{status}.jpg"
        for method in ("GET", "POST"):
            answer = httpx.request(
                method, served.url + "/search", params={"url": target}, headers=AUTH, timeout=30
            )
            assert (answer.status_code, answer.json()) == (
                status,
                {"error": f"Failed to fetch image {target}"},
            )
            assert answer.headers["content-type"] == JSON
    assert host.asked == ["/404.jpg", "/404.jpg", "/403.jpg", "/403.jpg", "/503.jpg", "/503.jpg"]
    target = "http://nowhere.test/a.jpg"
    unresolved = httpx.get(served.url + "/search", params={"url": target}, headers=AUTH, timeout=30)
    assert (unresolved.status_code, unresolved.json()) == (400, {"error": f"Failed to fetch image {target}"})
    empty = httpx.get(
        served.url + "/search", params={"url": "http://img.test/200.jpg"}, headers=AUTH, timeout=30
    )
    assert (empty.status_code, empty.json()) == (
        400,
        {"error": "Failed to process file"},
    )  # as an empty upload
    assert upstreams.trace_state.search_requests == 0


def test_a_url_that_is_a_path_on_the_gateway_is_never_read(
    gateway: GatewayFactory, samples: Path, upstreams: Upstreams
) -> None:
    """Only http(s) URLs are downloaded: a path (or any other scheme) would be read from the gateway's own
    disk, uploaded to a provider, and its kind told back."""
    served = gateway()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for target in (str(samples / "tinted-good.jpg"), "/etc/passwd", "file:///etc/passwd", "ftp://a/b.jpg"):
        answer = httpx.get(served.url + "/search", params={"url": target}, headers=AUTH, timeout=30)
        assert (answer.status_code, answer.json()) == (400, {"error": f"Failed to fetch image {target}"})
        for native in (
            httpx.post(served.url + "/v1/search", json={"url": target}, headers=bearer, timeout=30),
            httpx.post(served.url + "/v1/search", data={"url": target}, files={"x": b""}, headers=bearer),
        ):
            assert native.status_code == 400, target
            error = native.json()["error"]
            assert error["message"] == "only http:// and https:// URLs are fetched"
    assert upstreams.trace_state.search_requests == 0


@pytest.mark.tracemoe_knobs(keys={"upstream-secret-key-123": 3})
def test_upstream_keys_never_appear_in_responses_headers_or_logs(
    gateway: GatewayFactory, samples: Path, upstreams: Upstreams, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "upstream-secret-key-123"
    served = gateway(
        settings={
            "provider_options": {
                "tracemoe": {"url": upstreams.tracemoe.url, "key": secret},
                "whatanimeisthis": {"url": upstreams.whatanimeisthis.url, "key": "wait-secret-key-456"},
            }
        }
    )
    caplog.set_level(logging.DEBUG)
    image = (samples / "tinted-good.jpg").read_bytes()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    answers = [
        httpx.post(served.url + "/search", files={"image": image}, headers=AUTH, timeout=60),
        httpx.get(served.url + "/me", headers=AUTH),
        httpx.get(served.url + "/me?key=" + TOKEN),
        httpx.post(served.url + "/v1/search", files={"image": image}, headers=bearer, timeout=60),
        httpx.get(served.url + "/v1/quota", headers=bearer),
        httpx.get(served.url + "/v1/providers", headers=bearer),
        httpx.get(served.url + "/"),
        httpx.get(served.url + "/metrics"),
        httpx.get(served.url + "/openapi.json"),
        httpx.get(served.url + "/readyz"),
    ]
    assert [a.status_code for a in answers] == [200, 200, 401, 200, 200, 200, 200, 200, 200, 200]
    assert upstreams.trace_state.log[-1].scope != "127.0.0.1"  # the key was used upstream...
    for answer in answers:  # ...and never shown
        shown = answer.text + str(answer.headers)
        for needle in (secret, "wait-secret-key-456"):
            assert needle not in shown, answer.url
    assert TOKEN not in "".join(a.text + str(a.headers) for a in answers)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert any("/search" in record.getMessage() for record in caplog.records)
    for needle in (secret, "wait-secret-key-456", TOKEN):
        assert needle not in logged


def test_a_ledger_that_cannot_be_reached_is_answered_in_each_apis_shape(
    gateway: GatewayFactory, samples: Path, upstreams: Upstreams
) -> None:
    """Redis down: every endpoint that needs the ledger answers its API's JSON error (trace.moe's 500
    "Database temporarily unavailable", the native typed LedgerError), never a bare text 500, and no
    search reaches the upstream."""
    from tests.conftest import free_port

    served = gateway(settings={"providers": ["tracemoe"], "ledger": f"redis://127.0.0.1:{free_port()}/0"})
    image = (samples / "tinted-good.jpg").read_bytes()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for answer in (
        httpx.post(served.url + "/search", files={"image": image}, headers=AUTH, timeout=60),
        httpx.get(served.url + "/me", headers=AUTH, timeout=60),
    ):
        assert (answer.status_code, answer.headers["content-type"]) == (500, JSON)
        assert answer.json() == {"error": "Search failed. Database temporarily unavailable."}
    for answer in (
        httpx.post(served.url + "/v1/search", files={"image": image}, headers=bearer, timeout=60),
        httpx.get(served.url + "/v1/quota", headers=bearer, timeout=60),
    ):
        assert answer.status_code == 500
        assert answer.json()["error"]["type"] == "LedgerError"
    assert upstreams.trace_state.search_requests == 0


@pytest.mark.tracemoe_knobs(latency=3.0, concurrency=1)
def test_a_search_refused_for_a_busy_slot_says_when_to_retry(
    gateway: GatewayFactory, samples: Path, upstreams: Upstreams
) -> None:
    """trace.moe's one slot is busy past the search's deadline: the 503 (and the native API's) carries a
    Retry-After, as docs/gateway.md promises, whether or not the refusal knew how long to wait."""
    import concurrent.futures

    served = gateway(settings={"providers": ["tracemoe"]}, deadline=1.0)
    first = (samples / "tinted-good.jpg").read_bytes()
    second = (samples / "border-bad.jpg").read_bytes()

    def holder() -> httpx.Response:
        return httpx.post(
            served.url + "/search", content=first, headers={**AUTH, "Content-Type": "image/jpeg"}, timeout=60
        )

    def search_second(path: str, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(served.url + path, content=second, headers=headers, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        holding = pool.submit(holder)
        while upstreams.trace_state.search_requests < 1:
            time.sleep(0.01)  # the slot is taken
        # Both at once, so their 1 s deadlines end well inside the holder's 3 s, however slow the machine.
        busy_answer = pool.submit(search_second, "/search", {**AUTH, "Content-Type": "image/jpeg"})
        native_answer = pool.submit(
            search_second, "/v1/search", {"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/jpeg"}
        )
        busy, native = busy_answer.result(), native_answer.result()
        holding.result()
    assert (busy.status_code, busy.json()) == (503, {"error": "Error: Search queue is full"})
    assert native.status_code == 503, native.text
    for refused in (busy, native):  # the wait the slot's holder leaves, else a short one
        assert 1 <= int(refused.headers["Retry-After"]) <= 5


def test_a_busy_refusal_without_a_known_wait_still_says_when_to_retry() -> None:
    from anisearch import (
        AllProvidersFailedError,
        ConcurrencyLimitError,
        ProviderBusyError,
        QuotaExhaustedError,
        RateLimitedError,
    )
    from anisearch._server._errors import BUSY_RETRY_SECONDS, retry_after_header, tracemoe_error

    busy = AllProvidersFailedError(
        "no provider answered", [ConcurrencyLimitError("no tracemoe slot freed in time", provider="tracemoe")]
    )
    answer = tracemoe_error(busy, None)
    assert (answer.status_code, answer.headers["Retry-After"]) == (503, str(BUSY_RETRY_SECONDS))
    assert retry_after_header(busy) == {"Retry-After": str(BUSY_RETRY_SECONDS)}
    spent = AllProvidersFailedError(
        "no provider answered", [QuotaExhaustedError("spent", provider="tracemoe")]
    )
    assert tracemoe_error(spent, None).status_code == 402
    assert retry_after_header(spent) == {}  # nobody said when it frees: no guess
    # one spent for hours, one busy for seconds: come back when the busy one may be free, not in hours
    mixed = AllProvidersFailedError(
        "no provider answered",
        [
            QuotaExhaustedError("spent", provider="tracemoe", retry_after=20_000),
            ConcurrencyLimitError("no slot freed in time", provider="whatanimeisthis"),
        ],
    )
    assert (tracemoe_error(mixed, None).status_code, retry_after_header(mixed)) == (
        503,
        {"Retry-After": str(BUSY_RETRY_SECONDS)},
    )
    # a rate window an hour long and a provider merely busy: the busy one may answer in seconds
    windows = AllProvidersFailedError(
        "no provider answered",
        [
            RateLimitedError("hourly limit", provider="whatanimeisthis", retry_after=3600),
            ProviderBusyError("queue full", provider="tracemoe"),
        ],
    )
    assert retry_after_header(windows) == {"Retry-After": str(BUSY_RETRY_SECONDS)}


def test_a_duration_from_anilist_never_ends_before_the_scene() -> None:
    """AniList's episode length is an average: a scene past it keeps trace.moe's duration >= to."""
    from anisearch import Hit
    from anisearch._server._tracemoe import item

    late = Hit(
        provider="whatanimeisthis", similarity=0.97, anilist_id=1, start_seconds=1490.0, end_seconds=1500.0
    )
    assert item(late.model_copy(update={"episode_minutes": 24}), anilist_info=False)["duration"] == 1500.0
    early = late.model_copy(update={"episode_minutes": 24, "start_seconds": 60.0, "end_seconds": 62.0})
    assert item(early, anilist_info=False)["duration"] == 1440.0
    assert item(late, anilist_info=False)["duration"] == 1500.0  # nothing known: the scene's end
