"""What ``mlffm train`` and ``mlffm finetune`` record about their cases, and what ``--resume`` checks against it.

A run records the cases it actually used: the ids of the cases that loaded
(a case whose mask is refused at load, an outline say, is not one of them),
hashed. ``--resume`` compares the cases that load now with that record, so
a case deleted, added or become unreadable between the runs is refused in
one line instead of changing silently what the best Dice is measured on.
Files written before the record named loaded cases (no ``hashed`` entry)
are compared as they were: by the listing's hash.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..data.datasets import CachedDataset, DatasetListing, ids_hash
from ..files.file_names import check_name_lengths, lock_names, probe_name, written_names
from ..files.outputs import display
from ..loop.trainer import resume_path_for

LOADED = "loaded cases"
"""The ``hashed`` entry of a data record whose ``ids_sha256`` is of the cases that loaded, not of the listing."""


def data_record(root: Path, ids: list[str], split: str) -> dict[str, Any]:
    """The provenance of the cases a run used: their folder, split, number and id hash."""
    return {"folder": Path(root).resolve().name, "split": split, "n_images": len(ids), "ids_sha256": ids_hash(ids), "hashed": LOADED}


def same_cases(recorded: Any, ids: list[str], listing: DatasetListing) -> bool:
    """Whether the data ``recorded`` by a run (:func:`data_record`) is of the cases ``ids`` (from ``listing``)."""
    if not isinstance(recorded, dict) or recorded.get("ids_sha256") is None:
        return True  # nothing recorded to compare with
    if recorded.get("hashed") == LOADED:
        return recorded["ids_sha256"] == ids_hash(ids)
    return recorded["ids_sha256"] == listing.ids_hash()  # an older file: it hashed the listing


def check_same_train_data(
    provenance: dict, listing: DatasetListing, train_ids: list[str], val_ids: list[str], args: argparse.Namespace
) -> None:
    """ValueError when ``train --resume`` has other training cases or other validation cases than its run began with:
    the run's best validation Dice, which decides what ``-o`` holds, would then compare different things."""
    began = provenance.get("data") if isinstance(provenance.get("data"), dict) else {}
    val = provenance.get("val_data") if isinstance(provenance.get("val_data"), dict) else {}
    was_val = val.get("split")
    other_val = (was_val is not None and was_val != args.val_split) or (
        val.get("hashed") == LOADED and val.get("ids_sha256") != ids_hash(val_ids)
    )
    if not same_cases(began, train_ids, listing) or other_val:
        raise ValueError(
            f"{display(args.resume)}: its run trained on other cases ({began.get('n_images', '?')} of {began.get('folder', '?')}, "
            f"split {began.get('split', '?')!r}, validated on {val.get('n_images', '?')} of {was_val!r}) than {args.data} --split {args.split!r} "
            f"--val-split {args.val_split!r} loads now ({len(train_ids)}, validated on {len(val_ids)}); "
            "--resume continues a run on its own data (use --init to start a new run from its weights)"
        )


def check_same_finetune_data(
    provenance: dict, listing: DatasetListing, ids: list[str], held_ids: list[str], args: argparse.Namespace
) -> None:
    """ValueError when ``finetune --resume`` loads other cases, or holds out others, than its run began with: its
    Dice before and after, and the choice of the best epoch, would compare different held-out sets."""
    began = provenance.get("finetune_data") if isinstance(provenance.get("finetune_data"), dict) else {}
    held = provenance.get("holdout_ids")
    other_held = isinstance(held, list) and sorted(map(str, held)) != sorted(held_ids)
    if not same_cases(began, ids, listing) or other_held:
        raise ValueError(
            f"{display(args.resume)}: its run fine-tuned on other cases ({began.get('n_images', '?')} of {began.get('folder', '?')}, "
            f"{len(held) if isinstance(held, list) else '?'} held out) than {args.data} gives now ({len(ids)} usable, {len(held_ids)} held out "
            f"with --holdout {args.holdout:g}); --resume continues a run on its own cases and held-out set "
            "(start a new fine-tune without --resume to use these)"
        )


def check_loaded(data: CachedDataset, listed: int, root: Path, split: str, role: str) -> None:
    """ValueError when none of the ``listed`` cases of ``split`` loaded (each refused with a warning above)."""
    if listed and len(data) == 0:
        raise ValueError(
            f"{root}: none of the {listed} cases of split {split!r} could be loaded (see the warnings above), "
            f"so there is nothing to {role}; fix or replace their files"
        )


def command_chain(provenance: dict | None, command: str) -> list[str]:
    """Every command that made a model, oldest first, then ``command``: the chain of ``provenance`` (its ``commands``,
    and its own ``command`` where a file of an older version left it out of them), or none."""
    if provenance is None:
        return [command]
    earlier = [c for c in provenance.get("commands") or [] if isinstance(c, str)]
    own = provenance.get("command")
    if isinstance(own, str) and own not in earlier:
        earlier.append(own)
    return [*earlier, command]


def check_run_names(output: Path, what: str) -> None:
    """``train`` / ``finetune``: ValueError unless every name derived from ``-o`` (its temporary, its resume state and
    that one's temporary, its lock) fits the folder's file system."""
    output = Path(output)
    names = [*written_names(output.name), probe_name(output.name), *written_names(resume_path_for(output).name), *lock_names(output)]
    check_name_lengths(output, names, what)


def without_test_cases(listing: DatasetListing, root: Path) -> DatasetListing:
    """``listing`` without the cases that the folder's ``splits.csv`` (or, for a dataset as its source ships it, its
    folders' names: the listing's ``splits``) puts in the ``test`` split (in any letter case: ``Test`` too; a model is
    never trained or calibrated on test cases: their scores would be optimistic), with one warning line saying how
    many were left out."""
    splits = listing.splits or {}
    test = {case_id for case_id, split in splits.items() if split.casefold() == "test"}
    kept = tuple(c for c in listing.cases if c.case_id not in test)
    if len(kept) < len(listing.cases):
        source = Path(root) / "splits.csv" if (Path(root) / "splits.csv").is_file() else f"{Path(root)}'s folder names"
        print(f"warning: left out {len(listing.cases) - len(kept)} cases that {source} put{'s' if isinstance(source, Path) else ''} in split 'test': "
              "a model is never trained on its test cases", file=sys.stderr)
    return replace(listing, cases=kept)


def split_holdout(data: CachedDataset, fraction: float) -> tuple[CachedDataset, CachedDataset]:
    """Deterministic hold-out by id hash: the same ids are held out on every run."""
    if not 0 < fraction < 1:
        raise ValueError(f"--holdout must lie in (0, 1), got {fraction}")
    ranked = sorted(range(len(data)), key=lambda i: hashlib.sha256(data.ids[i].encode()).hexdigest())
    n_hold = max(1, round(len(data) * fraction)) if len(data) > 1 else 0
    hold, keep = sorted(ranked[:n_hold]), sorted(ranked[n_hold:])
    pick = lambda idx: CachedDataset(data.images[idx], data.masks[idx], [data.ids[i] for i in idx])  # noqa: E731
    return pick(keep), pick(hold)
