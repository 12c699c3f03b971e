"""Reading what the user passed and telling what it is: bounded reads, magic numbers, clear refusals.

Content is recognised from its first bytes, never from a file name: video containers (for PyAV),
and the things people pass by mistake (an HTML error page saved instead of a picture, JSON, text, a
PDF, a HEIC photo) so the message says what the input *is*. Messages never quote the input's bytes.
"""

from __future__ import annotations

import codecs
import io
import os
import re
import select
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from anisearch._exceptions import ImageTooLargeError, InvalidImageError
from anisearch._redact import printable

__all__ = ["BinaryReader", "human_size", "not_an_image", "read_source", "too_large", "video_kind"]

_MIB = 1024 * 1024
_IMAGE_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_VIDEO_PREFIXES = ((b"FLV", "flv"), (b"OggS", "ogg"), (b"\x00\x00\x01\xba", "mpeg"))
_QUICKTIME_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}
"""What a QuickTime movie may start with instead of ``ftyp`` (files from before 2001, some cameras)."""
_NOT_IMAGES = (
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"%!PS", "a PostScript file"),
    (b"ID3", "an MP3 audio file"),
    (b"fLaC", "a FLAC audio file"),
)


class BinaryReader(Protocol):
    """Anything with a binary ``read()``: an open file, :class:`io.BytesIO`, a spooled upload."""

    def read(self, size: int = -1, /) -> bytes: ...


# ---------------------------------------------------------------- reading the source


def human_size(size: int) -> str:
    """``size`` bytes in words: ``"50.0 MiB"``, ``"48.3 KiB"``, ``"1000 bytes"``."""
    if size >= _MIB:
        return f"{size / _MIB:.1f} MiB"
    return f"{size / 1024:.1f} KiB" if size >= 1024 else f"{size} bytes"  # noqa: PLR2004 - one KiB


def too_large(where: str, size: int | None, limit: int) -> ImageTooLargeError:
    """The error for a source over ``limit`` bytes (``size`` None when only "more than" is known)."""
    what = f"is {human_size(size)}" if size is not None else f"is larger than {human_size(limit)}"
    return ImageTooLargeError(
        f"{where}the input {what}, over the {human_size(limit)} limit",
        size_bytes=size,
        limit_bytes=limit,
    )


def _text_mode(where: str) -> InvalidImageError:
    return InvalidImageError(f"{where}the file object returned text; open the file in binary mode ('rb')")


def read_bounded(reader: BinaryReader, limit: int, where: str) -> bytes:
    """Read to the end, but never more than ``limit`` + 1 bytes.

    Raises:
        ImageTooLargeError: There is more than ``limit`` bytes (the rest is not read).
        InvalidImageError: The reader gives text, or fails to decode the bytes as text, or fails.
    """
    buffer = io.BytesIO()  # grows in place; getvalue() hands its bytes over without a second copy
    total = 0
    while total <= limit:
        try:
            chunk: object = reader.read(min(limit + 1 - total, _MIB))
        except UnicodeDecodeError as exc:  # a text reader, decoding an image's bytes
            raise _text_mode(where) from exc
        except (OSError, ValueError) as exc:  # a closed file, an I/O error, a non-blocking empty pipe
            raise InvalidImageError(f"{where}cannot read the input ({type(exc).__name__})") from exc
        if not chunk:
            break
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise _text_mode(where)
        total += buffer.write(chunk)
    if total > limit:
        raise too_large(where, None, limit)
    return buffer.getvalue()


def _is_url(text: str) -> bool:
    return text.lower().startswith(("http:/", "https:/"))  # Path() folds "//" into "/"


_OTHER_SCHEME = re.compile(r"(?i)(data|[a-z][a-z0-9+.-]+(?=:/)):")
"""A URL of a scheme searches do not fetch (``file://``, ``ftp://``, ``data:``), as ``Path()`` leaves it."""


def missing_hint(text: str) -> str:
    """Why a path that names no file may have been meant as something else (a URL of a scheme that is not
    fetched, a URL with spaces around it), or ``""``."""
    if _is_url(text):
        return "URLs are fetched by search(), not read as paths"
    if text != text.strip() and _is_url(text.strip()):
        return "a URL with spaces around it: remove them"
    scheme = _OTHER_SCHEME.match(text)
    if scheme and scheme.group(1).lower() == "file":
        from urllib.parse import unquote, urlsplit

        return f"a file: URL: give its path, {printable(unquote(urlsplit(text).path))}"
    if scheme:
        return f"a {scheme.group(1).lower()}: URL; only http(s) URLs are fetched, other inputs are paths"
    return ""


