"""Choose the inference settings on validation data: samples, DDIM steps, flip views, smoothing, threshold, working size.

For each (steps, flip views) setting it draws the largest number of samples
once per image and keeps their soft masks at working size; smaller sample
counts are the first n of them (the seeded x_T of n samples are the first n
of a larger draw), and the output smoothing and decision threshold are
applied afterwards, so one run fills the whole table. Dice is the mean
per-image Dice of the consensus (the mean probability, resized to the image,
at the threshold). Thresholds are on the model's own probability scale (its
temperature applied; an uncalibrated model's is the plain mean); "best
threshold" is the 0.01-grid threshold with the highest mean Dice (what
``mlffm calibrate`` fits), and ``--thresholds`` adds a column for each
threshold listed. ``--sizes`` runs the network at other working sizes
than the one it was trained at (it is fully convolutional; a size must be a
multiple of 2 ** (levels - 1)), to test whether a finer or coarser grid
helps. s / image is the sampling time of the largest sample count on this
machine.

    python benchmarks/inference_settings.py ../shared/data/isic2018_task1 --split val \
        --samples 8,12,16 --steps 5,10 --views 1,2 --smoothing 0.5,1
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model import Segmenter
from model.inputs.preprocess import apply_temperature, resize_soft
from model.diffusion.sampler import run_to_completion
from training.scoring.calibration import ThresholdSweep
from training.data.datasets import list_cases, load_case


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def draw_soft_masks(segmenter: Segmenter, image: np.ndarray, n: int, steps: int, views: int, seed: int) -> torch.Tensor:
    """(n, S, S) soft masks at working size, the flips undone."""
    seg = segmenter.with_options(flip_views=views)
    x, _ = seg.prepare(image)
    soft = run_to_completion(seg._sample(seg.network, x, n, steps, seed, 0.0, n))
    return soft[:, 0]


def at_working_size(segmenter: Segmenter, size: int) -> Segmenter:
    """The same network run at another working size (a benchmark-only change: the shipped config keeps its own)."""
    if size == segmenter.config.size:
        return segmenter
    other = copy.copy(segmenter)
    other.config = dataclasses.replace(segmenter.config, size=size)  # validates the size against the levels
    return other


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--split", default="val")
    parser.add_argument("--checkpoint", type=Path, help="default: the shipped weights")
    parser.add_argument("--samples", type=_ints, default=[8, 16])
    parser.add_argument("--steps", type=_ints, default=[10])
    parser.add_argument("--views", type=_ints, default=[1])
    parser.add_argument("--smoothing", type=_floats, default=[1.0])
    parser.add_argument("--sizes", type=_ints, help="working sizes to run at (default: the model's own)")
    parser.add_argument("--thresholds", type=_floats, default=[], help="also print the Dice at these thresholds")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.split == "test":
        parser.error("choose settings on val, not on the test split")
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    segmenter = Segmenter.load(args.checkpoint, "cpu")
    try:
        sized = {size: at_working_size(segmenter, size) for size in (args.sizes or [segmenter.config.size])}
    except ValueError as error:
        parser.error(f"--sizes: {error}")
    cases = list_cases(args.data, args.split).cases[: args.limit]
    most = max(args.samples)
    rows = []
    for size, steps, views in itertools.product(sized, args.steps, args.views):
        sweeps = {(n, sigma): ThresholdSweep() for n in args.samples for sigma in args.smoothing}
        seconds = 0.0
        for case in tqdm(cases, desc=f"{size} px, {steps} steps, {views} view(s)", unit="image"):
            image, truth = load_case(case)
            started = time.perf_counter()
            soft = draw_soft_masks(sized[size], image, most, steps, views, args.seed)
            seconds += time.perf_counter() - started
            for n in args.samples:
                mean = soft[:n].mean(dim=0)[None, None]
                for sigma in args.smoothing:
                    probability = apply_temperature(resize_soft(mean, *truth.shape, sigma)[0], segmenter.config.probability_temperature)
                    sweeps[n, sigma].update(probability.numpy(), truth)
        for (n, sigma), sweep in sweeps.items():
            best = sweep.best()
            listed = [sweep.dice_at(t) for t in args.thresholds]
            timing = seconds / len(cases) if n == most else None
            rows.append((size, steps, views, n, sigma, sweep.dice_at(0.5), best, sweep.dice_at(best), listed, timing))
    print(
        f"\n{args.split}: {len(cases)} images, checkpoint {segmenter.checkpoint_id}, temperature {segmenter.config.probability_temperature:.3g}, "
        f"seed {args.seed}, CPU threads {torch.get_num_threads()}"
    )
    extra = "".join(f" Dice @ {t:g} |" for t in args.thresholds)
    print(f"| size | steps | views | samples | smoothing | Dice @ 0.5 | best threshold | Dice @ best |{extra} s / image |")
    print("|" + " --- |" * (9 + len(args.thresholds)))
    for size, steps, views, n, sigma, at_half, best, at_best, listed, sec in rows:
        timing = f"{sec:.2f}" if sec is not None else ""
        columns = "".join(f" {d:.4f} |" for d in listed)
        print(f"| {size} | {steps} | {views} | {n} | {sigma:g} | {at_half:.4f} | {best:.2f} | {at_best:.4f} |{columns} {timing} |")


if __name__ == "__main__":
    main()
