"""The "Refine with clicks" dock widget: the clinician's clicks and painted edits steer the proposals.

For an image with proposals (``<image> mask`` exists), it adds a Points layer
``<image> prompts``. Each point is a click: positive (lesion, green) or
negative (skin, magenta); **T** toggles the polarity of the next click, as
in micro-sam. Each added click (with "refine on each click" on), the Refine
button or **Shift-R** re-runs the proposals with:

* the clicks, and the current mask as the prior, as input, for weights
  trained with prompts (``mlffm train --click-prob``); for other weights,
  each click becomes a small disk of kept lesion / skin pixels;
* with "a click takes the probable region around it" (on by default), the
  region connected to each click through the model's probable lesion (or
  skin), within a few times the click's distance to the mask's outline,
  is taken whole (:mod:`model.click_reach`);
* the pixels painted since the model last wrote the mask as *kept pixels*:
  they are held fixed while the rest is resampled, and stay in every
  proposal (:mod:`model.inputs.kept`);
* a box around the lesion, dragged in a Shapes layer ``<image> box`` (**B**
  in the clicks layer, or "Draw a box"): everything outside it is held as
  skin (:mod:`model.inputs.box`). The newest box counts; drawing, moving
  or deleting it (or its layer) re-runs, as a click does. A shape that is
  not an axis-aligned rectangle, or a box too small to hold a lesion (a
  click meant to select), is refused in the status line and the earlier
  box stays.

The proposals, uncertainty and mask layers update in place (the proposals
slider keeps working); "Undo last click" removes the newest click and
re-runs. The clicks, the box and the number of kept pixels go into the
mask's provenance, so Accept records them. The model, device, steps and
seed are those that made the image's proposal. A refine draws fewer
proposals than a first proposal ("proposals per refine": the model's refine
default, 8 for the shipped weights, never more than the proposal drew), so
a click is answered sooner; "as the proposal" draws the same number.
"""

from __future__ import annotations

import weakref

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Label, PushButton
from napari.layers import Points, Shapes
from napari.qt.threading import create_worker

from model.inputs.box import Box
from model.inputs.kept import KeptPixels
from model.inputs.prompts import Prompts
from training.corrections.store import image_sha256

from .. import cases_model, refining, results
from . import common, dock_life
from .box_layer import BoxLayer
from .clicks_layer import ClicksLayer
from .dock_container import DockContainer
from .refine_job import lesion_clicks_outside, refine_job
from .prompt_layers import box_layer_name, is_answered_by, is_clicks_layer, prompts_layer_name

PER_REFINE_CHOICES = ("fewer, faster", "as the proposal")  # the model's refine default (8 shipped), or the proposal's number


