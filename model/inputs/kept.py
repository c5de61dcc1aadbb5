"""Kept pixels: parts of the mask the clinician has accepted, held fixed while the rest is resampled.

RePaint-style inpainting (Lugmayr et al. 2022) on the DDIM trajectory: at
every step the kept pixels of x_t are replaced by the forward-noised known
mask, ``sqrt(a_t) x0_known + sqrt(1 - a_t) eps``, so the network denoises
the free pixels in the context of the known ones; the final soft masks take
the known values there, and :class:`model.Proposal` masks are set to them
exactly at the image's resolution. ``eps`` is each trajectory's own starting
noise x_T: a pixel whose clean value is known then follows exactly the path
deterministic DDIM gives it, with no extra random numbers. It needs no
training and works for any checkpoint.

:func:`click_disks` is the training-free use of clicks: a small disk of kept
lesion pixels around each positive click and of kept skin around each
negative one.
"""

from __future__ import annotations

import math

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .preprocess import resize_to_working

CLICK_DISK_FRACTION = 1 / 48
"""Radius of a click's disk of kept pixels as a share of the image's short side (about 10.7 px at 512)."""


@dataclass(frozen=True)
class KeptPixels:
    """Pixels held fixed, at the image's resolution.

    Attributes:
        mask: (H, W) bool, True where the pixel is kept.
        values: (H, W) bool, the kept value (lesion or skin); read where ``mask``.
    """

    mask: np.ndarray
    values: np.ndarray

    def check(self, height: int, width: int) -> None:
        """ValueError naming the array unless mask and values are both (H, W) and hold only 0/1 (bool, or 0 and 1 as numbers)."""
        for name, array in (("kept mask", self.mask), ("kept values", self.values)):
            try:
                shape = np.shape(array)
            except (ValueError, TypeError):  # a ragged nested list
                raise ValueError(f"{name} must be a {height} x {width} array, got {type(array).__name__}") from None
            if shape != (height, width):
                raise ValueError(f"{name} must be {height} x {width} like the image, got shape {shape}")
            _check_binary(name, np.asarray(array))

    @property
    def any(self) -> bool:
        return bool(np.any(self.mask))

    def merged(self, other: "KeptPixels | None") -> "KeptPixels":
        """These kept pixels and ``other``'s; where both keep a pixel, ``other`` wins."""
        if other is None:
            return self
        mask = np.asarray(self.mask, bool) | np.asarray(other.mask, bool)
        values = np.where(np.asarray(other.mask, bool), other.values, self.values).astype(bool) & mask
        return KeptPixels(mask, values)

    def at_working_size(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, x0), both (1, 1, S, S) float32: the kept share of each working pixel, in [0, 1],
        and the known clean mask in [-1, 1] (the kept pixels' mean value, -1 where none is kept)."""
        mask = torch.from_numpy(np.asarray(self.mask, dtype=np.float32))[None, None]
        lesion = torch.from_numpy((np.asarray(self.mask, bool) & np.asarray(self.values, bool)).astype(np.float32))[None, None]
        weight = resize_to_working(mask, size).clamp(0, 1)
        known = resize_to_working(lesion, size).clamp(min=0) / weight.clamp(min=1e-6)
        # Working pixels with only a sliver kept are left free: the sampler's result there is better than a blur.
        weight = torch.where(weight >= 0.25, weight, torch.zeros_like(weight))
        return weight, (2 * known.clamp(0, 1) - 1)


def _check_binary(name: str, array: np.ndarray) -> None:
    """Refuse an array that is not boolean or numbers that are all exactly 0 or 1 (NaN, 0.5, -1, objects, strings)."""
    if array.dtype == np.bool_:
        return
    if array.dtype.kind not in "uif":
        raise ValueError(f"{name} must be a boolean array (or 0/1 numbers), got dtype {array.dtype}")
    if array.size and not ((array == 0) | (array == 1)).all():
        bad = array[(array != 0) & (array != 1)].flat[0].item()
        raise ValueError(f"{name} must hold only 0/1 (or True/False), got {bad!r:.40}")


def click_disks(
    positive: Sequence[tuple[float, float]],
    negative: Sequence[tuple[float, float]],
    height: int,
    width: int,
    radius: float | None = None,
) -> KeptPixels | None:
    """Kept pixels from clicks: a disk of lesion around each positive (row, col), of skin around each negative.

    ``radius`` in image pixels (default ``CLICK_DISK_FRACTION`` of the short
    side, at least 2). Where disks of both kinds overlap, skin wins. None without clicks.
    """
    if not positive and not negative:
        return None
    radius = max(2.0, min(height, width) * CLICK_DISK_FRACTION) if radius is None else float(radius)
    rows, cols = np.ogrid[:height, :width]
    mask = np.zeros((height, width), bool)
    values = np.zeros((height, width), bool)
    for points, value in ((positive, True), (negative, False)):
        for r, c in points:
            r, c = float(r), float(c)
            # Only the disk's bounding box can hold it: test there, not the whole image.
            top, bottom = max(0, math.floor(r - radius)), min(height, math.ceil(r + radius) + 1)
            left, right = max(0, math.floor(c - radius)), min(width, math.ceil(c + radius) + 1)
            if top >= bottom or left >= right:
                continue
            disk = (rows[top:bottom] - r) ** 2 + (cols[:, left:right] - c) ** 2 <= radius**2
            mask[top:bottom, left:right] |= disk
            values[top:bottom, left:right][disk] = value
    return KeptPixels(mask, values)


def repaint(x: torch.Tensor, weight: torch.Tensor, x0: torch.Tensor, alpha_bar: float, noise: torch.Tensor) -> torch.Tensor:
    """Replace the kept share ``weight`` of x_t by the known mask ``x0`` noised to level ``alpha_bar`` with ``noise``.

    Shapes: ``x`` and ``noise`` (B, 1, S, S); ``weight`` and ``x0`` broadcast to it.
    """
    known_t = alpha_bar**0.5 * x0 + (1 - alpha_bar) ** 0.5 * noise
    return weight * known_t + (1 - weight) * x
