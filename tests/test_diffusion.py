"""The noise schedule, the forward process and the DDIM update, on hand-checkable cases."""

import math

import pytest
import torch

from model import DiffusionConfig
from model.diffusion.ddim import DDIMScheduler
from model.diffusion.schedule import NoiseSchedule


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_schedule_is_decreasing_in_unit_interval(kind):
    abar = NoiseSchedule(DiffusionConfig(schedule=kind, timesteps=100)).alphas_cumprod
    assert abar.shape == (100,)
    assert torch.all(abar[1:] < abar[:-1])
    assert 0 < abar[-1] < 0.05 and 0.95 < abar[0] <= 1


def test_q_sample_matches_equation_and_inverts():
    schedule = NoiseSchedule(DiffusionConfig(timesteps=50))
    x0 = torch.tensor([[[[1.0, -1.0]]]])
    eps = torch.tensor([[[[0.5, 2.0]]]])
    t = torch.tensor([20])
    a = float(schedule.alphas_cumprod[20])
    x_t = schedule.q_sample(x0, t, eps)
    assert torch.allclose(x_t, math.sqrt(a) * x0 + math.sqrt(1 - a) * eps)
    assert torch.allclose(schedule.predict_x0_from_eps(x_t, t, eps), x0, atol=1e-5)
    assert torch.allclose(schedule.predict_eps_from_x0(x_t, t, x0), eps, atol=1e-5)


def test_ddim_timesteps_are_trailing_and_descending():
    scheduler = DDIMScheduler(NoiseSchedule(DiffusionConfig(timesteps=1000)), steps=10)
    assert scheduler.timesteps[0] == 999 and len(scheduler.timesteps) == 10
    assert all(a > b for a, b in zip(scheduler.timesteps, scheduler.timesteps[1:]))
    assert scheduler.previous_timestep(9) == -1
    with pytest.raises(ValueError):
        DDIMScheduler(NoiseSchedule(DiffusionConfig(timesteps=10)), steps=11)
    with pytest.raises(ValueError):
        DDIMScheduler(NoiseSchedule(DiffusionConfig(timesteps=10)), steps=2, eta=1.5)


def test_deterministic_ddim_step_moves_along_the_same_noise():
    """With the true x0, eta = 0 maps x_t = sqrt(a_t) x0 + sqrt(1-a_t) eps to sqrt(a_prev) x0 + sqrt(1-a_prev) eps."""
    schedule = NoiseSchedule(DiffusionConfig(timesteps=100))
    scheduler = DDIMScheduler(schedule, steps=4)
    x0 = torch.tensor([[[[1.0, -1.0, 1.0]]]])
    eps = torch.tensor([[[[0.3, -1.2, 0.7]]]])
    t, t_prev = scheduler.timesteps[1], scheduler.timesteps[2]
    x_t = schedule.q_sample(x0, torch.tensor([t]), eps)
    expected = schedule.q_sample(x0, torch.tensor([t_prev]), eps)
    assert torch.allclose(scheduler.step(x0, x_t, 1), expected, atol=1e-5)
    assert torch.equal(scheduler.step(x0, x_t, 3), x0)  # after the last step: the clean estimate


def test_stochastic_step_needs_noise_and_uses_sigma():
    schedule = NoiseSchedule(DiffusionConfig(timesteps=100))
    scheduler = DDIMScheduler(schedule, steps=4, eta=1.0)
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="noise"):
        scheduler.step(x, x, 0)
    t, t_prev = scheduler.timesteps[0], scheduler.timesteps[1]
    sigma = scheduler.sigma(t, t_prev)
    a_t, a_prev = float(schedule.alphas_cumprod[t]), float(schedule.alphas_cumprod[t_prev])
    assert sigma == pytest.approx(math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(1 - a_t / a_prev))
    z = torch.ones_like(x)
    assert torch.allclose(scheduler.step(x, x, 0, z), sigma * z)
