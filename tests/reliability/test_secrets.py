"""No secret leaks: every log record (DEBUG, httpx and httpcore included), every error message and repr,
the ledger and the cache are scanned for each credential anisearch was given or received."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from anisearch import (
    AnisearchError,
    AsyncClient,
    ConfigurationError,
    ImageFetchError,
    Settings,
)
from anisearch_emulators.tracemoe import EmulatedUser
from anisearch_emulators.tracemoe import create_app as tracemoe_app
from anisearch_emulators.whatanimeisthis import create_app as whatanimeisthis_app

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

TRACE_KEY = "tr4ceKEYsecret0123456789"
URL_PASSWORD = "urlPa55word"
EMAIL, PASSWORD = "ann@example.com", "correct horse battery staple"
DOWNLOAD_PASSWORD, DOWNLOAD_TOKEN = "dlPa55", "dlT0ken987"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def state_files() -> list[Path]:
    roots = [Path(os.environ["XDG_STATE_HOME"]), Path(os.environ["XDG_CACHE_HOME"])]
    return [
        path for root in roots for path in root.rglob("*") if path.is_file() and "cookies" not in path.name
    ]


async def test_no_credential_reaches_a_log_a_message_the_ledger_or_the_cache(
    live_server: Callable[[Any], Any], samples: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trace = live_server(tracemoe_app(keys={TRACE_KEY: EmulatedUser(email="bot@example.com")}))
    site = live_server(whatanimeisthis_app(users={EMAIL: PASSWORD}))
    trace_url = trace.url.replace("http://", f"http://user:{URL_PASSWORD}@")
    options = {
        "tracemoe": {"url": trace_url, "key": TRACE_KEY},
        "whatanimeisthis": {"url": site.url, "email": EMAIL, "password": PASSWORD},
    }
    settings = Settings.load(provider_options=options, allow_private_urls=True)
    texts = [repr(settings), str(settings), settings.model_dump_json()]
    errors: list[BaseException] = []
    image = (samples / "tinted-good.jpg").read_bytes()
    caplog.set_level(logging.DEBUG)
    async with AsyncClient(settings) as client:
        assert (await client.search(image, providers=["tracemoe"])).provider == "tracemoe"
        assert (await client.search(image, providers=["whatanimeisthis"], cache=False)).provider == (
            "whatanimeisthis"
        )
        await client.credits()
        texts += [repr(provider) for provider in client._providers.values()]
        dead = f"http://me:{DOWNLOAD_PASSWORD}@127.0.0.1:1/shot.jpg?token={DOWNLOAD_TOKEN}"
        with pytest.raises(ImageFetchError) as caught:
            await client.search(dead)
        errors.append(caught.value)
    jar = next(Path(os.environ["XDG_STATE_HOME"]).rglob("*cookies*"))
    cookies = [entry["value"] for entry in json.loads(jar.read_text())["cookies"]]
    assert cookies, "the sign-in set a session cookie"
    assert any("set-cookie" in r.getMessage().lower() for r in caplog.records), "httpcore logged headers"
    texts += [record.getMessage() for record in caplog.records]
    texts += [caplog.text]
    texts += [f"{error} {error!r} {error.__cause__!r}" for error in errors]
    blobs = [path.read_bytes() for path in state_files()]
    assert blobs, "the ledger and the cache were written"
    for secret in [TRACE_KEY, URL_PASSWORD, PASSWORD, DOWNLOAD_PASSWORD, DOWNLOAD_TOKEN, *cookies]:
        for text in texts:
            assert secret not in text
        for blob in blobs:
            assert secret.encode() not in blob


def test_no_command_prints_a_credential(
    live_server: Callable[[Any], Any], samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every command's stdout and stderr, with every credential configured (with -v: logs included)."""
    from tests.cli_runner import run_in_process

    trace = live_server(tracemoe_app(keys={TRACE_KEY: EmulatedUser(email="bot@example.com")}))
    site = live_server(whatanimeisthis_app(users={EMAIL: PASSWORD}))
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", trace.url.replace("http://", f"http://user:{URL_PASSWORD}@"))
    monkeypatch.setenv("ANISEARCH_TRACEMOE_KEY", TRACE_KEY)
    monkeypatch.setenv("ANISEARCH_WHATANIMEISTHIS_URL", site.url)
    monkeypatch.setenv("ANISEARCH_WHATANIMEISTHIS_EMAIL", EMAIL)
    monkeypatch.setenv("ANISEARCH_WHATANIMEISTHIS_PASSWORD", PASSWORD)
    image = str(samples / "tinted-good.jpg")
    commands = [
        ["login"],
        ["search", image, "-v"],
        ["search", image, "--json", "--raw", "-p", "whatanimeisthis", "--no-cache", "-v"],
        ["quota", "--refresh", "-v"],
        ["quota", "--json"],
        ["providers"],
        ["providers", "--json"],
        ["credits"],
        ["keys", "list"],
        ["recent"],
        ["rankings"],
        ["cache", "info"],
        ["logout"],
    ]
    outputs = []
    for command in commands:
        done = run_in_process(*command)
        outputs.append(f"{command}: {done.returncode}\n{done.stdout}\n{done.stderr}")
    text = "\n".join(outputs)
    assert "Kokoro Connect" in text or "11887" in text  # the searches ran
    for secret in [TRACE_KEY, URL_PASSWORD, PASSWORD]:
        assert secret not in text


@pytest.mark.parametrize("key", ["abc\ndef", "abc\x1b[2Jdef", "clé-secrète", "abc def", "\x00abc"])
def test_a_key_that_cannot_be_sent_is_refused_at_load_without_echoing_it(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(
        ConfigurationError, match=r"key of tracemoe in provider_options \(given in code\)"
    ) as caught:
        Settings.load(provider_options={"tracemoe": {"key": key}})
    assert key not in str(caught.value)
    assert caught.value.__cause__ is None
    if "\x00" in key:  # an environment variable cannot hold one
        return
    monkeypatch.setenv("ANISEARCH_TRACEMOE_KEY", key)
    with pytest.raises(ConfigurationError, match="ANISEARCH_TRACEMOE_KEY") as caught:
        Settings.load()
    assert key not in f"{caught.value} {caught.value!r}"


def test_a_password_may_be_non_ascii_but_not_hold_control_characters() -> None:
    Settings.load(provider_options={"whatanimeisthis": {"password": "mot de passe é"}})
    with pytest.raises(AnisearchError, match="password of whatanimeisthis in provider_options"):
        Settings.load(provider_options={"whatanimeisthis": {"password": "pass\nword"}})
