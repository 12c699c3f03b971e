"""The trace.moe emulator's index: the shared scenes table (``data/scenes.json``) in trace.moe's terms.

:data:`SCENES` are the table's scenes as they are; :data:`ANILIST` holds the records the server would
attach with ``anilistInfo`` (its own AniList table: the fields it stores, with ``chinese`` titles and
``synonyms_chinese``); IDs without one fall back to the bare int, as the server does for IDs missing
from its table. :data:`QUERIES` are synthetic query vectors standing in for recorded searches whose
screenshot is not public. Where each number comes from is in ``data/README.md``.
"""

from __future__ import annotations

from typing import Any

from anisearch_emulators._scenes import Episode, load_table, tracemoe_record
from anisearch_emulators._scenes import Scene as IndexedScene

__all__ = ["ANILIST", "QUERIES", "SCENES", "Episode", "IndexedScene"]

_TABLE = load_table()

SCENES: tuple[IndexedScene, ...] = _TABLE.scenes
"""Every scene, in index order (``file_id`` 1 first)."""

QUERIES: dict[str, tuple[int, ...]] = dict(_TABLE.queries)
"""Synthetic query vectors standing in for recorded searches whose screenshot is not public."""

ANILIST: dict[int, dict[str, Any]] = {
    anilist_id: record
    for anilist_id, title in _TABLE.titles.items()
    if (record := tracemoe_record(title)) is not None
}
"""AniList records by ID, as the server's ``anilist`` table stores them (``anilistInfo``)."""
