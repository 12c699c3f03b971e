"""End to end, separate processes: the shared ledger steers searches away from a spent provider.

trace.moe's emulator allows 3 searches; whatanimeisthis's emulator is the fallback. Five `anisearch search`
processes share one ledger (the default SQLite file, or one Redis for two "machines" with their own
state directories): three go to trace.moe, two to whatanimeisthis, and trace.moe receives exactly three.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from anisearch_emulators.tracemoe import create_app as tracemoe_app
from anisearch_emulators.whatanimeisthis import create_app as whatanimeisthis_app

pytestmark = pytest.mark.e2e

Cli = Callable[..., "subprocess.CompletedProcess[str]"]
"""The ``cli`` fixture of conftest.py: runs ``python -m anisearch`` in its own process."""


def five_searches(cli: Cli, image: Path, envs: list[dict[str, str]]) -> list[dict[str, Any]]:
    results = []
    for env in envs:
        done = cli("search", str(image), "--json", "--no-cache", env=env)
        assert done.returncode == 0, done.stderr
        results.append(json.loads(done.stdout))
    return results


def assert_split(results: list[dict[str, Any]], trace: Any) -> None:
    assert [r["provider"] for r in results] == ["tracemoe"] * 3 + ["whatanimeisthis"] * 2
    for result in results[3:]:
        first = result["attempts"][0]
        assert (first["provider"], first["outcome"]) == ("tracemoe", "skipped")
        assert first["reason"].startswith("quota exhausted until ")
    assert trace.app.state.emulator.search_requests == 3


def test_five_processes_share_the_default_sqlite_ledger(
    cli: Cli, live_server: Callable[[Any], Any], samples: Path
) -> None:
    trace = live_server(tracemoe_app(quota=3))
    fallback = live_server(whatanimeisthis_app())
    env = {
        "ANISEARCH_TRACEMOE_URL": trace.url,
        "ANISEARCH_WHATANIMEISTHIS_URL": fallback.url,
        "ANISEARCH_PROVIDERS": "tracemoe,whatanimeisthis",
    }
    results = five_searches(cli, samples / "tinted-good.jpg", [env] * 5)
    assert_split(results, trace)
    state = Path(os.environ["XDG_STATE_HOME"]) / "anisearch" / "ledger.sqlite3"
    assert state.is_file()
    quota = cli("quota", "tracemoe", "--json", env=env)
    windows = {q["window"]: q for q in json.loads(quota.stdout)}
    assert (windows["rolling-24h"]["limit"], windows["rolling-24h"]["remaining"]) == (3, 0)


@pytest.mark.redis
def test_two_machines_share_one_redis_ledger(
    cli: Cli, live_server: Callable[[Any], Any], samples: Path, redis_url: str, tmp_path: Path
) -> None:
    trace = live_server(tracemoe_app(quota=3))
    fallback = live_server(whatanimeisthis_app())
    machines = [
        {
            "ANISEARCH_TRACEMOE_URL": trace.url,
            "ANISEARCH_WHATANIMEISTHIS_URL": fallback.url,
            "ANISEARCH_PROVIDERS": "tracemoe,whatanimeisthis",
            "ANISEARCH_LEDGER": redis_url,
            "XDG_STATE_HOME": str(tmp_path / name / "state"),
            "XDG_CACHE_HOME": str(tmp_path / name / "cache"),
        }
        for name in ("machine-a", "machine-b")
    ]
    results = five_searches(cli, samples / "tinted-good.jpg", [machines[i % 2] for i in range(5)])
    assert_split(results, trace)
    for name in ("machine-a", "machine-b"):
        assert not (tmp_path / name / "state" / "anisearch" / "ledger.sqlite3").exists()


WORKER = textwrap.dedent(
    """
    import sys
    import anisearch
    with anisearch.Client() as client:
        for _ in range(int(sys.argv[2])):
            result = client.search(sys.argv[1], providers=["tracemoe"], cache=False)
            assert result.provider == "tracemoe", result
    """
)


@pytest.mark.parametrize("ledger", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_eight_processes_never_collide_on_a_concurrency_one_account(
    live_server: Callable[[Any], Any], samples: Path, request: pytest.FixtureRequest, ledger: str
) -> None:
    trace = live_server(tracemoe_app(quota=1000, latency=0.05))
    env = {**os.environ, "ANISEARCH_TRACEMOE_URL": trace.url}
    if ledger == "redis":
        env["ANISEARCH_LEDGER"] = request.getfixturevalue("redis_url")
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(samples / "tinted-good.jpg"), "5"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr
    log = trace.app.state.emulator.log
    refused = [row for row in log if row.code == 402]
    assert refused == []
    assert sum(1 for row in log if row.code == 200) == 40
