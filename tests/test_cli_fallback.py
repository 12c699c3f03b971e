"""End to end, separate processes: the shared ledger steers searches away from a spent provider.

trace.moe's emulator allows 3 searches; whatanimeisthis's emulator is the fallback. Five `anisearch search`
processes share one ledger (the default SQLite file, or one Redis for two "machines" with their own
state directories): three go to trace.moe, two to whatanimeisthis, and trace.moe receives exactly three.

The processes are forked from one parent that imported anisearch once (``tests/forked.py``): each is its own
OS process with its own ledger connection, without paying the interpreter's start-up again.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.cli_runner import run_in_process
from tests.forked import Job, run_forked

from anisearch_emulators.tracemoe import create_app as tracemoe_app
from anisearch_emulators.whatanimeisthis import create_app as whatanimeisthis_app

pytestmark = pytest.mark.e2e

COMMAND = "from anisearch.cli import main\nmain()\n"
"""``anisearch ARGS`` as its console script runs it."""


def five_searches(image: Path, envs: list[dict[str, str]], workdir: Path) -> list[dict[str, Any]]:
    """``anisearch search IMAGE --json --no-cache`` in five processes, one after the other."""
    argv = ["search", str(image), "--json", "--no-cache"]
    done = run_forked(COMMAND, [Job(argv, env) for env in envs], workdir, together=False)
    for process in done:
        assert process.returncode == 0, process.stderr
    return [json.loads(process.stdout) for process in done]


def assert_split(results: list[dict[str, Any]], trace: Any) -> None:
    assert [r["provider"] for r in results] == ["tracemoe"] * 3 + ["whatanimeisthis"] * 2
    for result in results[3:]:
        first = result["attempts"][0]
        assert (first["provider"], first["outcome"]) == ("tracemoe", "skipped")
        assert first["reason"].startswith("quota exhausted until ")
    assert trace.app.state.emulator.search_requests == 3


def test_five_processes_share_the_default_sqlite_ledger(
    live_server: Callable[[Any], Any], samples: Path, tmp_path: Path
) -> None:
    trace = live_server(tracemoe_app(quota=3))
    fallback = live_server(whatanimeisthis_app())
    env = {
        "ANISEARCH_TRACEMOE_URL": trace.url,
        "ANISEARCH_WHATANIMEISTHIS_URL": fallback.url,
        "ANISEARCH_PROVIDERS": "tracemoe,whatanimeisthis",
    }
    results = five_searches(samples / "tinted-good.jpg", [env] * 5, tmp_path / "processes")
    assert_split(results, trace)
    state = Path(os.environ["XDG_STATE_HOME"]) / "anisearch" / "ledger.sqlite3"
    assert state.is_file()
    quota = run_in_process("quota", "tracemoe", "--json", env=env)
    windows = {q["window"]: q for q in json.loads(quota.stdout)}
    assert (windows["rolling-24h"]["limit"], windows["rolling-24h"]["remaining"]) == (3, 0)


@pytest.mark.redis
def test_two_machines_share_one_redis_ledger(
    live_server: Callable[[Any], Any], samples: Path, redis_url: str, tmp_path: Path
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
    envs = [machines[i % 2] for i in range(5)]
    results = five_searches(samples / "tinted-good.jpg", envs, tmp_path / "processes")
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
    live_server: Callable[[Any], Any],
    samples: Path,
    request: pytest.FixtureRequest,
    ledger: str,
    tmp_path: Path,
) -> None:
    trace = live_server(tracemoe_app(quota=1000, latency=0.05))
    env = {"ANISEARCH_TRACEMOE_URL": trace.url}
    if ledger == "redis":
        env["ANISEARCH_LEDGER"] = request.getfixturevalue("redis_url")
    job = Job([str(samples / "tinted-good.jpg"), "5"])
    workers = run_forked(WORKER, [job] * 8, tmp_path / "processes", together=True, env=env)
    for worker in workers:
        assert worker.returncode == 0, worker.stderr
    log = trace.app.state.emulator.log
    refused = [row for row in log if row.code == 402]
    assert refused == []
    assert sum(1 for row in log if row.code == 200) == 40
