"""Black-border trimming that mirrors trace.moe's ``cutBorders`` rule, done locally with Pillow.

trace.moe (``src/lib/prepare-search-image.ts`` of soruly/trace.moe-api) scales the upload to fit
320x320, then with ``cutBorders``: ``normalize()`` (stretch the L* channel between its 1st and 99th
percentiles), ``dilate(2)`` (a 5x5 window that grows the *dark* areas, which swallows thin bright UI
lines lying on a black border), ``trim({background: "black", threshold: 30})`` (median 3x3, then the
bounding box of pixels more than 30 away from black in any band). The box is used only when it is
within 0.05 of 16:9 or 4:3; a box within 0.1 of 21:9 that is clearly smaller than the image (by more
than 5% in either direction) is cropped and padded back to 16:9; anything else is left uncropped.

Doing the same before upload saves the server that work, lets providers without server-side trimming
benefit, and makes the colour layout descriptor (and so the cache key) deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from PIL import Image, ImageCms, ImageFilter, ImageMath

from anisearch._sdk._common import fit_inside

__all__ = ["BorderCut", "cut_borders", "find_borders"]

DETECTION_BOX = 320
"""trace.moe detects borders on the image scaled to fit this square (pixels)."""
THRESHOLD = 30
"""A pixel further than this from black, in any band (0..255), is picture, not border."""
DILATE_RADIUS = 2
"""sharp's ``dilate(2)``: a (2 * 2 + 1)-pixel square window."""
NORMALISE_PERCENTILES = (1, 99)
"""sharp's ``normalize()`` defaults: L* is stretched between these percentiles of its histogram."""

_ASPECTS = ((16 / 9, 0.05), (4 / 3, 0.05))
_CINEMA = (21 / 9, 0.1)
_CINEMA_MIN_SHRINK = 0.05


@dataclass(frozen=True, slots=True)
class BorderCut:
    """What the border rule decided for one image.

    Attributes:
        action: ``"crop"`` (the picture is ~16:9 or ~4:3: keep only it), ``"pad"`` (the picture is
            ~21:9: keep it and pad it back to 16:9 with black bars), or ``"keep"`` (no border found,
            or the picture has an unusual aspect ratio: the image is left as it is).
        box: The picture found inside the borders, as ``(left, top, right, bottom)`` in the input
            image's pixels, or None when the image is all border.
        aspect: The width / height of the picture as detected at 320 px (the ratio the rule tests),
            or None when the image is all border.
    """

    action: Literal["crop", "pad", "keep"]
    box: tuple[int, int, int, int] | None
    aspect: float | None


@cache
def _lab_transforms() -> tuple[ImageCms.ImageCmsTransform, ImageCms.ImageCmsTransform]:
    # NOCACHE: littlecms' one-pixel cache is not safe when threads share a transform.
    srgb = ImageCms.createProfile("sRGB")
    lab = ImageCms.createProfile("LAB", 6500)  # libvips' LAB is D65
    flags = ImageCms.Flags.NOCACHE
    return (
        ImageCms.buildTransform(srgb, lab, "RGB", "LAB", flags=flags),
        ImageCms.buildTransform(lab, srgb, "LAB", "RGB", flags=flags),
    )


def _percentile(histogram: list[int], percent: float) -> int:
    """The first bin whose cumulative count exceeds ``percent``% of the total (libvips ``percent``)."""
    limit = sum(histogram) * percent / 100
    cumulative = 0
    for index, count in enumerate(histogram):
        cumulative += count
        if cumulative > limit:
            return index
    return len(histogram) - 1


