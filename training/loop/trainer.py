"""The training loop shared by ``mlffm train`` and ``mlffm finetune``.

One step (:func:`training.loop.train_step.train_step`): augment a batch, pick timesteps, noise the ground-truth mask
(q(x_t | x_0)), predict the clean mask from (image, x_t, t), take the loss,
step AdamW, update the EMA. After each epoch the EMA weights are scored on
the validation set; the best are written to the output file and the full
state to ``<output name>.resume.mlffm``, both atomically.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from model import Segmenter
from model.files.checkpoint import remove_stale_temporaries
from model.inputs.preprocess import network_input
from model.diffusion.sampler import iter_sample_soft_masks, run_to_completion
from model.diffusion.schedule import NoiseSchedule

from ..data.augment import AugmentConfig
from ..data.datasets import CachedDataset
from .distributed import SINGLE, Distributed
from .losses import SegmentationDiffusionLoss
from .state import EMA, pack_training_state, unpack_training_state
from .train_step import epoch_order, gather_batch, to_batch, train_step, trainable_parameters


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training or fine-tuning run."""

    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.02
    ema_decay: float = 0.995
    grad_clip: float = 1.0
    seed: int = 0
    time_budget_minutes: float | None = None
    val_steps: int = 2
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    boundary_weight: float = 1.0
    high_t_fraction: float = 0.0
    click_prob: float = 0.0  # share of samples trained with simulated clicks (training/prompt_training.py); 0 = none
    freeze_base: bool = False  # train only the prompt weights (model/nets/prompt_control.py): no-click proposals stay the base's
    own_error_share: float = 0.0  # of the prompted samples, the share clicked on the network's own proposals (interactive/own_errors.py)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        for name in ("bce_weight", "dice_weight", "boundary_weight", "weight_decay"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if self.time_budget_minutes is not None and self.time_budget_minutes <= 0:
            raise ValueError("time budget must be > 0 minutes")
        if not 0.0 <= self.high_t_fraction <= 1.0:
            raise ValueError(f"high_t_fraction (--high-t-fraction) must lie in [0, 1], got {self.high_t_fraction}")
        if not 0.0 <= self.click_prob <= 1.0:
            raise ValueError(f"click_prob (--click-prob) must lie in [0, 1], got {self.click_prob}")
        if self.freeze_base and self.click_prob <= 0:
            raise ValueError("freeze_base (--freeze-base) trains only the prompt weights: it needs click_prob > 0")
        if not 0.0 <= self.own_error_share <= 1.0:
            raise ValueError(f"own_error_share (--own-errors) must lie in [0, 1], got {self.own_error_share}")
        if self.own_error_share > 0 and self.click_prob <= 0:
            raise ValueError("own_error_share (--own-errors) places clicks on the model's own proposals: it needs click_prob > 0")


class Reporter(Protocol):
    """What the loop tells its caller (tqdm in the CLI, napari progress in the GUI)."""

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None: ...
    def batch_end(self, losses: dict[str, float]) -> None: ...
    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None: ...
    def message(self, text: str) -> None: ...


class SilentReporter:
    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        pass

    def batch_end(self, losses: dict[str, float]) -> None:
        pass

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def message(self, text: str) -> None:
        pass


@dataclass
class TrainResult:
    """How a run ended."""

    epochs_done: int
    best_val_dice: float | None  # None: no validation cases, nothing was scored
    best_epoch: int  # with no validation cases: the last epoch saved
    history: list[dict[str, float]]
    stopped_by: str  # "epochs", "time budget", "interrupt" or "cancel"
    seconds: float


def resume_path_for(output: Path) -> Path:
    """``<full output name>.resume.mlffm``: two outputs (``run.mlffm``, ``run.ckpt``) never share one resume file."""
    output = Path(output)
    return output.with_name(output.name + ".resume.mlffm")


def validation_dice(segmenter: Segmenter, data: CachedDataset, steps: int, batch_size: int = 32, seed: int = 0) -> float:
    """Mean Dice of one DDIM sample per image at the working size (model selection only)."""
    if len(data) == 0:
        return float("nan")
    return float(np.mean([s for _, chunk in validation_scores(segmenter, data, steps, batch_size, seed) for s in chunk]))


