"""Embedded ICC colour profiles: pixels converted to sRGB as they are read.

A phone or camera may tag its photographs with a profile other than sRGB
(Display P3 on recent phones, Adobe RGB on many cameras, a CMYK press profile
on a file that went through print software). The same stored numbers then
mean other colours, and the model, trained on sRGB images, would see a
colour cast. Here an image whose embedded profile is not sRGB is converted
to sRGB (relative colorimetric intent), as a web browser shows it.

What is not converted, and why:

- 16-bit and float pixels: Pillow's colour management handles 8-bit modes
  only. They are read as stored (16-bit photographs with a profile are rare).
- A profile that cannot be parsed, or whose colour space does not match the
  pixels: the pixels are read as stored (a browser does the same) and
  :func:`to_srgb` says so in its returned note.
"""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image

_CONVERTIBLE_MODES = {"RGB": "RGB", "RGBA": "RGB", "P": "RGB", "L": "L", "LA": "L", "CMYK": "CMYK"}
"""Pillow modes whose pixels can go through a profile, and the mode they go through it in; all come out as RGB."""

__all__ = ["to_srgb", "array_to_srgb", "is_srgb_profile"]


_PROBE = np.stack(np.meshgrid(*[np.array([0, 64, 128, 192, 255], np.uint8)] * 3, indexing="ij"), -1).reshape(5, 25, 3)
"""125 colours spread over the RGB cube: a profile that leaves them all within 2 levels is sRGB for this reader."""


@functools.lru_cache(maxsize=32)
def _is_srgb_icc(icc: bytes) -> bool:
    """:func:`is_srgb_profile` of profile bytes, remembered: a folder of one camera's photos carries one profile."""
    try:
        from PIL import ImageCms

        return is_srgb_profile(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    except Exception:  # noqa: BLE001 - a damaged profile is no sRGB
        return False


def is_srgb_profile(profile: object) -> bool:
    """Whether a parsed RGB profile (``ImageCms.ImageCmsProfile``) maps colours to sRGB unchanged (within 2 of 255).

    Decided by converting probe colours, not by the profile's name: a profile
    called "sRGB linear" or "sRGB-ish" with other primaries or tone curve is
    converted like any other.
    """
    try:
        from PIL import ImageCms

        probe = Image.fromarray(_PROBE, "RGB")
        out = ImageCms.profileToProfile(
            probe, profile, ImageCms.createProfile("sRGB"), renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode="RGB"
        )
    except Exception:  # noqa: BLE001 - no colour management, or a profile littlecms cannot use
        return False
    return int(np.abs(np.asarray(out).astype(int) - _PROBE).max()) <= 2


def to_srgb(img: Image.Image) -> tuple[Image.Image, str | None]:
    """``img`` converted from its embedded ICC profile to sRGB, and a note when the profile was left unused.

    Returns ``(image, note)``: the image unchanged and ``note`` None when it
    has no profile, an sRGB profile, or a mode with no colour management
    (16-bit, float, bilevel); the converted image (mode RGB, grey included)
    when the profile is another; the image unchanged and a one-line note when
    the profile is damaged or does not fit the pixels. An alpha channel is
    dropped, as :func:`training.data.imageio.read_image` drops it anyway.
    """
    icc = img.info.get("icc_profile")
    if not icc:
        return img, None
    if img.mode not in _CONVERTIBLE_MODES:  # 16-bit and float pixels: said; others (LAB, YCbCr, bilevel) convert as Pillow does
        high_bit = img.mode.startswith("I;16") or img.mode in ("I", "F")
        return img, _unconverted_note(icc, "16-bit pixels" if img.mode.startswith("I;16") else f"{img.mode} pixels") if high_bit else None
    try:
        from PIL import ImageCms
    except ImportError:  # Pillow built without littlecms
        return img, "its colour profile was not applied (this Pillow has no colour management)"
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except Exception:
        return img, "its embedded colour profile is damaged and was not applied"
    if _profile_colour_space(icc) == "RGB" and _is_srgb_icc(bytes(icc)):
        return img, None
    pixels = img.convert(_CONVERTIBLE_MODES[img.mode])  # alpha dropped, a palette resolved
    space = _profile_colour_space(icc)
    if space is not None and space != _PROFILE_SPACE_OF_MODE[pixels.mode]:
        return img, f"its colour profile is for {space.strip()} pixels, not {pixels.mode}, and was not applied"
    try:
        converted = ImageCms.profileToProfile(
            pixels, source, ImageCms.createProfile("sRGB"), renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode="RGB"
        )
    except Exception as err:
        return img, f"its colour profile could not be applied ({type(err).__name__})"
    if converted is None:  # inPlace would return None; guard anyway
        return img, "its colour profile could not be applied"
    converted.info.pop("icc_profile", None)
    return converted, None


def array_to_srgb(array: np.ndarray, icc: bytes | None) -> tuple[np.ndarray, str | None]:
    """(H, W), (H, W, 3) or (H, W, 4) uint8 pixels (grey, RGB, CMYK) converted from ``icc`` to sRGB; else unchanged.

    The array form of :func:`to_srgb`, for readers that decode pixels
    themselves (TIFF). Other dtypes and layouts come back unchanged, note None.
    """
    if not icc:
        return array, None
    if array.dtype != np.uint8:  # 16-bit and float pixels are said; bilevel ones convert as they are
        return array, _unconverted_note(icc, f"{array.dtype} pixels") if array.dtype.kind == "f" or array.dtype.itemsize > 1 else None
    if array.ndim == 2:
        mode = "L"
    elif array.ndim == 3 and array.shape[-1] == 3:
        mode = "RGB"
    elif array.ndim == 3 and array.shape[-1] == 4:
        mode = "CMYK" if _profile_colour_space(icc) == "CMYK" else "RGBA"
    else:
        return array, None
    img = Image.fromarray(np.ascontiguousarray(array), mode)
    img.info["icc_profile"] = bytes(icc)
    converted, note = to_srgb(img)
    if converted is img:
        return array, note
    return np.asarray(converted), note


def _unconverted_note(icc: bytes, what: str) -> str | None:
    """The note for pixels that colour management cannot take (16-bit, float): None when the profile is sRGB anyway."""
    if _profile_colour_space(icc) == "RGB" and _is_srgb_icc(bytes(icc)):
        return None
    return f"its colour profile was not applied to its {what} (read as sRGB); save it as 8-bit to have its colours converted"


_PROFILE_SPACE_OF_MODE = {"RGB": "RGB", "L": "GRAY", "CMYK": "CMYK"}


def _profile_colour_space(icc: bytes) -> str | None:
    """The data colour space named in an ICC header (bytes 16..19, e.g. 'RGB', 'GRAY', 'CMYK'), or None."""
    if len(icc) < 20:
        return None
    try:
        return icc[16:20].decode("ascii").strip()
    except UnicodeDecodeError:
        return None

