"""Several providers' answers to one search as one answer (a fanout search): each scene once.

Kept apart from the router so that a fanout search answered from the cache (the command line's fast path
among them) merges exactly as the live search does, without loading the router's HTTP or image modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anisearch._limits import keep_best_hits
from anisearch._models import SearchResult

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anisearch._models import Attempt, Hit

__all__ = ["merge_answers", "merge_hits"]


def _overlaps(a: Hit, b: Hit, slack: float = 5.0) -> bool:
    a_start, a_end, b_start, b_end = a.start_seconds, a.end_seconds, b.start_seconds, b.end_seconds
    if a_start is None or a_end is None or b_start is None or b_end is None:
        return False
    return a_start <= b_end + slack and b_start <= a_end + slack


def merge_hits(hits: Sequence[Hit]) -> list[Hit]:
    """Merge hits of the same AniList ID, episode and overlapping time window (within 5 s).

    The most similar hit of each group is kept; titles, MAL ID and synonyms missing from it are filled
    from the others. Returns similarity descending.
    """
    kept: list[Hit] = []
    for hit in sorted(hits, key=lambda h: h.similarity, reverse=True):
        twin = next(
            (
                k
                for k in kept
                if hit.anilist_id is not None
                and k.anilist_id == hit.anilist_id
                and str(k.episode) == str(hit.episode)
                and _overlaps(k, hit)
            ),
            None,
        )
        if twin is None:
            kept.append(hit)
            continue
        fill = {
            name: getattr(hit, name)
            for name in ("title", "mal_id", "is_adult", "episode_duration_seconds")
            if getattr(twin, name) is None and getattr(hit, name) is not None
        }
        if not twin.synonyms and hit.synonyms:
            fill["synonyms"] = hit.synonyms
        if fill:
            kept[kept.index(twin)] = twin.model_copy(update=fill)
    return kept


def merge_answers(answered: Sequence[SearchResult], attempts: Sequence[Attempt] = ()) -> SearchResult:
    """The answers of several providers as one: their hits merged (:func:`merge_hits`, the
    :data:`~anisearch._limits.MAX_HITS` most similar), the frames they searched added up, the first
    provider's name and the first quota any of them reported.

    Args:
        answered: At least one answer, in the search's provider order.
        attempts: The search's attempts, for the merged answer.
    """
    frames = [result.frames_searched for result in answered if result.frames_searched is not None]
    return SearchResult(
        hits=keep_best_hits(merge_hits([hit for result in answered for hit in result.hits])),
        provider=answered[0].provider,
        frames_searched=sum(frames) if frames else None,
        cached=all(result.cached for result in answered),
        attempts=list(attempts),
        quota=next((result.quota for result in answered if result.quota is not None), None),
    )
