"""Datasets as other sources ship them: images and masks paired by name anywhere under one folder.

When DATA has no ``images/`` folder, :func:`training.data.datasets.list_cases`
looks through the whole tree for the layouts public datasets and other
clinics use, for example::

    ISIC's download   ISIC2018_Task1-2_Training_Input/<id>.jpg     ISIC2018_Task1_Training_GroundTruth/<id>_segmentation.png
    PH2               PH2 Dataset images/<id>/<id>_Dermoscopic_Image/<id>.bmp   ... /<id>/<id>_lesion/<id>_lesion.bmp
    HAM10000          HAM10000_images_part_1/<id>.jpg              HAM10000_segmentations_lesion_tschandl/<id>_segmentation.png
    one flat folder   <id>.jpg beside <id>_mask.png
    two folders       Images/<id>.jpg  Masks/<id>.png              (or img/ + gt/, image/ + labels/, ...)

The rule, for every file of an image type (hidden entries and links to
folders are left out; at most :data:`MAX_DEPTH` folders deep and
:data:`MAX_ENTRIES` entries):

* it is a **mask** when its name is another image's id followed by one of
  :data:`~training.data.mask_files.MASK_NAMES` in a lossless type
  (``x_lesion.bmp`` of image ``x``), or when the deepest of its folders
  whose name holds a word of either kind holds a mask word
  (:data:`MASK_WORDS`: mask, label, gt, groundtruth, segmentation,
  annotation, ...) rather than an image word (:data:`IMAGE_WORDS`);
* a ``<id>_probability.tif`` (and the other maps ``mlffm segment`` writes)
  beside image ``<id>`` is neither;
* every other file is an **image**. An image without a mask is not a case:
  one note says how many there are and names the first few (PH2's ROI
  drawings, photos a dataset ships without masks).

A mask name found in two folders (the reference and an earlier ``mlffm
segment`` output, say) leaves its case out with one line naming both: which
of them is the reference is not guessed.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .imageio import IMAGE_SUFFIXES
from .mask_files import MASK_NAMES, MASK_SUFFIXES, derived_from

MAX_DEPTH = 8
"""Folders below DATA that are looked into (PH2's own layout needs 3)."""
MAX_ENTRIES = 200_000
"""Files and folders looked at before the search stops: DATA is a dataset's folder, not a disk."""

MASK_WORDS = frozenset({
    "mask", "masks", "label", "labels", "gt", "groundtruth", "segmentation", "segmentations", "seg", "segs",
    "annotation", "annotations", "reference", "references", "truth",
})
"""Words (split at anything but letters and digits, letter case ignored) that make a folder a folder of masks."""
IMAGE_WORDS = frozenset({"image", "images", "img", "imgs", "input", "inputs", "photo", "photos", "dermoscopic", "dermoscopy", "raw"})
"""Words that make a folder a folder of images (a folder holding words of both kinds is one of masks: ``mask_images``)."""


class TreeError(ValueError):
    """The tree cannot be searched (too deep a listing, too many entries); the message says why."""


@dataclass(frozen=True)
class TreeFiles:
    """The files of a dataset tree, split into images and masks.

    Attributes:
        images: the image files, in sorted order of their paths.
        masks: the mask files by lower-cased, NFC-normalised file name, as
            :func:`training.data.mask_files.mask_files` gives a ``masks/`` folder's.
    """

    images: tuple[Path, ...]
    masks: dict[str, list[Path]]


def folder_role(parts: tuple[str, ...]) -> str | None:
    """'masks', 'images' or None for a file under the folders ``parts`` (relative to DATA, outermost first)."""
    for part in reversed(parts):
        words = set(re.split(r"[^0-9a-z]+", part.casefold()))
        if "ground" in words and "truth" in words:
            words.add("groundtruth")
        if words & MASK_WORDS:
            return "masks"
        if words & IMAGE_WORDS:
            return "images"
    return None


def list_tree(root: Path) -> TreeFiles:
    """Every image and mask file under ``root``, told apart by the rule of this module.

    Raises TreeError when the tree holds more than :data:`MAX_ENTRIES` entries.
    """
    found: list[tuple[Path, tuple[str, ...]]] = []
    seen = 0
    for folder, subfolders, files in os.walk(root, followlinks=False, onerror=None):
        parts = Path(folder).relative_to(root).parts
        seen += len(subfolders) + len(files)
        if seen > MAX_ENTRIES:
            raise TreeError(f"{root}: more than {MAX_ENTRIES} files and folders below it; point at the dataset's own folder")
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and len(parts) < MAX_DEPTH)
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in (*IMAGE_SUFFIXES, *MASK_SUFFIXES):
                found.append((Path(folder) / name, parts))
    in_mask_folder = {path: folder_role(parts) == "masks" for path, parts in found}
    image_ids = frozenset(_nfc(path.stem) for path, _ in found if not in_mask_folder[path])
    images: list[Path] = []
    masks: dict[str, list[Path]] = {}
    for path, _ in sorted(found):
        suffix = path.suffix.lower()
        owner = derived_from(_nfc(path.stem), suffix, image_ids)
        if in_mask_folder[path] or (owner is not None and suffix in MASK_SUFFIXES and not _is_map(path.stem, owner)):
            if suffix in MASK_SUFFIXES:
                masks.setdefault(_nfc(path.name).lower(), []).append(path)
        elif owner is None and suffix in IMAGE_SUFFIXES:
            images.append(path)
    return TreeFiles(tuple(images), masks)


def twin_masks(masks: dict[str, list[Path]], case_id: str) -> list[Path]:
    """The files that could be ``case_id``'s mask when one of its mask names is found in two folders, else []."""
    wanted = {f"{case_id}{name}{suffix}".lower() for name in MASK_NAMES for suffix in MASK_SUFFIXES}
    for key in sorted(wanted & masks.keys()):
        folders = {path.parent for path in masks[key]}
        if len(folders) > 1:
            return sorted(masks[key])
    return []


def _is_map(stem: str, owner: str) -> bool:
    """Whether ``stem`` names one of the maps ``mlffm segment`` writes beside image ``owner`` (not a mask)."""
    return _nfc(stem)[len(owner):] in ("_probability", "_uncertainty", "_samples")


def _nfc(name: str) -> str:
    try:
        return unicodedata.normalize("NFC", name)
    except (TypeError, ValueError):
        return name
