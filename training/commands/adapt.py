"""``mlffm adapt``: adapt a model to a clinic's corrected cases, choosing the method by held-out Dice.

Two candidates are compared on DATA (a corrections store or any dataset folder):

- **calibration**: the base's weights with a decision threshold and a
  temperature fitted on all the cases (see :mod:`training.scoring.adapt`); its Dice
  and ECE are leave-one-out estimates, so every case is scored by a fit
  that did not see it;
- **fine-tune + calibration**: the weights fine-tuned on part A of the
  cases (about 60 %, by id hash), then calibrated on the other part B,
  which the fine-tune never trained on nor selected on; scored by
  leave-one-out within B.

Fine-tuning is chosen only when its held-out Dice on B beats calibration's on
the same cases by more than 0.005 and by more than the paired standard error;
calibration only when its held-out Dice beats the base's; otherwise the
base's values are kept. The written model carries the card
(``provenance["adaptation"]``, and ``FILE.json`` beside it).

A corrections store is read as ``mlffm finetune`` reads it
(:func:`training.corrections.store.usable_cases`): a case whose record is damaged or
missing, or whose files do not match it, is left out with a warning.

A dataset folder's ``splits.csv`` test cases are left out (as ``mlffm
finetune`` leaves them out), and so is a case whose files cannot be read
(a mask refused as an outline, say), each with a warning.

With fewer than :data:`MIN_CASES` usable cases (those left after all this)
nothing is written: the held-out estimate of a fit on fewer is too noisy to
choose by.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from model import Segmenter

from ..scoring.adapt import PRIOR_CASES, Calibration, CalibrationPlan, CaseStats, case_stats, fine_tune_wins, plan_calibration, score
from ..cli_types import limit_arg, minutes_arg, samples_arg, seed_arg, steps_arg
from ..data.datasets import Case, cache_dataset, load_case
from ..data.imageio import ImageReadError
from ..files.file_names import check_name_lengths, lock_names, probe_name, written_names
from ..files.outputs import ExclusiveLock, check_output_file, display, lock_path_for
from ..loop.interrupt import StopOnInterrupt, Terminated
from ..corrections.model_store import write_card
from ..loop.progress import make_reporter
from ..corrections.store import report_problems, usable_cases
from ..loop.trainer import TrainConfig, train
from .run_data import without_test_cases

MIN_CASES = 20  # below this the leave-one-out gain's spread exceeds the gain sought (docs/results.md, "Adapting to a clinic")
FINETUNE_MARGIN = 0.005  # held-out Dice fine-tuning must add over calibration alone
HOLD_FRACTION = 0.4  # share of the cases the fine-tune candidate leaves for its calibration and score
MIN_FINETUNE_SECONDS = 20.0


class TooFewCases(ValueError):
    """Fewer usable cases than a trustworthy adaptation needs; the message says how many more."""


def add_adapt_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", type=Path, help="corrections store or dataset folder (images/, masks/)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="adapted model file to write (its card goes beside it as .json)")
    parser.add_argument("--checkpoint", type=Path, help="base model (default: the shipped weights)")
    parser.add_argument("--time-budget", type=minutes_arg, default=5.0, metavar="MINUTES", help="total time for the whole adaptation (default 5)")
    parser.add_argument("--split", help="only this split of DATA (its splits.csv, or its folders' names); never test (default: every case but test)")
    parser.add_argument("--limit", type=limit_arg, help="use only the first N cases")
    parser.add_argument("--no-finetune", action="store_true", help="consider calibration alone")
    parser.add_argument("--samples", type=samples_arg, help="proposals per image (default: the model's); stored as the model's default")
    parser.add_argument("--steps", type=steps_arg, help="DDIM steps (default: the model's); stored as the model's default")
    parser.add_argument("--seed", type=seed_arg, default=0, help="random seed of the proposals (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda or mps; a missing GPU is an error (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument(
        "--progress", choices=("bars", "json"), default="bars",
        help="bars: progress bars (default); json: one JSON event per line on stdout, for programs",
    )


def trained_ids(segmenter: Segmenter) -> set[str]:
    """Ids of the cases a model was fine-tuned on (from its provenance); calibration must not be fitted on them."""
    return set(segmenter.provenance.get("finetune_train_ids", []))


def split_for_finetune(cases: list[Case]) -> tuple[list[Case], list[Case]]:
    """(train part A, calibration part B) by id hash: the same ids land in B on every run."""
    ranked = sorted(cases, key=lambda c: hashlib.sha256(c.case_id.encode()).hexdigest())
    n_hold = max(1, round(len(cases) * HOLD_FRACTION))
    held = {c.case_id for c in ranked[:n_hold]}
    return [c for c in cases if c.case_id not in held], [c for c in cases if c.case_id in held]


class Stages:
    """Progress of the adaptation's stages: tqdm bars, or JSON events (``stage`` and ``item``) for programs."""

    def __init__(self, kind: str) -> None:
        self.kind, self.bar = kind, None

    def _send(self, **event: Any) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    def start(self, name: str, total: int | None) -> None:
        if self.kind == "json":
            self._send(event="stage", name=name, total=total)
        elif total:
            self.bar = tqdm(total=total, desc=name, unit="image", dynamic_ncols=True)

    def wrap(self, items: list, name: str):
        self.start(name, len(items))
        for i, item in enumerate(items):
            yield item
            if self.kind == "json":
                self._send(event="item", done=i + 1, total=len(items))
            elif self.bar is not None:
                self.bar.update(1)
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@dataclass
class Adaptation:
    """What :func:`adapt_model` found: the chosen model and the card, plus every candidate for benchmarks."""

    method: str  # "calibration", "fine-tune + calibration" or "none"
    model: Segmenter
    card: dict[str, Any]
    candidates: dict[str, Segmenter] = field(default_factory=dict)


