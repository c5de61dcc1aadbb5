"""What `mlffm adapt` gains on cases it did not see, per method, over several draws.

    python benchmarks/adapt_gain.py DATA --fit N --eval M [--split val] [--seeds 3] [--samples 2] [--steps 5]
        [--time-budget MINUTES] [--finetune-seeds K] [--erode PX] [--priors 0,10,40] [--checkpoint BASE]

A pool of N + M cases is drawn from the split once (seed 0) and proposed
once with the base model. Each seed then splits the pool into N cases to
adapt on and M others to score. For every seed it runs the adaptation
(`training.commands.adapt.adapt_model`, the code behind `mlffm adapt`) on the N
and scores on the M: the base; calibration alone; fine-tune + calibration
(only for the first K seeds: it trains for real, for --time-budget
minutes); and the method adapt chose. It prints, per method, the mean and
the spread of the Dice gain over the base and the ECE, and how often adapt
chose each method. It also prints calibration alone at other shrinkage
strengths (--priors, the pseudo-count n0) and fitted on fewer cases
(5, 10, 20, ... of the N), which is how the minimum number of cases was
chosen.

``--erode PX`` erodes every reference mask by PX pixels (a disk), a
synthetic stand-in for a clinic whose references are drawn tighter.

Adapt scores the N fit cases from the pool's cached proposals, so
--time-budget here is the fine-tune's own training time.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import Segmenter  # noqa: E402
from training.scoring.adapt import Calibration, case_stats, fit_calibration, plan_calibration, score, stats_of  # noqa: E402
from training.data.datasets import list_cases, load_case  # noqa: E402
from training.commands.adapt import MIN_CASES, adapt_model  # noqa: E402


def _erode(mask: np.ndarray, pixels: int) -> np.ndarray:
    if pixels <= 0:
        return mask
    y, x = np.ogrid[-pixels : pixels + 1, -pixels : pixels + 1]
    return ndimage.binary_erosion(mask, structure=x * x + y * y <= pixels * pixels)


def _row(name: str, gains: list[float], eces: list[float], base_eces: list[float]) -> str:
    g = np.array(gains)
    spread = g.std(ddof=1) if len(g) > 1 else float("nan")
    return (
        f"| {name} | {len(g)} | {g.mean():+.4f} | {spread:.4f} | {g.min():+.4f} | "
        f"{np.mean(base_eces):.4f} -> {np.mean(eces):.4f} |"
    )


def _variant(args, pool, stats, base_cal, finetune_seeds: int, label: str) -> None:
    priors = [float(p) for p in args.priors.split(",")]
    sizes = [n for n in (5, 10, 20, 40, 80) if n < args.fit] + [args.fit]
    table: dict[str, dict[str, list[float]]] = {}
    chosen: list[str] = []

    def add(name: str, gain: float, ece: float, base_ece: float) -> None:
        entry = table.setdefault(name, {"gain": [], "ece": [], "base_ece": []})
        entry["gain"].append(gain), entry["ece"].append(ece), entry["base_ece"].append(base_ece)

    for seed in range(args.seeds):
        order = np.random.default_rng(seed + 1).permutation(len(pool))
        fit_cases = [pool[i] for i in order[: args.fit]]
        eval_cases = [pool[i] for i in order[args.fit :]]
        fit_stats = [stats[c.case_id] for c in fit_cases]
        eval_stats = [stats[c.case_id] for c in eval_cases]
        before = score(eval_stats, base_cal)
        finetune = seed < finetune_seeds
        result = adapt_model(
            args.checkpoint, fit_cases, device=args.device, samples=args.samples, steps=args.steps, seed=0,
            time_budget_minutes=args.time_budget, finetune=finetune, progress="bars", base_stats=fit_stats,
        )
        chosen.append(result.method)
        scored = {}
        for name, model in result.candidates.items():
            calibration = Calibration.of(model)
            if name == "calibration":
                after = score(eval_stats, calibration)
            else:
                after = score(case_stats(model, eval_cases, args.samples, args.steps), calibration)
            scored[name] = after
            add(name, after.mean_dice - before.mean_dice, after.ece, before.ece)
        after = scored.get(result.method, before)
        add("adapt's choice", after.mean_dice - before.mean_dice, after.ece, before.ece)
        for prior in priors:
            plan = plan_calibration(fit_stats, base_cal, prior)
            fitted = score(eval_stats, plan.calibration)
            add(f"calibration, n0 = {prior:g}", fitted.mean_dice - before.mean_dice, fitted.ece, before.ece)
            unguarded = score(eval_stats, fit_calibration(fit_stats, base_cal, prior, True))
            add(f"calibration, n0 = {prior:g}, no ECE guard", unguarded.mean_dice - before.mean_dice, unguarded.ece, before.ece)
        for n in sizes:
            plan = plan_calibration(fit_stats[:n], base_cal)
            fitted = score(eval_stats, plan.calibration)
            add(f"calibration on {n} cases", fitted.mean_dice - before.mean_dice, fitted.ece, before.ece)
            held = plan.after.mean_dice - plan.before.mean_dice
            add(f"leave-one-out estimate on {n} cases minus the eval gain", held - (fitted.mean_dice - before.mean_dice), fitted.ece, before.ece)
        print(f"seed {seed}: base Dice {before.mean_dice:.4f}, adapt chose {result.method}: "
              + ", ".join(f"{k} {v.mean_dice:.4f} (ECE {before.ece:.4f} -> {v.ece:.4f})" for k, v in scored.items()), file=sys.stderr, flush=True)
    print(f"\n{label}\n\n| method | seeds | mean Dice gain | spread (sd) | worst | ECE base -> after |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, entry in table.items():
        print(_row(name, entry["gain"], entry["ece"], entry["base_ece"]))
    counts = {m: chosen.count(m) for m in dict.fromkeys(chosen)}
    print(f"\nadapt chose: {counts}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--fit", type=int, default=40)
    parser.add_argument("--eval", type=int, default=60)
    parser.add_argument("--split", default="val")
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--finetune-seeds", type=int, help="seeds that also fine-tune (default: all)")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--time-budget", type=float, default=2.0, help="fine-tune training minutes per seed")
    parser.add_argument("--erode", type=int, default=0, help="erode the references by this many pixels")
    parser.add_argument("--priors", default="0,10,40")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    started = time.monotonic()
    cases = list(list_cases(args.data, args.split).cases)
    if args.fit + args.eval > len(cases):
        raise SystemExit(f"{args.data}: split {args.split} has {len(cases)} cases, fewer than --fit + --eval")
    pool = [cases[i] for i in np.random.default_rng(0).choice(len(cases), args.fit + args.eval, replace=False)]
    base = Segmenter.load(args.checkpoint, args.device).with_options(probability_temperature=1.0, decision_threshold=0.5)
    base_cal = Calibration.of(Segmenter.load(args.checkpoint, "cpu"))
    stats, eroded = {}, {}
    for k, case in enumerate(pool):
        image, truth = load_case(case)
        probability = base.propose(image, args.samples, args.steps).probability
        stats[case.case_id] = stats_of(case.case_id, probability, truth)
        if args.erode:
            eroded[case.case_id] = stats_of(case.case_id, probability, _erode(truth, args.erode))
        print(f"\rscored the base on {k + 1}/{len(pool)} pool cases", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    finetune_seeds = args.seeds if args.finetune_seeds is None else args.finetune_seeds
    print(f"\n{args.data.name} split {args.split}: fit {args.fit}, eval {args.eval}, {args.seeds} seeds, "
          f"{args.samples} samples x {args.steps} steps, fine-tune {args.time_budget} min on the first {finetune_seeds} seeds, "
          f"minimum cases {MIN_CASES}")
    _variant(args, pool, stats, base_cal, finetune_seeds, "the split's own references")
    if args.erode:
        # the references were eroded after the proposals; fine-tuning on them would need the eroded masks on disk
        _variant(args, pool, eroded, base_cal, 0, f"references eroded by {args.erode} px (calibration only)")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"\nwall {time.monotonic() - started:.0f} s, CPU {usage.ru_utime + usage.ru_stime:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