def _read_waiting(
    read_some: Callable[[int], bytes | None],
    descriptor: int,
    limit: int,
    where: str,
    wait_seconds: float | None,
) -> bytes:
    """Read a pipe or socket to its end without blocking past ``wait_seconds`` for a writer or for data.

    ``read_some(n)`` must never block: it returns what is there now, or None/empty when nothing is (an
    empty answer right after the descriptor was reported readable is the end).
    """
    ends = None if wait_seconds is None else time.monotonic() + wait_seconds
    buffer = io.BytesIO()  # one growing buffer, not a list of chunks joined at the end (two copies)
    total = 0
    while True:
        chunk = read_some(min(limit + 1 - total, _MIB))  # a buffered reader may hold data already
        if not chunk:
            left = None if ends is None else max(0.0, ends - time.monotonic())
            ready, _, _ = select.select([descriptor], [], [], left)
            if not ready:
                if total:  # bytes came, but not all of them in time: a slow writer, not a missing one
                    raise InvalidImageError(
                        f"{where}only {total} bytes arrived within {wait_seconds:.1f} s: the input took "
                        "longer than allowed (ANISEARCH_TIMEOUT, or the search's deadline)"
                    )
                raise InvalidImageError(
                    f"{where}nothing arrived within {wait_seconds:.1f} s (a pipe with no writer?)"
                )
            chunk = read_some(min(limit + 1 - total, _MIB))
            if not chunk:
                return buffer.getvalue()
        total += buffer.write(chunk)
        if total > limit:
            raise too_large(where, None, limit)


