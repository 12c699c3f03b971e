"""The whatanimeisthis emulator's scene index: a few frames, each a colour layout descriptor plus metadata.

The first entry is trace.moe's sample screenshot ``tinted-good.jpg`` (in ``../shared/upstream-samples``):
its 33 numbers are what :func:`anisearch._descriptor.search_descriptor` computes for it, and its
metadata is trace.moe's own answer for it (AniList 11887, Kokoro Connect episode 5, 1169.17-1174.92 s).
The other entries are the runners-up of that same answer (and of the legacy API's), each placed at a
small distance from the sample so that they score about as they did upstream (0.83-0.97); their
descriptors are derived numbers, not real frames. Scoring is trace.moe's:
``clamp((255 - squared L2 distance) / 255, 0, 1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from io import BytesIO

__all__ = ["INDEX", "TINTED_GOOD", "IndexEntry", "describe", "match", "score"]

TINTED_GOOD: tuple[int, ...] = (
    17, 15, 9, 8, 13, 5, 11, 18, 15, 16, 17, 19, 20, 14, 24, 16, 9, 18, 12, 16, 15,
    31, 17, 17, 18, 15, 16,
    28, 15, 13, 14, 16, 14,
)  # fmt: skip
"""``search_descriptor(Image.open("tinted-good.jpg"))``: 21 Y, 6 Cb, 6 Cr coefficients."""


def _near(deltas: dict[int, int]) -> tuple[int, ...]:
    """The sample's descriptor moved by ``deltas`` (position -> change): a look-alike frame."""
    return tuple(value + deltas.get(position, 0) for position, value in enumerate(TINTED_GOOD))


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One indexed frame and what a hit on it reports (seconds within the episode)."""

    descriptor: tuple[int, ...]
    anilist_id: int
    title: dict[str, str]
    episode: int
    start: float
    end: float
    at: float
    filename: str
    mal_id: int | None = None
    is_adult: bool = False
    synonyms: tuple[str, ...] = field(default=())


_KOKORO = {"romaji": "Kokoro Connect", "english": "Kokoro Connect", "native": "ココロコネクト"}

_FUNE = {"romaji": "Fune wo Amu", "english": "The Great Passage", "native": "舟を編む"}
_ONE_PIECE = {"romaji": "ONE PIECE", "english": "ONE PIECE", "native": "ONE PIECE"}
_ALICE = {"romaji": "Alice to Zouroku", "english": "Alice & Zoroku", "native": "アリスと蔵六"}
_UCHUU = {"romaji": "Uchuu Kyoudai", "english": "Space Brothers", "native": "宇宙兄弟"}

INDEX: tuple[IndexEntry, ...] = (
    IndexEntry(TINTED_GOOD, 11887, _KOKORO, 5, 1169.17, 1174.92, 1172.05,
               "Kokoro Connect - 05 (BD 1280x720 x264 AACx2).mp4", mal_id=11887, synonyms=("Kokoroco",)),
    IndexEntry(_near({6: 2, 21: -2}), 11887, _KOKORO, 5, 1173.83, 1174.67, 1174.5,
               "[ANK-Raws&NatsuYuki] Kokoro Connect - 05 (BDrip 1280x720 x264 AAC).mp4", mal_id=11887,
               synonyms=("Kokoroco",)),
    IndexEntry(_near({1: 4, 8: -4, 27: 3}), 21703, _FUNE, 5, 487.67, 487.83, 487.75,
               "[Ohys-Raws] Fune o Amu - 05 (CX 1280x720 x264 AAC).mp4"),
    IndexEntry(_near({0: 5, 13: -4, 30: 1}), 21, _ONE_PIECE, 780, 716.08, 716.75, 716.42,
               "[OPFansMaplesnow][One_Piece][780][MP4].mp4"),
    IndexEntry(_near({2: -5, 20: 3, 25: -3}), 97821, _ALICE, 3, 663.17, 663.25, 663.21,
               "Alice to Zouroku - 03 (BD 1280x720 x264 AACx2).mp4"),
    IndexEntry(_near({3: 6, 10: -2, 32: 2}), 12431, _UCHUU, 16, 1259.67, 1260.92, 1260.3,
               "[EMD][Uchuu Kyoudai][16][BIG5][X264_AAC][1280X720][9022A07D].mp4"),
)  # fmt: skip


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

    from anisearch._descriptor import search_descriptor

    try:
        with Image.open(BytesIO(image_bytes)) as image:
            image.load()
            return search_descriptor(image)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable image: {exc}") from exc
