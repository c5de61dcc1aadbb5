"""Training's selection score along the straight line between two weights of one network.

    python benchmarks/weight_interpolation.py ../shared/data/isic2018_task1 START.mlffm END.mlffm \
        [--alphas 0,0.5,0.7,0.85,1] [--split val] [--steps 2] [--seed 0]

For each alpha it scores ``(1 - alpha) * START + alpha * END`` (every
floating-point tensor of the network, by ``mlffm average``'s
``average_weights``; counters from START) at END's working
size with ``training.loop.trainer.validation_dice``, the score ``mlffm train``
selects epochs by, on one common seed (as ``benchmarks/quick_val.py``). When
END was fine-tuned from START, this is the "WiSE-FT" interpolation of
Wortsman et al. 2022 ("Robust fine-tuning of zero-shot models"), which can
keep some of the starting weights' robustness to a shift of the data. The
two files may differ in working size (their network settings must match);
nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import Segmenter  # noqa: E402
from training.data.datasets import cache_dataset, list_cases  # noqa: E402
from training.commands.average import average_weights  # noqa: E402
from training.loop.trainer import validation_dice  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("start", type=Path)
    parser.add_argument("end", type=Path)
    parser.add_argument("--alphas", default="0,0.5,0.7,0.85,1", help="comma-separated weights of END")
    parser.add_argument("--split", default="val")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    alphas = [float(a) for a in args.alphas.split(",")]
    start, end = Segmenter.load(args.start, "cpu"), Segmenter.load(args.end, "cpu")
    if start.config.network != end.config.network:
        raise SystemExit(f"{args.start}: its network settings differ from {args.end}'s")
    data = cache_dataset(list_cases(args.data, args.split).cases, end.config.size)
    config = dataclasses.replace(end.config, probability_temperature=1.0, decision_threshold=0.5)
    print(f"START {start.checkpoint_id} ({start.config.size} px), END {end.checkpoint_id} ({end.config.size} px), scored at {end.config.size} px on {args.split}, seed {args.seed}")
    print(f"{'alpha (weight of END)':>22} {'Dice':>7} {'seconds':>8}")
    for alpha in alphas:
        mixed = Segmenter(config, "cpu")
        mixed.network.load_state_dict(average_weights([start, end], weights=(1 - alpha, alpha)))
        began = time.perf_counter()
        dice = validation_dice(mixed, data, args.steps, seed=args.seed)
        print(f"{alpha:>22.2f} {dice:>7.4f} {time.perf_counter() - began:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
