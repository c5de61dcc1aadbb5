"""A box around the lesion: the coarsest prompt, "the lesion is in here".

The clinician drags a rectangle around the lesion (micro-sam's and SAM's box
prompt). It is used as *kept pixels*: every pixel outside the box is held as
skin while the whole image is re-proposed (:mod:`model.inputs.kept`), so a
proposal that outlined another lesion, a ruler or a dark corner is pulled
onto the one inside the box. It needs no training and works for any
weights. Clicks and painted pixels win over the box where they disagree.

On val, re-proposing with the outside held as skin beat both clipping the
first proposal to the box and re-proposing a crop of the box at the
working size (the crop made as many images worse as better; this never
did): docs/results.md.

Coordinates are the image's pixels: ``top`` / ``left`` are the first row /
column inside the box and ``bottom`` / ``right`` the first outside it, so a
box of the whole (H, W) image is ``Box(0, 0, H, W)``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from .kept import KeptPixels

MIN_BOX_SIDE = 2
"""The smallest box side, in image pixels, once clipped to the image."""


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in image pixels: rows ``top``..``bottom`` and columns ``left``..``right`` (ends exclusive)."""

    top: float
    left: float
    bottom: float
    right: float

    @classmethod
    def from_corners(cls, corners) -> "Box":
        """The box spanned by (K, 2) (row, col) points, such as a napari rectangle's 4 vertices; ValueError otherwise."""
        try:
            points = np.asarray(corners, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"box corners must be (row, col) pairs of numbers, got {corners!r:.60}") from None
        if points.ndim != 2 or points.shape[1] < 2 or len(points) < 2:
            raise ValueError(f"box corners must be at least two (row, col) points, got shape {points.shape}")
        points = points[:, -2:]
        if not np.isfinite(points).all():
            raise ValueError("box corners contain NaN or infinite values")
        (top, left), (bottom, right) = points.min(axis=0), points.max(axis=0)
        return cls(float(top), float(left), float(bottom), float(right))

    @classmethod
    def around(cls, mask: np.ndarray) -> "Box | None":
        """The tight box of an (H, W) mask's pixels (the simulated user's box), or None for an empty mask."""
        rows, cols = np.nonzero(np.asarray(mask, bool))
        if not len(rows):
            return None
        return cls(float(rows.min()), float(cols.min()), float(rows.max() + 1), float(cols.max() + 1))

    def window(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) as ints clipped to an (H, W) image; ValueError if less than a 2 x 2 box is left."""
        for name in ("top", "left", "bottom", "right"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"box {name} must be a finite number, got {value!r}")
        top, bottom = max(0, math.floor(self.top)), min(height, math.ceil(self.bottom))
        left, right = max(0, math.floor(self.left)), min(width, math.ceil(self.right))
        if bottom - top < MIN_BOX_SIDE or right - left < MIN_BOX_SIDE:
            raise ValueError(
                f"box rows {self.top:g}..{self.bottom:g}, columns {self.left:g}..{self.right:g} leaves less than "
                f"{MIN_BOX_SIDE} x {MIN_BOX_SIDE} pixels of the {height} x {width} image"
            )
        return top, left, bottom, right

    def inside(self, height: int, width: int) -> np.ndarray:
        """(H, W) bool: the pixels in the box."""
        top, left, bottom, right = self.window(height, width)
        out = np.zeros((height, width), bool)
        out[top:bottom, left:right] = True
        return out

    def outside_as_skin(self, height: int, width: int) -> KeptPixels | None:
        """Kept pixels: skin everywhere outside the box; None when the box covers the whole image."""
        outside = ~self.inside(height, width)
        if not outside.any():
            return None
        return KeptPixels(outside, np.zeros((height, width), bool))

    def to_record(self) -> dict:
        """JSON-ready provenance: the box's edges, rounded to 0.1 px."""
        return {name: round(float(getattr(self, name)), 1) for name in ("top", "left", "bottom", "right")}
