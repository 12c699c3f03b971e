"""Image input -> :class:`PreparedImage`: sniff, first frame, flatten, downscale, re-encode, guard limits.

SPEC (to be implemented; the signatures below are the contract the rest of the code relies on).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """An image ready to upload: re-encoded, small, with its digest and colour layout descriptor.

    Attributes:
        data: The encoded bytes to upload.
        mime_type: ``"image/jpeg"`` or ``"image/png"``.
        width: Pixels.
        height: Pixels.
        digest: Hex SHA-256 of the *source* bytes (the exact-match part of the cache key).
        descriptor: The 33-number MPEG-7 colour layout descriptor (the perceptual part of the cache key,
            and trace.moe's ``vector``).
        source_format: What the sniffed input was (``"jpeg"``, ``"png"``, ``"gif"``, ``"webp"``, ``"mp4"`` ...).
        source_bytes: Size of the input, in bytes.
    """

    data: bytes
    mime_type: str
    width: int
    height: int
    digest: str
    descriptor: tuple[int, ...] = field(default=())
    source_format: str = "jpeg"
    source_bytes: int = 0
