"""The layers a proposal produces for one image, and the case state kept in their metadata.

For an image layer named ``<image>``:
* ``<image> proposals``: Labels (N, H, W), one proposal per slider position;
* ``<image> uncertainty``: Image (H, W) float32;
* ``<image> mask``: Labels (H, W), the mask under review.

The mask layer's ``metadata["mlffm"]`` holds the provenance (source file,
checkpoint, seed, steps, samples, device), the starting point, and the
starting mask, so the number of edited pixels can be counted at accept time.
Everything here must run on napari's main thread.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image, Labels

from model import Proposal
from training.corrections.store import image_sha256

from .cases_model import same_source
from .layer_focus import Focus, real_layer
from .layer_placement import follow_image_placement, place, placement
from .refining import check_not_refining

KEY = "mlffm"
OUTLINE_COLOUR = (0.0, 1.0, 1.0, 1.0)  # cyan: high contrast on skin and on dark, pigmented lesions
OUTLINE_PX = 2
_style = {"outline": True}  # how new mask layers are shown; the Review widget's "outline" box sets it


def set_outline_default(outline: bool) -> None:
    _style["outline"] = bool(outline)


def style_mask(layer: Labels, outline: bool | None = None) -> None:
    """Show a mask as a high-contrast outline (cyan, ``OUTLINE_PX`` wide, opaque) or as a filled overlay (50 %)."""
    from napari.utils.colormaps import DirectLabelColormap

    outline = _style["outline"] if outline is None else outline
    layer.colormap = DirectLabelColormap(color_dict={None: (0.0, 0.0, 0.0, 0.0), 1: OUTLINE_COLOUR})
    layer.contour = OUTLINE_PX if outline else 0
    layer.opacity = 1.0 if outline else 0.5


def image_data(layer: Image) -> np.ndarray:
    """An image layer's pixels: its data, or its finest level when multiscale."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return np.asarray(data)


def layer_names(image_name: str) -> dict[str, str]:
    return {kind: f"{image_name} {kind}" for kind in ("proposals", "uncertainty", "mask")}


def find(viewer, name: str):
    return viewer.layers[name] if name in viewer.layers else None


def case_layers(viewer, image_name: str) -> dict[str, Any]:
    """{'proposals': layer or None, 'uncertainty': ..., 'mask': ...} for an image layer name."""
    return {kind: find(viewer, name) for kind, name in layer_names(image_name).items()}


_KINDS = {"proposals": Labels, "uncertainty": Image, "mask": Labels}


def _size(shape) -> str:
    return " x ".join(map(str, tuple(shape)[::-1]))


def check_case_layers(
    found: dict[str, Any], image_name: str, height: int, width: int, sized: tuple[str, ...] = ("proposals", "uncertainty", "mask")
) -> None:
    """ValueError naming the first of ``found`` (from :func:`case_layers`) that is not the image's result layer.

    Each must be of its kind (Labels, Image, Labels) and dimensions: proposals
    (N, H, W), uncertainty and mask (H, W); the kinds named in ``sized`` must
    also fit the (H, W) image. A layer of another kind or size under that name
    (another image's, or the user's own) is refused, never reshaped, so
    nothing in it is lost.
    """
    dimensions = {"proposals": 3, "uncertainty": 2, "mask": 2}
    for kind, layer in found.items():
        if layer is None:
            continue
        if not isinstance(layer, _KINDS[kind]):
            shown = type(getattr(layer, "__wrapped__", layer)).__name__  # a dock may hold napari's proxy of the layer
            raise ValueError(f"layer '{layer.name}' is a {shown} layer, not the {kind} of '{image_name}': rename or remove it")
        shape = tuple(np.shape(layer.data))
        if len(shape) != dimensions[kind] or (kind in sized and shape[-2:] != (height, width)):
            raise ValueError(
                f"layer '{layer.name}' ({_size(shape)}) does not fit image '{image_name}' ({width} x {height}): "
                "it belongs to another image; rename or remove it"
            )


def is_uncertainty_map(layer) -> bool:
    """Whether ``layer`` is an uncertainty map this plugin drew (it stays one after its image is removed or renamed)."""
    return isinstance(layer.metadata.get(KEY), dict) and layer.metadata[KEY].get("result") == "uncertainty"


