"""Writing reviewed cases: the corrections store (training layout) and exports.

The corrections store is a dataset folder in the one layout the training
module reads::

    STORE/images/<id>.png   the image, lossless
    STORE/masks/<id>.png    the accepted mask, 0/255
    STORE/meta/<id>.json    the record: source, image hash, checkpoint, settings, edits, time, annotator

The record is written last, so a case with a record is complete. Every write
is atomic and nothing is replaced unless the caller says ``overwrite=True``.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .datasets import safe_id
from .imageio import check_writable, write_json, write_png, write_tiff


def case_id_for(source: str | Path) -> str:
    """A safe store id from a source file name: its stem with path-like characters replaced."""
    stem = Path(str(source)).stem or "case"
    cleaned = re.sub(r"[\\/:\x00]", "_", stem).lstrip(".") or "case"
    if not safe_id(cleaned):
        raise ValueError(f"{source}: cannot make a safe case id from this name")
    return cleaned


def image_sha256(image: np.ndarray) -> str:
    """SHA-256 of the pixel data (shape and dtype included), independent of the file encoding."""
    digest = hashlib.sha256(f"{image.shape}{image.dtype}".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def _to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:
        return (image // 257).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return image.astype(np.uint8)


class CorrectionsStore:
    """A folder of accepted corrections, readable by ``mlffm finetune``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def paths(self, case_id: str) -> tuple[Path, Path, Path]:
        if not safe_id(case_id):
            raise ValueError(f"unsafe case id {case_id!r}: it would write outside {self.root}")
        return self.root / "images" / f"{case_id}.png", self.root / "masks" / f"{case_id}.png", self.root / "meta" / f"{case_id}.json"

    def has(self, case_id: str) -> bool:
        return safe_id(case_id) and self.paths(case_id)[2].is_file()

    def count(self) -> int:
        meta = self.root / "meta"
        return len(list(meta.glob("*.json"))) if meta.is_dir() else 0

    def accept(self, case_id: str, image: np.ndarray, mask: np.ndarray, record: dict[str, Any], overwrite: bool = False) -> Path:
        """Save image, mask and record; returns the record's path.

        ``image`` (H, W, 3) or (H, W); ``mask`` (H, W) bool. The record gets
        the image hash, the mask's lesion pixels and the time added.
        """
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")
        image_path, mask_path, meta_path = self.paths(case_id)
        check_writable([image_path, mask_path, meta_path], overwrite)
        for folder in (image_path.parent, mask_path.parent, meta_path.parent):
            folder.mkdir(parents=True, exist_ok=True)
        write_png(image_path, _to_uint8_rgb(image))
        write_png(mask_path, mask.astype(np.uint8) * 255)
        full = {
            "id": case_id,
            **record,
            "image_sha256": image_sha256(image),
            "lesion_pixels": int(mask.sum()),
            "accepted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_json(meta_path, full)
        return meta_path


EXPORT_SUFFIXES = ("_segmentation.png", "_probability.tif", "_uncertainty.tif", ".json")


def export_case(
    folder: str | Path,
    stem: str,
    mask: np.ndarray,
    probability: np.ndarray | None,
    uncertainty: np.ndarray | None,
    record: dict[str, Any],
    samples: np.ndarray | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``<stem>_segmentation.png`` (0/255), probability and uncertainty TIFFs
    (float32), optionally ``<stem>_samples.tif`` (N x H x W uint8), and the
    ``<stem>.json`` sidecar. Refuses before writing anything if any exists."""
    folder = Path(folder)
    if not safe_id(stem):
        raise ValueError(f"unsafe output name {stem!r}")
    targets = {suffix: folder / f"{stem}{suffix}" for suffix in EXPORT_SUFFIXES}
    if samples is not None:
        targets["_samples.tif"] = folder / f"{stem}_samples.tif"
    wanted = [p for s, p in targets.items() if (s != "_probability.tif" or probability is not None) and (s != "_uncertainty.tif" or uncertainty is not None)]
    check_writable(wanted, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    write_png(targets["_segmentation.png"], mask.astype(np.uint8) * 255)
    if probability is not None:
        write_tiff(targets["_probability.tif"], probability.astype(np.float32))
    if uncertainty is not None:
        write_tiff(targets["_uncertainty.tif"], uncertainty.astype(np.float32))
    if samples is not None:
        write_tiff(targets["_samples.tif"], samples.astype(np.uint8))
    write_json(targets[".json"], {**record, "outputs": [p.name for p in wanted]})
    return wanted
