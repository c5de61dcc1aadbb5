"""``mlffm calibrate``: fit the probability temperature and the decision threshold (and set flip averaging) on validation cases.

Writes a new checkpoint with the same weights and the fitted inference
options in its config; the provenance records what was fitted, on what,
and the calibration error before and after.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from model import Segmenter
from model.config import FLIP_VIEWS
from model.inputs.preprocess import apply_temperature, untempered_threshold

from ..cli_types import add_flat_field_argument, flat_field_choice, limit_arg, samples_arg, seed_arg, steps_arg
from ..scoring.calibration import OBJECTIVES, TEMPERATURE_RANGE, LogitHistogram, ThresholdSweep
from .adapt import MIN_CASES  # as many cases as adapt asks for give a fit that holds
from ..data.datasets import list_cases
from ..data.splits import no_cases_in_split
from .train import without_test_cases
from ..scoring.metrics import dice
from ..files.outputs import check_output_file
from .case_scoring import CaseScoring


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", type=Path, help="dataset folder (images/, masks/, splits.csv)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="calibrated model file to write")
    parser.add_argument("--checkpoint", type=Path, help="model to calibrate (default: the shipped weights)")
    parser.add_argument("--split", default="val", help="split to fit on (default: val; never the test split)")
    parser.add_argument("--limit", type=limit_arg, help="use only the first N cases")
    parser.add_argument("--flip-views", type=int, choices=FLIP_VIEWS, help="test-time flip averaging to store (default: keep the model's)")
    add_flat_field_argument(parser, "store in the calibrated model (default: keep the model's)")
    parser.add_argument("--objective", choices=OBJECTIVES, default="nll", help="what the temperature minimizes (default: nll)")
    parser.add_argument(
        "--threshold", default="fit", metavar="fit|P",
        help="decision threshold on the calibrated probability: 'fit' (default) picks the one with the best mean Dice on the cases; a number in (0, 1) sets it",
    )
    parser.add_argument("--samples", type=samples_arg, help="proposals per image (default: the model's); stored as the model's default, like the fitted options")
    parser.add_argument("--steps", type=steps_arg, help="DDIM steps (default: the model's); stored as the model's default")
    parser.add_argument("--seed", type=seed_arg, default=0, help="random seed of the proposals (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda or mps; a missing GPU is an error (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def _threshold(text: str) -> str | float:
    """'fit' or a float in (0, 1); anything else is a ValueError naming the option."""
    if text == "fit":
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise ValueError(f"--threshold must be 'fit' or a number in (0, 1), got {text!r}")
    return value


def run_calibrate(args: argparse.Namespace) -> int:
    chosen_threshold = _threshold(args.threshold)
    check_output_file(args.output, args.overwrite)  # before any scoring
    if args.split.casefold() == "test":
        raise ValueError(f"--split {args.split}: a model is never calibrated on its test split (its scores would be optimistic); use val")
    listing = list_cases(args.data, args.split)
    if args.split in ("all", "*"):
        listing = without_test_cases(listing, args.data)  # splits.csv's test cases stay unseen, as in finetune
    cases = listing.cases[: args.limit] if args.limit else listing.cases
    if not cases:
        raise ValueError(no_cases_in_split(args.data, args.split, listing))
    base = Segmenter.load(args.checkpoint, args.device)
    trained = set(base.provenance.get("finetune_train_ids", []))
    if trained & {c.case_id for c in cases}:
        # a threshold fitted on the cases the weights were just trained on overfits (docs/adapt.md)
        kept = [c for c in cases if c.case_id not in trained]
        print(f"warning: left out {len(cases) - len(kept)} cases this model was fine-tuned on", file=sys.stderr)
        if not kept:
            raise ValueError(f"{args.data}: every case of split {args.split!r} was used to fine-tune {args.checkpoint}; calibrate on others")
        cases = kept
    views = base.config.flip_views if args.flip_views is None else args.flip_views
    flat = flat_field_choice(args.flat_field, base.config.flat_field)
    samples, steps = base.sampling_settings(args.samples, args.steps)
    # the temperature and threshold are fitted for these settings, so they become the model's defaults
    segmenter = base.with_options(
        flip_views=views, probability_temperature=1.0, decision_threshold=0.5, default_samples=samples, default_steps=steps, flat_field=flat
    )
    histogram, sweep, scores = LogitHistogram(), ThresholdSweep(), []
    scoring = CaseScoring(listing)
    skipped = scoring.skipped
    propose = lambda image: segmenter.propose(image, seed=args.seed)  # noqa: E731
    lesion_cases = skin_cases = 0
    for _, _, truth, proposal, _ in scoring.proposals(cases, f"calibrating on {args.split}", propose):
        histogram.update(proposal.probability, truth)
        sweep.update(proposal.probability, truth)
        scores.append(dice(proposal.consensus, truth))
        lesion_cases += bool(truth.any())
        skin_cases += bool((~truth).any())
    if not scores:  # every case was skipped: say which, not only that no pixels were left
        raise scoring.nothing_scored(args.data, len(cases), args.split, "used")
    temperature = histogram.fit_temperature(args.objective)
    before, after = histogram.ece(1.0), histogram.ece(temperature)
    nll_before, nll_after = histogram.nll(1.0), histogram.nll(temperature)
    if chosen_threshold == "fit":
        raw = sweep.best()  # on the untempered mean probability; tempering is monotone
        threshold = float(apply_temperature(torch.tensor(raw, dtype=torch.float64), temperature))
    else:
        threshold, raw = chosen_threshold, untempered_threshold(chosen_threshold, temperature)
    for line in fit_warnings(len(scores), lesion_cases, skin_cases, temperature, before, after):
        print(f"warning: {line}", file=sys.stderr)
    calibrated = segmenter.with_options(probability_temperature=temperature, decision_threshold=threshold)
    command = args.command_line
    calibrated.provenance["commands"] = [*base.provenance.get("commands", []), command]
    calibrated.provenance["calibration"] = {
        "command": command,
        "split": args.split,
        "n_images": len(scores),
        "flip_views": min(views, samples),  # the views the fit saw: one per sample at most
        "flat_field": flat,
        "samples": samples,
        "steps": steps,
        "objective": args.objective,
        "temperature": temperature,
        "ece_before": before,
        "ece_after": after,
        "nll_before": nll_before,
        "nll_after": nll_after,
        "dice": sum(scores) / max(len(scores), 1),
        "threshold": threshold,
        "threshold_fitted": chosen_threshold == "fit",
        "dice_at_threshold": sweep.dice_at(raw),
        "base_checkpoint": base.checkpoint_id,
        "skipped": skipped,
    }
    calibrated.save(args.output, replace=args.overwrite)  # a file written meanwhile is kept unless --overwrite
    record = calibrated.provenance["calibration"]
    if skipped:
        print(f"skipped {len(skipped)} cases of {args.split} (not used):")
        for line in skipped:
            print(f"  {line}")
    print(f"{args.split}: {len(scores)} images, {samples} samples x {steps} steps, flip views {views}, Dice {record['dice']:.4f} at threshold 0.5")
    print(f"temperature {temperature:.3f}: ECE {before:.4f} -> {after:.4f}, NLL {nll_before:.4f} -> {nll_after:.4f}")
    how = "fitted" if chosen_threshold == "fit" else "set"
    print(f"decision threshold {threshold:.3f} ({how}): Dice {record['dice_at_threshold']:.4f} -> {args.output}")
    return 1 if skipped else 0


def fit_warnings(n_cases: int, lesion_cases: int, skin_cases: int, temperature: float, ece_before: float, ece_after: float) -> list[str]:
    """One line for each reason the fitted calibration may not hold for other images (printed, the model is still written)."""
    lines = []
    if lesion_cases == 0 or skin_cases == 0:
        what = "no mask holds any lesion" if lesion_cases == 0 else "every mask is all lesion"
        lines.append(f"{what}: a calibration fitted on them says nothing about a lesion's outline; calibrate on cases with lesions and skin")
    if n_cases < MIN_CASES:
        lines.append(f"fitted on {n_cases} case{'s' if n_cases != 1 else ''}: {MIN_CASES} or more give a temperature and threshold that hold for other images")
    low, high = TEMPERATURE_RANGE
    if temperature <= low * 1.001 or temperature >= high / 1.001:
        lines.append(f"the temperature {temperature:.3g} is at the end of its search range ({low:g}..{high:g}): these cases do not pin it down")
    if ece_after > ece_before + 0.01:  # a small rise can come with a better NLL, the default objective
        lines.append(f"the calibration error rose ({ece_before:.4f} -> {ece_after:.4f}) on the very cases it was fitted on")
    return lines
