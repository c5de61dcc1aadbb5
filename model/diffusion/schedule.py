"""Noise schedules and the forward process q(x_t | x_0).

Knows nothing of the network. Equation numbers refer to Ho et al. 2020,
"Denoising Diffusion Probabilistic Models" (DDPM), and Nichol & Dhariwal 2021,
"Improved DDPM" (the cosine schedule).
"""

from __future__ import annotations

import math

import torch

from ..config import DiffusionConfig


def cosine_alphas_cumprod(timesteps: int, offset: float = 0.008) -> torch.Tensor:
    """Improved-DDPM Eq. 17: alpha_bar(t) = f(t) / f(0), f(t) = cos^2(((t/T + s) / (1 + s)) * pi / 2).

    Betas are clipped at 0.999 as in the paper. Returns (T,) float64.
    """
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + offset) / (1 + offset) * math.pi / 2) ** 2
    alphas_bar = f / f[0]
    betas = (1 - alphas_bar[1:] / alphas_bar[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0)


def linear_alphas_cumprod(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear beta schedule (Sec. 4), rescaled to T steps. Returns (T,) float64."""
    scale = 1000.0 / timesteps
    betas = torch.linspace(beta_start * scale, beta_end * scale, timesteps, dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0)


class NoiseSchedule:
    """The cumulative signal levels alpha_bar_t for t = 0 .. T-1."""

    def __init__(self, config: DiffusionConfig) -> None:
        self.config = config
        self.timesteps = config.timesteps
        if config.schedule == "cosine":
            abar = cosine_alphas_cumprod(config.timesteps)
        else:
            abar = linear_alphas_cumprod(config.timesteps)
        self.alphas_cumprod = abar.float()

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_bar at integer timesteps ``t`` (any shape), on ``t``'s device, float32."""
        return self.alphas_cumprod.to(t.device)[t.long()]

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """DDPM Eq. 4: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.

        Shapes: ``x0`` and ``noise`` (B, 1, H, W), ``t`` (B,). Returns (B, 1, H, W).
        """
        abar = self.alpha_bar(t).view(-1, 1, 1, 1)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def predict_x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Eq. 4 solved for x_0: x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
        abar = self.alpha_bar(t).view(-1, 1, 1, 1)
        return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()

    def predict_eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Eq. 4 solved for eps: eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)."""
        abar = self.alpha_bar(t).view(-1, 1, 1, 1)
        return (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
