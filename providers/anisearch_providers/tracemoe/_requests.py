"""Pieces of trace.moe requests: query flags, vectors, image URLs."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

import httpx

from anisearch.provider import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anisearch.provider import SearchOptions

__all__ = [
    "MAX_BATCH",
    "VECTOR_LENGTH",
    "Params",
    "image_url",
    "search_params",
    "vector_text",
]

VECTOR_LENGTH = 33
"""Numbers in a colour layout descriptor (trace.moe ``vector``), each 0..255."""
MAX_BATCH = 10
"""Most vectors one ``/search`` accepts (``Too many vectors (max 10)`` above)."""

Params = list[tuple[str, str | int | float | bool | None]]
"""Query parameters in order, as httpx takes them."""


def image_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL, the only kind trace.moe fetches.

    Raises:
        ConfigurationError: It is not.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigurationError(f"not an image URL: {url!r}") from exc
    if parsed.scheme not in {"http", "https"} or not parsed.host:
        raise ConfigurationError(f"trace.moe fetches only absolute http(s) image URLs, got {url!r}")
    return url


def vector_text(vector: Sequence[int]) -> str:
    """A colour layout descriptor as trace.moe's ``vector``: base64 of its 33 bytes.

    Raises:
        ConfigurationError: Not 33 integers 0..255.
    """
    values = list(vector)
    if len(values) != VECTOR_LENGTH or not all(
        isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255  # noqa: PLR2004 - a byte
        for value in values
    ):
        raise ConfigurationError(f"a trace.moe vector is {VECTOR_LENGTH} integers 0..255, got {values!r}")
    return base64.b64encode(bytes(values)).decode("ascii")


def search_params(options: SearchOptions, *, cut_borders: bool = True) -> Params:
    """``anilistID``, ``cutBorders`` and ``anilistInfo`` for a ``/search`` query string.

    ``cutBorders`` and ``anilistInfo`` are presence flags: any value, ``0`` and ``false`` included, turns
    them on, so they are sent (with an empty value) only when on. ``cut_borders=False`` leaves
    ``cutBorders`` out whatever the options say (a vector search cannot be cropped server-side).

    Raises:
        ConfigurationError: ``anilist_id`` is not a non-negative int (the server silently ignores those).
    """
    params: Params = []
    anilist_id = options.anilist_id
    if anilist_id is not None:
        if isinstance(anilist_id, bool) or not isinstance(anilist_id, int) or anilist_id < 0:
            raise ConfigurationError(f"anilist_id must be a non-negative int, got {anilist_id!r}")
        params.append(("anilistID", str(anilist_id)))
    if options.cut_borders and cut_borders:
        params.append(("cutBorders", ""))
    if options.anilist_info:
        params.append(("anilistInfo", ""))
    return params
