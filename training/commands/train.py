"""``mlffm train`` and ``mlffm finetune``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from model import Segmenter
from model.files.checkpoint import read_checkpoint_meta
from model.inputs.limits import MAX_WORKING_SIZE

from ..scoring.adapt import calibrated_dice
from ..data.augment import AugmentConfig
from ..data.datasets import CachedDataset, DatasetError, DatasetListing, cache_dataset, list_cases
from ..data.splits import no_cases_in_split
from ..data.id_lists import read_id_list, without_cases
from ..cli_types import add_flat_field_argument, batch_size_arg, bounded_float, bounded_int, epochs_arg, limit_arg, lr_arg, minutes_arg, probability_arg, seed_arg
from ..loop.distributed import Distributed, rank_device, session, stop_signals
from ..loop.interrupt import StopOnInterrupt
from ..corrections.lineage import resumed_base
from ..files.outputs import ExclusiveLock, check_output_file, check_run_outputs, display, lock_path_for, new_run_id
from ..loop.progress import make_reporter
from ..corrections.store import report_problems, usable_cases
from .run_data import (
    check_loaded, check_run_names, check_same_finetune_data, check_same_train_data, command_chain, data_record, split_holdout, without_test_cases,
)
from .starting_weights import add_deep_supervision_argument, add_prompt_arguments, starting_segmenter, with_prompts_if_asked
from ..loop.trainer import SilentReporter, TrainConfig, TrainResult, resume_path_for, train


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", type=Path, help="dataset folder (images/, masks/, optional splits.csv)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="where to write the best checkpoint (.mlffm)")
    parser.add_argument("--split", default="train", help="split to train on (default: train; 'all' for every case)")
    parser.add_argument("--val-split", default="val", help="split for model selection (default: val; '' holds out 15%% of the training cases instead)")
    parser.add_argument(
        "--size", type=bounded_int(4, MAX_WORKING_SIZE), default=None,
        help="working resolution in pixels (default: 128; with --init, the warm start's own size unless given)",
    )
    parser.add_argument("--widths", default="16,32,64,96,128", help="channels per level of the image path, comma-separated (default: %(default)s)")
    parser.add_argument("--mask-widths", help="channels per level of the per-step mask path and decoder (default: same as --widths)")
    parser.add_argument("--image-blocks", type=bounded_int(1, 16), default=2, help="residual blocks per level in the image path (default 2)")
    parser.add_argument("--fusion", choices=("mlffm", "plain"), default="mlffm", help="skip fusion (plain = ablation; default: %(default)s)")
    parser.add_argument("--prediction", choices=("x0", "eps", "direct"), default="x0", help="diffusion target (direct = one-pass ablation; default: %(default)s)")
    parser.add_argument("--no-mask-path", action="store_true", help="plain U-Net without the noisy-mask path (ablation; needs --prediction direct)")
    parser.add_argument("--schedule", choices=("cosine", "linear"), default="cosine", help="noise schedule of the diffusion (default: %(default)s)")
    parser.add_argument("--boundary-weight", type=bounded_float(0.0, 100.0), default=1.0, help="weight of the boundary-sensitive term (0 = off; default: %(default)s)")
    parser.add_argument(
        "--high-t-fraction", type=probability_arg, default=0.6,
        help="share of training steps drawn from the top decile of timesteps (almost pure noise), 0-1; "
        "0 = uniform timesteps (default 0.6)",
    )
    parser.add_argument("--no-augment", action="store_true", help="turn augmentation off")
    parser.add_argument(
        "--acquisition-shifts", type=probability_arg, default=0.0, metavar="P",
        help="also augment with another clinic's camera: vignetting, uneven illumination and hair, each with "
        "probability P per image (default 0: off)",
    )
    add_flat_field_argument(parser, "default off for a new network; a warm start keeps its checkpoint's")
    add_prompt_arguments(parser)
    add_deep_supervision_argument(parser)
    parser.add_argument("--epochs", type=epochs_arg, help="passes over the training cases (default: 30, or a resumed run's own plan)")
    parser.add_argument("--batch-size", type=batch_size_arg, default=16, help="images per step; under torchrun the global batch (default: %(default)s)")
    parser.add_argument("--lr", type=lr_arg, default=1e-3, help="learning rate (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (a missing GPU is an error; default: %(default)s)")
    parser.add_argument("--resume", type=Path, help="continue from a <output>.resume.mlffm file")
    parser.add_argument(
        "--init", type=Path, metavar="CHECKPOINT",
        help="start from these weights and their architecture, with a fresh optimizer and schedule (a warm start)",
    )
    parser.add_argument("--time-budget", type=minutes_arg, metavar="MINUTES", help="stop after this many minutes, keeping the best")
    parser.add_argument("--seed", type=seed_arg, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--limit", type=limit_arg, help="use at most N training and N validation cases (quick runs)")
    parser.add_argument(
        "--exclude", type=Path, metavar="IDS_FILE",
        help="leave these cases out of training (one id per line, '#' comments), e.g. suspected label errors; recorded in the provenance",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    _add_progress_argument(parser)


def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", type=Path, help="folder of corrected cases (images/, masks/)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="where to write the fine-tuned checkpoint")
    parser.add_argument("--checkpoint", type=Path, help="base checkpoint (default: the shipped weights)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=epochs_arg, help="passes over the corrected cases (default: 10, or a resumed run's own plan)")
    budget.add_argument("--time-budget", type=minutes_arg, metavar="MINUTES", help="train for this many minutes instead of a number of epochs")
    parser.add_argument("--lr", type=lr_arg, default=1e-4, help="learning rate (default 1e-4, 10x below training)")
    parser.add_argument("--batch-size", type=batch_size_arg, default=8, help="images per step (default: %(default)s)")
    parser.add_argument("--replay", type=Path, help="reference dataset mixed in to guard against drift (its train split if it has one)")
    parser.add_argument("--holdout", type=bounded_float(0.0, 0.9, low_open=True), default=0.2, help="fraction of DATA held out to score before/after (default 0.2)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (a missing GPU is an error; default: %(default)s)")
    parser.add_argument("--resume", type=Path, help="continue from a <output>.resume.mlffm file")
    parser.add_argument("--seed", type=seed_arg, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_prompt_arguments(parser)
    _add_progress_argument(parser)


def _add_progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress", choices=("bars", "json"), default="bars",
        help="bars: progress bars for a terminal (default); json: one JSON event per line on stdout, for programs",
    )


def _augment_config(args: argparse.Namespace) -> AugmentConfig:
    if args.no_augment and args.acquisition_shifts > 0:
        raise ValueError("--acquisition-shifts is an augmentation: it cannot be combined with --no-augment")
    return AugmentConfig(enabled=not args.no_augment, acquisition_shifts=args.acquisition_shifts)


def _cache(listing: DatasetListing, size: int, label: str, show_bar: bool = True) -> CachedDataset:
    bar = lambda items: tqdm(items, desc=f"loading {label}", unit="image", dynamic_ncols=True, disable=not show_bar)  # noqa: E731
    return cache_dataset(listing.cases, size, on_problem=lambda m: print(f"warning: {m}", file=sys.stderr), progress=bar)


TRAIN_EPOCHS = 30
FINETUNE_EPOCHS = 10


def _resolve_epochs(args: argparse.Namespace, default: int) -> None:
    """``--epochs`` as given; left out, a resumed run's own plan (its ``planned_epochs``: a resume that changed the
    plan would change the schedule's length under it), else ``default``. A run planned by time (finetune
    --time-budget records 10,000) gives ``default``."""
    if getattr(args, "epochs", None) is not None:
        return
    planned = None
    if getattr(args, "resume", None) is not None:
        try:
            planned = (read_checkpoint_meta(args.resume).get("provenance") or {}).get("planned_epochs")
        except (ValueError, OSError):
            planned = None  # the run's loading names what is wrong with the file
    usable = isinstance(planned, int) and not isinstance(planned, bool) and 1 <= planned < 10_000
    args.epochs = planned if usable else default


def _check_output(args: argparse.Namespace) -> None:
    if _worker_rank() > 0:
        return  # under torchrun only rank 0 writes, and it checks
    finetune_by_time = getattr(args, "command", "") == "finetune" and args.time_budget is not None
    epochs = 10_000 if finetune_by_time else args.epochs  # as the run will plan them
    check_run_outputs(args.output, resume_path_for(args.output), args.resume, args.overwrite, epochs)


def _worker_rank() -> int:
    """This process's rank under torchrun (RANK), 0 otherwise."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _claim_output(args: argparse.Namespace) -> ExclusiveLock | contextlib.nullcontext:
    """One process at a time per ``-o``: a second run on the same output fails at once, naming the first."""
    check_run_names(args.output, f"mlffm {getattr(args, 'command', 'train')}")  # before any of them is made
    check_output_file(args.output, overwrite=True)  # its folder first: the lock file goes there
    if _worker_rank() > 0:
        return contextlib.nullcontext()  # under torchrun rank 0 holds the lock for the whole run
    on_stale = lambda text: print(f"warning: {text}", file=sys.stderr)  # noqa: E731
    return ExclusiveLock(lock_path_for(args.output), display(args.output), on_stale=on_stale)


