"""The sampling loop: image features once, N mask trajectories batched.

:func:`sample_soft_masks` is the fast path `Segmenter.propose` uses;
:func:`sample_soft_masks_naive` re-encodes the image at every step and draws
one sample at a time. It exists for the benchmark and the equivalence test.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import torch

from ..config import DiffusionConfig
from .ddim import DDIMScheduler
from ..inputs.kept import repaint
from ..nets.network import DualPathUNet, ImageFeatures
from .schedule import NoiseSchedule


def run_to_completion(generator: Generator, on_item: Callable | None = None):
    """Drive a generator to its end, passing each yielded item to ``on_item``; return its return value."""
    while True:
        try:
            item = next(generator)
        except StopIteration as stop:
            return stop.value
        if on_item is not None:
            on_item(item)


def output_to_x0(output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn the network's output into (x0_hat in [-1, 1], soft mask in [0, 1]).

    For x0-prediction (and direct prediction) the output is the clean mask's
    logits; for eps-prediction it is the noise, and x0 comes from Eq. 4 of DDPM.
    Shapes: all (B, 1, H, W).
    """
    if schedule.config.prediction in ("x0", "direct"):
        prob = torch.sigmoid(output)
        return 2 * prob - 1, prob
    x0 = schedule.predict_x0_from_eps(x_t, t, output).clamp(-1, 1)
    return x0, (x0 + 1) / 2


CPU_TRAJECTORIES_PER_CALL = 4
"""On a CPU, this many trajectories go through the network per call. Bigger
batches of feature maps spill out of the caches: on 2 cores, a proposal of
16 samples x 5 steps took 1.39 s with all 16 per call and 1.12 s with 4 at
96 px (64 px: 0.61 / 0.59 s; 128 px: 2.86 / 1.89 s), with the same
probabilities (``benchmarks/bench_propose.py --quick --batching``)."""


def trajectories_per_call(n_samples: int, device: torch.device | str) -> int:
    """How many of ``n_samples`` trajectories to denoise per network call on ``device``.

    A GPU takes them all at once (an out-of-memory error halves it, see
    ``Segmenter.propose_iter``); a CPU takes :data:`CPU_TRAJECTORIES_PER_CALL`.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}")
    return min(n_samples, CPU_TRAJECTORIES_PER_CALL) if torch.device(device).type == "cpu" else n_samples


def initial_noise(n: int, size: int, seed: int, device: torch.device) -> tuple[torch.Generator, torch.Tensor]:
    """x_T for ``n`` samples: (n, 1, size, size) standard normal from a seeded CPU generator.

    Drawing on the CPU makes a seed give the same starting noise on every device.
    """
    generator = torch.Generator().manual_seed(int(seed))
    return generator, torch.randn((n, 1, size, size), generator=generator).to(device)


def iter_sample_soft_masks(
    network: DualPathUNet,
    features: ImageFeatures,
    diffusion: DiffusionConfig,
    n_samples: int,
    size: int,
    steps: int,
    seed: int,
    eta: float = 0.0,
    max_batch: int | None = None,
    kept: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Generator[int, None, torch.Tensor]:
    """Run DDIM for ``n_samples`` trajectories sharing one image's ``features``.

    ``features`` hold one image (shared by every trajectory) or B views of it
    (trajectory i uses view ``i % B``, see :meth:`ImageFeatures.for_samples`).
    Yields the number of completed steps after each step; returns the final
    soft masks, (n_samples, 1, size, size) in [0, 1]. Stopping the generator
    early cancels sampling. ``max_batch`` caps how many trajectories go
    through the network at once (to fit GPU memory; by default
    :func:`trajectories_per_call`, so a CPU takes a few at a time); the starting noise is
    drawn for all samples first, so with eta = 0 the masks do not depend on it.
    ``kept`` = (weight, x0), each (V, 1, size, size) for V views (trajectory i
    uses view ``i % V``, like the features): the kept share of each pixel and
    its known clean mask in [-1, 1] (:meth:`model.inputs.kept.KeptPixels.at_working_size`).
    Those pixels of x_t are replaced by the known mask noised to the step's
    level with the trajectory's own x_T (:func:`model.inputs.kept.repaint`), and the
    returned soft masks take the known values there.
    """
    device = features.levels[0].device
    if diffusion.prediction == "direct":
        # A feed-forward model: one pass per view; every sample of a view is the same mask.
        soft = direct_soft_masks(network, features, diffusion, size)
        yield steps
        return soft[torch.arange(n_samples, device=soft.device) % soft.shape[0]]
    schedule = NoiseSchedule(diffusion)
    scheduler = DDIMScheduler(schedule, steps, eta)
    generator, x = initial_noise(n_samples, size, seed, device)
    chunk = max(1, min(max_batch or trajectories_per_call(n_samples, device), n_samples))
    soft = None
    if kept is not None:
        views = torch.arange(n_samples) % kept[0].shape[0]
        kept_weight, kept_x0 = kept[0][views].to(device), kept[1][views].to(device)
        start_noise = x
        x = repaint(x, kept_weight, kept_x0, float(schedule.alphas_cumprod[scheduler.timesteps[0]]), start_noise)
    for index, t in enumerate(scheduler.timesteps):
        t_batch = torch.full((n_samples,), t, device=device, dtype=torch.long)
        output = torch.cat(
            [
                network.denoise(features.for_samples(start, start + len(part)), part, t_batch[: len(part)])
                for start, part in zip(range(0, n_samples, chunk), x.split(chunk))
            ]
        )
        x0_hat, soft = output_to_x0(output, x, t_batch, schedule)
        noise = None
        if scheduler.sigma(t, scheduler.previous_timestep(index)) > 0:
            noise = torch.randn(x.shape, generator=generator).to(device)
        x = scheduler.step(x0_hat, x, index, noise)
        if kept is not None:
            previous = scheduler.previous_timestep(index)
            if previous >= 0:
                x = repaint(x, kept_weight, kept_x0, float(schedule.alphas_cumprod[previous]), start_noise)
            else:
                soft = kept_weight * (kept_x0 + 1) / 2 + (1 - kept_weight) * soft
        yield index + 1
    return soft


def sample_soft_masks(
    network: DualPathUNet,
    image: torch.Tensor,
    diffusion: DiffusionConfig,
    n_samples: int,
    steps: int,
    seed: int,
    eta: float = 0.0,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Cached, batched sampling for one image (1, C, S, S). Returns (n_samples, 1, S, S)."""
    features = network.encode_image(image)
    loop = iter_sample_soft_masks(network, features, diffusion, n_samples, image.shape[-1], steps, seed, eta)
    return run_to_completion(loop, None if on_step is None else lambda done: on_step(done, steps))


