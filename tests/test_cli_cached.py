"""``anisearch search FILE`` answered from the result cache before the engine starts (``_cli/_cached``).

The answer, the output and the exit code are the engine's; only the work differs: no client, no provider
module, no httpx, Pillow or ledger. Whatever the shortcut cannot answer exactly goes to the engine.
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
from tests.cli_runner import run_in_process as cli

from anisearch._cli import _cached, _search
from anisearch._client import AsyncClient
from anisearch_emulators.anilist import create_app as anilist_app

pytestmark = pytest.mark.e2e


@pytest.fixture
def engine_starts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the command built an ``AsyncClient`` (the engine)."""
    started: list[int] = []
    original = AsyncClient.__init__

    def counted(self: AsyncClient, *args: Any, **kwargs: Any) -> None:
        started.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(AsyncClient, "__init__", counted)
    return started


def test_a_repeated_file_is_answered_without_the_engine(
    tracemoe: Any, samples: Path, engine_starts: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    shot = str(samples / "tinted-good.jpg")
    first = cli("search", shot)
    assert first.returncode == 0
    assert "Kokoro Connect" in first.stdout
    assert len(engine_starts) == 1

    again = cli("search", shot)  # the first hit also records the providers' facts
    assert (again.returncode, again.stdout) == (0, first.stdout)
    assert "answered from the cache (no quota spent)" in again.stderr
    assert len(engine_starts) == 1

    def no_provider(name: str) -> Any:
        raise AssertionError(f"provider {name} loaded for a cache hit")

    monkeypatch.setattr("anisearch._provider.load_provider", no_provider)
    third = cli("search", shot, "-v")
    assert (third.returncode, third.stdout) == (0, first.stdout)
    assert "tracemoe cached in 0.00 s: answered from the cache" in third.stderr
    assert len(engine_starts) == 1


def test_an_answer_is_cached_for_the_server_that_gave_it(
    tracemoe: Any,
    emulated: Callable[[Any], Any],
    samples: Path,
    engine_starts: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An emulator's answer is never given for another server's (the public service's, after a newcomer's
    first day on the emulator): a search at another address asks that server, and each address's answer
    is then found again, without the engine."""
    from anisearch_emulators.tracemoe import create_app

    shot = str(samples / "tinted-good.jpg")
    assert cli("search", shot).returncode == 0
    assert cli("search", shot).returncode == 0  # a hit: the providers' facts are recorded
    other = emulated(create_app())
    monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", other.url)
    asked = cli("search", shot, "-v")
    assert asked.returncode == 0, asked.stderr
    assert "tracemoe ok" in asked.stderr  # asked, not answered from the first server's cache
    assert other.app.state.emulator.search_requests == 1
    starts = len(engine_starts)
    for url in (tracemoe.url, other.url):
        monkeypatch.setenv("ANISEARCH_TRACEMOE_URL", url)
        again = cli("search", shot, "-v")
        assert "tracemoe cached in" in again.stderr
    assert len(engine_starts) == starts  # both found before the engine starts
    assert tracemoe.app.state.emulator.search_requests == 1


@pytest.mark.parametrize(
    "case",
    [
        ("ANISEARCH_LEDGER", "foo://x", "unsupported ledger URL 'foo://x' (ANISEARCH_LEDGER)"),
        ("ANISEARCH_TIMEZONE", "Mars/Olympus", "unknown time zone 'Mars/Olympus' (ANISEARCH_TIMEZONE)"),
    ],
    ids=["ledger", "timezone"],
)
def test_a_bad_setting_fails_a_hit_as_it_fails_a_miss(
    tracemoe: Any, samples: Path, monkeypatch: pytest.MonkeyPatch, case: tuple[str, str, str]
) -> None:
    """A broken setup shows on the first run, not on the first cache miss in production."""
    variable, value, says = case
    shot = str(samples / "tinted-good.jpg")
    assert cli("search", shot).returncode == 0  # the answer is cached
    monkeypatch.setenv(variable, value)
    for args in (("search", shot), ("search", shot, "--no-cache")):
        done = cli(*args)
        assert done.returncode == 2, done.stderr
        assert says in done.stderr


@pytest.mark.parametrize(
    "case",
    [
        ('[tracemo]\nkey = "x"\n', "settings for a provider that is not installed: tracemo"),
        ('[tracemoe]\nkye = "x"\n', "kye"),
    ],
    ids=["misspelt table", "misspelt setting"],
)
@pytest.mark.usefixtures("tracemoe")
def test_a_typo_in_the_config_file_fails_a_hit_as_it_fails_a_miss(
    samples: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    engine_starts: list[int],
    case: tuple[str, str],
) -> None:
    """A misspelt table or setting (a key that would silently not be sent) shows on the first run, not
    days later on the first new picture."""
    written, says = case
    shot = str(samples / "tinted-good.jpg")
    assert cli("search", shot).returncode == 0
    assert cli("search", shot).returncode == 0  # a hit without the engine: the facts are recorded
    assert len(engine_starts) == 1
    config = tmp_path / "config.toml"
    config.write_text(written)
    monkeypatch.setenv("ANISEARCH_CONFIG", str(config))
    for args in (("search", shot), ("search", shot, "--no-cache")):
        done = cli(*args)
        assert done.returncode == 2, done.stderr
        assert says in done.stderr
    for fine in ('[tracemoe]\nkey = "a-key"\n', '[anilist]\nurl = "https://graphql.anilist.co"\n'):
        config.write_text(fine)  # settings the providers take: answered without the engine
        starts = len(engine_starts)
        assert cli("search", shot).returncode == 0
        assert len(engine_starts) == starts, fine


@pytest.mark.parametrize("env", [{}, {"ANISEARCH_INCLUDE_ADULT": "false"}])
def test_a_hit_prints_what_the_engine_prints(
    tracemoe: Any, samples: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    shot = str(samples / "tinted-good.jpg")
    assert cli("search", shot).returncode == 0
    shortcut = [cli("search", shot, *flags) for flags in ([], ["--json", "--raw"], ["--all", "-n", "3"])]
    monkeypatch.setattr(_cached, "cached_answer", lambda *_, **__: None)  # the engine answers every one
    engine = [cli("search", shot, *flags) for flags in ([], ["--json", "--raw"], ["--all", "-n", "3"])]
    for fast, slow in zip(shortcut, engine, strict=True):
        assert (fast.returncode, fast.stdout, fast.stderr) == (slow.returncode, slow.stdout, slow.stderr)
    assert json.loads(shortcut[1].stdout)["cached"] is True


def test_no_match_from_the_cache_keeps_exit_code_1(tracemoe: Any, samples: Path) -> None:
    shot = str(samples / "tinted-good.jpg")
    assert cli("search", shot, "--min-similarity", "0.99").returncode == 1
    again = cli("search", shot, "--min-similarity", "0.99")
    assert again.returncode == 1
    assert "answered from the cache" in again.stderr


@pytest.mark.parametrize(
    ("flags", "env"),
    [
        (["--no-cache"], {}),
        (["-p", "whatanimeisthis"], {}),  # never answered by that provider
        (["--cut-borders"], {}),  # other options, another key
        ([], {"ANISEARCH_METADATA": "anilist"}),  # another key: trace.moe is no longer asked for titles
        ([], {"ANISEARCH_CACHE": "redis://127.0.0.1:1/0"}),
    ],
)
def test_what_the_shortcut_cannot_answer_goes_to_the_engine(
    tracemoe: Any,
    samples: Path,
    engine_starts: list[int],
    monkeypatch: pytest.MonkeyPatch,
    *,
    flags: list[str],
    env: dict[str, str],
) -> None:
    shot = str(samples / "tinted-good.jpg")
    assert cli("search", shot).returncode == 0
    assert cli("search", shot).returncode == 0
    assert len(engine_starts) == 1
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(_search, "_from_cache", _only_none(_search._from_cache))
    cli("search", shot, *flags)
    assert len(engine_starts) == 1 + 1  # the first search, then this one


def test_titles_the_metadata_cache_knows_are_filled_without_the_engine(
    emulated: Callable[[Any], Any],
    tracemoe: Any,
    samples: Path,
    *,
    tmp_path: Path,
    engine_starts: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    anilist = Recorder(anilist_app())
    monkeypatch.setenv("ANISEARCH_ANILIST_URL", emulated(anilist).url)
    monkeypatch.setenv("ANISEARCH_METADATA", "anilist")
    shot = str(samples / "tinted-good.jpg")
    first = cli("search", shot, "--json")
    assert first.returncode == 0
    assert json.loads(first.stdout)["hits"][0]["title"]["romaji"] == "Kokoro Connect"
    assert (len(engine_starts), anilist.requests) == (1, 1)

    again = cli("search", shot, "--json")  # every title in the metadata cache: no engine, no request
    assert (len(engine_starts), anilist.requests) == (1, 1)
    shortcut = _cached.cached_answer
    monkeypatch.setattr(_cached, "cached_answer", lambda *_, **__: None)
    engine = cli("search", shot, "--json")
    assert (again.returncode, again.stdout, again.stderr) == (engine.returncode, engine.stdout, engine.stderr)
    assert len(engine_starts) == 1 + 1
    monkeypatch.setattr(_cached, "cached_answer", shortcut)

    for file in (tmp_path / "xdg" / "cache" / "anisearch").glob("anime.sqlite3*"):
        file.unlink()  # the titles are forgotten: only the engine may ask AniList again
    third = cli("search", shot, "--json")
    assert json.loads(third.stdout)["hits"][0]["title"]["romaji"] == "Kokoro Connect"
    assert (len(engine_starts), anilist.requests) == (3, 2)


class Recorder:
    """ASGI middleware counting the HTTP requests the wrapped app receives."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.requests += 1
        await self.app(scope, receive, send)


def _only_none(from_cache: Any) -> Any:
    def checked(*args: Any, **kwargs: Any) -> Any:
        outcome = from_cache(*args, **kwargs)
        assert outcome is None, "the shortcut answered"
        return outcome

    return checked


def _facts_file(tmp_path: Path) -> Path:
    return tmp_path / "xdg" / "cache" / "anisearch" / _cached.FACTS_FILE


def test_provider_facts_from_another_installation_are_read_again(
    tracemoe: Any, samples: Path, tmp_path: Path
) -> None:
    shot = str(samples / "tinted-good.jpg")
    assert cli("search", shot).returncode == 0
    assert cli("search", shot).returncode == 0
    facts = _facts_file(tmp_path)
    recorded = json.loads(facts.read_text())
    assert recorded["providers"]["tracemoe"]["box"] == [320, 320]
    recorded["paths"] = [["/elsewhere", 1]]  # packages were installed or removed since
    recorded["installed"] = [["tracemoe", "elsewhere:TraceMoe", "another-dist", "9"]]
    recorded["providers"]["tracemoe"]["box"] = [1, 1]  # would miss every key
    facts.write_text(json.dumps(recorded))
    again = cli("search", shot)
    assert "answered from the cache" in again.stderr
    assert json.loads(facts.read_text())["providers"]["tracemoe"]["box"] == [320, 320]


def test_the_same_providers_on_another_search_path_keep_their_facts(
    tracemoe: Any, samples: Path, tmp_path: Path, engine_starts: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    shot = str(samples / "tinted-good.jpg")
    assert cli("search", shot).returncode == 0
    assert cli("search", shot).returncode == 0
    facts = _facts_file(tmp_path)
    recorded = json.loads(facts.read_text())
    recorded["paths"] = [["/elsewhere", 1]]
    facts.write_text(json.dumps(recorded))

    def no_provider(name: str) -> Any:
        raise AssertionError(f"provider {name} loaded though the same providers are installed")

    monkeypatch.setattr("anisearch._provider.load_provider", no_provider)
    again = cli("search", shot)
    assert "answered from the cache" in again.stderr
    assert len(engine_starts) == 1
    assert json.loads(facts.read_text())["paths"] == _cached._search_path()


def test_an_unreadable_facts_file_is_written_again(tracemoe: Any, samples: Path, tmp_path: Path) -> None:
    shot = str(samples / "tinted-good.jpg")
    assert cli("search", shot).returncode == 0
    assert cli("search", shot).returncode == 0
    facts = _facts_file(tmp_path)
    current = {"version": 1, "paths": _cached._search_path(), "providers": {"tracemoe": 5}}
    for broken in ("{", '{"version": 1, "paths": 3}', json.dumps({"version": 1}), json.dumps(current)):
        facts.write_text(broken)
        again = cli("search", shot)
        assert "answered from the cache" in again.stderr
        assert json.loads(facts.read_text())["providers"]["tracemoe"]["box"] == [320, 320]


def test_a_hit_in_a_new_process_loads_neither_the_engine_nor_httpx_nor_pillow(
    tracemoe: Any, samples: Path
) -> None:
    shot = str(samples / "tinted-good.jpg")
    assert cli("search", shot).returncode == 0
    assert cli("search", shot).returncode == 0  # records the providers' facts
    script = textwrap.dedent(
        """
        import json, sys
        from anisearch.cli import main
        sys.argv = ["anisearch", "search", sys.argv[1]]
        try:
            main()
        except SystemExit as exit:
            code = exit.code
        heavy = ["httpx", "PIL", "anisearch._client", "anisearch._ledger", "anisearch._router",
                 "anisearch._image", "anisearch.provider", "anisearch_providers.tracemoe"]
        print(json.dumps({"code": code, "loaded": [m for m in heavy if m in sys.modules]}), file=sys.stderr)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, shot],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report == {"code": 0, "loaded": []}
    assert "Kokoro Connect" in done.stdout


def test_a_cache_file_that_is_not_sqlite_is_warned_about_once(
    tracemoe: Any, samples: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The shortcut and the engine each open the cache: the user reads the warning once, as one line."""
    notes = tmp_path / "notes.txt"
    notes.write_text("somebody's notes")
    monkeypatch.setenv("ANISEARCH_CACHE", str(notes))
    done = cli("search", str(samples / "tinted-good.jpg"))
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    said = (
        f"warning: the result cache {notes} is unusable (file is not a database; it is not a SQLite file,"
        " so it is left as it is: point ANISEARCH_CACHE elsewhere, or delete it); searching without it"
    )
    assert warnings == [said]
    assert notes.read_text() == "somebody's notes"


def test_a_cached_fanout_says_every_provider_it_merges(
    tracemoe: Any, emulated: Callable[[Any], Any], samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fanout from the cache holds every provider's answer, and its attempts say so, as the engine's do."""
    from anisearch_emulators.whatanimeisthis import create_app as whatanimeisthis_app

    monkeypatch.setenv("ANISEARCH_WHATANIMEISTHIS_URL", emulated(whatanimeisthis_app()).url)
    monkeypatch.setenv("ANISEARCH_PROVIDERS", "tracemoe,whatanimeisthis")
    shot = str(samples / "tinted-good.jpg")
    asked = cli("search", shot, "--strategy", "fanout", "--json")
    assert asked.returncode == 0, asked.stderr
    shortcut = cli("search", shot, "--strategy", "fanout", "--json")
    monkeypatch.setattr(_cached, "cached_answer", lambda *_, **__: None)  # the engine answers from the cache
    engine = cli("search", shot, "--strategy", "fanout", "--json")
    for repeat in (shortcut, engine):
        attempts = [(a["provider"], a["outcome"]) for a in json.loads(repeat.stdout)["attempts"]]
        assert attempts == [("tracemoe", "cached"), ("whatanimeisthis", "cached")]
    assert {hit["provider"] for hit in json.loads(shortcut.stdout)["hits"]} == {"tracemoe", "whatanimeisthis"}


def test_a_package_that_cannot_be_loaded_leaves_the_default_order_to_the_others() -> None:
    """The engine leaves a broken package out of the default order; the command's cache shortcut, which
    must ask the same providers, gave up instead (every default search then loaded the whole engine)."""
    from anisearch import Settings
    from anisearch._cli._cached import Fact, _order

    facts = {
        "tracemoe": Fact(default_order=True, default_rank=10, box=(320, 320), settings=("url", "key")),
        "broken": None,
    }
    assert _order(Settings.load(ledger="memory://"), None, facts) == ["tracemoe"]
    assert _order(Settings.load(ledger="memory://"), ["broken"], facts) is None  # asked for by name