def run_train(args: argparse.Namespace) -> int:
    """``mlffm train``; under torchrun, one rank of a DistributedDataParallel run (training/loop/distributed.py)."""
    with _claim_output(args), session(args.device) as ctx:
        return _run_train(args, ctx)


def _run_train(args: argparse.Namespace, ctx: Distributed) -> int:
    _resolve_epochs(args, TRAIN_EPOCHS)
    _check_output(args)
    args.device = rank_device(args.device, ctx)
    reporter = make_reporter(args.progress) if ctx.is_main else SilentReporter()
    bars = args.progress == "bars" and ctx.is_main
    segmenter = starting_segmenter(args, reporter)
    size = segmenter.config.size
    train_listing = list_cases(args.data, args.split)
    report_problems(train_listing)
    if not train_listing.cases:
        raise ValueError(no_cases_in_split(args.data, args.split, train_listing))
    excluded: tuple[str, ...] = ()
    if args.exclude is not None:
        excluded = read_id_list(args.exclude)
        known = {c.case_id for c in list_cases(args.data, "all").cases}
        train_listing, dropped = without_cases(train_listing, excluded, known)
        reporter.message(f"left out {dropped} training cases listed in {args.exclude} ({len(excluded)} ids listed)")
    try:
        val_listing = list_cases(args.data, args.val_split) if args.val_split else None
    except DatasetError as err:
        raise DatasetError(f"{err} (for --val-split {args.val_split}; --val-split '' holds out 15% of the training cases "
                           "to select the model on)") from None
    in_val = sorted(set(excluded) & {c.case_id for c in val_listing.cases}) if val_listing is not None else []
    if in_val:  # --exclude is about training data; a listed validation case is still scored, and that is worth a word
        reporter.message(f"warning: {len(in_val)} id(s) in {args.exclude} are --val-split {args.val_split} cases ({', '.join(in_val[:3])}): "
                         "they stay in validation (--exclude leaves cases out of training only)")
    if val_listing is not None and {c.case_id for c in val_listing.cases} & {c.case_id for c in train_listing.cases}:
        reporter.message(f"warning: --val-split {args.val_split} shares cases with --split {args.split}: the model is selected on cases it trained on")
    train_cases = train_listing.cases[: args.limit] if args.limit else train_listing.cases
    train_data = _cache(replace(train_listing, cases=train_cases), size, args.split, bars)
    check_loaded(train_data, len(train_cases), args.data, args.split, "train on")
    if val_listing is not None and val_listing.cases:
        val_cases = val_listing.cases[: args.limit] if args.limit else val_listing.cases
        val_data = _cache(replace(val_listing, cases=val_cases), size, args.val_split, bars)
        check_loaded(val_data, len(val_cases), args.data, args.val_split, "select the model on (--val-split)")
    else:
        print("warning: no validation cases; holding out 15% of the training cases", file=sys.stderr)
        train_data, val_data = split_holdout(train_data, 0.15)
        if len(val_data) == 0:  # one case: nothing to select on, and "best" would mean nothing
            raise ValueError(f"{args.data}: need at least 2 usable cases when there is no --val-split to select on "
                             f"(one to train on, one held out), found {len(train_data)}")
    if args.resume is not None:  # the cases that loaded, not only those listed: a case refused now is a change too
        check_same_train_data(segmenter.provenance, train_listing, train_data.ids, val_data.ids, args)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        time_budget_minutes=args.time_budget,
        boundary_weight=args.boundary_weight,
        high_t_fraction=args.high_t_fraction,
        click_prob=args.click_prob,
        freeze_base=args.freeze_base,
        own_error_share=args.own_errors,
        augment=_augment_config(args),
    )
    command = args.command_line
    # A resumed run records every command of the chain, oldest first, so the weights stay reproducible.
    # A warm start records the chain that made its starting weights too.
    continued = args.resume is not None or args.init is not None
    provenance = {
        "command": command,
        "commands": command_chain(segmenter.provenance if continued else None, command),
        # one id for the run and all its resumes: --resume replaces only files that carry it
        "run_id": (segmenter.provenance.get("run_id") if args.resume is not None else None) or new_run_id(),
        "planned_epochs": args.epochs,
        "data": data_record(train_listing.root, train_data.ids, args.split),
        **({"excluded": {"file": Path(args.exclude).name, "ids": sorted(excluded)}} if excluded else {}),
        "val_data": data_record(args.data, val_data.ids, args.val_split),
        "torch": torch.__version__,
        "distributed": ctx.provenance(config.batch_size),
        **({"init": {"checkpoint_id": segmenter.checkpoint_id, "path": str(args.init)}} if args.init is not None else {}),
        "licence": "trained on ISIC 2018 data (CC BY-NC 4.0) when data is the ISIC folder; non-commercial use",
    }
    reporter.message(f"training on {len(train_data)} cases, validating on {len(val_data)}, size {size}, device {segmenter.device}")
    with stop_signals(ctx) as interrupted:
        result = train(
            segmenter, train_data, val_data, config, args.output,
            provenance=provenance, resume=args.resume, reporter=reporter, should_stop=interrupted, distributed=ctx,
        )
    cut = result.history[-1].get("batches_done") if result.history else None
    reporter.message(
        f"stopped by {_stop_reason(result, interrupted)} after {result.epochs_done} epoch{'' if result.epochs_done == 1 else 's'}"
        f"{f' and {cut} batches of the next' if cut else ''} in {result.seconds / 60:.1f} min; "
        f"best val Dice {result.best_val_dice:.4f} at epoch {result.best_epoch} -> {args.output} "
        f"(resume state: {resume_path_for(args.output)})"
    )
    return 0