def _summary(plan: CalibrationPlan) -> dict[str, float]:
    return {
        "dice_before": plan.before.mean_dice, "dice_after": plan.after.mean_dice,
        "ece_before": plan.before.ece, "ece_after": plan.after.ece,
    }


def work_folder_for(output: Path) -> Path:
    """The folder next to ``output`` where the fine-tune candidate's files live while adapt runs (removed after)."""
    return output.with_name(f".{output.stem}.adapt-work")


def check_work_folder(work: Path) -> None:
    """ValueError when something that is not a folder is at adapt's work folder's path."""
    if work.is_symlink() or (work.exists() and not work.is_dir()):
        raise ValueError(f"{display(work)}: in the way of adapt's work folder (not a folder); remove it")


def readable_cases(cases: list[Case]) -> tuple[list[Case], int]:
    """The cases whose image and mask can be read (the others are warned about on stderr), and how many could not."""
    readable = []
    for case in cases:
        try:
            load_case(case)
        except ImageReadError as err:
            print(f"warning: skipped: {err}", file=sys.stderr)
            continue
        readable.append(case)
    return readable, len(cases) - len(readable)


def _fine_tune(
    base_path: Path | None, device: str, cases: list[Case], seconds: float, seed: int, reporter, stop, work: Path | None
) -> Segmenter:
    """The base's weights fine-tuned on ``cases`` for ``seconds`` (no model selection: the last EMA weights)."""
    segmenter = Segmenter.load(base_path, device)
    data = cache_dataset(cases, segmenter.config.size)
    empty = cache_dataset([], segmenter.config.size)
    config = TrainConfig(
        epochs=10_000, batch_size=min(8, len(data)), lr=1e-4, warmup_steps=0, min_lr_ratio=1.0, ema_decay=0.9, seed=seed,
        time_budget_minutes=seconds / 60,
        high_t_fraction=float(segmenter.provenance.get("train_config", {}).get("high_t_fraction", 0.0)),
    )
    made = False
    if work is not None:
        check_work_folder(work)
        made = not work.exists()
        work.mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="finetune-", dir=work))  # this run's own: only it is removed
    try:
        output = folder / "candidate.mlffm"
        train(segmenter, data, empty, config, output, provenance=dict(segmenter.provenance), reporter=reporter, should_stop=stop)
        return Segmenter.load(output, device)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if made:
            try:
                work.rmdir()  # only when empty: another run's folder or anything put there stays
            except OSError:
                pass


