"""Reading images and masks, and writing outputs atomically.

Every failure becomes :class:`ImageReadError` (a ValueError) whose message
names the file in one line, so command-line tools and the plugin can report
it without a traceback.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from model.files.checkpoint import atomic_write_bytes
from model.inputs.limits import MAX_IMAGE_PIXELS

from .colour_profiles import to_srgb
from .image_header import (
    PNG_16BIT_PACKED,
    ImageReadError,
    ImageReadWarning,
    ImageTooLargeError,
    check_image_header,
    png_sample_layout,
)
from .tiff_reading import open_as_stored, orient, read_tiff, tiff_colour_mask, tiff_stored_values_mask

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # allow big dermoscopy photos; check_image_header refuses larger ones first

__all__ = ["IMAGE_SUFFIXES", "ImageReadError", "ImageReadWarning", "ImageTooLargeError", "check_image_header", "read_image", "read_mask"]


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as (H, W, 3) RGB, uint8 or uint16, upright per its EXIF or TIFF orientation.

    Grayscale is replicated to three channels, RGBA and palette images are
    converted to RGB, CMYK is converted to RGB, and the first page of a
    multi-page TIFF is used. 8-bit pixels with an embedded ICC profile other
    than sRGB (Display P3, Adobe RGB, a CMYK press profile) are converted to
    sRGB (:mod:`training.data.colour_profiles`); a profile that cannot be
    applied leaves the pixels as stored, with an :class:`ImageReadWarning`. Float images (TIFF) must hold values in [0, 1],
    as in the Python API; integer images values in 0..65535 (those with
    values up to 255 are read as 8-bit). An image above
    :data:`model.inputs.limits.MAX_IMAGE_PIXELS` pixels is refused from its header,
    before decoding (:class:`ImageTooLargeError`). Every failure is an
    :class:`ImageReadError` naming the file in one line.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: not an image file (a folder, a device or a pipe)" if path.exists() else _missing(path, "file"))
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    check_image_header(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            array = read_tiff(path, _read_pillow, _warn_note)
        else:
            array = _read_pillow(path)
        return _as_rgb(array, path)
    except MemoryError:
        raise ImageReadError(f"{path}: not enough memory to decode this image") from None
    except ImageReadError:
        raise
    except Exception as err:  # a damaged file's fault in a decoder or in its layout: one line naming it, whatever its type
        raise ImageReadError(f"{path}: cannot read image ({type(err).__name__}: {err})") from None


def _missing(path: Path, what: str) -> str:
    """'<path>: no such file', or what a link there is when it leads nowhere."""
    return f"{path}: a link that leads to no {what} (its target is gone, or it is a loop of links)" if path.is_symlink() else f"{path}: no such {what}"


def _warn_note(path: Path, note: str | None) -> None:
    if note:
        warnings.warn(f"{path}: {note}", ImageReadWarning, stacklevel=3)


def _read_pillow(path: Path) -> np.ndarray:
    try:
        img, orientation = open_as_stored(path)
        with img:
            img.load()
            img = ImageOps.exif_transpose(img)  # JPEG, PNG, ...; a TIFF is turned below, by its own tag
            _refuse_lost_low_bytes(path, img, "image")
            img, note = to_srgb(img)
            _warn_note(path, note)
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                array = np.asarray(img, dtype=np.uint16)
            elif img.mode in ("I", "F"):
                array = np.asarray(img)  # 32-bit integer or float pixels: _as_rgb applies the value rule
            else:
                array = np.asarray(img if img.mode in ("RGB", "L") else img.convert("RGB"))
        return orient(array, orientation)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        reason = "not a readable image" if isinstance(err, UnidentifiedImageError) else str(err) or type(err).__name__
        raise ImageReadError(f"{path}: cannot read image ({reason})") from None


def _refuse_lost_low_bytes(path: Path, img: Image.Image, what: str) -> None:
    """ImageReadError for a 16-bit colour (or grey + alpha) PNG whose values all lie below 4096: Pillow keeps
    only each sample's high byte, which would read such a file as black (an image) or as empty (a mask)."""
    layout = png_sample_layout(path) if path.suffix.lower() == ".png" or img.format == "PNG" else None
    if layout is None or layout[0] != 16 or layout[1] not in PNG_16BIT_PACKED:
        return
    samples = np.asarray(img)
    colour = samples[..., :-1] if samples.ndim == 3 and layout[1] in (4, 6) else samples  # grey + alpha, RGBA: alpha apart
    alpha_varies = colour is not samples and int(samples[..., -1].min()) != int(samples[..., -1].max())
    if int(colour.max(initial=0)) < 16 and not (what == "mask" and alpha_varies):  # a mask drawn in alpha reads from alpha
        raise ImageReadError(
            f"{path}: 16-bit colour PNG {what} whose values all lie below 4096: only the high byte of each can be read, "
            "which would leave it " + ("black" if what == "image" else "empty") + "; save it as 8-bit PNG, 16-bit grey PNG or TIFF"
        )


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
        array = _to_integer_pixels(array, path)
    if min(array.shape[:2]) < 1:
        raise ImageReadError(f"{path}: image has no pixels")
    return np.ascontiguousarray(array)


