"""The "Review and export" dock widget: choose a starting mask, clean it, read the case, accept, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import (CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label, LineEdit, PushButton, SpinBox)

from training.corrections.outline_level import mask_at_level, step_level
from training.corrections.postprocess import case_readout, clean_mask, combine
from training.corrections.store import CorrectionsStore
from training.data.masks import AmbiguousMaskError, check_not_outline
from training.files.export import existing_files, export_case
from training.files.outputs import one_line

from .. import cases_model, refining, results
from ..settings import SETTINGS
from . import common, dock_life
from .dock_container import DockContainer

STARTS = ("shown proposal", "majority", "union", "intersection", "consensus")
READOUT_DELAY_MS = 120  # paint strokes and erasures within this interval refresh the read-out once


class ReviewWidget(DockContainer):
    """Works on the result layers of the chosen image (see :mod:`napari_mlffm.results`)."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        settings = SETTINGS.get()
        self.image = ComboBox(label="image", choices=common.image_layer_choices(napari_viewer), nullable=True)
        self.start = ComboBox(label="start from", choices=list(STARTS), value="shown proposal")
        self.make_mask = PushButton(text="Make mask")
        self.grow = PushButton(text="Grow", tooltip="the whole outline one level looser (Shift-G); painted pixels stay")
        self.shrink = PushButton(text="Shrink", tooltip="the whole outline one level tighter (Shift-S); painted pixels stay")
        outline_level = Container(layout="horizontal", widgets=[self.grow, self.shrink], labels=False, label="outline (Shift-G / S)")
        outline_level.margins = (0, 0, 0, 0)
        self.fill_holes = CheckBox(text="fill holes", value=True)
        self.largest = CheckBox(text="keep largest component", value=True)
        self.min_size = SpinBox(label="remove objects below (px)", value=64, min=0, max=1_000_000)
        self.smooth = SpinBox(label="smooth radius (px)", value=2, min=0, max=50)
        self.clean = PushButton(text="Clean up")
        self.pixel_size = FloatSpinBox(label="pixel size (mm, 0 = unknown)", value=0.0, min=0.0, max=10.0, step=0.001)
        self.readout = Label(value="")
        self.outline = CheckBox(text="show the mask as an outline", value=True)
        self.annotator = LineEdit(label="annotator", value=settings.annotator)
        self.accept_button = PushButton(text="Accept (Shift-A)")
        self.export_folder = FileEdit(label="export to", mode="d")
        self.export_button = PushButton(text="Export")
        self.status = Label(value="")
        self.extend([
            self.image, self.start, self.make_mask, outline_level, self.fill_holes, self.largest, self.min_size, self.smooth, self.clean,
            self.pixel_size, self.readout, self.outline, self.annotator, self.accept_button, self.export_folder, self.export_button, self.status,
        ])
        self.confirm = lambda title, question: common.confirm(self.native, title, question)
        self.cases = cases_model.for_viewer(napari_viewer)
        self.finish_rows(self.status, self.readout)
        from qtpy.QtCore import QTimer

        self._closed = False
        self._readout_timer = QTimer(self.native)
        self._readout_timer.setSingleShot(True)
        self._readout_timer.setInterval(READOUT_DELAY_MS)
        self._readout_timer.timeout.connect(self._on_mask_painted)
        self.outline.changed.connect(self._on_outline)
        napari_viewer.layers.events.inserted.connect(self._watch_mask)
        for layer in list(napari_viewer.layers):
            self._watch_mask(layer=layer)
        self.image.changed.connect(self.update_readout)
        dock_life.watch_closing(self)  # destroyed, or closed by its dock's X
        self.make_mask.changed.connect(self.apply_start)
        self.grow.changed.connect(lambda *_: self.step_outline(-1))
        self.shrink.changed.connect(lambda *_: self.step_outline(1))
        self.clean.changed.connect(self.apply_clean)
        self.accept_button.changed.connect(self.accept)
        self.export_button.changed.connect(self.export)
        self._chosen_folder: tuple[str, bool] | None = None  # the export folder as chosen, and whether it existed then
        self.export_folder.changed.connect(lambda value: setattr(self, "_chosen_folder", (str(value), Path(value).is_dir())))
        self.pixel_size.changed.connect(self.update_readout)
        self.annotator.changed.connect(lambda v: SETTINGS.update(annotator=v))
        napari_viewer.layers.events.inserted.connect(self.reset_choices)
        napari_viewer.layers.events.removed.connect(self.reset_choices)
        dock_life.bind_key(napari_viewer, "Shift-A", self, lambda: self.accept())
        dock_life.bind_key(napari_viewer, "Shift-G", self, lambda: self.step_outline(-1))
        dock_life.bind_key(napari_viewer, "Shift-S", self, lambda: self.step_outline(1))
        self.image.value = self._default_image()
        common.follow_active_image(self)  # Shift-A / Shift-G / Shift-S act on the image whose layer is selected

    def _on_destroyed(self, *_):
        self._closed = True
        try:
            self.viewer.layers.events.inserted.disconnect(self._watch_mask)
        except (TypeError, ValueError, RuntimeError):
            pass

    # ----- live read-out and outline ------------------------------------
    def _watch_mask(self, event=None, layer=None) -> None:
        """Every mask layer refreshes the read-out (and its case's state) after a stroke, an erasure or a new mask."""
        layer = layer if layer is not None else event.value
        if not layer.name.endswith(" mask") or not hasattr(layer.events, "paint"):
            return
        layer.events.paint.connect(self._schedule_readout)
        layer.events.data.connect(self._schedule_readout)

    def _schedule_readout(self, *_):
        if not self._closed:
            self._readout_timer.start()  # restarts: a burst of events costs one refresh

    def _on_mask_painted(self) -> None:
        if self._closed:
            return
        try:
            layer, found = self._layers(create=False)
        except ValueError:
            self.readout.value = ""
            return
        state = found["mask"].metadata.get(results.KEY, {})
        try:
            source = common.case_source(layer)
            held = state.get("kept_mask")  # strokes a refine held (the case is edited while they are), cleared by Make mask
            held = np.asarray(held, bool) if held is not None and np.shape(held) == np.shape(found["mask"].data) else None
            extra = self.cases.case(source).extra
            extra["painted"] = held.copy() if held is not None and held.any() else None
            extra["made_by"] = results.mask_run(state)  # the run the mask came from, should its layer be closed
            self.cases.set_mask(source, self._current_mask(found), state.get("start"), state.get("start_mask"), state.get("level"))
        except ValueError:
            pass  # no case can be kept for this image (its name makes no id, or the open folder's file has it): the layer holds the mask
        self.update_readout()

    def _on_outline(self, outline: bool) -> None:
        results.set_outline_default(outline)
        for layer in self.viewer.layers:
            if layer.name.endswith(" mask") and hasattr(layer, "contour"):
                results.style_mask(layer, outline)

    def _default_image(self):
        choices = [c for c in self.image.choices if c is not None]
        return choices[-1] if choices else None

    def reset_choices(self, event=None) -> None:
        super().reset_choices()
        if self.image.value is None:
            self.image.value = self._default_image()

    # ----- helpers -----------------------------------------------------
    def _layers(self, create: bool = True, writing: bool = False):
        """(image layer, its result layers) for an action; ``writing`` (Accept, Export) also checks that the mask
        was made for this file and these pixels, so a store or an export never pairs one photo with another's mask."""
        layer = self.image.value
        if layer is None:
            raise ValueError("choose an image first")
        found = results.case_layers(self.viewer, layer.name)
        source = common.case_source(layer)
        if found["mask"] is None:
            elsewhere = results.mask_layers_of(self.viewer, source, but=results.layer_names(layer.name)["mask"])
            if elsewhere:  # a renamed image or mask: the reviewer's mask is there, under another name
                raise ValueError(f"the mask of '{layer.name}' is the layer '{elsewhere[0].name}': "
                                 f"name it '{results.layer_names(layer.name)['mask']}' to review, accept or export it")
        case = self.cases.for_source(source)  # never another file's of the same name
        if create and found["mask"] is None and case is not None and case.proposal is not None:
            results.add_proposal_layers(self.viewer, layer, case.proposal, case.info or {})  # proposed from elsewhere
            if case.edited and results.show_case_mask(self.viewer, layer, case, self.cases.is_accepted(case)):
                if writing:  # its mask layer was closed with edits in it: they come back, to be seen before they are stored
                    raise ValueError(f"the mask of '{layer.name}' was closed; it is back with your edits: check it, then press again")
            found = results.case_layers(self.viewer, layer.name)
        if found["mask"] is None:
            raise ValueError(f"no mask for {layer.name} yet: run Propose masks first")
        results.check_case_layers(found, layer.name, *results.image_data(layer).shape[:2])
        if writing:
            results.check_same_image(found["mask"], layer.name, source)
            results.check_same_pixels(found["mask"], layer.name, results.image_data(layer))
        return layer, found

    def _guard(self, action):
        try:
            return action()
        except (ValueError, OSError) as err:
            self.status.value = common.one_line(err)
            common.notify_error(err)
            return None

    def _current_mask(self, found) -> np.ndarray:
        return np.asarray(found["mask"].data) > 0

    # ----- actions -----------------------------------------------------
    def apply_start(self, *_):
        def run():
            layer, found = self._layers()
            proposals = found["proposals"]
            samples = np.asarray(proposals.data) > 0 if proposals is not None else None
            choice = self.start.value
            if choice == "shown proposal":
                if samples is None:
                    raise ValueError("no proposals layer")
                # the proposals layer's own first axis, wherever it sits among the viewer's (another layer may have more)
                index = int(round(float(proposals.world_to_data(self.viewer.dims.point)[0])))
                index = min(max(index, 0), samples.shape[0] - 1)
                mask, label = samples[index], f"proposal {index + 1}"
            elif choice == "consensus":
                state = proposals.metadata.get(results.KEY, {}) if proposals is not None else {}
                if state.get("probability") is None:
                    raise ValueError("no stored probability for this image")
                mask, label = state["probability"] >= state.get("threshold", 0.5), "consensus"
            else:
                if samples is None:
                    raise ValueError("no proposals layer")
                mask, label = combine(samples, choice), choice
            _wait_for_refine(layer, "Make mask")
            if results.mask_edited(found["mask"]) and not self.confirm("Replace mask", "The mask has edits. Replace it?"):
                return
            # the mask is now the proposals' (their model, seed, and the pixels they were proposed on)
            results.set_mask(found["mask"], mask, label, proposals.metadata.get(results.KEY, {}) if proposals is not None else None)
            self.status.value = f"mask set from {label}"
            self.update_readout()

        self._guard(run)

    def step_outline(self, steps: int):
        """Cut the stored probability ``steps`` outline levels higher (negative: lower, a larger mask); painted pixels stay.

        The level starts at the proposal's threshold and goes back to it with
        every new proposal or refine (:mod:`training.corrections.outline_level`).
        """
        def run():
            layer, found = self._layers()
            proposals = found["proposals"]
            stored = proposals.metadata.get(results.KEY, {}) if proposals is not None else {}
            probability = stored.get("probability")
            if probability is None:
                raise ValueError("no stored probability for this image: run Propose masks first")
            mask_layer = found["mask"]
            current = self._current_mask(found)
            if np.shape(probability) != current.shape:
                raise ValueError(f"the stored probability is {np.shape(probability)}, the mask {current.shape}: propose again")
            state = mask_layer.metadata.setdefault(results.KEY, {})
            _wait_for_refine(layer, "Grow / Shrink")
            threshold = float(stored.get("threshold", 0.5))
            level = float(state.get("level", threshold))
            written = state.get("start_mask")
            if written is None or np.shape(written) != current.shape or not np.array_equal(np.asarray(written, bool), probability >= level):
                # e.g. a mask made from the union or one proposal, or a case whose proposal changed: re-cutting would replace it
                raise ValueError(f"the mask did not come from the proposals' probability (it started from {state.get('start', 'elsewhere')}): "
                                 "make the mask from the consensus, or refine, before Grow / Shrink")
            new_level = step_level(level, steps)
            if new_level == level:
                self.status.value = f"outline level already at its {'lowest' if steps < 0 else 'highest'} ({level:.2f})"
                return None
            painted = results.painted_pixels(mask_layer)
            model_mask = mask_at_level(probability, new_level)
            mask = mask_at_level(probability, new_level, painted, current) if painted is not None else model_mask
            state.update(level=new_level, start=f"outline level {new_level:.2f}", start_mask=model_mask.copy())
            if painted is not None:
                state["kept_mask"] = painted.copy()  # painted pixels stay painted, even where the next cut agrees with them
            results.write_mask(mask_layer, mask)
            grew = "grown" if new_level < level else "shrunk"
            kept = f", {int(painted.sum())} painted pixels kept" if painted is not None else ""
            self.status.value = f"outline {grew}: level {new_level:.2f} (the model's {threshold:.2f}){kept}"
            self.update_readout()
            return new_level

        return self._guard(run)

    def apply_clean(self, *_):
        def run():
            _, found = self._layers()
            mask = clean_mask(self._current_mask(found), self.fill_holes.value, self.largest.value, self.min_size.value, self.smooth.value)
            results.write_mask(found["mask"], mask)
            self.status.value = "cleaned"
            self.update_readout()

        self._guard(run)

    def readout_values(self) -> dict:
        _, found = self._layers(create=False)
        proposals, uncertainty = found["proposals"], found["uncertainty"]
        return case_readout(
            self._current_mask(found),
            np.asarray(proposals.data) > 0 if proposals is not None else None,
            np.asarray(uncertainty.data) if uncertainty is not None else None,
            self.pixel_size.value or None,
        )

    def update_readout(self, *_):
        try:
            values = self.readout_values()
        except ValueError:
            self.readout.value = ""
            return
        lines = [f"area {values['area_px']} px" + (f" = {values['area_mm2']:.2f} mm²" if values["area_mm2"] is not None else "")]
        lines.append(f"max diameter {values['max_diameter_px']:.1f} px" + (f" = {values['max_diameter_mm']:.2f} mm" if values["max_diameter_mm"] is not None else ""))
        if values["boundary_uncertainty"] is not None:
            lines.append(f"boundary uncertainty {values['boundary_uncertainty']:.3f}")
        if values["area_spread"] is not None:
            lines.append(f"area spread across proposals {100 * values['area_spread']:.1f}%")
        if values["border_px"]:
            lines.append(f"touches the image border ({values['border_px']} px): area and diameter are lower bounds")
        self.readout.value = "\n".join(lines)

    def _record(self, layer, found) -> dict:
        state = found["mask"].metadata.get(results.KEY, {})
        mask = self._current_mask(found)
        start = state.get("start_mask")
        kept = state.get("kept_mask")  # strokes painted before a refine, which the refine held
        kept = np.asarray(kept, bool) if kept is not None and np.shape(kept) == mask.shape else np.zeros(mask.shape, bool)
        edited = int(((mask != start) | kept).sum()) if start is not None and start.shape == mask.shape else None
        keep = ("source", "image_sha256", "checkpoint", "checkpoint_id", "seed", "steps", "samples", "device", "flat_field",
                "threshold", "clicks", "level")  # clicks: _qt/refine.py
        return {
            **{k: state.get(k) for k in keep},
            **({"later_proposal": state["later_proposal"]} if state.get("later_proposal") else {}),  # results.LATER_PROPOSAL_KEYS
            "image_layer": layer.name,
            "start": state.get("start"),
            "edited_pixels": edited,
            "annotator": self.annotator.value or None,
            "readout": self.readout_values(),
        }

    def accept(self, *_):
        def run():
            layer, found = self._layers(writing=True)
            store = CorrectionsStore(SETTINGS.get().store_path)
            source = common.case_source(layer)  # the mask was made for it (checked)
            case_id = cases_model.CaseModel.id_for(source)
            self.cases.check_source(source)  # before the store is written
            try:
                check_not_outline(self._current_mask(found))  # training would leave such a case out
            except AmbiguousMaskError as err:
                raise ValueError(f"not accepted: {err} (Clean up with 'fill holes' does it)") from None
            overwrite = False
            if store.has(case_id):
                other = store.source_of(case_id)
                another = bool(other) and not cases_model.same_source(other, source)
                whose = (f"{case_id} was accepted before from another file, {other}: the store holds one case per name, so that "
                         "file's correction leaves the store and fine-tuning" if another else f"{case_id} was accepted before")
                shown = "\n".join(f"  {Path(p).relative_to(store.root)}" for p in store.paths(case_id))
                question = f"{whose}. Accept this mask in its place?\nThese files in {store.root} will be replaced:\n{shown}"
                if not self.confirm("Accept again", question):
                    self.status.value = "not accepted (kept the stored version)"
                    return None
                overwrite = True
            record = self._record(layer, found)
            path = store.accept(case_id, results.image_data(layer), self._current_mask(found), record, overwrite)
            found["mask"].metadata.setdefault(results.KEY, {})["accepted"] = True
            self.cases.mark_accepted(source, self._current_mask(found), record)
            check = store.check()  # damaged cases (a bad record, a missing or mismatched file) are left out and named
            self.status.value = f"accepted {case_id} ({len(check.ids)} in store)"
            if check.problems:
                common.notify(f"{len(check.problems)} damaged cases left out of the store: {check.problems[0]}", warning=True)
            return path

        return self._guard(run)

    def export(self, *_):
        def run():
            layer, found = self._layers(writing=True)
            folder = self.export_folder.value
            if not str(folder) or str(folder) == ".":
                raise ValueError("choose an export folder")
            if self._chosen_folder == (str(folder), True) and not Path(folder).exists():  # its drive unplugged: never made anew
                raise ValueError(f"{one_line(folder)}: the export folder is gone since it was chosen (a drive unplugged?); choose it again")
            proposals = found["proposals"]
            probability = proposals.metadata.get(results.KEY, {}).get("probability") if proposals is not None else None
            uncertainty = np.asarray(found["uncertainty"].data) if found["uncertainty"] is not None else None
            stem = cases_model.CaseModel.id_for(common.case_source(layer))
            args = (folder, stem, self._current_mask(found), probability, uncertainty, self._record(layer, found))
            replaced, removed = existing_files(folder, stem, probability is not None, uncertainty is not None)
            overwrite = False
            if replaced or removed:
                if not self.confirm("Replace exported files", common.replace_question(stem, folder, replaced, removed)):
                    self.status.value = "export cancelled: the files already there were kept"
                    return None
                overwrite = True
            written = export_case(*args, overwrite=overwrite)
            self.status.value = f"exported {len(written)} files to {common.path_tail(folder)}"
            return written

        return self._guard(run)


def _wait_for_refine(image_layer, action: str) -> None:
    """ValueError while a refine of the image runs: it will replace the mask (what is painted meanwhile is kept)."""
    if refining.is_refining(image_layer):
        raise ValueError(f"a refine is running for this image and will replace the mask: {action} when it ends (painting is kept)")
