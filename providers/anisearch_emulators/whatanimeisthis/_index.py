"""The whatanimeisthis emulator's scene index: the shared scenes table (``data/scenes.json``) in its terms.

The site looks every hit up on AniList, so the index holds the table's scenes whose anime has an AniList
record there, each with the record's titles, MAL ID, synonyms and adult flag. ``tinted-good.jpg`` (in
``../shared/upstream-samples``) finds its own scene, AniList 11887, Kokoro Connect episode 5,
1169.17-1174.92 s, as through every emulator. Scoring is trace.moe's:
``clamp((255 - squared L2 distance) / 255, 0, 1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from io import BytesIO
from typing import TYPE_CHECKING

from anisearch_emulators._scenes import load_table

if TYPE_CHECKING:
    from anisearch_emulators._scenes import Episode, Scene, Title

__all__ = ["INDEX", "IndexEntry", "describe", "match", "score"]


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One indexed frame and what a hit on it reports (seconds within the episode)."""

    descriptor: tuple[int, ...]
    anilist_id: int
    title: dict[str, str | None]
    episode: int | float | None
    start: float
    end: float
    at: float
    filename: str
    mal_id: int | None = None
    is_adult: bool = False
    synonyms: tuple[str, ...] = field(default=())


def _episode(value: Episode) -> int | float | None:
    """One episode number: the first of several alternatives (``"5|17"``, ``[5, 6]``), None for none."""
    first = value[0] if isinstance(value, list) and value else value
    if isinstance(first, str):
        try:
            number = float(first.split("|", 1)[0])
        except ValueError:
            return None
        return int(number) if number.is_integer() else number
    return first if isinstance(first, int | float) else None


def _entry(scene: Scene, title: Title) -> IndexEntry | None:
    record = title.anilist
    if record is None:
        return None
    names = record["title"]
    return IndexEntry(
        descriptor=scene.vector,
        anilist_id=scene.anilist_id,
        title={key: names.get(key) for key in ("romaji", "english", "native")},
        episode=_episode(scene.episode),
        start=scene.start,
        end=scene.end,
        at=scene.at,
        filename=scene.filename,
        mal_id=record.get("idMal"),
        is_adult=bool(record.get("isAdult")),
        synonyms=tuple(record.get("synonyms") or ()),
    )


def _index() -> tuple[IndexEntry, ...]:
    table = load_table()
    entries = (
        _entry(scene, table.titles[scene.anilist_id])
        for scene in table.scenes
        if scene.anilist_id in table.titles
    )
    return tuple(entry for entry in entries if entry is not None)


INDEX: tuple[IndexEntry, ...] = _index()
"""The scenes the site can answer with, in table order."""


def score(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """trace.moe's similarity of two descriptors, 0..1."""
    squared = math.dist(a, b) ** 2
    return min(max((255 - squared) / 255, 0.0), 1.0)


def match(descriptor: tuple[int, ...], *, minimum: float, limit: int = 5) -> list[tuple[float, IndexEntry]]:
    """The best ``limit`` entries scoring at least ``minimum``, best first."""
    scored = [(score(descriptor, entry.descriptor), entry) for entry in INDEX]
    kept = [pair for pair in scored if pair[0] >= minimum]
    kept.sort(key=lambda pair: pair[0], reverse=True)
    return kept[:limit]


def describe(image_bytes: bytes) -> tuple[int, ...]:
    """The descriptor of an uploaded image, computed as trace.moe does.

    Raises:
        ValueError: The bytes are not an image Pillow can read.
    """
    # Imported on the first search: the app starts without Pillow's decoders or the descriptor code.
    from PIL import Image, UnidentifiedImageError

    from anisearch_providers.tracemoe.descriptor import search_descriptor

    try:
        with Image.open(BytesIO(image_bytes)) as image:
            image.load()
            return search_descriptor(image)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable image: {exc}") from exc