def mask_edited(mask_layer: Labels) -> bool:
    """Whether a mask holds the clinician's work: painted since the model wrote it, strokes a refine held
    (``kept_mask``), or a non-empty mask the plugin did not make."""
    state = mask_layer.metadata.get(KEY, {})
    start = state.get("start_mask")
    if start is None:
        return bool(np.asarray(mask_layer.data).any())
    kept = state.get("kept_mask")
    if kept is not None and np.shape(kept) == np.shape(mask_layer.data) and np.asarray(kept).any():
        return True
    return not np.array_equal(np.asarray(mask_layer.data) > 0, start)


def painted_pixels(mask_layer: Labels) -> np.ndarray | None:
    """(H, W) bool: the pixels the clinician painted on a mask since the model last wrote it; None if none.

    Those are the pixels where the mask differs from what the model last
    wrote (``start_mask``: the proposal's, a refine's or an outline level's
    cut), together with the pixels painted before that (``kept_mask``). The Refine dock
    holds them fixed; the outline level keeps their values.
    """
    state = mask_layer.metadata.get(KEY, {})
    current = np.asarray(mask_layer.data) > 0
    painted = np.zeros(current.shape, bool)
    kept = state.get("kept_mask")
    if kept is not None and np.shape(kept) == current.shape:
        painted |= np.asarray(kept, bool)
    written = state.get("start_mask")
    if written is not None and np.shape(written) == current.shape:
        painted |= current != np.asarray(written, bool)
    return painted if painted.any() else None


def write_mask(layer: Labels, mask: np.ndarray) -> None:
    """Give a mask layer pixels the plugin computed: a proposal, a refine, an outline level, a clean-up.

    napari's undo history (Ctrl-Z) holds the strokes painted on the old
    pixels; undoing one after this would paint stale values back into the new
    mask (and a refine would then hold them as painted). So the history
    starts again here: what the plugin wrote is undone with its own controls
    (Undo last click, Grow / Shrink, Make mask).
    """
    layer.data = np.asarray(mask).astype(np.uint8)
    reset = getattr(real_layer(layer), "_reset_history", None)  # napari's own, called when a layer stops being editable
    if callable(reset):
        reset()


def replace_data(layer, data) -> None:
    """Give ``layer`` new data whose shape may differ, so that the viewer's sliders follow it, visible or not.

    napari (0.5/0.6) does not refresh a hidden layer's extent when its data
    changes, so a hidden proposals layer given fewer samples would leave the
    proposals slider at the old length: the layer is shown while its data
    changes, then hidden again.
    """
    shown = layer.visible
    layer.visible = True
    layer.data = data
    layer.visible = shown


LATER_PROPOSAL_KEYS = ("checkpoint", "checkpoint_id", "seed", "samples", "steps", "flat_field", "device")
"""What an edited mask's record says of a proposal run after it, which it did not start from."""


def mask_run(state: dict) -> dict:
    """What a mask layer's state says of the run its mask came from (kept with its case while it is away)."""
    return {k: state[k] for k in (*LATER_PROPOSAL_KEYS, "threshold", "image_sha256", "later_proposal") if k in state}


def add_proposal_layers(viewer, image_layer: Image, proposal: Proposal, info: dict[str, Any]) -> tuple[Labels, bool]:
    """Add or refresh the three result layers; returns (mask layer, whether an edited mask was kept).

    An existing mask with edits is never replaced: only the proposals and the
    uncertainty are refreshed. ValueError, before anything changes, when a
    layer under one of the result names is of another kind, or holds an
    edited mask of another size (:func:`check_case_layers`); an unedited
    result layer of another size is replaced. New layers sit where the image
    does (its scale, translate, rotation, shear and affine).
    """
    height, width = proposal.probability.shape
    found = case_layers(viewer, image_layer.name)
    focus = Focus(viewer, image_layer)  # new layers take the selection; the annotator's is given back
    edited = found["mask"] is not None and isinstance(found["mask"], Labels) and mask_edited(found["mask"])
    check_case_layers(found, image_layer.name, height, width, sized=("mask",) if edited else ())
    check_not_refining(image_layer)
    if edited:
        check_same_image(found["mask"], image_layer.name, info.get("source"))
    with focus:
        mask, kept = _put_proposal_layers(viewer, image_layer, proposal, info, found)
    mask.selected_label = 1
    focus.settle(mask)
    return mask, kept


