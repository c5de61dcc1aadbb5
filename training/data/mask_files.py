"""Which file in ``masks/`` is a case's mask: the names and types other datasets use, in one order.

A case ``<id>`` takes the first of ``<id><name><type>`` for the names of
:data:`MASK_NAMES` (plain, ISIC's ``_segmentation``, PH2's ``_lesion``,
``_mask``) and the types of :data:`MASK_SUFFIXES` (every name in a lossless
type before any JPEG). Names are compared in Unicode's composed form and,
where one file alone fits, regardless of letter case; a name that is itself
another image's mask name is never taken.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection
from pathlib import Path

MASK_NAMES = ("", "_segmentation", "_lesion", "_mask")
"""What may follow a case id in its mask's file name: ISIC's ``_segmentation``, PH2's ``_lesion``, a plain ``_mask``."""
LOSSLESS_MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".gif")
JPEG_MASK_SUFFIXES = (".jpg", ".jpeg")
MASK_SUFFIXES = LOSSLESS_MASK_SUFFIXES + JPEG_MASK_SUFFIXES
"""A mask's file types: every name in a lossless type first, then JPEG (some datasets ship masks as JPEG; its
smeared edge is cut at half the range: 200 ISIC masks saved at quality 50 read with Dice >= 0.99999 against their
PNGs). So ``<id>_segmentation.png`` wins over a ``<id>.jpg`` that may be a copy of the photo."""


DERIVED_MAP_NAMES = ("_probability", "_uncertainty", "_samples")
"""What follows an image's id in the names of the TIFF maps an export or ``mlffm segment`` writes beside its mask."""


JPEG_MASK_NAMES = ("_segmentation", "_mask")
"""The mask names a dataset tree takes in JPEG too (``x_mask.jpg``): never a photo's, unlike ``x_lesion.jpg``."""


def derived_from(case_id: str, suffix: str, image_ids: Collection[str | None], jpeg: bool = False) -> str | None:
    """The id in ``image_ids`` of the image whose mask or map a file of id ``case_id`` and type ``suffix`` is named
    as, else None: ``<id><name>`` for the names of :data:`MASK_NAMES` in a lossless mask type (``x_segmentation.png``
    is image ``x``'s mask, as :func:`find_mask` takes it), or ``<id>_probability.tif`` (and the other
    :data:`DERIVED_MAP_NAMES`). A JPEG is never taken: ``x_lesion.jpg`` beside ``x.jpg`` may be a second photo.
    Letter case is ignored where one image alone fits (``IMG_0001_MASK.PNG`` of ``IMG_0001.JPG``), as :func:`find_mask` does.
    ``jpeg``: a dataset tree's rule, where a JPEG named with :data:`JPEG_MASK_NAMES` is a mask too."""
    suffix = suffix.lower()
    names = [name for name in MASK_NAMES if name] if suffix in LOSSLESS_MASK_SUFFIXES else []
    names += list(JPEG_MASK_NAMES) if jpeg and suffix in JPEG_MASK_SUFFIXES else []
    names += list(DERIVED_MAP_NAMES) if suffix in (".tif", ".tiff") else []
    for name in names:
        owner = case_id[: len(case_id) - len(name)]
        if not (case_id.lower().endswith(name) and owner and owner != case_id):
            continue
        if owner in image_ids:
            return owner
        fits = _by_lower_case(image_ids if isinstance(image_ids, frozenset) else frozenset(image_ids)).get(owner.lower(), ())
        if len(fits) == 1:  # only where one image alone fits
            return fits[0]
    return None


def mask_files(masks_dir: Path) -> dict[str, list[Path]]:
    """The files of ``masks/`` by lower-cased name (one listing; ``.PNG`` and ``.png`` are found alike)."""
    found: dict[str, list[Path]] = {}
    try:
        entries = list(masks_dir.iterdir()) if masks_dir.is_dir() else []
    except OSError:
        return found
    for path in entries:
        if not path.name.startswith("."):
            found.setdefault(_nfc(path.name).lower(), []).append(path)
    return found


_LAST_INDEX: tuple = (None, {})
"""(the set of ids last asked about, its index by lower case): callers ask of one set for every file they look at."""


