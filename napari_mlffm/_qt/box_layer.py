"""The Refine dock's box layer: a rectangle around the lesion, dragged in a Shapes layer ``<image> box``.

:class:`BoxLayer` is mixed into :class:`napari_mlffm._qt.refine.RefineWidget`,
which provides ``viewer``, ``image``, ``auto``, ``status``, ``_case``,
``_answers``, ``_follow``, ``_followed_layer``, ``_is_chosen``,
``_listened``, ``refine`` and ``_closed``. The newest box counts; drawing,
moving or deleting it (or its whole layer) re-runs, as a click does. A
shape that is not an axis-aligned rectangle, or a box under
:func:`model.inputs.box.min_box_side` (what a press meant to select draws),
is refused in the status line and the earlier box stays; so is a box
moved off the image, shrunk below that size or rotated: it goes back to
where it was.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Shapes
from qtpy.QtCore import QTimer

from model.inputs.box import Box

from ..layer_placement import placement
from . import common
from .prompt_layers import BOX_COLOR, box_layer_name, box_of, claim


class BoxLayer:
    """The box layer's part of the Refine dock (a mixin)."""

    def _init_box_layer(self) -> None:
        self._trimming_boxes = False
        self._box_layers: dict[str, Shapes] = {}  # image name -> its box layer (renaming the layer keeps it)
        self._good_boxes: dict[str, np.ndarray] = {}  # image name -> the (4, 2) corners of its last box that was a box

    def _listen_to_box(self, layer, image_name: str) -> None:
        """This dock answers the box layer's events from now on."""
        claim(layer, self)
        self._box_layers[image_name] = layer
        self._follow(layer, lambda event: self._on_box_changed(image_name, event))

    def box_layer(self):
        """The image's ``<image> box`` Shapes layer, made if missing, active and ready to drag a rectangle."""
        image_layer, _ = self._case()
        name = box_layer_name(image_layer.name)
        layer = self._box_layers.get(image_layer.name)
        if layer is None or layer not in self.viewer.layers:
            if name in self.viewer.layers:
                layer = self.viewer.layers[name]
                if not isinstance(layer, Shapes):
                    raise ValueError(f"layer '{name}' is not a Shapes layer: rename or remove it to draw a box")
            else:
                layer = self.viewer.add_shapes(
                    name=name, ndim=2, **placement(image_layer),
                    edge_color=BOX_COLOR, face_color="transparent", edge_width=max(2.0, min(image_layer.data.shape[:2]) / 200),
                )
        self._listen_to_box(layer, image_layer.name)
        self.viewer.layers.selection.active = layer
        layer.mode = "add_rectangle"
        return layer

    def _current_box_layer(self, image=None):
        return self._followed_layer(self._box_layers, box_layer_name, image)

    def _on_box_changed(self, image_name: str, event=None) -> None:
        action = str(getattr(getattr(event, "action", None), "value", getattr(event, "action", "")))
        if self._closed or self._trimming_boxes or action not in ("added", "removed", "changed"):
            return
        layer = self._box_layers.get(image_name)
        if layer is None or layer not in self.viewer.layers or not self._answers(layer):
            return
        if action in ("added", "changed") and len(layer.data):
            image = self.viewer.layers[image_name] if image_name in self.viewer.layers else None
            try:
                box = box_of(layer, len(layer.data) - 1)
                if image is not None:
                    box.window(*image.data.shape[:2])
            except ValueError as err:  # no box: a new shape goes, an edited one goes back; the earlier box stays
                self._undo_bad_box(layer, image_name, action)
                self.status.value = common.one_line(err)
                common.notify_error(err)
                return
            if len(layer.data) > 1:  # the newest box replaces the earlier one
                self._remove_shapes(layer, set(range(len(layer.data) - 1)))
            self._good_boxes[image_name] = np.array(layer.data[-1], copy=True)
        elif action == "added":
            return  # napari drops an unfinished shape but still says "added"
        if self.auto.value and self._is_chosen(image_name):
            self.refine()

    def _undo_bad_box(self, layer, image_name: str, action: str) -> None:
        """Take a shape that is no box off ``layer``: a new one is removed, an edited box returns to its last good corners."""
        good = self._good_boxes.get(image_name)
        if action == "added" or good is None or len(layer.data) != 1:
            self._remove_shapes(layer, {len(layer.data) - 1})
            return
        self._trimming_boxes = True
        try:
            layer.data = [(good, "rectangle")]
        finally:
            self._trimming_boxes = False

    def _remove_shapes(self, layer, indices: set[int]) -> None:
        self._trimming_boxes = True
        try:
            layer.selected_data = indices
            layer.remove_selected()
        finally:
            self._trimming_boxes = False

    def _on_layer_removed(self, event=None) -> None:
        """A box layer deleted whole counts as its box deleted: the image is refined without it."""
        self._listened = [layer for layer in self._listened if layer in self.viewer.layers]
        for image_name, layer in list(self._box_layers.items()):
            if layer in self.viewer.layers:
                continue
            del self._box_layers[image_name]
            if len(layer.data) and self._answers(layer) and self.auto.value and self._is_chosen(image_name):
                self._refine_after_removal(image_name)

    def _refine_after_removal(self, image_name: str) -> None:
        """Refine the image once the removal is over, if it is still there: napari's ``Viewer.close()`` removes every
        layer, box and clicks layers first, and that is the viewer closing, not a box or clicks undone."""
        def later():
            if not self._closed and image_name in self.viewer.layers:
                self.refine(self.viewer.layers[image_name])

        QTimer.singleShot(0, later)

    def box(self, image=None) -> Box | None:
        """The newest box of the image's (None: the chosen one's) box layer, in the image's pixels, or None;
        ValueError for a shape that is no box."""
        layer = self._current_box_layer(image)
        if layer is None:
            return None
        if not isinstance(layer, Shapes):
            raise ValueError(f"layer '{layer.name}' is not a Shapes layer: rename or remove it to refine in a box")
        if not len(layer.data):
            return None
        return box_of(layer, len(layer.data) - 1)
