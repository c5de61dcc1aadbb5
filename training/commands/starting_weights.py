"""The network a training run starts from: fresh, a warm start (--init) or a resumed run, and what widens it.

``mlffm train`` builds a new network from its architecture flags, loads
``--init``'s weights and architecture, or continues ``--resume``'s run as it
was. Then two options may widen a warm start without changing what it
proposes: prompt channels (``--click-prob``) and deep-supervision heads
(``--deep-supervision``).
"""

from __future__ import annotations

import argparse

from model import NetworkConfig, Segmenter, SegmenterConfig
from model.config import DiffusionConfig

from ..cli_types import flat_field_choice, probability_arg

DEFAULT_SIZE = 128  # working size of a run trained from scratch, in pixels


def starting_segmenter(args: argparse.Namespace, reporter) -> Segmenter:
    """The segmenter ``mlffm train`` trains, from ``args``; ValueError (one line) for flags that contradict each other."""
    if args.resume is not None and args.init is not None:
        raise ValueError("--init and --resume exclude each other: --resume continues a run, --init starts a new one from weights")
    given = getattr(args, "flat_field", None)  # mlffm finetune has no --flat-field
    if args.resume is not None:
        segmenter = Segmenter.load(args.resume, args.device)
        if flat_field_choice(given, segmenter.config.flat_field) != segmenter.config.flat_field:
            raise ValueError(
                f"--flat-field {given}: {args.resume} trains with it {'on' if segmenter.config.flat_field else 'off'} "
                "and a resumed run keeps its input (leave --flat-field out, or start a new run from its weights with --init)"
            )
        if args.size is not None and args.size != segmenter.config.size:
            # A resumed run continues its own optimizer and schedule at its own size; changing it is a new run.
            raise ValueError(
                f"--size {args.size}: {args.resume} trains at {segmenter.config.size} px and a resumed run keeps its size "
                f"(leave --size out, or start a new run with --init {args.output} --size {args.size})"
            )
    elif args.init is not None:
        segmenter = Segmenter.load(args.init, args.device)
        reporter.message(f"warm start from {args.init} (checkpoint {segmenter.checkpoint_id}); its architecture is kept")
        if args.size is not None and args.size != segmenter.config.size and args.freeze_base:
            raise ValueError(f"--freeze-base keeps {args.init}'s proposals as they are: it cannot change the working size ({segmenter.config.size} px) to --size {args.size}")
        if args.size is not None and args.size != segmenter.config.size:
            # The network is fully convolutional: the same weights train at another working size.
            reporter.message(f"working size changed from {segmenter.config.size} to {args.size} px")
            segmenter = segmenter.at_working_size(args.size)
        fitted = segmenter.config.probability_temperature, segmenter.config.decision_threshold
        if fitted != (1.0, 0.5) and not args.freeze_base:
            # The fitted temperature and threshold belong to the old weights; training changes them.
            reporter.message(
                f"its probability temperature {fitted[0]:.3f} and decision threshold {fitted[1]:.3f} are reset to 1 and 0.5: "
                "run mlffm calibrate on the result"
            )
            segmenter = segmenter.with_options(probability_temperature=1.0, decision_threshold=0.5)
    else:
        if args.freeze_base:
            raise ValueError("--freeze-base trains prompt weights on a trained base: give it with --init")
        widths = parse_widths(args.widths, "--widths")
        mask_widths = parse_widths(args.mask_widths, "--mask-widths") if args.mask_widths else None
        config = SegmenterConfig(
            size=args.size if args.size is not None else DEFAULT_SIZE,
            network=NetworkConfig(
                widths=widths, mask_widths=mask_widths, image_blocks=args.image_blocks,
                fusion=args.fusion, mask_path=not args.no_mask_path,
            ),
            diffusion=DiffusionConfig(schedule=args.schedule, prediction=args.prediction),
        )
        segmenter = Segmenter(config, args.device)
    flat = flat_field_choice(given, segmenter.config.flat_field)
    if flat != segmenter.config.flat_field:  # only a new choice (a resumed run has refused one above)
        if args.freeze_base:
            raise ValueError(f"--freeze-base keeps {args.init}'s proposals as they are: it cannot change --flat-field")
        segmenter = segmenter.with_options(flat_field=flat)
        reporter.message(f"flat-field correction {'on' if flat else 'off'} (the network sees the images {'with' if flat else 'without'} their illumination field divided out)")
    segmenter = with_prompts_if_asked(segmenter, args, reporter)
    return with_deep_supervision_if_asked(segmenter, args, reporter)


