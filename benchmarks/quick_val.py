"""Training's model-selection score for several checkpoints, on one common seed.

    python benchmarks/quick_val.py ../shared/data/isic2018_task1 A.mlffm B.mlffm ... [--split val] [--steps 2] [--seed 0]

`mlffm train` scores each epoch with ``training.loop.trainer.validation_dice``:
one DDIM sample per image at the working size, drawn with the run's own
seed. Runs with different seeds are therefore scored on different noise.
This prints the same score for each checkpoint with one seed, so runs and
their weight averages can be compared on one footing before the slower
``mlffm calibrate``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import Segmenter  # noqa: E402
from training.data.datasets import cache_dataset, list_cases  # noqa: E402
from training.loop.trainer import validation_dice  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--split", default="val")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    cases = list_cases(args.data, args.split).cases
    cached = {}  # working size -> the split at that size
    print(f"{'checkpoint':<40} {'id':<12} {'size':>4} {'Dice':>7} {'seconds':>8}")
    for path in args.checkpoints:
        segmenter = Segmenter.load(path, args.device)
        size = segmenter.config.size
        if size not in cached:
            cached[size] = cache_dataset(cases, size)
        start = time.perf_counter()
        dice = validation_dice(segmenter, cached[size], args.steps, seed=args.seed)
        print(f"{str(path):<40} {segmenter.checkpoint_id:<12} {size:>4} {dice:>7.4f} {time.perf_counter() - start:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
