"""AniList ``Media`` objects as :class:`~anisearch.provider.Anime` values (pure, no I/O)."""

from __future__ import annotations

from typing import Any

from anisearch.provider import Anime, ShapeError, anilist_media_fields

__all__ = ["MEDIA_FIELDS", "anime_from_media"]

MEDIA_FIELDS = (
    "id idMal title { romaji english native } synonyms isAdult episodes duration format season seasonYear "
    "coverImage { large medium } siteUrl"
)
"""The ``Media`` fields anisearch asks for (GraphQL selection)."""


def anime_from_media(media: Any) -> Anime:
    """One ``Media`` object as an :class:`Anime` (:func:`~anisearch.provider.anilist_media_fields`); fields
    of the wrong type become None.

    Raises:
        ShapeError: Not an object, or its ``id`` is not a positive integer.
    """
    if not isinstance(media, dict):
        raise ShapeError(f"a media item is {type(media).__name__}, not an object")
    fields = anilist_media_fields(media)
    if not fields["anilist_id"]:
        raise ShapeError("a media item has no positive integer 'id'")
    fields["synonyms"] = [text.strip() for text in fields["synonyms"] if text.strip()]
    return Anime(**fields, raw=media)
