"""Encoded image bytes -> RGB uint8 pixels, on access, in the input workers.

JPEG goes through simplejpeg (libjpeg-turbo, no Python-level copies: the fastest
decoder measured here, see BENCHMARKS.md); everything else (PNG, BMP, WebP, CMYK or
progressive JPEGs simplejpeg refuses) through OpenCV. EXIF orientation is ignored, as
COCO's and VOC's annotations are in the stored pixels' frame. A file that no decoder
reads raises `BadImage` with the reason; the pipeline names the file.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import simplejpeg
from PIL import Image

# Input workers decode in parallel processes already: OpenCV's own threads would only compete.
cv2.setNumThreads(1)


class BadImage(Exception):
    """An image that cannot be decoded (corrupt, truncated, unsupported) or does not match its record."""


def decode_rgb(data: bytes) -> np.ndarray:
    """Encoded bytes -> uint8 [H, W, 3] RGB. Raises BadImage."""
    if not data:
        raise BadImage("is empty (0 bytes)")
    if data[:2] == b"\xff\xd8":  # JPEG
        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except (ValueError, RuntimeError):
            pass  # e.g. CMYK or arithmetic-coded: OpenCV may still read it, else it is corrupt
    buf = np.frombuffer(data, np.uint8)
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise BadImage("is not a readable image (corrupt, truncated or an unsupported format)")
    return np.ascontiguousarray(image[..., ::-1])  # OpenCV's BGR -> RGB


def header_size(file: str | bytes) -> tuple[int, int] | None:
    """(height, width) from an image's header (a path or the encoded bytes) without decoding
    the pixels, or None if the header is unreadable."""
    try:
        with Image.open(io.BytesIO(file) if isinstance(file, bytes) else file) as im:
            return im.height, im.width
    except Exception:  # PIL raises many types for bad headers
        return None


_ORIENTATIONS = {
    2: "mirrored",
    3: "rotated 180 degrees",
    4: "flipped vertically",
    5: "transposed",
    6: "rotated 90 degrees clockwise",
    7: "transversed",
    8: "rotated 90 degrees counter-clockwise",
}


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1..8) of an encoded image, 1 (upright) when it has none."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # PIL raises many types for bad headers; no tag then
        return 1


def orientation_note(data: bytes) -> str:
    """For a size-mismatch message: what the file's EXIF orientation tag says, or ''."""
    tag = exif_orientation(data)
    if tag not in _ORIENTATIONS:  # (1: upright)
        return ""
    return (
        f"; the file carries an EXIF orientation tag ({tag}: to be shown {_ORIENTATIONS[tag]}), and jaxdet reads "
        "the stored pixels without applying it, as COCO's tools do: if the annotation was made on the rotated "
        "picture, write the pixels upright (e.g. PIL.ImageOps.exif_transpose, or `exiftran -ai`) or annotate the "
        "stored orientation"
    )
