"""A folder's images as the Cases tab lists them: one case per image, sorted by name, and a line for each left out."""

from __future__ import annotations

from pathlib import Path

from training.corrections.store import case_id_for
from training.data.imageio import IMAGE_SUFFIXES, is_image_file
from training.data.mask_files import derived_from
from training.files.outputs import one_line

def list_folder(folder: str | Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """A folder's images as (case id, path), sorted by name, and one line for each image left out.

    Raises ValueError (one line) when the folder itself cannot be listed. An
    image is left out, and the rest are listed, when no safe case id can be
    made from its name (too long, not UTF-8) or when its case id is also an
    earlier image's: a case id holds one stored correction, so the first
    image in sorted order keeps it (``a.jpg`` before ``a.png``) and the other
    is skipped until one is renamed. A file named as the mask or a map of an
    image beside it (``x_segmentation.png``, ``x_probability.tif`` by
    :func:`training.data.mask_files.derived_from`: what Export or ``mlffm
    segment`` writes into the folder, or a clinic's reference mask, ``x_mask.jpg``
    in JPEG too) is no case: it is skipped, named in a line after the others. Subfolders are not read; one line names them.
    """
    folder = Path(folder)
    try:
        if not folder.is_dir():
            raise ValueError(f"{one_line(folder)}: not a folder")
        entries = sorted(folder.iterdir())
    except OSError as err:
        raise ValueError(f"{one_line(folder)}: cannot be listed ({err.strerror or type(err).__name__})") from None
    listing: list[tuple[str, Path]] = []
    owners: dict[str, Path] = {}
    skipped: list[str] = []
    derived: list[str] = []
    ids = {case_id_or_none(path): path for path in reversed(entries) if path.suffix.lower() in IMAGE_SUFFIXES}  # the first file keeps an id
    known = frozenset(ids)  # one set for every file's question (derived_from indexes it once)
    subfolders = [p.name for p in entries if not p.name.startswith(".") and p.suffix.lower() not in IMAGE_SUFFIXES and _is_real_folder(p)]
    for path in entries:
        name = one_line(path.name)
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            if not is_image_file(path):
                continue
        except OSError as err:
            skipped.append(f"{name}: skipped, it cannot be read ({err.strerror or type(err).__name__})")
            continue
        try:
            case_id = case_id_for(path)
        except ValueError:
            skipped.append(f"{name}: skipped, no safe case id can be made from its name (too long, not UTF-8, or holding a control character); rename it")
            continue
        owner = derived_from(case_id, path.suffix, known, jpeg=True)  # x_mask.jpg too, as a dataset tree takes it
        if owner is not None:
            derived.append(f"{name}: skipped, named as the mask or a map of {one_line(ids[owner].name)} beside it "
                           "(a reference mask, an export's or mlffm segment's), not a case")
            continue
        if case_id in owners:
            skipped.append(f"{name}: skipped, its case id '{case_id}' is also {one_line(owners[case_id].name)}'s; rename one")
            continue
        owners[case_id] = path
        listing.append((case_id, path.absolute()))  # a case's source is its file's absolute path (a folder "." too)
    if subfolders:  # a clinic's folder of per-patient folders: said, so an empty list is not a mystery
        shown = ", ".join(one_line(n) for n in subfolders[:3]) + (", ..." if len(subfolders) > 3 else "")
        skipped.append(f"{len(subfolders)} subfolder{'s' if len(subfolders) > 1 else ''} not read ({shown}): open each as its own folder")
    return listing, skipped + derived


def _is_real_folder(path: Path) -> bool:
    """A folder that is not a link to one (a link loop is never followed)."""
    try:
        return path.is_dir() and not path.is_symlink()
    except OSError:
        return False


def case_id_or_none(path: Path) -> str | None:
    try:
        return case_id_for(path)
    except ValueError:
        return None
