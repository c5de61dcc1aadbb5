"""Augmentation for dermoscopy, applied to batches at the working size.

Geometric transforms (flips, 90-degree and small rotations, scale and
translation) are one affine warp per image, applied identically to image and
mask. Photometric transforms (brightness, contrast, per-channel gain for
device colour shift, saturation, gamma for skin tone and exposure, blur)
touch the image only. Optionally (``acquisition_shifts``, off by default)
vignetting, uneven illumination and hair of :mod:`training.data.acquisition_shifts`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from model.inputs.preprocess import gaussian_blur

from .acquisition_shifts import random_shifts


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transforms; set ``enabled=False`` for none."""

    enabled: bool = True
    flip: bool = True
    rotate90: bool = True
    max_rotation_deg: float = 20.0
    scale_range: tuple[float, float] = (0.8, 1.25)
    max_translate: float = 0.1
    brightness: float = 0.2
    contrast: float = 0.2
    channel_gain: float = 0.1
    saturation: float = 0.25
    gamma: float = 0.25
    blur_probability: float = 0.2
    max_blur_sigma: float = 1.2
    acquisition_shifts: float = 0.0  # per-image chance of each of vignetting, uneven light, hair (training/acquisition_shifts.py)

    def __post_init__(self) -> None:
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")
        if not 0 <= self.blur_probability <= 1:
            raise ValueError("blur_probability must lie in [0, 1]")
        if not 0 <= self.acquisition_shifts <= 1:
            raise ValueError(f"acquisition_shifts must lie in [0, 1], got {self.acquisition_shifts}")


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def random_affine(n: int, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) affine matrices for ``F.affine_grid``: flip, rotation, scale, translation."""
    angle = _uniform(n, -config.max_rotation_deg, config.max_rotation_deg, generator) * math.pi / 180
    if config.rotate90:
        angle = angle + torch.randint(0, 4, (n,), generator=generator) * (math.pi / 2)
    low, high = config.scale_range
    scale = torch.exp(_uniform(n, math.log(low), math.log(high), generator))
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if config.flip else torch.ones(n)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos * flip
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * flip
    theta[:, 1, 1] = cos
    theta[:, :, 2] = _uniform(2 * n, -config.max_translate, config.max_translate, generator).view(n, 2)
    return theta


def warp(images: torch.Tensor, masks: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one affine per image to images (B, 3, S, S) and masks (B, 1, S, S), both float.

    Out-of-frame image pixels reflect the border (skin continues); masks use
    the same sampling grid, with zeros padded, so they stay aligned. Runs on
    the images' device; ``theta`` (B, 2, 3) may live anywhere.
    """
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    masks = F.grid_sample(masks, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return images, masks


def photometric(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Random colour and contrast changes and blur. Input and output: (B, 3, S, S) in [0, 1].

    The random draws come from ``generator`` (a CPU generator, so a seed means
    the same on every device); the arithmetic runs on the images' device.
    """
    n = images.shape[0]
    shape = (n, 1, 1, 1)
    draw = lambda count, low, high: _uniform(count, low, high, generator).to(images.device)  # noqa: E731
    gain = 1 + draw(3 * n, -config.channel_gain, config.channel_gain).view(n, 3, 1, 1)
    images = images * gain * (1 + draw(n, -config.brightness, config.brightness).view(shape))
    gray = images.mean(dim=1, keepdim=True)
    saturation = 1 + draw(n, -config.saturation, config.saturation).view(shape)
    images = gray + (images - gray) * saturation
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    contrast = 1 + draw(n, -config.contrast, config.contrast).view(shape)
    images = ((images - mean) * contrast + mean).clamp(0, 1)
    gamma = torch.exp(draw(n, -config.gamma, config.gamma)).view(shape)
    images = images.clamp_min(1e-6) ** gamma
    blur = (torch.rand(n, generator=generator) < config.blur_probability).to(images.device)
    if blur.any():
        sigma = float(_uniform(1, 0.3, config.max_blur_sigma, generator))
        images[blur] = gaussian_blur(images[blur], sigma)
    return images


def augment_batch(
    images: torch.Tensor, masks: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch.

    Inputs: images (B, 3, S, S) float in [0, 1]; masks (B, 1, S, S) float coverage in [0, 1].
    Outputs: the same shapes; masks stay soft (threshold at 0.5 afterwards).
    """
    if not config.enabled:
        return images, masks
    theta = random_affine(images.shape[0], config, generator)
    images, masks = warp(images, masks, theta)
    images = photometric(images, config, generator)
    if config.acquisition_shifts > 0:
        images = random_shifts(images, config.acquisition_shifts, generator)
    return images, masks
