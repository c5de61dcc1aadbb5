"""Combining proposals, cleaning masks and measuring a case (headless, used by the plugin).

Shapes: ``samples`` (N, H, W) bool; masks (H, W) bool; ``uncertainty`` (H, W) float.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import measure, morphology

COMBINATIONS = ("majority", "union", "intersection")


def combine(samples: np.ndarray, how: str) -> np.ndarray:
    """Majority (> half, ties count as lesion), union or intersection of N proposals."""
    if samples.ndim != 3:
        raise ValueError(f"samples must be (N, H, W), got shape {samples.shape}")
    samples = samples.astype(bool)
    if how == "majority":
        return samples.sum(axis=0) * 2 >= samples.shape[0]
    if how == "union":
        return samples.any(axis=0)
    if how == "intersection":
        return samples.all(axis=0)
    raise ValueError(f"unknown combination {how!r}; choose one of {', '.join(COMBINATIONS)}")


def clean_mask(
    mask: np.ndarray,
    fill_holes: bool = True,
    largest_only: bool = False,
    min_size: int = 0,
    smooth_radius: int = 0,
) -> np.ndarray:
    """Clean a binary mask with scikit-image and scipy.

    Order: remove objects smaller than ``min_size`` pixels, keep the largest
    component, fill holes, then smooth the boundary by a binary opening and
    closing with a disk of ``smooth_radius``.
    """
    out = mask.astype(bool).copy()
    if min_size > 0:
        out = morphology.remove_small_objects(out, max_size=min_size - 1) if _has_max_size() else morphology.remove_small_objects(out, min_size=min_size)
    if largest_only and out.any():
        labels = measure.label(out)
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        out = labels == sizes.argmax()
    if fill_holes:
        out = ndimage.binary_fill_holes(out)
    if smooth_radius > 0:
        disk = morphology.disk(smooth_radius)
        out = ndimage.binary_closing(ndimage.binary_opening(out, disk), disk)
    return out


def _has_max_size() -> bool:
    import inspect

    return "max_size" in inspect.signature(morphology.remove_small_objects).parameters


def max_diameter(mask: np.ndarray) -> float:
    """Largest distance in pixels between two boundary points of the mask (0 if empty)."""
    points = np.argwhere(mask & ~ndimage.binary_erosion(mask))
    if len(points) < 2:
        return float(len(points) > 0)
    if len(points) > 2000:
        from scipy.spatial import ConvexHull

        try:
            points = points[ConvexHull(points).vertices]
        except Exception:
            points = points[:: max(len(points) // 2000, 1)]
    diff = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((diff**2).sum(-1)).max())


def border_pixels(mask: np.ndarray) -> int:
    """Number of True pixels of an (H, W) mask on its outermost rows and columns (each pixel counted once)."""
    edge = np.zeros(mask.shape, bool)
    edge[[0, -1], :] = True
    edge[:, [0, -1]] = True
    return int((mask.astype(bool) & edge).sum())


def case_readout(
    mask: np.ndarray,
    samples: np.ndarray | None = None,
    uncertainty: np.ndarray | None = None,
    pixel_size_mm: float | None = None,
    band_width: int = 3,
) -> dict[str, float | None]:
    """Measurements a reviewer reads off a case.

    Returns area in pixels (and mm^2 with ``pixel_size_mm``), maximum diameter
    in pixels (and mm), mean uncertainty inside a band of ``band_width``
    pixels around the mask boundary, and the spread of lesion area across the
    proposals (coefficient of variation: std / mean of the N areas).
    ``border_px`` counts mask pixels on the image's outermost rows and
    columns: a lesion cut by the field of view, whose area and diameter are
    then lower bounds.
    """
    mask = mask.astype(bool)
    area = int(mask.sum())
    diameter = max_diameter(mask)
    out: dict[str, float | None] = {
        "area_px": area,
        "area_mm2": area * pixel_size_mm**2 if pixel_size_mm else None,
        "max_diameter_px": diameter,
        "max_diameter_mm": diameter * pixel_size_mm if pixel_size_mm else None,
        "boundary_uncertainty": None,
        "area_spread": None,
        "border_px": border_pixels(mask),
    }
    if uncertainty is not None and mask.any() and not mask.all():
        band = ndimage.binary_dilation(mask, iterations=band_width) & ~ndimage.binary_erosion(mask, iterations=band_width)
        out["boundary_uncertainty"] = float(uncertainty[band].mean())
    if samples is not None and len(samples) >= 2:
        areas = samples.reshape(len(samples), -1).sum(axis=1).astype(float)
        out["area_spread"] = float(areas.std() / areas.mean()) if areas.mean() > 0 else 0.0
    return out
