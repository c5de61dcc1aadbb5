"""The DDIM sampler's update rule, apart from any network.

Equation numbers refer to Song, Meng & Ermon 2021, "Denoising Diffusion
Implicit Models" (ICLR). The scheduler takes the network's estimate of the
clean mask x_0 and the current x_t, and returns x_{t_prev}; it never calls a
network itself.
"""

from __future__ import annotations

import torch

from .schedule import NoiseSchedule


class DDIMScheduler:
    """A sub-sequence tau of the training timesteps and the DDIM step along it.

    Args:
        schedule: the training noise schedule.
        steps: number of sampling steps S (1 <= S <= T).
        eta: stochasticity; 0 is deterministic DDIM, 1 matches DDPM's variance (Eq. 16).

    The sub-sequence is "trailing": it starts at T - 1, so the first step
    sees pure noise, and is evenly spaced down to 0.
    """

    def __init__(self, schedule: NoiseSchedule, steps: int, eta: float = 0.0) -> None:
        if not 1 <= steps <= schedule.timesteps:
            raise ValueError(f"steps must be in 1..{schedule.timesteps}, got {steps}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        self.schedule = schedule
        self.steps = steps
        self.eta = eta
        t = torch.linspace(schedule.timesteps - 1, 0, steps + 1)[:-1] if steps > 1 else torch.tensor([schedule.timesteps - 1.0])
        self.timesteps = t.round().long().tolist()

    def previous_timestep(self, index: int) -> int:
        """tau_{i-1} for the step at position ``index``; -1 after the last step (alpha_bar = 1)."""
        return self.timesteps[index + 1] if index + 1 < len(self.timesteps) else -1

    def sigma(self, t: int, t_prev: int) -> float:
        """Eq. 16: sigma = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev)."""
        a_t = float(self.schedule.alphas_cumprod[t])
        a_prev = float(self.schedule.alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
        return self.eta * ((1 - a_prev) / (1 - a_t)) ** 0.5 * (1 - a_t / a_prev) ** 0.5

    def step(
        self,
        x0_hat: torch.Tensor,
        x_t: torch.Tensor,
        index: int,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Eq. 12: x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps_hat + sigma z.

        ``eps_hat`` is recovered from ``x0_hat`` by Eq. 9 (the forward process
        solved for the noise). Shapes: ``x0_hat`` and ``x_t`` (B, 1, H, W);
        returns (B, 1, H, W). After the last step (t_prev = -1) this is x0_hat.
        ``noise`` (z, same shape as ``x_t``) is required when sigma > 0, so the
        caller controls seeding.
        """
        t = self.timesteps[index]
        t_prev = self.previous_timestep(index)
        if t_prev < 0:
            return x0_hat
        t_tensor = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
        eps_hat = self.schedule.predict_eps_from_x0(x_t, t_tensor, x0_hat)
        a_prev = float(self.schedule.alphas_cumprod[t_prev])
        sigma = self.sigma(t, t_prev)
        direction = max(1 - a_prev - sigma**2, 0.0) ** 0.5 * eps_hat
        x_prev = a_prev**0.5 * x0_hat + direction
        if sigma > 0:
            if noise is None:
                raise ValueError("eta > 0 needs the noise z for this step")
            x_prev = x_prev + sigma * noise
        return x_prev