def adapt_model(
    base_path: Path | None,
    cases: list[Case],
    *,
    device: str = "auto",
    samples: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    time_budget_minutes: float = 5.0,
    finetune: bool = True,
    progress: str = "bars",
    base_stats: list[CaseStats] | None = None,
    prior_cases: float = PRIOR_CASES,
    work: Path | None = None,
) -> Adaptation:
    """Choose and build the adapted model (nothing is written). Raises :class:`TooFewCases`."""
    started = time.monotonic()
    base = Segmenter.load(base_path, device)
    excluded = trained_ids(base)
    usable = [c for c in cases if c.case_id not in excluded]
    n_trained = len(cases) - len(usable)
    if base_stats is None:  # the minimum counts the cases that can be read, not those listed
        usable, n_unread = readable_cases(usable)
    else:  # scored by the caller: those are the readable ones
        scored = {s.case_id for s in base_stats}
        listed, usable = len(usable), [c for c in usable if c.case_id in scored]
        n_unread = listed - len(usable)
    if len(usable) < MIN_CASES:
        left_out = f" ({n_trained} more were left out: the base model was fine-tuned on them)" if n_trained else ""
        unread = f" ({n_unread} more could not be read: see the warnings above)" if n_unread else ""
        raise TooFewCases(
            f"{len(usable)} usable cases{left_out}{unread}; adapting needs at least {MIN_CASES} for a trustworthy held-out estimate: "
            f"correct {MIN_CASES - len(usable)} more"
        )
    samples, steps = base.sampling_settings(samples, steps)
    stages, reporter = Stages(progress), make_reporter(progress)
    base_cal = Calibration.of(base)
    if base_stats is None:
        base_stats = case_stats(base, usable, samples, steps, seed, lambda items: stages.wrap(list(items), "scoring the base model"))
    per_image = (time.monotonic() - started) / max(len(base_stats), 1)
    cal_plan = plan_calibration(base_stats, base_cal, prior_cases)
    reporter.message(
        f"calibration alone: held-out Dice {cal_plan.before.mean_dice:.4f} -> {cal_plan.after.mean_dice:.4f}, "
        f"ECE {cal_plan.before.ece:.4f} -> {cal_plan.after.ece:.4f} ({len(base_stats)} cases, leave-one-out)"
    )
    candidates = {"calibration": _calibrated(base, cal_plan.calibration, samples, steps)}
    record: dict[str, Any] = {"calibration": {**_summary(cal_plan), "temperature_fitted": cal_plan.temperature_fitted}}
    ft_plan, ft_model, held_index, win = None, None, [], (False, 0.0, 0.0)
    train_part, held_part = split_for_finetune(usable)
    ids = [s.case_id for s in base_stats]
    held_index = [ids.index(c.case_id) for c in held_part if c.case_id in ids]
    remaining = time_budget_minutes * 60 - (time.monotonic() - started)
    ft_seconds = remaining - per_image * len(held_part) * 1.3 - 5
    if not finetune:
        record["fine-tune + calibration"] = {"skipped": "not asked for (--no-finetune)"}
    elif ft_seconds < MIN_FINETUNE_SECONDS or len(held_index) < 2:
        why = f"the time budget leaves {max(ft_seconds, 0):.0f} s to train" if len(held_index) >= 2 else "too few cases"
        record["fine-tune + calibration"] = {"skipped": why}
        reporter.message(f"fine-tune candidate skipped: {why}")
    else:
        stages.start(f"fine-tuning on {len(train_part)} cases for {ft_seconds:.0f} s", None)
        with StopOnInterrupt() as interrupted:
            tuned = _fine_tune(base_path, device, train_part, ft_seconds, seed, reporter, interrupted, work)
        if interrupted:
            raise Terminated if interrupted.terminated else KeyboardInterrupt
        tuned_stats = case_stats(tuned, held_part, samples, steps, seed, lambda items: stages.wrap(list(items), "scoring the fine-tuned model"))
        ft_plan = plan_calibration(tuned_stats, base_cal, prior_cases)
        win = fine_tune_wins(cal_plan.after.dice[held_index], ft_plan.after.dice, FINETUNE_MARGIN)
        ft_model = _calibrated(tuned, ft_plan.calibration, samples, steps)
        ft_model.provenance["finetune_train_ids"] = sorted(excluded | {c.case_id for c in train_part})
        candidates["fine-tune + calibration"] = ft_model
        record["fine-tune + calibration"] = {
            **_summary(ft_plan), "temperature_fitted": ft_plan.temperature_fitted, "trained_on": len(train_part),
            "calibrated_on": len(held_part), "train_seconds": round(ft_seconds, 1),
            "calibration_alone_dice_same_cases": float(cal_plan.after.dice[held_index].mean()),
            "gain_over_calibration": win[1], "gain_standard_error": win[2],
        }
        reporter.message(
            f"fine-tune + calibration on the {len(held_part)} cases it did not train on: held-out Dice {ft_plan.after.mean_dice:.4f} "
            f"against {float(cal_plan.after.dice[held_index].mean()):.4f} for calibration alone (gain {win[1]:+.4f} +- {win[2]:.4f})"
        )
    if win[0]:
        method, model, plan, n_scored = "fine-tune + calibration", ft_model, ft_plan, len(held_part)
        before = score([base_stats[i] for i in held_index], base_cal)
        plan = CalibrationPlan(plan.calibration, plan.temperature_fitted, before, plan.after)
    elif cal_plan.after.mean_dice > cal_plan.before.mean_dice:
        method, model, plan, n_scored = "calibration", candidates["calibration"], cal_plan, len(base_stats)
    else:
        kept = CalibrationPlan(base_cal, False, cal_plan.before, cal_plan.before)
        method, model, plan, n_scored = "none", _calibrated(base, base_cal, samples, steps), kept, len(base_stats)
    card = {
        "method": method,
        "held_out_dice_before": plan.before.mean_dice,
        "held_out_dice_after": plan.after.mean_dice,
        "ece_before": plan.before.ece,
        "ece_after": plan.after.ece,
        "n_cases": len(base_stats),
        "n_scored": n_scored,
        "estimate": "leave-one-out over the cases scored (each scored by a fit that did not see it)",
        "base_checkpoint": base.checkpoint_id,
        "base_values": {"temperature": base_cal.temperature, "threshold": base_cal.threshold},
        "fitted": {
            "temperature": plan.calibration.temperature, "threshold": plan.calibration.threshold,
            "raw_threshold": plan.calibration.raw_threshold, "temperature_fitted": plan.temperature_fitted,
        },
        "prior_cases": prior_cases,
        "samples": samples, "steps": steps, "flip_views": base.config.flip_views,
        "excluded_trained_cases": n_trained,
        "unreadable_cases": n_unread,
        "candidates": record,
        "seconds": round(time.monotonic() - started, 1),
    }
    return Adaptation(method, model, card, candidates)


