"""One training step and what it needs: batches, timesteps, the parameters that train.

:func:`train_step` is the inner step of :func:`training.loop.trainer.train`: augment,
draw timesteps and noise, noise the mask (q(x_t | x_0)), predict, take the
loss, step the optimiser. Every random number comes from one CPU generator,
drawn for the global batch, so a seed replays a run on any device and DDP
ranks stay in step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from model.nets.prompt_control import is_prompt_parameter
from model.inputs.preprocess import network_input
from model.diffusion.sampler import output_to_x0

from ..data.augment import augment_batch
from ..data.datasets import CachedDataset
from ..interactive.own_errors import own_error_prompts
from ..interactive.prompt_training import simulated_prompts
from .losses import dice_loss

if TYPE_CHECKING:
    from .trainer import TrainConfig


def to_batch(data: CachedDataset, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, S, S) float [0, 1] and mask coverage (B, 1, S, S) float [0, 1]."""
    images = torch.from_numpy(data.images[index]).permute(0, 3, 1, 2).float() / 255
    masks = torch.from_numpy(data.masks[index]).float()[:, None] / 255
    return images, masks


def trainable_parameters(network: torch.nn.Module, config: TrainConfig) -> tuple[list[torch.nn.Parameter], Callable[[str], bool] | None]:
    """The parameters to optimise, and which state-dict names the EMA averages (None: all).

    ``freeze_base``: only the prompt weights train. Without clicks
    (``click_prob == 0``) the prompt weights of a prompted network get no
    gradient: they are frozen, so they stay exactly as they are (and
    DistributedDataParallel sees no unused parameter). Everything frozen
    gets ``requires_grad`` False and is copied, not averaged, by the EMA.
    """
    prompted = network.config.prompt_channels > 0
    if config.freeze_base and not prompted:
        raise ValueError("freeze_base: this network has no prompt weights to train")
    if config.freeze_base:
        trains = is_prompt_parameter
    elif prompted and config.click_prob == 0:
        trains = lambda name: not is_prompt_parameter(name)  # noqa: E731
    else:
        return list(network.parameters()), None
    for name, parameter in network.named_parameters():
        parameter.requires_grad_(trains(name))
    return [p for p in network.parameters() if p.requires_grad], trains


def epoch_order(n_train: int, replay: CachedDataset | None, generator: torch.Generator) -> np.ndarray:
    """Indices for one epoch; replay cases are encoded as negative numbers -1 - i."""
    order = torch.randperm(n_train, generator=generator).numpy()
    if replay is not None and len(replay):
        picks = torch.randperm(len(replay), generator=generator)[: n_train].numpy()
        order = np.concatenate([order, -1 - picks])
        order = order[torch.randperm(len(order), generator=generator).numpy()]
    return order