def _put_proposal_layers(viewer, image_layer: Image, proposal: Proposal, info: dict[str, Any], found: dict[str, Any]) -> tuple[Labels, bool]:
    """The three result layers added or refreshed (the checks of :func:`add_proposal_layers` done); (mask, kept)."""
    names = layer_names(image_layer.name)
    samples = proposal.samples.astype(np.uint8)
    state = {
        **info, "probability": proposal.probability, "threshold": proposal.threshold,
        "mean_uncertainty": float(proposal.uncertainty.mean()),
    }
    if found["proposals"] is not None:
        replace_data(found["proposals"], samples)
        found["proposals"].metadata[KEY] = state
    else:
        viewer.add_labels(samples, name=names["proposals"], opacity=0.4, metadata={KEY: state}, visible=False, **placement(image_layer, 1))
    if found["uncertainty"] is not None:
        found["uncertainty"].data = proposal.uncertainty
    else:
        viewer.add_image(
            proposal.uncertainty, name=names["uncertainty"], colormap="inferno", blending="additive",
            contrast_limits=(0.0, 1.0), opacity=0.7, visible=False, metadata={KEY: {"result": "uncertainty"}}, **placement(image_layer),
        )
    mask = found["mask"]
    kept = mask is not None and mask_edited(mask)
    consensus = proposal.consensus
    mask_state = {**info, "start": "consensus", "start_mask": consensus.copy(), "threshold": proposal.threshold}
    if mask is None:
        mask = viewer.add_labels(consensus.astype(np.uint8), name=names["mask"], metadata={KEY: mask_state}, **placement(image_layer))
        style_mask(mask)
    elif not kept:
        write_mask(mask, consensus)
        mask.metadata[KEY] = mask_state
    else:  # the edited mask stays with the provenance of the proposal it was made from; an outline level goes
        state = {k: v for k, v in mask.metadata.get(KEY, {}).items() if k != "level"}
        state["later_proposal"] = {k: info[k] for k in LATER_PROPOSAL_KEYS if k in info}
        mask.metadata[KEY] = {**{k: v for k, v in info.items() if k not in state}, **state}
    for kind, layer in case_layers(viewer, image_layer.name).items():  # layers kept from before follow the image too
        if layer is not None:
            place(layer, image_layer, leading=1 if kind == "proposals" else 0)
    follow_image_placement(viewer, image_layer)
    return mask, kept


def check_same_image(mask_layer, image_name: str, source: str | None) -> None:
    """ValueError when an edited mask was made for another file than ``source`` (one of the same name and size,
    whose layer was removed): its edits are not this image's to keep, nor the plugin's to throw away."""
    state = mask_layer.metadata.get(KEY)
    made_for = state.get("source") if isinstance(state, dict) else None
    if isinstance(made_for, str) and isinstance(source, str) and not same_source(made_for, source):
        raise ValueError(
            f"layer '{mask_layer.name}' holds edits made on another file ({_tail(made_for)}), not on '{image_name}' "
            f"({_tail(source)}): rename or remove it, or accept it with its own image first"
        )


def check_same_pixels(mask_layer, image_name: str, image: np.ndarray) -> None:
    """ValueError when the (H, W[, C]) pixels of the image differ from those the mask was proposed for (the layer's
    data replaced, or another photo of the same name and size): the mask belongs to the other pixels. Masks
    without a recorded hash (an image that is no file's) are not checked."""
    state = mask_layer.metadata.get(KEY)
    made_for = state.get("image_sha256") if isinstance(state, dict) else None
    if isinstance(made_for, str) and made_for != image_sha256(image):
        raise ValueError(
            f"the pixels of '{image_name}' changed since its mask was made: the mask belongs to the old ones; "
            "make it again from a proposal for these pixels (Propose, then Make mask), or refine"
        )