class RefineWidget(ClicksLayer, BoxLayer, common.RunCancel, DockContainer):
    """Clicks in a Points layer, a polarity toggle, Refine / Undo, and the refine time in the status line."""

    _error_prefix = "refine failed: "

    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.image = ComboBox(label="image", choices=common.image_layer_choices(napari_viewer), nullable=True)
        self.positive = CheckBox(text="next click is lesion (T toggles)", value=True)
        self.auto = CheckBox(text="refine on each click", value=True)
        self.reach = CheckBox(text="a click takes the probable region around it", value=True)
        self.per_refine = ComboBox(label="proposals per refine", choices=PER_REFINE_CHOICES, value=PER_REFINE_CHOICES[0])
        self.prompts_button = PushButton(text="Add clicks layer")
        self.box_button = PushButton(text="Draw a box around the lesion (B)")
        self.refine_button = PushButton(text="Refine (Shift-R)")
        self.undo_button = PushButton(text="Undo last click")
        self.status = Label(value="")
        self.extend(
            [self.image, self.prompts_button, self.box_button, self.positive, self.auto, self.reach, self.per_refine, self.refine_button, self.undo_button, self.status]
        )
        self._pending: list = []  # image layers whose clicks changed while a refine ran: refined in turn after it
        self._counts = weakref.WeakKeyDictionary()  # clicks layer -> its number of clicks when last seen (kept through a rename)
        self._init_box_layer()
        self._clicks_layers: dict[str, Points] = {}  # image name -> its clicks layer (likewise)
        self._listened: list = []  # the clicks and box layers whose events this widget follows (compared with ==: layers reach a dock as proxies)
        self.prompts_button.changed.connect(lambda *_: self._guard(self.prompts_layer))
        self.box_button.changed.connect(lambda *_: self._guard(self.box_layer))
        self.refine_button.changed.connect(self.run_or_cancel)
        self.undo_button.changed.connect(lambda *_: self._guard(self.undo_click))
        self.positive.changed.connect(self._show_polarity)
        napari_viewer.layers.events.inserted.connect(self.reset_choices)
        napari_viewer.layers.events.removed.connect(self.reset_choices)
        napari_viewer.layers.events.removed.connect(self._on_layer_removed)
        dock_life.bind_key(napari_viewer, "Shift-R", self, lambda: self.refine())
        dock_life.watch_closing(self)  # destroyed, or closed by its dock's X
        self.finish_rows(self.status)
        self.image.changed.connect(self._take_over_layers)
        choices = [c for c in self.image.choices if c is not None]
        proposed = [c for c in choices if results.case_layers(napari_viewer, c.name)["mask"] is not None]
        self.image.value = (proposed or choices)[-1] if choices else None  # the last image that has a mask, if any
        self._take_over_layers()
        common.follow_active_image(self)  # a click on another image's clicks layer, and Shift-R, act on that image

    def _guard(self, action):
        try:
            return action()
        except ValueError as err:
            self.status.value = common.one_line(err)
            common.notify_error(err)
            return None

    # ----- the clicks layer ----------------------------------------------
    def _case(self, layer=None):
        layer = self.image.value if layer is None else layer
        if layer is None:
            raise ValueError("choose an image first")
        found = results.case_layers(self.viewer, layer.name)
        if found["mask"] is None:
            raise ValueError(f"no mask for {layer.name} yet: run Propose masks first")
        results.check_case_layers(found, layer.name, *results.image_data(layer).shape[:2])
        if not isinstance(found["mask"].metadata.get(results.KEY), dict) or "source" not in found["mask"].metadata[results.KEY]:
            raise ValueError(f"layer '{found['mask'].name}' was not made by Propose masks: run Propose masks on {layer.name} first (it keeps your mask)")
        return layer, found

    def _answers(self, layer) -> bool:
        return not self._closed and is_answered_by(layer, self)

    def _follow(self, layer, on_data) -> bool:
        """Connect ``on_data`` to the layer's data events once per dock; True if it was connected now."""
        if any(known == layer for known in self._listened):
            return False
        self._listened.append(layer)
        layer.events.data.connect(on_data)
        return True

    def _is_chosen(self, image_name: str) -> bool:
        return self.image.value is not None and self.image.value.name == image_name

    def _followed_layer(self, followed: dict, name_of, image=None):
        """The image's layer in ``followed`` (kept through a rename), else the layer named ``name_of(image)``, else None.
        ``image`` None: the chosen image."""
        image = self.image.value if image is None else image
        if image is None:
            return None
        layer = followed.get(image.name)
        if layer is not None and layer in self.viewer.layers:
            return layer
        name = name_of(image.name)
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _take_over_layers(self, *_) -> None:
        """Answer the chosen image's existing clicks and box layers (a dock opened again takes them over)."""
        image = self.image.value
        if image is None or self._closed:
            return
        for name, usable, listen in (
            (prompts_layer_name(image.name), is_clicks_layer, self._listen_to_clicks),
            (box_layer_name(image.name), lambda layer: isinstance(layer, Shapes), self._listen_to_box),
        ):
            layer = self.viewer.layers[name] if name in self.viewer.layers else None
            if layer is not None and usable(layer):
                listen(layer, image.name)

    # ----- running -------------------------------------------------------
    def refine(self, image=None):
        """Start a refine of ``image`` (None: the chosen one), or, if one runs, refine it when that ends."""
        image = self.image.value if image is None else image
        if self.running:
            if image is not None and not any(results.real_layer(image) is results.real_layer(known) for known in self._pending):
                self._pending.append(image)
            return None
        return self.start(image)

    def start(self, image=None):
        try:
            image_layer, found = self._case(image)
            if refining.is_refining(image_layer):  # a dock opened again, while the old one's refine runs
                raise ValueError(f"a refine of {image_layer.name} is running: wait for it to end")
        except ValueError as err:
            self.status.value = common.one_line(err)
            common.notify_error(err)
            return None
        mask_layer = found["mask"]
        state = mask_layer.metadata.setdefault(results.KEY, {})
        current = np.asarray(mask_layer.data) > 0
        kept_mask = results.painted_pixels(mask_layer)  # painted before earlier refines and since the model last wrote the mask
        painted = KeptPixels(kept_mask, current) if kept_mask is not None else None
        if kept_mask is None:
            kept_mask = np.zeros_like(current)
        try:
            prompts = self.clicks(image_layer).with_prior(current)
            box = self.box(image_layer)
            if box is not None:
                box.window(*current.shape)  # one line now for a box that misses the image, not a failed worker
        except ValueError as err:
            self.status.value = common.one_line(err)
            common.notify_error(err)
            return None
        checkpoint = state.get("checkpoint")
        checkpoint = None if checkpoint in (None, "shipped default") else checkpoint
        started_with = image_layer.data  # a result for other pixels is dropped
        args = (checkpoint, state.get("device", "cpu"), results.image_data(image_layer), prompts, painted)
        sampling = (state.get("samples"), state.get("steps"), int(state.get("seed", 0)))
        flat = state.get("flat_field")  # the proposal's own; absent in records made before it existed
        worker = create_worker(
            refine_job, *args, *sampling, flat if isinstance(flat, bool) else None, bool(self.reach.value), box,
            self.per_refine.value == PER_REFINE_CHOICES[0], _start_thread=False
        )
        self._pending = [known for known in self._pending if results.real_layer(known) is not results.real_layer(image_layer)]
        refining.set_refining(image_layer, mask_layer, True)  # Propose, Grow / Shrink and another refine wait: this one will replace the mask
        worker.finished.connect(lambda: refining.set_refining(image_layer, mask_layer, False))
        where = " in a box" if box is not None else ""
        self._launch(
            worker, self.refine_button, f"refining with {prompts.clicks} clicks{where}...",
            lambda result: self._on_done(image_layer, prompts, kept_mask, result, box, current, started_with, mask_layer),
        )
        return worker

    def cancel(self, *_):
        self._pending = []
        if self.worker is not None:
            self.worker.quit()
            if not self._closed:
                self.status.value = "refine cancelled"

    def _on_done(
        self, image_layer, prompts: Prompts, kept_mask: np.ndarray, result, box: Box | None = None,
        sent: np.ndarray | None = None, started_with=None, mask_layer=None,
    ):
        """Show a refine's result. ``sent``: (H, W) bool, the mask when the refine started; strokes painted
        since then are laid over the refined mask and held as painted pixels, not lost."""
        proposal, info = result
        if self._closed:
            return
        if proposal is None:
            self._on_error(info["error"])
            return
        if image_layer not in self.viewer.layers or (started_with is not None and image_layer.data is not started_with):
            self._on_error(f"image '{image_layer.name}' was closed or given other pixels during the refine; refine dropped")
            return
        found = results.case_layers(self.viewer, image_layer.name)
        if found["mask"] is None and mask_layer is not None and mask_layer in self.viewer.layers:
            self.status.value = f"'{image_layer.name}' or its mask was renamed during the refine; refine dropped: refine again"
            return
        if found["mask"] is None:
            self.status.value = "mask layer was closed; refine dropped"
            return
        if mask_layer is not None and results.real_layer(found["mask"]) is not results.real_layer(mask_layer):
            self.status.value = f"the mask of '{image_layer.name}' was made again during the refine; refine dropped: refine again"
            return
        try:  # a layer of another kind or size put under a result name meanwhile is left alone
            results.check_case_layers(found, image_layer.name, *proposal.probability.shape)
        except ValueError as err:
            self._on_error(err)
            return
        samples = proposal.samples.astype(np.uint8)
        if found["proposals"] is not None:
            results.replace_data(found["proposals"], samples)  # a refine may draw another number of samples
            ran = {k: v for k, v in found["mask"].metadata.get(results.KEY, {}).items() if k in results.LATER_PROPOSAL_KEYS}  # the run it went on from
            found["proposals"].metadata[results.KEY] = {
                **found["proposals"].metadata.get(results.KEY, {}), **ran, "probability": proposal.probability, "threshold": proposal.threshold,
            }
        if found["uncertainty"] is not None:
            found["uncertainty"].data = proposal.uncertainty
        consensus = proposal.consensus
        mask = found["mask"]
        now = np.asarray(mask.data) > 0
        during = now != sent if sent is not None and sent.shape == now.shape == consensus.shape else np.zeros(consensus.shape, bool)
        shown = np.where(during, now, consensus)
        kept_mask = kept_mask | during
        record = {**prompts.to_record(), "prior": info.get("refine_mode") in ("prompts", "both"), "kept_pixels": int(kept_mask.sum()), "mode": info.get("refine_mode"),
                  "reach": bool(info.get("click_reach")), "box": box.to_record() if box is not None else None,
                  "samples": len(proposal.samples)}
        state = mask.metadata.setdefault(results.KEY, {})
        state.pop("level", None)  # a new probability: the outline starts again at its threshold
        state.pop("later_proposal", None)  # the mask comes from this refine now, not from a proposal it was kept through
        state.update(
            start=f"refined ({prompts.clicks} clicks)", start_mask=consensus.copy(),
            kept_mask=kept_mask.copy(), clicks=record, refine_seconds=round(proposal.seconds, 3), threshold=proposal.threshold,
        )
        if "image_sha256" in state:  # the refine ran on the image's pixels as they are now
            state["image_sha256"] = image_sha256(results.image_data(image_layer))
        cases = cases_model.for_viewer(self.viewer)  # the case keeps the refined proposal, so stepping back shows it
        source = common.case_source(image_layer)
        known = cases.for_source(source)
        try:
            ran = {k: state[k] for k in results.LATER_PROPOSAL_KEYS if k in state}  # the run the refine went on from
            case = cases.set_proposal(source, proposal, {**(known.info if known is not None else {"source": source}), **ran})
            case.extra["painted"] = kept_mask.copy() if kept_mask.any() else None  # held strokes: the case is edited
        except ValueError:
            pass  # no case can be kept for this image (the open folder's file has its id): its layers hold the result
        results.write_mask(mask, shown)
        outside = lesion_clicks_outside(prompts, box, consensus.shape)
        self.status.value = (
            f"refined with {len(prompts.positive)} lesion / {len(prompts.negative)} skin clicks{' in a box' if box is not None else ''}, "
            f"{record['kept_pixels']} kept px, {len(proposal.samples)} proposals in {proposal.seconds:.2f} s ({record['mode']})"
            + (f"; {outside} lesion click{'s' if outside > 1 else ''} outside the box had no effect: redraw the box" if outside else "")
            + (f"; the {int(during.sum())} px you painted meanwhile were kept" if during.any() else "")
        )

    def _on_finished(self):
        self._end_run(self.refine_button, "Refine (Shift-R)")
        while self._pending and not self._closed:
            image = self._pending.pop(0)
            if image in self.viewer.layers and self.start(image) is not None:
                break
