"""The MPEG-7 colour layout descriptor, computed exactly as trace.moe computes it.

trace.moe indexes every frame by a 33-number colour layout descriptor (21 luma + 6 + 6 chroma DCT
coefficients of an 8x8 grid of block colours) and searches with Milvus's L2 metric. Computing the same
vector locally gives a perceptual cache key and lets a search be sent as ``{"vector": [...]}``.

This is a port of the current ``src/lib/color-layout.ts`` of soruly/trace.moe-api (mean RGB per cell,
then YCbCr, a float32 DCT pass, MPEG-7 quantisation and zig-zag order), with its floor/shift integer
arithmetic, so the numbers are the server's, not an approximation of them; and of
``src/lib/prepare-search-image.ts`` (first frame, fit in 320x320, alpha on black, optional border cut),
which Pillow reproduces closely but not bit for bit (libvips resamples slightly differently).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from PIL import Image

from anisearch.provider import cut_borders as trim_borders
from anisearch.provider import fit_inside

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np
    from numpy.typing import NDArray

__all__ = [
    "DESCRIPTOR_LENGTH",
    "SEARCH_BOX",
    "color_layout",
    "descriptor_distance",
    "prepare_search_image",
    "search_descriptor",
    "similarity",
]

DESCRIPTOR_LENGTH = 33
"""Numbers in a descriptor: 21 Y, then 6 Cb, then 6 Cr coefficients (DC terms 0..63, AC terms 0..31)."""

SEARCH_BOX = (320, 320)
"""The server scales every search image to fit inside this box (pixels) before describing it."""

_Y_COEFFICIENTS = 21
_C_COEFFICIENTS = 6

# cos((2k + 1) * i * pi / 16) * c(i), with the 7-digit constants trace.moe uses (not recomputed, so the
# rounding matches the server's bit for bit).
_COSINE = (
    (0.3535534, 0.3535534, 0.3535534, 0.3535534, 0.3535534, 0.3535534, 0.3535534, 0.3535534),
    (0.4903926, 0.4157348, 0.2777851, 0.09754516, -0.09754516, -0.2777851, -0.4157348, -0.4903926),
    (0.4619398, 0.1913417, -0.1913417, -0.4619398, -0.4619398, -0.1913417, 0.1913417, 0.4619398),
    (0.4157348, -0.09754516, -0.4903926, -0.2777851, 0.2777851, 0.4903926, 0.09754516, -0.4157348),
    (0.3535534, -0.3535534, -0.3535534, 0.3535534, 0.3535534, -0.3535534, -0.3535534, 0.3535534),
    (0.2777851, -0.4903926, 0.09754516, 0.4157348, -0.4157348, -0.09754516, 0.4903926, -0.2777851),
    (0.1913417, -0.4619398, 0.4619398, -0.1913417, -0.1913417, 0.4619398, -0.4619398, 0.1913417),
    (0.09754516, -0.2777851, 0.4157348, -0.4903926, 0.4903926, -0.4157348, 0.2777851, -0.09754516),
)  # fmt: skip

_ZIGZAG = (
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52,
    45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
)  # fmt: skip

_FLOAT32_EXACT = 1 << 24  # integers up to this are exact in a float32
_COSINE_ROWS: tuple[tuple[float, ...], ...] = tuple(zip(*_COSINE, strict=True))  # [k][j] = _COSINE[j][k]


def _band_starts(bounds: Sequence[int]) -> tuple[list[int], list[int]]:
    """The grid cells that have pixels along one axis, and where each starts (for ``reduceat``)."""
    used = [i for i in range(8) if bounds[i + 1] > bounds[i]]
    return used, [bounds[i] for i in used]


def _cell_sums(pixels: NDArray[np.uint8], xs: Sequence[int], ys: Sequence[int]) -> NDArray[np.float64]:
    """Per-band sums of the 8x8 grid cells, shape (8, 8, 3), as upstream's float32 accumulators hold them.

    Upstream adds a cell's row segment in double precision and stores the running sum into a
    ``Float32Array`` after each row. While a sum stays within 2**24 that is exact; above (cells of more
    than ~65 000 pixels, so images far larger than the 320x320 the server describes) the per-row
    rounding is reproduced, row by row. Cells without pixels (images narrower than 8 pixels) stay 0.
    """
    import numpy as np  # loaded on first use: importing anisearch stays quick

    used_x, start_x = _band_starts(xs)
    used_y, start_y = _band_starts(ys)
    rows = np.add.reduceat(pixels, start_x, axis=1, dtype=np.int64)  # (height, used columns, 3)
    exact = np.add.reduceat(rows, start_y, axis=0)  # (used rows, used columns, 3)
    if int(exact.max()) > _FLOAT32_EXACT:
        exact = np.empty_like(exact, dtype=np.float64)
        for band, by in enumerate(used_y):
            running = np.zeros(rows.shape[1:], dtype=np.float32)
            for y in range(ys[by], ys[by + 1]):
                running = (running.astype(np.float64) + rows[y]).astype(np.float32)
            exact[band] = running
    sums = np.zeros((8, 8, 3), dtype=np.float64)
    sums[np.ix_(used_y, used_x)] = exact
    return sums


def _block_averages(image: Image.Image) -> NDArray[np.int64]:
    """Y, Cb and Cr of each cell of upstream's 8x8 grid, shape (3, 8, 8), from the cell's mean RGB."""
    import numpy as np  # loaded on first use: importing anisearch stays quick

    width, height = image.size
    xs = [-(-i * width // 8) for i in range(9)]  # ceil(i * width / 8)
    ys = [-(-i * height // 8) for i in range(9)]
    sums = _cell_sums(np.asarray(image, dtype=np.uint8), xs, ys)
    counts = np.outer(np.diff(ys), np.diff(xs)).astype(np.float64)
    filled = counts > 0
    inverse = np.divide(1.0, counts * 256, out=np.zeros_like(counts), where=filled)
    red, green, blue = (sums[:, :, band] * inverse for band in range(3))
    luma = 0.299 * red + 0.587 * green + 0.114 * blue
    shapes = np.stack(
        [
            np.floor(219 * luma + 16.5),
            np.floor(126.336 * (blue - luma) + 128.5),
            np.floor(159.712 * (red - luma) + 128.5),
        ]
    )
    return np.where(filled, shapes, 0.0).astype(np.int64)  # an empty cell is 0, as upstream


def _fdct(shapes: NDArray[np.int64]) -> NDArray[np.int64]:
    """The 8x8 forward DCT of each shape, the first pass stored as float32 like upstream's ``Float32Array``.

    Each sum runs over k in upstream's order, one multiply and one add at a time (no matrix product,
    whose summation order and fused multiply-adds would change the last bits).
    """
    import numpy as np  # loaded on first use: importing anisearch stays quick

    values = shapes.astype(np.float64)  # (3, 8 rows i, 8 k)
    rows = np.zeros((3, 8, 8), dtype=np.float64)  # [s][i][j]
    for k in range(8):
        rows += np.asarray(_COSINE_ROWS[k]) * values[:, :, k : k + 1]
    first = rows.astype(np.float32).astype(np.float64)
    out = np.zeros((3, 8, 8), dtype=np.float64)  # [s][i][j]
    for k in range(8):
        out += np.asarray(_COSINE_ROWS[k])[:, None] * first[:, k : k + 1, :]
    return np.floor(out + 0.499999).astype(np.int64)


def _quant_ydc(i: int) -> int:
    if i > 192:  # noqa: PLR2004 - the MPEG-7 quantisation table
        return 112 + ((i - 192) >> 2)
    if i > 160:  # noqa: PLR2004
        return 96 + ((i - 160) >> 1)
    if i > 96:  # noqa: PLR2004
        return 32 + (i - 96)
    if i > 64:  # noqa: PLR2004
        return 16 + ((i - 64) >> 1)
    return i >> 2


def _quant_cdc(i: int) -> int:  # noqa: PLR0911 - one branch per quantisation step
    if i > 191:  # noqa: PLR2004 - the MPEG-7 quantisation table
        return 63
    if i > 160:  # noqa: PLR2004
        return 56 + ((i - 160) >> 2)
    if i > 144:  # noqa: PLR2004
        return 48 + ((i - 144) >> 1)
    if i > 112:  # noqa: PLR2004
        return 16 + (i - 112)
    if i > 96:  # noqa: PLR2004
        return 8 + ((i - 96) >> 1)
    if i > 64:  # noqa: PLR2004
        return (i - 64) >> 2
    return 0


def _quant_ac(i: int) -> int:
    i = min(max(-256, i), 255)
    magnitude = abs(i)
    if magnitude > 127:  # noqa: PLR2004 - the MPEG-7 quantisation table
        j = 64 + (magnitude >> 2)
    elif magnitude > 63:  # noqa: PLR2004
        j = 32 + (magnitude >> 1)
    else:
        j = magnitude
    return (-j if i < 0 else j) + 128


def color_layout(image: Image.Image) -> tuple[int, ...]:
    """Describe an already prepared image exactly as trace.moe's ``color-layout.ts`` does.

    The image is used as it is (converted to RGB if needed, no resizing): pass the output of
    :func:`prepare_search_image`, or use :func:`search_descriptor`, to get the vector the server would
    compute for an upload.

    Args:
        image: Any Pillow image; non-RGB modes are converted to RGB first.

    Returns:
        33 ints: 21 luma coefficients (DC 0..63, AC 0..31), 6 Cb and 6 Cr coefficients (DC 0..63,
        AC 0..31), in zig-zag order. This is the ``vector`` member of a trace.moe search.

    Raises:
        ValueError: The image has no pixels.
    """
    if image.width < 1 or image.height < 1:
        raise ValueError("cannot describe an image without pixels")
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    luma, blue, red = (shape.ravel().tolist() for shape in _fdct(_block_averages(rgb)))
    y_coeff = [_quant_ydc(luma[0] >> 3) >> 1]
    cb_coeff = [_quant_cdc(blue[0] >> 3)]
    cr_coeff = [_quant_cdc(red[0] >> 3)]
    y_coeff.extend(_quant_ac(luma[_ZIGZAG[i]] >> 1) >> 3 for i in range(1, _Y_COEFFICIENTS))
    for i in range(1, _C_COEFFICIENTS):
        cb_coeff.append(_quant_ac(blue[_ZIGZAG[i]]) >> 3)
        cr_coeff.append(_quant_ac(red[_ZIGZAG[i]]) >> 3)
    return (*y_coeff, *cb_coeff, *cr_coeff)


def _first_frame_rgb(image: Image.Image) -> Image.Image:
    """Frame 0 as RGB, with any transparency flattened on black (sharp's ``flatten`` to ``#000000``)."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (0, 0, 0))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image if image.mode == "RGB" else image.convert("RGB")  # resize() makes the new image


def prepare_search_image(image: Image.Image, *, cut_borders: bool = False) -> Image.Image:
    """Prepare an image the way trace.moe prepares an upload before describing it.

    First frame (GIF, APNG, WebP animations), alpha flattened on black, scaled (up or down, Lanczos)
    to fit inside 320x320 keeping the aspect ratio, then optionally trimmed of black borders.

    Args:
        image: Any Pillow image (it is not modified, except that multi-frame images are sought to frame 0).
        cut_borders: Mirror the server's ``cutBorders`` query flag.

    Returns:
        A new RGB image at most 320x320 pixels.

    Raises:
        ValueError: The image has no pixels.
    """
    if image.width < 1 or image.height < 1:
        raise ValueError("cannot prepare an image without pixels")
    flat = _first_frame_rgb(image)
    resized = flat.resize(fit_inside(flat.size, SEARCH_BOX, enlarge=True), Image.Resampling.LANCZOS)
    if cut_borders:
        resized, _ = trim_borders(resized)
    return resized


def search_descriptor(image: Image.Image, *, cut_borders: bool = False) -> tuple[int, ...]:
    """What trace.moe computes for an upload: :func:`prepare_search_image` then :func:`color_layout`.

    Args:
        image: Any Pillow image, at any size.
        cut_borders: Mirror the server's ``cutBorders`` query flag.

    Returns:
        The 33-number colour layout descriptor (see :func:`color_layout`).

    Raises:
        ValueError: The image has no pixels.
    """
    return color_layout(prepare_search_image(image, cut_borders=cut_borders))


def _checked(vector: Sequence[float], name: str) -> Sequence[float]:
    if len(vector) != DESCRIPTOR_LENGTH:
        raise ValueError(
            f"{name} has {len(vector)} numbers; a colour layout descriptor has {DESCRIPTOR_LENGTH}"
        )
    return vector


def descriptor_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """The Euclidean (L2) distance between two descriptors.

    Args:
        a: A 33-number descriptor.
        b: Another 33-number descriptor.

    Returns:
        The distance, >= 0 (0 for identical descriptors).

    Raises:
        ValueError: Either sequence does not hold exactly 33 numbers.
    """
    return math.dist(_checked(a, "a"), _checked(b, "b"))


def similarity(a: Sequence[float], b: Sequence[float]) -> float:
    """Score two descriptors the way trace.moe scores a match, 0..1.

    trace.moe's vector database uses Milvus's ``L2`` metric, whose score is the *squared* Euclidean
    distance; the server reports ``clamp((255 - score) / 255, 0, 1)`` as ``similarity``. So identical
    descriptors score 1.0, and a distance of sqrt(25.5) (about 5) already drops to 0.9, the usual
    threshold below which a match is likely wrong.

    Args:
        a: A 33-number descriptor.
        b: Another 33-number descriptor.

    Returns:
        The similarity in [0, 1], as in the ``similarity`` field of a trace.moe result.

    Raises:
        ValueError: Either sequence does not hold exactly 33 numbers.
    """
    score = descriptor_distance(a, b) ** 2
    return min(max(0.0, (255 - score) / 255), 1.0)
