"""The prompt branch: a trainable copy of the image path that reads the prompts.

ControlNet's recipe (Zhang et al. 2023) applied to the image path of the
dual-path U-Net: the branch is a copy of the image path (stem, residual
blocks, downsampling), started from the image path's own weights, whose stem
also reads the prompt channels (those input weights start at zero). At every
level k its features enter the image features through a zero-initialised
1x1 convolution::

    levels[k] = image_path(image)[k] + zero_conv_k(branch(image, prompts)[k])

so the fused skips and the gated exchange of the mask path see the prompts at
every scale, not only through the stem.

**No prompts, no change.** A sample whose prompt channels are all zero (no
clicks and no prior) gets no residual at all (a per-sample gate), and a
network called without prompts never runs the branch. Training only the
prompt weights (``--freeze-base``) therefore leaves every no-prompt proposal
bit for bit that of the base weights, however long it trains.

The branch runs once per (image, prompts), like the image path: prompts cost
nothing per DDIM step.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import image_path_layers, run_image_path
from ..config import NetworkConfig

PROMPT_PARAMETER_PREFIXES = ("prompt_stem.", "prompt_control.")


def is_prompt_parameter(name: str) -> bool:
    """Whether a state-dict name belongs to the prompt weights (the part ``--freeze-base`` trains)."""
    return name.startswith(PROMPT_PARAMETER_PREFIXES)


class PromptControl(nn.Module):
    """Image path copy on (image, prompts) -> per-level residuals for the image features.

    ``forward(image (B, C_in, S, S), prompts (B, P, S, S))`` returns, per level
    k, a (B, widths[k], S / 2**k, S / 2**k) residual, zero for every sample
    whose prompts are all zero.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        widths = tuple(config.widths)
        self.stem, self.blocks, self.down = image_path_layers(config.in_channels, widths, config.image_blocks)
        self.prompt_in = nn.Conv2d(config.prompt_channels, widths[0], 3, padding=1, bias=False)
        nn.init.zeros_(self.prompt_in.weight)
        self.zero_out = nn.ModuleList(nn.Conv2d(w, w, 1) for w in widths)
        for conv in self.zero_out:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    @torch.no_grad()
    def copy_image_path(self, network: nn.Module) -> None:
        """Start the branch from ``network``'s image path (stem, blocks and downsampling)."""
        self.stem.load_state_dict(network.image_stem.state_dict())
        self.blocks.load_state_dict(network.image_blocks.state_dict())
        self.down.load_state_dict(network.image_down.state_dict())

    def forward(self, image: torch.Tensor, prompts: torch.Tensor) -> list[torch.Tensor]:
        active = (prompts.flatten(1).abs().amax(dim=1) > 0).to(image.dtype)[:, None, None, None]
        levels = run_image_path(self.stem(image) + self.prompt_in(prompts), self.blocks, self.down)
        return [zero(level) * active for zero, level in zip(self.zero_out, levels)]
