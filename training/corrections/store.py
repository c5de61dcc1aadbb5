"""The corrections store: reviewed cases in the training layout (exports are in :mod:`training.files.export`).

The corrections store is a dataset folder in the one layout the training
module reads::

    STORE/images/<id>.png   the image, lossless
    STORE/masks/<id>.png    the accepted mask, 0/255
    STORE/meta/<id>.json    the record: source, image hash, checkpoint, settings, edits, time, annotator,
                            and ``files``: the SHA-256 of the two files above

A case is all or nothing. :meth:`CorrectionsStore.accept` holds the store's
lock (``STORE/.store.lock``, so two processes accepting the same case take
turns), writes the case's three files into ``STORE/.staging/<id>/``, then
commits it by writing ``COMMIT`` there, and only then renames the files
into place. A writer killed before the commit leaves the old case
untouched (its staging folder is discarded); one killed after it is rolled
forward by the next writer or reader. Readers (:meth:`check`, ``count``,
``mlffm finetune``) verify the hashes: a case with a damaged record, a
missing file or a file that does not match its record is reported and left
out. Nothing is replaced unless the caller says ``overwrite=True``.

Readers open only regular files (a FIFO would block, a device never end),
read a record only up to :data:`record_files.MAX_RECORD_BYTES` and hash an image or mask
in chunks up to :data:`record_files.MAX_STORE_FILE_BYTES`: anything else is left out
with its reason, like a damaged case.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import unicodedata
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from model.files.checkpoint import atomic_write_bytes
from model.inputs.preprocess import to_float_rgb

from ..data.datasets import Case, DatasetListing, has_control_character, list_cases, safe_id
from ..data.imageio import check_writable, encode_json, encode_png
from ..data.masks import AmbiguousMaskError, check_not_outline
from ..files.outputs import ExclusiveLock, display
from .record_files import _file_sha256, _read_record, _Unusable, _why

STAGING = ".staging"
LOCK_WAIT_S = 60.0  # an accept takes well under a second; a longer wait means a stuck writer


def case_id_for(source: str | Path, whole_name: bool = False) -> str:
    """A safe store id from a source file name: its stem with path-like characters replaced, in Unicode's composed
    form (NFC), as dataset ids are (a folder zipped on a Mac names files in NFD).

    ``whole_name``: ``source`` is a name, not a file (a napari layer's): all of it counts, so
    ``lesion.left`` and ``lesion.right`` are two cases. ValueError for a name that makes no safe id.
    """
    stem = (str(source) if whole_name else Path(str(source)).stem) or "case"
    stem = unicodedata.normalize("NFC", stem)
    cleaned = re.sub(r"[\\/:\x00]", "_", stem).lstrip(".") or "case"
    if not safe_id(cleaned):
        shown = display(str(source))
        shown = repr(shown) if has_control_character(shown) else shown  # a newline would cut the one line
        raise ValueError(f"{shown[:120]}{'...' if len(shown) > 120 else ''}: cannot make a safe case id from this name")
    return cleaned


def image_sha256(image: np.ndarray) -> str:
    """SHA-256 of the pixel data (shape and dtype included), independent of the file encoding."""
    digest = hashlib.sha256(f"{image.shape}{image.dtype}".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def _to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """An image the model accepts as stored pixels: uint8 RGB or grey as given, anything else through
    :func:`model.inputs.preprocess.to_float_rgb` (ValueError for NaN, values out of range, other dtypes or shapes)."""
    rgb = to_float_rgb(image)
    if image.dtype == np.uint8 and (image.ndim == 2 or image.shape[2] == 3):
        return image
    return (rgb * 255).round().astype(np.uint8)


def _as_mask(mask: np.ndarray) -> np.ndarray:
    """``mask`` as (H, W) bool; ValueError unless boolean or numbers that are all 0 or 1."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    if mask.dtype == np.bool_:
        return mask
    if mask.dtype.kind not in "uif" or not np.isin(mask, (0, 1)).all():
        raise ValueError(f"mask must be boolean or 0/1, got {mask.dtype} values other than 0 and 1")
    return mask.astype(bool)


@dataclass(frozen=True)
class StoreCheck:
    """The verified cases of a store and one line for each case left out."""

    ids: tuple[str, ...]
    problems: tuple[str, ...]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class CorrectionsStore:
    """A folder of accepted corrections, readable by ``mlffm finetune``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def paths(self, case_id: str) -> tuple[Path, Path, Path]:
        """(image, mask, record) of a case. New cases are named in Unicode's composed form (NFC); a case recorded
        under another form of its name (an earlier version kept a Mac folder's decomposed names) is found as it is."""
        if not safe_id(case_id):
            raise ValueError(f"unsafe case id {case_id!r}: it would write outside {self.root}")
        name = self._recorded_name(case_id)
        return self.root / "images" / f"{name}.png", self.root / "masks" / f"{name}.png", self.root / "meta" / f"{name}.json"

    def _recorded_name(self, case_id: str) -> str:
        """The form of ``case_id`` its record has on disk: as given, else NFC, else any form equal to it in NFC."""
        composed = unicodedata.normalize("NFC", case_id)
        meta = self.root / "meta"
        if (meta / f"{case_id}.json").is_file() or case_id.isascii():
            return case_id if (meta / f"{case_id}.json").is_file() else composed
        if (meta / f"{composed}.json").is_file() or not meta.is_dir():
            return composed
        try:
            return next((p.stem for p in meta.glob("*.json") if unicodedata.normalize("NFC", p.stem) == composed), composed)
        except OSError:
            return composed

    def source_of(self, case_id: str) -> str | None:
        """The ``source`` a stored case's record names (the file it was accepted from), or None if none can be read."""
        return self.origin_of(case_id)[0]

    def origin_of(self, case_id: str) -> tuple[str | None, str | None]:
        """(``source``, ``image_sha256``) of a stored case's record: the file it was accepted from and its pixels' hash
        (:func:`image_sha256`); None for what cannot be read."""
        try:
            record = _read_record(self.paths(case_id)[2])
        except (_Unusable, ValueError):
            return None, None
        if not isinstance(record, dict):
            return None, None
        source, pixels = record.get("source"), record.get("image_sha256")
        return (source if isinstance(source, str) else None), (pixels if isinstance(pixels, str) else None)

    def has(self, case_id: str) -> bool:
        return safe_id(case_id) and self.paths(case_id)[2].is_file()

    def count(self) -> int:
        """How many cases are complete and verified (see :meth:`check` for the ones left out)."""
        return len(self.check().ids)

    def _lock(self) -> ExclusiveLock:
        return ExclusiveLock(self.root / ".store.lock", f"the corrections store {display(self.root)}", wait=LOCK_WAIT_S)

    def accept(self, case_id: str, image: np.ndarray, mask: np.ndarray, record: dict[str, Any], overwrite: bool = False) -> Path:
        """Save image, mask and record as one unit; returns the record's path.

        ``image`` (H, W, 3) or (H, W), any dtype the model accepts; ``mask`` (H, W)
        bool (or 0/1); ValueError for anything else, before anything is written. The record gets
        the image hash, the mask's lesion pixels, the time and the files'
        hashes added. Raises FileExistsError (the case exists and not
        ``overwrite``) before anything is written.
        """
        if not isinstance(image, np.ndarray):
            raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
        case_id = unicodedata.normalize("NFC", case_id) if isinstance(case_id, str) else case_id  # as paths() names its files
        mask = _as_mask(mask)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")
        try:
            check_not_outline(mask)  # training would leave such a case out: refused now, not found out later
        except AmbiguousMaskError as err:
            raise ValueError(f"case {case_id}: {err}") from None
        if not isinstance(record, dict):
            raise ValueError(f"record must be a dict, got {type(record).__name__}")
        image_path, mask_path, meta_path = self.paths(case_id)
        image_png = encode_png(_to_uint8_rgb(image))
        mask_png = encode_png(mask.astype(np.uint8) * 255)
        full = {
            **record,
            "id": case_id,  # the record's own "id", if any, cannot rename the case
            "image_sha256": image_sha256(image),
            "lesion_pixels": int(mask.sum()),
            "accepted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": {"image": _sha256(image_png), "mask": _sha256(mask_png)},
        }
        record_json = encode_json(full)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock():
            self._recover()
            check_writable([image_path, mask_path, meta_path], overwrite)
            staging = self.root / STAGING / case_id
            staging.mkdir(parents=True, exist_ok=True)
            for name, data in (("image.png", image_png), ("mask.png", mask_png), ("record.json", record_json)):
                atomic_write_bytes(staging / name, data)
            atomic_write_bytes(staging / "COMMIT", b"commit\n")  # from here on the new case wins
            self._apply(case_id)
        return meta_path

    def _apply(self, case_id: str) -> None:
        """Move a committed staging folder's files into place (record last) and remove the folder; safe to repeat."""
        staging = self.root / STAGING / case_id
        image_path, mask_path, meta_path = self.paths(case_id)
        for name, target in (("image.png", image_path), ("mask.png", mask_path), ("record.json", meta_path)):
            source = staging / name
            if source.is_file() and not source.is_symlink():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, target)
        shutil.rmtree(staging, ignore_errors=True)

    def _recover(self) -> list[str]:
        """Finish committed writes and discard uncommitted ones that a killed writer left (lock held).

        Symbolic links are never followed: ValueError (one line) when the
        staging folder itself is one, and a link inside it is removed, not
        what it points to, so nothing outside the store is moved or deleted.
        """
        done = []
        staging_root = self.root / STAGING
        if staging_root.is_symlink():
            raise ValueError(f"{display(staging_root)}: is a symbolic link, not the store's own folder; remove the link (nothing was changed)")
        if not staging_root.is_dir():
            return done
        for folder in sorted(staging_root.iterdir()):
            if folder.is_symlink() or not folder.is_dir():
                folder.unlink(missing_ok=True)
            elif safe_id(folder.name) and (folder / "COMMIT").is_file() and not (folder / "COMMIT").is_symlink():
                self._apply(folder.name)
                done.append(f"{display(folder)}: completed the write of case {folder.name!r} that a killed process had committed")
            else:
                shutil.rmtree(folder, ignore_errors=True)
        return done

    def check(self) -> StoreCheck:
        """Verify every case: a readable record naming it, both files present and matching the record's hashes.

        Records written before hashes were kept (no ``files``) are checked
        for presence only. Images without a record are left out too (an
        unfinished or hand-copied case).
        """
        if not self.root.is_dir():
            return StoreCheck((), ())
        lock = self._lock()
        try:
            lock.acquire()
        except OSError:  # a read-only store: nothing to recover, verify as it is
            return self._verify()
        try:
            self._recover()
            return self._verify()
        finally:
            lock.release()

    def _verify(self) -> StoreCheck:
        good, problems = [], []
        meta_dir = self.root / "meta"
        records = sorted(meta_dir.glob("*.json")) if meta_dir.is_dir() else []
        for meta_path in records:
            case_id = meta_path.stem
            reason = self._problem(case_id, meta_path)
            if reason is None:
                good.append(case_id)
            else:
                problems.append(f"{display(meta_path)}: case {case_id!r} left out: {reason}")
        recorded = {p.stem for p in records}
        images_dir = self.root / "images"
        for image_path in sorted(images_dir.glob("*.png")) if images_dir.is_dir() else []:
            if image_path.stem not in recorded and not image_path.name.startswith("."):
                problems.append(f"{display(image_path)}: left out: no record meta/{display(image_path.stem)}.json")
        return StoreCheck(tuple(good), tuple(problems))

    def _problem(self, case_id: str, meta_path: Path) -> str | None:
        if not safe_id(case_id):
            return "unsafe id"
        try:
            record = _read_record(meta_path)
        except _Unusable as err:
            return str(err)
        if not isinstance(record, dict) or not isinstance(record.get("id"), str) or unicodedata.normalize("NFC", record["id"]) != unicodedata.normalize("NFC", case_id):
            return "the record is damaged (not a record of this case)"
        image_path, mask_path, _ = self.paths(case_id)
        hashes = record.get("files")
        for key, path in (("image", image_path), ("mask", mask_path)):
            name = f"{path.parent.name}/{path.name}"
            try:
                digest = _file_sha256(path, f"its {key} {name}")
            except FileNotFoundError:
                return f"its {key} {name} is missing"
            except _Unusable as err:
                return str(err)
            except (OSError, MemoryError) as err:
                return f"its {key} {name} cannot be read ({_why(err)})"
            if hashes is None:
                continue  # a record from before hashes were kept
            if not isinstance(hashes, dict) or digest != hashes.get(key):
                return f"its {key} {name} does not match the record (SHA-256 differs)"
        return None

    def verified_listing(self, listing: DatasetListing) -> DatasetListing:
        """``listing`` (of this store's folder) without the cases :meth:`check` leaves out, with its reasons added."""
        report = self.check()
        recorded = {unicodedata.normalize("NFC", i): i for i in report.ids}  # a record named in NFD by an older version: its NFC id
        # the files verified, whatever else the listing chose for an id (an images/<id>.jpg beside images/<id>.png)
        cases = tuple(Case(c.case_id, *self.paths(recorded[c.case_id])[:2]) for c in listing.cases if c.case_id in recorded)
        return replace(listing, cases=cases, problems=(*listing.problems, *report.problems), skipped=(*listing.skipped, *report.problems))


def is_store(root: str | Path) -> bool:
    """Whether ``root`` is a corrections store (it has records, ``meta/``) rather than a plain dataset folder."""
    return (Path(root) / "meta").is_dir()


def usable_cases(root: str | Path, split: str | None = None) -> DatasetListing:
    """The cases of DATA as ``mlffm finetune`` and ``mlffm adapt`` use them.

    Every image/mask pair of ``root`` (of ``split``); for a corrections store
    only the complete cases whose files match their records, with one line
    in ``problems`` for each case left out.
    """
    listing = list_cases(root, split)
    return CorrectionsStore(root).verified_listing(listing) if is_store(root) else listing


def report_problems(listing: DatasetListing, limit: int = 10, file=None) -> None:
    """Print the listing's notes, then its first ``limit`` problems as warnings on stderr, and how many more there are."""
    out = sys.stderr if file is None else file
    for line in listing.notes:
        print(f"note: {line}", file=out)
    for line in listing.problems[:limit]:
        print(f"warning: {line}", file=out)
    if len(listing.problems) > limit:
        print(f"warning: ... and {len(listing.problems) - limit} more problems", file=out)
