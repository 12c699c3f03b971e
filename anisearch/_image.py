"""Image input -> :class:`PreparedImage`: sniff, first frame, flatten, downscale, re-encode, guard limits.

:func:`prepare` turns whatever the user passed (a path, bytes, a binary file, a ``PIL.Image``) into a
small JPEG plus the fact the rest of anisearch keys on (a digest of the source). It is synchronous and
CPU-bound, so the async client runs it in a worker thread, unless it is :func:`quick` (a small picture
already in memory, which takes less time than the thread hop). Every problem with the input is an
:class:`~anisearch.InvalidImageError` (or its :class:`~anisearch.ImageTooLargeError`) raised before
any request, so a bad input never costs quota.
:func:`fit` then adapts a prepared image to one provider's :class:`~anisearch._provider.UploadLimits`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import io
import os
import re
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from PIL import Image, ImageFile, UnidentifiedImageError

from anisearch._exceptions import ConfigurationError, ImageTooLargeError, InvalidImageError
from anisearch._limits import MAX_SOURCE_BYTES
from anisearch._source import BinaryReader, not_an_image, read_source, video_kind

if TYPE_CHECKING:
    from collections.abc import Sequence

    from PIL import ImageCms

    from anisearch._provider import UploadLimits

__all__ = [
    "JPEG_QUALITY",
    "MAX_HEIGHT",
    "MAX_IMAGE_BYTES",
    "MAX_PIXELS",
    "MAX_VIDEO_BYTES",
    "MAX_WIDTH",
    "BinaryReader",
    "ImageSource",
    "PreparedImage",
    "SourceBytes",
    "fit",
    "fits",
    "is_picture",
    "prepare",
    "prepare_boxes",
    "prepare_quick",
    "quick",
    "read",
]

MAX_WIDTH = 640
"""Default upload width, pixels. trace.moe works at 320x320; more only costs upload time."""
MAX_HEIGHT = 360
"""Default upload height, pixels."""
JPEG_QUALITY = 85
"""JPEG quality of the upload (Pillow's 1..95 scale)."""
MAX_VIDEO_BYTES = MAX_SOURCE_BYTES
"""Default cap on any source, image or video, bytes (100 MiB: only the first frame is decoded)."""
MAX_IMAGE_BYTES = MAX_SOURCE_BYTES
"""The same cap for images: an image over a provider's upload limit (trace.moe's 25 MiB) is decoded and
scaled down, not refused; only :data:`MAX_PIXELS` limits what is decoded."""
MAX_PIXELS = 50_000_000
"""Default cap on the decoded size, pixels (50 MP): larger headers are refused as decompression bombs. A
baseline JPEG counts at the scale it is decoded at (a 108 MP photo at 1/8), within Pillow's own limit (179
MP); one in several scans (progressive, or a scan per component) at its full size, which decoding it costs
at any scale."""
MAX_JPEG_SCANS = 100
"""Most scans a JPEG may have (a progressive photo has about 10): each scan is a pass over the whole
picture, so a small file of thousands of empty scans would take minutes of CPU to decode."""
_SNIFFED = 4096
"""Bytes of the input :func:`~anisearch._source.video_kind` looks at (about 21 transport-stream packets)."""
QUICK_PIXELS = 640 * 360
"""Largest still image, pixels (from its header), that :func:`quick` deems quick to prepare."""
QUICK_BYTES = 1024 * 1024
"""Largest input in memory, bytes, that :func:`quick` deems quick to prepare."""

_PLAIN_JPEG_INFO = frozenset({
    "jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "progressive", "progression", "adobe",
    "adobe_transform",
})  # fmt: skip
_AS_IS_BITS_PER_PIXEL = 2
_FIT_QUALITIES = (85, 75, 65, 55, 45, 40)
_FIT_SHRINK = 0.75
_FIT_MIN_WIDTH = 160
_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_QUARTER_TURNS = {  # counter-clockwise quarter turns
    1: Image.Transpose.ROTATE_90,
    2: Image.Transpose.ROTATE_180,
    3: Image.Transpose.ROTATE_270,
}
# Formats with a real magic number (no TGA: random bytes pass its header check), no external
# programs (no EPS: Pillow hands it to Ghostscript), and nothing decoded before the size is known (no ICO:
# Pillow decodes an icon's largest entry as it opens the file, whatever size the directory declares).
_PLUGINS = {
    "JPEG": "JpegImagePlugin",
    "PNG": "PngImagePlugin",
    "GIF": "GifImagePlugin",
    "WEBP": "WebPImagePlugin",
    "AVIF": "AvifImagePlugin",
    "BMP": "BmpImagePlugin",
    "TIFF": "TiffImagePlugin",
    "JPEG2000": "Jpeg2KImagePlugin",
    "PPM": "PpmImagePlugin",
    "QOI": "QoiImagePlugin",
}
"""Each wanted format, and Pillow's plugin module that reads it."""
_WANTED_FORMATS = tuple(_PLUGINS)

ImageSource: TypeAlias = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryReader | Image.Image
"""What :func:`prepare` accepts. A ``str`` is always a path; URLs are fetched by the client first."""


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """An image ready to upload: re-encoded, small, with the digest of its source.

    Attributes:
        data: The encoded bytes to upload.
        mime_type: ``"image/jpeg"`` or ``"image/png"``.
        width: Pixels.
        height: Pixels.
        digest: Hex SHA-256 of the *source* bytes (the exact-match part of the cache key).
        source_format: What the sniffed input was (``"jpeg"``, ``"png"``, ``"gif"``, ``"webp"``,
            ``"mp4"`` ...; ``"pil"`` for a PIL image that was not read from a file).
        source_bytes: Size of the input, in bytes.
    """

    data: bytes = field(repr=False)
    mime_type: str
    width: int
    height: int
    digest: str
    source_format: str = "jpeg"
    source_bytes: int = 0

    def body_size(self) -> int:
        """How many bytes the image takes, in bytes."""
        return len(self.data)


@cache
def _formats() -> tuple[str, ...]:
    """The wanted formats this Pillow reads, loading their plugins only (``Image.init`` loads all ~40)."""
    for name in _WANTED_FORMATS:
        with contextlib.suppress(ImportError):  # a Pillow built without it
            importlib.import_module(f"PIL.{_PLUGINS[name]}")
    return tuple(name for name in _WANTED_FORMATS if name in Image.OPEN)


# ---------------------------------------------------------------- decoding


def _open_header(data: bytes) -> Image.Image:
    """``data`` opened by the plugin of its format: its header read, nothing decoded.

    A JPEG is opened by its plugin directly. :func:`PIL.Image.open` would warn of a decompression bomb
    from its header (over 89 MP), but a JPEG is decoded at up to 1/8 scale (:func:`_draft_request`) and
    its pixel cap applies to that; Pillow's hard limit (179 MP, ``Image.MAX_IMAGE_PIXELS`` doubled) still
    holds for its header.

    Raises:
        PIL.Image.DecompressionBombError: A header over Pillow's limit.
        Exception: What :func:`PIL.Image.open` or the JPEG plugin raises for what they cannot read.
    """
    if not data.startswith(b"\xff\xd8\xff"):
        return Image.open(io.BytesIO(data), formats=_formats())
    from PIL import JpegImagePlugin  # a plugin of _PLUGINS, loaded for a JPEG only

    image = JpegImagePlugin.jpeg_factory(io.BytesIO(data))
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > 2 * limit:
        image.close()
        raise Image.DecompressionBombError(f"{image.width}x{image.height} is over Pillow's limit")
    return image


_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_MARKER = re.compile(rb"\xff([\xc0-\xcf\xd9-\xfe])")
"""The next marker that counts, as libjpeg finds it: any bytes (entropy-coded data, junk, fill ``FF``s) up to
an ``FF`` followed by a frame, table, scan, application or comment marker, or the end of the picture. The
others have no length and are passed over: ``00`` (a stuffed ``FF`` of the data), TEM and the reserved
``02``-``BF`` (libjpeg passes over them as junk when it resynchronises, or fails on them), restart markers
and SOI. A class after a literal: searched at C speed (10 ms for 25 MB)."""
_MAX_JPEG_MARKERS = 10_000
"""Most markers walked in a JPEG (a photo has a few dozen; restart markers are not walked): a file of more
is counted as over :data:`MAX_JPEG_SCANS` (walking 25 MB of empty comments would take seconds)."""


def jpeg_scans(data: bytes) -> tuple[int, bool]:
    """``(scans, whole)`` of the JPEG in ``data``: how many scans its picture has (up to one more than
    :data:`MAX_JPEG_SCANS`, where counting stops; that too past :data:`_MAX_JPEG_MARKERS` markers), and
    whether libjpeg keeps the whole picture's
    coefficients to decode it (several scans, or a first scan with fewer components than the frame), which
    no reduced scale spares. ``(0, False)`` when no scan is found (the decoder then says what is wrong).

    The markers are read as libjpeg reads them: each segment skipped by its length (an EXIF thumbnail's
    scans, a comment's bytes are inside theirs), anything else passed over up to the next marker (junk
    bytes, entropy-coded data), to the end of the picture (``EOI``: an MPO's later pictures or a video
    appended after it are not counted).
    """
    scans, first, components, position, size = 0, 0, 0, 2, len(data)
    for _ in range(_MAX_JPEG_MARKERS):
        found = _MARKER.search(data, position)
        if found is None or scans > MAX_JPEG_SCANS:
            break
        marker, position = found[1][0], found.end()
        if marker == 0xD9 or position + 2 > size:  # noqa: PLR2004 - EOI, the end of the picture
            break
        if marker in _SOF_MARKERS and scans == 0 and position + 7 < size:  # the frame of the first scan
            components = data[position + 7]  # after the length, the precision, the height and the width
        elif marker == 0xDA:  # noqa: PLR2004 - SOS: a scan
            scans += 1
            if scans == 1 and position + 2 < size:
                first = data[position + 2]  # its number of components
        position += max(int.from_bytes(data[position : position + 2], "big"), 2)
    else:  # more markers than any picture has
        return MAX_JPEG_SCANS + 1, True
    return scans, scans > 1 or (scans == 1 and first < components)


_FILLS = (bytes(8), b"\xff\x00" * 8)
"""What :func:`_ended_scan` puts after a scan: 64 zero bits, then 64 one bits (``FF 00`` is a data byte
``FF``); more than libjpeg reads ahead of the code it decodes (57 bits with a 64-bit bit buffer)."""
_EOI = b"\xff\xd9"


def _ended_scan(data: bytes, draft: tuple[int, int] | None) -> Image.Image | None:
    """The picture of a one-scan (baseline) JPEG whose scan is whole but whose end-of-image marker
    (``FF D9``) is missing, decoded at the ``draft`` request; None when the scan itself is cut.

    libjpeg reads ahead of the code it decodes; at the end of a scan the missing marker leaves it waiting
    for bytes, and Pillow reports the file truncated. The scan is decoded twice more, followed by each of
    :data:`_FILLS` and no marker: when its data is whole neither fill is decoded, both decodes finish and
    give the same picture; when it is cut, the decoder runs out of bytes again (Pillow reports it
    truncated) or decodes the two fills into two different pictures (only a cut within the last code or
    two, whose bits both fills happen to decode alike, can pass: the same picture either way). A
    progressive JPEG is not read so: libjpeg finishes one only at its end marker, and a cut refinement
    scan then decodes quietly.
    """
    from PIL import ImageChops

    pictures: list[Image.Image] = []
    try:
        for fill in _FILLS:
            picture = _open_header(data + fill)
            pictures.append(picture)
            picture.draft(None, draft)  # as the file was
            picture.load()
        with ImageChops.difference(*pictures) as difference:  # one picture's worth more, not two copies
            whole = difference.getbbox() is None
    except Exception:  # noqa: BLE001 - the scan is cut (or the file is corrupt): refused as truncated
        whole = False
    for picture in pictures[1:] if whole else pictures:
        picture.close()
    return pictures[0] if whole else None


def _check_pixels(size: tuple[int, int], max_pixels: int, where: str) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise InvalidImageError(f"{where}the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InvalidImageError(
            f"{where}the image is {width}x{height} ({width * height / 1e6:.1f} MP), over the "
            f"{max_pixels / 1e6:.1f} MP limit; refusing a possible decompression bomb"
        )


def _fit_size(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """``size`` scaled to fit inside ``box``, aspect kept, never enlarged."""
    width, height = size
    scale = min(1.0, box[0] / width, box[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


@lru_cache(maxsize=64)  # pure, and the same few sizes and boxes come again and again
def _draft_request(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """The size to ask a JPEG decoder for: the smallest DCT scale (1/8, 1/4, 1/2) still at least as large
    as the upload in ``box`` (either way round: the EXIF orientation is applied later) and giving exactly
    the same upload size. Decoding at scale skips most of the decoding and the resampling."""
    turned = (box[1], box[0])
    for scale in (8, 4, 2):
        scaled = (-(-size[0] // scale), -(-size[1] // scale))
        if all(
            _fit_size(scaled, fit) == _fit_size(size, fit)
            and scaled[0] >= _fit_size(size, fit)[0]
            and scaled[1] >= _fit_size(size, fit)[1]
            for fit in (box, turned)
        ):
            return size[0] // scale, size[1] // scale  # Pillow picks this scale (or a finer one) from it
    return size


def _open_image(
    data: bytes, where: str, max_pixels: int, box: tuple[int, int], opened: Image.Image | None = None
) -> Image.Image:
    """Decode the first frame with Pillow, refusing bombs and truncated files (never globally lenient).

    ``opened`` is ``data`` already opened (its header read) by :func:`_quick_image`.
    """
    return _decode_image(data, where, max_pixels, box, opened)[0]


def _decode_image(
    data: bytes, where: str, max_pixels: int, box: tuple[int, int], opened: Image.Image | None = None
) -> tuple[Image.Image, tuple[int, int], tuple[int, int] | None, bytes]:
    """:func:`_open_image`, the frame's size by its header, the size a JPEG was asked to decode at (None:
    not a JPEG), and the file decoded: ``data``, or a baseline JPEG's ``data`` with the end-of-image
    marker it was missing (its scan whole, see :func:`_ended_scan`)."""
    try:
        image = opened if opened is not None else _open_header(data)
    except UnidentifiedImageError:
        raise not_an_image(data, where) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImageError(
            f"{where}the image has too many pixels to decode safely; refusing a possible decompression bomb"
        ) from exc
    except Exception as exc:
        raise not_an_image(data, where) from exc
    name = (image.format or "image").upper()
    header_size, draft, scans, whole = image.size, None, 0, False
    if image.format in {"JPEG", "MPO"} and min(image.size) > 0:  # decode at 1/2, 1/4 or 1/8 scale if enough
        scans, whole = jpeg_scans(data)
        if scans > MAX_JPEG_SCANS:
            raise InvalidImageError(
                f"{where}the JPEG has more than {MAX_JPEG_SCANS} scans (or {_MAX_JPEG_MARKERS} markers), "
                "more than a picture needs; refusing a file made to take minutes to decode"
            )
        draft = _draft_request(image.size, box)
        image.draft(None, draft)  # image.size is now the size decoded
    # What a decode costs: a baseline JPEG's reduced size; one in several scans its full size all the same
    # (libjpeg keeps every coefficient of the picture while its scans arrive: 1 GB for a 565-byte file
    # claiming 13000x13000, progressive or a scan per component)
    _check_pixels(header_size if whole or image.info.get("progressive") else image.size, max_pixels, where)
    try:
        image.load()
    except (EOFError, OSError) as exc:
        if not isinstance(exc, EOFError) and "truncated" not in str(exc):
            raise InvalidImageError(f"{where}the {name} image is corrupt and cannot be decoded") from exc
        # only the end-of-image marker missing (a screenshot tool's, a download cut at its last bytes)
        baseline = scans == 1 and not whole and not image.info.get("progressive")
        image.close()  # its memory is given back before the scan is decoded again
        ended = _ended_scan(data, draft) if baseline else None
        if ended is None:
            message = f"{where}the {name} image is truncated (the file ends too early)"
            raise InvalidImageError(message) from exc
        return ended, header_size, draft, data + _EOI
    except Exception as exc:
        raise InvalidImageError(f"{where}the {name} image is corrupt and cannot be decoded") from exc
    return image, header_size, draft, data


def _rotate_for_display(image: Image.Image, degrees: float) -> Image.Image:
    """Apply a video's display-matrix rotation (counter-clockwise degrees, as PyAV reports it).

    ffmpeg's own command line does the same (``-autorotate``), so a phone's portrait clip stands up.
    """
    method = _QUARTER_TURNS.get(round(degrees / 90) % 4)
    return image if method is None else image.transpose(method)


def _open_video(data: bytes, kind: str, where: str, max_pixels: int) -> Image.Image:
    """The first frame of a video, via PyAV (the ``video`` extra)."""
    try:
        import av  # the optional "video" extra, imported only for videos
    except ImportError:
        raise InvalidImageError(
            f"{where}this is a video ({kind}); reading videos needs PyAV: "
            "pip install 'anisearch-gateway[video]'"
        ) from None
    corrupt = f"{where}the {kind} video is corrupt or its codec cannot be decoded"
    try:
        container: Any = av.open(io.BytesIO(data), mode="r")
    except Exception as exc:
        raise InvalidImageError(corrupt) from exc
    with container:
        if not container.streams.video:
            raise InvalidImageError(f"{where}the {kind} file has no video track")
        stream = container.streams.video[0]
        if stream.codec_context is None:  # PyAV has no decoder for this codec
            raise InvalidImageError(corrupt)
        width, height = stream.codec_context.width, stream.codec_context.height
        if width and height:
            _check_pixels((width, height), max_pixels, where)
        try:
            frame = next(iter(container.decode(stream)), None)
            image: Image.Image | None = None if frame is None else frame.to_image()
        except Exception as exc:
            raise InvalidImageError(corrupt) from exc
    if frame is None or image is None:
        raise InvalidImageError(f"{where}the {kind} video has no frame that can be decoded")
    return _rotate_for_display(image, frame.rotation)


def _to_8bit(image: Image.Image) -> Image.Image:
    """Map 16-bit, 32-bit and float greys to 0..255 (Pillow would clip them instead)."""
    grey = image.convert("I") if image.mode.startswith("I;16") else image
    low, high = cast("tuple[float, float]", grey.getextrema())  # one band: (min, max)
    if image.mode.startswith("I;16") or 255 < high <= 65535:  # noqa: PLR2004 - 8- and 16-bit ranges
        scale, offset = 1 / 257, 0.0
    elif image.mode == "F" and low >= 0 and high <= 1:
        scale, offset = 255.0, 0.0
    elif high <= 255:  # noqa: PLR2004
        scale, offset = 1.0, 0.0
    else:
        scale = 255 / (high - low)
        offset = -low * scale
    return grey.point(lambda v: v * scale + offset).convert("L")


def _to_rgb(image: Image.Image, where: str) -> Image.Image:
    """Any mode to RGB; alpha (and palette or colour-key transparency) flattened on black."""
    if image.mode in {"I", "F"} or image.mode.startswith("I;16"):
        image = _to_8bit(image)
    try:
        if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or "transparency" in image.info:
            # an RGBA picture is pasted as it is, its alpha band the mask: no copy of it, and no copy of
            # its alpha band (a 49 MP RGBA WebP then peaks at its decoding, 16 bytes a pixel, not 21)
            if image.mode == "La":
                image = image.convert("LA").convert("RGBA")
            elif image.mode != "RGBA":
                image = image.convert("RGBA")
            flat = Image.new("RGB", image.size, (0, 0, 0))
            flat.paste(image, mask=image)
            return flat
        return image if image.mode == "RGB" else image.convert("RGB")
    except ValueError as exc:
        raise InvalidImageError(f"{where}cannot convert pixel mode {image.mode} to RGB") from exc


@cache
def _srgb() -> ImageCms.ImageCmsProfile:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _to_srgb(rgb: Image.Image, icc: object) -> Image.Image:
    """Convert from an embedded RGB colour profile (a Mac's Display P3 screenshot) to sRGB, as sharp does.

    A profile that is missing, not RGB or unreadable leaves the pixels as they are. Pillow's colour
    management is loaded only for a picture that has a profile.
    """
    if not isinstance(icc, bytes) or not icc:
        return rgb
    try:
        from PIL import ImageCms
    except ImportError:  # a Pillow built without littlecms converts nothing
        return rgb
    try:
        embedded = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if embedded.profile.xcolor_space.strip() != "RGB":
            return rgb
        converted = ImageCms.profileToProfile(rgb, embedded, _srgb(), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return rgb
    return converted or rgb


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block only loses the orientation
        return 1
    return value if isinstance(value, int) else 1


def _closed(image: Image.Image, exc: BaseException | None = None) -> bool:
    """Whether the caller closed ``image`` before it was searched: its file was closed (the ``with``
    block of ``Image.open`` left) while pixels were still to be read from it, or ``close()`` freed its
    pixels (Pillow then raises ``ValueError("Operation on closed image")`` on any use)."""
    if isinstance(image, ImageFile.ImageFile) and image.fp is None and image.tile:
        return True
    return isinstance(exc, ValueError) and str(exc) == "Operation on closed image"


def _first_frame(image: Image.Image, where: str) -> Image.Image:
    """A caller's PIL image at frame 0, loaded, without moving the caller's frame pointer.

    Raises:
        InvalidImageError: The image was closed before the search, or its pixels cannot be decoded.
    """
    closed = f"{where}the PIL image was closed before the search; search it before closing it"
    if _closed(image):
        raise InvalidImageError(closed)
    try:
        if getattr(image, "n_frames", 1) > 1 and image.tell() != 0:
            position = image.tell()
            image.seek(0)
            frame = image.copy()
            image.seek(position)
            return frame
        image.load()
    except Exception as exc:
        if _closed(image, exc):
            raise InvalidImageError(closed) from exc
        raise InvalidImageError(f"{where}the image is corrupt or truncated and cannot be decoded") from exc
    return image


def _pil_digest(image: Image.Image) -> tuple[str, int]:
    pixels = image.tobytes()
    digest = hashlib.sha256(f"{image.mode} {image.width}x{image.height}\n".encode())
    if image.mode in {"P", "PA"}:
        digest.update(bytes(image.getpalette() or ()))
    digest.update(pixels)
    return digest.hexdigest(), len(pixels)


def _encode(image: Image.Image, mime_type: str, quality: int = JPEG_QUALITY) -> bytes:
    out = io.BytesIO()
    if mime_type == "image/png":
        image.save(out, "PNG", optimize=True)
    else:  # no optimize=True: it nearly doubles the encode time for about 4 % fewer bytes
        image.save(out, "JPEG", quality=quality, comment=b"")  # Pillow would copy the source's comment
    return out.getvalue()


def _sent_as_is(image: Image.Image, data: bytes, header_size: tuple[int, int], box: tuple[int, int]) -> bool:
    """Whether a decoded source can be uploaded byte for byte instead of re-encoded.

    Only a plain baseline or progressive JPEG qualifies: RGB or grey, already inside ``box`` (its
    ``header_size``, not a reduced draft), no EXIF (so no orientation and no location), no colour profile,
    XMP or comment, and no heavier than :data:`_AS_IS_BITS_PER_PIXEL` (a quality-100 file is re-encoded
    smaller).
    """
    if image.format != "JPEG" or image.mode not in {"RGB", "L"} or set(image.info) - _PLAIN_JPEG_INFO:
        return False
    if any(marker not in {"APP0", "APP14"} for marker, _ in getattr(image, "applist", ())):
        return False
    width, height = header_size
    return (
        _fit_size((width, height), box) == (width, height)
        and len(data) * 8 <= width * height * _AS_IS_BITS_PER_PIXEL
    )


@dataclass(frozen=True, slots=True)
class SourceBytes:
    """A source read into memory, before any decoding (see :func:`read`).

    Attributes:
        data: The bytes as read.
        where: The ``"name: "`` prefix of messages about this source (empty when it has no name).
        digest: Hex SHA-256 of ``data`` (what :attr:`PreparedImage.digest` will be).
    """

    data: bytes = field(repr=False)
    where: str
    digest: str


def read(
    source: ImageSource | SourceBytes,
    *,
    max_source_bytes: int | None = None,
    wait_seconds: float | None = None,
) -> SourceBytes | Image.Image:
    """Read a source into memory and hash it, without decoding it (a PIL image is returned as is).

    The digest is enough to find a cached answer; :func:`prepare` then takes the result as its source.

    Args:
        source: What :func:`prepare` accepts.
        max_source_bytes: Largest input accepted, bytes (None: 100 MiB).
        wait_seconds: How long a named pipe may take to deliver the input, seconds (None: no bound).

    Raises:
        ImageTooLargeError: The source is over ``max_source_bytes``.
        InvalidImageError: The source is missing, unreadable or empty.
    """
    if isinstance(source, Image.Image):
        return source
    return _read_bytes(source, max_source_bytes, wait_seconds)


def _read_bytes(
    source: ImageSource | SourceBytes, max_source_bytes: int | None, wait_seconds: float | None
) -> SourceBytes:
    if isinstance(source, SourceBytes):
        return source
    limit = max_source_bytes if max_source_bytes is not None else MAX_SOURCE_BYTES
    data, where = read_source(source, limit, wait_seconds)
    if not data:
        raise InvalidImageError(f"{where}the image is empty")
    return SourceBytes(data, where, hashlib.sha256(data).hexdigest())


@dataclass(frozen=True, slots=True)
class _Decoded:
    """A source's first frame, decoded, with what is known of the source."""

    image: Image.Image
    where: str
    digest: str
    source_bytes: int
    source_format: str
    still: bytes | None
    """The source's bytes when it was a still image read from bytes or a file."""
    header_size: tuple[int, int]
    """The frame's size by its header, before any reduced decoding."""
    draft: tuple[int, int] | None
    """The size a JPEG was asked to decode at (see :func:`_draft_request`); None: decoded whole."""

    def serves(self, box: tuple[int, int]) -> bool:
        """Whether preparing for ``box`` would decode exactly this frame (the same JPEG scale)."""
        return self.draft is None or _draft_request(self.header_size, box) == self.draft


def _load(
    source: ImageSource | SourceBytes,
    box: tuple[int, int],
    max_source_bytes: int | None,
    max_pixels: int,
    wait_seconds: float | None = None,
    *,
    opened: Image.Image | None = None,
) -> _Decoded:
    """Decode the source's first frame (a JPEG at the smallest scale enough for ``box``)."""
    if isinstance(source, Image.Image):
        image = _first_frame(source, "")
        _check_pixels(image.size, max_pixels, "")
        digest, source_bytes = _pil_digest(image)
        pil_format = (source.format or "pil").lower()
        return _Decoded(image, "", digest, source_bytes, pil_format, None, image.size, None)
    raw = _read_bytes(source, max_source_bytes, wait_seconds)
    data, where = raw.data, raw.where
    kind = video_kind(data[:_SNIFFED], len(data))
    if kind is not None:
        image = _open_video(data, kind, where, max_pixels)
        return _Decoded(image, where, raw.digest, len(data), kind, None, image.size, None)
    image, header_size, draft, decoded = _decode_image(data, where, max_pixels, box, opened)
    kind = (image.format or "image").lower()
    return _Decoded(image, where, raw.digest, len(data), kind, decoded, header_size, draft)


# ---------------------------------------------------------------- public


def prepare(
    source: ImageSource | SourceBytes,
    *,
    max_width: int = MAX_WIDTH,
    max_height: int = MAX_HEIGHT,
    max_source_bytes: int | None = None,
    max_pixels: int = MAX_PIXELS,
    cut_borders: bool = False,
    wait_seconds: float | None = None,
) -> PreparedImage:
    """Turn a user's image or video into a small JPEG ready to upload, with the digest of its source.

    The content is sniffed from its bytes, never from a file extension. Videos (MP4/MOV, WebM/MKV, AVI,
    FLV, Ogg, MPEG) give their first frame through PyAV (``pip install 'anisearch-gateway[video]'``); animated
    GIF, APNG and WebP give their first frame. The EXIF orientation is applied; alpha, palette and
    colour-key transparency are flattened on black (as trace.moe does); 16-bit, CMYK and other modes
    become 8-bit RGB, and an embedded RGB colour profile is converted to sRGB. The picture is scaled
    down (never up) to fit ``max_width`` x ``max_height`` and encoded as JPEG quality 85 with no
    metadata (no EXIF, no location). A plain JPEG that already fits (no metadata, no colour profile,
    at most 2 bits per pixel) is uploaded as it is, not decoded and re-encoded again. A baseline JPEG
    missing only its end-of-image marker (``FF D9``; its scan whole) is read as the whole file it is,
    and uploaded with the marker (a PIL image the caller opened is decoded as Pillow decodes it).

    Args:
        source: A path (``str`` or ``os.PathLike``), ``bytes``/``bytearray``/``memoryview``, a binary
            file object (read from its current position to the end), or a ``PIL.Image.Image`` (any
            mode; frame 0 of an animation; the caller's image is not modified), or what :func:`read`
            returned for one.
        max_width: Largest upload width, pixels.
        max_height: Largest upload height, pixels.
        max_source_bytes: Largest input accepted, bytes; at most this plus one byte is read. None means
            :data:`~anisearch._limits.MAX_SOURCE_BYTES` (100 MiB) for images and videos alike: an image
            larger than a provider's upload limit is scaled down, not refused.
        max_pixels: Largest decoded frame accepted, pixels; anything larger is refused as a possible
            decompression bomb, from its header, before decoding. A baseline JPEG counts at the scale it
            is decoded at (1/8 of each side when that is enough for the box); a progressive one whole.
        cut_borders: Trim black borders by trace.moe's ``cutBorders`` rule (see
            :func:`anisearch._borders.find_borders`) before scaling.
        wait_seconds: How long a named pipe may take to deliver the input, seconds (None: no bound).

    Returns:
        The prepared image. ``digest`` is the SHA-256 of the source bytes (for a PIL image: of its mode,
        size, palette and pixels).

    Raises:
        ConfigurationError: A limit is not a positive number.
        ImageTooLargeError: The source is over ``max_source_bytes`` (``provider`` is None).
        InvalidImageError: The input is missing, empty, not an image or video (text, HTML, JSON, PDF
            ...), truncated, corrupt, has no pixels, is over ``max_pixels``, or is a video and PyAV is
            not installed.
    """
    for name, value in (("max_width", max_width), ("max_height", max_height), ("max_pixels", max_pixels)):
        if value < 1:
            raise ConfigurationError(f"{name} must be at least 1, not {value}")
    if max_source_bytes is not None and max_source_bytes < 1:
        raise ConfigurationError(f"max_source_bytes must be at least 1, not {max_source_bytes}")
    return _prepare(
        source,
        (max_width, max_height),
        max_source_bytes=max_source_bytes,
        max_pixels=max_pixels,
        cut_borders=cut_borders,
        wait_seconds=wait_seconds,
    )


def _prepare(
    source: ImageSource | SourceBytes,
    box: tuple[int, int],
    *,
    max_source_bytes: int | None = None,
    max_pixels: int = MAX_PIXELS,
    cut_borders: bool = False,
    wait_seconds: float | None = None,
    opened: Image.Image | None = None,
) -> PreparedImage:
    """:func:`prepare` with checked arguments; ``opened`` is the source already opened by
    :func:`_quick_image`."""
    decoded = _load(source, box, max_source_bytes, max_pixels, wait_seconds, opened=opened)
    return _finish(decoded, box, cut_borders=cut_borders, keep=isinstance(source, Image.Image))


def _finish(decoded: _Decoded, box: tuple[int, int], *, cut_borders: bool, keep: bool) -> PreparedImage:
    """The upload for ``box`` from a decoded frame; ``keep``: leave ``decoded.image`` as it was (it is the
    caller's, or serves another box)."""
    image = decoded.image
    if (
        decoded.still is not None
        and not cut_borders
        and _sent_as_is(image, decoded.still, decoded.header_size, box)
    ):
        return PreparedImage(
            data=decoded.still,
            mime_type="image/jpeg",
            width=image.width,
            height=image.height,
            digest=decoded.digest,
            source_format=decoded.source_format,
            source_bytes=decoded.source_bytes,
        )
    orientation = _orientation(image)
    icc = image.info.get("icc_profile")
    rgb = _to_rgb(image, decoded.where)
    if orientation in _TRANSPOSE:
        rgb = rgb.transpose(_TRANSPOSE[orientation])
    if not keep and rgb is not image:  # a frame decoded for this upload alone: its pixels are let go
        image.close()  # now, not when the upload is made (it and the RGB copy would be held at once)
    if cut_borders:
        from anisearch._borders import cut_borders as cut  # and its image operations, only when asked

        rgb, _ = cut(rgb)
    size = _fit_size(rgb.size, box)
    if size != rgb.size:
        rgb = rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    elif rgb is image and keep:  # saving sets attributes on the image
        rgb = rgb.copy()  # a picture decoded here for one box is nobody else's: it is encoded as it is
    rgb = _to_srgb(rgb, icc)
    return PreparedImage(
        data=_encode(rgb, "image/jpeg"),
        mime_type="image/jpeg",
        width=rgb.width,
        height=rgb.height,
        digest=decoded.digest,
        source_format=decoded.source_format,
        source_bytes=decoded.source_bytes,
    )


def prepare_boxes(
    source: ImageSource | SourceBytes,
    boxes: Sequence[tuple[int, int]],
    *,
    wait_seconds: float | None = None,
    digest: str | None = None,
) -> list[PreparedImage]:
    """:func:`prepare` ``source`` for each upload box, decoding it once for every box it may serve.

    Each upload is exactly what :func:`prepare` gives for its box alone, whichever other boxes are asked
    with it: a provider's upload (and so its answer and similarity) never depends on the other providers
    of the search. A still image or video is decoded once for all boxes; a JPEG once per scale its boxes
    decode it at (see :func:`_draft_request`).

    Args:
        source: What :func:`prepare` accepts (read once, here, when it is a path or a stream).
        boxes: ``(max_width, max_height)`` per upload, pixels.
        wait_seconds: How long a named pipe may take to deliver the input, seconds (None: no bound).
        digest: The source's digest when it was read before (a file read again): it must not have changed.

    Returns:
        One prepared image per box, in the order of ``boxes``.

    Raises:
        ImageTooLargeError, InvalidImageError: As :func:`prepare`; InvalidImageError also when the source's
            bytes are no longer those of ``digest``.
    """
    if not isinstance(source, Image.Image):  # a file read again is not waited for (it was a file)
        source = _read_bytes(source, None, 0.0 if digest is not None else wait_seconds)
        if digest is not None and source.digest != digest:
            raise InvalidImageError(f"{source.where}the file changed while it was searched")
    made: dict[tuple[int, int], PreparedImage] = {}
    for box in boxes:
        if box in made:
            continue
        decoded = _load(source, box, None, MAX_PIXELS)
        served = [other for other in dict.fromkeys(boxes) if other not in made and decoded.serves(other)]
        keep = isinstance(source, Image.Image) or len(served) > 1
        for other in served:
            made[other] = _finish(decoded, other, cut_borders=False, keep=keep)
    return [made[box] for box in boxes]


def quick(source: ImageSource | SourceBytes) -> bool:
    """Whether preparing ``source`` takes only a millisecond or two (so an event loop may do it in place).

    A worker thread costs about as much as that, and far more on a busy machine. Quick means: bytes
    already in memory, at most :data:`QUICK_BYTES`, holding an image of at most :data:`QUICK_PIXELS`
    pixels by its header (which is all that is read here; only a first frame is ever prepared). Never
    raises: a file, a stream, a video, a larger picture, or anything that is not an image is simply not
    quick, and :func:`prepare` reports what is wrong with it.
    """
    image = _quick_image(source)
    if image is None:
        return False
    image.close()
    return True


def prepare_quick(
    source: ImageSource | SourceBytes, *, max_width: int = MAX_WIDTH, max_height: int = MAX_HEIGHT
) -> PreparedImage | None:
    """:func:`prepare` ``source`` when it is :func:`quick`, reading its header once for both; else None.

    Args:
        source: What :func:`prepare` accepts.
        max_width: Largest upload width, pixels.
        max_height: Largest upload height, pixels.

    Returns:
        The prepared image, or None when ``source`` is not quick (prepare it in a worker thread).

    Raises:
        ConfigurationError, InvalidImageError: As :func:`prepare`.
    """
    if max_width < 1 or max_height < 1:
        return prepare(source, max_width=max_width, max_height=max_height)  # which says what is wrong
    image = _quick_image(source)
    return None if image is None else _prepare(source, (max_width, max_height), opened=image)


def _quick_image(source: ImageSource | SourceBytes) -> Image.Image | None:
    """``source`` opened (header read, nothing decoded) when it is :func:`quick`, else None."""
    if isinstance(source, SourceBytes):
        data: bytes | bytearray | memoryview = source.data
    elif isinstance(source, bytes | bytearray | memoryview):
        data = source
    else:
        return None
    if not 0 < len(data) <= QUICK_BYTES or video_kind(bytes(data[:_SNIFFED]), len(data)) is not None:
        return None
    try:
        image = _open_header(bytes(data))
    except Exception:  # noqa: BLE001 - not an image Pillow opens: prepare() will say why, in a thread
        return None
    if image.width * image.height > QUICK_PIXELS:
        image.close()
        return None
    return image


def is_picture(source: object) -> bool:
    """Whether ``source`` is a caller's ``PIL.Image.Image`` (read as it is, never from bytes)."""
    return isinstance(source, Image.Image)


def fits(prepared: PreparedImage, limits: UploadLimits) -> bool:
    """Whether ``prepared`` already meets ``limits`` (format, size, body bytes): nothing for :func:`fit`."""
    return (
        prepared.mime_type in limits.formats
        and prepared.width <= limits.max_width
        and prepared.height <= limits.max_height
        and prepared.body_size() <= limits.max_bytes
    )


def fit(prepared: PreparedImage, limits: UploadLimits) -> PreparedImage:
    """Adapt a prepared image to one provider's upload limits.

    When the image already fits it is returned as is (no work). Otherwise it is re-encoded as JPEG
    (PNG if the provider takes PNG but not JPEG) within ``limits.max_width`` x ``limits.max_height``,
    lowering the JPEG quality from 85 to 40, then the size by 0.75 per step down to 160 pixels wide,
    until the image is within ``limits.max_bytes``. ``digest`` and the ``source_*`` fields are kept: they
    describe the source.

    Args:
        prepared: The output of :func:`prepare`.
        limits: The provider's :class:`~anisearch._provider.UploadLimits`.

    Returns:
        ``prepared`` itself, or a re-encoded copy that satisfies ``limits``.

    Raises:
        ConfigurationError: ``limits.formats`` holds neither ``image/jpeg`` nor ``image/png``.
        ImageTooLargeError: Even the smallest attempt is over ``limits.max_bytes`` (``provider`` is
            None; ``size_bytes`` is that smallest body).
        InvalidImageError: ``prepared.data`` cannot be decoded.
    """
    if fits(prepared, limits):
        return prepared
    qualities: tuple[int, ...]
    if "image/jpeg" in limits.formats:
        mime_type, qualities = "image/jpeg", _FIT_QUALITIES
    elif "image/png" in limits.formats:
        mime_type, qualities = "image/png", (JPEG_QUALITY,)
    else:
        raise ConfigurationError(
            f"the provider accepts only {sorted(limits.formats)}; anisearch makes JPEG or PNG"
        )
    image = _to_rgb(_open_image(prepared.data, "", MAX_PIXELS, (prepared.width, prepared.height)), "")
    size = _fit_size(image.size, (limits.max_width, limits.max_height))
    smallest = None
    while True:
        scaled = image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)
        for quality in qualities:
            candidate = dataclasses.replace(
                prepared,
                data=_encode(scaled, mime_type, quality),
                mime_type=mime_type,
                width=size[0],
                height=size[1],
            )
            body = candidate.body_size()
            if body <= limits.max_bytes:
                return candidate
            smallest = body if smallest is None else min(smallest, body)
        if size[0] <= _FIT_MIN_WIDTH:
            break
        width = max(_FIT_MIN_WIDTH, int(size[0] * _FIT_SHRINK))
        size = (width, max(1, round(width * image.height / image.width)))
    raise ImageTooLargeError(
        f"the image cannot be made small enough: {smallest} bytes at {size[0]}x{size[1]}, over the "
        f"provider's {limits.max_bytes}-byte limit",
        size_bytes=smallest,
        limit_bytes=limits.max_bytes,
    )