def _to_integer_pixels(array: np.ndarray, path: Path) -> np.ndarray:
    """Float and other integer pixels by the Python API's rule (model.inputs.preprocess): refuse what it refuses."""
    if array.size == 0:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating):
        if np.iscomplexobj(array):
            raise ImageReadError(f"{path}: complex-valued pixels are not an image this program reads")
        if not np.isfinite(array).all():
            raise ImageReadError(f"{path}: float image holds NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise ImageReadError(
                f"{path}: float image values must lie in [0, 1], found {low:.3g}..{high:.3g} "
                "(save it as 8- or 16-bit integers, or scale it to [0, 1])"
            )
        return (array.astype(np.float64) * 255).round().astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 65535:
            raise ImageReadError(f"{path}: integer image values must lie in 0..65535, found {low}..{high}")
        return array.astype(np.uint8 if high <= 255 else np.uint16)
    raise ImageReadError(f"{path}: unsupported pixel type {array.dtype}")


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask as (H, W) bool by the rule of :mod:`training.data.masks` (palette and colour resolved;
    two values one of them 0: lesion = the non-zero one; grey levels: at or above half the range).

    Raises ImageReadError naming the file, also for label-like masks (e.g. values 0/1/2) whose lesion is ambiguous.
    """
    from .masks import AmbiguousMaskError, binary_mask, check_not_outline, mask_values_from_pil

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: not a mask file (a folder, a device or a pipe)" if path.exists() else _missing(path, "mask file"))
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty mask file (0 bytes)")
    check_image_header(path)
    try:
        colour = (tiff_colour_mask(path) or tiff_stored_values_mask(path)) if path.suffix.lower() in (".tif", ".tiff") else None
        values = mask_values_from_pil(colour) if colour is not None else None
        if values is None:
            img, orientation = open_as_stored(path)
            with img:
                img.load()
                _refuse_lost_low_bytes(path, img, "mask")
                img = ImageOps.exif_transpose(img)  # upright, as read_image turns its image
                values = orient(mask_values_from_pil(img), orientation)
    except ImageReadError:
        raise
    except AmbiguousMaskError as err:
        raise ImageReadError(f"{path}: {err}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path}: cannot read mask ({err or type(err).__name__})") from None
    except Exception as err:  # a damaged file's fault in a decoder: one line naming it, whatever its type
        raise ImageReadError(f"{path}: cannot read mask ({type(err).__name__}: {err})") from None
    if values.ndim != 2:
        raise ImageReadError(f"{path}: unsupported mask layout {values.shape}")
    try:
        mask = binary_mask(values)
        check_not_outline(mask)
        return mask
    except AmbiguousMaskError as err:
        raise ImageReadError(f"{path}: {err}") from None


def orientation_tag(path: str | os.PathLike) -> int:
    """The EXIF or TIFF orientation (1..8) a file's pixels are turned by when read; 1 when it has none (or cannot
    be opened: the readers say why)."""
    try:
        img, orientation = open_as_stored(Path(path))
        with img:
            if orientation == 1:
                orientation = int(img.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 (only a hint: a file that cannot be read is named by read_image / read_mask)
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (H, W) or (H, W, 3) array."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_tiff(array: np.ndarray) -> bytes:
    """TIFF bytes of a (H, W) or (N, H, W) array, deflate-compressed (level 1; any TIFF reader opens it): a
    sample stack of 0/1 masks, or an empty proposal's zeros, is a small fraction of its raw size."""
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, photometric="minisblack", compression="zlib", compressionargs={"level": 1})
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


def encode_json(data: dict[str, Any]) -> bytes:
    """The UTF-8 bytes every JSON record of this project is written as (indented; numpy scalars and paths allowed).

    Strict JSON: a NaN or infinite number (an HD95 with an empty mask, say) is written as ``null``.
    """
    return (json.dumps(_finite_or_null(data), indent=2, default=_json_default, allow_nan=False) + "\n").encode("utf-8")


def _finite_or_null(value: Any) -> Any:
    """``value`` with every non-finite float (Python or numpy) in it replaced by None."""
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    return value


def write_json(path: Path, data: dict[str, Any], replace: bool = True) -> None:
    """:func:`encode_json` of ``data`` written atomically; ``replace=False``: never over a file that is there."""
    atomic_write_bytes(path, encode_json(data), replace=replace)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