def _by_lower_case(image_ids: frozenset) -> dict[str, tuple[str, ...]]:
    """The ids of ``image_ids`` by their lower-cased form, built once per set however many files are asked about (a
    tree of 5,000 photos with masks named in another letter case took 4.3 s, looking at every id for every file). The
    set is known by identity: comparing two equal sets of thousands of ids would cost as much as the look it saves."""
    global _LAST_INDEX
    last = _LAST_INDEX  # read once: another thread may replace it meanwhile
    if last[0] is not image_ids:
        index: dict[str, list[str]] = {}
        for i in image_ids:
            if i is not None:
                index.setdefault(i.lower(), []).append(i)
        last = _LAST_INDEX = (image_ids, {key: tuple(ids) for key, ids in index.items()})
    return last[1]


def find_mask(
    masks: dict[str, list[Path]], case_id: str, image_ids: set[str] | frozenset[str] = frozenset(), stem: str | None = None
) -> Path | None:
    """The case's mask: ``<id><name><type>`` for the names of :data:`MASK_NAMES` and types of :data:`MASK_SUFFIXES`, in that order.

    A file name is matched exactly first; ignoring letter case only when one file alone matches (``A.png`` and
    ``a.png`` are two masks) and it is not exactly another image's mask name (``Lesion.png`` is image
    ``Lesion``'s, never image ``lesion``'s). ``<id><name>`` that is itself an image's id (an image ``mole_lesion``) is that
    image's mask, never this one's. ``stem``: the image file's own stem; where masks named in two Unicode forms
    both match, the one written like it wins (``Müller`` composed and decomposed are two files), and none if none is.
    """
    for types in (LOSSLESS_MASK_SUFFIXES, JPEG_MASK_SUFFIXES):  # a JPEG only where no name has a lossless mask
        for name in MASK_NAMES:
            if name and f"{case_id}{name}" in image_ids:
                continue
            for suffix in types:
                wanted = f"{case_id}{name}{suffix}"
                candidates = masks.get(wanted.lower(), [])
                exact = [p for p in candidates if _nfc(p.name) == wanted]
                if len(exact) > 1:  # the same name in two Unicode forms: only the image's own spelling
                    exact = [p for p in exact if stem is not None and p.name == f"{stem}{name}{suffix}"] or [None]
                chosen = exact[0] if exact else (candidates[0] if len(candidates) == 1 else None)
                if chosen is not None and not exact and _names_another_image(chosen.name, suffix, case_id, image_ids):
                    chosen = None  # image "lesion" must not take "Lesion.png", the mask of image "Lesion"
                if chosen is None and exact == [None]:
                    return None
                if chosen is not None and chosen.is_file():
                    return chosen
    return None


def other_masks(masks: dict[str, list[Path]], case_id: str, chosen: Path) -> list[str]:
    """Names of files besides ``chosen`` that :func:`find_mask` could have taken for ``case_id`` (``a.png`` beside
    ``a_segmentation.png``): one mask is used, and the others are worth a word."""
    names = []
    for name in MASK_NAMES:
        for suffix in MASK_SUFFIXES:
            for path in masks.get(f"{case_id}{name}{suffix}".lower(), []):
                if path != chosen and _nfc(path.name).lower() == f"{case_id}{name}{suffix}".lower():
                    names.append(path.name)
    return sorted(names)


def _nfc(name: str) -> str:
    """``name`` in Unicode's composed form (NFC), so an id typed on one system finds a file named on another."""
    try:
        return unicodedata.normalize("NFC", name)
    except (TypeError, ValueError):  # a name that is not valid UTF-8 (surrogates) stays as it is
        return name


def unread_mask_files(masks: dict[str, list[Path]], case_id: str) -> str:
    """'; masks/<id>.webp is of a type not read' for files that look like the case's mask in another type, else ''."""
    stems = {f"{case_id}{name}".lower() for name in MASK_NAMES}
    others = sorted(
        p.name for key, paths in masks.items() for p in paths
        if key.rsplit(".", 1)[0] in stems and p.suffix.lower() not in MASK_SUFFIXES  # a readable type was left out for its own reason
    )
    return f"; masks/{others[0]} is of a type not read (convert it to PNG)" if others else ""


def _names_another_image(file_name: str, suffix: str, case_id: str, image_ids: set[str] | frozenset[str]) -> bool:
    """Whether ``file_name`` is the mask name of an image other than ``case_id``: that image's id letter case and all,
    the mask name in any letter case (``IMG_0001_MASK.PNG`` is image ``IMG_0001``'s, as :func:`derived_from` takes it)."""
    stem = file_name[: len(file_name) - len(suffix)]
    for name in MASK_NAMES:
        owner = stem[: len(stem) - len(name)] if name and stem.lower().endswith(name) else (stem if not name else None)
        if owner is not None and owner != case_id and owner in image_ids:
            return True
    return False
