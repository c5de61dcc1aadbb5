"""``mlffm calibrate``: fit the probability temperature (and set flip averaging) on validation cases.

Writes a new checkpoint with the same weights and the fitted inference
options in its config; the provenance records what was fitted, on what,
and the calibration error before and after.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from model import Segmenter
from model.config import FLIP_VIEWS

from .calibration import OBJECTIVES, LogitHistogram
from .datasets import list_cases, load_case
from .imageio import ImageReadError, check_writable
from .metrics import dice


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", type=Path, help="dataset folder (images/, masks/, splits.csv)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="calibrated model file to write")
    parser.add_argument("--checkpoint", type=Path, help="model to calibrate (default: the shipped weights)")
    parser.add_argument("--split", default="val", help="split to fit on (default: val; never the test split)")
    parser.add_argument("--limit", type=int, help="use only the first N cases")
    parser.add_argument("--flip-views", type=int, choices=FLIP_VIEWS, help="test-time flip averaging to store (default: keep the model's)")
    parser.add_argument("--objective", choices=OBJECTIVES, default="nll", help="what the temperature minimizes (default: nll)")
    parser.add_argument("--samples", type=int, help="proposals per image (default: the model's)")
    parser.add_argument("--steps", type=int, help="DDIM steps (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def run_calibrate(args: argparse.Namespace) -> int:
    check_writable([args.output], args.overwrite)
    if args.split == "test":
        print("warning: fitting on the test split makes its scores optimistic; use val", file=sys.stderr)
    listing = list_cases(args.data, args.split)
    cases = listing.cases[: args.limit] if args.limit else listing.cases
    if not cases:
        raise ValueError(f"{args.data}: no cases in split {args.split!r}")
    base = Segmenter.load(args.checkpoint, args.device)
    views = base.config.flip_views if args.flip_views is None else args.flip_views
    segmenter = base.with_options(flip_views=views, probability_temperature=1.0)
    histogram, scores, skipped = LogitHistogram(), [], 0
    for case in tqdm(cases, desc=f"calibrating on {args.split}", unit="image", dynamic_ncols=True):
        try:
            image, truth = load_case(case)
        except ImageReadError as err:
            skipped += 1
            tqdm.write(f"warning: skipped: {err}", file=sys.stderr)
            continue
        proposal = segmenter.propose(image, n_samples=args.samples, steps=args.steps, seed=args.seed)
        histogram.update(proposal.probability, truth)
        scores.append(dice(proposal.consensus, truth))
    temperature = histogram.fit_temperature(args.objective)
    before, after = histogram.ece(1.0), histogram.ece(temperature)
    nll_before, nll_after = histogram.nll(1.0), histogram.nll(temperature)
    calibrated = segmenter.with_options(probability_temperature=temperature)
    command = args.command_line
    calibrated.provenance["commands"] = [*base.provenance.get("commands", []), command]
    calibrated.provenance["calibration"] = {
        "command": command,
        "split": args.split,
        "n_images": len(scores),
        "flip_views": views,
        "objective": args.objective,
        "temperature": temperature,
        "ece_before": before,
        "ece_after": after,
        "nll_before": nll_before,
        "nll_after": nll_after,
        "dice": sum(scores) / max(len(scores), 1),
        "base_checkpoint": base.checkpoint_id,
    }
    calibrated.save(args.output)
    print(f"{args.split}: {len(scores)} images, flip views {views}, Dice {calibrated.provenance['calibration']['dice']:.4f}")
    print(f"temperature {temperature:.3f}: ECE {before:.4f} -> {after:.4f}, NLL {nll_before:.4f} -> {nll_after:.4f} -> {args.output}")
    return 1 if skipped else 0
