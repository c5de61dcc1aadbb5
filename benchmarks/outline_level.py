"""The outline level: how much one number per image gains, and clicks after it.

    python benchmarks/outline_level.py DATA --split val [--stride 4] [--limit N] [--clicks 3]
        [--checkpoint FILE] [--samples N] [--steps N] [--seed 0] [--json FILE]

For each image: the first proposal at the default sampling, then

* **default**: its mask at the model's decision threshold;
* **stepped**: the simulated level user (``training/interactive/level_user.py``)
  steps the outline level by 0.05 (Shift-G / Shift-S in the Review dock)
  while the Dice rises; the table gives the mean key presses, the probing
  and undoing ones included, and the net steps;
* **best level**: the best single level per image on a 0.01 grid, the
  model's threshold and the stepped level (an upper bound for any rule that
  picks one level per image);
* with ``--clicks K``: the click protocol (``mlffm evaluate --clicks``'s
  simulated user, the shipped refine settings) from the default mask and,
  beside it, from the stepped mask, so the two corrections can be compared
  and combined.

Columns: mean Dice, the share of images at Dice >= 0.90, and for clicks the
Dice after 1..K clicks. The level needs no model run; the clicks do.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from model import Segmenter  # noqa: E402
from training.cli_types import samples_arg  # noqa: E402
from training.corrections.outline_level import LEVEL_MAX, LEVEL_MIN  # noqa: E402
from training.data.datasets import list_cases, load_case  # noqa: E402
from training.interactive.clicks import dice  # noqa: E402
from training.interactive.level_user import stepped_level  # noqa: E402
from training.interactive.protocol import click_session  # noqa: E402

GRID = np.round(np.arange(LEVEL_MIN, LEVEL_MAX + 1e-9, 0.01), 2)


def score_image(segmenter: Segmenter, case, args) -> dict:
    image, truth = load_case(case)
    truth = np.asarray(truth, bool)
    first = segmenter.propose(image, args.samples, args.steps, args.seed)
    user = stepped_level(first.probability, truth, first.threshold)
    row = {
        "id": case.case_id, "threshold": first.threshold, "default": dice(first.consensus, truth),
        "stepped": user.dice, "level": user.level, "steps": user.steps, "presses": user.presses,
        # the grid, the model's threshold and the stepped level: never below the default or the stepped Dice
        "best_level": max(dice(first.probability >= t, truth) for t in (*GRID, first.threshold, user.level)),
    }
    if args.clicks:
        sampling = {"n_samples": args.samples, "steps": args.steps, "seed": args.seed}
        row["clicks_from_default"] = click_session(segmenter, image, truth, args.clicks, first=first, **sampling).dice
        leveled = replace(first, threshold=user.level)  # its consensus is the stepped mask
        row["clicks_from_stepped"] = click_session(segmenter, image, truth, args.clicks, first=leveled, **sampling).dice
    return row


def print_table(rows: list[dict], header: str, clicks: int) -> None:
    def line(name, values, extra=""):
        values = np.asarray(values)
        print(f"| {name} | {values.mean():.4f} | {100 * (values >= 0.90).mean():.1f} % | {extra} |")

    print(f"\n{header}\n")
    print("| outline | mean Dice | Dice >= 0.90 | |")
    print("| --- | --- | --- | --- |")
    line("default (the model's threshold)", [r["default"] for r in rows])
    presses = [r["presses"] for r in rows]
    line("stepped by the simulated user", [r["stepped"] for r in rows],
         f"{np.mean(presses):.2f} key presses on average (probing and undoing included), at most {max(presses)}; "
         f"{np.mean([r['steps'] for r in rows]):.2f} net steps")
    line("best level per image (upper bound)", [r["best_level"] for r in rows])
    if clicks:
        shown = list(range(1, clicks + 1))
        print(f"\n| clicks from | {' | '.join(f'Dice@{k}' for k in shown)} | >= 0.90 within {min(3, clicks)} |")
        print("| --- |" + " --- |" * (len(shown) + 1))
        for key, name in (("clicks_from_default", "the default mask"), ("clicks_from_stepped", "the stepped mask")):
            table = np.array([r[key] for r in rows])
            within = (table[:, : min(3, clicks) + 1] >= 0.90).any(axis=1).mean()
            print(f"| {name} | {' | '.join(f'{table[:, k].mean():.4f}' for k in shown)} | {100 * within:.1f} % |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--split", default="val")
    parser.add_argument("--stride", type=int, default=1, help="score every Nth image of the split (after --limit)")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--clicks", type=int, default=0, help="also run the click protocol with up to K clicks from each mask (0: off)")
    parser.add_argument("--checkpoint", type=Path, help="weights (default: the shipped ones)")
    parser.add_argument("--samples", type=samples_arg)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    for name in ("stride", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1, got {value}")
    if not 0 <= args.clicks <= 20:
        parser.error(f"--clicks must lie in 0..20, got {args.clicks}")
    try:
        cases = list(list_cases(args.data, args.split).cases)
        segmenter = Segmenter.load(args.checkpoint, args.device)
    except (ValueError, OSError) as err:
        parser.exit(2, f"outline_level: {err}\n")
    cases = cases[: args.limit][:: args.stride]
    if not cases:
        parser.exit(2, f"outline_level: no images in split {args.split!r} of {args.data}\n")
    rows = [score_image(segmenter, case, args) for case in tqdm(cases, unit="image", dynamic_ncols=True)]
    header = (f"{args.split}: {len(rows)} images (every {args.stride}), checkpoint {segmenter.checkpoint_id}, "
              f"default sampling {segmenter.sampling_settings(args.samples, args.steps)}, seed {args.seed}")
    print_table(rows, header, args.clicks)
    if args.json:
        args.json.write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
