"""trace.moe describes every upload at 320x320 at most, so anisearch sends no more than that."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import pytest
from PIL import Image

from anisearch._image import fit, prepare
from anisearch_providers.tracemoe import TraceMoe
from anisearch_providers.tracemoe.descriptor import SEARCH_BOX, search_descriptor

if TYPE_CHECKING:
    from pathlib import Path

SAMPLES = ("tinted-good.jpg", "flipped-good.webp", "border-bad.jpg")


def server_descriptor(upload: bytes, *, cut_borders: bool) -> tuple[int, ...]:
    """What the server computes for an upload (its preparation and colour layout, ported)."""
    with Image.open(io.BytesIO(upload)) as image:
        return search_descriptor(image, cut_borders=cut_borders)


def test_the_upload_box_is_the_one_the_server_describes() -> None:
    limits = TraceMoe().limits
    assert (limits.max_width, limits.max_height) == SEARCH_BOX


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("cut_borders", [False, True])
def test_the_smaller_upload_gets_the_same_descriptor_as_a_640x360_one(
    samples: Path, name: str, cut_borders: bool
) -> None:
    data = (samples / name).read_bytes()
    limits = TraceMoe().limits
    large = prepare(data, max_width=640, max_height=360)
    small = fit(prepare(data, max_width=limits.max_width, max_height=limits.max_height), limits)
    assert max(small.width, small.height) == 320
    assert len(small.data) < len(large.data)
    assert server_descriptor(small.data, cut_borders=cut_borders) == server_descriptor(
        large.data, cut_borders=cut_borders
    )


@pytest.mark.parametrize("name", SAMPLES)
def test_the_cache_key_of_the_upload_is_the_descriptor_of_the_original(samples: Path, name: str) -> None:
    provider = TraceMoe()
    limits = provider.limits
    prepared = prepare(samples / name, max_width=limits.max_width, max_height=limits.max_height)
    with Image.open(samples / name) as original:  # what the server computes for the file itself
        expected = search_descriptor(original)
    assert provider.cache_key(prepared) == "cld:" + ",".join(map(str, expected))
