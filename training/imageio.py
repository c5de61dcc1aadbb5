"""Reading images and masks, and writing outputs atomically.

Every failure becomes :class:`ImageReadError` (a ValueError) whose message
names the file in one line, so command-line tools and the plugin can report
it without a traceback.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from model.checkpoint import atomic_write_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
Image.MAX_IMAGE_PIXELS = 120_000_000  # allow big dermoscopy photos, refuse decompression bombs


class ImageReadError(ValueError):
    """An image or mask file cannot be used; the message names the file."""


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as (H, W, 3) RGB, uint8 or uint16, upright per its EXIF orientation.

    Grayscale is replicated to three channels, RGBA and palette images are
    converted to RGB, CMYK is converted to RGB, and the first page of a
    multi-page TIFF is used.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    if path.suffix.lower() in (".tif", ".tiff"):
        array = _read_tiff(path)
    else:
        array = _read_pillow(path)
    return _as_rgb(array, path)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            array = page.asarray()
            photometric = getattr(page, "photometric", None)
    except Exception as err:  # tifffile raises many types for damaged files
        try:
            return _read_pillow(path)
        except ImageReadError:
            raise ImageReadError(f"{path}: cannot read TIFF ({type(err).__name__}: {err})") from None
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
        array = np.moveaxis(array, 0, -1)  # planar -> interleaved
    if photometric is not None and int(photometric) == 5 and array.ndim == 3 and array.shape[-1] == 4:  # separated / CMYK
        array = Image.fromarray(array.astype(np.uint8), "CMYK").convert("RGB")
        array = np.asarray(array)
    return array


def _read_pillow(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                return np.asarray(img, dtype=np.uint16)
            if img.mode == "I":
                array = np.asarray(img)
                return array.clip(0, 65535).astype(np.uint16)
            if img.mode not in ("RGB", "L"):
                img = img.convert("RGB")
            return np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        reason = "not a readable image" if isinstance(err, UnidentifiedImageError) else str(err) or type(err).__name__
        raise ImageReadError(f"{path}: cannot read image ({reason})") from None


def _as_rgb(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ImageReadError(f"{path}: unsupported image layout {array.shape}")
    array = array[..., :3]
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype not in (np.uint8, np.uint16):
        if np.issubdtype(array.dtype, np.floating):
            array = (np.clip(np.nan_to_num(array), 0, 1) * 255).round().astype(np.uint8)
        else:
            array = np.clip(array, 0, 65535).astype(np.uint16)
    if min(array.shape[:2]) < 1:
        raise ImageReadError(f"{path}: image has no pixels")
    return np.ascontiguousarray(array)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask as (H, W) bool by the rule of :mod:`training.masks` (palette and colour resolved;
    two values one of them 0: lesion = the non-zero one; grey levels: at or above half the range).

    Raises ImageReadError naming the file, also for label-like masks (e.g. values 0/1/2) whose lesion is ambiguous.
    """
    from .masks import AmbiguousMaskError, binary_mask, mask_values_from_pil

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such mask file")
    try:
        with Image.open(path) as img:
            img.load()
            values = mask_values_from_pil(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path}: cannot read mask ({err or type(err).__name__})") from None
    if values.ndim != 2:
        raise ImageReadError(f"{path}: unsupported mask layout {values.shape}")
    try:
        return binary_mask(values)
    except AmbiguousMaskError as err:
        raise ImageReadError(f"{path}: {err}") from None


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (H, W) or (H, W, 3) array."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_tiff(array: np.ndarray) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, photometric="minisblack")
    return buffer.getvalue()


def check_writable(paths: list[Path], overwrite: bool) -> None:
    """Refuse, before anything is written, when any target exists and ``overwrite`` is False."""
    if overwrite:
        return
    existing = [p for p in paths if p.exists()]
    if existing:
        raise FileExistsError(f"{existing[0]}: already exists (use --overwrite to replace it)")


def write_png(path: Path, array: np.ndarray) -> None:
    atomic_write_bytes(path, encode_png(array))


def write_tiff(path: Path, array: np.ndarray) -> None:
    atomic_write_bytes(path, encode_tiff(array))


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, default=_json_default) + "\n").encode("utf-8"))


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
