"""The dual-path U-Net of MLFFM-SegDiff.

* The **image path** encodes the dermoscopic image. It sees neither x_t nor t,
  so :meth:`DualPathUNet.encode_image` runs once per image and its result
  (:class:`ImageFeatures`, including the MLFFM-fused skips) is reused for every
  denoising step and every sample.
* The **mask path** encodes the noisy mask x_t with the timestep; at every
  level the image features enter through a gated exchange.
* The **decoder** is time-conditioned and takes, at each level, the upsampled
  deeper features, the mask path's skip and the fused image skip. It outputs
  one channel: x0 logits or predicted noise, depending on the diffusion target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import GatedImageExchange, ResBlock, SelfAttention, TimestepEmbedding, group_norm, image_path_layers, run_image_path
from ..config import NetworkConfig
from .mlffm import MultiLevelFusion, PlainSkip
from .prompt_control import PromptControl


@dataclass
class ImageFeatures:
    """Cached output of the image path for a batch of B images.

    Attributes:
        levels: per level k, (B, C_k, S / 2**k, S / 2**k) image features
            (C_k = ``widths[k]``).
        skips: per decoder level l < L - 1, (B, D_l, S / 2**l, S / 2**l) fused
            skips (D_l = ``denoiser_widths[l]``).
    """

    levels: list[torch.Tensor]
    skips: list[torch.Tensor]

    @property
    def batch_size(self) -> int:
        return self.levels[0].shape[0]

    def expand(self, n: int) -> "ImageFeatures":
        """Broadcast a batch of one image to ``n`` samples without copying."""
        if self.batch_size == n:
            return self
        if self.batch_size != 1:
            raise ValueError(f"can only expand a batch of 1 image, not {self.batch_size}")
        grow = lambda x: x.expand(n, *x.shape[1:])  # noqa: E731
        return ImageFeatures([grow(x) for x in self.levels], [grow(x) for x in self.skips])

    def for_samples(self, start: int, stop: int) -> "ImageFeatures":
        """Features for samples ``start:stop``.

        A batch of one image is broadcast to every sample; a batch of B > 1
        views (for example flipped copies of one image) is shared out in turn,
        sample i using view ``i % B``.
        """
        if self.batch_size == 1:
            return self.expand(stop - start)
        index = torch.arange(start, stop, device=self.levels[0].device) % self.batch_size
        pick = lambda x: x.index_select(0, index)  # noqa: E731
        return ImageFeatures([pick(x) for x in self.levels], [pick(x) for x in self.skips])


class DualPathUNet(nn.Module):
    """Dual-path U-Net denoiser conditioned on an image.

    ``forward(image, x_t, t)`` is ``denoise(encode_image(image), x_t, t)``.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        widths = tuple(config.widths)
        inner = config.denoiser_widths  # mask path and decoder (== widths for the plain U-Net)
        levels = len(widths)
        tdim = config.time_dim

        # Image path.
        self.image_stem, self.image_blocks, self.image_down = image_path_layers(config.in_channels, widths, config.image_blocks)
        # Prompt channels enter through their own zero-initialised, bias-free convolution added to the
        # stem's output, so zero prompts (or none) leave the image path exactly as it was.
        self.prompt_stem = None
        if config.prompt_channels:
            self.prompt_stem = nn.Conv2d(config.prompt_channels, widths[0], 3, padding=1, bias=False)
            nn.init.zeros_(self.prompt_stem.weight)
        # The prompt branch (model/nets/prompt_control.py): residuals at every level, zero until trained.
        self.prompt_control = PromptControl(config) if config.prompt_control else None
        skip_cls = MultiLevelFusion if config.fusion == "mlffm" else PlainSkip
        self.skip_fusion = nn.ModuleList(skip_cls(widths, level, inner[level]) for level in range(levels - 1))

        # Mask path (absent in the plain U-Net ablation: the decoder then reads the image path).
        with_mask = config.mask_path
        tdim_or_none = tdim if with_mask else None
        if with_mask:
            self.time_embedding = TimestepEmbedding(tdim)
            self.mask_stem = nn.Conv2d(1, inner[0], 3, padding=1)
            self.mask_blocks = nn.ModuleList()
            self.mask_exchange = nn.ModuleList(GatedImageExchange(w, f) for w, f in zip(inner, widths))
            self.mask_down = nn.ModuleList()
            for k, w in enumerate(inner):
                prev = inner[max(k - 1, 0)]
                blocks = [ResBlock(prev if i == 0 else w, w, tdim) for i in range(config.mask_blocks)]
                self.mask_blocks.append(nn.ModuleList(blocks))
                if k < levels - 1:
                    self.mask_down.append(nn.Conv2d(w, w, 3, stride=2, padding=1))
        self.bottleneck = ResBlock(inner[-1], inner[-1], tdim_or_none)
        self.bottleneck_attention = SelfAttention(inner[-1]) if config.bottleneck_attention else None

        # Decoder, deepest level first: upsampled h, the mask-path skip (if any) and the fused image skip.
        self.decoder_blocks = nn.ModuleList()
        for level in reversed(range(levels - 1)):
            w = inner[level]
            self.decoder_blocks.append(ResBlock(inner[level + 1] + (2 if with_mask else 1) * w, w, tdim_or_none))
        self.head = nn.Sequential(group_norm(inner[0]), nn.SiLU(), nn.Conv2d(inner[0], 1, 1))
        # Deep supervision: clean-mask heads on decoder levels 1..k (training only, never on the sampling path).
        # Their last convolution starts at zero, so at first they learn without pushing on the decoder's
        # features: a warm start is not disturbed by heads that have not learned anything yet.
        self.aux_heads = nn.ModuleList(
            nn.Sequential(group_norm(inner[level]), nn.SiLU(), nn.Conv2d(inner[level], 1, 1))
            for level in range(1, config.deep_supervision + 1)
        )
        for head in self.aux_heads:
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)

    def encode_image(self, image: torch.Tensor, prompts: torch.Tensor | None = None) -> ImageFeatures:
        """Run the image path once.

        Input: (B, in_channels, S, S) normalised image; optionally ``prompts``,
        (B, prompt_channels, S, S) encoded by :func:`model.inputs.prompts.encode_prompts`
        (None: no prompts, the same as all zeros). A network without prompt
        channels raises ValueError when given prompts.
        Output: :class:`ImageFeatures` for the batch.
        """
        h = self.image_stem(image)
        if prompts is not None:
            if self.prompt_stem is None:
                raise ValueError("this network has no prompt channels (prompt_channels=0); it cannot take prompts")
            if prompts.shape[1] != self.config.prompt_channels or prompts.shape[-2:] != image.shape[-2:]:
                raise ValueError(f"prompts must be (B, {self.config.prompt_channels}, {image.shape[-2]}, {image.shape[-1]}), got {tuple(prompts.shape)}")
            h = h + self.prompt_stem(prompts)
        levels = run_image_path(h, self.image_blocks, self.image_down)
        if prompts is not None and self.prompt_control is not None:
            levels = [level + residual for level, residual in zip(levels, self.prompt_control(image, prompts))]
        skips = [fusion(levels) for fusion in self.skip_fusion]
        return ImageFeatures(levels, skips)

    def denoise(self, features: ImageFeatures, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """One network evaluation on the noisy mask.

        Inputs: ``features`` for B images (or 1, broadcast), ``x_t`` (B, 1, S, S)
        in [-1, 1]-ish scale, ``t`` (B,) integer timesteps.
        Output: (B, 1, S, S): x0 logits or predicted noise.
        """
        return self._decode(features, x_t, t, None)

    def denoise_with_aux(self, features: ImageFeatures, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`denoise` plus the deep-supervision heads' clean-mask logits.

        Returns (output (B, 1, S, S), [aux_l (B, 1, S / 2**l, S / 2**l) for
        l = 1 .. ``config.deep_supervision``]); the output is the same as
        :meth:`denoise`'s.
        """
        aux: list[torch.Tensor] = []
        return self._decode(features, x_t, t, aux), aux

    def _decode(self, features: ImageFeatures, x_t: torch.Tensor, t: torch.Tensor, aux: list[torch.Tensor] | None) -> torch.Tensor:
        features = features.expand(x_t.shape[0])
        if not self.config.mask_path:
            return self._decode_image_only(features, aux)
        temb = self.time_embedding(t)
        h = self.mask_stem(x_t)
        mask_skips = []
        for k, blocks in enumerate(self.mask_blocks):
            for block in blocks:
                h = block(h, temb)
            h = self.mask_exchange[k](h, features.levels[k])
            mask_skips.append(h)
            if k < len(self.mask_down):
                h = self.mask_down[k](h)
        h = self.bottleneck(h, temb)
        if self.bottleneck_attention is not None:
            h = self.bottleneck_attention(h)
        for i, level in enumerate(reversed(range(len(mask_skips) - 1))):
            h = F.interpolate(h, size=mask_skips[level].shape[-2:], mode="nearest")
            h = self.decoder_blocks[i](torch.cat([h, mask_skips[level], features.skips[level]], dim=1), temb)
            self._collect_aux(h, level, aux)
        return self.head(h)

    def _decode_image_only(self, features: ImageFeatures, aux: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The plain U-Net: bottleneck on the deepest image features, decoder on the image skips."""
        h = self.bottleneck(features.levels[-1])
        if self.bottleneck_attention is not None:
            h = self.bottleneck_attention(h)
        for i, level in enumerate(reversed(range(len(features.levels) - 1))):
            skip = features.skips[level]
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = self.decoder_blocks[i](torch.cat([h, skip], dim=1))
            self._collect_aux(h, level, aux)
        return self.head(h)

    def _collect_aux(self, h: torch.Tensor, level: int, aux: list[torch.Tensor] | None) -> None:
        """Append level ``level``'s auxiliary logits to ``aux`` (finest first) when asked and the level has a head."""
        if aux is not None and 1 <= level <= len(self.aux_heads):
            aux.insert(0, self.aux_heads[level - 1](h))

    def forward(
        self, image: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, prompts: torch.Tensor | None = None, with_aux: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """``denoise(encode_image(image, prompts), x_t, t)``; with ``with_aux``, :meth:`denoise_with_aux`'s pair.

        Training calls this (not the two halves), so a DistributedDataParallel
        wrapper sees every weight used.
        """
        features = self.encode_image(image, prompts)
        return self.denoise_with_aux(features, x_t, t) if with_aux else self.denoise(features, x_t, t)
