"""The Refine dock's prompt layers: their names, which dock answers their events, and a box layer's shapes.

A dock closed and opened again leaves the old widget alive but undocked
(napari only takes it out of its dock), still connected to the layers'
events. So each clicks or box layer is answered by one dock, the newest to
take it (:func:`claim`), and the others ignore its events.
"""

from __future__ import annotations

import weakref

import numpy as np
from napari.layers import Points

from model.inputs.box import Box

from ..layer_focus import real_layer

BOX_COLOR = "yellow"

_ANSWERED_BY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Layer -> a weak reference to the dock that answers its events."""


def prompts_layer_name(image_name: str) -> str:
    return f"{image_name} prompts"


def box_layer_name(image_name: str) -> str:
    return f"{image_name} box"


def is_clicks_layer(layer) -> bool:
    """True for a Points layer that carries the clicks' ``positive`` feature (what the Refine dock makes)."""
    return isinstance(layer, Points) and "positive" in layer.features


def click_polarity(layer) -> np.ndarray:
    """(N,) bool: which of a clicks layer's points are lesion clicks; ValueError for a ``positive`` feature that
    holds anything but True/False (or 0/1): an edited table must not turn "False" or NaN into a lesion click."""
    values = np.asarray(layer.features["positive"])
    if values.dtype == np.bool_:
        return values.astype(bool)
    if values.dtype.kind in "iuf" and np.isin(values, (0, 1)).all():
        return values.astype(bool)
    odd = next((v for v in values.tolist() if v not in (0, 1, True, False) or isinstance(v, str)), values.tolist()[:1])
    raise ValueError(f"clicks layer '{layer.name}': its 'positive' column holds {odd!r:.30}, not True/False: fix or remove that click")


def claim(layer, dock) -> None:
    """From now on ``dock`` answers ``layer``'s events."""
    _ANSWERED_BY[real_layer(layer)] = weakref.ref(dock)


def is_answered_by(layer, dock) -> bool:
    owner = _ANSWERED_BY.get(real_layer(layer))
    return owner is not None and owner() is dock


def box_of(layer, index: int) -> Box:
    """The box of shape ``index`` of a Shapes layer, in its data's (row, col); ValueError unless an axis-aligned rectangle."""
    if str(layer.shape_type[index]) != "rectangle":
        raise ValueError(f"a {layer.shape_type[index]} is not a box: draw a rectangle around the lesion")
    return Box.from_rectangle(np.asarray(layer.data[index])[:, -2:])