def _read_pipe(path: Path, limit: int, where: str, wait_seconds: float | None) -> bytes:
    """Read a named pipe (FIFO): opened without blocking, since opening one with no writer would block."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)

    def read_some(size: int) -> bytes | None:
        try:
            return os.read(descriptor, size)
        except BlockingIOError:
            return None

    try:
        return _read_waiting(read_some, descriptor, limit, where, wait_seconds)
    finally:
        os.close(descriptor)


def _pipe_descriptor(source: object) -> int | None:
    """The descriptor of a binary file object reading a pipe or a socket (stdin in a pipeline), else None."""
    if sys.platform == "win32" or not isinstance(source, io.BufferedReader | io.FileIO):
        return None
    try:
        descriptor = source.fileno()
        mode = os.fstat(descriptor).st_mode
    except (OSError, ValueError):
        return None
    return descriptor if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else None


def _read_stream(
    source: io.BufferedReader | io.FileIO, descriptor: int, limit: int, where: str, wait_seconds: float | None
) -> bytes:
    """Read a pipe-backed file object within ``wait_seconds`` (its descriptor is non-blocking meanwhile)."""
    read = source.read1 if isinstance(source, io.BufferedReader) else source.read
    blocking = os.get_blocking(descriptor)
    os.set_blocking(descriptor, False)
    try:
        return _read_waiting(read, descriptor, limit, where, wait_seconds)
    except OSError as exc:
        raise InvalidImageError(f"{where}cannot read the input ({type(exc).__name__})") from exc
    finally:
        os.set_blocking(descriptor, blocking)


def _read_file(path: Path, limit: int, where: str, wait_seconds: float | None) -> bytes:
    info = path.stat()
    if stat.S_ISDIR(info.st_mode):
        raise InvalidImageError(f"{where}this is a directory, not an image file")
    if stat.S_ISFIFO(info.st_mode):
        return _read_pipe(path, limit, where, wait_seconds)
    if info.st_size > limit:  # 0 for devices: the bounded read below still applies
        raise too_large(where, info.st_size, limit)
    with path.open("rb") as file:
        return read_bounded(file, limit, where)


def _read_path(path: Path, limit: int, where: str, wait_seconds: float | None) -> bytes:
    try:
        return _read_file(path, limit, where, wait_seconds)
    except InvalidImageError:
        raise
    except FileNotFoundError:
        hint = missing_hint(str(path))
        raise InvalidImageError(f"{where}no such file" + (f" ({hint})" if hint else "")) from None
    except OSError as exc:
        raise InvalidImageError(
            f"{where}cannot read the file ({exc.strerror or type(exc).__name__})"
        ) from exc
    except ValueError as exc:  # a NUL byte in the path
        raise InvalidImageError(f"{where}not a valid file name") from exc


def read_source(source: object, limit: int, wait_seconds: float | None = None) -> tuple[bytes, str]:
    """The source's bytes and a ``"name: "`` prefix for messages (empty when it has no name).

    Args:
        source: A path, bytes, or an object with a binary ``read()``.
        limit: Largest input accepted, bytes; at most ``limit`` + 1 bytes are read.
        wait_seconds: How long a pipe (a named one, or stdin in a pipeline) may take to deliver its data,
            seconds (None: no bound).

    Raises:
        ImageTooLargeError: Over ``limit``.
        InvalidImageError: Missing, unreadable, a directory, a pipe with no writer, a file object in text
            mode (whatever its encoding), a bad or empty name.
    """
    if isinstance(source, str | os.PathLike):
        path = os.fsdecode(source)
        if not path:  # Path("") is the working directory
            raise InvalidImageError("an empty path names no image")
        where = f"{printable(path)}: "
        return _read_path(Path(path), limit, where, wait_seconds), where
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if len(data) > limit:
            raise too_large("", len(data), limit)
        return data, ""
    read = getattr(source, "read", None)
    if callable(read):
        name = getattr(source, "name", None)
        where = f"{printable(name)}: " if isinstance(name, str) else ""
        if isinstance(source, io.TextIOBase):  # open(path), sys.stdin: refused before a byte is decoded
            raise _text_mode(where)
        descriptor = _pipe_descriptor(source)
        if descriptor is not None and isinstance(source, io.BufferedReader | io.FileIO):
            return _read_stream(source, descriptor, limit, where, wait_seconds), where
        reader: BinaryReader = source  # type: ignore[assignment]  # checked: it has a callable read()
        return read_bounded(reader, limit, where), where
    raise InvalidImageError(
        f"cannot read an image from {type(source).__name__}; pass a path, bytes, a binary file or a PIL image"
    )


# ---------------------------------------------------------------- sniffing


def _quicktime_atom(head: bytes, total: int) -> bool:
    """Whether the input starts with a QuickTime atom other than ``ftyp`` whose size fits in the input.

    The size matters: a text with "free" as its fifth to eighth letters ("for free") reads as an atom of
    hundreds of megabytes.
    """
    if head[4:8] not in _QUICKTIME_ATOMS:
        return False
    size, header = int.from_bytes(head[:4], "big"), 8
    if size == 1:  # a 64-bit size follows the type
        size, header = int.from_bytes(head[8:16], "big"), 16
    if not header <= size <= total:
        return False
    following = head[size + 4 : size + 8]  # the next atom's type, when the head holds it
    return len(following) < 4 or all(32 <= byte < 127 or byte == 0xA9 for byte in following)  # noqa: PLR2004


def video_kind(head: bytes, total: int | None = None) -> str | None:  # noqa: PLR0911 - one return per container
    """The video container the bytes start with, or None (images, AVIF and HEIF included, are None).

    Args:
        head: The input's first bytes (4096 tell a text from a transport stream best).
        total: The input's whole size, bytes (None: ``head`` is the whole input).
    """
    if any(head.startswith(magic) for magic, _ in _IMAGE_SIGNATURES):  # a BMP's size may put 0x47 at 4
        return None
    if _quicktime_atom(head, len(head) if total is None else total):
        return "mov"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _AVIF_BRANDS or brand in _HEIF_BRANDS:
            return None
        if brand == b"qt  ":
            return "mov"
        return "3gp" if brand[:3] in {b"3gp", b"3g2"} else "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm" if b"webm" in head[:64] else "mkv"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    prefixed = (kind for prefix, kind in _VIDEO_PREFIXES if head.startswith(prefix))
    return next(prefixed, None) or _transport_stream(head)


def _transport_stream(head: bytes) -> str | None:
    """``"mpeg-ts"`` (188-byte packets) or ``"m2ts"`` (192: Blu-ray and AVCHD put a 4-byte arrival time
    before each packet) when three packets in a row start with the sync byte and the bytes are not text
    (which may hold a "G" at those places). A stream damaged further on is still one."""
    for kind, start, step in (("mpeg-ts", 0, 188), ("m2ts", 4, 192)):
        if head[start : start + 3 * step : step] == b"\x47\x47\x47":
            return None if _text_kind(head) is not None else kind
    return None


_TEXT_KINDS = (
    (("<!doctype html", "<html", "<head", "<body"), "an HTML page"),
    (("<?xml",), "an XML document"),
    (("{", "["), "JSON"),
)


def _text_kind(head: bytes) -> str | None:
    """What a text input looks like ("an HTML page", "JSON" ...), or None if it is not text."""
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head[:4096], final=False)
    except UnicodeDecodeError:
        return None
    if any(ord(c) < 32 and c not in "\t\n\r\f" for c in text):  # noqa: PLR2004 - C0 control characters
        return None
    lowered = text.lstrip().lower()
    if "<svg" in lowered[:1024]:
        return "an SVG drawing (convert it to PNG first)"
    return next((kind for prefixes, kind in _TEXT_KINDS if lowered.startswith(prefixes)), "text")


def not_an_image(data: bytes, where: str) -> InvalidImageError:  # noqa: PLR0911 - a return per kind
    """The error for bytes no decoder accepted, saying what they look like instead."""
    for magic, name in _IMAGE_SIGNATURES:
        if data.startswith(magic):
            return InvalidImageError(f"{where}the {name} image is corrupt and cannot be decoded")
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return InvalidImageError(
            f"{where}HEIC/HEIF photos are not supported; convert it to JPEG or PNG first"
        )
    if data.startswith(b"\x00\x00\x01\x00") and data[4:6] != b"\x00\x00":  # an icon directory, 1+ entries
        return InvalidImageError(f"{where}ICO icons are not supported; convert it to PNG first")
    if data.startswith(b"RIFF") and data[8:12] == b"WAVE":
        return InvalidImageError(f"{where}this is a WAV audio file, not an image")
    for magic, name in _NOT_IMAGES:
        if data.startswith(magic):
            return InvalidImageError(f"{where}this is {name}, not an image")
    kind = _text_kind(data)
    if kind is not None:
        return InvalidImageError(f"{where}this is {kind}, not an image")
    return InvalidImageError(f"{where}not an image or video format anisearch can read")
