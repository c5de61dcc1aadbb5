"""The work of one refine, run in a thread worker by the "Refine with clicks" dock (:mod:`.refine`)."""

from __future__ import annotations

from model.inputs.box import Box
from model.inputs.kept import KeptPixels
from model.inputs.prompts import Prompts
from training.interactive.protocol import is_steered, refine_iter, refine_samples_for, resolve_mode

from . import common


def refine_job(
    checkpoint, device, image, prompts: Prompts, painted: KeptPixels | None, n_samples, steps, seed, flat_field=None, reach=True, box=None,
    fewer_samples=True,
):
    """Worker body: yields (done, total) per DDIM step, returns (proposal, info) or (None, {"error": line}).

    ``flat_field``: that of the proposal being refined (None: the model's choice).
    ``reach``: each click also takes the probable region connected to it.
    ``box``: a :class:`model.inputs.box.Box` around the lesion, or None.
    ``n_samples``: what the proposal being refined drew; with ``fewer_samples``
    a refine steered by clicks, painted pixels or a box draws
    :func:`training.interactive.protocol.refine_samples_for` it (one with
    none of them gives back the first proposal, with its own number).
    """
    try:
        segmenter = common.get_segmenter(checkpoint, device, flat_field)
        mode = resolve_mode(segmenter, "auto")
        fewer = fewer_samples and is_steered(prompts, painted, box)  # else: the first proposal again, as it was drawn
        n_samples = refine_samples_for(segmenter, n_samples) if fewer else segmenter.sampling_settings(n_samples, steps)[0]
        proposal = yield from refine_iter(segmenter, image, prompts, mode, painted, reach, n_samples, steps, seed, box=box)
    except (ValueError, OSError, RuntimeError) as err:
        return None, {"error": common.one_line(err)}
    if not prompts.clicks:  # nothing to steer with but what was painted or the box
        mode = "kept" if painted is not None or box is not None else "none"
    info = {
        **common.proposal_record(segmenter, checkpoint, proposal, n_samples, steps, seed),
        "refine_mode": mode, "click_reach": bool(reach and prompts.clicks),
    }
    return proposal, info


def lesion_clicks_outside(prompts: Prompts, box: Box | None, shape: tuple[int, int]) -> int:
    """How many lesion clicks lie outside ``box`` (the box holds its outside as skin, so they change nothing)."""
    if box is None or not prompts.positive:
        return 0
    inside = box.inside(*shape)
    return sum(not inside[min(max(int(round(r)), 0), shape[0] - 1), min(max(int(round(c)), 0), shape[1] - 1)] for r, c in prompts.positive)
