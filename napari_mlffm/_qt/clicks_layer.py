"""The Refine dock's clicks layer: positive and negative clicks in a Points layer ``<image> prompts``.

:class:`ClicksLayer` is mixed into :class:`napari_mlffm._qt.refine.RefineWidget`,
which provides ``viewer``, ``image``, ``positive``, ``auto``, ``status``,
``_case``, ``_answers``, ``_follow``, ``_followed_layer``, ``_counts``,
``_clicks_layers``, ``refine``, ``_guard``, ``box_layer`` and ``_closed``. Each
click is a point with a ``positive`` feature (lesion, green; skin, magenta);
**T** toggles the polarity of the next click on every image's clicks layer.
An added or removed click re-runs the refine of that image; clicks off the
image are removed; deleting the layer counts as undoing its clicks.
"""

from __future__ import annotations

import numpy as np

from model.inputs.prompts import Prompts

from .. import results
from ..layer_placement import placement
from . import common
from .prompt_layers import claim, click_polarity, is_clicks_layer, prompts_layer_name

POSITIVE_COLOR = "lime"
NEGATIVE_COLOR = "magenta"


class ClicksLayer:
    """The clicks layer's part of the Refine dock (a mixin)."""

    def prompts_layer(self):
        """The image's ``<image> prompts`` Points layer, made (in add mode) if missing."""
        image_layer, _ = self._case()
        name = prompts_layer_name(image_layer.name)
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if not is_clicks_layer(layer):
                raise ValueError(f"layer '{name}' is not a clicks layer: rename or remove it to add clicks")
            self._listen_to_clicks(layer, image_layer.name)  # a dock opened again takes over the layer's clicks
            return layer
        size = max(6.0, min(image_layer.data.shape[:2]) / 60)
        layer = self.viewer.add_points(
            np.empty((0, 2)), ndim=2, name=name, size=size, **placement(image_layer),
            features={"positive": np.zeros(0, bool)}, border_color="white",
        )
        self._listen_to_clicks(layer, image_layer.name)
        self._counts[results.real_layer(layer)] = 0
        self._show_polarity()
        layer.mode = "add"
        self.viewer.layers.selection.active = layer
        return layer

    def _listen_to_clicks(self, layer, image_name: str) -> None:
        """This dock answers ``layer``'s clicks, and its T and B keys, from now on."""
        claim(layer, self)
        self._clicks_layers[image_name] = layer
        layer.bind_key("t", lambda _layer: self.toggle_polarity(), overwrite=True)
        layer.bind_key("b", lambda _layer: self._guard(self.box_layer), overwrite=True)
        if self._follow(layer, lambda event: self._on_clicks_changed(image_name, event)):
            self._counts.setdefault(results.real_layer(layer), len(layer.data))
        self._apply_polarity(layer)

    def toggle_polarity(self) -> None:
        self.positive.value = not self.positive.value

    def _show_polarity(self, *_):
        for layer in list(self._clicks_layers.values()):  # every image's clicks: the next click is the same kind anywhere
            if layer in self.viewer.layers and is_clicks_layer(layer):
                self._apply_polarity(layer)
        if not self._closed:
            self.status.value = "next click: " + ("lesion (positive)" if self.positive.value else "skin (negative)")

    def _apply_polarity(self, layer) -> None:
        layer.feature_defaults = {"positive": bool(self.positive.value)}
        layer.current_face_color = POSITIVE_COLOR if self.positive.value else NEGATIVE_COLOR

    def _current_points(self, image=None):
        """The image's clicks layer (followed through a rename; ``image`` None: the chosen one), or None;
        ValueError for another kind of layer."""
        layer = self._followed_layer(self._clicks_layers, prompts_layer_name, image)
        if layer is not None and not is_clicks_layer(layer):
            raise ValueError(f"layer '{layer.name}' is not a clicks layer: rename or remove it to refine with clicks")
        return layer

    def _on_clicks_changed(self, image_name: str, event=None) -> None:
        action = getattr(event, "action", None)
        if action is not None and str(getattr(action, "value", action)) not in ("added", "removed"):
            return  # "adding"/"removing" come first, and moves change nothing until the next refine
        layer = getattr(event, "source", None)
        if layer is None or not self._answers(layer):
            return
        if self._drop_clicks_outside(layer, image_name):
            return
        try:
            positive = click_polarity(layer)
        except ValueError as err:
            self.status.value = common.one_line(err)
            common.notify_error(err)
            return
        if len(positive):  # an empty layer has no colours to set: assigning its own empty ones makes napari warn and reset
            layer.face_color = [POSITIVE_COLOR if p else NEGATIVE_COLOR for p in positive]
        count = len(layer.data)
        changed = count != self._counts.get(results.real_layer(layer), 0)
        self._counts[results.real_layer(layer)] = count
        image = self.viewer.layers[image_name] if image_name in self.viewer.layers else None
        if changed and self.auto.value and image is not None:
            self.refine(image)  # that image's clicks: refined even if the dock shows another one now

    def _drop_clicks_outside(self, layer, image_name: str) -> bool:
        """Remove clicks placed off the image (they would fail every later refine); True if any were."""
        image = self.viewer.layers[image_name] if image_name in self.viewer.layers else None
        if image is None or not len(layer.data):
            return False
        height, width = results.image_data(image).shape[:2]
        rows, cols = np.asarray(layer.data, float)[:, -2], np.asarray(layer.data, float)[:, -1]
        outside = ~((rows >= -0.5) & (rows < height + 0.5) & (cols >= -0.5) & (cols < width + 0.5))
        if not outside.any():
            return False
        self._counts[results.real_layer(layer)] = int((~outside).sum())  # the removal below is no new click: no refine
        layer.selected_data = set(np.flatnonzero(outside).tolist())
        layer.remove_selected()
        self.status.value = f"{int(outside.sum())} click{'s' if outside.sum() > 1 else ''} off the image removed: click on the image"
        return True

    def clicks(self, image=None) -> Prompts:
        """The current clicks (positive, negative) of the image (None: the chosen one) in its pixels, without a prior."""
        layer = self._current_points(image)
        if layer is None or not len(layer.data):
            return Prompts()
        positive = click_polarity(layer)
        points = [tuple(map(float, p)) for p in np.asarray(layer.data)[:, -2:]]
        return Prompts(
            tuple(p for p, pos in zip(points, positive) if pos), tuple(p for p, pos in zip(points, positive) if not pos)
        )

    def _on_layer_removed(self, event=None) -> None:
        """A clicks layer deleted whole counts as its clicks undone: the image is refined without them (as a box layer)."""
        for image_name, layer in list(self._clicks_layers.items()):
            if layer in self.viewer.layers:
                continue
            del self._clicks_layers[image_name]
            if len(layer.data) and self._answers(layer) and self.auto.value and image_name in self.viewer.layers:
                self._refine_after_removal(image_name)
        super()._on_layer_removed(event)

    def undo_click(self) -> None:
        layer = self._current_points()
        if layer is None or not len(layer.data):
            raise ValueError("no click to undo")
        layer.selected_data = {len(layer.data) - 1}
        layer.remove_selected()
