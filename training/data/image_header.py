"""The one size gate for image files: decided from the header, before any pixel is decoded.

Pillow refuses decompression bombs only above twice its own limit and only
warns between once and twice it; tifffile has no limit at all (a 530 kB
compressed TIFF can claim 20000 x 20000 pixels). So every reader in this
project (``mlffm`` commands, the napari reader, datasets, the plugin's case
list) calls :func:`check_image_header` first, which reads only the header
and refuses an image above :data:`model.inputs.limits.MAX_IMAGE_PIXELS` pixels, or
whose decoded first page would exceed :data:`model.inputs.limits.MAX_DECODED_IMAGE_BYTES`,
with one line naming the file.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from model.inputs.limits import MAX_DECODED_IMAGE_BYTES, MAX_IMAGE_PIXELS, check_image_shape

TIFF_SUFFIXES = (".tif", ".tiff")


class ImageReadError(ValueError):
    """An image or mask file cannot be used; the message names the file."""


class ImageReadWarning(UserWarning):
    """An image was read, but not quite as stored (say, its colour profile could not be applied); the message names the file."""


class ImageTooLargeError(ImageReadError):
    """The file's header declares more pixels (or decoded bytes) than this program reads."""


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says: width and height in pixels, and the bytes its first page decodes to."""

    width: int
    height: int
    decoded_bytes: int


def read_image_header(path: Path) -> ImageHeader | None:
    """The header of an image file, or None when no header can be parsed (the decoder then reports why).

    TIFFs are parsed by tifffile (the reader used for them), other formats by
    Pillow's lazy ``Image.open``, which reads no pixels. Raises
    :class:`ImageTooLargeError` when Pillow itself refuses the header as a
    decompression bomb.
    """
    if path.suffix.lower() in TIFF_SUFFIXES:
        header = _tiff_header(path)
        if header is not None:
            return header
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bomb warnings (checked below) and damaged-header chatter
            with Image.open(path) as img:
                width, height = img.size
                bands = len(img.getbands())
                bits = 16 if img.mode.startswith("I;16") else 32 if img.mode in ("I", "F") else 8
    except Image.DecompressionBombError as err:
        found = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(found.group(1)) / 1e6:.0f} Mpx" if found else "too large for Pillow to open"
        raise ImageTooLargeError(
            f"{path}: image is {size}, above the limit of {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx (refused before decoding)"
        ) from None
    except Exception:  # noqa: BLE001 - any parse failure: the decoder reports it
        return None
    return ImageHeader(int(width), int(height), int(width) * int(height) * bands * bits // 8)


def _tiff_header(path: Path) -> ImageHeader | None:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[main_tiff_page(tif)]
            width, height = int(page.imagewidth), int(page.imagelength)
            depth = max(int(getattr(page, "imagedepth", 1) or 1), 1)
            samples = max(int(getattr(page, "samplesperpixel", 1) or 1), 1)
            bits = getattr(page, "bitspersample", 8)
            bits = max(int(bits if isinstance(bits, (int, float)) else max(bits)), 1)
    except Exception:  # noqa: BLE001 - tifffile raises many types for damaged files
        return None
    return ImageHeader(width, height * depth, width * height * depth * samples * math.ceil(bits / 8))


def png_sample_layout(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR chunk, or None for a file that is no PNG."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(26)
    except OSError:
        return None
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


PNG_16BIT_PACKED = (2, 4, 6)
"""PNG colour types (RGB, grey + alpha, RGBA) whose 16-bit samples Pillow reads as their high byte only."""


def main_tiff_page(tif) -> int:
    """The index of a TIFF's full image: the first page that is not a reduced-resolution preview
    (NewSubfileType bit 0, as cameras and scanners put a thumbnail first); 0 when all are."""
    for index, page in enumerate(tif.pages):
        if index >= 16:
            break
        if not getattr(page, "is_reduced", False):
            return index
    return 0


def check_image_header(path: str | Path) -> ImageHeader | None:
    """Refuse ``path`` with :class:`ImageTooLargeError` when its header declares too large an image.

    Returns the header (None when none could be parsed; decoding will then
    fail with its own message).
    """
    path = Path(path)
    header = read_image_header(path)
    if header is None:
        return None
    pixels = header.width * header.height
    if pixels > MAX_IMAGE_PIXELS:
        raise ImageTooLargeError(
            f"{path}: image is {header.width} x {header.height} = {pixels / 1e6:.0f} Mpx, "
            f"above the limit of {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx (refused before decoding)"
        )
    try:
        check_image_shape(header.height, header.width, f"{path}: image")
    except ValueError as err:
        raise ImageTooLargeError(f"{err} (refused before decoding)") from None
    if header.decoded_bytes > MAX_DECODED_IMAGE_BYTES:
        raise ImageTooLargeError(
            f"{path}: image would decode to {header.decoded_bytes / 1e9:.1f} GB, "
            f"above the limit of {MAX_DECODED_IMAGE_BYTES / 1e9:.1f} GB (refused before decoding)"
        )
    return header
