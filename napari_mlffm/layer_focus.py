"""Which image the annotator is working on, and keeping it so while results land in the background.

The Review and Refine docks follow the selected layer's image
(:func:`napari_mlffm._qt.common.follow_active_image`). napari selects every
layer it inserts, so a proposal landing for another image (Propose masks run
for image b while the annotator reviews a, or Propose all in Cases) would
move the docks, and Shift-A would accept that image's unreviewed proposal.
:class:`Focus` prevents this: while the plugin inserts a result's layers the
docks do not follow, and afterwards the new mask takes the selection only if
the annotator was on that image's layers (or nothing was selected and it is
the only image); otherwise the selection goes back where it was (or stays
empty).
"""

from __future__ import annotations

from typing import Any

from napari.layers import Image

CASE_LAYER_SUFFIXES = (" mask", " proposals", " uncertainty", " prompts", " box")
"""The names of an image's result, clicks and box layers: ``<image>`` and one of these."""

_PLACING = [0]  # > 0 while the plugin inserts layers: the docks do not follow the selection napari gives them


def real_layer(layer: Any) -> Any:
    """The layer (or viewer) behind the proxy a dock is handed (napari's PublicOnlyProxy), or the object itself.

    Each access through a proxied viewer makes a new proxy, so layers are compared, and used as keys, through this."""
    return getattr(layer, "__wrapped__", layer)


def owner_image_name(viewer, layer) -> str | None:
    """The name of the image ``layer`` belongs to: its own for an image layer, ``<image>`` for ``<image> mask``
    and the other result, clicks and box layers of an image in the viewer; None for any other layer."""
    if layer is None:
        return None
    name = layer.name
    for suffix in CASE_LAYER_SUFFIXES:
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and base in viewer.layers and isinstance(viewer.layers[base], Image):
            return base
    return name if isinstance(layer, Image) else None


def placing() -> bool:
    """True while the plugin inserts a result's layers (the selection napari gives them is not the annotator's)."""
    return _PLACING[0] > 0


class Focus:
    """Taken before a result lands for ``image_layer``; :meth:`settle` after its layers are in.

    ``with focus:`` marks the insertion (the docks ignore the selection
    changes it makes); :meth:`settle` then selects the new mask, ready to
    paint, if the annotator was on ``image_layer`` or its layers, and else
    gives the selection back to the layer that had it (none if none had it).
    """

    def __init__(self, viewer, image_layer: Image) -> None:
        self.viewer = viewer
        self.previous = viewer.layers.selection.active
        if self.previous is None:  # nothing selected (the mask was just deleted, say): the mask's if its image is the only one
            images = [layer for layer in viewer.layers if isinstance(layer, Image) and owner_image_name(viewer, layer) == layer.name]
            self.mine = len(images) == 1 and real_layer(images[0]) is real_layer(image_layer)
        else:
            self.mine = real_layer(self.previous) is real_layer(image_layer) or owner_image_name(viewer, self.previous) == image_layer.name

    def __enter__(self) -> Focus:
        _PLACING[0] += 1
        return self

    def __exit__(self, *exc: object) -> None:
        _PLACING[0] -= 1

    def settle(self, mask) -> None:
        selection = self.viewer.layers.selection
        if self.mine:
            selection.active = mask
            mask.mode = "paint"
        elif self.previous is not None and self.previous in self.viewer.layers:
            selection.active = self.previous
        else:
            selection.clear()
