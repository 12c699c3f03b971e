"""The trace.moe emulator's index: a few dozen scenes, each with its colour layout descriptor and hit data.

Everything here is derived data, computed once and pasted as literals; the emulator never reads a sample
file at run time.

- Descriptors come from :func:`anisearch._descriptor.search_descriptor` run on the screenshots in
  ``upstream-samples`` (``tinted-good.jpg``; ``border-bad.jpg`` cropped to its video area, the frame behind
  the player window; ``flipped-good.webp``), or from a synthetic query vector where the screenshot behind a
  recorded search is not public (:data:`QUERIES`).
- Every other scene of a recorded search is placed around its query so that the emulator's score,
  ``(255 - squared L2) / 255``, reproduces the similarity the real body reports, give or take 1/255: the
  neighbour's descriptor is the query's with a few AC coefficients moved by 1-3 steps (a deterministic,
  seeded choice).
- Hit metadata (AniList ID, filename, episode, ``from``/``at``/``to``, ``duration``) is taken from the real
  bodies: ``api-v1-search-tinted-good-2021.json`` and ``legacy-api-search-tinted-good-2020.json`` (tinted
  good: AniList 11887, Kokoro Connect ep 5, 1169.17-1174.92 s), the 2026-05 recordings (Moonlight Mile and
  its neighbours, with ``at`` and ``duration``), ``api-search-milvus-era-2025-09.json`` (a near miss) and
  ``api-v1-search-anilistinfo-excerpt-2023-12.json`` (episode ``"5|17"``). trace.moe's docs example gives
  the Nekopara OVA scene of ``border-bad.jpg`` (97.75-98.92 s; the player shows a 58:06 video).
- Where a body predates a field, the value is a stand-in: ``duration`` 1440.0 (a 24-minute slot) for the
  2020/2021 rows; ``at`` the middle of ``from``/``to`` for the 2021 rows. ``flipped-good.webp`` shows Isla
  of Plastic Memories (AniList 20872); its episode and time are not on record, so that row carries none.
- :data:`ANILIST` holds the AniList records the server would attach with ``anilistInfo``: the 2026-05
  recordings' stored records (trimmed), the legacy 2020 body's title/synonym fields, and the V1-era objects
  of the docs and the 2023-12 excerpt. IDs without a record (One Piece, Fune o Amu, the 2025-09 rows ...)
  fall back to the bare int, as the server does for IDs missing from its AniList table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Episode = int | float | str | list[int] | None


@dataclass(frozen=True, slots=True)
class IndexedScene:
    """One indexed scene: a file, the matched time span within it, and the span's descriptor.

    Attributes:
        file_id: The emulator's file number (the server's ``files.id``), used in preview ids.
        anilist_id: AniList ID of the anime.
        filename: Basename of the indexed video (the result's ``filename``).
        episode: As trace.moe's ``aniep`` parses the filename: int, float, ``"a|b"`` string, list or None.
        episode_start: First episode the file covers, or None.
        episode_end: Last episode the file covers, or None.
        start: ``from``, seconds.
        at: The best-matching frame, seconds (``from <= at <= to``).
        end: ``to``, seconds.
        duration: Length of the whole video, seconds.
        vector: The 33-number colour layout descriptor.
    """

    file_id: int
    anilist_id: int
    filename: str
    episode: Episode
    episode_start: int | None
    episode_end: int | None
    start: float
    at: float
    end: float
    duration: float
    vector: tuple[int, ...]

    @property
    def frames(self) -> int:
        """How many frames of this file the index holds (about two a second), for ``frameCount``."""
        return round(self.duration * 2)


# fmt: off
QUERIES: dict[str, tuple[int, ...]] = {
    "moonlight-mile-2026-05": (
        36, 16, 14, 15, 19, 18, 18, 15, 12, 18, 17, 16, 13, 20, 19, 13, 14,
        20, 17, 19, 19, 30, 18, 15, 17, 18, 17, 35, 18, 18, 17, 15, 14,
    ),
    "near-miss-2025-09": (
        22, 14, 12, 12, 19, 15, 20, 16, 16, 12, 12, 17, 20, 16, 14, 16, 19,
        14, 16, 17, 19, 33, 15, 14, 14, 15, 17, 28, 15, 15, 17, 17, 17,
    ),
    "3d-kanojo-2023-12": (
        33, 18, 16, 19, 16, 12, 17, 13, 15, 14, 18, 19, 19, 20, 14, 15, 20,
        15, 19, 19, 18, 29, 15, 18, 16, 15, 16, 33, 14, 16, 18, 16, 18,
    ),
}
"""Synthetic query vectors standing in for recorded searches whose screenshot is not public."""

SCENES: tuple[IndexedScene, ...] = (
    IndexedScene(
        1, 11887,
        "Kokoro Connect - 05 (BD 1280x720 x264 AACx2).mp4",
        5, 5, 5, 1169.17, 1174.5, 1174.92, 1440.0,
        (
            17, 15, 9, 9, 13, 5, 11, 18, 15, 16, 17, 19, 22, 14, 24, 16, 9,
            18, 12, 16, 16, 31, 17, 16, 18, 15, 16, 28, 15, 14, 14, 16, 14,
        ),
    ),
    IndexedScene(
        2, 21703,
        "[Ohys-Raws] Fune o Amu - 05 (CX 1280x720 x264 AAC).mp4",
        5, 5, 5, 487.67, 487.75, 487.83, 1440.0,
        (
            17, 15, 12, 8, 13, 5, 9, 21, 15, 16, 17, 19, 20, 14, 22, 19, 9,
            18, 13, 16, 15, 31, 17, 19, 18, 15, 16, 28, 15, 12, 14, 16, 14,
        ),
    ),
    IndexedScene(
        3, 21703,
        "[Leopard-Raws] Fune o Amu - 05 RAW (THK 1280x720 x264 AAC).mp4",
        5, 5, 5, 487.5, 487.54, 487.58, 1440.0,
        (
            17, 15, 9, 8, 13, 4, 14, 18, 15, 14, 17, 19, 20, 16, 24, 17, 7,
            18, 12, 16, 15, 31, 17, 20, 19, 15, 19, 28, 15, 13, 14, 16, 14,
        ),
    ),
    IndexedScene(
        4, 21,
        "[OPFansMaplesnow][One_Piece][780][MP4].mp4",
        780, 780, 780, 716.08, 716.415, 716.75, 1440.0,
        (
            17, 15, 9, 8, 13, 5, 11, 18, 18, 16, 14, 19, 17, 14, 25, 16, 9,
            18, 12, 16, 15, 31, 17, 17, 18, 15, 18, 28, 15, 13, 14, 13, 13,
        ),
    ),
    IndexedScene(
        5, 21,
        "[Skytree][海贼王][One_Piece][780][GB_JP][X264_AAC][720P][CRRIP][天空树双语字幕组].mp4",
        780, 780, 780, 714.33, 715.5, 716.67, 1440.0,
        (
            17, 15, 9, 10, 15, 5, 11, 18, 15, 15, 17, 20, 20, 14, 24, 16, 9,
            18, 15, 16, 18, 31, 17, 18, 18, 15, 18, 28, 13, 13, 15, 16, 12,
        ),
    ),
    IndexedScene(
        6, 97821,
        "Alice to Zouroku - 03 (BD 1280x720 x264 AACx2).mp4",
        3, 3, 3, 663.17, 663.21, 663.25, 1440.0,
        (
            17, 15, 9, 8, 13, 5, 8, 18, 15, 16, 17, 19, 20, 17, 24, 16, 6,
            18, 15, 16, 15, 31, 17, 17, 19, 14, 16, 28, 15, 13, 14, 15, 12,
        ),
    ),
    IndexedScene(
        7, 97821,
        "[Leopard-Raws] Alice to Zouroku - 03 RAW (SUN 1280x720 x264 AAC).mp4",
        3, 3, 3, 671.67, 671.71, 671.75, 1440.0,
        (
            17, 17, 12, 10, 13, 5, 12, 18, 15, 16, 19, 19, 20, 14, 24, 13, 7,
            18, 12, 16, 15, 31, 17, 17, 18, 15, 16, 28, 15, 13, 12, 14, 14,
        ),
    ),
    IndexedScene(
        8, 21,
        "[Leopard-Raws] One Piece - 780 RAW (CX 1280x720 x264 AAC).mp4",
        780, 780, 780, 725.33, 725.955, 726.58, 1440.0,
        (
            17, 15, 9, 7, 13, 8, 10, 18, 15, 17, 17, 19, 23, 14, 24, 16, 12,
            18, 10, 16, 15, 31, 18, 17, 18, 18, 16, 28, 15, 13, 14, 16, 14,
        ),
    ),
    IndexedScene(
        9, 12431,
        "[EMD][Uchuu Kyoudai][16][BIG5][X264_AAC][1280X720][9022A07D].mp4",
        16, 16, 16, 1259.67, 1260.295, 1260.92, 1440.0,
        (
            17, 15, 9, 8, 13, 5, 8, 20, 15, 16, 17, 19, 20, 14, 26, 16, 9,
            20, 12, 16, 15, 31, 16, 20, 18, 18, 16, 28, 15, 11, 14, 16, 14,
        ),
    ),
    IndexedScene(
        10, 849,
        "[philosophy-raws][The Melancholy of Haruhi Suzumiya(2006)][12][BDRIP][x264 AAC][1920X1080].mp4",
        12, 12, 12, 504.17, 505.17, 505.33, 1440.0,
        (
            17, 15, 8, 10, 11, 5, 11, 18, 13, 16, 18, 21, 17, 12, 24, 16, 9,
            18, 12, 16, 13, 31, 17, 17, 18, 15, 16, 28, 18, 12, 14, 16, 15,
        ),
    ),
    IndexedScene(
        11, 4382,
        "[CASO][Suzumiya_Haruhi_no_Yuuutsu][BDrip][26][BIG5][1280x720][x264_AAC].mp4",
        26, 26, 26, 505.5, 505.5, 506, 1440.0,
        (
            17, 15, 9, 8, 10, 5, 11, 18, 15, 16, 15, 19, 21, 14, 21, 16, 9,
            18, 12, 16, 16, 31, 14, 17, 15, 15, 15, 28, 15, 13, 14, 16, 12,
        ),
    ),
    IndexedScene(
        12, 21085,
        "[異域字幕組][鑽石王牌第二季][Ace of Diamond S2][18_93][1280x720][繁體].mp4",
        18, 18, 18, 683.5, 683.5, 684.75, 1440.0,
        (
            17, 15, 9, 8, 12, 5, 12, 16, 15, 16, 17, 19, 20, 11, 24, 13, 9,
            17, 12, 18, 14, 31, 17, 19, 18, 18, 16, 28, 15, 13, 16, 16, 14,
        ),
    ),
    IndexedScene(
        13, 854,
        "[HKG][Soul.Link][DVDrip][03][x264_AAC][864x480][30fps].mp4",
        3, 3, 3, 287.67, 287.67, 287.67, 1440.0,
        (
            17, 15, 10, 8, 13, 5, 14, 18, 16, 19, 17, 21, 20, 14, 24, 16, 9,
            15, 12, 16, 15, 31, 17, 16, 17, 17, 16, 28, 15, 10, 14, 16, 14,
        ),
    ),
    IndexedScene(
        14, 21237,
        "(アニメ) かみさまみならい ヒミツのここたま 第02話.mp4",
        2, 2, 2, 232.42, 232.42, 232.42, 1440.0,
        (
            17, 16, 9, 8, 13, 5, 11, 15, 15, 16, 17, 18, 20, 17, 24, 17, 9,
            15, 11, 16, 15, 31, 17, 15, 18, 15, 16, 28, 15, 16, 14, 16, 12,
        ),
    ),
    IndexedScene(
        15, 18411,
        "[DMG][Gingitsune][09][720P][BIG5].mp4",
        9, 9, 9, 814.42, 814.42, 814.42, 1440.0,
        (
            17, 13, 8, 8, 16, 7, 11, 18, 15, 16, 17, 17, 20, 16, 24, 16, 6,
            18, 12, 16, 15, 31, 18, 18, 15, 15, 16, 28, 16, 13, 14, 17, 14,
        ),
    ),
    IndexedScene(
        16, 1482,
        "[MapleSnow][D.Gray-man][029][Jpn_Big5][X264_AAC].mp4",
        29, 29, 29, 710.33, 710.33, 710.33, 1440.0,
        (
            17, 15, 11, 8, 13, 5, 11, 18, 17, 17, 16, 19, 19, 14, 25, 19, 11,
            16, 11, 15, 15, 31, 17, 17, 18, 15, 19, 28, 15, 10, 14, 16, 14,
        ),
    ),
    IndexedScene(
        17, 99939,
        "Nekopara - OVA (BD 1280x720 x264 AAC).mp4",
        None, None, None, 97.75, 98.335, 98.92, 3486.0,
        (
            32, 24, 7, 19, 13, 13, 19, 22, 24, 15, 14, 16, 15, 15, 13, 18, 16,
            17, 14, 13, 19, 34, 12, 26, 17, 19, 17, 26, 19, 9, 12, 11, 9,
        ),
    ),
    IndexedScene(
        18, 20872,
        "Plastic Memories (episode unknown).mp4",
        None, None, None, 0.0, 0.0, 0.0, 1440.0,
        (
            51, 7, 23, 15, 14, 5, 11, 23, 16, 20, 16, 16, 14, 17, 15, 18, 16,
            16, 15, 15, 15, 43, 17, 17, 16, 19, 24, 36, 18, 14, 12, 16, 13,
        ),
    ),
    IndexedScene(
        19, 2929,
        "[OUR][MOONLIGHT MILE 2nd][05][JP_GB][1280X720].mp4",
        5, 5, 5, 832.7494, 836.7534, 836.8368, 1499.9583,
        (
            36, 16, 14, 15, 19, 18, 18, 13, 12, 18, 17, 16, 13, 19, 19, 15, 14,
            20, 17, 19, 19, 30, 18, 16, 17, 18, 17, 35, 18, 18, 17, 14, 14,
        ),
    ),
    IndexedScene(
        20, 102005,
        "[Leopard-Raws] Future Card Shin Buddyfight - 40 RAW (TX 1280x720 x264 AAC).mp4",
        40, 40, 40, 760.093, 760.802, 760.802, 1494.848,
        (
            36, 16, 14, 15, 19, 18, 18, 16, 12, 19, 17, 16, 13, 20, 19, 13, 17,
            20, 17, 19, 19, 30, 18, 15, 17, 18, 17, 35, 18, 18, 17, 15, 14,
        ),
    ),
    IndexedScene(
        21, 202955,
        "[Erai-raws] Prism Rondo - 19 [720p NF WEB-DL AVC EAC3][MultiSub][E218B26C].mkv",
        19, 19, 19, 843.593, 847.18, 858.232, 1825.472,
        (
            36, 16, 14, 15, 19, 21, 18, 16, 12, 18, 17, 16, 13, 20, 19, 13, 14,
            20, 17, 19, 19, 30, 18, 15, 17, 18, 18, 35, 18, 18, 17, 15, 13,
        ),
    ),
    IndexedScene(
        22, 8247,
        "[ReinForce] Gekijouban Bleach ~Jigoku-hen~ (BDRip 1920x1036 x264 FLAC).mp4",
        None, None, None, 4390.6782, 4390.9282, 4393.2222, 5633.6,
        (
            36, 16, 14, 15, 19, 18, 18, 15, 12, 18, 17, 19, 13, 20, 19, 13, 14,
            20, 17, 18, 19, 30, 17, 15, 17, 18, 17, 35, 17, 18, 17, 15, 14,
        ),
    ),
    IndexedScene(
        23, 20770,
        "Akatsuki no Yona - 17 (BD 1280x720 x264 AAC).mp4",
        17, 17, 17, 898.0638, 898.4809, 899.0231, 1423.1718,
        (
            36, 16, 14, 15, 19, 17, 18, 15, 12, 18, 18, 16, 13, 20, 19, 13, 14,
            20, 17, 19, 19, 30, 21, 15, 16, 18, 16, 35, 18, 18, 17, 15, 14,
        ),
    ),
    IndexedScene(
        24, 158791,
        "[Ohys-Raws] Megumi no Daigo Kyuukoku no Orange - 07 (NTV 1920x1080 x264 AAC).mp4",
        7, 7, 7, 1222.5547, 1222.5547, 1222.8883, 1450.0266,
        (
            36, 16, 14, 15, 19, 18, 18, 15, 12, 18, 17, 14, 13, 20, 19, 13, 14,
            20, 17, 19, 19, 30, 18, 15, 17, 18, 17, 35, 18, 18, 17, 12, 14,
        ),
    ),
    IndexedScene(
        25, 8041,
        "[Leopard-Raws] Sennin Buraku - 05 RAW (JIGE 960x720 x264 AAC).mp4",
        5, 5, 5, 393.5598, 394.6442, 396.1875, 698.005,
        (
            36, 16, 14, 13, 19, 18, 18, 15, 12, 18, 17, 16, 13, 19, 19, 13, 14,
            20, 17, 20, 18, 30, 17, 15, 17, 18, 17, 35, 17, 18, 17, 17, 14,
        ),
    ),
    IndexedScene(
        26, 187901,
        "[SubsPlease] Dead Account - 01 (720p) [AD60A1AB].mkv",
        1, 1, 1, 377.961, 378.086, 378.337, 1417.021,
        (
            36, 16, 14, 15, 19, 18, 18, 15, 12, 18, 17, 16, 13, 20, 20, 13, 14,
            20, 17, 19, 17, 30, 18, 15, 17, 16, 17, 35, 16, 18, 17, 15, 14,
        ),
    ),
    IndexedScene(
        27, 122441,
        "[Ohys-Raws] Peach Boy Riverside - 11 (AT-X 1280x720 x264 AAC).mp4",
        11, 11, 11, 761.7193, 762.053, 762.0947, 1440.128,
        (
            36, 16, 14, 15, 19, 15, 18, 15, 12, 18, 17, 16, 13, 18, 19, 13, 14,
            20, 17, 19, 19, 30, 18, 15, 17, 18, 17, 35, 18, 18, 17, 15, 14,
        ),
    ),
    IndexedScene(
        28, 122441,
        "[Ohys-Raws] Peach Boy Riverside - 11 (AT-X 1280x720 x264 AAC) v2.mp4",
        11, 11, 11, 761.7193, 762.053, 762.0947, 1440.128,
        (
            36, 16, 13, 15, 19, 19, 18, 15, 13, 18, 17, 16, 13, 20, 19, 13, 14,
            20, 18, 19, 20, 30, 18, 15, 17, 20, 17, 35, 18, 18, 15, 15, 14,
        ),
    ),
    IndexedScene(
        29, 2136,
        "フロントイノセント.mp4",
        None, None, None, 514.4473, 514.6808, 514.7476, 1668.2666,
        (
            22, 11, 14, 12, 17, 15, 20, 18, 16, 12, 15, 17, 20, 18, 14, 16, 19,
            12, 16, 20, 17, 33, 17, 12, 14, 12, 20, 28, 15, 18, 15, 17, 17,
        ),
    ),
    IndexedScene(
        30, 99088,
        "Pluto.S01E06.1080p.WEB.h264-QUiNTESSENCE.mp4",
        6, 6, 6, 1776.191, 1776.191, 1777.3589, 3602.72,
        (
            22, 13, 9, 14, 21, 15, 20, 16, 18, 12, 12, 17, 22, 18, 14, 15, 22,
            11, 16, 17, 20, 33, 13, 11, 14, 15, 19, 28, 14, 15, 20, 20, 15,
        ),
    ),
    IndexedScene(
        31, 4720,
        "[SumiSora][White_Album][BDRip][03][GB][1920x1080][x264_aac].mp4",
        3, 3, 3, 287.3957, 287.5292, 287.5626, 1476.053,
        (
            22, 11, 9, 10, 17, 15, 17, 16, 16, 15, 12, 14, 20, 14, 17, 13, 17,
            12, 16, 15, 20, 33, 16, 15, 13, 15, 17, 28, 13, 17, 15, 17, 18,
        ),
    ),
    IndexedScene(
        32, 5114,
        "[WLGO&PPX][Fullmetal_Alchemist_Brotherhood][01v3][BIG5][720P][BA0CD359].mp4",
        1, 1, 1, 438.2705, 438.2705, 438.2705, 1469.866,
        (
            22, 11, 10, 12, 19, 12, 18, 14, 16, 9, 13, 17, 20, 18, 12, 14, 16,
            14, 15, 20, 19, 33, 15, 14, 16, 15, 16, 28, 15, 18, 20, 15, 14,
        ),
    ),
    IndexedScene(
        33, 21175,
        "[HYSUB]Dragon Ball Super[06][BIG5_MP4][1280X720].mp4",
        6, 6, 6, 490.4896, 490.6981, 491.4906, 1404.877,
        (
            22, 16, 10, 9, 19, 18, 20, 16, 13, 12, 15, 19, 18, 15, 14, 19, 19,
            17, 18, 17, 19, 33, 18, 14, 14, 18, 17, 28, 17, 14, 17, 18, 20,
        ),
    ),
    IndexedScene(
        34, 5114,
        "[WLGO][Fullmetal_Alchemist_Brotherhood][16][BIG5][720P][151963FF].mp4",
        16, 16, 16, 843.5086, 843.5503, 843.5503, 1469.994,
        (
            22, 14, 14, 12, 19, 12, 23, 15, 18, 12, 12, 17, 22, 14, 14, 19, 17,
            17, 19, 17, 17, 33, 13, 14, 13, 17, 20, 28, 15, 17, 15, 20, 15,
        ),
    ),
    IndexedScene(
        35, 114340,
        "[Ohys-Raws] Kuma Kuma Kuma Bear - 01 (AT-X 1280x720 x264 AAC).mp4",
        1, 1, 1, 114.9065, 115.1567, 115.1984, 1440.128,
        (
            22, 12, 15, 14, 19, 13, 20, 19, 13, 13, 10, 19, 20, 19, 17, 16, 19,
            14, 18, 19, 19, 33, 13, 14, 12, 15, 14, 28, 15, 18, 20, 17, 16,
        ),
    ),
    IndexedScene(
        36, 20954,
        "[ReinForce] Eiga Koe no Katachi (BDRip 1920x1036 x264 FLAC).mp4",
        None, None, None, 7041.2007, 7043.3696, 7048.7085, 7782.775,
        (
            22, 12, 11, 13, 17, 15, 17, 16, 16, 15, 14, 14, 22, 19, 14, 16, 22,
            13, 14, 18, 18, 33, 12, 12, 15, 18, 14, 28, 17, 15, 15, 17, 18,
        ),
    ),
    IndexedScene(
        37, 406,
        "[ktxp][BUZZER BEATER][07][jap_chn].mp4",
        7, 7, 7, 456.3333, 456.4667, 456.6, 1515.798,
        (
            22, 12, 9, 11, 19, 15, 20, 18, 13, 14, 12, 20, 20, 18, 16, 16, 16,
            17, 16, 17, 21, 33, 15, 12, 16, 12, 20, 28, 17, 17, 17, 15, 19,
        ),
    ),
    IndexedScene(
        38, 10033,
        "[Dymy][Toriko][51SP][BIG5][1024x576].mp4",
        None, None, None, 2179.8916, 2180.3921, 2180.3921, 2794.893,
        (
            22, 17, 9, 14, 18, 12, 20, 16, 16, 13, 15, 19, 23, 19, 14, 14, 19,
            13, 16, 17, 16, 33, 13, 15, 17, 16, 16, 28, 13, 17, 19, 14, 16,
        ),
    ),
    IndexedScene(
        39, 102882,
        "[Leopard-Raws] 3D Kanojo： Real Girl 2 - 05 (17) RAW (NTV 1280x720 x264 AAC).mp4",  # noqa: RUF001 - the real filename
        "5|17", None, None, 538.25, 539.96, 541.67, 1440.0,
        (
            33, 21, 16, 19, 16, 12, 20, 13, 14, 14, 18, 19, 19, 20, 14, 14, 20,
            15, 19, 21, 18, 29, 15, 18, 16, 14, 16, 33, 17, 16, 18, 16, 18,
        ),
    ),
)
# fmt: on

ANILIST: dict[int, dict[str, Any]] = {
    11887: {
        "id": 11887,
        "type": "ANIME",
        "idMal": 11887,
        "title": {
            "native": "ココロコネクト",
            "romaji": "Kokoro Connect",
            "chinese": "心連·情結",
            "english": "Kokoro Connect",
        },
        "season": "SUMMER",
        "isAdult": False,
        "siteUrl": "https://anilist.co/anime/11887",
        "synonyms": ["Kokoroco"],
        "seasonYear": 2012,
        "synonyms_chinese": ["戀愛隨意鏈", "戀愛隨意連結", "心靈鏈環", "心靈接觸", "心與心的連結"],
    },
    849: {
        "id": 849,
        "type": "ANIME",
        "idMal": 849,
        "title": {
            "native": "涼宮ハルヒの憂鬱",
            "romaji": "Suzumiya Haruhi no Yuuutsu",
            "chinese": "涼宮春日的憂鬱",
            "english": "The Melancholy of Haruhi Suzumiya",
        },
        "season": "SPRING",
        "isAdult": False,
        "siteUrl": "https://anilist.co/anime/849",
        "synonyms": [],
        "seasonYear": 2006,
        "synonyms_chinese": [],
    },
    4382: {
        "id": 4382,
        "type": "ANIME",
        "idMal": 4382,
        "title": {
            "native": "涼宮ハルヒの憂鬱",
            "romaji": "Suzumiya Haruhi no Yuuutsu (2009)",
            "chinese": "涼宮春日的憂鬱 2009",
            "english": "The Melancholy of Haruhi Suzumiya (2009)",
        },
        "season": "SPRING",
        "isAdult": False,
        "siteUrl": "https://anilist.co/anime/4382",
        "synonyms": [],
        "seasonYear": 2009,
        "synonyms_chinese": [],
    },
    21085: {
        "id": 21085,
        "type": "ANIME",
        "idMal": 30230,
        "title": {
            "native": "ダイヤのA～Second Season～",  # noqa: RUF001 - the real title
            "romaji": "Diamond no Ace: Second Season",
            "chinese": "鑽石王牌 第二季",
            "english": "Ace of the Diamond Second Season",
        },
        "season": "SPRING",
        "isAdult": False,
        "siteUrl": "https://anilist.co/anime/21085",
        "synonyms": ["Daiya no Ace 2"],
        "seasonYear": 2015,
        "synonyms_chinese": [],
    },
    854: {
        "id": 854,
        "type": "ANIME",
        "idMal": 854,
        "title": {
            "native": "Soul Link",
            "romaji": "Soul Link",
            "chinese": "Soul Link",
            "english": "Soul Link",
        },
        "season": "SPRING",
        "isAdult": False,
        "siteUrl": "https://anilist.co/anime/854",
        "synonyms": [],
        "seasonYear": 2006,
        "synonyms_chinese": [],
    },
    21237: {
        "id": 21237,
        "type": "ANIME",
        "idMal": 31044,
        "title": {
            "native": "かみさまみならい ヒミツのここたま",
            "romaji": "Kamisama Minarai: Himitsu no Cocotama",
            "chinese": "神之見習者秘密的心靈蛋",
            "english": "Kamisama Minarai: Himitsu no Cocotama",
        },
        "season": "FALL",
        "isAdult": False,
        "siteUrl": "https://anilist.co/anime/21237",
        "synonyms": [],
        "seasonYear": 2015,
        "synonyms_chinese": ["見習神仙秘密的心靈", "見習神仙精靈"],
    },
    18411: {
        "id": 18411,
        "type": "ANIME",
        "idMal": 18411,
        "title": {
            "native": "ぎんぎつね",
            "romaji": "Gingitsune",
            "chinese": "銀狐",
            "english": "Gingitsune: Messenger Fox of the Gods",
        },
        "season": "FALL",
        "isAdult": False,
        "siteUrl": "https://anilist.co/anime/18411",
        "synonyms": ["Silver Fox"],
        "seasonYear": 2013,
        "synonyms_chinese": [],
    },
    1482: {
        "id": 1482,
        "type": "ANIME",
        "idMal": 1482,
        "title": {
            "native": "ディー・グレイマン",
            "romaji": "D.Gray-man",
            "chinese": "驅魔少年",
            "english": "D.Gray-man",
        },
        "season": "FALL",
        "isAdult": False,
        "siteUrl": "https://anilist.co/anime/1482",
        "synonyms": ["D. Gray-man", "D. Grey-man"],
        "seasonYear": 2006,
        "synonyms_chinese": ["D·格雷少年"],
    },
    2929: {
        "id": 2929,
        "type": "ANIME",
        "idMal": 2929,
        "title": {
            "native": "MOONLIGHT MILE 2ndシーズン -Touch down-",
            "romaji": "MOONLIGHT MILE 2nd Season -Touch down-",
            "chinese": "Moonlight 2 Touch Down",
            "english": None,
        },
        "format": "TV",
        "genres": ["Adventure", "Drama", "Sci-Fi"],
        "season": "FALL",
        "source": "MANGA",
        "status": "FINISHED",
        "endDate": {"day": 13, "year": 2007, "month": 12},
        "isAdult": False,
        "siteUrl": "https://anilist.co/anime/2929",
        "studios": {
            "edges": [
                {
                    "node": {"id": 101, "name": "Studio Hibari", "siteUrl": "https://anilist.co/studio/101"},
                    "isMain": True,
                },
                {
                    "node": {"id": 170, "name": "Imagica", "siteUrl": "https://anilist.co/studio/170"},
                    "isMain": False,
                },
                {
                    "node": {
                        "id": 7019,
                        "name": "Amuse Soft Entertainment",
                        "siteUrl": "https://anilist.co/studio/7019",
                    },
                    "isMain": False,
                },
                {
                    "node": {"id": 33, "name": "WOWOW", "siteUrl": "https://anilist.co/studio/33"},
                    "isMain": False,
                },
                {
                    "node": {"id": 460, "name": "KLOCKWORX", "siteUrl": "https://anilist.co/studio/460"},
                    "isMain": False,
                },
            ]
        },
        "duration": 24,
        "episodes": 14,
        "synonyms": ["Moonlight Mile sezon 2 - Lądowanie"],
        "relations": {
            "edges": [
                {
                    "node": {"id": 1941, "title": {"native": "MOONLIGHT MILE 1stシーズン -Lift off-"}},
                    "relationType": "PREQUEL",
                },
                {"node": {"id": 30681, "title": {"native": "MOONLIGHT MILE"}}, "relationType": "ADAPTATION"},
            ]
        },
        "seasonInt": 74,
        "startDate": {"day": 13, "year": 2007, "month": 9},
        "popularity": 1162,
        "seasonYear": 2007,
        "countryOfOrigin": "JP",
        "synonyms_chinese": ["月光旅程 2", "月光之旅 2"],
    },
    102005: {
        "id": 102005,
        "type": "ANIME",
        "idMal": 37739,
        "title": {
            "native": "フューチャーカード 神バディファイト",
            "romaji": "Future Card Shin Buddyfight",
            "chinese": "未來卡片 神戰鬥夥伴",
            "english": "Future Card Buddyfight Ace",
        },
        "format": "TV",
        "genres": ["Action", "Sci-Fi"],
        "season": "SUMMER",
        "source": "OTHER",
        "status": "FINISHED",
        "endDate": {"day": 27, "year": 2019, "month": 4},
        "isAdult": False,
        "siteUrl": "https://anilist.co/anime/102005",
        "duration": 25,
        "episodes": 47,
        "synonyms": [],
        "seasonInt": 183,
        "startDate": {"day": 2, "year": 2018, "month": 6},
        "popularity": 1312,
        "seasonYear": 2018,
        "countryOfOrigin": "JP",
        "synonyms_chinese": [],
    },
    202955: {
        "id": 202955,
        "type": "ANIME",
        "idMal": 63019,
        "title": {
            "native": "プリズム輪舞曲",
            "romaji": "Prism Rondo",
            "chinese": "稜鏡戀曲",
            "english": "Love Through A Prism",
        },
        "format": "ONA",
        "genres": ["Drama", "Romance"],
        "season": "WINTER",
        "source": "ORIGINAL",
        "status": "FINISHED",
        "endDate": {"day": 15, "year": 2026, "month": 1},
        "isAdult": False,
        "siteUrl": "https://anilist.co/anime/202955",
        "duration": 24,
        "episodes": 20,
        "synonyms": [
            "ปริซึมแห่งรัก",
            "El amor a través de un prisma",
            "Prin prisma dragostei",
            "Pelo Prisma do Amor",
            "프리즘 윤무곡",
            "Il prisma dell'amore",
            "Έρωτας Μέσα από ένα Πρίσμα",
            "Le Prisme de l'amour",
            "稜鏡戀曲",
            "棱镜恋曲",
            "حبّ يمر عبر منشور زجاجي ",
            "Призма любви",
        ],
        "seasonInt": 261,
        "startDate": {"day": 15, "year": 2026, "month": 1},
        "popularity": 26515,
        "seasonYear": 2026,
        "countryOfOrigin": "JP",
        "synonyms_chinese": [],
    },
    8247: {
        "id": 8247,
        "type": "ANIME",
        "idMal": 8247,
        "title": {
            "native": "BLEACH 地獄篇",
            "romaji": "BLEACH: Jigoku-hen",
            "chinese": "劇場版 BLEACH 地獄篇",
            "english": "Bleach the Movie: Hell Verse",
        },
        "format": "MOVIE",
        "genres": ["Action", "Supernatural"],
        "season": "FALL",
        "source": "ORIGINAL",
        "status": "FINISHED",
        "endDate": {"day": 4, "year": 2010, "month": 12},
        "isAdult": False,
        "siteUrl": "https://anilist.co/anime/8247",
        "duration": 93,
        "episodes": 1,
        "synonyms": ["Bleach Movie 4", "Bleach: The Hell Chapter", "بليتش: قصيدة الجحيم"],
        "seasonInt": 104,
        "startDate": {"day": 4, "year": 2010, "month": 12},
        "popularity": 41553,
        "seasonYear": 2010,
        "countryOfOrigin": "JP",
        "synonyms_chinese": ["劇場版 BLEACH 死神", "劇場版 BLEACH 境·界", "劇場版 BLEACH 漂靈"],
    },
    20770: {
        "id": 20770,
        "type": "ANIME",
        "idMal": 25013,
        "title": {
            "native": "暁のヨナ",
            "romaji": "Akatsuki no Yona",
            "chinese": "晨曦公主",
            "english": "Yona of the Dawn",
        },
        "format": "TV",
        "genres": ["Action", "Adventure", "Comedy", "Drama", "Fantasy", "Romance"],
        "season": "FALL",
        "source": "MANGA",
        "status": "FINISHED",
        "endDate": {"day": 24, "year": 2015, "month": 3},
        "isAdult": False,
        "siteUrl": "https://anilist.co/anime/20770",
        "duration": 24,
        "episodes": 24,
        "synonyms": ["AkaYona", "Йона на заре", "Ёна на заре", "Рассвет Йоны", "Yona, princesse de l'aube"],
        "seasonInt": 144,
        "startDate": {"day": 7, "year": 2014, "month": 10},
        "popularity": 204921,
        "seasonYear": 2014,
        "countryOfOrigin": "JP",
        "synonyms_chinese": ["拂曉的尤娜"],
    },
    158791: {
        "id": 158791,
        "type": "ANIME",
        "idMal": 53848,
        "title": {
            "native": "め組の大吾 救国のオレンジ",
            "romaji": "Megumi no Daigo: Kyuukoku no Orange",
            "chinese": "烈焰先鋒 救國的橘衣消防員",
            "english": "Firefighter Daigo: Rescuer in Orange",
        },
        "format": "TV",
        "genres": ["Action", "Drama", "Thriller"],
        "season": "FALL",
        "source": "MANGA",
        "status": "FINISHED",
        "endDate": {"day": 23, "year": 2024, "month": 3},
        "isAdult": False,
        "siteUrl": "https://anilist.co/anime/158791",
        "duration": 24,
        "episodes": 23,
        "synonyms": [
            "Firefighter! Daigo of Fire Company M: The Orange of National Salvation",
            "烈焰先鋒 救國的橘衣消防員",
        ],
        "seasonInt": 234,
        "startDate": {"day": 30, "year": 2023, "month": 9},
        "popularity": 11460,
        "seasonYear": 2023,
        "countryOfOrigin": "JP",
        "synonyms_chinese": [],
    },
    8041: {
        "id": 8041,
        "type": "ANIME",
        "idMal": 8041,
        "title": {
            "native": "仙人部落",
            "romaji": "Sennin Buraku",
            "chinese": "仙人部落",
            "english": "Hermit Village",
        },
        "format": "TV_SHORT",
        "genres": ["Comedy", "Ecchi"],
        "season": "FALL",
        "source": "MANGA",
        "status": "FINISHED",
        "endDate": {"day": 23, "year": 1964, "month": 2},
        "isAdult": False,
        "siteUrl": "https://anilist.co/anime/8041",
        "duration": 15,
        "episodes": 23,
        "synonyms": [],
        "seasonInt": 634,
        "startDate": {"day": 4, "year": 1963, "month": 9},
        "popularity": 447,
        "seasonYear": 1963,
        "countryOfOrigin": "JP",
        "synonyms_chinese": [],
    },
    187901: {
        "id": 187901,
        "type": "ANIME",
        "idMal": 61196,
        "title": {
            "native": "デッドアカウント",
            "romaji": "Dead Account",
            "chinese": "Dead Account",
            "english": "Dead Account",
        },
        "format": "TV",
        "genres": ["Action", "Supernatural"],
        "season": "WINTER",
        "source": "MANGA",
        "status": "FINISHED",
        "endDate": {"day": 28, "year": 2026, "month": 3},
        "isAdult": False,
        "siteUrl": "https://anilist.co/anime/187901",
        "duration": 24,
        "episodes": 12,
        "synonyms": ["デドアカ", "เดดแอ็กเคานต์ พิฆาตบัญชีมรณะ"],
        "seasonInt": 261,
        "startDate": {"day": 10, "year": 2026, "month": 1},
        "popularity": 20295,
        "seasonYear": 2026,
        "countryOfOrigin": "JP",
        "synonyms_chinese": ["死亡帳號"],
    },
    122441: {
        "id": 122441,
        "type": "ANIME",
        "idMal": 42627,
        "title": {
            "native": "ピーチボーイリバーサイド",
            "romaji": "Peach Boy Riverside",
            "chinese": "Peach Boy Riverside",
            "english": "Peach Boy Riverside",
        },
        "format": "TV",
        "genres": ["Adventure", "Fantasy"],
        "season": "SUMMER",
        "source": "MANGA",
        "status": "FINISHED",
        "endDate": {"day": 16, "year": 2021, "month": 9},
        "isAdult": False,
        "siteUrl": "https://anilist.co/anime/122441",
        "duration": 24,
        "episodes": 12,
        "synonyms": ["พีชบอยริเวอร์ไซด์"],
        "seasonInt": 213,
        "startDate": {"day": 1, "year": 2021, "month": 7},
        "popularity": 57804,
        "seasonYear": 2021,
        "countryOfOrigin": "JP",
        "synonyms_chinese": ["桃子男孩渡海而來"],
    },
    99939: {
        "id": 99939,
        "idMal": 34658,
        "title": {"native": "ネコぱらOVA", "romaji": "Nekopara OVA", "english": None},
        "synonyms": ["Neko Para OVA"],
        "isAdult": False,
    },
    102882: {
        "id": 102882,
        "idMal": 37956,
        "title": {
            "native": "3D彼女 リアルガール 2",
            "romaji": "3D Kanojo: Real Girl 2",
            "english": "Real Girl 2",
        },
        "synonyms": [],
        "isAdult": False,
    },
    20872: {
        "id": 20872,
        "type": "ANIME",
        "idMal": 27775,
        "title": {
            "native": "プラスティック・メモリーズ",
            "romaji": "Plastic Memories",
            "english": "Plastic Memories",
        },
        "season": "SPRING",
        "isAdult": False,
        "siteUrl": "https://anilist.co/anime/20872",
        "synonyms": [],
        "seasonYear": 2015,
    },
}
"""AniList records by ID, as the server's ``anilist`` table stores them (``anilistInfo``)."""
