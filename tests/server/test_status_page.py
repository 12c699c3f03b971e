"""The status page at ``/`` in a real headless browser (Debian's chromium through Selenium), and
``/metrics`` read by prometheus-client's own parser."""

from __future__ import annotations

import base64
import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import LiveServer
from tests.server.conftest import TOKEN, GatewayFactory, Upstreams

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless chromium from the system (``apt-get install chromium chromium-driver``; .ci/run does)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):  # pragma: no cover - a broken setup
        pytest.fail("chromium is not installed: apt-get install chromium chromium-driver (see .ci/run)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_status_page_lists_every_provider_and_searches_a_dropped_screenshot(
    gateway: GatewayFactory, browser: Any, samples: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    served = gateway()
    browser.get(served.url + "/")
    assert browser.title == "anisearch gateway"
    rows = browser.find_elements(By.CSS_SELECTOR, "#providers tbody tr")
    names = {row.find_element(By.TAG_NAME, "strong").text for row in rows}
    assert names >= {"tracemoe", "whatanimeisthis"}

    browser.find_element(By.NAME, "token").send_keys(TOKEN)
    browser.find_element(By.NAME, "image").send_keys(str(samples / "tinted-good.jpg"))
    browser.find_element(By.CSS_SELECTOR, "#search button").click()
    outcome = WebDriverWait(browser, 60).until(
        expected_conditions.presence_of_element_located((By.ID, "outcome"))
    )
    assert "Answered by tracemoe" in outcome.text
    first = browser.find_element(By.CSS_SELECTOR, "#hits tbody tr")
    assert "Kokoro Connect" in first.text
    assert "11887" in first.text
    attempts = browser.find_element(By.ID, "attempts").text
    assert "tracemoe" in attempts
    assert "ok" in attempts


def test_the_status_page_refuses_a_search_without_a_token(gateway: GatewayFactory, samples: Path) -> None:
    served = gateway()
    answer = httpx.post(served.url + "/", files={"image": (samples / "tinted-good.jpg").read_bytes()})
    assert answer.status_code == 200
    assert "Missing API key" in answer.text


def test_a_search_posted_from_another_origins_page_is_refused_and_spends_nothing(
    gateway: GatewayFactory, samples: Path, upstreams: Upstreams
) -> None:
    """A page elsewhere can make a visitor's browser post the form (no preflight): on an open gateway that
    would search as the visitor. What browsers send says where the post came from; curl sends neither."""
    served = gateway(open=True)
    image = {"image": ("a.jpg", (samples / "tinted-good.jpg").read_bytes(), "image/jpeg")}
    for headers, shown in (
        (
            {"Sec-Fetch-Site": "cross-site", "Origin": "https://elsewhere.example"},
            "Sec-Fetch-Site: cross-site",
        ),
        (
            {"Sec-Fetch-Site": "same-site", "Origin": "https://other.gateway.example"},
            "Sec-Fetch-Site: same-site",
        ),
        ({"Origin": "https://elsewhere.example"}, "Origin: https://elsewhere.example"),  # no Fetch Metadata
        ({"Origin": "null"}, "Origin: null"),  # a sandboxed frame, or a page hiding where it is
        ({"Origin": "http://[not-an-address"}, "Origin: http://[not-an-address"),
    ):
        answer = httpx.post(served.url + "/", files=image, headers=headers, timeout=60)
        assert answer.status_code == 403, headers
        assert answer.headers["content-type"].startswith("text/html")
        assert "posted from a page that is not the gateway's own" in answer.text
        assert f"({shown})" in answer.text
    assert upstreams.trace_state.search_requests == 0
    own = {"Sec-Fetch-Site": "same-origin", "Origin": served.url}
    for headers in (own, {"Origin": served.url}, {}):  # the page's own form (any browser), and curl
        answer = httpx.post(served.url + "/", files=image, headers=headers, timeout=60)
        assert answer.status_code == 200, headers
        assert "Answered by <strong>tracemoe</strong>" in answer.text, headers
    api = httpx.post(served.url + "/search", files=image, headers={"Origin": "https://elsewhere.example"})
    assert api.status_code == 200  # trace.moe's API serves any origin, as trace.moe does
    assert upstreams.trace_state.search_requests == 4


def test_a_page_on_another_site_cannot_make_a_visitors_browser_search(
    gateway: GatewayFactory,
    browser: Any,
    samples: Path,
    upstreams: Upstreams,
    live_server: Callable[[Any], LiveServer],
) -> None:
    """What the browser itself sends: a page at ``localhost`` posts a screenshot to an open gateway at
    ``127.0.0.1`` (another site) with a no-cors ``fetch``, which no preflight stops."""
    from selenium.webdriver.support.ui import WebDriverWait
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    served = gateway(open=True)
    picture = base64.b64encode((samples / "tinted-good.jpg").read_bytes()).decode()
    script = f"""
    const bytes = Uint8Array.from(atob("{picture}"), c => c.charCodeAt(0));
    const form = new FormData();
    form.append("image", new Blob([bytes], {{type: "image/jpeg"}}), "a.jpg");
    fetch("{served.url}/", {{method: "POST", mode: "no-cors", body: form}})
      .then(() => {{ document.title = "sent"; }}, () => {{ document.title = "failed"; }});
    """
    page = HTMLResponse(f"<!DOCTYPE html><title>waiting</title><script>{script}</script>")
    elsewhere = live_server(Starlette(routes=[Route("/", lambda _request: page)]))
    browser.get(f"http://localhost:{elsewhere.port}/")
    WebDriverWait(browser, 60).until(lambda driver: driver.title != "waiting")
    assert browser.title == "sent"  # the browser sent it (its answer is opaque to the page)
    assert upstreams.trace_state.search_requests == 0


def test_the_status_page_reads_no_more_than_max_body_bytes(gateway: GatewayFactory) -> None:
    """Without a token too: a closed gateway learns the token only from the form, so the form is bounded
    as every search body is (here a chunked body, with no length announced)."""
    served = gateway(max_body_bytes=64 * 1024)

    def body() -> Iterator[bytes]:
        yield b"--b\r\nContent-Disposition: form-data; name=image; filename=a.jpg\r\n\r\n"
        for _ in range(128):  # 8 MiB
            yield b"\xff" * (64 * 1024)

    with contextlib.suppress(httpx.TransportError):  # the gateway may close before the whole body is sent
        answer = httpx.post(
            served.url + "/", content=body(), headers={"Content-Type": "multipart/form-data; boundary=b"}
        )
        assert "The upload is larger than 65536 bytes" in answer.text
    garbage = httpx.post(
        served.url + "/", content=b"garbage", headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert garbage.status_code == 200
    assert "The form could not be read" in garbage.text


def test_metrics_parse_and_count_searches_by_provider(gateway: GatewayFactory, samples: Path) -> None:
    served = gateway(client_quota=1)
    image = (samples / "tinted-good.jpg").read_bytes()
    for _ in range(2):  # the second is refused by the client's own quota
        httpx.post(served.url + "/search", files={"image": image}, headers={"x-trace-key": TOKEN}, timeout=60)
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(served.url + "/metrics").text)}
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples
    }
    assert values[("anisearch_searches_total", (("provider", "tracemoe"),))] == 1
    assert values[("anisearch_attempts_total", (("outcome", "ok"), ("provider", "tracemoe")))] == 1
    assert values[("anisearch_refused_total", (("kind", "quota"),))] == 1
    assert values[("anisearch_upstream_latency_seconds_count", (("provider", "tracemoe"),))] == 1
    assert ("anisearch_quota_remaining", (("provider", "tracemoe"), ("window", "rolling-24h"))) in values
    assert families["anisearch_slot_wait_seconds"].type == "histogram"
