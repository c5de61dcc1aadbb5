"""A click's reach: the probable region connected to a click, taken whole after a refine.

A click on a missed part of the lesion says more than "this pixel is
lesion": the region it sits in is. After the model has re-proposed with the
click, the pixels connected to a positive click through the model's own
*probable* lesion (probability >= ``low``, below the decision threshold) are
taken as lesion, and those connected to a negative click through probable
skin (probability < 1 - ``low``) as skin. The reach is local: only pixels
within ``reach`` times the click's distance to the outline of the mask it
corrected (the prompts' prior) count, so a click near the outline moves the
outline near it, and a click deep in a missed lobe takes the lobe.

The result is kept pixels (:class:`model.inputs.kept.KeptPixels`) that a
:class:`model.Proposal` takes in every sample (:meth:`Proposal.with_kept`):
no extra diffusion pass, a connected-component label and one distance map
per click at the image's resolution. It needs no training and works for any
weights. The defaults were chosen on val (docs/results.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import distance_transform_edt, label

from .inputs.kept import KeptPixels

REACH_LOW = 0.2
"""How probable a pixel must be (as lesion for a positive click, as skin for a negative one) to be reached."""
REACH_FACTOR = 3.0
"""The reach's radius as a multiple of the click's distance to the prior's outline."""
MIN_REACH_FRACTION = 1 / 64
"""The smallest reach radius, as a share of the image's short side (8 px at 512)."""
NO_PRIOR_REACH_FRACTION = 1 / 8
"""The reach's radius when the prior has no outline (empty, full or absent), as a share of the short side."""


def _check_options(low: float, factor: float) -> None:
    if not 0.0 < low < 0.5:
        raise ValueError(f"reach low must lie in (0, 0.5), got {low}")
    if not np.isfinite(factor) or factor <= 0:
        raise ValueError(f"reach factor must be a positive number, got {factor}")


def click_reach(
    probability: np.ndarray,
    prior: np.ndarray | None,
    positive: Sequence[tuple[float, float]],
    negative: Sequence[tuple[float, float]],
    low: float = REACH_LOW,
    factor: float = REACH_FACTOR,
) -> KeptPixels | None:
    """The pixels each click reaches in ``probability`` ((H, W) in [0, 1]), as kept pixels; None without clicks.

    ``prior``: (H, W) bool, the mask the clicks corrected (its outline sets
    each click's radius), or None. ``positive`` / ``negative``: (row, col)
    clicks in image pixels. A click whose own pixel is not probable reaches
    nothing. Where a positive and a negative reach overlap, skin wins (as
    with :func:`model.inputs.kept.click_disks`). ValueError for options out
    of range or arrays of the wrong shape.
    """
    _check_options(low, factor)
    probability = np.asarray(probability, np.float32)
    if probability.ndim != 2:
        raise ValueError(f"probability must be (H, W), got shape {probability.shape}")
    height, width = probability.shape
    if prior is not None and np.shape(prior) != (height, width):
        raise ValueError(f"prior must be {height} x {width} like the probability, got shape {np.shape(prior)}")
    if not positive and not negative:
        return None
    side = min(height, width)
    has_outline = prior is not None and bool(np.any(prior)) and not bool(np.all(prior))
    prior = np.asarray(prior, bool) if has_outline else None
    rows, cols = np.ogrid[:height, :width]
    mask = np.zeros((height, width), bool)
    values = np.zeros((height, width), bool)
    for points, lesion in ((positive, True), (negative, False)):
        if not points:
            continue
        # Each click's distance to the outline: into the skin for a positive click, into the lesion for a negative one.
        depth = distance_transform_edt(~prior if lesion else prior) if has_outline else None
        probable = probability >= low if lesion else probability < 1.0 - low
        for r, c in points:
            row = min(max(int(round(r)), 0), height - 1)
            col = min(max(int(round(c)), 0), width - 1)
            if not probable[row, col]:
                continue
            distance = depth[row, col] if has_outline else side * NO_PRIOR_REACH_FRACTION
            radius = max(factor * float(distance), side * MIN_REACH_FRACTION)
            # Only the disk's bounding box can be reached: label there, not the whole image.
            top, bottom = max(0, int(row - radius)), min(height, int(row + radius) + 1)
            left, right = max(0, int(col - radius)), min(width, int(col + radius) + 1)
            near = (rows[top:bottom] - row) ** 2 + (cols[:, left:right] - col) ** 2 <= radius**2
            labels, _ = label(probable[top:bottom, left:right] & near)
            region = labels == labels[row - top, col - left]
            mask[top:bottom, left:right] |= region
            values[top:bottom, left:right][region] = lesion
    return KeptPixels(mask, values) if mask.any() else None
