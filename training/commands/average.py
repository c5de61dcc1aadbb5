"""``mlffm average``: the uniform weight average of models of one architecture (a "model soup").

Runs fine-tuned from the same starting weights stay in one basin of the loss,
so the average of their weights is itself a good model, often better and
more robust to a shift of the data than any one of them (Wortsman et al.
2022, "Model soups"). The result costs nothing extra at inference.

The average keeps the first model's configuration with the probability
temperature and decision threshold reset (they belong to the old weights):
run ``mlffm calibrate`` on it. Its provenance keeps every parent's commands.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch

from model import Segmenter

from ..files.outputs import check_output_file


def add_average_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", type=Path, help="two or more model files of the same architecture")
    parser.add_argument("-o", "--output", type=Path, required=True, help="averaged model file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def _architecture(segmenter: Segmenter) -> tuple:
    config = segmenter.config
    return config.size, config.network, config.diffusion


def average_weights(models: list[Segmenter], weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """The mean of each floating-point tensor of the models' networks; other tensors (counters) from the first.

    ``weights`` (one per model) makes it a weighted sum instead of the
    uniform mean, for example ``(1 - a, a)`` for a point on the line between
    two weights; the sums are taken in float64, then cast back.
    """
    if weights is not None and len(weights) != len(models):
        raise ValueError(f"need one weight per model, got {len(weights)} for {len(models)} models")
    states = [m.network.state_dict() for m in models]
    averaged = {}
    for name, first in states[0].items():
        if first.is_floating_point():
            stacked = torch.stack([state[name].double() for state in states])
            combined = stacked.mean(dim=0) if weights is None else torch.tensordot(torch.tensor(weights, dtype=torch.float64), stacked, dims=1)
            averaged[name] = combined.to(first.dtype)
        else:
            averaged[name] = first.clone()
    return averaged


def run_average(args: argparse.Namespace) -> int:
    if len(args.checkpoints) < 2:
        raise ValueError(f"need two or more checkpoints to average, got {len(args.checkpoints)}")
    if len(set(p.resolve() for p in args.checkpoints)) < len(args.checkpoints):
        raise ValueError("the same checkpoint is named twice; each model should count once")
    check_output_file(args.output, args.overwrite)  # a missing folder or a folder as -o: one line now, before loading anything
    models = [Segmenter.load(path, "cpu") for path in args.checkpoints]
    seen: dict[str, Path] = {}
    for path, model in zip(args.checkpoints, models):  # a copy of one model is that model again: it would count twice
        if model.checkpoint_id in seen:
            raise ValueError(f"{path}: the same model as {seen[model.checkpoint_id]} (checkpoint {model.checkpoint_id}); each model should count once")
        seen[model.checkpoint_id] = path
    for path, model in zip(args.checkpoints[1:], models[1:]):
        if _architecture(model) != _architecture(models[0]):
            raise ValueError(f"{path}: its size, network or diffusion settings differ from {args.checkpoints[0]}'s; only one architecture can be averaged")
        if model.config.flat_field != models[0].config.flat_field:  # the networks were trained on other inputs
            raise ValueError(
                f"{path}: flat-field correction is {'on' if model.config.flat_field else 'off'} in it and "
                f"{'on' if models[0].config.flat_field else 'off'} in {args.checkpoints[0]}; weights trained on other inputs cannot be averaged"
            )
    config = dataclasses.replace(models[0].config, probability_temperature=1.0, decision_threshold=0.5)
    soup = Segmenter(config, "cpu")
    soup.network.load_state_dict(average_weights(models))
    commands: list[str] = []
    for model in models:
        commands += [c for c in model.provenance.get("commands", []) if c not in commands]
    provenance = {
        "command": args.command_line,
        "commands": [*commands, args.command_line],
        "average_of": [
            {"path": str(path), "checkpoint_id": model.checkpoint_id, "best_val_dice": model.provenance.get("best_val_dice")}
            for path, model in zip(args.checkpoints, models)
        ],
        "licence": models[0].provenance.get("licence"),
    }
    soup.save(args.output, provenance=provenance, replace=args.overwrite)  # a file written meanwhile is kept unless --overwrite
    print(f"averaged {len(models)} models of one architecture -> {args.output}; run mlffm calibrate on it")
    return 0