def _stop_reason(result: TrainResult, interrupted: StopOnInterrupt) -> str:
    if interrupted and result.stopped_by == "cancel":
        return "SIGTERM" if getattr(interrupted, "terminated", False) else "interrupt"
    return result.stopped_by


def run_finetune(args: argparse.Namespace) -> int:
    """``mlffm finetune``; under torchrun, one rank of a DistributedDataParallel run."""
    with _claim_output(args), session(args.device) as ctx:
        return _run_finetune(args, ctx)


def _run_finetune(args: argparse.Namespace, ctx: Distributed) -> int:
    _resolve_epochs(args, FINETUNE_EPOCHS)
    _check_output(args)
    args.device = rank_device(args.device, ctx)
    reporter = make_reporter(args.progress) if ctx.is_main else SilentReporter()
    bars = args.progress == "bars" and ctx.is_main
    if args.resume is not None:
        # the resume file's weights are partly trained: the parent and "Dice before" are the original base's
        segmenter = Segmenter.load(args.resume, args.device)
        base, base_model = resumed_base(segmenter.provenance, args.checkpoint, args.resume, args.device)
    else:
        base = args.checkpoint
        segmenter = base_model = Segmenter.load(base, args.device)
    loaded = segmenter
    segmenter = with_prompts_if_asked(segmenter, args, reporter)
    # "Dice before" is scored as train() selects: with prompt channels when clicks are learnt (zero weights: same no-click masks)
    base_model = segmenter if base_model is loaded else with_prompts_if_asked(base_model, args, SilentReporter())
    # the replay set's folder is checked before the corrections are read (a wrong path is one line at once)
    replay_listing = list_cases(args.replay, "train" if (args.replay / "splits.csv").is_file() else None) if args.replay is not None else None
    if replay_listing is not None:  # a tree's Test folder (its split by folder names) is never trained on either
        replay_listing = without_test_cases(replay_listing, args.replay)
    listing = without_test_cases(usable_cases(args.data), args.data)  # a corrections store: only complete cases whose files match their records
    report_problems(listing)
    if not listing.cases:
        raise ValueError(f"{args.data}: no usable image/mask pairs to fine-tune on")
    data = _cache(listing, segmenter.config.size, "corrections", bars)
    train_data, held_out = split_holdout(data, args.holdout)
    if args.resume is not None:  # the cases that loaded and the held-out ones: "best" must compare the same set
        check_same_finetune_data(loaded.provenance, listing, data.ids, held_out.ids, args)
    if len(held_out) == 0:  # one case: nothing to score the fine-tune on, so "best" would mean nothing
        raise ValueError(f"{args.data}: need at least 2 usable cases (one to train on, one held out to score the fine-tune), found {len(data)}")
    if len(train_data) == 0:
        raise ValueError(f"{args.data}: --holdout {args.holdout:g} holds out all {len(data)} usable cases, leaving none to train on (use a smaller --holdout)")
    replay = None
    if replay_listing is not None:
        held_ids = set(held_out.ids)
        kept = tuple(c for c in replay_listing.cases if c.case_id not in held_ids)
        if len(kept) < len(replay_listing.cases):  # the same ids held out here: training on them would score them on themselves
            reporter.message(f"left out {len(replay_listing.cases) - len(kept)} replay cases that are held out here (the same ids)")
            replay_listing = replace(replay_listing, cases=kept)
        if not replay_listing.cases:
            raise ValueError(f"{args.replay}: --replay has no cases to mix in (its train split, or every case, is empty or held out)")
        replay = _cache(replay_listing, segmenter.config.size, "replay", bars)
    epochs = args.epochs if args.time_budget is None else 10_000
    config = TrainConfig(
        epochs=epochs,
        # the global batch; under torchrun a multiple of the ranks (at least one case each)
        batch_size=max(min(args.batch_size, max(len(train_data), 1)) // ctx.world_size, 1) * ctx.world_size,
        lr=args.lr,
        warmup_steps=0,
        min_lr_ratio=1.0,
        ema_decay=0.9,
        seed=args.seed,
        time_budget_minutes=args.time_budget,
        # keep the timestep mix the base weights were trained with
        high_t_fraction=float(segmenter.provenance.get("train_config", {}).get("high_t_fraction", 0.0)),
        click_prob=args.click_prob,
        freeze_base=args.freeze_base,
        own_error_share=args.own_errors,
    )
    if args.click_prob > 0:  # the score train() selects on: the mean of no-click and one-click Dice
        before = sum(ctx.prompt_validation(base_model, held_out, config.val_steps, seed=args.seed)) / 2
    else:
        before = ctx.validation_dice(base_model, held_out, config.val_steps, seed=args.seed)
    # The card's Dice before/after use the calibration the model keeps (the base's; never fitted on these cases).
    held_cases = [c for c in listing.cases if c.case_id in set(held_out.ids)]
    calibrated_before = calibrated_dice(base_model, held_cases, args.seed)
    reporter.message(f"fine-tuning on {len(train_data)} cases (+{len(replay) if replay else 0} replay), held out {len(held_out)}; val Dice before: {before:.4f}")
    reporter.epoch_end(0, {"train_loss": None, "val_dice": before})
    provenance = dict(base_model.provenance)
    provenance.pop("adaptation", None)  # the parent's card, not this model's
    # the whole chain: the parent's commands, then this run's (a resumed run's earlier ones are in its resume file)
    chain = command_chain(loaded.provenance if args.resume is not None else base_model.provenance, args.command_line)
    provenance.update(
        {
            "parent": {"checkpoint_id": base_model.checkpoint_id, "path": str(base) if base else "shipped default"},
            "run_id": (segmenter.provenance.get("run_id") if args.resume is not None else None) or new_run_id(),
            "planned_epochs": epochs,
            "command": args.command_line,
            "commands": chain,
            "finetune_data": data_record(listing.root, data.ids, "all"),
            "holdout_ids": held_out.ids,
            # mlffm calibrate and adapt never fit on these (the parent's training cases included)
            "finetune_train_ids": sorted(
                set(base_model.provenance.get("finetune_train_ids", [])) | set(train_data.ids) | set(replay.ids if replay is not None else ())
            ),
            **({"replay_data": {"folder": Path(args.replay).resolve().name, "n_images": len(replay)}} if replay is not None else {}),
            "val_dice_before": before,
            "distributed": ctx.provenance(config.batch_size),
        }
    )
    with stop_signals(ctx) as interrupted:
        result = train(
            segmenter, train_data, held_out, config, args.output,
            provenance=provenance, resume=args.resume, reporter=reporter, replay_data=replay,
            initial_val_dice=before, should_stop=interrupted, distributed=ctx,
        )
    if result.best_epoch == 0 and not args.output.exists() and ctx.is_main:
        # No epoch beat the starting weights: the result is the base, recorded as such.
        Segmenter.load(base, args.device).save(args.output, provenance={**provenance, "best_val_dice": before, "best_epoch": 0})
    if not ctx.is_main:
        return 0  # rank 0 alone scores the result and writes its card
    tuned = Segmenter.load(args.output, args.device)
    held = {"held_out_dice_before": calibrated_before, "held_out_dice_after": calibrated_dice(tuned, held_cases, args.seed)}
    tuned.save(args.output, provenance={**tuned.provenance, **held})
    reporter.message(f"val Dice before {before:.4f}, after {result.best_val_dice:.4f} (best epoch {result.best_epoch}); stopped by {_stop_reason(result, interrupted)} -> {args.output}")
    reporter.message(
        f"held-out Dice with the model's calibration (temperature {tuned.config.probability_temperature:.3f}, threshold "
        f"{tuned.config.decision_threshold:.3f}, kept from the base): {held['held_out_dice_before']:.4f} -> {held['held_out_dice_after']:.4f}"
    )
    return 0
