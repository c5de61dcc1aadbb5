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
  beside image ``<id>`` is neither, nor is a file that the ``<x>.json``
  beside it names as an output of ``mlffm segment`` or of an export
  (``<x>_segmentation.png``: a proposal, never a reference);
* a folder holding an image and a file named as its mask
  (``a.jpg`` beside ``a_mask.png``) is a folder of pairs: its name does not
  make the photos in it masks;
* every other file is an **image**. An image without a mask is not a case:
  one note says how many there are and names the first few (PH2's ROI
  drawings, photos a dataset ships without masks).

A photo name found in several folders, each photo with its mask beside it
(``IMG_0001.JPG`` and ``IMG_0001_mask.png`` in every visit's folder of a
clinic archive), is a case per folder, named by its folders
(:func:`folder_case_id`). Otherwise a case whose masks lie in two folders (``x_lesion.bmp`` and a copied
proposal ``x_segmentation.png``), or whose image name is found in two folders
(``train/0.jpg`` and ``test/0.jpg``), is left out with one line naming both:
which file is the reference, or whose mask it is, is not guessed. Folders not
looked into (too deep, links to folders, those that cannot be listed) are
named in the listing's note.
"""

from __future__ import annotations

import filecmp
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..files.segment_case import read_sidecar
from .imageio import IMAGE_SUFFIXES
from .mask_files import DERIVED_MAP_NAMES, MASK_NAMES, MASK_SUFFIXES, _nfc, derived_from, find_mask

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
    outputs: tuple[Path, ...] = ()
    """Files an earlier ``mlffm segment`` or export wrote, named in their ``.json``: neither images nor masks."""
    not_read: tuple[str, ...] = ()
    """``folder (why)`` for each folder not looked into (too deep, a link to a folder, one that cannot be listed)."""


def prune_subfolders(root: Path, here: Path, subfolders: list[str], not_read: list[str], show: Callable[[Path], str],
                     skip: Callable[[Path], bool] = lambda path: False) -> None:
    """Keep in ``subfolders`` (``os.walk``'s list for the folder ``here`` below ``root``; changed in place, sorted)
    those a walk goes into: not hidden, not ``skip``-ped, not a link to a folder (never followed), at most
    :data:`MAX_DEPTH` folders below ``root``. ``not_read`` gets ``<show(folder)> (why)`` for the links and the too deep."""
    depth = len(here.relative_to(root).parts)
    kept = []
    for name in sorted(subfolders):
        path = here / name
        if name.startswith(".") or skip(path):
            continue
        if path.is_symlink():
            not_read.append(f"{show(path)} (a link to a folder)")
        elif depth >= MAX_DEPTH:
            not_read.append(f"{show(path)} (deeper than {MAX_DEPTH} folders)")
        else:
            kept.append(name)
    subfolders[:] = kept


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


def list_tree(root: Path, other_images: tuple[str, ...] = ()) -> TreeFiles:
    """Every image and mask file under ``root``, told apart by the rule of this module; ``other_images``: the types
    of photos not read, taken as images too (so that one with a mask is a case left out, and said to be).

    Raises TreeError when the tree holds more than :data:`MAX_ENTRIES` entries.
    """
    found: list[tuple[Path, tuple[str, ...]]] = []
    names: dict[Path, set[str]] = {}
    not_read: list[str] = []
    refused = lambda err: not_read.append(f"{_shown(err.filename, root)} (cannot be listed: {err.strerror or type(err).__name__})")  # noqa: E731
    seen = 0
    for folder, subfolders, files in os.walk(root, followlinks=False, onerror=refused):
        here = Path(folder)
        parts = here.relative_to(root).parts
        seen += len(subfolders) + len(files)
        if seen > MAX_ENTRIES:
            raise TreeError(f"{root}: more than {MAX_ENTRIES} files and folders below it; point at the dataset's own folder")
        prune_subfolders(root, here, subfolders, not_read, lambda path: _shown(path, root))
        names[here] = set(files)
        pairs = _holds_pairs(files)
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in (*IMAGE_SUFFIXES, *MASK_SUFFIXES, *other_images):
                found.append((here / name, () if pairs else parts))
    outputs = _written_outputs([path for path, _ in found], names)
    found = [(path, parts) for path, parts in found if path not in outputs]
    in_mask_folder = {path: folder_role(parts) == "masks" for path, parts in found}
    image_ids = frozenset(_nfc(path.stem) for path, _ in found if not in_mask_folder[path])
    images: list[Path] = []
    masks: dict[str, list[Path]] = {}
    for path, _ in sorted(found):
        suffix = path.suffix.lower()
        owner = derived_from(_nfc(path.stem), suffix, image_ids, jpeg=True)
        if in_mask_folder[path] or (owner is not None and suffix in MASK_SUFFIXES and not _is_map(path.stem, owner)):
            if suffix in MASK_SUFFIXES:
                masks.setdefault(_nfc(path.name).lower(), []).append(path)
        elif owner is None and suffix in (*IMAGE_SUFFIXES, *other_images):
            images.append(path)
    return TreeFiles(tuple(images), masks, tuple(sorted(outputs)), tuple(not_read))


def twin_masks(masks: dict[str, list[Path]], case_id: str, image_ids: frozenset[str] = frozenset()) -> list[Path]:
    """The files that could be ``case_id``'s mask when they lie in two folders (one mask name twice, or
    ``x_lesion.bmp`` here and ``x_segmentation.png`` there), else []. Another image's mask name is not one of them."""
    names = [name for name in MASK_NAMES if not (name and f"{case_id}{name}" in image_ids)]
    wanted = {f"{case_id}{name}{suffix}".lower() for name in names for suffix in MASK_SUFFIXES}
    paths = sorted(path for key in wanted & masks.keys() for path in masks[key])
    return paths if len({path.parent for path in paths}) > 1 else []


