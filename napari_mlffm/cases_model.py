"""One case model shared by the Propose, Review and Cases widgets (Qt-free, testable without a viewer).

A *case* is one image, keyed by its store id (:func:`training.corrections.store.case_id_for`
of its source file, or of the whole layer name when there is no file). The model
keeps, per case:

* the latest proposal and the record of what made it (model, seed, steps);
* the mask under review when the case is not on screen (bool (H, W)), with
  its starting point, so stepping back restores it;
* whether it is in the corrections store (read from the store, so a case
  accepted in an earlier session is "accepted" too) and the mask it was
  accepted with.

States, in the order a review moves through them (:data:`STATES`):
``new`` (nothing yet) -> ``proposed`` (a proposal, mask untouched) ->
``edited`` (the mask differs from its start, or from the accepted mask) ->
``accepted`` (in the store, no edits since); ``unreadable`` when the file
could not be read.

A case id holds one image at a time. Two files of one name in different
folders (cameras name every session's photos IMG_0001, ...) have one id: a
case is only ever given to the file it was made for (:meth:`CaseModel.for_source`),
a file of the open folder's list keeps its id (another file with it is
refused in one line), and any other case is replaced by the newest file's.

Every change emits :attr:`CaseModel.changed` with the case id, so each widget
can refresh what it shows. Nothing here touches napari or Qt.
"""

from __future__ import annotations

import json
import os
import stat
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from psygnal import Signal

from training.data.imageio import ImageReadError, read_image
from training.corrections.store import CorrectionsStore, case_id_for
from training.data.datasets import safe_id
from training.files.outputs import one_line

from .case_folder import list_folder

STATES = ("new", "proposed", "edited", "accepted", "unreadable")


@dataclass
class Case:
    """One image under review. ``mask`` and ``start_mask`` are (H, W) bool or None."""

    case_id: str
    source: str
    proposal: Any = None  # model.Proposal
    info: dict | None = None
    mask: np.ndarray | None = None
    start: str | None = None
    start_mask: np.ndarray | None = None
    level: float | None = None  # the outline level the start mask was cut at, if the reviewer moved it
    accepted_mask: np.ndarray | None = None
    record: dict | None = None
    error: str = ""
    extra: dict = field(default_factory=dict)  # room for other sections (refine clicks, ...)

    @property
    def disagreement(self) -> float | None:
        """1 - mean pairwise Dice of the proposals (the triage score), None before proposing."""
        return float(self.proposal.disagreement) if self.proposal is not None else None

    @property
    def path(self) -> Path:
        return Path(self.source)

    @property
    def edited(self) -> bool:
        """Whether the mask under review holds painting: it differs from the start it was cut from, or a refine
        held strokes painted before it (``extra["painted"]``)."""
        if self.mask is None:
            return False
        return self.start_mask is None or not np.array_equal(self.mask, self.start_mask) or self.extra.get("painted") is not None


