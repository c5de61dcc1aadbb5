"""The user's model folder: fine-tuned and adapted versions with small JSON cards.

Each version is ``<folder>/<name>.mlffm`` with ``<folder>/<name>.json`` beside
it (parent, data, number of images, Dice before and after). Names are
``finetuned-<UTC timestamp>`` or ``adapted-<UTC timestamp>``, so each kind sorts
by creation time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from model import Segmenter, default_weights_path

from ..data.imageio import write_json


@dataclass(frozen=True)
class ModelVersion:
    """One selectable model: the shipped default (path None) or a file."""

    label: str
    path: Path | None
    card: dict[str, Any]


def new_version_path(folder: str | Path, prefix: str = "finetuned") -> Path:
    """``<folder>/<prefix>-<UTC timestamp>.mlffm`` that does not exist yet (prefix: finetuned or adapted)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    folder = Path(folder)
    path = folder / f"{prefix}-{stamp}.mlffm"
    k = 1
    while path.exists():
        k += 1
        path = folder / f"{prefix}-{stamp}-{k}.mlffm"
    return path


def list_versions(folder: str | Path | None) -> list[ModelVersion]:
    """The shipped default (if installed) followed by the folder's versions, oldest first."""
    versions = []
    if default_weights_path().is_file():
        versions.append(ModelVersion("shipped default", None, {}))
    if folder is not None and Path(folder).is_dir():
        # by the timestamp after the kind ("finetuned-", "adapted-"), so the kinds interleave by age
        for path in sorted(Path(folder).glob("*.mlffm"), key=lambda p: (p.stem.partition("-")[2], p.name)):
            if path.name.endswith(".resume.mlffm") or not path.is_file():
                continue  # a resume state, or a folder, dangling link or link loop named like a version
            versions.append(ModelVersion(path.stem, path, read_card(path.with_suffix(".json"))))
    return versions


MAX_CARD_BYTES = 1_000_000


def read_card(card_path: Path) -> dict[str, Any]:
    """A version's card as a dict; {} when it is missing, unreadable, too large, too deep or not a JSON object."""
    try:
        if not card_path.is_file() or card_path.stat().st_size > MAX_CARD_BYTES:
            return {}
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return card if isinstance(card, dict) else {}


def write_card(checkpoint: Path) -> dict[str, Any]:
    """Write ``<checkpoint>.json`` from the checkpoint's provenance and return it.

    A fine-tune's Dice before and after are those measured with the calibration
    each model uses (``held_out_dice_*``) when recorded, else the model-selection
    Dice; an adaptation's card (``mlffm adapt``) adds its method, ECE and fitted values.
    """
    provenance = Segmenter.load(checkpoint, "cpu").provenance
    adaptation = provenance.get("adaptation")
    if adaptation:
        card = {
            "name": checkpoint.stem,
            "parent": provenance.get("parent"),
            "data": adaptation.get("data"),
            "n_images": adaptation.get("n_cases"),
            "val_dice_before": adaptation.get("held_out_dice_before"),
            "val_dice_after": adaptation.get("held_out_dice_after"),
            **{k: adaptation.get(k) for k in ("method", "ece_before", "ece_after", "n_scored", "base_checkpoint", "fitted", "base_values")},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_json(checkpoint.with_suffix(".json"), card)
        return card
    card = {
        "name": checkpoint.stem,
        "parent": provenance.get("parent"),
        "data": provenance.get("finetune_data"),
        "n_images": (provenance.get("finetune_data") or {}).get("n_images"),
        "val_dice_before": provenance.get("held_out_dice_before", provenance.get("val_dice_before")),
        "val_dice_after": provenance.get("held_out_dice_after", provenance.get("best_val_dice")),
        "selection_dice_before": provenance.get("val_dice_before"),
        "selection_dice_after": provenance.get("best_val_dice"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(checkpoint.with_suffix(".json"), card)
    return card
