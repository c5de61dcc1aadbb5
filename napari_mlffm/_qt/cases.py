"""The "Cases" dock widget: a folder as a case list with states, stepping, background proposals, triage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from magicgui.widgets import Container, FileEdit, Label, PushButton
from napari.qt.threading import create_worker
from napari.utils import progress
from qtpy.QtWidgets import QListWidget

from model import Proposal
from training.imageio import ImageReadError, is_image_file, read_image
from training.store import CorrectionsStore, case_id_for

from .. import results
from ..settings import SETTINGS
from . import common


@dataclass
class CaseEntry:
    path: Path
    proposal: Proposal | None = None
    info: dict | None = None
    error: str = ""

    @property
    def disagreement(self) -> float | None:
        """1 - mean pairwise Dice of the proposals (the triage score), None before proposing."""
        return self.proposal.disagreement if self.proposal is not None else None


def propose_all_job(paths: list[Path], checkpoint: str | None, device: str, n_samples: int | None, steps: int | None, seed: int):
    """Worker body: yields (index, proposal or None, info or error text) for each case; index -1: the model failed to load.

    ``n_samples`` or ``steps`` None: the model's defaults.
    """
    try:
        segmenter = common.get_segmenter(checkpoint, device)
    except (ValueError, OSError, RuntimeError) as err:
        yield -1, None, common.one_line(err)
        return
    for index, path in enumerate(paths):
        try:
            image = read_image(path)
        except ImageReadError as err:
            yield index, None, str(err)
            continue
        proposal = segmenter.propose(image, n_samples=n_samples, steps=steps, seed=seed)
        yield index, proposal, {"source": str(path), **common.proposal_record(segmenter, checkpoint, proposal, n_samples, steps, seed)}


class CasesWidget(common.RunCancel, Container):
    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.folder = FileEdit(label="case folder", mode="d")
        self.open_button = PushButton(text="Open folder")
        self.list = QListWidget()
        self.previous_button = PushButton(text="Previous (Shift-P)")
        self.next_button = PushButton(text="Next (Shift-N)")
        self.propose_button = PushButton(text="Propose all")
        self.sort_button = PushButton(text="Sort: most doubtful first")
        self.status = Label(value="")
        self.extend([self.folder, self.open_button])
        self.native.layout().addWidget(self.list)
        self.extend([self.previous_button, self.next_button, self.propose_button, self.sort_button, self.status])
        self.cases: list[CaseEntry] = []
        self.current: int | None = None
        self._layer_name: str | None = None
        self.worker = None
        self._progress = None
        self.confirm = lambda title, question: common.confirm(self.native, title, question)
        self.open_button.changed.connect(lambda *_: self.open_folder(self.folder.value))
        self.previous_button.changed.connect(lambda *_: self.step(-1))
        self.next_button.changed.connect(lambda *_: self.step(1))
        self.propose_button.changed.connect(self.propose_or_cancel)
        self.sort_button.changed.connect(self.sort_most_doubtful_first)
        self.list.itemDoubleClicked.connect(lambda item: self.show_case(self.list.row(item)))
        napari_viewer.bind_key("Shift-N", lambda v: self.step(1), overwrite=True)
        napari_viewer.bind_key("Shift-P", lambda v: self.step(-1), overwrite=True)
        self.native.destroyed.connect(self._on_destroyed)

    # ----- list --------------------------------------------------------
    def open_folder(self, folder) -> int:
        folder = Path(folder)
        if not folder.is_dir():
            common.notify_error(f"{folder}: not a folder")
            return 0
        self.cases = [CaseEntry(p) for p in sorted(folder.iterdir()) if is_image_file(p)]
        self.current = None
        self.refresh_list()
        self.status.value = f"{len(self.cases)} cases in {folder.name}"
        return len(self.cases)

    def state(self, entry: CaseEntry) -> str:
        if entry.error:
            return "unreadable"
        if CorrectionsStore(SETTINGS.get().store_path).has(case_id_for(entry.path)):
            return "accepted"
        return "proposed" if entry.proposal is not None else "new"

    def refresh_list(self) -> None:
        self.list.clear()
        for index, entry in enumerate(self.cases):
            doubt = f"  disagreement {entry.disagreement:.3f}" if entry.disagreement is not None else ""
            marker = "▶ " if index == self.current else "  "
            self.list.addItem(f"{marker}{entry.path.name}  [{self.state(entry)}]{doubt}")

    def sort_most_doubtful_first(self, *_):
        """Most doubtful first: by the proposals' disagreement (1 - mean pairwise Dice)."""
        current = self.cases[self.current] if self.current is not None else None
        self.cases.sort(key=lambda e: -(e.disagreement if e.disagreement is not None else -1.0))
        self.current = self.cases.index(current) if current is not None else None
        self.refresh_list()

    # ----- stepping ----------------------------------------------------
    def step(self, delta: int) -> None:
        if not self.cases:
            return
        target = 0 if self.current is None else min(max(self.current + delta, 0), len(self.cases) - 1)
        if target != self.current:
            self.show_case(target)

    def _close_current(self) -> bool:
        if self.current is None:
            return True
        name = self._layer_name or self.cases[self.current].path.stem
        layers = results.case_layers(self.viewer, name)
        mask = layers["mask"]
        if mask is not None and results.mask_edited(mask) and not mask.metadata.get(results.KEY, {}).get("accepted"):
            if not self.confirm("Unsaved edits", f"{name} has edits that were not accepted. Discard them?"):
                return False
        for layer in [*layers.values(), results.find(self.viewer, name)]:
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        return True

    def show_case(self, index: int) -> None:
        if not self._close_current():
            return
        entry = self.cases[index]
        try:
            image = read_image(entry.path)
        except ImageReadError as err:
            entry.error = str(err)
            common.notify_error(err)
            self.current = index
            self.refresh_list()
            return
        layer = self.viewer.add_image(image, name=entry.path.stem, rgb=image.ndim == 3, metadata={"source": str(entry.path)})
        self._layer_name = layer.name
        if entry.proposal is not None:
            results.add_proposal_layers(self.viewer, layer, entry.proposal, entry.info or {})
        self.current = index
        self.refresh_list()
        self.status.value = f"case {index + 1}/{len(self.cases)}: {entry.path.name}"

    # ----- background proposals ----------------------------------------
    def propose_or_cancel(self, *_):
        return self.run_or_cancel()

    def start(self):
        todo = [i for i, e in enumerate(self.cases) if e.proposal is None and not e.error]
        if not todo:
            self.status.value = "nothing to propose"
            return
        s = SETTINGS.get()
        paths = [self.cases[i].path for i in todo]
        bar = progress(total=len(todo), desc="Proposing for all cases")
        self._progress = bar
        worker = create_worker(propose_all_job, paths, s.active_model or None, s.device, s.samples, s.steps, s.seed, _start_thread=False)
        entries = [self.cases[i] for i in todo]
        worker.yielded.connect(lambda item: self._on_case(entries, item, bar))
        worker.errored.connect(lambda err: common.notify_error(err))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.propose_button.text = "Cancel"
        worker.start()
        return worker

    def cancel(self, *_):
        if self.worker is not None:
            self.worker.quit()

    def _on_case(self, entries: list[CaseEntry], item, bar) -> None:
        k, proposal, info = item
        if k < 0:
            self.status.value = "failed: " + info
            common.notify_error(info)
            return
        entry = entries[k]
        if proposal is None:
            entry.error = info
        else:
            entry.proposal, entry.info = proposal, info
        bar.update(1)
        if not self._closed:
            self.refresh_list()

    def _on_finished(self):
        self._end_run(self.propose_button, "Propose all")
        if self._closed:
            return
        done = sum(e.proposal is not None for e in self.cases)
        self.status.value = f"{done}/{len(self.cases)} cases proposed"