def mask_layers_of(viewer, source: str, but: str) -> list[Labels]:
    """The plugin's mask layers (other than the one named ``but``) made for the file ``source``: a mask whose
    image or own layer was renamed."""
    found = []
    for layer in viewer.layers:
        state = layer.metadata.get(KEY) if isinstance(layer, Labels) else None
        if layer.name == but or not isinstance(state, dict) or "start_mask" not in state or np.ndim(layer.data) != 2:
            continue
        if isinstance(state.get("source"), str) and same_source(state["source"], source):
            found.append(layer)
    return found


def _tail(path: str, parts: int = 2) -> str:
    return "/".join(str(path).replace("\\", "/").split("/")[-parts:])


def set_mask(mask_layer: Labels, mask: np.ndarray, start: str, made_by: dict | None = None) -> None:
    """Replace the reviewed mask with a new starting point (a proposal or a combination).

    The edits on the old mask go with it: no pixel counts as painted any more,
    and the outline level starts again at the proposal's threshold. ``made_by``:
    the proposals layer's state; the run it names is the mask's now (not a
    proposal the old, edited mask was kept through).
    """
    state = mask_layer.metadata.setdefault(KEY, {})
    for stale in ("kept_mask", "level", "later_proposal"):
        state.pop(stale, None)
    state.update({k: made_by[k] for k in (*LATER_PROPOSAL_KEYS, "threshold", "image_sha256") if k in (made_by or {})})
    state["start"] = start
    state["start_mask"] = mask.astype(bool).copy()
    write_mask(mask_layer, mask)


def show_case_mask(viewer, image_layer: Image, case, accepted: bool = False) -> bool:
    """Put a case's mask under review (``case.mask``, with its start, level, held strokes and clicks) on the
    image; False, with nothing shown, when the case holds none of the image's size."""
    if case.mask is None or case.mask.shape != image_data(image_layer).shape[:2]:
        return False
    start_mask = case.start_mask if case.start_mask is not None else case.mask
    info, made_by = case.info or {}, case.extra.get("made_by") or {}  # the case's latest proposal; the mask's own run
    state = {**info, **made_by, "source": str(case.source), "start": case.start or "restored", "start_mask": start_mask.copy()}
    if made_by and any(made_by.get(k) != info[k] for k in LATER_PROPOSAL_KEYS if k in info):
        state["later_proposal"] = {k: info[k] for k in LATER_PROPOSAL_KEYS if k in info}  # proposed again while away
    if case.level is not None:
        state["level"] = case.level  # Grow / Shrink go on from where the reviewer left the outline
    painted = case.extra.get("painted")
    if painted is not None and painted.shape == case.mask.shape:
        state["kept_mask"] = painted.copy()
    if case.extra.get("clicks") is not None:
        state["clicks"] = case.extra["clicks"]
    if accepted:
        state["accepted"] = True
    show_mask(viewer, image_layer, case.mask, state)
    return True


def show_mask(viewer, image_layer: Image, mask: np.ndarray, state: dict[str, Any]) -> Labels:
    """Put a known mask (one restored from the case model or the corrections store) on the image.

    ``mask`` (H, W) bool; ``state`` becomes the layer's ``metadata["mlffm"]``
    (with ``start`` and ``start_mask``, so edits are counted from there).
    Creates the mask layer if the image has none, else replaces its data;
    ValueError when a layer of another kind holds the mask's name.
    """
    focus = Focus(viewer, image_layer)
    name = layer_names(image_layer.name)["mask"]
    layer = find(viewer, name)
    data = np.asarray(mask).astype(np.uint8)
    check_case_layers({"mask": layer}, image_layer.name, *data.shape, sized=())  # ValueError for a layer of another kind
    with focus:
        if layer is None:
            layer = viewer.add_labels(data, name=name, metadata={KEY: dict(state)}, **placement(image_layer))
            style_mask(layer)
        else:
            write_mask(layer, data)
            layer.metadata[KEY] = dict(state)
    follow_image_placement(viewer, image_layer)
    layer.selected_label = 1
    focus.settle(layer)
    return layer
