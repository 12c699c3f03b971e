"""The scenes table every emulator searches: shipped as data, complete, and one truth for all three."""

from __future__ import annotations

import base64
import json
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from anisearch_emulators import tracemoe, whatanime_ga, whatanimeisthis
from anisearch_emulators._scenes import load_table, tracemoe_record
from anisearch_emulators.tracemoe._index import ANILIST, SCENES
from anisearch_emulators.whatanime_ga._index import default_frames
from anisearch_emulators.whatanimeisthis._index import INDEX

if TYPE_CHECKING:
    from pathlib import Path

    from starlette.applications import Starlette

pytestmark = pytest.mark.anyio

JPEG = {"Content-Type": "image/jpeg"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Starlette's form parsing runs in a worker thread through asyncio's API


ANILIST_FIELDS = {
    "id", "idMal", "type", "title", "format", "episodes", "duration", "season", "seasonYear", "isAdult",
    "coverImage", "siteUrl", "synonyms",
}  # fmt: skip


def test_the_table_is_package_data_in_the_documented_shape() -> None:
    raw = json.loads(files("anisearch_emulators").joinpath("data", "scenes.json").read_text("utf-8"))
    assert raw["format"] == 1
    table = load_table()
    assert len(table.scenes) == len(raw["scenes"]) > 30
    assert len({scene.file_id for scene in table.scenes}) == len(table.scenes)
    for scene in table.scenes:
        assert scene.anilist_id in table.titles, scene.filename
        assert len(scene.vector) == 33
        assert scene.start <= scene.at <= scene.end <= scene.duration, scene.filename
    assert all(len(vector) == 33 for vector in table.queries.values())


def test_every_known_title_carries_what_an_anilist_emulator_answers() -> None:
    records = [title.anilist for title in load_table().titles.values() if title.anilist is not None]
    assert len(records) > 25
    for record in records:
        assert set(record) >= ANILIST_FIELDS, record["id"]
        assert set(record["title"]) == {"romaji", "english", "native"}
        assert record["siteUrl"] == f"https://anilist.co/anime/{record['id']}"
    moonlight = load_table().titles[2929].anilist
    assert moonlight is not None
    assert (moonlight["format"], moonlight["episodes"], moonlight["duration"]) == ("TV", 14, 24)
    assert moonlight["coverImage"]["color"] == "#1a2878"


def test_trace_moe_keeps_its_own_record_shape() -> None:
    """The stored record: the server's field order, ``chinese`` after ``romaji``, its own Chinese synonyms;
    an anime its table lacks has no record (the server then sends the bare ID)."""
    kokoro = ANILIST[11887]
    assert list(kokoro) == [
        "id", "type", "idMal", "title", "season", "isAdult", "siteUrl", "synonyms", "seasonYear",
        "synonyms_chinese",
    ]  # fmt: skip
    assert list(kokoro["title"]) == ["native", "romaji", "chinese", "english"]
    assert kokoro["synonyms_chinese"][0] == "戀愛隨意鏈"
    one_piece = load_table().titles[21]
    assert one_piece.anilist is not None
    assert tracemoe_record(one_piece) is None
    assert 21 not in ANILIST


def test_every_emulator_indexes_the_same_scenes() -> None:
    table = load_table()
    assert table.scenes == SCENES
    assert [frame.descriptor for frame in default_frames()] == [scene.vector for scene in table.scenes]
    by_file = {scene.filename: scene for scene in table.scenes}
    for entry in INDEX:  # the site answers only with anime AniList knows
        scene = by_file[entry.filename]
        assert (entry.descriptor, entry.start, entry.at, entry.end) == (
            scene.vector, scene.start, scene.at, scene.end,
        )  # fmt: skip
        assert table.titles[scene.anilist_id].anilist is not None
    assert {entry.filename for entry in INDEX} == {
        scene.filename for scene in table.scenes if table.titles[scene.anilist_id].anilist is not None
    }


async def _post(app: Starlette, path: str, **kwargs: Any) -> Any:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
        response = await client.post(path, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


async def test_one_screenshot_finds_the_same_scene_through_every_emulator(samples: Path) -> None:
    data = (samples / "tinted-good.jpg").read_bytes()
    current = (await _post(tracemoe.create_app(), "/search", content=data, headers=JPEG))["result"][0]
    legacy = (
        await _post(
            whatanime_ga.create_app(),
            "/api/search",
            data={"image": "data:image/jpeg;base64," + base64.b64encode(data).decode()},
        )
    )["docs"][0]
    site = (await _post(whatanimeisthis.create_app(), "/api/anime/search", files={"image": ("a.jpg", data)}))[
        "results"
    ][0]
    kokoro = SCENES[0]
    assert (current["anilist"], current["filename"], current["from"], current["to"]) == (
        kokoro.anilist_id, kokoro.filename, kokoro.start, kokoro.end,
    )  # fmt: skip
    assert (legacy["anilist_id"], legacy["filename"], legacy["from"], legacy["to"]) == (
        kokoro.anilist_id, kokoro.filename, kokoro.start, kokoro.end,
    )  # fmt: skip
    assert (site["anilistId"], site["filename"], site["from"], site["to"]) == (
        kokoro.anilist_id, kokoro.filename, kokoro.start, kokoro.end,
    )  # fmt: skip
    assert site["title"]["romaji"] == legacy["title_romaji"] == "Kokoro Connect"
