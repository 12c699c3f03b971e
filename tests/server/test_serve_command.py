"""``anisearch serve`` as a user runs it: a process that answers, and stops gracefully on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from tests.cli_runner import run_in_process
from tests.conftest import free_port
from tests.server.conftest import TOKEN

from anisearch._ledger import open_ledger
from anisearch_emulators.tracemoe import create_app as tracemoe_app

pytestmark = pytest.mark.e2e


def wait_until_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the gateway exited"
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail("the gateway did not start")


def test_serve_answers_and_finishes_inflight_searches_on_sigterm(
    live_server: Callable[[Any], Any], samples: Path, tmp_path: Path
) -> None:
    trace = live_server(tracemoe_app(latency=1.5))
    port = free_port()
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    env = {
        **os.environ,
        "ANISEARCH_PROVIDERS": "tracemoe",
        "ANISEARCH_TRACEMOE_URL": trace.url,
        "ANISEARCH_LEDGER": ledger,
        "ANISEARCH_CACHE": "off",
        "ANISEARCH_SERVER_CLIENTS": f"bot={TOKEN}",
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "anisearch", "serve", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc)
        answers: list[httpx.Response] = []

        def search() -> None:
            image = (samples / "tinted-good.jpg").read_bytes()
            answers.append(
                httpx.post(
                    url + "/search", files={"image": image}, headers={"x-trace-key": TOKEN}, timeout=60
                )
            )

        worker = threading.Thread(target=search)
        worker.start()
        deadline = time.monotonic() + 10
        while trace.app.state.emulator.search_requests == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)  # while the search waits on the upstream
        worker.join(timeout=60)
        # uvicorn re-raises the signal once it has shut down gracefully
        assert proc.wait(timeout=60) in {0, -signal.SIGTERM}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [a.status_code for a in answers] == [200], log.read_text()
    assert "anisearch gateway on http://127.0.0.1" in log.read_text()
    assert answers[0].json()["result"][0]["anilist"] == 11887

    async def gateway_scopes() -> list[Any]:
        store = open_ledger(ledger)
        try:
            return [q for q in await store.snapshot("gateway") if q.window == "rolling-24h"]
        finally:
            await store.aclose()

    (window,) = anyio.run(gateway_scopes)
    assert window.used == 1  # counted once, and its slot released (a held slot would count as well)


def test_serve_refuses_bad_settings_with_one_line(tmp_path: Path) -> None:
    # In process: the refusal comes before any server starts (the process above is the smoke test).
    done = run_in_process("serve", env={"ANISEARCH_SERVER_CLIENTS": "bot=short"})
    assert done.returncode == 2
    assert "at least 8 printable" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("variable", ["ANISEARCH_SERVER_DEADLINE", "ANISEARCH_SERVER_SLOT_WAIT"])
@pytest.mark.parametrize(
    ("value", "says"), [("inf", "finite number"), ("nan", "finite number"), ("1e300", "86400")]
)
def test_serve_refuses_a_deadline_or_slot_wait_not_finite_or_past_a_day(
    variable: str, value: str, says: str
) -> None:
    """``inf`` crashed ``serve``; ``1e300`` (meant as "no deadline") started it, then searches were 500s."""
    done = run_in_process("serve", env={"ANISEARCH_SERVER_CLIENTS": f"bot={TOKEN}", variable: value})
    assert done.returncode == 2
    assert variable in done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_serve_refuses_a_taken_port_or_a_bad_host_before_claiming_to_serve() -> None:
    clients = {"ANISEARCH_SERVER_CLIENTS": f"bot={TOKEN}"}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_in_process("serve", "--port", str(port), env=clients)
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == f"anisearch: error: port {port} on 127.0.0.1 is in use"
    assert "gateway on" not in done.stderr
    bad_host = run_in_process("serve", "--host", "999.1.1.1", "--port", str(free_port()), env=clients)
    assert bad_host.returncode == 2
    assert bad_host.stderr.startswith("anisearch: error: cannot listen on 999.1.1.1 port ")
    assert "Traceback" not in bad_host.stderr


def test_port_0_serves_on_a_free_port_and_names_it(tmp_path: Path) -> None:
    env = {**os.environ, "ANISEARCH_CACHE": "off", "ANISEARCH_LEDGER": "memory://"}
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "anisearch", "serve", "--port", "0", "--open"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "gateway on" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        line = next(line for line in log.read_text().splitlines() if "gateway on" in line)
        url = line.split("gateway on ", 1)[1].split(" ", 1)[0]
        assert not url.endswith(":0")
        wait_until_healthy(url, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
