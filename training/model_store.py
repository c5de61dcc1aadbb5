"""The user's model folder: fine-tuned versions with small JSON cards.

Each version is ``<folder>/<name>.mlffm`` with ``<folder>/<name>.json`` beside
it (parent, data, number of images, Dice before and after). Names are
``finetuned-<UTC timestamp>``, so they sort by creation time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from model import Segmenter, default_weights_path

from .imageio import write_json


@dataclass(frozen=True)
class ModelVersion:
    """One selectable model: the shipped default (path None) or a file."""

    label: str
    path: Path | None
    card: dict[str, Any]


def new_version_path(folder: str | Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    folder = Path(folder)
    path = folder / f"finetuned-{stamp}.mlffm"
    k = 1
    while path.exists():
        k += 1
        path = folder / f"finetuned-{stamp}-{k}.mlffm"
    return path


def list_versions(folder: str | Path | None) -> list[ModelVersion]:
    """The shipped default (if installed) followed by the folder's versions, oldest first."""
    versions = []
    if default_weights_path().is_file():
        versions.append(ModelVersion("shipped default", None, {}))
    if folder is not None and Path(folder).is_dir():
        for path in sorted(Path(folder).glob("*.mlffm")):
            if path.name.endswith(".resume.mlffm"):
                continue
            card_path = path.with_suffix(".json")
            try:
                card = json.loads(card_path.read_text()) if card_path.is_file() else {}
            except (OSError, ValueError):
                card = {}
            versions.append(ModelVersion(path.stem, path, card))
    return versions


def write_card(checkpoint: Path) -> dict[str, Any]:
    """Write ``<checkpoint>.json`` from the checkpoint's provenance and return it."""
    provenance = Segmenter.load(checkpoint, "cpu").provenance
    card = {
        "name": checkpoint.stem,
        "parent": provenance.get("parent"),
        "data": provenance.get("finetune_data"),
        "n_images": (provenance.get("finetune_data") or {}).get("n_images"),
        "val_dice_before": provenance.get("val_dice_before"),
        "val_dice_after": provenance.get("best_val_dice"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(checkpoint.with_suffix(".json"), card)
    return card
