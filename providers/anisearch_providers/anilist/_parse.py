"""AniList ``Media`` objects as :class:`~anisearch._models.Anime` values (pure, no I/O)."""

from __future__ import annotations

from typing import Any

from anisearch._models import Anime, Title

__all__ = ["MEDIA_FIELDS", "ShapeError", "anime_from_media"]

MEDIA_FIELDS = (
    "id idMal title { romaji english native } synonyms isAdult episodes duration format season seasonYear "
    "coverImage { large medium } siteUrl"
)
"""The ``Media`` fields anisearch asks for (GraphQL selection)."""


class ShapeError(ValueError):
    """A ``Media`` object that is not the shape AniList documents."""


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= 2**31 - 1 else None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def anime_from_media(media: Any) -> Anime:
    """One ``Media`` object as an :class:`Anime`; fields of the wrong type become None.

    Raises:
        ShapeError: Not an object, or its ``id`` is not a positive integer.
    """
    if not isinstance(media, dict):
        raise ShapeError(f"a media item is {type(media).__name__}, not an object")
    anilist_id = _count(media.get("id"))
    if not anilist_id:
        raise ShapeError("a media item has no positive integer 'id'")
    titles = _object(media.get("title"))
    title = Title(
        romaji=_text(titles.get("romaji")),
        english=_text(titles.get("english")),
        native=_text(titles.get("native")),
    )
    cover = _object(media.get("coverImage"))
    synonyms: list[Any] = media["synonyms"] if isinstance(media.get("synonyms"), list) else []
    adult = media.get("isAdult")
    return Anime(
        anilist_id=anilist_id,
        mal_id=_count(media.get("idMal")) or None,
        title=title if any((title.romaji, title.english, title.native)) else None,
        synonyms=[text for text in map(_text, synonyms) if text],
        is_adult=adult if isinstance(adult, bool) else None,
        episode_count=_count(media.get("episodes")),
        episode_minutes=_count(media.get("duration")),
        format=_text(media.get("format")),
        season=_text(media.get("season")),
        season_year=_count(media.get("seasonYear")),
        cover_image_url=_text(cover.get("large")) or _text(cover.get("medium")),
        site_url=_text(media.get("siteUrl")),
        raw=media,
    )