def add_deep_supervision_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--deep-supervision", type=int, default=None, metavar="LEVELS",
        help="train with auxiliary clean-mask heads on this many of the decoder's coarser levels (1/2, 1/4, ...), "
        "weighted 1/2, 1/4, ... (training only: proposals never run them). Default: a new network has none, a warm "
        "start keeps its own; 0 removes them",
    )


def with_deep_supervision_if_asked(segmenter: Segmenter, args: argparse.Namespace, reporter) -> Segmenter:
    levels = getattr(args, "deep_supervision", None)
    current = segmenter.config.network.deep_supervision
    if levels is None or levels == current:
        return segmenter
    if getattr(args, "resume", None) is not None:
        raise ValueError(f"--deep-supervision: {args.resume} trains with {current} auxiliary levels and a resumed run keeps its network")
    if levels and getattr(args, "freeze_base", False):
        raise ValueError("--deep-supervision trains the decoder, which --freeze-base keeps frozen: use one or the other")
    try:  # the config checks the level count and the target, before any weight is allocated
        supervised = segmenter.with_deep_supervision(levels)
    except ValueError as err:
        raise ValueError(f"--deep-supervision {levels}: {err}") from None
    reporter.message(f"deep supervision on {levels} decoder levels (was {current}): auxiliary heads for training, never run by proposals")
    return supervised


def add_prompt_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--click-prob", type=probability_arg, default=0.0, metavar="P",
        help="learn prompts: this share of samples (0-1) is trained with simulated clicks and a current mask, the rest "
        "with none; a network without prompt channels is widened first (zero weights, so no prompts = unchanged). "
        "Default 0: no prompt training",
    )
    parser.add_argument(
        "--freeze-base", action="store_true",
        help="train only the prompt weights (the prompt branch and the stem's prompt input); every other weight stays "
        "as it is, so the proposals without clicks stay bit for bit those of the starting weights, and so does their "
        "calibration. Needs --click-prob > 0",
    )
    parser.add_argument(
        "--own-errors", type=probability_arg, default=0.0, metavar="P",
        help="of the samples trained with clicks, this share (0-1) gets its clicks on the model's own proposal for the "
        "training image (RITM's iterative training: up to 2 more no-grad rounds of refinement, each clicked on its "
        "largest error); the rest on a perturbed reference mask. Costs a few no-grad proposals per step. "
        "Needs --click-prob > 0. Default 0",
    )


def with_prompts_if_asked(segmenter: Segmenter, args: argparse.Namespace, reporter) -> Segmenter:
    if not 0.0 <= args.click_prob <= 1.0:
        raise ValueError(f"--click-prob {args.click_prob}: must lie in [0, 1]")
    if args.freeze_base and args.click_prob <= 0:
        raise ValueError("--freeze-base trains only the prompt weights: give --click-prob > 0 (1 is usual with it)")
    if args.own_errors > 0 and args.click_prob <= 0:
        raise ValueError(f"--own-errors {args.own_errors}: clicks on the model's own proposals need --click-prob > 0")
    network = segmenter.config.network
    if getattr(args, "resume", None) is not None:
        # A resumed run continues its own network, optimizer and EMA: its architecture cannot change.
        if args.click_prob > 0 and not network.prompt_channels:
            raise ValueError(f"--click-prob: {args.resume} was started without prompts; start a new run with --init to learn clicks")
        return segmenter
    if args.click_prob > 0 and not (network.prompt_channels and network.prompt_control):
        from model.inputs.prompts import with_prompt_channels  # noqa: PLC0415

        reporter.message("added the prompt branch (a copy of the image path, zero residuals) and 3 prompt channels to learn clicks")
        return with_prompt_channels(segmenter)
    return segmenter


def parse_widths(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(w) for w in text.split(","))
    except ValueError:
        raise ValueError(f"{option} {text!r}: expected comma-separated integers such as 16,32,64") from None
