"""The dataset layout used for training, fine-tuning, evaluation and the corrections store.

::

    DATA/images/<id>.{png,jpg,jpeg,bmp,tif,tiff}
    DATA/masks/<id>.png            (or the ISIC name <id>_segmentation.png)
    DATA/splits.csv                optional, columns id,split (a UTF-8 BOM, as Excel writes it, is fine)

A DATA without ``images/`` is read as its source ships it: images and masks
paired by name anywhere below it (:mod:`training.data.dataset_tree`).

Problems (missing masks, unreadable files, size mismatches, duplicate or
unsafe ids, file names that are not UTF-8, unknown ids in splits.csv) are
collected as one-line messages naming the file; the caller decides whether
to skip or stop. The cases left out of a listing are also in its
``skipped``, so a scoring command can report them. A ``splits.csv`` that
cannot be parsed (a row without a comma, an empty id or split) or that
lists one id in two splits (a train/test leak) is refused with a
DatasetError naming the line or the id. How mask values become lesion
pixels is stated in :mod:`training.data.masks`.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.inputs.margins import find_margins
from model.inputs.preprocess import resize_to_working, subsample, subsample_stride, to_float_rgb

from .splits import DatasetError, check_split_names, folder_splits, folder_splits_note, read_splits
from .dataset_tree import TreeError, TreeFiles, by_name, folder_case_id, image_twins, list_tree, mask_beside, photo_name, tree_note, twin_masks
from .imageio import IMAGE_SUFFIXES, ImageReadError, read_image, read_mask
from .mask_orientation import warn_if_mask_drawn_unturned
from .mask_files import MASK_SUFFIXES, find_mask, mask_files, other_masks, unread_mask_files
from ..files.outputs import display

def has_control_character(text: str) -> bool:
    """Whether ``text`` holds a control character (NUL, a newline, a tab, an escape, DEL, the C1 controls such as
    U+009B that some terminals take for an escape) or a line or paragraph separator (U+2028, U+2029)."""
    return any(ord(c) < 32 or 127 <= ord(c) < 160 or c in "\u2028\u2029" for c in text)


def safe_id(case_id: str) -> bool:
    """True if ``case_id`` can name a file inside a folder without escaping it, is valid UTF-8 and holds no control character."""
    if not _is_utf8(case_id):
        return False
    return (
        bool(case_id)
        and case_id not in (".", "..")
        and not case_id.startswith(".")
        and "/" not in case_id
        and "\\" not in case_id
        and not has_control_character(case_id)  # NUL, newlines, tabs, escapes: no one-line messages otherwise
        and ":" not in case_id
        and len(case_id.encode("utf-8")) <= 200
    )


def _is_utf8(text: str) -> bool:
    """False for names holding bytes that are not UTF-8 (Python keeps them as surrogate escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Case:
    """One image/mask pair of a dataset folder."""

    case_id: str
    image_path: Path
    mask_path: Path


@dataclass(frozen=True)
class DatasetListing:
    """The usable cases of a folder (for one split) and the problems found."""

    root: Path
    cases: tuple[Case, ...]
    problems: tuple[str, ...]
    skipped: tuple[str, ...] = ()  # one line per case of the split that was left out (a subset of problems)
    notes: tuple[str, ...] = ()  # what every command says once about the listing (how a tree without images/ was read)
    splits: dict[str, str] | None = None  # {id: split} as read: splits.csv, or a tree's folders' names; None where neither

    def ids_hash(self) -> str:
        """:func:`ids_hash` of the listing's case ids: provenance for a checkpoint."""
        return ids_hash(c.case_id for c in self.cases)


def ids_hash(ids: Iterable[str]) -> str:
    """SHA-256 (12 hex digits) of the sorted ids: which cases a run used, for its provenance and ``--resume``."""
    return hashlib.sha256("\n".join(sorted(ids)).encode("utf-8")).hexdigest()[:12]


def list_cases(root: str | Path, split: str | None = None) -> DatasetListing:
    """Find the image/mask pairs under ``root``, optionally only those of ``split``.

    Without an ``images/`` folder, images and masks are paired by name
    anywhere below ``root`` (:mod:`training.data.dataset_tree`: ISIC's
    download, PH2, HAM10000, a flat folder), and ``notes`` says so.

    Raises DatasetError if ``root`` holds no image with a mask, or if a split
    other than ``all`` is asked for and neither ``splits.csv`` nor (for a
    tree) the folders' names give splits.
    """
    root = Path(root)
    images_dir = root / "images"
    problems: list[str] = []
    left_out: list[tuple[str | None, str]] = []  # (id or None when it has none, message): images that are not cases
    by_id: dict[str, Path] = {}
    notes: list[str] = []
    tree = not images_dir.is_dir()
    pinned: dict[str, tuple[Path, Path]] = {}  # a tree's cases named by their folders: (image, the mask beside it)
    by_folders: list[tuple[str, Path, Path]] = []  # (id, image, mask) of every photo named by its folders, one id's two types too
    if tree:  # another source's layout: images and masks paired by name anywhere below root
        found = _tree_files(root)
        paths, masks = found.images, found.masks
        for case_id, twins in image_twins(paths).items():  # test/0.jpg and train/0.jpg: whose is mask 0.png is not guessed
            paths = tuple(p for p in paths if p not in twins)
            beside = {p: mask_beside(p, masks) for p in twins}
            if all(beside.values()):  # IMG_0001.JPG with its mask in every visit's folder: a case each, named by its folders
                by_folders += [(folder_case_id(root, path), path, beside[path]) for path in twins]
                continue
            left_out.append((case_id, f"{display(twins[0])}: skipped, its image name is found in {len(twins)} folders "
                             f"({', '.join(display(p) for p in twins[:3])}): which one its mask belongs to is not guessed, and a case id names one "
                             "case: give each photo a name of its own, or its mask beside it in its folder"))
        copies = by_name(paths)  # every copy of a photo: its split is that of its most held-out folder
        # what image_twins left in two folders are copies of one photo (HAM10000's two unpacked archives): the first is it
        paths = tuple(p for p in paths if copies[photo_name(p)][0].parent == p.parent)
        ids = frozenset(copies)  # a photo of a type not read is a case only with a mask
        other_types = [p for p in paths if p.suffix.lower() not in IMAGE_SUFFIXES and find_mask(masks, photo_name(p), ids) is None]
        paths = tuple(p for p in paths if p not in other_types)
    else:
        paths, masks = sorted(images_dir.iterdir()), mask_files(root / "masks")
    for path in paths:
        _add_image(path, by_id, problems, left_out)
    for case_id, path, mask in sorted(by_folders):  # as any image: IMG_0001.png beside IMG_0001.JPG a duplicate, .heic not read
        _add_image(path, by_id, problems, left_out, case_id)
        if by_id.get(case_id) == path:
            pinned[case_id] = (path, mask)

    image_ids = frozenset(by_id)  # every image's, before a split is chosen: a mask named for one is never another's
    splits, split_note, named_ids = read_splits(root), None, by_id
    if splits is None and tree:  # ISIC's download ships Training, Validation and Test folders: its test split stays one
        # an image without a mask (ISIC 2017's <id>_superpixels.png beside each photo) is no case of its folder's split
        named_ids = {k: p for k, p in by_id.items() if k in pinned or find_mask(masks, k, image_ids, p.stem) is not None}
        splits = folder_splits(root, {k: copies.get(k, [p]) for k, p in named_ids.items()}) or None
        split_note = folder_splits_note(root, splits, len(named_ids)) if splits is not None else None
    in_split = lambda case_id: True  # noqa: E731
    if split is not None:
        if splits is None:
            if split in ("all", "*"):
                splits = {}
            else:
                folders = " and no folder below it is named for a split (train, val, test)" if tree else ""
                raise DatasetError(f"{root}: no splits.csv{folders}, so split {split!r} cannot be selected (without one, ask for the split 'all')")
        named = {case_id for case_id, _ in left_out if case_id is not None}
        for case_id, case_split in splits.items():
            if case_id not in by_id and case_id not in named:
                line = f"{display(root / 'splits.csv')}: id {case_id!r} has no image"
                problems.append(line)
                if split in ("all", "*") or case_split == split:  # a case of this split that cannot be scored: say so
                    left_out.append((case_id, line))
        if split not in ("all", "*"):
            check_split_names(root, splits, named_ids, split, problems, left_out, by_folders=split_note is not None)
            by_id = {k: v for k, v in by_id.items() if splits.get(k) == split}
            # a case of a split named like this one but for letter case ("Test") is one the split is asked for and left out
            in_split = lambda case_id: case_id is None or (splits.get(case_id) or "").casefold() == split.casefold()  # noqa: E731
    skipped = [message for case_id, message in left_out if in_split(case_id)]
    known = set(problems)
    problems.extend(message for _, message in left_out if message not in known)

    cases, unmatched = [], other_types if tree else []
    for case_id, image_path in by_id.items():
        twins = twin_masks(masks, case_id, image_ids) if tree and case_id not in pinned else []
        if twins:
            message = (f"{display(image_path)}: skipped, its masks are found in {len({p.parent for p in twins})} folders "
                       f"({', '.join(display(p) for p in twins[:3])}): keep one (the reference) under {root}")
            problems.append(message)
            skipped.append(message)
            continue
        mask_path = pinned[case_id][1] if case_id in pinned else find_mask(masks, case_id, image_ids, image_path.stem)
        if mask_path is None and tree and case_id not in (splits or {}):
            unmatched.append(image_path)  # PH2's ROI drawings, photos shipped without a mask: not cases
            continue
        if mask_path is None:
            names = f"{case_id}, {case_id}_segmentation, _lesion or _mask ({' '.join(MASK_SUFFIXES)})"
            where = f"named {names}" if tree else f"masks/{case_id}.png (nor {names[len(case_id) + 2:]})"
            message = f"{display(image_path)}: skipped, no mask {where}{unread_mask_files(masks, case_id)}"
            problems.append(message)
            skipped.append(message)
            continue
        ignored = other_masks(masks, case_id, mask_path)
        if ignored:
            problems.append(f"{display(mask_path)}: used as {case_id}'s mask; {', '.join(ignored[:3])} beside it ignored (one mask per case)")
        cases.append(Case(case_id, image_path, mask_path))
    if tree:
        notes.append(tree_note(root, display(root), len(cases), unmatched, found, split))
    if split_note is not None:
        notes.append(split_note)
    return DatasetListing(root, tuple(cases), tuple(problems), tuple(skipped), tuple(notes), splits)


def _add_image(path: Path, by_id: dict[str, Path], problems: list[str], left_out: list[tuple[str | None, str]], case_id: str | None = None) -> None:
    """Take the file ``path`` as a case's image into ``by_id``, or say in one line why it is not one (``case_id``: its
    id where not its name's, :func:`~training.data.dataset_tree.folder_case_id`)."""
    if path.name.startswith("."):
        return
    if path.is_dir():
        problems.append(f"{display(path)}/: a folder, not read (a case is images/<id>.<type>; move its images up)")
        return
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        if path.suffix.lower() in UNSUPPORTED_IMAGE_SUFFIXES:  # an image this program does not read: a case left out, said as one
            line = f"{display(path)}: skipped, {path.suffix.lower()} is not a supported image type (use {', '.join(IMAGE_SUFFIXES)})"
            named = path.stem if case_id is None else case_id
            left_out.append((named if safe_id(named) else None, line))
        else:
            problems.append(f"{display(path)}: skipped, not an image file")
        return
    case_id = path.stem if case_id is None else case_id
    if not _is_utf8(case_id):
        left_out.append((None, f"{display(path)}: skipped, the file name is not valid UTF-8 (rename the file)"))
        return
    case_id = unicodedata.normalize("NFC", case_id)  # a zip made on a Mac holds decomposed letters (NFD)
    if not safe_id(case_id):
        left_out.append((case_id, f"{display(path)}: skipped, unsafe id {case_id!r}"))
        return
    if case_id in by_id:
        other = by_id[case_id].name if by_id[case_id].parent == path.parent else display(by_id[case_id])
        same = by_id[case_id].name != path.name and unicodedata.normalize("NFC", by_id[case_id].name) == unicodedata.normalize("NFC", path.name)
        form = f" ({by_id[case_id].name!a} and {path.name!a}: one name in two Unicode forms)" if same else ""
        left_out.append((case_id, f"{display(path)}: skipped, duplicate id {case_id!r} (also {other}){form}"))
        return
    by_id[case_id] = path


def _tree_files(root: Path) -> TreeFiles:
    """The images and masks of a folder without ``images/`` (:mod:`training.data.dataset_tree`); DatasetError if none."""
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder" if root.exists() else f"{root}: no such folder")
    try:
        found = list_tree(root, UNSUPPORTED_IMAGE_SUFFIXES)
    except TreeError as err:
        raise DatasetError(str(err)) from None
    if not found.images:
        raise DatasetError(f"{root}: no images/ folder and no image below it (expected DATA/images/<id>.png and DATA/masks/<id>.png, "
                           "or images and masks paired by name: <id>.jpg and <id>_segmentation.png)")
    if not found.masks:
        raise DatasetError(f"{root}: no images/ folder, and none of the {len(found.images)} images below it has a mask "
                           "(a masks/ folder, or <id>_segmentation, _lesion or _mask beside <id>)")
    return found


UNSUPPORTED_IMAGE_SUFFIXES = (".webp", ".gif", ".heic", ".heif", ".avif", ".jp2", ".jxl", ".jfif", ".jpe", ".dcm")
"""Photographs in types this program does not read: left out as cases (and said to be), not ignored as other files."""

def load_case(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """Read one pair: ((H, W, 3) uint8/uint16 image, (H, W) bool mask).

    Raises ImageReadError naming the file when either is unreadable or their sizes differ.
    """
    image = read_image(case.image_path)
    mask = read_mask(case.mask_path)
    if image.shape[:2] != mask.shape:
        turned = " (the image is turned upright by its orientation tag: was the mask drawn on it as stored?)" if image.shape[:2] == mask.shape[::-1] else ""
        raise ImageReadError(
            f"{case.mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from image size {image.shape[1]}x{image.shape[0]}{turned}"
        )
    warn_if_mask_drawn_unturned(case.image_path, case.mask_path, image, mask)
    return image, mask


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize to the working size exactly as inference does (uniform margins left out first, as the segmenter does).

    Returns ((size, size, 3) uint8 image, (size, size) uint8 mask coverage 0..255).
    """
    margins = find_margins(np.asarray(image))  # as the segmenter frames it: training and validation see what inference sees
    if margins is not None:
        image, mask = margins.crop(image), margins.crop(mask)
    rgb = resize_to_working(torch.from_numpy(to_float_rgb(image, max_side=size)).permute(2, 0, 1)[None], size)
    stride = subsample_stride(mask.shape, size)
    coverage = resize_to_working(torch.from_numpy(subsample(mask, stride).astype(np.float32))[None, None], size)
    image_u8 = (rgb[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
    mask_u8 = (coverage[0, 0].clamp(0, 1) * 255).round().byte().numpy()
    return image_u8, mask_u8


@dataclass
class CachedDataset:
    """A dataset held in memory at the working size.

    Attributes:
        images: (N, S, S, 3) uint8.
        masks: (N, S, S) uint8 coverage 0..255 (threshold at 128).
        ids: the N case ids.
    """

    images: np.ndarray
    masks: np.ndarray
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def cache_dataset(
    cases: tuple[Case, ...] | list[Case],
    size: int,
    on_problem: Callable[[str], None] = print,
    progress: Callable | None = None,
) -> CachedDataset:
    """Load and resize every case; unreadable or mismatched ones are reported and skipped."""
    images, masks, ids = [], [], []
    iterator = progress(cases) if progress is not None else cases
    for case in iterator:
        try:
            image, mask = load_case(case)
        except ImageReadError as err:
            on_problem(f"skipped: {err}")
            continue
        image_u8, mask_u8 = resize_pair(image, mask, size)
        images.append(image_u8)
        masks.append(mask_u8)
        ids.append(case.case_id)
    if not ids:
        return CachedDataset(np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size), np.uint8), [])
    return CachedDataset(np.stack(images), np.stack(masks), ids)
