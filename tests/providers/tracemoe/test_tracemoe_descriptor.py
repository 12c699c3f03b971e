"""The colour layout descriptor must equal trace.moe's, or vector searches and cache keys go wrong."""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import pytest
from PIL import Image

from anisearch_providers.tracemoe.descriptor import (
    color_layout,
    descriptor_distance,
    prepare_search_image,
    search_descriptor,
    similarity,
)

if TYPE_CHECKING:
    from pathlib import Path

# The three port checks of trace.moe-api's own color-layout tests (320x180 RGB buffers).
GRADIENT = (30, 15, 16, 16, 16, 16, 16, 15, 16, 15, 16, 16, 16, 16, 15, 15, 15, 16, 15, 16, 15,
            32, 16, 16, 16, 16, 16, 32, 16, 16, 16, 16, 16)  # fmt: skip
BLACK = (2, *([16] * 20), 32, 16, 16, 16, 16, 16, 32, 16, 16, 16, 16, 16)
WHITE = (61, *([16] * 20), 32, *([16] * 5), 32, *([16] * 5))


def raw_image(data: bytes, size: tuple[int, int] = (320, 180)) -> Image.Image:
    return Image.frombytes("RGB", size, data)


def test_port_check_byte_ramp() -> None:
    data = bytes(i % 256 for i in range(320 * 180 * 3))
    assert color_layout(raw_image(data)) == GRADIENT


def test_port_check_black_and_white() -> None:
    assert color_layout(Image.new("RGB", (320, 180), (0, 0, 0))) == BLACK
    assert color_layout(Image.new("RGB", (320, 180), (255, 255, 255))) == WHITE


# trace.moe-api's color-layout.ts (HEAD b9106a5) run by Node on the same byte ramp at other sizes: cells
# narrower than a pixel, a 1-pixel-high grid, and cells so large that its float32 running sums round.
RAMP_VECTORS = {
    (5, 3): (1, 16, 16, 15, 16, 15, 16, 15, 15, 17, 13, 16, 16, 16, 16, 16, 16, 15, 15, 15, 16,
             0, 24, 27, 18, 19, 14, 0, 24, 26, 18, 19, 14),
    (2, 200): (3, 24, 15, 14, 15, 16, 27, 16, 15, 15, 15, 15, 15, 15, 27, 13, 15, 14, 15, 15, 15,
               0, 28, 16, 16, 16, 16, 0, 28, 16, 16, 16, 15),
    (9999, 7): (22, 15, 25, 6, 16, 16, 16, 15, 16, 24, 8, 15, 15, 16, 16, 15, 16, 15, 16, 16, 22,
                16, 16, 29, 2, 16, 16, 16, 16, 29, 2, 16, 16),
    (4000, 3000): (30, *([16] * 20), 32, *([16] * 5), 32, *([16] * 5)),
}  # fmt: skip