def photo_name(path: Path) -> str:
    """The name a photo's case goes by: its file's stem in Unicode's composed form."""
    return _nfc(path.stem)


def by_name(images) -> dict[str, list[Path]]:
    """``images`` grouped by :func:`photo_name`, each name's files in the order given."""
    grouped: dict[str, list[Path]] = {}
    for path in images:
        grouped.setdefault(photo_name(path), []).append(path)
    return grouped


def image_twins(images: tuple[Path, ...]) -> dict[str, list[Path]]:
    """The image names (ids, in composed form) found in two or more folders, with their files: ``train/0.jpg`` and
    ``test/0.jpg`` are two photos, and which of them a mask ``0.png`` belongs to is not guessed. Copies of one file,
    byte for byte (one photo unpacked from two archives), are one photo."""
    return {case_id: paths for case_id, paths in by_name(images).items() if len({p.parent for p in paths}) > 1 and not _copies(paths)}


def mask_beside(image: Path, masks: dict[str, list[Path]]) -> Path | None:
    """The mask in ``image``'s own folder named for it (``IMG_0001_mask.png`` beside ``IMG_0001.JPG``), by
    :func:`~training.data.mask_files.find_mask`'s names and order, or None."""
    here = {key: [p for p in paths if p.parent == image.parent] for key, paths in masks.items()}
    here = {key: paths for key, paths in here.items() if paths}
    stem = _nfc(image.stem)
    return find_mask(here, stem, frozenset({stem}), image.stem)


def folder_case_id(root: Path, image: Path) -> str:
    """The case id of a photo whose name other folders repeat: its folders below ``root`` and its name, joined by
    ``__`` (``patient 1/visit 2/IMG_0001.JPG`` is case ``patient 1__visit 2__IMG_0001``)."""
    return _nfc("__".join((*image.parent.relative_to(root).parts, image.stem)))


def _copies(paths: list[Path]) -> bool:
    try:
        return all(filecmp.cmp(paths[0], other, shallow=False) for other in paths[1:])
    except OSError:
        return False


def tree_note(root: Path, shown: str, pairs: int, unmatched: list[Path], found: TreeFiles, split: str | None = None) -> str:
    """One line on what a search of a dataset tree found (``shown``: the root as messages show it; ``pairs``: those
    of ``split``, when one is asked for)."""
    of_split = f" of split {split!r}" if split not in (None, "all", "*") else ""
    line = f"{shown}: no images/ folder; {pairs} image/mask pairs{of_split} found by name below it"
    if unmatched:
        line += f"; {len(unmatched)} image{'s' if len(unmatched) > 1 else ''} without a mask not taken as cases ({_first(unmatched, root)})"
    if found.outputs:
        line += f"; {len(found.outputs)} files an earlier mlffm segment or export wrote (named in their .json) not taken ({_first(found.outputs, root)})"
    if found.not_read:
        line += f"; {len(found.not_read)} folders not looked into: {', '.join(found.not_read[:3])}{', ...' if len(found.not_read) > 3 else ''}"
    return line


def _first(paths, root: Path) -> str:
    return ", ".join(_shown(p, root) for p in paths[:3]) + (", ..." if len(paths) > 3 else "")


def _shown(path, root: Path) -> str:
    """``path`` relative to ``root``, on one line."""
    try:
        text = str(Path(path).relative_to(root))
    except ValueError:
        text = str(path)
    return text.encode("unicode_escape", "backslashreplace").decode("ascii") if not text.isprintable() else text


def _holds_pairs(files: list[str]) -> bool:
    """Whether a folder's files hold an image and a file named as its mask (``a.jpg`` and ``a_mask.png``)."""
    stems = frozenset(_nfc(Path(n).stem) for n in files if Path(n).suffix.lower() in IMAGE_SUFFIXES)
    for name in files:
        stem, suffix = _nfc(Path(name).stem), Path(name).suffix.lower()
        owner = derived_from(stem, suffix, stems, jpeg=True) if suffix in MASK_SUFFIXES and not name.startswith(".") else None
        if owner is not None and not _is_map(stem, owner):
            return True
    return False


def _written_outputs(paths: list[Path], names: dict[Path, set[str]]) -> set[Path]:
    """The files that a ``<x>.json`` sidecar beside ``<x>_segmentation.png`` names as the outputs of ``mlffm segment``
    or of an export (:func:`training.files.segment_case.read_sidecar`)."""
    outputs: set[Path] = set()
    for path in paths:
        if path.name.lower().endswith("_segmentation.png") and path not in outputs:
            sidecar = f"{path.name[: -len('_segmentation.png')]}.json"
            record = read_sidecar(path.parent / sidecar) if sidecar in names.get(path.parent, ()) else None
            if record is not None and path.name in record["outputs"]:
                outputs.update(path.parent / n for n in record["outputs"] if n in names[path.parent] and n != sidecar)
    return outputs


def _is_map(stem: str, owner: str) -> bool:
    """Whether ``stem`` names one of the maps ``mlffm segment`` writes beside image ``owner`` (not a mask)."""
    return _nfc(stem)[len(owner):] in DERIVED_MAP_NAMES