def gather_batch(data: CachedDataset, replay: CachedDataset | None, picks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of :func:`epoch_order`'s ``picks``: own cases, then replay cases (negative picks)."""
    own = picks[picks >= 0]
    images, masks = to_batch(data, own)
    if replay is not None and (picks < 0).any():
        r_images, r_masks = to_batch(replay, -1 - picks[picks < 0])
        images, masks = torch.cat([images, r_images]), torch.cat([masks, r_masks])
    return images, masks


HIGH_T_START = 0.9  # "high t": the top decile of timesteps, where x_t is almost pure noise


def draw_timesteps(batch: int, timesteps: int, high_t_fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Training timesteps (batch,) int64 in [0, timesteps).

    Uniform, except that each item is, with probability ``high_t_fraction``,
    drawn from the top decile instead. There x_t carries almost nothing of
    the mask, so the network must find the lesion in the image: the
    sampler's first step, which fixes the coarse mask, is trained more often
    (uniform sampling spends 90 % of the steps where x_t already shows it).
    With ``high_t_fraction = 0`` no extra random numbers are drawn, so older
    runs replay exactly.
    """
    t = torch.randint(0, timesteps, (batch,), generator=generator)
    if high_t_fraction > 0:
        start = int(HIGH_T_START * timesteps)
        high = torch.randint(start, timesteps, (batch,), generator=generator)
        pick = torch.rand(batch, generator=generator) < high_t_fraction
        t = torch.where(pick, high, t)
    return t


def train_step(network, schedule, loss_fn, optimizer, images, masks, config, generator, device, part=slice(None), flat_field: bool = False) -> dict[str, float]:
    """One optimiser step on (B, 3, S, S) images in [0, 1] and (B, 1, S, S) mask coverage; returns the loss terms.

    Augmentation, timesteps, noise and simulated clicks are drawn for the
    whole batch from ``generator``; the network sees the slice ``part``
    (a DDP rank's share). With ``flat_field`` (the segmenter's config),
    the illumination field is divided out after augmentation, as in inference.
    """
    # Augment where the network runs; every random draw still comes from the CPU generator.
    images, masks = augment_batch(images.to(device), masks.to(device), config.augment, generator)
    t = draw_timesteps(images.shape[0], schedule.timesteps, config.high_t_fraction, generator)
    noise = torch.randn((images.shape[0], *masks.shape[1:]), generator=generator)
    # Simulated clicks too are drawn for the whole global batch, then sliced like the noise.
    prompts = None
    if config.click_prob > 0:
        prompts = simulated_prompts(masks, config.click_prob, generator)
        if config.own_error_share > 0:  # RITM's clicks on the network's own proposals, for a share of them
            prompts = own_error_prompts(
                network, network_input(images, flat_field), masks, prompts, config.own_error_share,
                schedule.config, generator, steps=config.val_steps, part=part,
            )
        prompts = prompts[part].to(device)
    # Under torchrun every rank draws the global batch's random numbers (its generator stays in step
    # with the others and with a single process's) and trains on its own slice ``part``.
    images, masks, t, noise = images[part], masks[part], t[part].to(device), noise[part].to(device)
    target = (masks >= 0.5).float()
    x0 = 2 * target - 1
    x_t = schedule.q_sample(x0, t, noise)
    if schedule.config.prediction == "direct":
        # The feed-forward ablation: always the one pass it will be run as (x_T = 0 at t = T - 1).
        t, x_t = torch.full_like(t, schedule.timesteps - 1), torch.zeros_like(x0)
    images = network_input(images, flat_field)  # after augmentation, as inference sees a shifted image
    # Deep supervision trains the decoder; under --freeze-base only the prompt weights learn, from the main loss alone.
    aux_levels = 0 if config.freeze_base else _network_config(network).deep_supervision
    if aux_levels:
        output, aux = network(images, x_t, t, prompts, with_aux=True)
    else:
        output = network(images, x_t, t, prompts)  # prompts None: the network without prompts
    if schedule.config.prediction in ("x0", "direct"):
        loss, terms = loss_fn(output, target)
        if aux_levels:
            extra = deep_supervision_loss(aux, target)
            loss = loss + extra
            terms["aux"] = float(extra.detach())
    else:
        _, soft = output_to_x0(output, x_t, t, schedule)
        logits = torch.logit(soft.clamp(1e-4, 1 - 1e-4))
        mse = torch.nn.functional.mse_loss(output, noise)
        loss = mse + dice_loss(logits, target)
        terms = {"mse": float(mse)}
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in network.parameters() if p.requires_grad], config.grad_clip)
    optimizer.step()
    terms["loss"] = float(loss.detach())
    return terms


def _network_config(network: torch.nn.Module):
    """The :class:`model.config.NetworkConfig` of a network, or of the one a DDP wrapper holds."""
    return getattr(network, "module", network).config


def deep_supervision_loss(aux_logits: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """The deep-supervision term: sum over levels l = 1..k of 2**-l * (BCE + Dice) at 1/2**l of the size.

    ``aux_logits``: [(B, 1, S / 2**l, S / 2**l) for l = 1..k], finest first
    (:meth:`model.nets.network.DualPathUNet.denoise_with_aux`); ``target``:
    (B, 1, S, S) in [0, 1]. Each level's target is the mask's area coverage
    at that level (average pooling), so a half-covered coarse pixel is a
    target of 0.5, not a rounded 0 or 1. The halving weights follow nnU-Net:
    the coarser the level, the less it counts. No boundary term: at a coarse
    level the boundary band is a pixel or two.
    """
    total = target.new_zeros(())
    for level, logits in enumerate(aux_logits, start=1):
        factor = 2**level
        if logits.shape[-2:] != (target.shape[-2] // factor, target.shape[-1] // factor):
            raise ValueError(f"auxiliary level {level}: expected logits of {target.shape[-2] // factor} x {target.shape[-1] // factor}, got {tuple(logits.shape[-2:])}")
        coarse = torch.nn.functional.avg_pool2d(target, factor)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, coarse)
        total = total + (bce + dice_loss(logits, coarse)) / factor
    return total
