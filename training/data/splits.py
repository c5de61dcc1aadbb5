"""Which split each case is in: ``DATA/splits.csv``, or, for a dataset as its source ships it, its folders' names.

``splits.csv`` has the columns ``id`` and ``split`` (others are ignored; a
UTF-8 BOM, as Excel writes it, is fine). Without one, a dataset read as a
tree (:mod:`training.data.dataset_tree`) takes each image's split from the
nearest of its folders named for one (:func:`folder_split`: ISIC's
``..._Training_Input``, ``..._Validation_Input``, ``..._Test_Input``; a
Kaggle-style ``train/`` and ``test/``), so a test split that ships with the
data is never trained on. Images in no such folder are in no split.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

from ..files.outputs import display

if TYPE_CHECKING:  # datasets.py imports this module
    from .datasets import DatasetListing

SPLIT_WORDS = {"train": "train", "training": "train", "trainset": "train", "val": "val", "valid": "val",
               "validation": "val", "dev": "val", "test": "test", "testing": "test", "testset": "test"}
"""Words of a folder's name (split at anything but letters and digits, letter case ignored) that name a split."""


class DatasetError(ValueError):
    """The dataset folder cannot be used at all; the message says why."""


def read_splits(root: Path) -> dict[str, str] | None:
    """``splits.csv`` as {id: split}, or None when there is none.

    Columns ``id`` and ``split`` (others are ignored; a UTF-8 BOM is
    accepted). Raises DatasetError naming the file and line for a row that
    lacks either value, and naming the id and both splits for an id listed
    in two splits. An id listed twice in the same split is accepted.
    """
    path = root / "splits.csv"
    if not path.is_file():
        return None
    shown = display(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [name.strip().lower() for name in next(reader, [])]
            if not {"id", "split"} <= set(header):
                raise DatasetError(f"{shown}: needs the columns id,split (first line: {','.join(header)!r})")
            at_id, at_split = header.index("id"), header.index("split")
            splits: dict[str, str] = {}
            first_line: dict[str, int] = {}
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue  # blank line
                if len(row) <= max(at_id, at_split):
                    raise DatasetError(f"{shown}, line {line}: expected id,split, found {','.join(row)!r}")
                case_id, split = unicodedata.normalize("NFC", row[at_id].strip()), row[at_split].strip()
                if not case_id or not split:
                    raise DatasetError(f"{shown}, line {line}: empty id or split in {','.join(row)!r}")
                earlier = splits.get(case_id)
                if earlier is not None and earlier != split:
                    raise DatasetError(
                        f"{shown}: id {case_id!r} is listed in two splits, {earlier!r} (line {first_line[case_id]}) "
                        f"and {split!r} (line {line}): a train/test leak; list each id in one split"
                    )
                splits[case_id] = split
                first_line.setdefault(case_id, line)
            return splits
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"{shown}: cannot read ({err})") from None


def no_cases_in_split(root: str | Path, split: str, listing: DatasetListing) -> str:
    """One line for a split of ``listing`` (of ``root``) that selected nothing, naming the splits that ``splits.csv``
    (or the folders' names) hold and the first case it left out (its ``skipped``, each line naming its file)."""
    names = sorted(set((listing.splits or {}).values()))
    source = "splits.csv has" if (Path(root) / "splits.csv").is_file() else "folders name"
    held = f" (its {source} {', '.join(repr(n) for n in names[:8])}{', ...' if len(names) > 8 else ''})" if names else ""
    left_out = listing.skipped
    why = f"; {len(left_out)} left out, first: {display(left_out[0])}" if left_out else ""
    return f"{root}: no cases in split {split!r}{held}{why}"


def folder_split(parts: tuple[str, ...]) -> str | None:
    """The split named by the nearest of the folders ``parts`` (relative to DATA, outermost first) that names one."""
    for part in reversed(parts):
        named = {SPLIT_WORDS[w] for w in re.split(r"[^0-9a-z]+", part.casefold()) if w in SPLIT_WORDS}
        if len(named) == 1:
            return named.pop()
        if named:  # "train_test": says two, so none
            return None
    return None


SPLIT_PRECEDENCE = ("test", "val", "train")
"""Where copies of one photo lie in folders of two splits, the first of these wins: a test photo is never trained on."""


def folder_splits(root: Path, images: dict[str, list[Path]]) -> dict[str, str]:
    """{id: split} for the images (by id: every copy of its photo) whose folders name a split; {} when none does.
    Copies of one photo in folders of two splits (one archive unpacked into Train/ and Test/) take the split of
    :data:`SPLIT_PRECEDENCE` that comes first."""
    splits = {}
    for case_id, paths in images.items():
        named = {folder_split(p.parent.relative_to(root).parts) for p in paths} - {None}
        if named:
            splits[case_id] = next(s for s in SPLIT_PRECEDENCE if s in named)
    return splits


def folder_splits_note(root: Path, splits: dict[str, str], images: int) -> str:
    """One line saying which splits the folder names gave, and how many images are in none."""
    counts = {name: sum(1 for s in splits.values() if s == name) for name in ("train", "val", "test")}
    held = ", ".join(f"{name} {count}" for name, count in counts.items() if count)
    rest = images - len(splits)
    return (f"{display(root)}: no splits.csv; the splits are its folders' names: {held}"
            + (f"; {rest} image{'s' if rest > 1 else ''} in no split" if rest > 0 else ""))


def check_split_names(root: Path, splits: dict[str, str], by_id: dict[str, Path], split: str, problems: list[str], left_out: list,
                      by_folders: bool = False) -> None:
    """Say which images a split leaves out unseen: those ``splits.csv`` (``by_folders``: the folders' names) puts in no
    split, and those in a split whose name differs from ``split`` only in letter case (``Test`` for ``test``), which are
    cases of it left out."""
    shown = f"{display(root)}: no splits.csv, and by its folders' names" if by_folders else display(root / "splits.csv")
    unlisted = sorted(k for k in by_id if k not in splits)
    if unlisted:
        first = ", ".join(unlisted[:3]) + (", ..." if len(unlisted) > 3 else "")
        problems.append(f"{shown}: {len(unlisted)} image{'s are' if len(unlisted) > 1 else ' is'} in no split ({first}), so not in {split!r}")
    for case_id, case_split in splits.items():
        if case_split != split and case_split.casefold() == split.casefold() and case_id in by_id:
            left_out.append((case_id, f"{shown}: {case_id!r} is in split {case_split!r}, not {split!r} (split names are compared exactly)"))
