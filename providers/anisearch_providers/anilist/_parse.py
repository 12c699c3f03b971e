"""AniList ``Media`` objects as :class:`~anisearch.provider.Anime` values (pure, no I/O)."""

from __future__ import annotations

from typing import Any

from anisearch.provider import Anime, ShapeError, as_bool, as_int, as_str, string_list, title_from

__all__ = ["MEDIA_FIELDS", "anime_from_media"]

MEDIA_FIELDS = (
    "id idMal title { romaji english native } synonyms isAdult episodes duration format season seasonYear "
    "coverImage { large medium } siteUrl"
)
"""The ``Media`` fields anisearch asks for (GraphQL selection)."""

_MAX_COUNT = 2**31 - 1


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int | None:
    """A whole number 0..2**31-1 sent as a JSON integer, else None (a string or a fraction is not one)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    number = as_int(value)
    return number if number is not None and 0 <= number <= _MAX_COUNT else None


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
    cover = _object(media.get("coverImage"))
    return Anime(
        anilist_id=anilist_id,
        mal_id=_count(media.get("idMal")) or None,
        title=title_from(titles.get("romaji"), titles.get("english"), titles.get("native")),
        synonyms=[text.strip() for text in string_list(media.get("synonyms")) if text.strip()],
        is_adult=as_bool(media.get("isAdult")),
        episode_count=_count(media.get("episodes")),
        episode_minutes=_count(media.get("duration")),
        format=as_str(media.get("format")),
        season=as_str(media.get("season")),
        season_year=_count(media.get("seasonYear")),
        cover_image_url=as_str(cover.get("large")) or as_str(cover.get("medium")),
        site_url=as_str(media.get("siteUrl")),
        raw=media,
    )
