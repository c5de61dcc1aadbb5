"""A box around the lesion: the coarsest prompt, "the lesion is in here".

The clinician drags a rectangle around the lesion (micro-sam's and SAM's box
prompt). It is used as *kept pixels*: every pixel outside the box is held as
skin while the whole image is re-proposed (:mod:`model.inputs.kept`), so a
proposal that outlined another lesion, a ruler or a dark corner is pulled
onto the one inside the box. It needs no training and works for any
weights. Painted pixels win over the box where they disagree; a click's
disk of kept lesion does not reach past it (the lesion is inside the box).

A box must be at least :func:`min_box_side` pixels on each side once
clipped to the image (1/64 of the short side, 8 px at 512): a click that
was meant to select a box, not to draw one, makes a box of a pixel or two,
which would wipe the mask; it is refused instead.

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

MIN_BOX_FRACTION = 1 / 64
"""The smallest box side as a share of the image's short side (8 px at 512), and never below 2 px."""


def min_box_side(height: int, width: int) -> int:
    """The smallest box side, in image pixels, allowed in an (H, W) image."""
    return max(2, math.ceil(min(height, width) * MIN_BOX_FRACTION))


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
    def from_rectangle(cls, vertices) -> "Box":
        """The box of a drawn rectangle's 4 (row, col) vertices; ValueError unless they make an axis-aligned rectangle.

        A rotated rectangle, a quadrilateral with a dragged vertex, or any
        other shape would otherwise be silently read as its bounding box.
        """
        box = cls.from_corners(vertices)
        points = np.asarray(vertices, dtype=np.float64)[:, -2:]
        tolerance = 1e-6 * max(1.0, float(np.abs(points).max()))
        on_edges = (np.isclose(points[:, 0], box.top, atol=tolerance) | np.isclose(points[:, 0], box.bottom, atol=tolerance)) & (
            np.isclose(points[:, 1], box.left, atol=tolerance) | np.isclose(points[:, 1], box.right, atol=tolerance)
        )
        if len(points) != 4 or not on_edges.all():
            raise ValueError("the box must be an axis-aligned rectangle (draw it with the rectangle tool; rotated or edited shapes are not boxes)")
        return box

    @classmethod
    def around(cls, mask: np.ndarray) -> "Box | None":
        """The tight box of an (H, W) mask's pixels (the simulated user's box), or None for an empty mask."""
        rows, cols = np.nonzero(np.asarray(mask, bool))
        if not len(rows):
            return None
        return cls(float(rows.min()), float(cols.min()), float(rows.max() + 1), float(cols.max() + 1))

    def at_least(self, height: int, width: int) -> "Box":
        """This box grown about its centre, and moved inside the (H, W) image, to at least :func:`min_box_side` a side."""
        side = min_box_side(height, width)
        edges = []
        for low, high, extent in ((self.top, self.bottom, height), (self.left, self.right, width)):
            if high - low < side:
                centre = (low + high) / 2
                low = min(max(0.0, centre - side / 2), max(0.0, extent - side))
                high = low + side
            edges.append((low, high))
        (top, bottom), (left, right) = edges
        return Box(top, left, bottom, right)

    def grown(self, fraction: float) -> "Box":
        """This box with ``fraction`` of its height and width added on each side (not clipped to any image)."""
        rows, cols = fraction * (self.bottom - self.top), fraction * (self.right - self.left)
        return Box(self.top - rows, self.left - cols, self.bottom + rows, self.right + cols)

    def window(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) as ints clipped to an (H, W) image; ValueError if a side under :func:`min_box_side` is left."""
        for name in ("top", "left", "bottom", "right"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"box {name} must be a finite number, got {value!r}")
        top, bottom = max(0, math.floor(self.top)), min(height, math.ceil(self.bottom))
        left, right = max(0, math.floor(self.left)), min(width, math.ceil(self.right))
        side = min_box_side(height, width)
        if bottom - top < side or right - left < side:
            raise ValueError(
                f"box rows {self.top:.6g}..{self.bottom:.6g}, columns {self.left:.6g}..{self.right:.6g} leaves less than "
                f"{side} x {side} pixels of the {height} x {width} image: drag a box around the lesion"
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
