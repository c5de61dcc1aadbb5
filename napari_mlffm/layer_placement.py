"""Where a case's layers go: on the image, as it is scaled, moved, turned or sheared, and following it when it moves.

A proposal's layers, its clicks and its box are made with the image's
placement (:func:`placement`), and :func:`follow_image_placement` moves them
with the image from then on, so a click still lands on the image pixel under
the cursor.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
from napari.layers import Image

from .layer_focus import real_layer


def placement(image_layer, leading: int = 0) -> dict[str, Any]:
    """Keyword arguments that put a new layer where the image's last two axes are: scale, translate, rotate, shear, affine.

    ``leading`` axes before them (the proposals' sample axis) get scale 1,
    no shift and no rotation. The image's own leading axes, if any, are dropped.
    """
    def grown(matrix: np.ndarray) -> np.ndarray:  # an (n, n) transform of the last two axes, with identity in front
        n = leading + matrix.shape[0]
        out = np.eye(n)
        out[leading:, leading:] = matrix
        return out

    rotate = np.asarray(image_layer.rotate, float)[-2:, -2:]
    affine = np.asarray(image_layer.affine.affine_matrix, float)
    affine2 = np.eye(3)
    affine2[:2, :2], affine2[:2, 2] = affine[-3:-1, -3:-1], affine[-3:-1, -1]
    shear = np.zeros(((leading + 2) * (leading + 1)) // 2)
    shear[-1] = np.asarray(image_layer.shear, float)[-1] if len(image_layer.shear) else 0.0
    return {
        "scale": (1.0,) * leading + tuple(np.asarray(image_layer.scale, float)[-2:]),
        "translate": (0.0,) * leading + tuple(np.asarray(image_layer.translate, float)[-2:]),
        "rotate": grown(rotate), "shear": shear, "affine": grown(affine2),
    }


_PLACEMENT_EVENTS = ("scale", "translate", "rotate", "shear", "affine")
_FOLLOWED: weakref.WeakSet = weakref.WeakSet()


def follow_image_placement(viewer, image_layer: Image) -> None:
    """From now on, moving, scaling or turning the image moves its result, clicks and box layers with it
    (a click then still lands on the image pixel under the cursor). Connected once per image layer."""
    image = real_layer(image_layer)
    if image in _FOLLOWED:
        return
    _FOLLOWED.add(image)
    viewer_ref, image_ref = weakref.ref(real_layer(viewer)), weakref.ref(image)

    def on_moved(*_):
        viewer_now, image_now = viewer_ref(), image_ref()
        if viewer_now is None or image_now is None or image_now not in viewer_now.layers:
            return
        for suffix, leading in ((" proposals", 1), (" uncertainty", 0), (" mask", 0), (" prompts", 0), (" box", 0)):
            name = image_now.name + suffix
            layer = viewer_now.layers[name] if name in viewer_now.layers else None
            if layer is not None and layer is not image_now:
                place(layer, image_now, leading)

    for name in _PLACEMENT_EVENTS:
        emitter = getattr(image.events, name, None)
        if emitter is not None:
            emitter.connect(on_moved)


def place(layer, image_layer, leading: int = 0) -> None:
    """Move an existing ``layer`` to where the image is (see :func:`placement`)."""
    for name, value in placement(image_layer, leading).items():
        setattr(layer, name, value)
