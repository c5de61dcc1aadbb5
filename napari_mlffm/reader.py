"""napari reader: dermoscopic images as RGB image layers named after the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from training.data.image_header import ImageTooLargeError, read_image_header
from training.data.imageio import IMAGE_SUFFIXES, ImageReadError, read_image

LayerData = list[tuple[Any, dict, str]]


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], LayerData] | None:
    """Return a reader for image files this plugin understands, else None (napari then tries others)."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or any(Path(p).suffix.lower() not in IMAGE_SUFFIXES for p in paths):
        return None
    if not all(Path(p).is_file() and _looks_readable(Path(p)) for p in paths):
        return None
    return read_images


def _looks_readable(path: Path) -> bool:
    """A cheap header check, so napari can offer other readers for files this one cannot read.

    An image whose header declares too many pixels is still claimed: reading
    it then fails with a one-line ImageTooLargeError (so no other reader
    tries to decode the bomb).
    """
    if path.stat().st_size == 0:
        return False
    try:
        return read_image_header(path) is not None
    except ImageTooLargeError:
        return True
    except Exception:
        return False


def read_images(path: str | list[str]) -> LayerData:
    """Read each file with EXIF orientation applied; unreadable files raise a one-line ImageReadError."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers: LayerData = []
    for p in paths:
        image = read_image(p)
        layers.append((image, {"name": Path(p).stem, "rgb": True, "metadata": {"source": str(Path(p).absolute())}}, "image"))
    return layers


__all__ = ["get_reader", "read_images", "ImageReadError"]
