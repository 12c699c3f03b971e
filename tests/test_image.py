"""prepare() and fit(): any input becomes a small JPEG with its digest and descriptor, or a clear error."""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import random
import struct
import sys
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import av
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, ImageDraw, ImageFile
from tests.properties import examples

from anisearch._borders import BorderCut, cut_borders, find_borders
from anisearch._exceptions import ConfigurationError, ImageTooLargeError, InvalidImageError
from anisearch._image import (
    MAX_IMAGE_BYTES,
    PreparedImage,
    _rotate_for_display,
    fit,
    jpeg_scans,
    prepare,
    prepare_boxes,
    prepare_quick,
)
from anisearch._provider import UploadLimits
from anisearch_providers.tracemoe.descriptor import descriptor_distance, search_descriptor

if TYPE_CHECKING:
    from pathlib import Path

TINTED_SHA256 = "787e9a16a175d182c5dffb4b8e6ac25cd2c47f5b1625aab965c4836f7d4974c5"
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def described(prepared: PreparedImage) -> tuple[int, ...]:
    """trace.moe's colour layout descriptor of the upload (what its provider keys the cache on)."""
    return search_descriptor(decoded(prepared))


def decoded(prepared: PreparedImage) -> Image.Image:
    with Image.open(io.BytesIO(prepared.data)) as image:
        assert image.format == "JPEG"
        return image.convert("RGB")


def close_to(pixel: object, expected: tuple[int, int, int], tolerance: int = 12) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(int(a) - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data needed to read the size)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0"))
        + png_chunk(b"IEND", b"")
    )


def grey_png(width: int, height: int) -> bytes:
    """A whole, decodable mid-grey PNG of width x height (a few hundred KB even at 64 MP)."""
    rows = zlib.compressobj(1)
    pixels = b"".join(rows.compress(b"\0" + b"\x80" * width) for _ in range(height)) + rows.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b"")
    )


def video(
    fmt: str,
    codec: str,
    colours: list[tuple[int, int, int]],
    size: tuple[int, int] = (64, 48),
    options: dict[str, str] | None = None,
) -> bytes:
    """A tiny video whose frames are solid colours, in order; ``options``: the muxer's."""
    out = io.BytesIO()
    with av.open(out, "w", format=fmt, options=options or {}) as container:
        stream = container.add_stream(codec, rate=25)  # MPEG-1/2 allow only standard rates
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for colour in colours:
            frame = av.VideoFrame.from_image(Image.new("RGB", size, colour))  # type: ignore[no-untyped-call]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


@pytest.fixture(scope="module")
def tinted(samples: Path) -> PreparedImage:
    return prepare(samples / "tinted-good.jpg")


# ---------------------------------------------------------------- the samples


def test_the_sample_screenshot_is_reencoded_with_the_digest_of_its_bytes(
    samples: Path, tinted: PreparedImage
) -> None:
    assert tinted.mime_type == "image/jpeg"
    assert (tinted.width, tinted.height) == (640, 360)
    assert tinted.digest == TINTED_SHA256
    assert tinted.source_format == "jpeg"
    assert tinted.source_bytes == (samples / "tinted-good.jpg").stat().st_size
    assert decoded(tinted).size == (640, 360)
    with Image.open(samples / "tinted-good.jpg") as image:  # already 640x360: re-encoded, looks the same
        assert descriptor_distance(described(tinted), search_descriptor(image)) <= 1.0


def test_every_kind_of_source_gives_the_same_answer(samples: Path, tinted: PreparedImage) -> None:
    path = samples / "tinted-good.jpg"
    raw = path.read_bytes()
    with path.open("rb") as file:
        from_file = prepare(file)
    for prepared in (
        prepare(str(path)),
        prepare(raw),
        prepare(bytearray(raw)),
        prepare(memoryview(raw)),
        prepare(io.BytesIO(raw)),
        from_file,
    ):
        assert prepared == tinted


def test_a_pil_image_gives_the_same_descriptor_and_a_digest_of_its_pixels(
    samples: Path, tinted: PreparedImage
) -> None:
    with Image.open(samples / "tinted-good.jpg") as image:
        prepared = prepare(image)
        again = prepare(image.copy())
        grey = prepare(image.convert("L"))
    assert described(prepared) == described(tinted)
    assert prepared.source_format == "jpeg"
    assert prepared.digest == again.digest != tinted.digest
    assert grey.digest != prepared.digest
    assert prepared.source_bytes == 640 * 360 * 3


def test_a_1080p_png_upscale_gives_the_same_answer_and_uploads_at_most_100_kb(
    samples: Path, tmp_path: Path, tinted: PreparedImage
) -> None:
    big = tmp_path / "upscaled.png"
    with Image.open(samples / "tinted-good.jpg") as image:
        image.resize((1920, 1080), Image.Resampling.LANCZOS).save(big)
    prepared = prepare(big)
    assert prepared.source_format == "png"
    assert prepared.source_bytes == big.stat().st_size > 500_000
    assert (prepared.width, prepared.height) == (640, 360)
    assert len(prepared.data) <= 100_000
    assert descriptor_distance(described(prepared), described(tinted)) <= 1.0


def test_the_webp_sample_is_uploaded_as_jpeg(samples: Path) -> None:
    prepared = prepare(samples / "flipped-good.webp")
    assert prepared.source_format == "webp"
    assert prepared.mime_type == "image/jpeg"
    assert (prepared.width, prepared.height) == (640, 360)
    assert decoded(prepared).size == (640, 360)


def test_the_content_is_sniffed_not_taken_from_the_extension(samples: Path, tmp_path: Path) -> None:
    misnamed = tmp_path / "screenshot.png"
    misnamed.write_bytes((samples / "flipped-good.webp").read_bytes())
    assert prepare(misnamed).source_format == "webp"


# ---------------------------------------------------------------- size


@pytest.mark.parametrize(
    ("size", "box", "expected"),
    [
        ((100, 50), (640, 360), (100, 50)),  # never upscaled
        ((4000, 1000), (640, 360), (640, 160)),
        ((1000, 4000), (640, 360), (90, 360)),
        ((1920, 1080), (320, 320), (320, 180)),
    ],
    ids=["small", "wide", "tall", "custom-box"],
)
def test_the_picture_is_scaled_down_to_fit_keeping_its_aspect(
    size: tuple[int, int], box: tuple[int, int], expected: tuple[int, int]
) -> None:
    prepared = prepare(Image.new("RGB", size, GREEN), max_width=box[0], max_height=box[1])
    assert (prepared.width, prepared.height) == expected
    assert decoded(prepared).size == expected


