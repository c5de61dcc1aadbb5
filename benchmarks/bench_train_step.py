"""Seconds per prompt-training step with clicks on a perturbed reference, on the model's own errors, or a mix.

    python benchmarks/bench_train_step.py [--data DIR] [--checkpoint FILE] [--shares 0,0.5,1] [--steps 6] [--batch-size 16]

Each row trains a fresh copy of the checkpoint (the shipped weights by
default, which have the prompt branch) with ``--click-prob 1 --freeze-base``
and ``--own-errors`` at that share, on the same batches of the ISIC folder's
train split at the checkpoint's working size. One untimed step warms up;
the median of ``--steps`` timed steps is shown, with its ratio to the first
row. Threads: torch's default (all cores) unless OMP_NUM_THREADS says
otherwise.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from model import Segmenter
from model.diffusion.schedule import NoiseSchedule
from training.data.datasets import cache_dataset, list_cases
from training.loop.losses import SegmentationDiffusionLoss
from training.loop.train_step import to_batch, train_step, trainable_parameters
from training.loop.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "isic2018_task1"


def seconds_per_step(base: Segmenter, data, share: float, steps: int, batch_size: int) -> float:
    segmenter = copy.deepcopy(base)
    config = TrainConfig(batch_size=batch_size, lr=5e-4, click_prob=1.0, freeze_base=True, own_error_share=share, high_t_fraction=0.6, seed=0)
    network = segmenter.network.train()
    trainable, _ = trainable_parameters(network, config)
    optimizer = torch.optim.AdamW(trainable, lr=config.lr)
    schedule = NoiseSchedule(segmenter.config.diffusion)
    loss_fn = SegmentationDiffusionLoss(config.bce_weight, config.dice_weight, config.boundary_weight)
    generator = torch.Generator().manual_seed(0)
    times = []
    for step in range(steps + 1):
        index = (np.arange(batch_size) + step * batch_size) % len(data)
        images, masks = to_batch(data, index)
        started = time.perf_counter()
        train_step(network, schedule, loss_fn, optimizer, images, masks, config, generator, "cpu", flat_field=segmenter.config.flat_field)
        if step:  # the first step warms up
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--checkpoint", type=Path, help="weights with prompt channels (default: the shipped ones)")
    parser.add_argument("--shares", default="0,0.5,1", help="--own-errors shares to time, comma-separated")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    shares = [float(s) for s in args.shares.split(",")]
    if args.steps < 1 or args.batch_size < 1 or not all(0 <= s <= 1 for s in shares):
        parser.error("--steps and --batch-size must be >= 1 and every share in [0, 1]")
    base = Segmenter.load(args.checkpoint, "cpu")
    if not base.config.network.prompt_channels:
        parser.error(f"{args.checkpoint}: these weights have no prompt channels (train with --click-prob first)")
    cases = list_cases(args.data, "train").cases[: args.batch_size * (args.steps + 1)]
    data = cache_dataset(cases, base.config.size)
    print(f"{len(data)} train images at {base.config.size} px, batch {args.batch_size}, {torch.get_num_threads()} threads, median of {args.steps} steps")
    print("| --own-errors | s / step | x first row |")
    print("| --- | --- | --- |")
    first = None
    for share in shares:
        seconds = seconds_per_step(base, data, share, args.steps, args.batch_size)
        first = first or seconds
        print(f"| {share:g} | {seconds:.3f} | {seconds / first:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
