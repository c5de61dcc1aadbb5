"""The Dice a perfect model could reach at each working size: true masks shrunk to S px and enlarged back.

    python benchmarks/resolution_ceiling.py ../shared/data/isic2018_task1 --split val

Each true mask is area-averaged down to S x S, resized bilinearly back to
the image and thresholded at 0.5 (the proposals' own path back to the
image), then scored against the original mask with Dice.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from training.data.datasets import list_cases, load_case
from training.scoring.metrics import dice


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--split", default="val")
    parser.add_argument("--sizes", default="64,96,128,192")
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    scores: dict[int, list[float]] = {s: [] for s in sizes}
    cases = list_cases(args.data, args.split).cases[: args.limit]
    for case in cases:
        _, truth = load_case(case)
        mask = torch.from_numpy(truth.astype(np.float32))[None, None]  # (1, 1, H, W)
        for size in sizes:
            small = F.interpolate(mask, size=(size, size), mode="area")
            back = F.interpolate(small, size=truth.shape, mode="bilinear", align_corners=False)[0, 0].numpy() >= 0.5
            scores[size].append(dice(back, truth))
    print(f"{args.split}: {len(cases)} masks")
    for size in sizes:
        print(f"{size:>4} px: mean Dice {np.mean(scores[size]):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
