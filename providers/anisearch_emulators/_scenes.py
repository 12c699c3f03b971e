"""The scenes every emulator searches, read once from ``data/scenes.json`` (documented in ``data/README.md``).

The table holds facts in one neutral form: a scene (a file, the matched span, its colour layout
descriptor) and, per AniList ID, the AniList record and what trace.moe's own AniList table keeps of it.
Each emulator derives its upstream's shape from these (:mod:`.tracemoe._index`,
:mod:`.whatanime_ga._index`, :mod:`.whatanimeisthis._index`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

__all__ = ["Episode", "Scene", "SceneTable", "Title", "load_table", "tracemoe_record"]

Episode = int | float | str | list[int] | None


@dataclass(frozen=True, slots=True)
class Scene:
    """One indexed scene: a file, the matched time span within it, and the span's descriptor.

    Attributes:
        file_id: The emulator's file number (trace.moe's ``files.id``), used in preview ids.
        anilist_id: AniList ID of the anime.
        filename: Basename of the indexed video (a hit's ``filename``).
        episode: As trace.moe's ``aniep`` parses the filename: int, float, ``"a|b"`` string, list or None.
        episode_start: First episode the file covers, or None.
        episode_end: Last episode the file covers, or None.
        start: ``from``, seconds.
        at: The best-matching frame, seconds (``from <= at <= to``).
        end: ``to``, seconds.
        duration: Length of the whole video, seconds.
        vector: The 33-number colour layout descriptor.
    """

    file_id: int
    anilist_id: int
    filename: str
    episode: Episode
    episode_start: int | None
    episode_end: int | None
    start: float
    at: float
    end: float
    duration: float
    vector: tuple[int, ...]

    @property
    def frames(self) -> int:
        """How many frames of this file the index holds (about two a second), for ``frameCount``."""
        return round(self.duration * 2)


@dataclass(frozen=True, slots=True)
class Title:
    """What the table knows about one AniList ID.

    Attributes:
        anilist_id: The AniList ID.
        anilist: The AniList ``Media`` record (AniList's field names; None where the table has no facts).
        tracemoe: trace.moe's view of it (``fields``, ``title_chinese``, ``synonyms_chinese``), or None
            where trace.moe's AniList table lacks the ID (the server then sends the bare int).
    """

    anilist_id: int
    anilist: dict[str, Any] | None
    tracemoe: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class SceneTable:
    """The whole table: scenes in index order, titles by AniList ID, named query descriptors."""

    scenes: tuple[Scene, ...]
    titles: dict[int, Title]
    queries: dict[str, tuple[int, ...]]


def _episode(value: Any) -> Episode:
    return list(value) if isinstance(value, list) else value


@cache
def load_table() -> SceneTable:
    """The table in ``data/scenes.json``, parsed once per process.

    Raises:
        OSError: The data file is missing from the installation.
        ValueError: It is not the JSON this module reads.
    """
    raw = json.loads(files("anisearch_emulators").joinpath("data", "scenes.json").read_text("utf-8"))
    scenes = tuple(
        Scene(
            file_id=int(row["file_id"]),
            anilist_id=int(row["anilist_id"]),
            filename=str(row["filename"]),
            episode=_episode(row["episode"]),
            episode_start=row["episode_start"],
            episode_end=row["episode_end"],
            start=float(row["from"]),
            at=float(row["at"]),
            end=float(row["to"]),
            duration=float(row["duration"]),
            vector=tuple(int(n) for n in row["vector"]),
        )
        for row in raw["scenes"]
    )
    titles = {
        int(key): Title(int(key), entry.get("anilist"), entry.get("tracemoe"))
        for key, entry in raw["titles"].items()
    }
    queries = {name: tuple(int(n) for n in vector) for name, vector in raw["queries"].items()}
    return SceneTable(scenes, titles, queries)


def tracemoe_record(title: Title) -> dict[str, Any] | None:
    """The record trace.moe's AniList table stores for ``title`` (``anilistInfo``), or None.

    The fields listed in ``tracemoe.fields``, in that order, from the AniList record; the title gains
    trace.moe's ``chinese`` after ``romaji``, and ``synonyms_chinese`` comes from trace.moe's view.
    """
    view, record = title.tracemoe, title.anilist
    if view is None or record is None:
        return None
    stored: dict[str, Any] = {}
    for field in view["fields"]:
        if field == "title":
            names = record["title"]
            chinese = {"chinese": view["title_chinese"]} if "title_chinese" in view else {}
            stored["title"] = {"native": names["native"], "romaji": names["romaji"], **chinese}
            stored["title"]["english"] = names["english"]
        elif field == "synonyms_chinese":
            stored[field] = view["synonyms_chinese"]
        else:
            stored[field] = record[field]
    return stored