def test_a_large_jpeg_is_scaled_down(samples: Path) -> None:
    with Image.open(samples / "tinted-good.jpg") as image:
        photo = encode(image.resize((4000, 2250)), "JPEG", quality=95)
    prepared = prepare(photo)
    assert (prepared.width, prepared.height) == (640, 360)
    assert prepared.digest == hashlib.sha256(photo).hexdigest()


@functools.cache
def phone_photo() -> bytes:
    """A 108 MP phone photo (12000x9000 JPEG), flat grey so that it is only 420 KB."""
    return encode(Image.new("L", (12000, 9000), 90), "JPEG", quality=10, optimize=True)


def test_a_108_mp_phone_photo_is_decoded_at_an_eighth_not_refused() -> None:
    data = phone_photo()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepared = prepare(data, max_width=320, max_height=320)  # trace.moe's box
        assert prepare_boxes(data, [(640, 360), (320, 320)])[1].data == prepared.data
        assert prepare_quick(data, max_width=320, max_height=320) is None  # too many pixels to be quick
    assert [str(warning.message) for warning in caught] == []  # nor a decompression bomb to Pillow
    assert (prepared.width, prepared.height) == (320, 240)
    assert close_to(decoded(prepared).getpixel((160, 120)), (90, 90, 90))
    with pytest.raises(InvalidImageError, match=r"1500x1125 \(1\.7 MP\), over the 1\.0 MP limit"):
        prepare(data, max_width=320, max_height=320, max_pixels=1_000_000)  # the cap is on what is decoded
    with pytest.raises(InvalidImageError, match=r"12000x9000 \(108\.0 MP\), over the 50\.0 MP limit"):
        prepare(data, max_width=12000, max_height=9000)  # a box it must be decoded whole for


def test_a_progressive_jpeg_counts_whole_whatever_scale_it_is_decoded_at() -> None:
    """libjpeg keeps every coefficient of a progressive picture at any scale: a tiny file claiming
    13000x13000 cost a gigabyte; it is refused from its header, as before."""
    small = encode(Image.new("L", (64, 64), 90), "JPEG", progressive=True)
    size = small.index(b"\xff\xc2") + 5  # the progressive frame header: length, precision, height, width
    data = small[:size] + struct.pack(">HH", 13000, 13000) + small[size + 4 :]  # 169 MP, under Pillow's cap
    with pytest.raises(InvalidImageError, match=r"13000x13000 \(169\.0 MP\), over the 50\.0 MP limit"):
        prepare(data, max_width=320, max_height=320)


def _scan_per_component(width: int, height: int, mode: str) -> bytes:
    """A baseline JPEG claiming ``width`` x ``height`` whose first scan holds one of its components."""
    small = encode(Image.new(mode, (8, 8), (120, 130, 140, 10)[: len(mode)]), "JPEG", subsampling=0)
    frame = small.index(b"\xff\xc0") + 5  # length, precision; then height, width
    small = small[:frame] + struct.pack(">HH", height, width) + small[frame + 4 :]
    scan = small.index(b"\xff\xda")
    (length,) = struct.unpack(">H", small[scan + 2 : scan + 4])
    header = small[scan + 4 : scan + 2 + length]
    one = bytes([1]) + header[1:3] + header[1 + 2 * header[0] :]  # the first component's selector only
    return small[:scan] + b"\xff\xda" + struct.pack(">H", len(one) + 2) + one + bytes(16) + b"\xff\xd9"


@pytest.mark.parametrize("mode", ["RGB", "CMYK"])
def test_a_baseline_jpeg_in_a_scan_per_component_counts_whole(mode: str) -> None:
    """libjpeg keeps every coefficient of a picture whose first scan holds fewer components than its frame,
    as of a progressive one: a 400-byte baseline file claiming 13000x13000 cost 1 to 1.3 GB. It is refused
    from its header, where it was counted at 1/8 and decoded."""
    data = _scan_per_component(13000, 13000, mode)
    assert len(data) < 1000
    with pytest.raises(InvalidImageError, match=r"13000x13000 \(169\.0 MP\), over the 50\.0 MP limit"):
        prepare(data, max_width=320, max_height=320)


def _with_empty_scans(scans: int) -> bytes:
    """A 640x360 progressive JPEG with ``scans`` more scans that hold nothing (14 bytes each)."""
    data = encode(Image.new("RGB", (640, 360), (90, 100, 110)), "JPEG", progressive=True, quality=50)
    start = data.index(b"\xff\xda")
    (length,) = struct.unpack(">H", data[start + 2 : start + 4])
    return data[:start] + data[start : start + 2 + length] * scans + data[start:]


def test_a_jpeg_of_more_scans_than_a_picture_needs_is_refused_before_decoding() -> None:
    """Each scan is a pass over the whole picture: 70 000 empty ones made a 1 MB 640x360 file take seconds
    on the event loop, and larger pictures minutes, past any deadline."""
    assert jpeg_scans(_with_empty_scans(0))[0] > 1  # Pillow's progressive JPEG: a few scans, decoded
    assert prepare(_with_empty_scans(0)).width == 640
    with pytest.raises(InvalidImageError, match=r"the JPEG has more than 100 scans"):
        prepare(_with_empty_scans(500))


def test_the_bomb_guards_read_the_markers_as_libjpeg_reads_them() -> None:
    """libjpeg passes over junk bytes before a marker and skips a comment by its length: a byte of junk, or
    a comment holding ``FF D9`` between the scans, made both guards give up and the file decode."""
    bomb = _scan_per_component(13000, 13000, "RGB")
    tables = bomb.index(b"\xff\xdb")
    with pytest.raises(InvalidImageError, match=r"13000x13000 \(169\.0 MP\)"):
        prepare(bomb[:tables] + b"\x00" + bomb[tables:], max_width=320, max_height=320)
    padded = _with_empty_scans(500)
    second = padded.index(b"\xff\xda", padded.index(b"\xff\xda") + 2)
    comment = b"\xff\xfe\x00\x06\xff\xd9ok"  # a comment segment holding the end-of-picture bytes
    for crafted in (padded[:second] + comment + padded[second:], padded[:second] + b"\x00" + padded[second:]):
        with pytest.raises(InvalidImageError, match=r"the JPEG has more than 100 scans"):
            prepare(crafted)


