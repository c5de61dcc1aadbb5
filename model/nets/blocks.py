"""Building blocks shared by both encoder paths and the decoder.

Shapes use B (batch), C (channels), H x W (spatial size), D (time embedding).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= 8 that divides ``channels``."""
    groups = math.gcd(channels, 8)
    return nn.GroupNorm(groups, channels)


class TimestepEmbedding(nn.Module):
    """Sinusoidal embedding of integer timesteps followed by a small MLP.

    Input: ``t`` of shape (B,), integer or float timesteps.
    Output: (B, D) with D = ``dim``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        angles = t.float()[:, None] * freqs[None, :]
        emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
        if emb.shape[1] < self.dim:
            emb = F.pad(emb, (0, self.dim - emb.shape[1]))
        return self.mlp(emb)


class ResBlock(nn.Module):
    """Residual block: GN-SiLU-conv3x3, optional FiLM from a time embedding, GN-SiLU-conv3x3.

    Input: (B, C_in, H, W) and optionally ``temb`` (B, D).
    Output: (B, C_out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, time_dim: int | None = None) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.film = nn.Linear(time_dim, 2 * out_channels) if time_dim else None
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.film is not None:
            if temb is None:
                raise ValueError("this block is time-conditioned and needs temb")
            scale, shift = self.film(F.silu(temb))[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return h + self.skip(x)


class GatedImageExchange(nn.Module):
    """Feeds image-path features into the mask path through a learned gate.

    ``m + sigmoid(conv1x1([m, f])) * conv1x1(f)``: the mask path decides, per
    pixel and channel, how much image evidence to take in.

    Input: mask features ``m`` (B, C, H, W), image features ``f`` (B, C_img, H, W).
    Output: (B, C, H, W).
    """

    def __init__(self, channels: int, image_channels: int | None = None) -> None:
        super().__init__()
        image_channels = channels if image_channels is None else image_channels
        self.value = nn.Conv2d(image_channels, channels, 1)
        self.gate = nn.Conv2d(channels + image_channels, channels, 1)

    def forward(self, m: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.gate(torch.cat([m, f], dim=1)))
        return m + gate * self.value(f)


class SelfAttention(nn.Module):
    """Multi-head self-attention over all positions, with a residual.

    Input and output: (B, C, H, W).
    """

    def __init__(self, channels: int, heads: int = 4) -> None:
        super().__init__()
        while channels % heads:
            heads -= 1
        self.norm = group_norm(channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        out, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


def image_path_layers(in_channels: int, widths: tuple[int, ...], blocks_per_level: int) -> tuple[nn.Conv2d, nn.ModuleList, nn.ModuleList]:
    """The image path's layers: a 3x3 stem to ``widths[0]``, ``blocks_per_level`` ResBlocks per level, and a
    stride-2 3x3 convolution between levels (one fewer than the levels)."""
    stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)
    blocks, down = nn.ModuleList(), nn.ModuleList()
    for k, w in enumerate(widths):
        prev = widths[max(k - 1, 0)]
        blocks.append(nn.ModuleList(ResBlock(prev if i == 0 else w, w) for i in range(blocks_per_level)))
        if k < len(widths) - 1:
            down.append(nn.Conv2d(w, w, 3, stride=2, padding=1))
    return stem, blocks, down


def run_image_path(h: torch.Tensor, blocks: nn.ModuleList, down: nn.ModuleList) -> list[torch.Tensor]:
    """The per-level features of an image path from its stem's output ``h`` (B, widths[0], S, S):
    level k is (B, widths[k], S / 2**k, S / 2**k)."""
    levels = []
    for k, level_blocks in enumerate(blocks):
        for block in level_blocks:
            h = block(h)
        levels.append(h)
        if k < len(down):
            h = down[k](h)
    return levels
