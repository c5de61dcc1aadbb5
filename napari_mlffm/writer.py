"""napari writer for Labels layers: PNG or TIFF.

A PNG of a *mask* is 0/255 (lesion = any non-zero label), so it reads as a
mask everywhere (:func:`training.data.imageio.read_mask`, an image viewer):
a mask is the plugin's mask layer (``<image> mask``, whatever labels were
painted into it), or any layer that holds a single non-zero label (1, or a 2
painted by mistake). A layer of two or more non-zero labels is a label map:
its PNG keeps the label values (uint8, or uint16 above 255). A TIFF always
keeps the values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from model.files.checkpoint import atomic_write_bytes
from training.data.imageio import encode_png, encode_tiff
from training.files.file_names import SHORT_TEMPORARY_PREFIX, name_limit
from training.files.outputs import one_line


def labels_to_png_array(data: np.ndarray, mask: bool = False) -> np.ndarray:
    """A 2-D labels array as PNG pixels: 0/255 uint8 for a mask (``mask``, or a single non-zero label),
    the labels (uint8 or uint16) for a map of two or more labels."""
    data = np.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"PNG holds a single 2-D mask; this layer is {data.ndim}-D {data.shape} (save it as .tif)")
    top = int(data.max()) if data.size else 0
    low = int(data.min()) if data.size else 0
    if mask or len(np.unique(data[data != 0])[:2]) <= 1:
        return (data != 0).astype(np.uint8) * 255  # a mask: lesion = any non-zero label
    if low < 0 or top > 65535:
        raise ValueError(f"label values {low}..{top} do not fit a PNG (use .tif)")
    return data.astype(np.uint8 if top < 256 else np.uint16)


def is_plugin_mask(meta: dict) -> bool:
    """Whether napari's ``meta`` of a layer is the plugin's mask layer (``<image> mask`` with the plugin's state)."""
    from .results import KEY

    metadata = meta.get("metadata") if isinstance(meta, dict) else None
    return isinstance(metadata, dict) and isinstance(metadata.get(KEY), dict) and str(meta.get("name", "")).endswith(" mask")


def _label_array(data: Any, path: str) -> np.ndarray:
    """``data`` as a non-empty array of whole label values (bool, integers, or floats that are whole numbers); ValueError naming ``path``."""
    array = np.asarray(data)
    if array.size == 0:
        raise ValueError(f"{path}: the layer is empty ({array.shape}); nothing to write")
    if array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer):
        return array
    if np.issubdtype(array.dtype, np.floating) and np.isfinite(array).all() and (array == np.round(array)).all():
        top = float(np.abs(array).max())
        if top < 2**31:
            return array.astype(np.int64)
    raise ValueError(f"{path}: labels must be whole numbers (bool or integers), got {array.dtype} values that are not")


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Write one Labels layer to ``path`` (.png or .tif/.tiff) atomically; returns [path].

    PNG: 0/255 for a mask, label values for a map of several labels (see the
    module's docstring). ValueError (one line naming ``path``) for an empty layer, labels that are
    not whole numbers, a folder that does not exist, another extension, a
    name over the file system's limit, or a write that fails (a read-only
    folder, a full disk). The temporary is ``.mlffm-<random>.tmp`` beside
    ``path``, so any name the file system takes can be written.
    """
    try:
        try:
            return _write_labels(path, data, is_plugin_mask(meta))
        except OSError as err:
            raise ValueError(f"{one_line(path)}: cannot be written ({err.strerror or type(err).__name__})") from None
    except ValueError as err:
        # napari answers a writer's error with a generic "not a valid writer": say why, too
        from napari.utils.notifications import show_error

        show_error(str(err) if str(err).startswith(str(path)) else f"{path}: {err}")
        raise


def _write_labels(path: str, data: Any, mask: bool) -> list[str]:
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".png", ".tif", ".tiff"):
        raise ValueError(f"{path}: unsupported extension (use .png or .tif)")
    if not target.parent.is_dir():
        raise ValueError(f"{path}: its folder {target.parent} does not exist")
    size, limit = len(os.fsencode(target.name)), name_limit(target.parent)
    if size > limit:
        raise ValueError(f"{one_line(path)}: its file name is {size} bytes, over the file system's limit of {limit}")
    array = _label_array(data, path)
    if suffix == ".png":
        encoded = encode_png(labels_to_png_array(array, mask))
    else:
        if np.issubdtype(array.dtype, np.signedinteger) and array.size and array.min() >= 0:
            top = int(array.max())
            if top < 2**32:  # labels above that stay 64-bit (a cast to uint32 wrapped them)
                array = array.astype(np.uint16 if top < 65536 else np.uint32)
        encoded = encode_tiff(array)
    atomic_write_bytes(target, encoded, prefix=SHORT_TEMPORARY_PREFIX)
    return [str(target)]
