"""The legacy emulator's view of the shared scenes table (``data/scenes.json``).

The scenes and their descriptors are the table's (so ``tinted-good.jpg`` finds the same Kokoro Connect
scene through every emulator); the legacy answer also carries the titles, MAL ID, synonyms and season
that the legacy server looked up for every result, from the record trace.moe's AniList table keeps
(:func:`anisearch_emulators._scenes.tracemoe_record`: the legacy server shared that table).
Scenes of anime without a record get what the server sent then: null titles and MAL ID, empty lists,
an empty ``season``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Final

from anisearch_emulators._scenes import load_table, tracemoe_record

if TYPE_CHECKING:
    from anisearch_emulators._scenes import Scene

__all__ = ["LegacyFrame", "default_frames", "legacy_frame"]

_SEASON_MONTH: Final = {"WINTER": 1, "SPRING": 4, "SUMMER": 7, "FALL": 10}

LegacyEpisode = int | float | str


@dataclass(frozen=True, slots=True)
class LegacyFrame:
    """One indexed scene as the legacy API describes it (``docs[]`` fields; times in seconds)."""

    descriptor: tuple[int, ...]
    anilist_id: int
    filename: str
    episode: LegacyEpisode
    """A number, ``"OVA/OAD"``, ``"Special"``, or ``""`` when the filename gave none."""
    start: float
    at: float
    end: float
    season: str = ""
    """``"YYYY-MM"`` of the anime's first season, or ``""``."""
    title_native: str | None = None
    title_romaji: str | None = None
    title_english: str | None = None
    title_chinese: str | None = None
    mal_id: int | None = None
    synonyms: tuple[str, ...] = ()
    synonyms_chinese: tuple[str, ...] = ()
    is_adult: bool = False
    frames: int = 0
    """Frames of the scene's file the index stands for (``RawDocsCount`` adds them up)."""


def _episode(value: Any) -> LegacyEpisode:
    """The legacy server's single episode: the first of several alternatives, ``""`` for none."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, str) and "|" in value:
        try:
            number = float(value.split("|", 1)[0])
        except ValueError:
            return ""
        return int(number) if number.is_integer() else number
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        return value
    return ""


def _season(record: dict[str, Any]) -> str:
    year = record.get("seasonYear")
    year = year if isinstance(year, int) and not isinstance(year, bool) else None
    month = _SEASON_MONTH.get(str(record.get("season", "")).upper())
    return f"{year:04d}-{month:02d}" if year is not None and month is not None else ""


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _texts(value: Any) -> tuple[str, ...]:
    return tuple(item for item in value if isinstance(item, str) and item) if isinstance(value, list) else ()


def legacy_frame(scene: Scene, record: dict[str, Any] | None) -> LegacyFrame:
    """A shared-table scene with trace.moe's AniList ``record`` (or None) in legacy terms."""
    record = record or {}
    title = record.get("title")
    titles: dict[str, Any] = title if isinstance(title, dict) else {}
    is_adult, mal_id = record.get("isAdult"), record.get("idMal")
    return LegacyFrame(
        descriptor=scene.vector,
        anilist_id=scene.anilist_id,
        filename=scene.filename,
        episode=_episode(scene.episode),
        start=scene.start,
        at=scene.at,
        end=scene.end,
        season=_season(record),
        title_native=_text(titles.get("native")),
        title_romaji=_text(titles.get("romaji")),
        title_english=_text(titles.get("english")),
        title_chinese=_text(titles.get("chinese")),
        mal_id=mal_id if isinstance(mal_id, int) and not isinstance(mal_id, bool) else None,
        synonyms=_texts(record.get("synonyms")),
        synonyms_chinese=_texts(record.get("synonyms_chinese")),
        is_adult=is_adult if isinstance(is_adult, bool) else False,
        frames=scene.frames,
    )


@cache
def default_frames() -> tuple[LegacyFrame, ...]:
    """Every scene of the shared index, in legacy terms."""
    table = load_table()
    titles = table.titles
    return tuple(
        legacy_frame(scene, tracemoe_record(titles[scene.anilist_id]) if scene.anilist_id in titles else None)
        for scene in table.scenes
    )