class CaseModel:
    """The cases of one viewer: an ordered list (a folder) plus any case proposed from a layer.

    ``store_root`` is called whenever the store is needed, so a change of the
    corrections-store setting takes effect at once.
    """

    changed = Signal(str)  # case id ("" = the list itself changed)

    def __init__(self, store_root: Callable[[], Path | str]) -> None:
        self._store_root = store_root
        self.cases: dict[str, Case] = {}
        self.order: list[str] = []  # the case list (a folder), in display order
        self.current: str | None = None  # the case on screen, if any
        self.folder: Path | None = None  # the open folder, if any
        self.skipped: list[str] = []  # one line for each of its images left out of the list
        self._sources: dict[tuple[str, str], tuple[tuple, tuple]] = {}  # (store, id) -> (record's stat, (source, image hash))
        self._away: dict[str, Case] = {}  # a file's case whose id another file of that name holds now, by the file's real path

    # ----- lookup ------------------------------------------------------
    @property
    def store(self) -> CorrectionsStore:
        return CorrectionsStore(self._store_root())

    @staticmethod
    def id_for(source: str | Path) -> str:
        return source_case_id(source)

    def case(self, source: str | Path) -> Case:
        """The case of a source file (or layer name), created as 'new' the first time.

        ValueError (one line) when no safe id can be made from it, or when its id is
        that of another file in the open folder's list; a case of another file that is
        not in the list is replaced by a new one for this file.
        """
        case_id = source_case_id(source)
        case = self._own_case(case_id, source)
        if case is None:  # new, or another file of the same name outside the list: its own case
            case = self._take_id(case_id, source)
        return case

    def _take_id(self, case_id: str, source: str | Path) -> Case:
        """Give ``case_id`` to ``source``'s case: the one it had before another file of that name took the id (a
        folder opened again after another camera session's), else a new one. The case that held the id is set aside,
        with its proposal and edits, for when its file comes back."""
        old = self.cases.get(case_id)
        if old is not None and is_file_source(old.source):
            self._away[os.path.realpath(old.source)] = old
        case = self._away.pop(os.path.realpath(source), None) if is_file_source(source) else None
        if case is None:
            case = Case(case_id, str(source))
        case.source = str(source)
        self.cases[case_id] = case
        return case

    def _own_case(self, case_id: str, source: str | Path) -> Case | None:
        """The case under ``case_id`` if it is ``source``'s, None if there is none or it is another file's outside
        the open folder's list; ValueError when it is the list's other file's."""
        case = self.cases.get(case_id)
        if case is None or same_source(case.source, source):
            return case
        if case_id in self.order:
            raise ValueError(
                f"{one_line(source)}: its case id '{case_id}' is that of {one_line(case.source)} in the open folder "
                "(one case per id: the corrections store keys cases by it); rename one of them"
            )
        return None

    def for_source(self, source: str | Path) -> Case | None:
        """The case made for this very file (or layer name), if any: never another file's of the same name."""
        try:
            case = self.cases.get(source_case_id(source))
        except ValueError:
            return None
        return case if case is not None and same_source(case.source, source) else None

    def check_source(self, source: str | Path) -> None:
        """ValueError (one line) if :meth:`case` would refuse ``source``; creates nothing."""
        self._own_case(source_case_id(source), source)

    def get(self, case_id: str) -> Case | None:
        return self.cases.get(case_id)

    def listed(self) -> list[Case]:
        return [self.cases[i] for i in self.order]

    # ----- the list ----------------------------------------------------
    def open_folder(self, folder: str | Path) -> list[Case]:
        """Make the folder's images the case list (sorted by name); keeps what is known about each case.

        All or nothing: a folder that cannot be listed raises ValueError (one
        line) and leaves the list, the current case and :attr:`folder` as
        they were. Images left out (see :func:`list_folder`) are in
        :attr:`skipped`, one line each.
        """
        listing, skipped = list_folder(folder)
        for case_id, path in listing:  # nothing can fail from here on
            case = self.cases.get(case_id)
            if case is None or not same_source(case.source, path):  # another folder's file of this name is another case
                case = self._take_id(case_id, path)
            case.source, case.error = str(path), ""  # read again when shown: a file put back is readable again
        self.order = [case_id for case_id, _ in listing]
        self.folder, self.skipped = Path(folder), skipped
        self.changed.emit("")
        return self.listed()

    def sort_most_doubtful_first(self) -> None:
        """Order the list by the proposals' disagreement, highest first; cases without a proposal last."""
        self.order.sort(key=lambda i: -(self.cases[i].disagreement if self.cases[i].disagreement is not None else -1.0))
        self.changed.emit("")

    def index_of(self, case_id: str | None) -> int | None:
        return self.order.index(case_id) if case_id in self.order else None

    # ----- state -------------------------------------------------------
    def is_accepted(self, case: Case) -> bool:
        """Whether the store holds this case: its id, accepted from this file. A record naming another file counts
        only if it holds this file's pixels (a folder moved or renamed since): another session's IMG_0001 is not it,
        and until the file's pixels are known (proposed or shown) neither is a file the record does not name."""
        try:
            origin = self._stored_origin(self.store, case.case_id)
        except (ValueError, OSError):
            return False
        if origin is None:
            return False
        other, accepted_pixels = origin
        pixels = case.extra.get("pixels")
        if not (other and is_file_source(other) and is_file_source(case.source)):
            return True
        if same_source(other, case.source):  # unless another photo was saved over the file since (both hashes known)
            return not _other_pixels(accepted_pixels, pixels)
        return accepted_pixels is not None and pixels == accepted_pixels

    def file_changed_since_accepted(self, case: Case) -> bool:
        """Whether the store's record of this case names its very file but other pixels than the file holds now
        (known once the case is proposed or shown): another photo saved over it since it was accepted."""
        try:
            origin = self._stored_origin(self.store, case.case_id)
        except (ValueError, OSError):
            return False
        if origin is None or not (origin[0] and is_file_source(origin[0]) and same_source(origin[0], case.source)):
            return False
        return _other_pixels(origin[1], case.extra.get("pixels"))

    def _stored_origin(self, store: CorrectionsStore, case_id: str) -> tuple[str | None, str | None] | None:
        """(source, image hash) of a stored case's record, read once per version of the record; None when the
        store has no record of that id (one stat answers both, as :meth:`CorrectionsStore.has` would)."""
        if not safe_id(case_id):
            return None
        try:
            info = store.paths(case_id)[2].stat()
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        known = self._sources.get((str(store.root), case_id))
        if known is None or known[0] != stamp:
            known = self._sources[(str(store.root), case_id)] = (stamp, store.origin_of(case_id))
        return known[1]

    def state(self, case: Case | str) -> str:
        """One of :data:`STATES`."""
        case = self.cases[case] if isinstance(case, str) else case
        if case.error:
            return "unreadable"
        accepted = self.is_accepted(case)
        if case.mask is not None:
            reference = case.accepted_mask if accepted and case.accepted_mask is not None else case.start_mask
            if accepted and reference is None:
                return "accepted"
            if reference is None or reference.shape != case.mask.shape or not np.array_equal(case.mask, reference):
                return "edited"
            if not accepted and case.extra.get("painted") is not None:
                return "edited"  # strokes a refine held: the refined mask holds them
        if accepted:
            return "accepted"
        return "proposed" if case.proposal is not None else "new"

    def to_propose(self, redo: bool = False) -> list[Case]:
        """The listed cases Propose all should work on: the new ones, or (``redo``) every readable one."""
        if redo:
            return [c for c in self.listed() if not c.error]
        return [c for c in self.listed() if self.state(c) == "new"]

    # ----- changes -----------------------------------------------------
    def set_proposal(self, source: str | Path, proposal, info: dict | None = None) -> Case:
        """A proposal made for a case (from any widget, a refine's too); the case's own mask, if edited, is kept,
        and one left as the old proposal drew it is forgotten, so the new proposal's is shown.

        An outline level belonged to the old proposal's probability, so it is forgotten.
        """
        case = self.case(source)
        case.proposal, case.info, case.error = proposal, dict(info or {}), ""
        case.level = None
        if isinstance(info, dict) and isinstance(info.get("image_sha256"), str):
            case.extra["pixels"] = info["image_sha256"]  # what the file held when proposed (the Cases dock compares)
        if case.mask is not None and not case.edited:  # a mask left as the old proposal drew it follows the new one
            case.mask = case.start_mask = case.start = None
        self.changed.emit(case.case_id)
        return case

    def set_error(self, source: str | Path, error: str) -> Case:
        case = self.case(source)
        case.error = error
        self.changed.emit(case.case_id)
        return case

    def set_mask(
        self, source: str | Path, mask: np.ndarray | None, start: str | None = None, start_mask: np.ndarray | None = None, level: float | None = None
    ) -> Case:
        """Remember the mask under review (e.g. as its case leaves the screen, or after a stroke).

        ``level``: the outline level ``start_mask`` was cut at (None: the model's threshold); kept with ``start_mask``.
        """
        case = self.case(source)
        case.mask = None if mask is None else np.asarray(mask).astype(bool)
        if start is not None:
            case.start = start
        if start_mask is not None:
            case.start_mask = np.asarray(start_mask).astype(bool)
            case.level = None if level is None else float(level)
        self.changed.emit(case.case_id)
        return case

    def mark_accepted(self, source: str | Path, mask: np.ndarray, record: dict | None = None) -> Case:
        """The case went into the store with this mask (call after the store write)."""
        case = self.case(source)
        self._sources.clear()  # the record was just written: read its source again
        case.accepted_mask = np.asarray(mask).astype(bool).copy()
        case.mask = case.accepted_mask.copy()
        case.record = dict(record or {})
        self.changed.emit(case.case_id)
        return case

    def stored(self, case: Case | str) -> tuple[np.ndarray, dict] | None:
        """(accepted mask (H, W) bool, record) from the corrections store, or None if the case is not there."""
        case = self.cases[case] if isinstance(case, str) else case
        if not self.is_accepted(case):
            return None
        _, mask_path, meta_path = self.store.paths(case.case_id)
        try:
            mask = read_image(mask_path)
            record = json.loads(meta_path.read_text())
        except (ImageReadError, OSError, ValueError):
            return None
        mask = mask[..., 0] if mask.ndim == 3 else mask
        case.accepted_mask = mask > 0
        case.record = record if isinstance(record, dict) else {}
        return case.accepted_mask.copy(), case.record

    def set_current(self, case_id: str | None) -> None:
        self.current = case_id
        self.changed.emit("")


