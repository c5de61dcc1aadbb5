"""Losses on the predicted clean mask: BCE, soft Dice and a boundary-weighted BCE.

Shape contract for every loss here: ``logits`` and ``target`` are
(B, 1, H, W); ``target`` is binary (0/1 floats). Each returns a scalar
(the mean over the batch).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per image, averaged: 1 - (2 sum(p t) + s) / (sum p + sum t + s)."""
    _check_shapes(logits, target)
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(1, 2, 3))
    total = prob.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
    return (1 - (2 * inter + smooth) / (total + smooth)).mean()


def boundary_weights(target: np.ndarray, sigma: float, amplitude: float) -> np.ndarray:
    """Per-pixel weights 1 + amplitude * exp(-d^2 / (2 sigma^2)), d = distance to the mask boundary.

    ``target``: (B, H, W) bool. Returns (B, H, W) float32. The boundary is
    the set of pixels on either side of an edge, so d = 0 there. An empty
    or full mask has no boundary and gets weight 1 everywhere.
    """
    out = np.ones(target.shape, dtype=np.float32)
    for i, mask in enumerate(target):
        if mask.all() or not mask.any():
            continue
        inside = ndimage.distance_transform_edt(mask)
        outside = ndimage.distance_transform_edt(~mask)
        distance = np.where(mask, inside, outside) - 1.0  # 0 on the pixels adjacent to the edge
        out[i] = 1.0 + amplitude * np.exp(-(distance**2) / (2 * sigma**2))
    return out


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """BCE weighted per pixel, normalised by the weight sum: sum(w * bce) / sum(w)."""
    _check_shapes(logits, target)
    if weights.shape != target.shape:
        raise ValueError(f"weights shape {tuple(weights.shape)} must match target {tuple(target.shape)}")
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (weights * bce).sum() / weights.sum()


class SegmentationDiffusionLoss(torch.nn.Module):
    """The training objective on the network's clean-mask estimate.

    ``bce_weight * BCE + dice_weight * Dice + boundary_weight * boundary-weighted BCE``

    Args:
        bce_weight, dice_weight, boundary_weight: non-negative term weights,
            at least one positive. ``boundary_weight = 0`` is the ablation
            "without the boundary-sensitive term".
        boundary_sigma: width in pixels of the band around the boundary.
        boundary_amplitude: extra weight on the boundary itself.

    ``forward(logits, target, weights=None)``: logits and target (B, 1, H, W),
    weights (B, 1, H, W) from :func:`boundary_weights` (computed if None).
    Returns (total, {term name: value}).
    """

    def __init__(
        self,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        boundary_weight: float = 1.0,
        boundary_sigma: float = 3.0,
        boundary_amplitude: float = 4.0,
    ) -> None:
        super().__init__()
        for name, value in (("bce_weight", bce_weight), ("dice_weight", dice_weight), ("boundary_weight", boundary_weight)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if bce_weight + dice_weight + boundary_weight <= 0:
            raise ValueError("at least one loss term must have a positive weight")
        if boundary_sigma <= 0 or boundary_amplitude < 0:
            raise ValueError("boundary_sigma must be > 0 and boundary_amplitude >= 0")
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.boundary_weight = boundary_weight
        self.boundary_sigma = boundary_sigma
        self.boundary_amplitude = boundary_amplitude

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        _check_shapes(logits, target)
        terms: dict[str, torch.Tensor] = {}
        if self.bce_weight:
            terms["bce"] = F.binary_cross_entropy_with_logits(logits, target)
        if self.dice_weight:
            terms["dice"] = dice_loss(logits, target)
        if self.boundary_weight:
            if weights is None:
                w = boundary_weights(target[:, 0].cpu().numpy() > 0.5, self.boundary_sigma, self.boundary_amplitude)
                weights = torch.from_numpy(w)[:, None].to(logits.device)
            terms["boundary"] = weighted_bce(logits, target, weights)
        scale = {"bce": self.bce_weight, "dice": self.dice_weight, "boundary": self.boundary_weight}
        total = sum(scale[name] * value for name, value in terms.items())
        return total, {name: float(value.detach()) for name, value in terms.items()}


def _check_shapes(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.ndim != 4 or logits.shape[1] != 1 or logits.shape != target.shape:
        raise ValueError(f"expected logits and target of the same shape (B, 1, H, W), got {tuple(logits.shape)} and {tuple(target.shape)}")
