"""Flat-field correction: undo a dermatoscope's vignetting and uneven light before the network sees the image.

Per-channel standardisation (:func:`model.inputs.preprocess.standardize`) removes
any global gain, but not a gain that varies across the field: the dark
circular frame of a contact dermatoscope, or light brighter on one side.
This module estimates that gain as a smooth, constrained illumination field
and divides it out.

The field model, in log luminance::

    log g(x, y) = p(r) + a x + b y,    r = distance from the image centre

``p`` is **non-increasing** in ``r`` (a lens only darkens outward), and
``a x + b y`` is a tilt of the light. The constraint is what keeps a lesion
out of the field: a dark lesion in the middle cannot be explained by a
profile that only falls outward, and dark pixels (lesion, hair, frame edge)
are down-weighted after each fit, so the field follows the skin.

The fit alternates weighted least squares for the tilt with weighted
isotonic regression (pool-adjacent-violators) for the profile, on a
coarse grid. Everything is numpy; no training is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

FIT_SIDE = 48  # the grid the field is fitted on (pixels per side)
RADIUS_BINS = 32
DARK_RESIDUAL = 0.1  # log units: pixels this much darker than the fit count as not-skin
DARK_WEIGHT = 0.03
ITERATIONS = 6
MAX_RADIUS = 1.6  # the profile's reach, in half-sides from its centre (a corner is at sqrt 2 from the middle)
CENTRE_SEARCH = 0.2  # how far from the image centre the field's centre is searched (half-sides)
FRAME_GAIN = 0.15  # never brighten more than 1 / FRAME_GAIN; at and below this gain a pixel is the frame...
FRAME_FADE = 0.3  # ...and between the two it fades to skin colour


def _decreasing_fit(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted isotonic regression, non-increasing: (K,) values and weights -> (K,) fit (PAVA)."""
    blocks: list[list[float]] = []  # [weighted mean, weight, count]
    for v, w in zip(values.tolist(), weights.tolist()):
        blocks.append([v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            v2, w2, n2 = blocks.pop()
            v1, w1, n1 = blocks.pop()
            total = w1 + w2
            blocks.append([(v1 * w1 + v2 * w2) / total if total > 0 else (v1 + v2) / 2, total, n1 + n2])
    return np.concatenate([np.full(int(n), v) for v, _, n in blocks])


def _grid(side_rows: int, side_cols: int, centre: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) coordinates of pixel centres in [-1, 1], relative to ``centre``."""
    rows = (np.arange(side_rows) + 0.5) / side_rows * 2 - 1 - centre[0]
    cols = (np.arange(side_cols) + 0.5) / side_cols * 2 - 1 - centre[1]
    return np.meshgrid(rows, cols, indexing="ij")


@dataclass(frozen=True)
class Field:
    """A fitted illumination field: log gain ``profile[r] + tilt[0] * row + tilt[1] * col`` around ``centre``.

    ``profile``: (RADIUS_BINS,) log gain at bin centres over r in [0, MAX_RADIUS]
    (non-increasing); ``centre`` and the coordinates in [-1, 1] image units;
    ``loss``: the robust fit residual (lower is better).
    """

    profile: np.ndarray
    tilt: tuple[float, float]
    centre: tuple[float, float]
    loss: float

    def gain(self, height: int, width: int) -> np.ndarray:
        """(height, width) gain in (0, 1], 1 at its brightest."""
        rows, cols = _grid(height, width, self.centre)
        centres = (np.arange(RADIUS_BINS) + 0.5) / RADIUS_BINS * MAX_RADIUS
        log_gain = np.interp(np.hypot(rows, cols), centres, self.profile) + self.tilt[0] * rows + self.tilt[1] * cols
        return np.exp(log_gain - log_gain.max())


def fit_field(luminance: np.ndarray, centre: tuple[float, float] = (0.0, 0.0)) -> Field:
    """Fit the field around ``centre`` to (h, w) luminance in [0, 1] (values below 1/255 count as 1/255)."""
    y = np.log(np.clip(luminance, 1 / 255, None)).ravel()
    rows, cols = (c.ravel() for c in _grid(*luminance.shape, centre))
    radius = np.hypot(rows, cols)
    bins = np.minimum((radius / MAX_RADIUS * RADIUS_BINS).astype(int), RADIUS_BINS - 1)
    present = np.bincount(bins, minlength=RADIUS_BINS) > 0
    centres = (np.arange(RADIUS_BINS) + 0.5) / RADIUS_BINS * MAX_RADIUS
    weights = np.where(y >= np.median(y), 1.0, DARK_WEIGHT)
    a = b = 0.0
    tilt = np.stack([rows, cols], 1)
    for _ in range(ITERATIONS):
        z = y - (a * rows + b * cols)
        mass = np.bincount(bins, weights, RADIUS_BINS)
        means = np.bincount(bins, weights * z, RADIUS_BINS) / np.maximum(mass, 1e-12)
        profile = np.full(RADIUS_BINS, np.nan)
        profile[present] = _decreasing_fit(means[present], mass[present])
        profile = _fill_missing(profile)
        # Residuals against the profile interpolated at each pixel's own radius: against the bin's one value,
        # the darker outer half of a bin on a steep fall-off would count as not-skin and bias the fit upward.
        smooth = np.interp(radius, centres, profile)
        residual = y - smooth
        sw = np.sqrt(weights)
        (a, b), *_ = np.linalg.lstsq(tilt * sw[:, None], (residual - np.average(residual, weights=weights)) * sw, rcond=None)
        error = y - (smooth + a * rows + b * cols)
        weights = np.where(error > -DARK_RESIDUAL, 1.0, DARK_WEIGHT)
    # The centre search's criterion: squared error capped at 1 (a factor e), so a lesion costs every centre alike
    # while a frame left unexplained costs the most.
    loss = float(np.mean(np.minimum(error**2, 1.0)))
    return Field(profile, (float(a), float(b)), centre, loss)


def _fill_missing(profile: np.ndarray) -> np.ndarray:
    known = np.flatnonzero(~np.isnan(profile))
    return np.interp(np.arange(len(profile)), known, profile[known])


def best_field(luminance: np.ndarray) -> Field:
    """The field whose centre fits best: a 3 x 3 search of offsets up to CENTRE_SEARCH, then a finer one around the best."""
    best = fit_field(luminance)
    for step in (CENTRE_SEARCH, CENTRE_SEARCH / 2):
        around = best.centre
        for dy in (-step, 0.0, step):
            for dx in (-step, 0.0, step):
                if dy or dx:
                    candidate = fit_field(luminance, (around[0] + dy, around[1] + dx))
                    if candidate.loss < best.loss:
                        best = candidate
    return best


def flat_field(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float RGB in [0, 1] -> the same with each image's illumination field divided out.

    Each image gets its own field (:func:`best_field` on its mean-channel
    luminance at :data:`FIT_SIDE` px) and is divided by it. Where the gain
    is so low that the picture is lost (a dermatoscope's black frame,
    below :data:`FRAME_GAIN`), the pixels fade to the image's skin colour
    (the median colour of the bright half of the well-lit pixels), so the
    frame reads as skin, not lesion. The result is clamped to [0, 1].
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    height, width = images.shape[-2:]
    small = F.adaptive_avg_pool2d(images.detach().float().mean(1, keepdim=True), (min(FIT_SIDE, height), min(FIT_SIDE, width)))
    out = []
    for k in range(images.shape[0]):
        gain = torch.from_numpy(best_field(small[k, 0].cpu().numpy().astype(np.float64)).gain(height, width)).to(images.device, images.dtype)
        corrected = (images[k] / gain.clamp_min(FRAME_GAIN)).clamp(0, 1)
        frame = ((FRAME_FADE - gain) / (FRAME_FADE - FRAME_GAIN)).clamp(0, 1)
        if bool((frame > 0).any()):
            # A field stop's edge is sharper than the fitted profile: grow the fill by about 1 % of the side,
            # so the last dark pixels inside the edge do not stay as a thin dark ring.
            grow = max(1, round(min(height, width) / 96))
            frame = F.max_pool2d(frame[None, None], 2 * grow + 1, stride=1, padding=grow)[0, 0]
            lit = corrected[:, gain >= 0.5]
            luminance = lit.mean(0)
            skin = lit[:, luminance >= luminance.median()].median(1).values if lit.shape[1] else corrected.flatten(1).median(1).values
            corrected = corrected * (1 - frame) + skin[:, None, None] * frame
        out.append(corrected)
    return torch.stack(out)
