"""``mlffm evaluate``: score a checkpoint on a dataset split with the proposal settings the plugin uses."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from model import Segmenter
from model.config import FLIP_VIEWS

from ..cli_types import add_flat_field_argument, bounded_int, flat_field_choice, limit_arg, samples_arg, seed_arg, steps_arg
from ..data.datasets import list_cases
from ..data.splits import no_cases_in_split
from ..data.imageio import write_json
from ..interactive.protocol import CLICK_MODES, click_session, format_clicks, resolve_mode, summarize_sessions
from ..scoring.metrics import METRIC_NAMES, MetricAccumulator, dice
from ..files.outputs import check_output_file
from .case_scoring import CaseScoring
from ..scoring.strata import format_strata, format_triage, strata_table, triage_recall, truth_traits


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", type=Path, help="dataset folder (images/, masks/, splits.csv)")
    parser.add_argument("--checkpoint", type=Path, help="model file (default: the shipped weights)")
    parser.add_argument("--split", default="test", help="split to score (default: test; 'all' for every case)")
    parser.add_argument("--limit", type=limit_arg, help="score only the first N cases")
    parser.add_argument("--samples", type=samples_arg, help="proposals per image (default: the model's; 16 for the shipped weights)")
    parser.add_argument("--steps", type=steps_arg, help="DDIM steps (default: the model's; 5 for the shipped weights)")
    parser.add_argument("--seed", type=seed_arg, default=0, help="random seed of the proposals (default: %(default)s)")
    parser.add_argument("--direct", action="store_true", help="one forward pass per image, no sampling (the single-step ablation)")
    parser.add_argument("--flip-views", type=int, choices=FLIP_VIEWS, help="override the model's test-time flip averaging")
    add_flat_field_argument(parser, "override the model's choice")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda or mps; a missing GPU is an error (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="write the metrics and per-image scores to this file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.add_argument(
        "--clicks", type=bounded_int(0, 100), default=0, metavar="K",
        help="also run the click protocol: a simulated user refines each proposal with up to K clicks "
        "(RITM rule: the deepest point of the largest error); adds a 'clicks' report (docs/interactive.md; default 0: no clicks)",
    )
    parser.add_argument(
        "--click-mode", choices=CLICK_MODES, default="auto",
        help="how clicks reach the model: prompts (input channels), kept (kept-pixel disks, any weights), both; "
        "auto (the default) = both (prompts and kept disks) for weights trained with prompts, else kept",
    )
    parser.add_argument(
        "--click-reach", choices=("on", "off"), default="on",
        help="each click also takes the probable region connected to it, near it (default on; docs/interactive.md)",
    )
    parser.add_argument(
        "--refine-samples", type=samples_arg, metavar="N",
        help="proposals per refine in the click protocol (by default the model's refine default, 8 for the shipped weights, "
        "never more than --samples)",
    )
    parser.add_argument(
        "--box", action="store_true",
        help="the simulated user first drags the reference's tight box around the lesion (outside held as skin), "
        "then clicks; the 'clicks' report's Dice@0 is after the box (docs/interactive.md)",
    )


def uncertainty_error_spearman(per_image: list[dict], score: str = "mean_uncertainty") -> float:
    """Spearman rank correlation of a per-image score (default: the mean uncertainty) with the error, 1 - Dice.

    NaN below 3 images that carry the score.
    """
    from scipy.stats import spearmanr

    pairs = [(r[score], 1 - r["dice"]) for r in per_image if score in r]
    if len(pairs) < 3:
        return float("nan")
    uncertainty, error = zip(*pairs)
    if len(set(uncertainty)) < 2 or len(set(error)) < 2:
        return float("nan")  # a constant score or error ranks nothing (scipy would warn and say NaN)
    rho = spearmanr(uncertainty, error).statistic
    return float(rho) if rho == rho else float("nan")


def _sampling(args: argparse.Namespace) -> str:
    return "direct (1 pass, no sampling)" if args.direct else f"{args.samples} samples x {args.steps} steps"


def run_evaluate(args: argparse.Namespace) -> int:
    if args.json is not None:  # before any scoring: a missing folder or an existing file is found now
        check_output_file(args.json, args.overwrite, "--json")
    listing = list_cases(args.data, args.split)
    cases = listing.cases[: args.limit] if args.limit else listing.cases
    if not cases:
        raise ValueError(no_cases_in_split(args.data, args.split, listing))
    segmenter = Segmenter.load(args.checkpoint, args.device)
    trained_on = set(segmenter.provenance.get("finetune_train_ids") or []) & {c.case_id for c in cases}
    if trained_on:  # scored all the same (the user asked for these cases), but the scores are optimistic
        print(f"warning: {len(trained_on)} of the {len(cases)} cases were in this model's fine-tuning data "
              f"(e.g. {sorted(trained_on)[0]}): their scores are optimistic", file=sys.stderr)
    if args.flip_views is not None:
        segmenter = segmenter.with_options(flip_views=args.flip_views)
    segmenter = segmenter.with_options(flat_field=flat_field_choice(args.flat_field, segmenter.config.flat_field))
    args.samples, args.steps = segmenter.sampling_settings(args.samples, args.steps)
    if args.clicks < 0 or args.clicks > 100:
        raise ValueError(f"--clicks {args.clicks}: must lie in 0..100")
    interactive = bool(args.clicks or args.box)
    if interactive and args.direct:
        raise ValueError(f"{'--clicks' if args.clicks else '--box'} needs sampling: leave out --direct")
    if args.refine_samples is not None and not interactive:
        raise ValueError(f"--refine-samples {args.refine_samples} needs the click protocol: add --clicks K or --box")
    if not interactive and (args.click_mode != "auto" or args.click_reach != "on"):
        raise ValueError("--click-mode and --click-reach need the click protocol: add --clicks K or --box")
    click_mode = resolve_mode(segmenter, args.click_mode) if interactive else None
    sessions = []
    accumulator = MetricAccumulator()
    scoring = CaseScoring(listing)
    skipped, seconds = scoring.skipped, []

    def propose(image):
        if args.direct:
            return segmenter.predict_direct(image, seed=args.seed)
        return segmenter.propose(image, n_samples=args.samples, steps=args.steps, seed=args.seed)

    for case, image, truth, proposal, spent in scoring.proposals(cases, f"evaluating {args.split}", propose):
        if interactive:
            try:
                session = click_session(
                    segmenter, image, truth, args.clicks, click_mode, first=proposal, reach=args.click_reach == "on", box=args.box,
                    refine_samples=args.refine_samples, n_samples=args.samples, steps=args.steps, seed=args.seed,
                )
            except (MemoryError, torch.cuda.OutOfMemoryError, ValueError) as err:  # a refine ran out of memory or over the size limits: not scored at all
                scoring.skip(case, err)
                continue
            sessions.append(session)
        seconds.append(spent)
        samples = None if args.direct else proposal.samples
        record = accumulator.update(proposal.consensus, truth, proposal.probability, samples, case.case_id)
        record.update(truth_traits(truth))
        record["size"] = [int(truth.shape[1]), int(truth.shape[0])]  # width, height: HD95 is in this image's pixels
        record["dice_inverted_reference"] = dice(proposal.consensus, ~truth)  # high where lesion and skin are swapped in the mask
        if not args.direct:
            record["mean_uncertainty"] = float(proposal.uncertainty.mean())
            record["disagreement"] = proposal.disagreement
        record["seconds"] = seconds[-1]
        scoring.bar.set_postfix(dice=f"{accumulator.summary()['dice']:.4f}")
    if not accumulator.per_image:  # a table of NaN says nothing: say why instead
        raise scoring.nothing_scored(args.data, len(cases), args.split)
    warn_if_swapped(accumulator.per_image)
    summary = accumulator.summary()
    rho = uncertainty_error_spearman(accumulator.per_image)
    rho_disagreement = uncertainty_error_spearman(accumulator.per_image, "disagreement")
    per_image_seconds = sum(seconds) / max(len(seconds), 1)
    views_used = segmenter.config.flip_views if args.direct else min(segmenter.config.flip_views, args.samples)  # one view per sample at most
    print(
        f"\n{args.split}: {len(seconds)} images, checkpoint {segmenter.checkpoint_id}, {_sampling(args)}, "
        f"flip views {views_used}, temperature {segmenter.config.probability_temperature:.3g}, "
        f"threshold {segmenter.config.decision_threshold:.3g}, flat field {'on' if segmenter.config.flat_field else 'off'}, device {segmenter.device}"
    )
    if skipped:
        print(f"skipped {len(skipped)} cases of {args.split} (not scored):")
        for line in skipped:
            print(f"  {line}")
    print(f"{'metric':<12} {'value':>9}")
    hd95_images = sum(1 for r in accumulator.per_image if not math.isnan(r["hd95"]))
    for name in METRIC_NAMES:
        note = ""
        if name.startswith("hd95") and hd95_images < len(accumulator.per_image):
            note = f"  over {hd95_images} of {len(accumulator.per_image)} images (undefined where one mask is empty and the other not)"
        print(f"{name:<12} {summary[name]:>9.4f}{note}")
    print(f"{'sec/image':<12} {per_image_seconds:>9.3f}")
    sizes = sorted({tuple(r["size"]) for r in accumulator.per_image}, key=lambda wh: wh[0] * wh[1])
    if len(sizes) > 1:  # a mean of pixel distances over several sizes weighs the large images most
        print(f"note: the images have {len(sizes)} sizes ({sizes[0][0]}x{sizes[0][1]} to {sizes[-1][0]}x{sizes[-1][1]}): "
              "hd95 is in each image's own pixels; hd95_percent (of each image's diagonal) compares them fairly")
    print(f"Spearman rho between per-image mean uncertainty and error (1 - Dice): {format_spearman(rho, accumulator.per_image)}")
    print(
        "Spearman rho between per-image sample disagreement (the triage score) and error: "
        f"{format_spearman(rho_disagreement, accumulator.per_image, 'disagreement')}"
    )
    strata = strata_table(accumulator.per_image)
    print("\nby the true lesion's size and position:\n" + format_strata(strata))
    triage = triage_recall(accumulator.per_image)
    if triage:
        print("\ntriage (cases sorted most doubtful first, as in the plugin):\n" + format_triage(triage))
    clicks = summarize_sessions(sessions, args.clicks, click_mode, reach=args.click_reach == "on", box=args.box) if interactive else None
    if clicks is not None:
        print("\n" + format_clicks(clicks))
        for record, session in zip(accumulator.per_image, sessions):
            record["dice_after_clicks"] = session.dice
            if session.dice_before_box is not None:
                record["dice_before_box"] = session.dice_before_box
    if args.json is not None:
        write_json(
            args.json,
            {
                "n_images": len(seconds),
                "metrics": summary,
                "hd95_images": hd95_images,  # the images the mean HD95 is over: it is undefined where exactly one mask is empty
                "seconds_per_image": per_image_seconds,
                "uncertainty_error_spearman": rho,
                "disagreement_error_spearman": rho_disagreement,
                "strata": strata,
                "triage_recall": triage,
                "per_image": accumulator.per_image,
                "checkpoint_id": segmenter.checkpoint_id,
                "split": args.split,
                "settings": {
                    "samples": 1 if args.direct else args.samples, "steps": 1 if args.direct else args.steps,
                    "direct": args.direct, "seed": args.seed, "device": str(segmenter.device),
                    "flip_views": views_used, "probability_temperature": segmenter.config.probability_temperature,
                    "decision_threshold": segmenter.config.decision_threshold, "flat_field": segmenter.config.flat_field,
                },
                "calibration_bins": {
                    "columns": ["pixels", "sum of probability", "sum of truth"],
                    "rows": accumulator.calibration_table.tolist() if accumulator.calibration_table is not None else [],
                },
                "skipped": skipped,
                **({"clicks": clicks} if clicks is not None else {}),
            },
            replace=args.overwrite,  # a file written meanwhile (a second run) is kept unless --overwrite
        )
    return 1 if skipped else 0


def format_spearman(rho: float, per_image: list[dict], score: str = "mean_uncertainty") -> str:
    """``rho`` of :func:`uncertainty_error_spearman` for the printout: three decimals, or 'n/a (why)' where it is NaN."""
    if rho == rho:
        return f"{rho:.3f}"
    if sum(1 for r in per_image if score in r) < 3:
        return "n/a (fewer than 3 images)"
    return "n/a (the score or the error is the same on every image)"


def warn_if_swapped(per_image: list[dict]) -> bool:
    """Warn (stderr) when most reference masks look inverted, and say why; True if warned.

    Either sign counts: in most images the proposal matches the reference's background better than its lesion
    (``dice_inverted_reference`` above both 0.5 and ``dice``), or the lesion covers over 80 % of the image and
    reaches its edge. Whole-frame lesions exist (8 of 594 ISIC test references cover over 95 %), but not in most
    cases of a split; masks written with the lesion as 0 and the skin as the bright value look like this.
    """
    if not per_image:
        return False
    matched = [r for r in per_image if r.get("dice_inverted_reference", 0.0) > max(0.5, r.get("dice", 0.0))]
    if len(matched) * 2 > len(per_image):
        inverted = sum(r["dice_inverted_reference"] for r in per_image) / len(per_image)
        plain = sum(r.get("dice", 0.0) for r in per_image) / len(per_image)
        print(
            f"warning: in {len(matched)} of {len(per_image)} images the proposal matches the reference's background better than "
            f"its lesion (mean Dice {plain:.3f}; against the inverted references {inverted:.3f}): if lesion and skin are swapped "
            "in these masks (the lesion must be the non-zero, brighter value), every score is inverted",
            file=sys.stderr,
        )
        return True
    full = sum(1 for r in per_image if r.get("truth_area_fraction", 0.0) > 0.8 and r.get("truth_touches_border"))
    if len(per_image) < 2 or full * 2 <= len(per_image):
        return False
    print(
        f"warning: in {full} of {len(per_image)} reference masks the lesion covers over 80 % of the image and reaches its edge: "
        "if lesion and skin are swapped in these masks (the lesion must be the non-zero, brighter value), every score is inverted",
        file=sys.stderr,
    )
    return True
