"""What ``mlffm segment`` reads: the images named on its command line, and those of the folders named.

A folder's own images are read; its subfolders only with ``--recursive``
(hidden ones and links to folders never, the run's own ``-o`` never, at most
:data:`training.data.dataset_tree.MAX_DEPTH` folders down), each image's outputs then going to the same
relative folder under ``-o`` (``clinic/patient 1/IMG_0001.jpg`` to
``out/patient 1/IMG_0001_segmentation.png``), so photos of one name in two
patients' folders do not clash. Without ``--recursive``, one line names the
subfolders passed over. Files named like this command's outputs are passed
over (so ``-o`` may be the input folder), and so are a folder's files named as the mask of a photo beside them
(``IMG_0001_mask.png`` or ``IMG_0001_MASK.PNG`` beside ``IMG_0001.JPG``: a reference, not a photo); image files of types not read
(.webp, .heic, ...) and links, FIFOs or devices with an image's suffix are
named, one line each, and never opened.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..data.datasets import UNSUPPORTED_IMAGE_SUFFIXES
from ..data.dataset_tree import prune_subfolders
from ..data.imageio import IMAGE_SUFFIXES
from ..data.mask_files import derived_from
from ..files.outputs import one_line
from ..files.segment_case import is_output_name

@dataclass
class Inputs:
    """The images to segment and what was said about the paths.

    Attributes:
        images: image files, in the order found (each folder's sorted by name).
        subfolder: for an image found below a folder named on the command line, its folder relative to that one
            (its outputs go there under ``-o``); absent for the others.
        problems: one line per path or file not taken that counts as skipped.
        notes: lines that are said but skip nothing (subfolders passed over).
        ignored: how many files were passed over because they are named like this command's outputs.
    """

    images: list[Path] = field(default_factory=list)
    subfolder: dict[Path, Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ignored: int = 0
    masks: list[Path] = field(default_factory=list)
    """Files passed over as named the mask of a photo beside them (said in one note per folder named)."""


def collect_images(paths: list[Path], output: Path | None = None, recursive: bool = False) -> Inputs:
    """The images named directly, or found in the folders named (and, ``recursive``, below them); ``output``: the
    run's own folder, never read as input nor named as a subfolder passed over."""
    found = Inputs()
    for path in paths:
        if path.is_dir():
            before, ignored, masks = len(found.images), found.ignored, len(found.masks)
            folders = _walk(path, output, found.notes) if recursive else [path]
            for folder in folders:
                images = _scan_folder(folder, found, output, name_subfolders=not recursive)
                found.images.extend(images)
                if folder != path:
                    found.subfolder.update((image, folder.relative_to(path)) for image in images)
            passed = [one_line(p.relative_to(path)) for p in found.masks[masks:]]
            if passed:  # a clinic's reference masks beside its photos: said, not segmented
                found.notes.append(f"{one_line(path)}: {len(passed)} file{'s' if len(passed) > 1 else ''} named as the mask of a photo beside "
                                   f"{'them' if len(passed) > 1 else 'it'} not segmented ({', '.join(passed[:3])}{', ...' if len(passed) > 3 else ''})")
            if len(found.images) == before:
                outputs = " other than segment outputs" if found.ignored > ignored else ""
                below = " or below it" if recursive else ""
                found.problems.append(f"{one_line(path)}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder{below}{outputs}")
        elif path.is_file():
            found.images.append(path)
        else:
            why = _why_not_a_file(path)
            words = {"a named pipe": "a named pipe, not an image file", "a device or socket": "not a regular file or folder (a device or socket)"}
            found.problems.append(f"{one_line(path)}: {words.get(why, why)}")
    return found


def _walk(root: Path, output: Path | None, notes: list[str]) -> list[Path]:
    """``root`` and the folders below it that ``--recursive`` reads, sorted; ``notes`` names those it does not."""
    folders, passed = [], []
    unlisted = lambda err: folders.append(Path(err.filename))  # noqa: E731 - read again by _scan_folder, which names it
    for folder, subfolders, _ in os.walk(root, followlinks=False, onerror=unlisted):
        folders.append(Path(folder))
        prune_subfolders(root, Path(folder), subfolders, passed, lambda path: one_line(path.relative_to(root)),
                         lambda path: output is not None and _same_folder(path, output))
    if passed:
        notes.append(f"{one_line(root)}: {len(passed)} folder{'s' if len(passed) > 1 else ''} not looked into: "
                     + ", ".join(passed[:3]) + (", ..." if len(passed) > 3 else ""))
    return sorted(folders)


def _scan_folder(folder: Path, found: Inputs, output: Path | None, name_subfolders: bool) -> list[Path]:
    """The images of one folder; adds to ``found`` a problem for each image-like file not taken, the count of files
    named like segment outputs, and (``name_subfolders``) one note naming its subfolders, which are not read.
    Only names and ``stat`` are looked at: a FIFO is never opened, a link loop never followed further."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        found.problems.append(f"{one_line(folder)}: cannot be listed ({err.strerror or type(err).__name__})")
        return []
    images: list[Path] = []
    subfolders = []
    for path in entries:
        suffix = path.suffix.lower()
        if path.name.startswith("."):
            continue
        if suffix not in IMAGE_SUFFIXES and suffix not in UNSUPPORTED_IMAGE_SUFFIXES and path.is_dir() and not path.is_symlink():
            if output is None or not _same_folder(path, output):
                subfolders.append(path.name)
            continue
        if suffix in UNSUPPORTED_IMAGE_SUFFIXES:
            found.problems.append(f"{one_line(path)}: {suffix} images are not read; convert it to PNG, JPEG or TIFF")
        elif suffix not in IMAGE_SUFFIXES:
            continue
        elif is_output_name(path.name):
            found.ignored += 1
        elif path.is_file():
            images.append(path)
        elif not path.is_dir():  # a folder named like an image is a folder: not read, as any subfolder
            found.problems.append(f"{one_line(path)}: not a regular file ({_why_not_a_file(path)}), skipped")
    stems = frozenset(path.stem for path in images)  # a name is never its own owner: the owner is shorter
    masks = [path for path in images if derived_from(path.stem, path.suffix, stems, jpeg=True) is not None]
    if masks:  # a clinic's reference masks beside its photos: said, not segmented
        images = [path for path in images if path not in masks]
        found.masks.extend(masks)
    if subfolders and name_subfolders:  # said, not an error: a folder of cases may hold anything else
        shown = ", ".join(one_line(name) for name in subfolders[:3]) + (", ..." if len(subfolders) > 3 else "")
        found.notes.append(f"{one_line(folder)}: {len(subfolders)} subfolder{'s' if len(subfolders) > 1 else ''} not read ({shown}); "
                           "add --recursive to read them (each one's outputs go to the same subfolder of -o)")
    return images


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _why_not_a_file(path: Path) -> str:
    """What ``path`` is, being neither a folder nor a regular file, in words."""
    try:
        mode = path.stat().st_mode
    except RuntimeError:
        return "a loop of symbolic links"
    except OSError as err:
        if path.is_symlink():
            return "a symbolic link " + ("in a loop" if err.errno == 40 else "to nothing")
        return "no such file or folder" if isinstance(err, FileNotFoundError) else f"cannot be read ({err.strerror or type(err).__name__})"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    return "a device or socket"
