"""Whether a mask was drawn on its photo's pixels as stored, not as the photo is shown.

A photo turned upright by an EXIF or TIFF orientation tag keeps its size
when it is square or turned by a half turn, so a mask drawn on the stored
pixels (by a tool that ignores the tag) passes every size check and is
scored against the wrong orientation. Which way the mask fits is told by
the photo: a lesion is darker than the skin round it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .image_header import ImageReadWarning
from .imageio import orientation_tag
from .tiff_reading import orient

TURNED_MASK_LEVELS = 10.0
"""The mask turned with its image must be this many grey levels (of 255) darker inside than as read to be warned of."""


def warn_if_mask_drawn_unturned(image_path: Path, mask_path: Path, image: np.ndarray, mask: np.ndarray) -> None:
    """Warn (ImageReadWarning) when the image is turned upright by an orientation tag its mask lacks and the mask
    fits the photo better turned the same way: it was drawn on the pixels as stored (a square photo, or a
    half turn, keeps its size, so no size check catches it; the Dice against it was 0.62 for 0.90)."""
    turn = orientation_tag(image_path)
    if turn == 1 or orientation_tag(mask_path) != 1 or not mask.any() or mask.all():
        return
    turned = orient(mask, turn)
    if turned.shape != mask.shape:
        return
    grey = image.astype(np.float32).mean(axis=2) * (255.0 / (65535.0 if image.dtype == np.uint16 else 255.0))

    def darker_inside(lesion: np.ndarray) -> float:  # a lesion is darker than the skin round it
        return float(grey[~lesion].mean() - grey[lesion].mean()) if lesion.any() and not lesion.all() else 0.0

    if darker_inside(turned) > darker_inside(mask) + TURNED_MASK_LEVELS:
        warnings.warn(ImageReadWarning(
            f"{mask_path}: its image is turned upright by its orientation tag ({turn}) and the mask has none, but the "
            "mask fits the photo as stored: was it drawn on the unturned pixels? It is read as it is (turn it, or give it the tag)"
        ), stacklevel=2)