def sample_soft_masks_naive(
    network: DualPathUNet,
    image: torch.Tensor,
    diffusion: DiffusionConfig,
    n_samples: int,
    steps: int,
    seed: int,
) -> torch.Tensor:
    """Reference sampler: re-encodes the image at every step, one sample at a time.

    ``image`` is (1, C, S, S), or (B, C, S, S) views of one image (for example
    its flipped copies) of which sample i uses view ``i % B``, as in
    :func:`iter_sample_soft_masks`. Deterministic DDIM (eta = 0) only, so it
    gives the same masks as the cached sampler from the same seed. Returns
    (n_samples, 1, S, S).
    """
    schedule = NoiseSchedule(diffusion)
    scheduler = DDIMScheduler(schedule, steps, 0.0)
    _, noise = initial_noise(n_samples, image.shape[-1], seed, image.device)
    results = []
    for i in range(n_samples):
        x = noise[i : i + 1]
        view = image[i % image.shape[0]].unsqueeze(0)
        soft = None
        for index, t in enumerate(scheduler.timesteps):
            t_batch = torch.full((1,), t, device=image.device, dtype=torch.long)
            output = network(view, x, t_batch)
            x0_hat, soft = output_to_x0(output, x, t_batch, schedule)
            x = scheduler.step(x0_hat, x, index)
        results.append(soft)
    return torch.cat(results, dim=0)


@torch.inference_mode()
def direct_soft_masks(
    network: DualPathUNet, features: ImageFeatures, diffusion: DiffusionConfig, size: int, seed: int = 0
) -> torch.Tensor:
    """The network as a single-step direct predictor: one pass at t = T - 1, no sampling.

    A model trained as a direct predictor (``prediction="direct"``) is run
    from x_T = 0, as it was trained. A diffusion-trained model is run from a
    seeded draw x_T ~ N(0, I), which is what it saw at t = T - 1 in training:
    its estimate of x_0 there is the first step of DDIM. (x_T = 0, the mean of
    that noise, lies outside the training distribution: the mask path's
    normalisation sees a constant input, and some models answer it with an
    all-lesion mask.) Returns (B, 1, size, size) soft masks in [0, 1] for the
    B images in ``features`` (the ablation of sampling).
    """
    device = features.levels[0].device
    n = features.batch_size
    schedule = NoiseSchedule(diffusion)
    if diffusion.prediction == "direct":
        x = torch.zeros((n, 1, size, size), device=device)
    else:
        _, x = initial_noise(n, size, seed, device)
    t = torch.full((n,), diffusion.timesteps - 1, device=device, dtype=torch.long)
    _, soft = output_to_x0(network.denoise(features, x, t), x, t, schedule)
    return soft
