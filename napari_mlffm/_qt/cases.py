"""The "Cases" dock widget: a folder as a case list with states, stepping, background proposals, triage.

The cases themselves (state, proposal, mask under review) live in the
viewer's :class:`napari_mlffm.cases_model.CaseModel`, shared with the
Propose and Review widgets; this widget shows the list and moves through it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, FileEdit, Label, PushButton
from napari.layers import Shapes
from napari.qt.threading import create_worker
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QListWidget

from training.corrections.store import image_sha256
from training.data.imageio import ImageReadError, read_image
from training.files.outputs import display

from .. import cases_model, refining, results
from ..case_folder import list_folder
from ..settings import SETTINGS
from . import common, dock_life
from .dock_container import DockContainer
from .progress import InlineProgress, progress_text
from .prompt_layers import box_layer_name, is_clicks_layer, prompts_layer_name

MAX_SKIPPED_SHOWN = 5  # lines naming skipped images in the status line; the rest are counted


def propose_all_job(
    paths: list[Path], checkpoint: str | None, device: str, n_samples: int | None, steps: int | None, seed: int,
    flat_field: bool | None = None,
):
    """Worker body for Propose all; yields, in order:

    * ``("step", done, total, index, count)`` after every DDIM step (so a cancel stops within one step);
    * ``("case", index, proposal, info)`` when a case is done, or ``("case", index, None, error text)``;
    * ``("failed", error text)`` if the model cannot be loaded (nothing else follows).

    ``n_samples``, ``steps`` or ``flat_field`` None: the model's own.
    """
    try:
        segmenter = common.get_segmenter(checkpoint, device, flat_field)
    except (ValueError, OSError, RuntimeError) as err:
        yield ("failed", common.one_line(err))
        return
    for index, path in enumerate(paths):
        try:
            image = read_image(path)
            loop = segmenter.propose_iter(image, n_samples, steps, seed)
            while True:
                try:
                    done, total = next(loop)
                except StopIteration as stop:
                    proposal = stop.value
                    break
                yield ("step", done, total, index, len(paths))
        except (ImageReadError, ValueError) as err:
            yield ("case", index, None, common.one_line(err))
            continue
        record = common.proposal_record(segmenter, checkpoint, proposal, n_samples, steps, seed)
        yield ("case", index, proposal, {"source": str(path), **record, "image_sha256": image_sha256(image)})


class CasesWidget(common.RunCancel, DockContainer):
    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.model = cases_model.for_viewer(napari_viewer)
        self.folder = FileEdit(label="case folder", mode="d")
        self.open_button = PushButton(text="Open folder")
        self.list = QListWidget()
        self.list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setToolTip("state, disagreement of the proposals (1 - mean pairwise Dice), file; double-click to open")
        self.previous_button = PushButton(text="Previous (Shift-P)")
        self.next_button = PushButton(text="Next (Shift-N)")
        self.propose_button = PushButton(text="Propose all")
        self.redo = CheckBox(text="also redo proposed and accepted cases", value=False)
        self.sort_button = PushButton(text="Sort: most doubtful first")
        self.status = Label(value="")
        self.extend([self.folder, self.open_button])
        self.body.layout().addWidget(self.list)
        self.extend([self.previous_button, self.next_button, self.propose_button, self.redo, self.sort_button, self.status])
        self._progress = InlineProgress()
        common.insert_native_after(self, self.status, self._progress)
        self.finish_rows(self.status)
        self._layer_name: str | None = None
        self.worker = None
        self.confirm = lambda title, question: common.confirm(self.native, title, question)
        self.open_button.changed.connect(lambda *_: self.open_folder(self.folder.value))
        self.previous_button.changed.connect(lambda *_: self.step(-1))
        self.next_button.changed.connect(lambda *_: self.step(1))
        self.propose_button.changed.connect(self.propose_or_cancel)
        self.sort_button.changed.connect(self.sort_most_doubtful_first)
        self.list.itemDoubleClicked.connect(lambda item: self.show_case(self.list.row(item)))
        self.model.changed.connect(self._on_model_changed)
        dock_life.bind_key(napari_viewer, "Shift-N", self, lambda: self.step(1))
        dock_life.bind_key(napari_viewer, "Shift-P", self, lambda: self.step(-1))
        dock_life.watch_closing(self)  # destroyed, or closed by its dock's X

    def _on_destroyed(self, *_):
        self.model.changed.disconnect(self._on_model_changed)
        super()._on_destroyed()

    # ----- list --------------------------------------------------------
    @property
    def cases(self) -> list[cases_model.Case]:
        """The listed cases, in display order."""
        return self.model.listed()

    @property
    def current(self) -> int | None:
        return self.model.index_of(self.model.current)

    def open_folder(self, folder) -> int:
        """Open a folder as the case list; returns how many cases it lists (0 when refused).

        A refused folder changes nothing (list, shown case, folder field) and
        says why in one line; images left out are named, one line each, in
        the status line and a warning.
        """
        try:
            if self.worker is not None:  # its proposals are for the list it started on
                raise ValueError("Propose all is running: cancel it, or let it end, before opening another folder")
            list_folder(folder)  # refused here, the shown case stays; else it is put away before the list changes
            self._close_current()
            self.model.set_current(None)
            again = self.model.folder is not None and Path(folder).resolve() == self.model.folder.resolve()
            edited = [c for c in self.model.listed() if self.state(c) == "edited"] if again else []
            listed = self.model.open_folder(folder)
        except ValueError as err:
            line = common.one_line(err)
            opened = self.model.folder
            if opened is not None:
                line += f"; still showing {display(opened.name)}"
                if str(self.folder.value) != str(opened):
                    self.folder.value = str(opened)  # the field keeps naming the folder on the list
            self.status.value = line
            common.notify_error(line)
            return 0
        if str(self.folder.value) != str(folder):
            self.folder.value = str(folder)  # the field shows the open folder (its tail, where it is long)
        status = f"{len(listed)} case{'' if len(listed) == 1 else 's'} in {display(Path(folder).name)}"
        skipped = self.model.skipped
        gone = [c.path.name for c in edited if self.model.get(c.case_id) is not c or c.case_id not in self.model.order]
        if gone:  # renamed, moved or deleted since: their edits stay in the case model, unlisted
            status += (f"; {len(gone)} edited case{'s' if len(gone) > 1 else ''} no longer in the folder (renamed, moved or deleted?), "
                       f"kept for this session and listed again if the file comes back: {', '.join(map(display, gone))}")
        if skipped:
            shown = skipped[:MAX_SKIPPED_SHOWN]
            more = [f"... and {len(skipped) - len(shown)} more"] if len(skipped) > len(shown) else []
            status += f"; {len(skipped)} skipped:\n" + "\n".join(shown + more)
        if skipped or gone:
            common.notify(status, warning=True)
        self.status.value = status
        return len(listed)

    def state(self, entry: cases_model.Case) -> str:
        return self.model.state(entry)

    def _on_model_changed(self, case_id: str) -> None:
        if not self._closed and (not case_id or case_id in self.model.order):
            self.refresh_list()

    def refresh_list(self) -> None:
        current = self.current
        self.list.clear()
        for index, entry in enumerate(self.cases):
            doubt = f"{entry.disagreement:.3f}  " if entry.disagreement is not None else ""
            marker = "▶ " if index == current else "  "
            state = self.state(entry)
            self.list.addItem(f"{marker}[{state}] {doubt}{entry.path.name}")  # state and score first: a long name is elided, not they
            self.list.item(index).setToolTip(f"{entry.path}\nstate: {state}" + (f"\ndisagreement (1 - mean pairwise Dice): {entry.disagreement:.3f}" if doubt else ""))
        if current is not None:
            self.list.setCurrentRow(current)

    def sort_most_doubtful_first(self, *_):
        """Most doubtful first: by the proposals' disagreement (1 - mean pairwise Dice)."""
        self.model.sort_most_doubtful_first()

    # ----- stepping ----------------------------------------------------
    def step(self, delta: int) -> None:
        if not self.cases:
            return
        current = self.current
        target = 0 if current is None else min(max(current + delta, 0), len(self.cases) - 1)
        if target != current:
            self.show_case(target)

    def _close_current(self) -> bool:
        """Keep the shown case's mask in the case model (edits included), then remove its layers.

        ValueError, with nothing changed, while a refine of the shown image runs: its result (and the clicks
        that started it, whose layer leaves with the case) would be dropped."""
        if self.model.current is None:
            return True
        case = self.model.get(self.model.current)
        name = self._layer_name or (case.path.stem if case is not None else "")
        layers = results.case_layers(self.viewer, name)
        image = results.find(self.viewer, name)
        if image is not None and refining.is_refining(image):
            raise ValueError(f"a refine of {name} is running: step on when it ends (its result and clicks would be lost)")
        clicks = results.find(self.viewer, prompts_layer_name(name))
        if is_clicks_layer(clicks) and layers["mask"] is not None and _unrefined(clicks, layers["mask"]):
            raise ValueError(f"the clicks of {name} are not refined yet: press Refine (Shift-R), or undo them, before stepping on")
        if case is not None and image is not None and not cases_model.same_source(case.source, common.case_source(image)):
            case = None  # the id is another file's now: the shown image's mask is not its to keep
        size = image_shape(image) if image is not None else None
        for kind, layer in layers.items():  # a layer of another kind or size under a result name is not this case's
            try:
                if layer is not None:
                    results.check_case_layers({kind: layer}, name, *(size or (0, 0)), sized=(kind,) if size else ())
            except ValueError:
                layers[kind] = None  # left in the viewer as it is
        mask = layers["mask"]
        if mask is not None and case is not None:
            state = mask.metadata.get(results.KEY, {})
            self.model.set_mask(case.source, np.asarray(mask.data) > 0, state.get("start"), state.get("start_mask"), state.get("level"))
            case.extra["painted"] = results.painted_pixels(mask)  # held by the next refine and kept by Grow / Shrink, after a return too
            case.extra["clicks"] = state.get("clicks")  # the refine's clicks and box: Accept records them after a return too
            case.extra["made_by"] = results.mask_run(state)  # the run the mask came from, not a later proposal it was kept through
        box = results.find(self.viewer, box_layer_name(name))
        prompts = [clicks if is_clicks_layer(clicks) else None, box if isinstance(box, Shapes) else None]  # the case's own (its mask holds their effect)
        for layer in [*layers.values(), *prompts, results.find(self.viewer, name)]:
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self._layer_name = None
        return True

    def show_case(self, index: int) -> None:
        """Show a case with all that is known of it: its proposals, its mask as left, or its accepted mask."""
        try:
            self._close_current()
        except ValueError as err:  # the shown case stays
            self.status.value = common.one_line(err)
            common.notify_error(err)
            return
        entry = self.cases[index]
        try:
            image = read_image(entry.path)
        except ImageReadError as err:
            self.model.set_error(entry.source, str(err))
            common.notify_error(err)
            self.model.set_current(entry.case_id)
            self.status.value = f"case {index + 1}/{len(self.cases)}: {common.one_line(err)}"  # not the case shown before
            return
        self._check_unchanged(entry, image)
        layer = self.viewer.add_image(image, name=entry.path.stem, rgb=image.ndim == 3, metadata={"source": str(entry.path)})
        self._layer_name = layer.name
        try:
            if entry.proposal is not None:
                results.add_proposal_layers(self.viewer, layer, entry.proposal, entry.info or {"source": str(entry.path)})
            self._restore_mask(layer, entry)
        except ValueError as err:  # a layer of another kind or size under a result name: left alone
            self.status.value = common.one_line(err)
            common.notify_error(err)
            self.model.set_current(entry.case_id)
            return
        self.model.set_current(entry.case_id)
        self.status.value = f"case {index + 1}/{len(self.cases)}: {entry.path.name} [{self.state(entry)}]"

    def _check_unchanged(self, entry: cases_model.Case, image: np.ndarray) -> None:
        """Forget the proposal made for the case's file if the file holds other pixels now (another photo saved over
        it); an edited mask is the reviewer's and stays, with a warning. Clears an earlier read error (it reads now)."""
        if entry.error:
            self.model.set_error(entry.source, "")
        pixels = image_sha256(image)
        known = entry.extra.get("pixels")
        entry.extra["pixels"] = pixels
        if known is None or known == pixels or (entry.proposal is None and entry.mask is None):
            return
        edited = entry.edited
        fits = edited and entry.mask.shape == image.shape[:2]
        entry.proposal = entry.info = None
        if edited and not fits:
            entry.extra["set_aside_mask"] = entry.mask  # the edits of the old photo, not drawn on this one
        if not fits:
            entry.mask = entry.start_mask = entry.start = None
            entry.extra.pop("painted", None)
            entry.extra.pop("clicks", None)
        then = "; your edited mask was kept: check that it fits" if fits else (
            "; your edited mask does not fit the new image and was set aside; propose again" if edited else "; propose again")
        common.notify(f"{entry.path.name} holds another image than when it was proposed: its proposal was dropped{then}", warning=True)

    def _restore_mask(self, layer, entry: cases_model.Case) -> None:
        if results.show_case_mask(self.viewer, layer, entry, self.model.is_accepted(entry)):
            return
        base = {**(entry.info or {}), "source": str(entry.path)}
        stored = self.model.stored(entry)
        if stored is None and self.model.file_changed_since_accepted(entry):
            common.notify(f"{entry.path.name} holds another image than when it was accepted: the store's mask is not drawn on it", warning=True)
        if stored is not None and stored[0].shape == image_shape(layer):
            mask, record = stored
            accepted_from, other = record.get("image_sha256"), record.get("source")
            same_file = isinstance(other, str) and cases_model.same_source(other, entry.source)
            if not same_file and isinstance(accepted_from, str) and accepted_from != entry.extra.get("pixels"):  # a moved folder: pixels decide
                common.notify(f"the store's {entry.case_id} was accepted from another image: its mask is not drawn here", warning=True)
                return
            keep = {k: record.get(k) for k in ("checkpoint", "checkpoint_id", "seed", "steps", "samples", "device", "image_sha256") if k in record}
            state = {**base, **keep, "start": "accepted", "start_mask": mask.copy(), "accepted": True, "record": record}
            results.show_mask(self.viewer, layer, mask, state)

    # ----- background proposals ----------------------------------------
    def propose_or_cancel(self, *_):
        return self.run_or_cancel()

    def start(self):
        todo = self.model.to_propose(redo=self.redo.value)
        if not todo:
            self.status.value = "nothing to propose (tick 'also redo' to propose again)"
            return None
        shown = self.model.current
        todo.sort(key=lambda c: c.case_id != shown)  # the case on screen first: its layers come soonest
        s = SETTINGS.get()
        paths = [c.path for c in todo]
        self._progress.begin(f"loading the model for {len(todo)} cases...", len(todo))
        worker = create_worker(propose_all_job, paths, s.active_model or None, s.device, s.samples, s.steps, s.seed, s.flat_field, _start_thread=False)
        worker.yielded.connect(lambda item: self._on_item(todo, item))
        worker.errored.connect(lambda err: common.notify_error(err))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.propose_button.text = "Cancel"
        self.status.value = f"proposing {len(todo)} cases"
        worker.start()
        return worker

    def cancel(self, *_):
        if self.worker is not None:
            self.worker.quit()  # stops at the next DDIM step
            self._show_cancelling(self.propose_button)

    def _on_item(self, todo: list[cases_model.Case], item) -> None:
        if self._closed:
            return
        if item[0] == "step":
            _, done, total, index, count = item
            if not self._cancelling:
                self._progress.set(index * total + done, count * total, progress_text(done, total, index + 1, count))
            return
        if item[0] == "failed":
            self.status.value = "failed: " + item[1]
            common.notify_error(item[1])
            return
        _, k, proposal, info = item
        entry = todo[k]
        shown_pixels = entry.extra.get("pixels") if entry.case_id == self.model.current else None  # what the screen holds
        try:
            if proposal is None:
                self.model.set_error(entry.source, info)
                return
            self.model.set_proposal(entry.source, proposal, info)
        except ValueError:  # its id is another file's now: the proposal is not kept
            return
        made_for = info.get("image_sha256") if isinstance(info, dict) else None
        if shown_pixels is not None and made_for is not None and made_for != shown_pixels:
            common.notify(f"{entry.path.name} holds another image than the one shown: its new proposal is kept for the case; "
                          "show the case again to review it", warning=True)
            return  # not drawn over the old photo on screen, where Accept would store it with that photo
        if entry.case_id == self.model.current and self._layer_name in self.viewer.layers:
            layer = self.viewer.layers[self._layer_name]  # the shown case gets its layers now; an edited mask is kept
            try:
                results.add_proposal_layers(self.viewer, layer, proposal, info)
            except ValueError as err:  # the proposal stays with its case; the layer in the way is named
                self.status.value = common.one_line(err)
                common.notify_error(err)

    def _on_finished(self):
        self._end_run(self.propose_button, "Propose all")
        if self._closed:
            return
        done = sum(self.state(e) != "new" and not e.error for e in self.cases)
        self.status.value = f"{done}/{len(self.cases)} cases proposed or reviewed"


def _unrefined(clicks, mask) -> bool:
    """Whether a clicks layer holds other clicks than the last refine of the mask used (they would leave unused)."""
    state = mask.metadata.get(results.KEY)
    record = (state.get("clicks") if isinstance(state, dict) else None) or {}
    used = [tuple(round(float(x), 1) for x in p) for kind in ("positive", "negative") for p in record.get(kind) or []]
    return sorted(tuple(round(float(x), 1) for x in p) for p in np.asarray(clicks.data)[:, -2:]) != sorted(used)  # as recorded


def image_shape(layer) -> tuple[int, int]:
    data = results.image_data(layer)
    return tuple(data.shape[:2])
