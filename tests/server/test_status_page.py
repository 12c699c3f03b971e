"""The status page at ``/`` in a real headless browser (Debian's chromium through Selenium), and
``/metrics`` read by prometheus-client's own parser."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.server.conftest import TOKEN, GatewayFactory

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
