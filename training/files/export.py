"""Exporting one reviewed case: the mask, the maps and a sidecar beside each other in a folder.

Not a dataset layout (that is :mod:`training.corrections.store`): the files a
user keeps or hands on, named as ``mlffm segment`` names its outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data.datasets import safe_id
from ..data.imageio import check_writable, write_json, write_png, write_tiff
from .outputs import one_line

EXPORT_SUFFIXES = ("_segmentation.png", "_probability.tif", "_uncertainty.tif", ".json")


class ExportError(OSError):
    """An export that could not be written (a full disk, a read-only drive): one line naming the file or folder."""


def _failed(path: Path, err: OSError) -> ExportError:
    return ExportError(f"{one_line(path)}: cannot be written ({err.strerror or type(err).__name__}); the export is not complete")


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
    ``<stem>.json`` sidecar. Refuses before writing anything if any exists,
    unless ``overwrite``: then the case's earlier export is replaced whole
    (a map this export has not is removed, so the files match the sidecar).

    ``folder`` may be made, but only its last level: FileNotFoundError (one
    line) when its parent does not exist, so an export to a drive unplugged
    since it was chosen is refused, never written to a path made anew on
    another disk. NotADirectoryError (one line) when ``folder`` is a file;
    :class:`ExportError` (an OSError, one line naming the file) when a
    write fails."""
    folder = Path(folder)
    if not safe_id(stem):
        raise ValueError(f"unsafe output name {stem!r}")
    if not folder.exists() and not folder.parent.is_dir():
        raise FileNotFoundError(
            f"{one_line(folder)}: cannot export there: its parent folder {one_line(folder.parent)} does not exist "
            "(a drive unplugged or a folder moved?); choose the folder again"
        )
    targets = {suffix: folder / f"{stem}{suffix}" for suffix in (*EXPORT_SUFFIXES, "_samples.tif")}
    optional = {"_probability.tif": probability, "_uncertainty.tif": uncertainty, "_samples.tif": samples}
    wanted = [p for s, p in targets.items() if optional.get(s, True) is not None]
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{one_line(folder)}: not a folder (a file of that name is there); choose a folder to export to")
    check_writable(wanted, overwrite)
    path = folder
    try:
        folder.mkdir(exist_ok=True)  # the last level only: its parent exists
        path = targets["_segmentation.png"]
        write_png(path, mask.astype(np.uint8) * 255)
        for suffix, array, dtype in (("_probability.tif", probability, np.float32), ("_uncertainty.tif", uncertainty, np.float32), ("_samples.tif", samples, np.uint8)):
            if array is not None:
                path = targets[suffix]
                write_tiff(path, array.astype(dtype))
        if overwrite:  # an earlier export's map that this one has not: the export replaced is replaced whole
            for stale in set(targets.values()) - set(wanted):
                path = stale
                stale.unlink(missing_ok=True)
        path = targets[".json"]
        write_json(path, {**record, "outputs": [p.name for p in wanted]})
    except OSError as err:
        raise _failed(path, err) from None
    return wanted
