"""TIFFs as cameras, scanners and Fiji write them: the full page, upright, in colour.

tifffile decodes most TIFFs; :func:`read_tiff` picks the full-resolution page
(not a thumbnail put first), joins Fiji's channel pages and planar samples,
resolves palette, MINISWHITE and CMYK, applies an embedded ICC profile and
turns the pixels by the Orientation tag. Pillow reads the rest
(:func:`open_as_stored` opens a TIFF for it with the turning left to this
module, since Pillow 13 garbles grey TIFFs with orientations 5 to 8).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .colour_profiles import array_to_srgb
from .image_header import ImageReadError, main_tiff_page

def read_tiff(path: Path, read_other: Callable[[Path], np.ndarray], warn: Callable[[Path, str | None], None]) -> np.ndarray:
    """(H, W), (H, W, C) pixels of a TIFF's full image, upright, palette and MINISWHITE resolved, CMYK and an ICC
    profile converted (8-bit). ``read_other(path)`` reads what tifffile cannot or what it leaves to Pillow (YCbCr,
    CIELab, damaged files); ``warn(path, note)`` says what was read not quite as stored."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[main_tiff_page(tif)]  # not a thumbnail a camera put first
            array = page.asarray()
            planar = int(getattr(page, "planarconfig", 1) or 1) == 2
            if tif.is_imagej and tif.series and tif.series[0].axes in ("CYX", "SYX") and tif.series[0].shape[0] in (3, 4):
                array, planar = tif.series[0].asarray(), True  # Fiji's RGB as one page per channel
            photometric = getattr(page, "photometric", None)
            photometric = None if photometric is None else int(photometric)
            colormap = page.colormap if photometric == _PALETTE else None
            orientation = tiff_orientation(page)
            icc = tiff_icc_profile(page)
    except Exception as err:  # tifffile raises many types for damaged files
        try:
            return read_other(path)
        except ImageReadError:
            raise ImageReadError(f"{path}: cannot read TIFF ({type(err).__name__}: {err})") from None
    if photometric not in _PLAIN_PHOTOMETRIC:
        return read_other(path)  # YCbCr, CIELab, ...: Pillow converts them to RGB, or says in one line it cannot
    if planar and array.ndim == 3:
        array = np.moveaxis(array, 0, -1)  # planar -> interleaved
    if photometric == _MINISWHITE:  # 0 is white: stored inverted
        if array.dtype == np.bool_:
            array = ~array
        elif array.dtype.kind == "u":
            array = np.iinfo(array.dtype).max - array
        else:
            return read_other(path)
    elif photometric == _PALETTE:  # the pixels are indices into a 16-bit RGB colour map
        if colormap is None or array.dtype.kind != "u" or array.ndim != 2 or int(array.max(initial=0)) >= np.shape(colormap)[-1]:
            return read_other(path)
        array = np.moveaxis(np.asarray(colormap)[:, array], 0, -1)
        array = (array >> 8).astype(np.uint8) if array.dtype == np.uint16 else array
    elif photometric == _SEPARATED and array.ndim == 3 and array.shape[-1] == 4:  # CMYK
        if array.dtype == np.uint16:
            array = (array >> 8).astype(np.uint8)
        elif array.dtype != np.uint8:
            raise ImageReadError(f"{path}: CMYK TIFF of {array.dtype} pixels is not supported; save it as RGB")
        if array.dtype == np.uint8 and icc:
            array, note = array_to_srgb(array, icc)
            warn(path, note)
            icc = None
        if array.shape[-1] == 4:  # no profile, or one that could not be applied: the plain conversion
            array = np.asarray(Image.fromarray(array, "CMYK").convert("RGB"))
    if icc and (array.dtype != np.uint8 or array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        array, note = array_to_srgb(array, icc)
        warn(path, note)
    return orient(array, orientation)


def tiff_icc_profile(page: Any) -> bytes | None:
    tag = page.tags.get(34675)  # InterColorProfile
    value = None if tag is None else tag.value
    return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) or (isinstance(value, np.ndarray) and value.dtype == np.uint8) else None


_MINISWHITE, _MINISBLACK, _RGB, _PALETTE, _SEPARATED = 0, 1, 2, 3, 5
_PLAIN_PHOTOMETRIC = (None, _MINISWHITE, _MINISBLACK, _RGB, _PALETTE, _SEPARATED)
"""TIFF photometric interpretations read here; others (YCbCr, CIELab, ...) go to Pillow."""


