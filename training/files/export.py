"""Exporting one reviewed case: the mask, the maps and a sidecar beside each other in a folder.

Not a dataset layout (that is :mod:`training.corrections.store`): the files a
user keeps or hands on, named as ``mlffm segment`` names its outputs.

A case's export is a set (mask, maps, sidecar) that is written whole or not
at all: every file is encoded in memory, then written to a hidden temporary
``.mlffm-<random>.tmp`` in the folder and flushed; only when all of them are
on disk are they renamed into place, the sidecar last. A failure before that
(a full disk, a read-only drive) removes the temporaries and leaves the
folder as it was: an earlier export of the case untouched, no orphan file.
While the new files are renamed in, the earlier export's files are moved
aside (the old sidecar first, so it never describes a half-replaced set),
and a failure there moves them back; they are removed once the new sidecar
is in place. Only a kill within those few renames can leave the case
without a sidecar (its earlier files then lie in hidden ``.mlffm-*.tmp``).

Two writers of one case (two annotators exporting into one shared folder)
never meet: an export holds the case's lock ``.<stem>.export.lock``,
created with ``O_EXCL`` (:class:`training.files.outputs.ExclusiveLock`),
from before it looks at the folder until its sidecar is in place; a second
export of the case meanwhile is refused in one line. A lock left by a
killed process on this machine is taken over.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from model.files.checkpoint import remove_quietly, write_temporary

from ..data.datasets import safe_id
from ..data.imageio import check_writable, encode_json, encode_png, encode_tiff
from .file_names import SHORT_TEMPORARY_PREFIX
from .outputs import ExclusiveLock, LockedError, lock_path_for, one_line

EXPORT_SUFFIXES = ("_segmentation.png", "_probability.tif", "_uncertainty.tif", ".json")


class ExportError(OSError):
    """An export that could not be written (a full disk, a read-only drive): one line naming the file or folder."""


def _failed(path: Path, err: OSError) -> ExportError:
    return ExportError(f"{one_line(path)}: cannot be written ({err.strerror or type(err).__name__}); the export is not complete")


def existing_files(
    folder: str | Path, stem: str, probability: bool, uncertainty: bool, samples: bool = False
) -> tuple[list[Path], list[Path]]:
    """The files already in ``folder`` that :func:`export_case` with ``overwrite`` would touch, for the case's
    files it writes (``probability``, ``uncertainty``, ``samples``: whether it has those maps) and in the order
    it writes them: ``(replaced, removed)``. Removed: a map there (an earlier export's, ``mlffm segment``'s
    ``<stem>_samples.tif``) that this export has not, which the new sidecar would not describe."""
    folder = Path(folder)
    has = {"_segmentation.png": True, "_probability.tif": probability, "_uncertainty.tif": uncertainty, "_samples.tif": samples, ".json": True}
    there = {suffix: folder / f"{stem}{suffix}" for suffix in has if os.path.lexists(folder / f"{stem}{suffix}")}
    _refuse_folders(there.values())
    return [p for s, p in there.items() if has[s]], [p for s, p in there.items() if not has[s]]


def _refuse_folders(paths) -> None:
    """IsADirectoryError (one line) for a folder where an export's file goes: an export replaces files, never a folder."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            raise IsADirectoryError(f"{one_line(path)}: is a folder, where the export writes a file; move it or choose another export folder")


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
    ``<stem>.json`` sidecar, all or none (see the module's docstring).
    Refuses before writing anything if any exists, unless ``overwrite``:
    then the case's earlier export is replaced whole (a map this export has
    not is removed, so the files match the sidecar).

    ``folder`` may be made, but only its last level: FileNotFoundError (one
    line) when its parent does not exist, so an export to a drive unplugged
    since it was chosen is refused, never written to a path made anew on
    another disk. NotADirectoryError (one line) when ``folder`` is a file;
    :class:`ExportError` (an OSError, one line naming the file) when a
    write fails, with the folder left as it was;
    :class:`training.files.outputs.LockedError` (an OSError, one line) while
    another process exports the same case into the folder; IsADirectoryError
    (one line) where a folder holds the name of one of the case's files."""
    folder = Path(folder)
    if not safe_id(stem):
        raise ValueError(f"unsafe output name {stem!r}")
    if not folder.exists() and not folder.parent.is_dir():
        raise FileNotFoundError(
            f"{one_line(folder)}: cannot export there: its parent folder {one_line(folder.parent)} does not exist "
            "(a drive unplugged or a folder moved?); choose the folder again"
        )
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{one_line(folder)}: not a folder (a file of that name is there); choose a folder to export to")
    targets = {suffix: folder / f"{stem}{suffix}" for suffix in (*EXPORT_SUFFIXES, "_samples.tif")}
    encoded = {targets["_segmentation.png"]: encode_png(mask.astype(np.uint8) * 255)}  # all encoded before anything is written
    for suffix, array, dtype in (("_probability.tif", probability, np.float32), ("_uncertainty.tif", uncertainty, np.float32), ("_samples.tif", samples, np.uint8)):
        if array is not None:
            encoded[targets[suffix]] = encode_tiff(array.astype(dtype))
    wanted = [*encoded, targets[".json"]]
    encoded[targets[".json"]] = encode_json({**record, "outputs": [p.name for p in wanted]})  # the sidecar last
    check_writable(wanted, overwrite)
    lock = ExclusiveLock(lock_path_for(folder / f"{stem}.export"), f"an export of {stem}")
    try:
        folder.mkdir(exist_ok=True)  # the last level only: its parent exists
        lock.acquire()
    except LockedError:
        raise
    except OSError as err:
        raise _failed(folder, err) from None
    try:
        _write_set(folder, encoded, wanted, targets, overwrite)
    finally:
        lock.release()
    return wanted