def _other_pixels(accepted_pixels, pixels) -> bool:
    """Whether two image hashes, both known, differ: the file holds another photo than the one accepted from it."""
    return isinstance(accepted_pixels, str) and isinstance(pixels, str) and accepted_pixels != pixels


def is_file_source(source: str | Path) -> bool:
    """Whether a case's source is a file's path, not a layer's name: the reader and the Cases list record
    absolute paths, so a relative text (``IMG_0001.png``, ``a/b``) is a layer's name."""
    return os.path.isabs(str(source))


def source_case_id(source: str | Path) -> str:
    """The case id of a source: a file's stem, or the whole of a layer's name (``lesion.left`` is not ``lesion``)."""
    return case_id_for(source, whole_name=not is_file_source(source))


def same_source(a: str | Path, b: str | Path) -> bool:
    """Whether two sources are one image: the same name, or paths of the same file."""
    if str(a) == str(b):
        return True
    return is_file_source(a) and is_file_source(b) and os.path.realpath(a) == os.path.realpath(b)


_MODELS: "weakref.WeakKeyDictionary[Any, CaseModel]" = weakref.WeakKeyDictionary()


def for_viewer(viewer, store_root: Callable[[], Path | str] | None = None) -> CaseModel:
    """The one case model of a viewer, created on first use (every widget of the viewer shares it)."""
    model = _MODELS.get(viewer)
    if model is None:
        if store_root is None:
            from .settings import SETTINGS

            store_root = lambda: SETTINGS.get().store_path  # noqa: E731
        model = CaseModel(store_root)
        _MODELS[viewer] = model
    return model