@torch.inference_mode()
def validation_scores(
    segmenter: Segmenter, data: CachedDataset, steps: int, batch_size: int = 32, seed: int = 0, shard: tuple[int, int] = (0, 1)
) -> list[tuple[int, list[float]]]:
    """Per-image Dice as (first index, scores) per batch, for the batches ``shard = (i, n)`` owns (every n-th from i).

    Batch ``start`` is sampled with seed ``seed + start`` whichever process runs it.
    """
    network = segmenter.network.eval()
    out = []
    for start in range(0, len(data), batch_size)[shard[0] :: shard[1]]:
        scores: list[float] = []
        index = np.arange(start, min(start + batch_size, len(data)))
        images, masks = to_batch(data, index)
        features = network.encode_image(network_input(images, segmenter.config.flat_field).to(segmenter.device))
        loop = iter_sample_soft_masks(network, features, segmenter.config.diffusion, len(index), segmenter.config.size, steps, seed + start)
        soft = run_to_completion(loop).cpu()
        pred, truth = soft[:, 0] >= 0.5, masks[:, 0] >= 0.5
        inter = (pred & truth).sum(dim=(1, 2)).float()
        total = pred.sum(dim=(1, 2)) + truth.sum(dim=(1, 2))
        scores.extend(torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(inter)).tolist())
        out.append((start, scores))
    return out


