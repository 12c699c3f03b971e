"""How a search answer reads: titles, episodes, scenes, the one-line headline and the hits table."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from anisearch._cli._common import clock, inert, legible

if TYPE_CHECKING:
    from rich.table import Table

    from anisearch._models import Hit, SearchResult

_RELEASE_TAGS = re.compile(r"\[[^\]]*\]|\([^)]*\)|\.(mp4|mkv|webm|avi|m4v|mov)$", re.IGNORECASE)


def title_of(hit: Hit) -> str:
    """Romaji/English title when known, then the AniList ID, the release file name only as a last resort;
    as the terminal shows it (:func:`~anisearch._cli._common.inert`: the upstream wrote it)."""
    title = hit.title.preferred(("romaji", "english", "native", "chinese")) if hit.title else None
    if title:
        return inert(title)
    if hit.filename:
        cleaned = " ".join(_RELEASE_TAGS.sub(" ", hit.filename).replace("_", " ").split())
        if cleaned:
            return inert(cleaned)
    return f"AniList {hit.anilist_id}" if hit.anilist_id else "-"


def episode_of(hit: Hit) -> str:
    """The episode as written by the upstream: ``5``, ``16.5``, ``5|17``, ``1-2``, or ``-``."""
    episode = hit.episode
    if episode is None or episode == "":
        return "-"
    if isinstance(episode, list):
        return "-".join(str(part) for part in episode)
    return f"{episode:g}" if isinstance(episode, float) else str(episode)


def span_of(hit: Hit) -> str:
    """``mm:ss`` to ``mm:ss`` (en dash) of the matched scene; one time when both ends are the same second,
    and the best-matching frame's time (``at_seconds``) when the provider sent no scene."""
    if hit.start_seconds is None and hit.end_seconds is None:
        return clock(hit.at_seconds)
    start, end = clock(hit.start_seconds), clock(hit.end_seconds)
    return start if end in {start, "-"} else f"{start}\u2013{end}"


def percent(similarity: float) -> str:
    return f"{similarity * 100:.1f} %"


def headline(hit: Hit) -> str:
    """One line: title, episode, scene, similarity, provider."""
    episode = episode_of(hit)
    parts = [title_of(hit)]
    if episode != "-":
        parts.append(f"episode {episode}")
    parts.append(span_of(hit))
    return f"{', '.join(parts)} ({percent(hit.similarity)}, {hit.provider})"


def no_match_text(result: SearchResult, threshold: float) -> str:
    """``no confident match (best 83.9 %: Title, episode 5, 08:07 from tracemoe; a match needs 90 %)``."""
    best = result.best
    needs = f"a match needs {threshold * 100:g} %"
    if best is None:
        return f"no confident match (no hits; {needs})"
    episode = episode_of(best)
    where = ", ".join([title_of(best), *([f"episode {episode}"] if episode != "-" else []), span_of(best)])
    return f"no confident match (best {percent(best.similarity)}: {where} from {best.provider}; {needs})"


def hit_rows(
    result: SearchResult, *, threshold: float, limit: int, show_all: bool
) -> tuple[list[dict[str, str]], list[str]]:
    """The hits :func:`hits_table` shows, as rows of text (for one block per hit on a narrow terminal),
    and each row's style; as stdout's encoding carries them (:func:`~anisearch._cli._common.legible`), so
    that they are measured as they are printed."""
    shown = [h for h in result.hits if show_all or h.similarity >= threshold][:limit]
    rows = [
        {
            "title": legible(title_of(hit)),
            "similar": percent(hit.similarity),
            "ep": legible(episode_of(hit)),
            "scene": legible(span_of(hit)),
            "provider": hit.provider,
        }
        for hit in shown
    ]
    return rows, ["" if hit.similarity >= threshold else "dim" for hit in shown]


def hits_table(result: SearchResult, *, threshold: float, limit: int, show_all: bool) -> tuple[Table, int]:
    """The best ``limit`` hits; weaker than ``threshold`` only with ``show_all`` (dimmed). And how many
    were left out. Its text is as stdout's encoding carries it (:func:`~anisearch._cli._common.legible`):
    rich lays the columns out on what is printed."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        # Text, not a string: a title holding "[/...]" is no rich markup (it raised MarkupError)
        title=Text(legible(headline(match)), style="bold")
        if (match := result.match_at(threshold)) is not None
        else None,
        caption=None,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    table.add_column("similar", justify="right", no_wrap=True)
    table.add_column("title", overflow="fold", ratio=1, min_width=12)  # folded, never squeezed out
    # (the command prints one block per hit where these columns do not fit: _search._fits)
    table.add_column("ep", no_wrap=True)
    table.add_column("scene", no_wrap=True)
    table.add_column("provider", no_wrap=True)
    shown = [h for h in result.hits if show_all or h.similarity >= threshold][:limit]
    for hit in shown:
        style = None if hit.similarity >= threshold else "dim"
        table.add_row(
            percent(hit.similarity),
            Text(legible(title_of(hit))),
            legible(episode_of(hit)),
            legible(span_of(hit)),
            hit.provider,
            style=style,
        )
    return table, len(result.hits) - len(shown)


_UPSTREAM_ITEMS: dict[str, Any] = {"hits": {"__all__": {"raw"}}, "quota": {"raw"}}
"""What ``--raw`` adds to a result's JSON: each hit's upstream item, and what the quota was read from."""


def dump(result: SearchResult, raw: bool) -> dict[str, Any]:
    """``result`` as JSON data: ``SearchResult.model_dump(mode="json")``, minus the upstream's own items
    unless ``raw``."""
    return result.model_dump(mode="json", exclude=None if raw else _UPSTREAM_ITEMS)