def test_scans_behind_a_reserved_marker_are_counted_as_libjpeg_decodes_them() -> None:
    """A reserved marker (``FF 05``) inside the data is passed over by libjpeg as junk, and the scans after
    it decoded: read as a segment with a length, it hid 3000 scans (36 s of CPU for a 33 KB file). A file of
    more markers than a picture has (empty comments) is refused too, without walking them all."""
    source = encode(Image.new("L", (256, 256), 128), "JPEG", progressive=True, restart_marker_blocks=1)
    head = source[: source.index(b"\xff\xda")]
    tables, at = b"", 0
    while (at := source.find(b"\xff\xc4", at + 1)) > 0:  # every Huffman table, before the first scan
        tables += source[at : at + 2 + int.from_bytes(source[at + 2 : at + 4], "big")]
    first = b"\xff\xda\x00\x08\x01\x01\x00\x00\x00\x00"  # the DC scan of the one component
    hidden = b"\xff\xda\x00\x08\x01\x01\x00\x01\x3f\x00" * 500  # AC scans, after FF 05 "7F FF"
    bomb = head + tables + first + b"\xff\x05\x7f\xff" + hidden + b"\xff\xd9"
    assert jpeg_scans(bomb) == (101, True)
    with pytest.raises(InvalidImageError, match=r"more than 100 scans \(or 10000 markers\)"):
        prepare(bomb)
    comments = source[:-2] + b"\xff\xfe\x00\x02" * 20_000 + b"\xff\xd9"
    with pytest.raises(InvalidImageError, match=r"more than 100 scans \(or 10000 markers\)"):
        prepare(comments)


def test_a_second_frame_header_does_not_hide_a_scan_per_component() -> None:
    """The frame that counts is the first scan's: a frame header written after it, claiming fewer
    components, made the file look interleaved, and libjpeg still held every coefficient (1 GB for 376
    bytes) before it failed on the second header."""
    bomb = _scan_per_component(13000, 13000, "RGB")
    frame = bomb.index(b"\xff\xc0")
    header = bomb[frame : frame + 2 + int.from_bytes(bomb[frame + 2 : frame + 4], "big")]
    one = header[:9] + b"\x01" + header[10:13]  # the same frame, with its first component only
    one = one[:2] + len(one[2:]).to_bytes(2, "big") + one[4:]
    crafted = bomb[:-2] + one + b"\xff\xd9"
    assert jpeg_scans(crafted) == (1, True)
    with pytest.raises(InvalidImageError, match=r"13000x13000 \(169\.0 MP\)"):
        prepare(crafted, max_width=320, max_height=320)


def test_the_scans_of_a_jpeg_are_its_pictures_own() -> None:
    """An EXIF thumbnail's scans, an MPO's later pictures and bytes appended after the picture (a motion
    photo's video) are not the picture's: a camera's baseline photo stays decoded at a reduced scale."""
    thumbnail = encode(Image.new("RGB", (160, 120), 60), "JPEG", progressive=True)
    exif = Image.Exif()
    exif[0x010F] = "camera"
    photo = encode(Image.new("RGB", (640, 480), 60), "JPEG", exif=exif.tobytes())
    app1 = photo.index(b"\xff\xe1")
    (length,) = struct.unpack(">H", photo[app1 + 2 : app1 + 4])
    payload = photo[app1 + 4 : app1 + 2 + length] + thumbnail
    with_thumbnail = photo[:app1] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    with_thumbnail += photo[app1 + 2 + length :]
    assert jpeg_scans(photo) == (1, False)
    assert jpeg_scans(with_thumbnail) == (1, False)
    assert jpeg_scans(photo + thumbnail + b"\xff\xda" * 200) == (1, False)
    prepared = prepare(with_thumbnail + b"\xff\xda" * 200)
    assert (prepared.width, prepared.height) == (480, 360)


def test_a_jpeg_over_pillows_own_limit_is_refused_from_its_header() -> None:
    small = phone_photo()
    size = small.index(b"\xff\xc0") + 5  # the baseline frame header: length, precision, height, width
    data = small[:size] + struct.pack(">HH", 15000, 15000) + small[size + 4 :]  # 225 MP
    with pytest.raises(InvalidImageError, match="too many pixels to decode safely"):
        prepare(data)
    assert prepare_quick(data) is None


def test_worker_threads_get_the_same_answers(samples: Path, screenshot: Image.Image) -> None:
    framed = on_black((640, 480), screenshot, (0, 60))
    sources: list[Path | Image.Image] = [samples / "tinted-good.jpg", framed] * 6
    expected = [prepare(source, cut_borders=True) for source in sources]
    with ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(lambda source: prepare(source, cut_borders=True), sources)) == expected


def test_the_callers_pil_image_is_left_alone() -> None:
    image = Image.new("RGB", (1280, 720), GREEN)
    prepare(image)
    assert image.size == (1280, 720)
    assert image.getpixel((0, 0)) == GREEN


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def scenery(size: tuple[int, int]) -> Image.Image:
    """A smooth picture that JPEG compresses like a screenshot (well under 2 bits per pixel)."""
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    ImageDraw.Draw(image).ellipse((size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2), fill=RED)
    return image


def test_a_plain_jpeg_that_fits_is_uploaded_byte_for_byte() -> None:
    data = encode(scenery((640, 360)), "JPEG", quality=85)
    prepared = prepare(data)
    assert prepared.data == data
    assert (prepared.width, prepared.height, prepared.mime_type) == (640, 360, "image/jpeg")
    assert prepared.digest == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("size", "options"),
    [
        ((1280, 720), {"quality": 85}),  # larger than the box, even though a draft decode fits it
        ((640, 360), {"quality": 100, "subsampling": 0, "noise": True}),  # heavier than re-encoded
        ((640, 360), {"quality": 85, "comment": b"taken at home"}),  # metadata never leaves
        ((640, 360), {"quality": 85, "icc_profile": srgb_profile()}),
    ],
)
def test_a_jpeg_that_does_not_qualify_is_reencoded(size: tuple[int, int], options: dict[str, object]) -> None:
    picture = scenery(size)
    if options.pop("noise", False):
        picture = Image.merge("RGB", [Image.effect_noise(size, 60)] * 3)
    data = encode(picture, "JPEG", **options)
    prepared = prepare(data)
    assert prepared.data != data
    assert decoded(prepared).size == (640, 360)
    with Image.open(io.BytesIO(prepared.data)) as image:
        assert not {"comment", "icc_profile", "exif", "xmp"} & set(image.info)


def test_cutting_borders_never_sends_the_source_as_it_is() -> None:
    data = encode(scenery((640, 360)), "JPEG", quality=85)
    assert prepare(data, cut_borders=True).data != data


# ---------------------------------------------------------------- modes, alpha, orientation


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("RGBA", (64, 32), (255, 255, 255, 0)), (0, 0, 0)),  # transparent: black, not white
        (Image.new("RGBA", (64, 32), (255, 255, 255, 128)), (128, 128, 128)),
        (Image.new("LA", (64, 32), (200, 0)), (0, 0, 0)),
        (Image.new("I;16", (64, 32), 40000), (156, 156, 156)),  # 16-bit scaled, not clipped to white
        (Image.new("I", (64, 32), 65535), (255, 255, 255)),
        (Image.new("I", (64, 32), 77), (77, 77, 77)),  # 32-bit, 8-bit values: kept as they are
        (Image.new("F", (64, 32), 0.5), (128, 128, 128)),
        (Image.new("CMYK", (64, 32), (0, 255, 255, 0)), RED),
        (Image.new("1", (64, 32), 1), (255, 255, 255)),
        (Image.new("L", (64, 32), 77), (77, 77, 77)),
        (Image.new("YCbCr", (64, 32), (76, 85, 255)), (254, 0, 0)),
    ],
    ids=lambda value: value.mode if isinstance(value, Image.Image) else None,
)
def test_every_pixel_mode_becomes_rgb_with_alpha_on_black(
    image: Image.Image, expected: tuple[int, int, int]
) -> None:
    assert close_to(decoded(prepare(image)).getpixel((32, 16)), expected)