@pytest.mark.parametrize("size", sorted(RAMP_VECTORS))
def test_byte_ramps_of_every_shape_match_the_server_code(size: tuple[int, int]) -> None:
    width, height = size
    data = bytes(i % 256 for i in range(256)) * (width * height * 3 // 256 + 1)
    assert color_layout(raw_image(data[: width * height * 3], size)) == RAMP_VECTORS[size]


def test_descriptor_is_33_small_numbers_even_for_tiny_images() -> None:
    vector = color_layout(Image.new("RGB", (3, 2), (200, 30, 90)))
    assert len(vector) == 33
    assert all(0 <= value <= 63 for value in vector)


def test_non_rgb_modes_are_described_as_rgb() -> None:
    grey = Image.new("L", (64, 36), 255)
    assert color_layout(grey) == WHITE


def test_an_empty_image_is_refused() -> None:
    with pytest.raises(ValueError, match="without pixels"):
        color_layout(Image.new("RGB", (0, 0)))
    with pytest.raises(ValueError, match="without pixels"):
        search_descriptor(Image.new("RGB", (0, 5)))


def test_distance_is_euclidean_and_similarity_uses_the_squared_milvus_score() -> None:
    a = BLACK
    b = (5, *BLACK[1:-1], BLACK[-1] + 4)  # changes of 3 and 4: distance 5, Milvus L2 score 25
    assert descriptor_distance(a, b) == pytest.approx(5.0)
    assert similarity(a, a) == 1.0
    assert similarity(a, b) == pytest.approx((255 - 25) / 255)


def test_similarity_is_clamped_at_zero() -> None:
    assert similarity(BLACK, WHITE) == 0.0


def test_vectors_of_the_wrong_length_are_refused() -> None:
    with pytest.raises(ValueError, match="32 numbers"):
        similarity(BLACK[:-1], BLACK)
    with pytest.raises(ValueError, match="34 numbers"):
        descriptor_distance(BLACK, (*BLACK, 1))


@pytest.mark.parametrize(
    ("size", "expected"),
    [((640, 360), (320, 180)), ((640, 492), (320, 246)), ((100, 50), (320, 160)), ((90, 1000), (29, 320))],
)
def test_preparation_fits_the_image_inside_320_by_320(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert prepare_search_image(Image.new("RGB", size, (10, 20, 30))).size == expected


def test_transparency_is_flattened_on_black() -> None:
    transparent_white = Image.new("RGBA", (320, 180), (255, 255, 255, 0))
    assert search_descriptor(transparent_white) == BLACK


def test_the_first_frame_of_an_animation_is_used() -> None:
    frames = [Image.new("RGB", (64, 36), colour) for colour in ((0, 0, 0), (255, 255, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    animation = Image.open(io.BytesIO(buffer.getvalue()))
    animation.seek(1)
    assert search_descriptor(animation) == BLACK


def scene(size: tuple[int, int]) -> Image.Image:
    """A bright picture with coarse structure, so that cropping visibly changes its descriptor."""
    width, height = size
    data = bytes(
        channel
        for y in range(height)
        for x in range(width)
        for channel in (40 + 200 * x // width, 60 + 180 * y // height, 200 - 150 * x // width)
    )
    return raw_image(data, size)


def letterboxed(content: Image.Image, canvas: tuple[int, int]) -> Image.Image:
    framed = Image.new("RGB", canvas, (0, 0, 0))
    framed.paste(content, ((canvas[0] - content.width) // 2, (canvas[1] - content.height) // 2))
    return framed


def test_cut_borders_trims_a_black_letterbox_around_a_16_9_picture() -> None:
    content = scene((320, 180))
    framed = letterboxed(content, (320, 320))
    assert similarity(search_descriptor(framed), search_descriptor(content)) < 0.5
    assert similarity(search_descriptor(framed, cut_borders=True), search_descriptor(content)) >= 0.95


def test_cut_borders_keeps_boxes_of_other_shapes() -> None:
    framed = letterboxed(scene((200, 200)), (320, 320))  # a square picture: not 16:9, 4:3 or 21:9
    assert search_descriptor(framed, cut_borders=True) == search_descriptor(framed)


def test_cut_borders_pads_a_21_9_picture_back_to_16_9() -> None:
    framed = letterboxed(scene((320, 137)), (320, 320))
    prepared = prepare_search_image(framed, cut_borders=True)
    assert prepared.size == (320, 180)
    assert prepared.getpixel((160, 2)) == (0, 0, 0)  # the 21:9 picture sits between black bars


def test_cut_borders_on_an_all_black_image_changes_nothing() -> None:
    assert search_descriptor(Image.new("RGB", (320, 180)), cut_borders=True) == BLACK


def reencoded(
    image: Image.Image, fmt: str, size: tuple[int, int] | None = None, **params: int
) -> Image.Image:
    if size is not None:
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return Image.open(io.BytesIO(buffer.getvalue()))


def test_the_tinted_sample_keeps_its_descriptor_through_reencoding_and_upscaling(samples: Path) -> None:
    with Image.open(samples / "tinted-good.jpg") as original:
        reference = search_descriptor(original)
        upscaled = search_descriptor(reencoded(original, "PNG", (1920, 1080), compress_level=1))
        jpeg = search_descriptor(reencoded(original, "JPEG", quality=70))
    assert similarity(reference, upscaled) >= 0.95
    assert similarity(reference, jpeg) >= 0.95
    assert math.isclose(descriptor_distance(reference, reference), 0.0)


def test_different_scenes_are_far_apart(samples: Path) -> None:
    with (
        Image.open(samples / "tinted-good.jpg") as tinted,
        Image.open(samples / "flipped-good.webp") as flipped,
    ):
        assert similarity(search_descriptor(tinted), search_descriptor(flipped)) < 0.5