def learning_rate(config: TrainConfig, step: int, total_steps: int, time_fraction: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio * lr``.

    Progress is the larger of the step fraction and ``time_fraction`` (the
    share of ``--time-budget`` spent), so a run that the budget will stop
    before its last epoch still ends on a fully decayed learning rate.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(max((step - config.warmup_steps) / max(total_steps - config.warmup_steps, 1), time_fraction), 1.0)
    ratio = config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr * ratio


def train(
    segmenter: Segmenter,
    train_data: CachedDataset,
    val_data: CachedDataset,
    config: TrainConfig,
    output: Path,
    *,
    provenance: dict[str, Any],
    resume: Path | None = None,
    reporter: Reporter | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    replay_data: CachedDataset | None = None,
    initial_val_dice: float | None = None,
    distributed: Distributed = SINGLE,
) -> TrainResult:
    """Train ``segmenter.network`` in place and write the best EMA weights to ``output``.

    With ``replay_data``, each epoch also draws as many replay cases as
    ``train_data`` has (fine-tuning's guard against drift). With
    ``initial_val_dice`` (fine-tuning), the starting weights count as epoch 0
    and are kept if no epoch beats them. With no ``val_data`` (``mlffm adapt``'s
    candidate, scored by its caller) nothing is validated: each epoch's weights
    are saved as the last, with a null ``val_dice``.

    Under torchrun (``distributed``, see :mod:`training.loop.distributed`) the
    ranks train slices of each global batch; only rank 0 writes.
    """
    reporter = reporter or SilentReporter()
    if len(train_data) == 0:
        raise ValueError("no training images could be loaded")
    ctx = distributed
    ctx.check_batch(config.batch_size)
    for target in (output, resume_path_for(output)) if ctx.is_main else ():
        for stale in remove_stale_temporaries(target):
            reporter.message(f"removed {stale.name}, left half-written by an earlier run that was killed")
    device = segmenter.device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    network = segmenter.network.train()
    trainable, averaged = trainable_parameters(network, config)
    stepped = ctx.wrap(network)  # DistributedDataParallel under torchrun: averages the gradients of the ranks
    part = ctx.batch_part(config.batch_size)
    schedule = NoiseSchedule(segmenter.config.diffusion)
    loss_fn = SegmentationDiffusionLoss(config.bce_weight, config.dice_weight, config.boundary_weight)
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    ema = EMA(network, config.ema_decay, only=averaged)
    generator = torch.Generator().manual_seed(config.seed)
    eval_segmenter = copy.deepcopy(segmenter)

    n_train = len(train_data) + (min(len(replay_data), len(train_data)) if replay_data is not None else 0)
    if ctx.enabled and n_train < config.batch_size:
        raise ValueError(f"{n_train} training cases cannot fill the global batch of {config.batch_size} over {ctx.world_size} processes: use fewer processes")
    batches = max(n_train // config.batch_size, 1)
    total_steps = batches * config.epochs
    start_epoch, step, history, spent = 0, 0, [], 0.0
    best_dice, best_epoch = (initial_val_dice, 0) if initial_val_dice is not None else (-1.0, -1)
    if resume is not None:
        loaded, tensors, meta = Segmenter.load_with_state(resume, device)
        network.load_state_dict(loaded.network.state_dict())
        try:
            _check_same_mix(meta.get("sample_mix"), config)
            unpack_training_state(tensors, meta, ema, optimizer, generator)
        except ValueError as err:
            raise ValueError(f"{resume}: {err}") from None
        start_epoch, step = int(meta["epoch"]), int(meta["step"])
        history, spent = list(meta.get("history", [])), float(meta.get("seconds", 0.0))
        saved_best = meta.get("best_val_dice", -1.0)  # null: not finite when saved, or nothing validated
        best_dice = float(saved_best) if isinstance(saved_best, (int, float)) and math.isfinite(saved_best) else -1.0
        best_epoch = int(meta.get("best_epoch", -1)) if best_dice >= 0 else -1
        reporter.message(f"resumed from {resume} at epoch {start_epoch}, step {step}")
        if best_epoch >= 0 and not output.exists():
            # The earlier best was written to another file (a new -o, or it was removed): this output
            # must still get a model, so the first epoch scored here is saved and the race starts afresh.
            reporter.message(f"{output} does not exist: the earlier best (epoch {best_epoch}, val Dice {best_dice:.4f}) is not in it, so this run saves its own best there")
            best_dice, best_epoch = -1.0, -1

    started = time.monotonic()
    budget = config.time_budget_minutes * 60 if config.time_budget_minutes else None
    stopped_by = "epochs"
    epoch = start_epoch
    while epoch < config.epochs:
        reporter.epoch_start(epoch + 1, config.epochs, batches)
        order = epoch_order(len(train_data), replay_data, generator)
        completed, batches_done, loss_sum = True, 0, 0.0
        try:
            for b in range(batches):
                # One decision for all ranks: a stop request on any, the time budget as rank 0 measures it.
                halt, time_fraction = ctx.agree_to_stop(should_stop, lambda: spent + time.monotonic() - started, budget)
                if halt is not None:
                    stopped_by, completed = halt, False
                    break
                picks = order[b * config.batch_size : (b + 1) * config.batch_size]
                images, masks = gather_batch(train_data, replay_data, picks)
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config, step, total_steps, time_fraction)
                losses = train_step(stepped, schedule, loss_fn, optimizer, images, masks, config, generator, device, part, segmenter.config.flat_field)
                if not math.isfinite(ctx.mean(losses.get("loss", 0.0))):  # every rank decides alike
                    raise ValueError(
                        f"training diverged at step {step + 1}: the loss is not finite; {output} keeps the best model "
                        "saved so far, if any (try a lower --lr or smaller loss weights)"
                    )
                ema.update(network)
                step += 1
                batches_done += 1
                loss_sum += losses.get("loss", float("nan"))
                reporter.batch_end(losses)
        except KeyboardInterrupt:
            if should_stop():  # a second signal, after the first asked to stop: abort, as promised, without saving
                raise
            stopped_by, completed = "interrupt", False
        if completed:
            epoch += 1
        elif batches_done == 0 and epoch > start_epoch:
            break  # stopped before this epoch's first batch: the last epoch is already scored and saved
        ema.copy_to(eval_segmenter.network)
        clicks, validated = {}, len(val_data) > 0
        if not validated:  # nothing to score on: no Dice to show or select by (not a NaN)
            val_dice = None
        elif config.click_prob > 0:
            # Prompt training selects on the mean of the no-click Dice and the Dice after one click
            # (each rank scores its share of the batches; every rank gets the gathered means).
            no_click, one_click = ctx.prompt_validation(eval_segmenter, val_data, config.val_steps, seed=config.seed)
            val_dice, clicks = (no_click + one_click) / 2, {"val_dice_0_clicks": no_click, "val_dice_1_click": one_click}
        else:
            val_dice = ctx.validation_dice(eval_segmenter, val_data, config.val_steps, seed=config.seed)
        loss_sum = ctx.mean(loss_sum)  # every rank's share of the batches, averaged
        train_loss = loss_sum / batches_done if batches_done else None  # None: stopped before this epoch's first batch
        # A stopped epoch is named as the one it cut short, not as the last complete one it follows
        # (in the log, the history, the epoch_end event and the best epoch; the resume state counts complete epochs).
        label = epoch if completed else epoch + 1
        record = {"epoch": label, "step": step, "train_loss": train_loss, "val_dice": val_dice, "lr": optimizer.param_groups[0]["lr"], **clicks}
        if not completed:
            record["batches_done"] = batches_done
        history.append(record)
        shown_loss = "n/a" if train_loss is None else f"{train_loss:.4f}"
        shown_epoch = epoch if completed else f"{label} (stopped after {batches_done} of {batches} batches)"
        shown_dice = "not validated (no validation cases: the last weights are kept)" if val_dice is None else f"val Dice {val_dice:.4f}"
        summary = f"epoch {shown_epoch}: train loss {shown_loss}, {shown_dice}"
        if clicks:
            summary += f" (mean of {clicks['val_dice_0_clicks']:.4f} with no click and {clicks['val_dice_1_click']:.4f} after 1)"
        # A run stopped mid-epoch (time budget, Ctrl-C, cancel) is scored too: its weights are real training.
        if not validated or val_dice > best_dice:
            best_dice, best_epoch = val_dice, label
            if ctx.is_main:
                eval_segmenter.save(output, provenance=_provenance(provenance, config, history, best_dice, best_epoch, spent + time.monotonic() - started))
            reporter.message(f"{summary}{' (best)' if validated else ''}, saved {output}")
        else:
            reporter.message(f"{summary} (best {best_dice:.4f} at epoch {best_epoch})")
        reporter.epoch_end(label, record)
        seconds = spent + time.monotonic() - started
        counters = {"epoch": epoch, "step": step, "history": history, "seconds": seconds, "best_val_dice": best_dice, "best_epoch": best_epoch, "sample_mix": _sample_mix(config)}
        if ctx.enabled:
            counters["world_size"] = ctx.world_size
        tensors, meta = pack_training_state(ema, optimizer, generator, counters)
        if ctx.is_main:
            segmenter.save(resume_path_for(output), provenance=dict(provenance), extra_tensors=tensors, extra_meta=meta)
        if not completed:
            break
    network.eval()
    same = ctx.check_same_weights(network)
    if same:
        reporter.message(same)
    return TrainResult(epoch, best_dice, best_epoch, history, stopped_by, spent + time.monotonic() - started)


# What each training sample is drawn with: a resumed run that changed it would neither replay nor train as it started.
SAMPLE_MIX_OPTIONS = {"click_prob": "--click-prob", "own_error_share": "--own-errors", "high_t_fraction": "--high-t-fraction"}


def _sample_mix(config: TrainConfig) -> dict[str, float]:
    return {name: float(getattr(config, name)) for name in SAMPLE_MIX_OPTIONS}


def _check_same_mix(saved: dict[str, float] | None, config: TrainConfig) -> None:
    """Refuse to resume with another sample mix than the run started with (files written before it was saved pass)."""
    if not isinstance(saved, dict):
        return
    for name, flag in SAMPLE_MIX_OPTIONS.items():
        if name in saved and float(saved[name]) != float(getattr(config, name)):
            raise ValueError(f"the run started with {flag} {saved[name]:g}, not {getattr(config, name):g}: resume with the options it started with")


def _provenance(base: dict[str, Any], config: TrainConfig, history, best_dice, best_epoch, seconds) -> dict[str, Any]:
    out = dict(base)
    out.update(
        {
            "train_config": asdict(config),
            "history": history,
            "best_val_dice": best_dice,
            "best_epoch": best_epoch,
            "train_seconds": round(seconds, 1),
        }
    )
    return out