def tiff_orientation(page: Any) -> int:
    tag = page.tags.get(274)  # Orientation, as in EXIF
    try:
        value = int(tag.value) if tag is not None else 1
    except (TypeError, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Turn (H, W, ...) stored pixels upright per an EXIF/TIFF Orientation value 1..8 (as Pillow's exif_transpose)."""
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return array.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(array, -1)
    if orientation == 7:
        return array[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(array, 1)
    return array


def open_as_stored(path: Path) -> tuple[Image.Image, int]:
    """``Image.open`` of ``path`` at its full image, and the TIFF orientation (1..8) still to apply to its pixels.

    Pillow 13 turns a TIFF by its Orientation tag while decoding, and garbles
    grey TIFFs with orientations 5 to 8 doing so (older versions do not turn
    TIFFs at all). So a TIFF is opened from a copy whose tag says 1 (upright),
    at its main page (not a thumbnail put first), and the caller turns the
    pixels with :func:`orient`, as for TIFFs that tifffile decodes. Other
    formats: the file itself, orientation 1 (``exif_transpose`` turns them).
    """
    if path.suffix.lower() not in (".tif", ".tiff"):
        return Image.open(path), 1
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            index = main_tiff_page(tif)
            page = tif.pages[index]
            orientation = tiff_orientation(page)
            tag = page.tags.get(274)
            at = None if tag is None else int(tag.valueoffset)
            order = tif.byteorder
    except Exception:  # noqa: BLE001 - a damaged file: Pillow's reading reports it
        return Image.open(path), 1
    if orientation == 1 or at is None:
        img = Image.open(path)
    else:
        data = bytearray(path.read_bytes())
        data[at : at + 2] = (1).to_bytes(2, "little" if order == "<" else "big")
        img = Image.open(io.BytesIO(bytes(data)))
    if index:
        img.seek(index)
    return img, orientation


def tiff_colour_mask(path: Path) -> Image.Image | None:
    """A 16-bit colour (or grey + alpha) TIFF mask as an upright 8-bit image (LA, RGB or RGBA); None for other
    TIFFs (Pillow reads those as it reads every mask). Pillow keeps only the high byte of 16-bit colour samples,
    which reads a 0/255 or 0/1 mask written by OpenCV as empty."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[main_tiff_page(tif)]
            if page.dtype != np.uint16 or int(page.samplesperpixel) not in (2, 3, 4):
                return None
            array = page.asarray()
            if int(getattr(page, "planarconfig", 1) or 1) == 2:
                array = np.moveaxis(array, 0, -1)
            orientation = tiff_orientation(page)
    except Exception:  # noqa: BLE001 - a damaged file: Pillow's reading reports it
        return None
    if array.ndim != 3 or array.shape[-1] not in (2, 3, 4):
        return None
    array = array.astype(np.uint8) if int(array.max(initial=0)) <= 255 else (array >> 8).astype(np.uint8)
    mode = {2: "LA", 3: "RGB", 4: "RGBA"}[array.shape[-1]]
    return Image.fromarray(np.ascontiguousarray(orient(array, orientation)), mode)


def tiff_stored_values_mask(path: Path) -> Image.Image | None:
    """A MINISWHITE grey TIFF mask written by ImageJ/Fiji or by tifffile, as an upright image of its stored values
    (L or I;16); None for other TIFFs (Pillow reads those as they look, MINISWHITE inverted).

    Fiji saves a binary mask drawn with its default inverting LUT (the lesion 255, shown black) as MINISWHITE, and
    tifffile so saves every bool array (the lesion True); both, and napari, read such a file back by its stored
    values, where a viewer shows it inverted. A scanner's or ImageMagick's MINISWHITE mask keeps what it shows."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[main_tiff_page(tif)]
            if int(page.photometric) != _MINISWHITE or int(page.samplesperpixel) != 1:
                return None
            if not (tif.is_imagej or str(page.software or "").startswith("tifffile")):
                return None
            array = page.asarray()
            orientation = tiff_orientation(page)
    except Exception:  # noqa: BLE001 - a damaged file: Pillow's reading reports it
        return None
    if array.ndim != 2 or array.dtype not in (np.bool_, np.uint8, np.uint16):
        return None
    array = array.astype(np.uint8) * 255 if array.dtype == np.bool_ else array
    return Image.fromarray(np.ascontiguousarray(orient(array, orientation)))