def _calibrated(segmenter: Segmenter, calibration: Calibration, samples: int, steps: int) -> Segmenter:
    return segmenter.with_options(
        probability_temperature=calibration.temperature, decision_threshold=calibration.threshold,
        default_samples=samples, default_steps=steps,
    )


def run_adapt(args: argparse.Namespace) -> int:
    if args.split is not None and args.split.casefold() == "test":  # its cases are always left out: say so, not "0 usable cases"
        raise ValueError(f"--split {args.split}: a model is never adapted on its test split (its scores would be optimistic); use val, train or all")
    card_path = args.output.with_suffix(".json")
    if card_path.name == args.output.name:
        raise ValueError(f"{args.output}: -o must not end in .json, the name of the card written beside the model; use .mlffm")
    # Every file adapt derives from -o is checked now, not after the whole calibration and fine-tune.
    work = work_folder_for(args.output)
    names = [*written_names(args.output.name), *written_names(card_path.name), *lock_names(args.output), work.name]
    names += [probe_name(args.output.name), probe_name(card_path.name)]
    check_name_lengths(args.output, names, "mlffm adapt")
    check_output_file(args.output, args.overwrite)
    check_output_file(card_path, args.overwrite, option="-o's card (.json)")
    check_work_folder(work)
    with ExclusiveLock(lock_path_for(args.output), display(args.output)):  # one adapt per -o: a second fails at once, naming the first
        return _run_adapt(args)


def _run_adapt(args: argparse.Namespace) -> int:
    if not args.time_budget > 0:
        raise ValueError(f"--time-budget must be > 0 minutes, got {args.time_budget}")
    listing = usable_cases(args.data, args.split)  # a corrections store: only its verified cases, as finetune reads it
    report_problems(listing)
    listing = without_test_cases(listing, args.data)  # splits.csv's test cases stay unseen, as in finetune
    try:
        result = adapt_model(
            args.checkpoint, list(listing.cases[: args.limit] if args.limit else listing.cases), device=args.device, samples=args.samples, steps=args.steps, seed=args.seed,
            time_budget_minutes=args.time_budget, finetune=not args.no_finetune, progress=args.progress,
            work=work_folder_for(args.output),
        )
    except TooFewCases as err:
        raise TooFewCases(f"{args.data}: {err}; nothing written") from None
    model = result.model
    provenance = dict(model.provenance)
    provenance["commands"] = [*provenance.get("commands", []), args.command_line]
    provenance["parent"] = {"checkpoint_id": result.card["base_checkpoint"], "path": str(args.checkpoint) if args.checkpoint else "shipped default"}
    provenance["adaptation"] = {
        **result.card, "command": args.command_line,
        "data": {"folder": listing.root.resolve().name, "n_images": result.card["n_cases"], "ids_sha256": listing.ids_hash()},
    }
    model.save(args.output, provenance=provenance, replace=args.overwrite)  # a file another program wrote meanwhile is kept
    write_card(args.output)
    card = result.card
    make_reporter(args.progress).message(
        f"{card['method']}: held-out Dice {card['held_out_dice_before']:.4f} -> {card['held_out_dice_after']:.4f}, "
        f"ECE {card['ece_before']:.4f} -> {card['ece_after']:.4f} on {card['n_scored']} of {card['n_cases']} cases; "
        f"temperature {card['fitted']['temperature']:.3f}, threshold {card['fitted']['threshold']:.3f} -> {args.output}"
    )
    return 0

