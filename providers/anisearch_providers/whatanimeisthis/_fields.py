"""Field readers shared by the whatanimeisthis parsers: IDs, titles, episodes, URLs, key masking.

Each reader takes one upstream item (a dict) and looks under every alias the contract lists
(``research/whatanimeisthis-contract.md`` §7.5), in the item itself and in a nested ``anilist``,
``anime`` or ``media`` object, since a site built on trace.moe may pass its AniList object through.
"""

from __future__ import annotations

import re
from typing import Any

from anisearch.provider import Episode, Title, as_bool, as_episode, as_int

from ._tolerant import pick

__all__ = [
    "adult_of",
    "anilist_id_of",
    "episode_of",
    "looks_masked",
    "mal_id_of",
    "mask",
    "sources",
    "synonyms_of",
    "text",
    "title_of",
]

_MASK_MARKS = ("*", "•", "…", "...")
_X_RUN = re.compile(r"x{4,}|X{4,}")
_MASKED_SHOWN = 16
"""Most characters a masked key shows around its x's (a prefix and the last few)."""
_TITLE_FIELDS = ("romaji", "english", "native", "chinese")


def text(value: Any) -> str | None:
    """The value if it is a non-blank string (URLs, names), else None."""
    return value if isinstance(value, str) and value.strip() else None


def sources(item: dict[str, Any]) -> list[dict[str, Any]]:
    """The item, then its nested AniList-like objects (``anilist``, ``anime``, ``media``), to read from."""
    found = [item]
    for key in ("anilist", "anime", "media"):
        nested = item.get(key)
        if isinstance(nested, dict):
            found.append(nested)
    return found


def pick_in(containers: list[dict[str, Any]], *names: str) -> Any:
    """:func:`pick` over several containers, first hit wins."""
    for container in containers:
        value = pick(container, *names)
        if value is not None:
            return value
    return None


def anilist_id_of(item: dict[str, Any]) -> int | None:
    """AniList ID: ``anilistId``/``anilist_id``, ``anilist`` as an int, or ``anilist.id`` (also ``anime``)."""
    direct = as_int(pick(item, "anilistId", "aniListId", "anilist"))
    if direct is not None:
        return direct
    for nested in sources(item)[1:]:
        value = as_int(pick(nested, "id", "anilistId"))
        if value is not None:
            return value
    return None


def mal_id_of(item: dict[str, Any]) -> int | None:
    """MyAnimeList ID: ``malId``/``mal_id``/``idMal``, in the item or its AniList object."""
    return as_int(pick_in(sources(item), "malId", "idMal", "myAnimeListId"))


def adult_of(item: dict[str, Any]) -> bool | None:
    """Adult flag: ``isAdult``/``is_adult``/``adult``/``nsfw`` as any boolean spelling."""
    return as_bool(pick_in(sources(item), "isAdult", "adult", "nsfw"), loose=True)


def synonyms_of(item: dict[str, Any]) -> list[str]:
    """Alternative titles (``synonyms``), strings only."""
    value = pick_in(sources(item), "synonyms")
    if not isinstance(value, list):
        return []
    return [entry for entry in value if isinstance(entry, str) and entry.strip()]


def title_of(item: dict[str, Any]) -> Title | None:
    """Titles from ``title`` (a string or ``{romaji, english, native, userPreferred}``), ``titles``,
    flat ``title_romaji``/``titleEnglish``... fields, or a nested AniList object; None when there are none.

    A bare string title is taken as the romaji title (what the site displays).
    """
    found: dict[str, str] = {}
    for container in sources(item):
        for field in _TITLE_FIELDS:
            value = text(pick(container, f"title_{field}", f"{field}Title"))
            if value is not None:
                found.setdefault(field, value)
        value = pick(container, "title", "titles", "animeTitle", "name")
        if isinstance(value, dict):
            for field in _TITLE_FIELDS:
                entry = text(value.get(field))
                if entry is not None:
                    found.setdefault(field, entry)
            preferred = text(pick(value, "userPreferred"))
            if preferred is not None:
                found.setdefault("romaji", preferred)
        elif text(value) is not None and not found:
            found["romaji"] = value
    return Title(**found) if found else None


def episode_of(item: dict[str, Any]) -> Episode:
    """The episode as sent (``5``, ``16.5``, ``"5|17"``, ``[1, 2]``), or None for anything else."""
    return as_episode(pick(item, "episode", "ep", "episodeNumber"))


def looks_masked(value: str) -> bool:
    """Whether a key string is already masked (``sk-…abcd``, ``sk-****abcd``, ``sk-xxxxxxxxabcd``).

    A run of x's masks a key's middle, leaving a short start and end; a whole key may hold four x's by
    chance (about one in 60 000 of better-auth's 64 random letters), and stays long without them.
    """
    if any(mark in value for mark in _MASK_MARKS):
        return True
    shown = _X_RUN.sub("", value)
    return shown != value and len(shown) <= _MASKED_SHOWN


def mask(key: str) -> str:
    """A key shown safely: its first 3 and last 4 characters (``sk-…abcd``); short keys show less."""
    if looks_masked(key):
        return key
    if len(key) <= 10:  # noqa: PLR2004 - too short to show any of it
        return "…"
    return f"{key[:3]}…{key[-4:]}"
