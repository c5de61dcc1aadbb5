"""napari writer for Labels layers: PNG (0/255 for a binary mask, else label values) or TIFF."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from training.data.imageio import write_png, write_tiff


def labels_to_png_array(data: np.ndarray) -> np.ndarray:
    """A 2-D labels array as PNG pixels: 0/255 uint8 when binary, the labels (uint8 or uint16) otherwise."""
    data = np.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"PNG holds a single 2-D mask; this layer is {data.ndim}-D {data.shape} (save it as .tif)")
    top = int(data.max()) if data.size else 0
    if int(data.min()) < 0 or top > 65535:
        raise ValueError(f"label values {int(data.min())}..{top} do not fit a PNG (use .tif)")
    if top <= 1:
        return data.astype(np.uint8) * 255
    return data.astype(np.uint8 if top < 256 else np.uint16)


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Write one Labels layer to ``path`` (.png or .tif/.tiff) atomically; returns [path]."""
    target = Path(path)
    suffix = target.suffix.lower()
    array = np.asarray(data)
    if suffix == ".png":
        write_png(target, labels_to_png_array(array))
    elif suffix in (".tif", ".tiff"):
        if np.issubdtype(array.dtype, np.signedinteger) and array.size and array.min() >= 0:
            array = array.astype(np.uint16 if array.max() < 65536 else np.uint32)
        write_tiff(target, array)
    else:
        raise ValueError(f"{path}: unsupported extension (use .png or .tif)")
    return [str(target)]
