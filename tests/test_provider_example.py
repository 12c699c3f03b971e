"""The guide's example provider (examples/provider_example) searches through the engine, on loopback."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import respx

import anisearch
import anisearch._provider as anisearch_provider
from anisearch import AllProvidersFailedError, QuotaExhaustedError, Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from provider_example.emulator import KEY, create_app
from provider_example.scenedb import SceneDB

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

DEMO = Path(__file__).resolve().parents[1] / "examples" / "tinted-good.jpg"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "provider_example" / "scenedb.py"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Entry:
    name, value, dist = "scenedb", "provider_example.scenedb:SceneDB", None

    def load(self) -> type[SceneDB]:
        return SceneDB


GUIDE = Path(__file__).resolve().parents[1] / "docs" / "providers" / "writing.md"


@pytest.mark.parametrize(
    ("env", "named", "asked"),
    [
        ({"ANISEARCH_SCENEDB_KEY": KEY}, None, ["tracemoe", "whatanimeisthis"]),  # its key alone: not asked
        ({"ANISEARCH_SCENEDB_URL": "https://scenedb.test"}, None, ["tracemoe", "whatanimeisthis", "scenedb"]),
        ({"ANISEARCH_PROVIDERS": "scenedb,tracemoe"}, None, ["scenedb", "tracemoe"]),
        ({"ANISEARCH_PROVIDERS": "tracemoe"}, ["scenedb"], ["scenedb"]),  # a search's own list wins
    ],
    ids=["key-only", "url", "configured", "named"],
)
async def test_an_installed_provider_is_asked_when_the_guide_says(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: list[str] | None, asked: list[str]
) -> None:
    """The guide did not say when an installed provider is asked: SceneDB installed with its key set was
    never asked, and nothing told why. Its "When it is asked" section gives the rule this checks."""
    installed = {**anisearch_provider._provider_entry_points(), "scenedb": Entry()}
    monkeypatch.setattr("anisearch._provider._provider_entry_points", lambda: installed)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    guide = GUIDE.read_text(encoding="utf-8")
    assert "## When it is asked" in guide
    for rule in (
        "`anisearch search shot.jpg -p scenedb -p tracemoe`",
        "`ANISEARCH_PROVIDERS=scenedb,tracemoe`",
        "`default_order = True`",
    ):
        assert rule in guide, rule
    assert "`ANISEARCH_SCENEDB_URL=https://...`" in guide
    with respx.mock(assert_all_mocked=True) as mock:
        mock.route().respond(500)  # every provider fails: the group says who was asked, in order
        settings = Settings.load(ledger="memory://", cache="off")
        async with anisearch.AsyncClient(settings, httpx.MockTransport(mock.async_handler)) as client:
            with pytest.raises(AllProvidersFailedError) as caught:
                await client.search(DEMO, providers=named)
    assert [error.provider for error in caught.value.errors] == asked


def test_the_example_is_under_100_lines_and_the_guide_shows_it_as_it_is() -> None:
    assert len(EXAMPLE.read_text(encoding="utf-8").splitlines()) < 100
    guide = (Path(__file__).resolve().parents[1] / "docs" / "providers" / "writing.md").read_text(
        encoding="utf-8"
    )
    for name in ("scenedb.py", "emulator.py"):
        assert f"```python\n{(EXAMPLE.parent / name).read_text(encoding='utf-8')}```" in guide, name


async def test_the_example_provider_searches_until_its_credits_run_out(
    live_server: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Runs in every clone: it searches trace.moe's demo frame from ``examples/``."""
    monkeypatch.setattr("anisearch._provider._provider_entry_points", lambda: {"scenedb": Entry()})
    server = live_server(create_app(allowance=1))
    settings = Settings.load(
        providers=["scenedb"],
        provider_options={"scenedb": {"url": server.url, "key": KEY}},
        ledger="memory://",
        cache="off",
        state_dir=tmp_path,
    )
    async with anisearch.AsyncClient(settings) as client:
        result = await client.search(DEMO)
        assert result.best is not None
        assert (result.best.provider, result.best.anilist_id, result.best.episode) == ("scenedb", 11887, 5)
        assert result.best.at_seconds == 1169.5
        with pytest.raises(AllProvidersFailedError) as caught:
            await client.search(DEMO)  # the cache is off: asked again, and refused
    assert caught.group_contains(QuotaExhaustedError)


def test_the_command_shows_the_frame_time_of_a_hit_without_a_scene(
    live_server: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The example sends only the best frame's time (``at``), no scene's start and end: the headline and
    the table showed the scene as ``-``."""
    from tests.cli_runner import run_in_process as cli

    monkeypatch.setattr("anisearch._provider._provider_entry_points", lambda: {"scenedb": Entry()})
    server = live_server(create_app(allowance=10))
    env = {
        "ANISEARCH_SCENEDB_URL": str(server.url),
        "ANISEARCH_SCENEDB_KEY": KEY,
        "ANISEARCH_LEDGER": "memory://",
        "ANISEARCH_CACHE": "off",
        "ANISEARCH_METADATA": "off",
        "ANISEARCH_STATE_DIR": str(tmp_path),
    }
    done = cli("search", str(DEMO), "-p", "scenedb", env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "AniList 11887, episode 5, 19:29 (97.0 %, scenedb)"
    assert any(line.split()[-2:] == ["19:29", "scenedb"] for line in lines[1:]), done.stdout
    shown = json.loads(cli("search", str(DEMO), "-p", "scenedb", "--json", env=env).stdout)
    assert shown["hits"][0]["at_seconds"] == 1169.5
