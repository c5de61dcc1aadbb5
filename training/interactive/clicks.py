"""The simulated user of interactive segmentation (the RITM / SimpleClick protocol).

Xu et al. 2016, Sofiiuk et al. 2022 (RITM), Liu et al. 2023 (SimpleClick):

* the first click goes to the lesion point farthest from the lesion's
  boundary (with an empty prediction, this is the rule below);
* each next click goes to the point farthest from the boundary of the
  largest error region of the current prediction: positive (lesion) if that
  point lies in a missed region (false negative), negative (skin) if it lies
  in a false one (false positive). "Largest" is measured as in RITM's code,
  by the distance from the region's boundary (the radius of the largest disk
  that fits in it), not by its area: a thin sliver along the outline ranks
  below a compact blob of the same area.

The image border counts as boundary (``border_is_boundary=True``, RITM's
zero padding): a lesion cut by the frame is clicked in the middle of its
visible part, as a person would, and not on the frame's edge. With False
the border is not boundary (as if the region went on beyond the frame).

Ties (several points at the same largest distance) go to the first in
row-major order, so the simulation is deterministic. Pure numpy / scipy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt


@dataclass(frozen=True)
class Click:
    """One simulated click: (row, col) in the masks' pixels, its polarity and the error's depth there (pixels)."""

    row: int
    col: int
    positive: bool
    depth: float

    @property
    def point(self) -> tuple[float, float]:
        return float(self.row), float(self.col)


def boundary_distance(region: np.ndarray, border_is_boundary: bool = True) -> np.ndarray:
    """(H, W) float: each pixel's Euclidean distance to the nearest pixel outside ``region`` (0 outside it)."""
    region = np.asarray(region, bool)
    if not region.any():
        return np.zeros(region.shape, np.float64)
    if border_is_boundary:
        return distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    if region.all():
        # No pixel outside and the border is not boundary: every pixel is equally deep; depth = the image's size.
        return np.full(region.shape, float(max(region.shape)))
    return distance_transform_edt(region)


def farthest_point(region: np.ndarray, border_is_boundary: bool = True) -> tuple[int, int, float] | None:
    """(row, col, depth) of the ``region`` pixel farthest from its boundary, or None for an empty region."""
    depth = boundary_distance(region, border_is_boundary)
    index = int(np.argmax(depth))
    best = float(depth.flat[index])
    if best <= 0:
        return None
    row, col = divmod(index, depth.shape[1])
    return row, col, best


def next_click(prediction: np.ndarray, truth: np.ndarray, border_is_boundary: bool = True) -> Click | None:
    """The simulated user's next click on ``prediction`` against ``truth`` (both (H, W) bool); None if they agree.

    With an all-skin prediction this is the first click of the protocol: the
    lesion point farthest from the lesion's boundary.
    """
    prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and truth {truth.shape} differ in shape")
    missed = farthest_point(truth & ~prediction, border_is_boundary)
    false = farthest_point(prediction & ~truth, border_is_boundary)
    if missed is None and false is None:
        return None
    if false is None or (missed is not None and missed[2] >= false[2]):
        return Click(missed[0], missed[1], True, missed[2])
    return Click(false[0], false[1], False, false[2])


def first_click(truth: np.ndarray, border_is_boundary: bool = True) -> Click | None:
    """The lesion point farthest from the lesion's boundary (positive); None for an empty mask."""
    return next_click(np.zeros_like(np.asarray(truth, bool)), truth, border_is_boundary)


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two (H, W) bool masks; 1 when both are empty."""
    prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
    total = int(prediction.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((prediction & truth).sum()) / total
