"""The legacy emulator's view of the index it shares with the trace.moe emulator.

The scenes and their descriptors are :data:`._index.SCENES` (so ``tinted-good.jpg`` finds the same
Kokoro Connect scene through either API); the legacy answer also carries the titles, MAL ID, synonyms
and season that the legacy server looked up for every result, taken from :data:`._index.ANILIST`.
Scenes of anime without a record get what the server sent then: null titles and MAL ID, empty lists,
an empty ``season``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Final

from anisearch_emulators.tracemoe._index import ANILIST, SCENES
from anisearch_providers.tracemoe._common import as_float, as_int, as_str, string_list

if TYPE_CHECKING:
    from anisearch_emulators.tracemoe._index import IndexedScene

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
        number = as_float(value.split("|", 1)[0])
        if number is None:
            return ""
        return int(number) if number.is_integer() else number
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        return value
    return ""


def _season(record: dict[str, Any]) -> str:
    year = as_int(record.get("seasonYear"))
    month = _SEASON_MONTH.get(str(record.get("season", "")).upper())
    return f"{year:04d}-{month:02d}" if year is not None and month is not None else ""


def legacy_frame(scene: IndexedScene, record: dict[str, Any] | None) -> LegacyFrame:
    """A shared-index scene with the AniList ``record`` (``ANILIST[id]``, or None) in legacy terms."""
    record = record or {}
    title = record.get("title")
    titles: dict[str, Any] = title if isinstance(title, dict) else {}
    is_adult = record.get("isAdult")
    return LegacyFrame(
        descriptor=scene.vector,
        anilist_id=scene.anilist_id,
        filename=scene.filename,
        episode=_episode(scene.episode),
        start=scene.start,
        at=scene.at,
        end=scene.end,
        season=_season(record),
        title_native=as_str(titles.get("native")),
        title_romaji=as_str(titles.get("romaji")),
        title_english=as_str(titles.get("english")),
        title_chinese=as_str(titles.get("chinese")),
        mal_id=as_int(record.get("idMal")),
        synonyms=tuple(string_list(record.get("synonyms"))),
        synonyms_chinese=tuple(string_list(record.get("synonyms_chinese"))),
        is_adult=is_adult if isinstance(is_adult, bool) else False,
        frames=scene.frames,
    )


@cache
def default_frames() -> tuple[LegacyFrame, ...]:
    """Every scene of the shared index, in legacy terms."""
    return tuple(legacy_frame(scene, ANILIST.get(scene.anilist_id)) for scene in SCENES)