def _write_set(folder: Path, encoded: dict[Path, bytes], wanted: list[Path], targets: dict[str, Path], overwrite: bool) -> None:
    """Under the case's lock: refuse an existing target (without ``overwrite``: another export may have made it since it
    was looked at), write every file to a temporary, then :func:`_commit` them; ExportError naming the file on a failure."""
    check_writable(wanted, overwrite)
    _refuse_folders(targets.values())
    stale = [p for p in targets.values() if p not in encoded and os.path.lexists(p)] if overwrite else []
    temporaries: dict[Path, Path] = {}
    path = folder
    try:
        for path, data in encoded.items():
            temporaries[path] = write_temporary(folder, data, SHORT_TEMPORARY_PREFIX)
        path = folder
        _commit(folder, temporaries, stale)
    except OSError as err:
        raise _failed(path, err) from None
    finally:
        for temporary in temporaries.values():  # none left once committed; all of them after a failure
            remove_quietly(temporary)


def _commit(folder: Path, temporaries: dict[Path, Path], stale: list[Path]) -> None:
    """Rename each written temporary onto its target (the sidecar, the last key, last), moving the files there,
    and ``stale`` ones, aside first; any failure moves every file back. The moved-aside files are removed at the end."""
    sidecar = list(temporaries)[-1]
    moved: list[tuple[Path, Path]] = []  # (target, where its earlier file lies meanwhile)
    placed: list[Path] = []

    def move_aside(target: Path) -> None:
        if os.path.lexists(target):
            aside = folder / f"{SHORT_TEMPORARY_PREFIX}{uuid.uuid4().hex[:12]}.tmp"
            os.replace(target, aside)
            moved.append((target, aside))

    try:
        move_aside(sidecar)  # first: from here on no sidecar describes a half-replaced set
        for target in stale:
            move_aside(target)
        for target, temporary in temporaries.items():
            if target != sidecar:
                move_aside(target)
            os.replace(temporary, target)
            placed.append(target)
    except BaseException:
        for target in reversed(placed):
            remove_quietly(target)
        for target, aside in reversed(moved):
            try:
                os.replace(aside, target)
            except OSError:
                pass
        raise
    for _, aside in moved:
        remove_quietly(aside)