def _normalise(rgb: Image.Image) -> Image.Image:
    """sharp's ``normalize()``: stretch L* (in whole L* units, as libvips bins it) to 0..100."""
    to_lab, to_rgb = _lab_transforms()
    lab = ImageCms.applyTransform(rgb, to_lab)
    if lab is None:  # pragma: no cover - applyTransform returns None only when asked to work in place
        raise AssertionError("the LAB transform returned nothing")
    lightness, a, b = lab.split()
    whole_units = [0] * 101  # Pillow stores L* * 2.55 in a byte; libvips casts L* to an integer
    for value, count in enumerate(lightness.histogram()):
        whole_units[min(100, value * 100 // 255)] += count
    low, high = (_percentile(whole_units, p) for p in NORMALISE_PERCENTILES)
    if abs(high - low) <= 1:
        return rgb
    gain = 100 / (high - low)
    offset = low * 2.55 * gain
    stretched = lightness.point(lambda v: min(255, max(0, round(v * gain - offset))))
    out = ImageCms.applyTransform(Image.merge("LAB", (stretched, a, b)), to_rgb)
    if out is None:  # pragma: no cover - see above
        raise AssertionError("the sRGB transform returned nothing")
    return out


def _bitwise_and(a: Image.Image, b: Image.Image) -> Image.Image:
    result: Any = ImageMath.lambda_eval(lambda args: args["a"] & args["b"], a=a, b=b)
    image: Image.Image = result
    return image


def _shifted(band: Image.Image, offset: int, *, horizontal: bool) -> Image.Image:
    """``band`` moved so that pixel x reads x + offset; outside pixels are 255 (neutral for AND)."""
    out = Image.new("I", band.size, 255)
    out.paste(band, (-offset, 0) if horizontal else (0, -offset))
    return out


def _dilate_dark(rgb: Image.Image, radius: int) -> Image.Image:
    """sharp's ``dilate(radius)`` on an 8-bit image.

    sharp runs libvips ``morph`` with an all-zero (2r+1)-square mask and inverts the result. libvips'
    vector path computes that with byte-wise XOR/OR, so each band becomes the *bitwise AND* of its
    window: at most the window's minimum, so dark areas grow by ``radius`` and thin bright lines on a
    black border vanish. The window is separable (AND is associative) and edge-clipped (libvips
    extends edges by copying, which AND ignores).
    """
    bands = []
    for band in rgb.split():
        acc = band.convert("I")
        for horizontal in (True, False):
            source = acc
            for step in range(1, radius + 1):
                for offset in (step, -step):
                    acc = _bitwise_and(acc, _shifted(source, offset, horizontal=horizontal))
        bands.append(acc.convert("L"))
    return Image.merge("RGB", bands)


def _content_box(small: Image.Image) -> tuple[int, int, int, int] | None:
    """The box libvips ``find_trim`` reports on the normalised, dilated image (None: all border).

    ``find_trim`` takes a 3x3 median, then keeps pixels more than ``THRESHOLD`` from black in any
    band. A median and a threshold commute, so this thresholds first and takes the 3x3 majority of
    the resulting 0/255 mask with a box blur (at least 5 of 9 set: a mean above 127), which gives
    the same mask as Pillow's much slower median filter.
    """
    probe = _dilate_dark(_normalise(small), DILATE_RADIUS)
    mask = probe.point(lambda v: 255 if v > THRESHOLD else 0)
    majority = mask.filter(ImageFilter.BoxBlur(1)).point(lambda v: 255 if v > 127 else 0)  # noqa: PLR2004
    return majority.getbbox()


def find_borders(image: Image.Image) -> BorderCut:
    """Decide, as trace.moe's ``cutBorders`` would, whether and how to trim an image's black borders.

    Args:
        image: An RGB image at any size (it is scaled to fit 320x320 for the detection, as upstream).

    Returns:
        The decision, with the picture's box mapped back to ``image``'s pixels.

    Raises:
        ValueError: The image has no pixels.
    """
    if image.width < 1 or image.height < 1:
        raise ValueError("cannot look for borders in an image without pixels")
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    small = rgb.resize(
        fit_inside(rgb.size, (DETECTION_BOX, DETECTION_BOX), enlarge=True),
        Image.Resampling.LANCZOS,
        reducing_gap=3.0,
    )
    found = _content_box(small)
    if found is None:
        return BorderCut("keep", None, None)
    left, top, right, bottom = found
    width, height = right - left, bottom - top
    aspect = width / height
    sx, sy = image.width / small.width, image.height / small.height
    box = (round(left * sx), round(top * sy), round(right * sx), round(bottom * sy))
    if any(abs(aspect - target) < tolerance for target, tolerance in _ASPECTS):
        return BorderCut("crop", box, aspect)
    shrunk = (small.width - width) / small.width > _CINEMA_MIN_SHRINK or (
        small.height - height
    ) / small.height > _CINEMA_MIN_SHRINK
    if abs(aspect - _CINEMA[0]) < _CINEMA[1] and shrunk:
        return BorderCut("pad", box, aspect)
    return BorderCut("keep", box, aspect)


def cut_borders(image: Image.Image) -> tuple[Image.Image, BorderCut]:
    """Trim an image's black borders by trace.moe's rule (see :func:`find_borders`).

    Args:
        image: An RGB image at any size. It is not modified.

    Returns:
        The trimmed image (``image`` itself when the rule keeps it) and the decision. A ``"pad"``
        result is the ~21:9 picture centred on a black 16:9 canvas of the picture's width.

    Raises:
        ValueError: The image has no pixels.
    """
    decision = find_borders(image)
    if decision.action == "keep" or decision.box is None:
        return image, decision
    picture = image.crop(decision.box)
    if decision.action == "crop":
        return picture, decision
    height = max(picture.height, round(picture.width * 9 / 16))
    canvas = Image.new("RGB", (picture.width, height), (0, 0, 0))
    canvas.paste(picture, (0, (height - picture.height) // 2))
    return canvas, decision
