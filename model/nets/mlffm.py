"""The Multi-Level Feature Fusion Module (MLFFM) on the skip connections.

For one decoder level l, the module takes the image-path features of every
encoder level k, brings each to level l's scale (bilinear upsampling or area
downsampling, then a 1x1 projection to a common width), refines each with
CBAM-style channel then spatial attention, and sums them with adaptive
cross-level weights: a learned per-level prior plus a content term from each
level's pooled features, normalised by a softmax over levels.

The inputs come from the image path only, so the fused skips depend on
neither x_t nor t and are computed once per image.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import group_norm


class ChannelAttention(nn.Module):
    """CBAM channel attention: a shared MLP over average- and max-pooled channels.

    Input and output: (B, C, H, W).
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.SiLU(), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        peak = self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(avg + peak)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: a 7x7 conv over the channel mean and max.

    Input and output: (B, C, H, W).
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class MultiLevelFusion(nn.Module):
    """Fuses all encoder levels into the skip for one decoder level.

    Args:
        source_widths: channels of each encoder level, full resolution first.
        target_level: the decoder level this skip feeds (0 = full resolution).
        width: the common width the sources are projected to (the output width).

    Input: a list of (B, C_k, H / 2**k, W / 2**k) tensors, one per level k.
    Output: (B, width, H / 2**l, W / 2**l) for l = ``target_level``.
    """

    def __init__(self, source_widths: tuple[int, ...], target_level: int, width: int) -> None:
        super().__init__()
        self.target_level = target_level
        self.project = nn.ModuleList(nn.Conv2d(c, width, 1) for c in source_widths)
        self.channel_attention = nn.ModuleList(ChannelAttention(width) for _ in source_widths)
        self.spatial_attention = nn.ModuleList(SpatialAttention() for _ in source_widths)
        self.level_prior = nn.Parameter(torch.zeros(len(source_widths)))
        self.level_score = nn.Linear(width, 1)
        self.refine = nn.Sequential(group_norm(width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[self.target_level].shape[-2:]
        aligned = []
        scores = []
        for k, f in enumerate(features):
            if k < self.target_level:
                f = F.adaptive_avg_pool2d(f, size)
            elif k > self.target_level:
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            f = self.spatial_attention[k](self.channel_attention[k](self.project[k](f)))
            aligned.append(f)
            scores.append(self.level_score(f.mean(dim=(2, 3))).squeeze(1) + self.level_prior[k])
        weights = torch.softmax(torch.stack(scores, dim=1), dim=1)  # (B, levels)
        fused = sum(weights[:, k, None, None, None] * f for k, f in enumerate(aligned))
        return fused + self.refine(fused)


class PlainSkip(nn.Module):
    """Ablation stand-in for the MLFFM: the same-level image features, projected.

    Input: the same list as :class:`MultiLevelFusion`.
    Output: (B, width, H / 2**l, W / 2**l).
    """

    def __init__(self, source_widths: tuple[int, ...], target_level: int, width: int) -> None:
        super().__init__()
        self.target_level = target_level
        self.project = nn.Conv2d(source_widths[target_level], width, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.project(features[self.target_level])