def test_palette_transparency_is_flattened_on_black() -> None:
    image = Image.new("P", (64, 32), 0)
    image.putpalette([255, 255, 255, 255, 0, 0] + [0] * 762)
    image.paste(1, (32, 0, 64, 32))
    image.info["transparency"] = 0
    rgb = decoded(prepare(encode(image, "PNG")))
    assert close_to(rgb.getpixel((8, 16)), (0, 0, 0))
    assert close_to(rgb.getpixel((56, 16)), RED)


def test_the_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (80, 40), BLUE)
    image.paste(RED, (0, 0, 40, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    prepared = prepare(encode(image, "JPEG", exif=exif.tobytes()))
    rgb = decoded(prepared)
    assert rgb.size == (40, 80)
    assert close_to(rgb.getpixel((20, 10)), RED, 40)
    assert close_to(rgb.getpixel((20, 70)), BLUE, 40)


def rgb_profile(red: tuple[float, float, float], green: tuple[float, float, float]) -> bytes:
    """A minimal ICC v2 RGB matrix/TRC profile (gamma 2.2, D50) with the given red and green primaries."""

    def xyz(values: tuple[float, float, float]) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(struct.pack(">i", round(v * 65536)) for v in values)

    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x0233) + b"\0\0"
    text = b"swapped primaries\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz((0.9642, 1.0, 0.8249))),
        (b"rXYZ", xyz(red)),
        (b"gXYZ", xyz(green)),
        (b"bXYZ", xyz((0.1431, 0.0606, 0.7141))),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags:
        padded = data + bytes(-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += padded
    size = offset + len(body)
    header = struct.pack(">I4sI4s4s4s", size, b"lcms", 0x02100000, b"mntr", b"RGB ", b"XYZ ") + bytes(12)
    header += b"acsp" + bytes(24) + struct.pack(">I", 0) + xyz((0.9642, 1.0, 0.8249))[8:]
    header += bytes(128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + body


def test_an_embedded_colour_profile_is_converted_to_srgb() -> None:
    srgb_red, srgb_green = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971)
    image = Image.new("RGB", (64, 32), RED)
    plain = decoded(prepare(encode(image, "PNG", icc_profile=rgb_profile(srgb_red, srgb_green))))
    assert close_to(plain.getpixel((32, 16)), RED, 16)
    swapped = decoded(prepare(encode(image, "PNG", icc_profile=rgb_profile(srgb_green, srgb_red))))
    assert close_to(swapped.getpixel((32, 16)), GREEN, 16)
    assert close_to(
        decoded(prepare(encode(image, "PNG", icc_profile=b"not a profile"))).getpixel((32, 16)), RED
    )


def test_video_rotation_turns_the_frame_the_way_the_display_matrix_says() -> None:
    image = Image.new("RGB", (40, 20), BLUE)
    image.paste(RED, (0, 0, 20, 20))
    assert _rotate_for_display(image, 0) is image
    clockwise = _rotate_for_display(image, -90)  # a phone's portrait clip
    assert clockwise.size == (20, 40)
    assert clockwise.getpixel((10, 5)) == RED
    assert _rotate_for_display(image, 90).getpixel((10, 35)) == RED
    assert _rotate_for_display(image, 180).getpixel((35, 10)) == RED


# ---------------------------------------------------------------- first frames


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_an_animation_gives_its_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (64, 32), RED), Image.new("RGB", (64, 32), BLUE)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(io.BytesIO(data)) as check:
        assert getattr(check, "n_frames", 1) == 2
    assert close_to(decoded(prepare(data)).getpixel((32, 16)), RED, 30)


def test_an_animation_opened_at_a_later_frame_still_gives_frame_one() -> None:
    frames = [Image.new("RGB", (64, 32), RED), Image.new("RGB", (64, 32), BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    with Image.open(io.BytesIO(data)) as image:
        image.seek(1)
        prepared = prepare(image)
        assert image.tell() == 1
    assert close_to(decoded(prepared).getpixel((32, 16)), RED, 30)


@pytest.mark.parametrize(
    ("fmt", "codec", "kind"),
    [
        ("mp4", "libx264", "mp4"),
        ("mov", "mpeg4", "mov"),
        ("webm", "libvpx", "webm"),
        ("avi", "mpeg4", "avi"),
        ("matroska", "mpeg4", "mkv"),
        ("mpegts", "mpeg2video", "mpeg-ts"),
        ("mpeg", "mpeg1video", "mpeg"),
    ],
)
def test_a_video_gives_its_first_frame(fmt: str, codec: str, kind: str) -> None:
    data = video(fmt, codec, [RED, GREEN, BLUE] * 4)  # a TS under ~2 KiB is too short to probe
    prepared = prepare(data)
    assert prepared.source_format == kind
    assert prepared.digest == hashlib.sha256(data).hexdigest()
    assert (prepared.width, prepared.height) == (64, 48)
    assert close_to(decoded(prepared).getpixel((32, 24)), RED, 40)


def moov_first(movie: bytes) -> bytes:
    """A one-track movie as PyAV writes it (ftyp, wide, mdat, moov) as moov then mdat, its chunk offsets
    moved with the samples."""
    atoms, at = {}, 0
    while at < len(movie):
        size, kind = struct.unpack_from(">I4s", movie, at)
        atoms[kind], at = movie[at : at + size], at + size
    moov, mdat = bytearray(atoms[b"moov"]), atoms[b"mdat"]
    shift = len(moov) - movie.index(mdat)
    table = moov.index(b"stco") + 8  # after the version, the flags: the count, then each chunk's offset
    for entry in range(struct.unpack_from(">I", moov, table)[0]):
        offset = table + 4 + 4 * entry
        struct.pack_into(">I", moov, offset, struct.unpack_from(">I", moov, offset)[0] + shift)
    return bytes(moov) + mdat


@pytest.mark.parametrize("first", [b"moov", b"free", b"skip", b"wide"])
def test_a_quicktime_movie_without_an_ftyp_atom_gives_its_first_frame(first: bytes) -> None:
    """As QuickTime wrote movies before ftyp (2001), and some cameras still do."""
    movie = video("mov", "mpeg4", [RED, GREEN, BLUE] * 4)
    assert movie[4:8] == b"ftyp"
    classic = moov_first(movie) if first == b"moov" else movie[:4] + first + movie[8:]  # ftyp as free space
    assert classic[4:8] == first
    prepared = prepare(classic)
    assert (prepared.source_format, prepared.width, prepared.height) == ("mov", 64, 48)
    assert close_to(decoded(prepared).getpixel((32, 24)), RED, 40)


def test_a_blu_ray_transport_stream_gives_its_first_frame() -> None:
    """A .m2ts (Blu-ray, AVCHD cameras): 192-byte packets, a 4-byte arrival time before each TS packet."""
    data = video("mpegts", "mpeg2video", [RED, GREEN, BLUE] * 4, options={"mpegts_m2ts_mode": "1"})
    assert data[4] == data[196] == data[388] == 0x47 != data[0]  # the TS sync byte
    prepared = prepare(data)
    assert (prepared.source_format, prepared.width, prepared.height) == ("m2ts", 64, 48)
    assert close_to(decoded(prepared).getpixel((32, 24)), RED, 40)


def test_a_transport_stream_damaged_after_its_first_packets_is_still_one() -> None:
    """100 bytes lost in the fourth packet (a recording's glitch): PyAV decodes the stream all the same."""
    data = video("mpegts", "mpeg2video", [RED, GREEN, BLUE] * 4)
    damaged = data[:700] + data[800:]
    prepared = prepare(damaged)
    assert (prepared.source_format, prepared.width) == ("mpeg-ts", 64)


def test_a_video_without_pyav_asks_for_the_video_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    data = video("mp4", "libx264", [RED])
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(InvalidImageError, match=r"pip install 'anisearch-gateway\[video\]'"):
        prepare(data)


def test_an_audio_only_file_is_refused() -> None:
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=44100)
        frame = av.AudioFrame(format="fltp", layout="mono", samples=1024)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.sample_rate = 44100
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(InvalidImageError, match="no video track"):
        prepare(out.getvalue())


def test_a_video_over_the_pixel_cap_is_refused_before_decoding() -> None:
    with pytest.raises(InvalidImageError, match="MP limit; refusing a possible decompression bomb"):
        prepare(video("mp4", "libx264", [RED]), max_pixels=1000)


# ---------------------------------------------------------------- refusals


TEXT_LIKE_M2TS = bytes(ord("G") if n in {4, 196, 388} else ord("y") for n in range(1000))
"""Text with the transport stream's sync byte where a Blu-ray stream's first three packets start."""
BINARY_LIKE_MOV = b"\x00\x00\x00\x10free\x01\x02\x03\x04\x05\x06\x07\x08\xfe\xfd\xfc\xfb" * 8
"""A 16-byte "free" atom followed by bytes that are no atom."""


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the image is empty"),
        (b"my api key is hunter2, please search", "this is text, not an image"),
        (b"for free, as in beer; " * 30, "this is text, not an image"),  # not a QuickTime "free" atom
        (b"  <!DOCTYPE html><html><body>Not Found</body></html>", "an HTML page, not an image"),
        (b'{"error": "Failed to fetch image"}', "this is JSON, not an image"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "SVG drawing"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "a PDF document, not an image"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00", "a WAV audio file, not an image"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC/HEIF photos are not supported"),
        (b"\x00\x01\x02\x03\xfe\xfd\xfc" * 50, "not an image or video format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "the PNG image is corrupt"),
        (TEXT_LIKE_M2TS, "this is text, not an image"),
        (BINARY_LIKE_MOV, "not an image or video format"),
    ],
    ids=[
        "empty",
        "text",
        "free-text",
        "html",
        "json",
        "svg",
        "pdf",
        "wav",
        "heic",
        "binary",
        "broken-png",
        "text-like-m2ts",
        "binary-like-mov",
    ],
)
def test_what_is_not_an_image_is_refused_with_a_clear_message(data: bytes, message: str) -> None:
    with pytest.raises(InvalidImageError, match=message) as caught:
        prepare(data)
    assert "hunter2" not in str(caught.value)
    assert "\\x" not in str(caught.value)
    assert not isinstance(caught.value, ImageTooLargeError)


def test_a_bitmap_whose_size_reads_like_a_transport_stream_is_a_bitmap() -> None:
    """A BMP's file size sits at bytes 2..6: a 1280x1212 one puts 0x47, the sync byte, at byte 4."""
    picture = Image.new("RGB", (1280, 1212), (71, 71, 71))
    data = encode(picture, "BMP")
    assert data[4] == 0x47
    prepared = prepare(data, max_width=320, max_height=320)
    assert (prepared.source_format, prepared.width) == ("bmp", 320)


def test_an_error_names_the_file(tmp_path: Path) -> None:
    page = tmp_path / "shot.jpg"
    page.write_text("<html><body>403 Forbidden</body></html>")
    with pytest.raises(InvalidImageError, match=r"shot\.jpg: this is an HTML page"):
        prepare(page)
    with pytest.raises(InvalidImageError, match=r"missing\.png: no such file"):
        prepare(tmp_path / "missing.png")
    with pytest.raises(InvalidImageError, match="is a directory"):
        prepare(tmp_path)
    with pytest.raises(InvalidImageError, match=r"no such file \(URLs are fetched by search\(\)"):
        prepare("https://example.com/shot.jpg")
    with pytest.raises(InvalidImageError, match=r"a file: URL: give its path, /tmp/my shot\.png\)$"):
        prepare("file:///tmp/my%20shot.png")
    with pytest.raises(InvalidImageError, match=r"a ftp: URL; only http\(s\) URLs are fetched"):
        prepare("ftp://example.com/shot.png")
    with pytest.raises(InvalidImageError, match=r"a URL with spaces around it"):
        prepare(" https://example.com/shot.jpg")
    with pytest.raises(InvalidImageError, match=r"missing\.png: no such file$"):
        prepare(FsPath(str(tmp_path / "missing.png").encode()))  # type: ignore[arg-type]  # untyped callers
    (tmp_path / "empty.jpg").touch()
    with pytest.raises(InvalidImageError, match=r"empty\.jpg: the image is empty"):
        prepare(str(tmp_path / "empty.jpg"))


class FsPath:
    """An os.PathLike that gives bytes, as some file-system libraries do."""

    def __init__(self, path: bytes) -> None:
        self.path = path

    def __fspath__(self) -> bytes:
        return self.path


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_truncated_image_is_refused_and_pillow_stays_strict(samples: Path, fmt: str) -> None:
    with Image.open(samples / "tinted-good.jpg") as image:
        data = encode(image, fmt)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(InvalidImageError, match="truncated"):
        prepare(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_a_truncated_pil_image_is_refused_when_it_is_decoded(samples: Path) -> None:
    data = (samples / "tinted-good.jpg").read_bytes()
    with (
        Image.open(io.BytesIO(data[: len(data) // 2])) as lazy,
        pytest.raises(InvalidImageError, match="truncated"),
    ):
        prepare(lazy)


def test_a_jpeg_missing_only_its_end_of_image_marker_is_searched_whole(samples: Path) -> None:
    """Screenshot tools and downloads cut at the last bytes leave a baseline JPEG without its end-of-image
    marker (``FF D9``), which browsers, libjpeg and trace.moe decode: so does prepare(), to the same
    picture, and a JPEG uploaded as it is gets its marker back. Cut inside its scan, it is still refused."""
    screenshot = (samples / "tinted-good.jpg").read_bytes()  # decoded and encoded again
    with Image.open(io.BytesIO(screenshot)) as image:
        plain = encode(image, "JPEG", quality=50)  # uploaded as it is
    for data in (screenshot, plain):
        assert data.endswith(b"\xff\xd9")
        assert prepare(data[:-2]).data == prepare(data).data
        for cut in (3, 40, len(data) // 2):  # the scan's last code, a few blocks, half the picture
            with pytest.raises(InvalidImageError, match=r"^the JPEG image is truncated \(the file ends too"):
                prepare(data[:-cut])
    assert prepare(plain[:-2]).data == plain
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_a_progressive_jpeg_missing_its_end_is_refused_without_decoding_it_again(
    samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a baseline JPEG's scan can be told whole without its end marker; a progressive one missing it
    is refused as truncated at the cost of one decode, not three."""
    from anisearch import _image

    with Image.open(samples / "tinted-good.jpg") as image:
        progressive = encode(image, "JPEG", quality=85, progressive=True)
    again: list[bytes] = []
    ended_scan = _image._ended_scan

    def counted(data: bytes, draft: tuple[int, int] | None) -> Image.Image | None:
        again.append(data)
        return ended_scan(data, draft)

    monkeypatch.setattr(_image, "_ended_scan", counted)
    first_scan = progressive[: progressive.index(b"\xff\xda", progressive.index(b"\xff\xda") + 2)]
    for data in (progressive[:-2], first_scan):
        with pytest.raises(InvalidImageError, match=r"^the JPEG image is truncated"):
            prepare(data)
    assert again == []
    baseline = (samples / "tinted-good.jpg").read_bytes()[:-2]
    prepare(baseline)
    assert again == [baseline]


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    with pytest.raises(InvalidImageError, match="decompression bomb"):
        prepare(png_header(100_000, 100_000))  # Pillow's own DecompressionBombError
    with pytest.raises(InvalidImageError, match="decompression bomb"):
        prepare(png_header(10_000, 10_000))  # Pillow's warning, an error under pytest
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(InvalidImageError, match=r"10000x10000 \(100\.0 MP\).*50\.0 MP limit"):
            prepare(png_header(10_000, 10_000))  # the warning ignored: the pixel cap still holds
    with pytest.raises(InvalidImageError, match=r"8000x8000 \(64\.0 MP\)"):
        prepare(png_header(8000, 8000))  # under Pillow's limit, over anisearch's
    with pytest.raises(InvalidImageError, match="MP limit; refusing a possible decompression bomb"):
        prepare(Image.new("RGB", (100, 100)), max_pixels=9999)


def test_an_icon_is_refused_without_decoding_the_picture_inside() -> None:
    """Pillow's ICO reader decodes the largest entry as it opens the file, before its size can be checked."""
    bomb = grey_png(8000, 8000)  # 64 MP in 290 KB
    entry = struct.pack("<4B2H2I", 16, 16, 0, 0, 1, 32, len(bomb), 22)  # which says 16x16
    icon = struct.pack("<3H", 0, 1, 1) + entry + bomb
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as outside the tests: Pillow's warnings stop nothing
        for data in (icon, encode(Image.new("RGB", (16, 16), RED), "ICO")):
            with pytest.raises(InvalidImageError, match=r"^ICO icons are not supported; convert it to PNG"):
                prepare(data)
            assert prepare_quick(data) is None
    with pytest.raises(InvalidImageError, match=r"8000x8000 \(64\.0 MP\)"):
        prepare(bomb)  # the same picture on its own: refused from its header


def test_an_image_without_pixels_is_refused() -> None:
    with pytest.raises(InvalidImageError, match=r"no pixels \(0x0\)"):
        prepare(Image.new("RGB", (0, 0)))


def test_a_source_over_the_byte_limit_is_too_large(samples: Path) -> None:
    path = samples / "tinted-good.jpg"
    for source in (path, path.read_bytes()):
        with pytest.raises(ImageTooLargeError, match=r"48\.3 KiB, over the 1000 bytes limit") as caught:
            prepare(source, max_source_bytes=1000)
        assert (caught.value.provider, caught.value.size_bytes, caught.value.limit_bytes) == (
            None,
            49480,
            1000,
        )
    with pytest.raises(ImageTooLargeError, match="larger than 1000 bytes") as caught:
        prepare(io.BytesIO(path.read_bytes()), max_source_bytes=1000)
    assert caught.value.size_bytes is None


def test_an_image_over_the_upload_limit_is_scaled_down_not_refused() -> None:
    # A 27 MB screenshot: over trace.moe's 25 MiB upload limit, well within the input limit.
    big = Image.new("RGB", (3000, 3000), (200, 40, 90))
    out = io.BytesIO()
    big.save(out, "BMP")
    data = out.getvalue()
    assert 25 * 1024 * 1024 < len(data) < MAX_IMAGE_BYTES
    prepared = prepare(data)
    assert (prepared.width, prepared.height) == (360, 360)
    assert len(prepared.data) < 100_000
    assert prepared.source_bytes == len(data)


def test_inputs_over_the_input_limit_are_refused_without_reading_the_rest() -> None:
    class Endless(io.RawIOBase):
        served = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            size = len(buffer)
            buffer[:size] = b"\0" * size
            self.served += size
            return size

    source = Endless()
    with pytest.raises(ImageTooLargeError, match=r"over the 100\.0 MiB limit"):
        prepare(source)
    assert source.served == MAX_IMAGE_BYTES + 1
    padding = b"\0" * (MAX_IMAGE_BYTES - 64)
    with pytest.raises(InvalidImageError, match="mp4 video is corrupt") as caught:
        prepare(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + padding)
    assert not isinstance(caught.value, ImageTooLargeError)


def test_misuse_is_refused_clearly() -> None:
    with pytest.raises(InvalidImageError, match="cannot read an image from int"):
        prepare(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidImageError, match="binary mode"):
        prepare(io.StringIO("not bytes"))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_width"):
        prepare(Image.new("RGB", (8, 8)), max_width=0)
    with pytest.raises(ConfigurationError, match="max_source_bytes"):
        prepare(b"x", max_source_bytes=0)


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1", "cp1252"])
def test_a_picture_opened_in_text_mode_says_to_open_it_in_binary_mode(samples: Path, encoding: str) -> None:
    # open("shot.jpg"): whether the JPEG's bytes happen to decode in the encoding does not matter
    with (
        (samples / "tinted-good.jpg").open(encoding=encoding) as handle,
        pytest.raises(InvalidImageError) as caught,
    ):
        prepare(handle)  # type: ignore[arg-type]
    assert str(caught.value).endswith(
        "tinted-good.jpg: the file object returned text; open the file in binary mode ('rb')"
    )
    # a text reader that is not an io.TextIOBase fails while decoding: the same advice
    with (
        (samples / "tinted-good.jpg").open("rb") as raw,
        pytest.raises(InvalidImageError, match=r"open the file in binary mode \('rb'\)"),
    ):
        prepare(codecs.getreader("utf-8")(raw))


def test_a_pil_image_closed_before_the_search_is_named_as_closed_not_corrupt(samples: Path) -> None:
    closed = "the PIL image was closed before the search; search it before closing it"
    with Image.open(samples / "tinted-good.jpg") as left_early:  # the with block ended before search()
        pass
    freed = Image.open(samples / "tinted-good.jpg")
    freed.load()
    freed.close()
    made = Image.new("RGB", (64, 36))
    made.close()
    for image in (left_early, freed, made):
        with pytest.raises(InvalidImageError) as caught:
            prepare(image)
        assert str(caught.value) == closed
    with Image.open(samples / "tinted-good.jpg") as still_open:  # searched inside the block: fine
        assert prepare(still_open).width > 0


MAGIC_PREFIXES = [
    b"\xff\xd8\xff\xe0",
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"BM",
    b"II*\x00",
    b"\x00\x00\x00\x18ftypisom",
    b"\x00\x00\x00\x18ftypavif",
    b"\x1a\x45\xdf\xa3",
    b"OggS",
    b"FLV\x01",
    b"RIFF\x00\x00\x00\x00AVI ",
    b"<html>",
    b"%PDF-",
]


@settings(max_examples=examples(250), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=2048),
        st.tuples(st.sampled_from(MAGIC_PREFIXES), st.binary(max_size=2048)).map(b"".join),
    )
)
def test_random_bytes_only_ever_raise_invalid_image_errors(data: bytes) -> None:
    try:
        prepared = prepare(data)
    except InvalidImageError:  # ImageTooLargeError included
        return
    assert prepared.mime_type == "image/jpeg"  # some garbage is a valid (tiny) image


@functools.cache
def seed_files() -> tuple[bytes, ...]:
    """Small valid files of every kind prepare() reads, for the mutation test."""
    picture = Image.new("RGB", (32, 16), RED)
    picture.paste(BLUE, (0, 0, 16, 16))
    files = [encode(picture, fmt) for fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "PPM", "JPEG2000")]
    files.append(encode(picture.convert("P"), "PNG", transparency=0))
    files.append(video("mp4", "libx264", [RED, BLUE], (32, 16)))
    return tuple(files)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, 9),
    st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
    st.floats(0.05, 1),
)
def test_damaged_files_only_ever_raise_invalid_image_errors(
    which: int, edits: list[tuple[float, int]], keep: float
) -> None:
    data = bytearray(seed_files()[which])
    for where, value in edits:
        data[int(where * len(data))] = value
    with contextlib.suppress(InvalidImageError):
        prepare(bytes(data[: max(1, int(len(data) * keep))]))


# ---------------------------------------------------------------- fit


def test_an_image_that_already_fits_is_returned_as_is(tinted: PreparedImage) -> None:
    assert fit(tinted, UploadLimits()) is tinted
    assert fit(tinted, UploadLimits(max_bytes=len(tinted.data))) is tinted


def test_a_format_the_provider_does_not_take_is_reencoded(tinted: PreparedImage) -> None:
    png = dataclasses.replace(tinted, data=encode(decoded(tinted)), mime_type="image/png")
    fitted = fit(png, UploadLimits(formats=frozenset({"image/jpeg"})))
    assert fitted.mime_type == "image/jpeg"
    assert decoded(fitted).size == (640, 360)
    as_png = fit(tinted, UploadLimits(formats=frozenset({"image/png"})))
    assert as_png.mime_type == "image/png"
    assert as_png.data.startswith(b"\x89PNG")
    with pytest.raises(ConfigurationError, match="image/gif"):
        fit(tinted, UploadLimits(formats=frozenset({"image/gif"})))


def test_smaller_limits_shrink_the_image(tinted: PreparedImage) -> None:
    fitted = fit(tinted, UploadLimits(max_width=320, max_height=320))
    assert (fitted.width, fitted.height) == (320, 180) == decoded(fitted).size
    assert (fitted.digest, fitted.source_bytes) == (tinted.digest, tinted.source_bytes)


def test_an_8_mb_photo_fits_a_1_mb_body(tmp_path: Path) -> None:
    noise = random.Random(7).randbytes(1700 * 1600 * 3)
    photo = tmp_path / "photo.png"
    Image.frombytes("RGB", (1700, 1600), noise).save(photo, compress_level=1)
    assert photo.stat().st_size > 8_000_000
    fitted = fit(prepare(photo), UploadLimits(max_bytes=1_000_000, formats=frozenset({"image/jpeg"})))
    assert len(fitted.data) == fitted.body_size() <= 1_000_000
    assert fitted.data.startswith(b"\xff\xd8")
    assert decoded(fitted).size == (fitted.width, fitted.height)


def test_a_tight_body_limit_lowers_quality_then_size(tmp_path: Path) -> None:
    noise = Image.frombytes(
        "RGB",
        (640, 360),
        random.Random(3).randbytes(640 * 360 * 3),
    )
    prepared = prepare(noise)
    limits = UploadLimits(max_bytes=30_000)
    fitted = fit(prepared, limits)
    assert fitted.body_size() <= 30_000 < prepared.body_size()
    assert 160 <= fitted.width < 640
    assert fitted.height == round(fitted.width * 360 / 640)
    assert fitted.digest == prepared.digest
    with pytest.raises(ImageTooLargeError, match="cannot be made small enough") as caught:
        fit(prepared, UploadLimits(max_bytes=1000))
    assert caught.value.provider is None
    assert caught.value.limit_bytes == 1000
    assert caught.value.size_bytes is not None
    assert caught.value.size_bytes > 1000


def test_body_size_counts_the_bytes_and_the_repr_hides_them(tinted: PreparedImage) -> None:
    assert tinted.body_size() == len(tinted.data)
    assert "data=" not in repr(tinted)


# ---------------------------------------------------------------- borders


def on_black(size: tuple[int, int], picture: Image.Image, at: tuple[int, int]) -> Image.Image:
    canvas = Image.new("RGB", size, (0, 0, 0))
    canvas.paste(picture, at)
    return canvas


@pytest.fixture(scope="module")
def screenshot(samples: Path) -> Image.Image:
    with Image.open(samples / "tinted-good.jpg") as image:
        return image.convert("RGB")


def test_the_bad_screenshot_sample_is_left_uncropped(samples: Path) -> None:
    # border-bad.jpg is a media player window: white title bar, menu and controls around a 640x360
    # picture, and a black status bar at the bottom. Only that bar is "black border", so the area
    # found is the whole window above it, about 640x462 (1.385:1). That is neither 16:9 nor within
    # 0.05 of 4:3 (1.333), so trace.moe's rule leaves the image uncropped, and so does anisearch.
    with Image.open(samples / "border-bad.jpg") as image:
        cut = find_borders(image.convert("RGB"))
    assert cut.action == "keep"
    assert cut.box is not None
    assert cut.box[:3] == (0, 0, 640)
    assert 455 <= cut.box[3] <= 470
    assert cut.aspect is not None
    assert abs(cut.aspect - 4 / 3) >= 0.05
    prepared = prepare(samples / "border-bad.jpg", cut_borders=True)
    assert (prepared.width, prepared.height) == (468, 360)


def test_a_letterboxed_16_9_picture_is_cropped_even_with_player_controls(
    screenshot: Image.Image, tinted: PreparedImage
) -> None:
    framed = on_black((640, 480), screenshot, (0, 60))
    draw = ImageDraw.Draw(framed)
    draw.line([(100, 20), (540, 20)], fill=(255, 255, 255), width=2)  # a thin seek bar on the border
    draw.text((10, 440), "01:38 / 58:06", fill=(255, 255, 255))
    cut = find_borders(framed)
    assert cut.action == "crop"
    assert cut.box == (0, 64, 640, 416)  # 2 px inside the picture at 320 px, as the server crops
    prepared = prepare(framed, cut_borders=True)
    assert (prepared.width, prepared.height) == (640, 352)
    assert descriptor_distance(described(prepared), described(tinted)) < 5
    uncut = prepare(framed)
    assert descriptor_distance(described(uncut), described(tinted)) > 10


def test_a_pillarboxed_4_3_picture_is_cropped(screenshot: Image.Image) -> None:
    cut = find_borders(on_black((640, 360), screenshot.crop((80, 0, 560, 360)), (80, 0)))
    assert cut.action == "crop"
    assert cut.aspect is not None
    assert abs(cut.aspect - 4 / 3) < 0.05


def test_a_21_9_picture_is_cropped_and_padded_back_to_16_9(screenshot: Image.Image) -> None:
    framed = on_black((640, 480), screenshot.crop((0, 43, 640, 317)), (0, 103))
    trimmed, cut = cut_borders(framed)
    assert cut.action == "pad"
    assert trimmed.size == (640, 360)
    assert trimmed.getpixel((320, 5)) == (0, 0, 0)
    assert trimmed.getpixel((320, 354)) == (0, 0, 0)
    alone, cut = cut_borders(screenshot.crop((0, 43, 640, 317)))
    assert cut.action == "keep"  # already 21:9 without borders: nothing to do
    assert alone.size == (640, 274)


def test_an_unusual_aspect_ratio_or_an_all_black_image_is_left_alone(screenshot: Image.Image) -> None:
    square = on_black((640, 360), screenshot.crop((140, 0, 500, 360)), (140, 0))
    trimmed, cut = cut_borders(square)
    assert (cut.action, trimmed) == ("keep", square)
    black = Image.new("RGB", (100, 50))
    assert cut_borders(black) == (black, BorderCut("keep", None, None))
    assert prepare(black, cut_borders=True).width == 100
    with pytest.raises(ValueError, match="without pixels"):
        find_borders(Image.new("RGB", (0, 0)))


def test_reading_formats_loads_only_their_plugins() -> None:
    """The formats read are those Pillow's full registry has, without loading every plugin (PDF, EPS...)."""
    import subprocess

    script = (
        "import sys; from anisearch import _image; from PIL import Image;"
        "mine = _image._formats(); pdf = 'PIL.PdfImagePlugin' in sys.modules; Image.init();"
        "print(mine == tuple(f for f in _image._WANTED_FORMATS if f in Image.OPEN), pdf)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "False"]


def test_a_plain_picture_loads_no_border_cutting_or_colour_management() -> None:
    """Border cutting and colour profiles load their code when a picture needs them, not on every search."""
    import subprocess

    script = (
        "import io, json, sys; from PIL import Image; from anisearch._image import prepare;"
        "out = io.BytesIO(); Image.new('RGB', (800, 450), 'teal').save(out, 'JPEG');"
        "plain = prepare(out.getvalue(), max_width=320, max_height=320);"
        "loaded = [m for m in ('anisearch._borders', 'PIL.ImageCms') if m in sys.modules];"
        "prepare(out.getvalue(), cut_borders=True);"
        "print(json.dumps([plain.width, loaded, 'anisearch._borders' in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == [320, [], True]


@pytest.mark.skipif(sys.platform != "linux", reason="reads the peak from /proc/self/status")
def test_an_rgba_picture_decodes_within_16_bytes_a_pixel(tmp_path: Path) -> None:
    """docs/gateway.md: a decode holds up to 16 bytes a pixel. A lossless RGBA WebP (a few hundred bytes for
    9 MP) was copied whole before its flattening on black, with its alpha band beside it: 21 bytes a pixel."""
    import subprocess

    side = 3000
    picture = tmp_path / "rgba.webp"
    Image.new("RGBA", (side, side), (10, 20, 30, 200)).save(picture, lossless=True)
    script = """
import io, re, sys
from PIL import Image
from anisearch._image import prepare

def kib(field):
    with open("/proc/self/status") as status:
        return int(re.search(field + r":\\s+(\\d+) kB", status.read()).group(1))

warm = io.BytesIO()
Image.new("RGBA", (64, 64)).save(warm, "WEBP", lossless=True)
prepare(warm.getvalue())  # the plugins loaded
data = open(sys.argv[1], "rb").read()
with open("/proc/self/clear_refs", "w") as peak:
    peak.write("5")  # the peak starts again from here
before = kib("VmRSS")
prepare(data)
print((kib("VmHWM") - before) * 1024)
"""
    done = subprocess.run(
        [sys.executable, "-c", script, str(picture)], capture_output=True, text=True, check=True
    )
    grew = int(done.stdout)
    assert grew <= 16.5 * side * side, f"{grew / side / side:.1f} bytes a pixel"
