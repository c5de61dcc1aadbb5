"""Which images a refine is running for: while it runs, nothing else may replace the image's mask.

The mark is kept on the image layer (through :func:`~napari_mlffm.layer_focus.real_layer`, so a
dock's proxy and the layer itself are one key), not on its mask, so deleting or renaming the mask
layer does not lift it, and a second dock sees the refine another started.
"""

from __future__ import annotations

import weakref

from napari.layers import Image, Labels

from .layer_focus import real_layer

_REFINING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Image layer -> a weak reference to the mask layer a refine of it is running for."""


def set_refining(image_layer: Image, mask_layer: Labels, running: bool) -> None:
    """Mark a refine of ``image_layer`` as running (or ended) for ``mask_layer``.

    While it runs, Propose, Grow / Shrink, Make mask and a second refine of the
    image (from a dock opened again, say) wait: the refine will replace the mask.
    The mark is on the image, so deleting the mask layer does not lift it.
    """
    image, mask = real_layer(image_layer), real_layer(mask_layer)
    if running:
        _REFINING[image] = weakref.ref(mask)
        return
    known = _REFINING.get(image)
    if known is not None and known() in (mask, None):
        del _REFINING[image]


def is_refining(image_layer: Image) -> bool:
    return real_layer(image_layer) in _REFINING


def check_not_refining(image_layer: Image) -> None:
    """ValueError while a refine of the image runs: it will replace the mask, and a proposal landing meanwhile would be mixed in."""
    if is_refining(image_layer):
        raise ValueError(f"a refine of '{image_layer.name}' is running and will replace its mask: propose again when it ends")
