"""The measured click protocol: a simulated user refines each proposal with up to K clicks.

For one image (:func:`click_session`): the 0-click proposal is the ordinary
one; then, K times, the simulated user of :mod:`training.interactive.clicks` clicks on
the largest error of the current mask (its consensus, at the image's
resolution) against the reference, and the model re-proposes with all the
clicks so far. How a click reaches the model is the *mode*:

* ``"prompts"``: as input: the clicks and the current mask as the prior
  (:class:`model.inputs.prompts.Prompts`); needs weights with prompt channels;
* ``"kept"``: as kept pixels: a small disk of lesion or skin around each
  click is held fixed while the rest is resampled (:func:`model.inputs.kept.click_disks`);
  any weights, no training (the kept-pixel sampler alone);
* ``"both"``: prompts and kept disks together;
* ``"auto"``: ``"both"`` for weights with prompt channels (the best of the
  three on val for the shipped weights: docs/results.md), else ``"kept"``.

With ``reach`` (the default; ``mlffm evaluate --click-reach off`` turns it
off), each refine then also takes the probable region connected to each
click, within a few times the click's distance to the outline it corrected
(:mod:`model.click_reach`), in any mode; no extra diffusion pass.

With ``box`` (``mlffm evaluate --box``), the simulated user first drags a
box around the lesion, the reference's tight bounding box, before any
click: the pixels outside it are held as skin (:mod:`model.inputs.box`) in
that refine and every later one. The box's refine is then the session's
Dice@0, and the Dice of the plain proposal is kept as ``dice_before_box``.

A session whose mask already equals the reference needs no click; its Dice
is carried on. :func:`summarize_sessions` gives the contract of
``mlffm evaluate --clicks K``: ``dice_after`` (K + 1 means, for 0..K
clicks), ``noc85`` / ``noc90`` (mean clicks to reach that Dice, counting 0
when the first proposal does and K when it is never reached),
``share_90_within_3`` and ``seconds_per_refine``.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field, replace

import numpy as np

from model import Proposal, Segmenter
from model.click_reach import click_reach
from model.diffusion.sampler import run_to_completion
from model.inputs.box import Box
from model.inputs.kept import KeptPixels, click_disks
from model.inputs.prompts import Prompts

from .clicks import dice, next_click

CLICK_MODES = ("auto", "prompts", "kept", "both")


def resolve_mode(segmenter: Segmenter, mode: str) -> str:
    """The concrete mode for these weights; ValueError for prompts on weights without prompt channels."""
    if mode not in CLICK_MODES:
        raise ValueError(f"click mode must be one of {CLICK_MODES}, got {mode!r}")
    has_prompts = bool(segmenter.config.network.prompt_channels)
    if mode == "auto":
        return "both" if has_prompts else "kept"
    if mode in ("prompts", "both") and not has_prompts:
        raise ValueError(f"click mode {mode!r} needs weights trained with prompts (checkpoint {segmenter.checkpoint_id} has no prompt channels)")
    return mode


@dataclass
class ClickSession:
    """One image's session: ``dice`` (K + 1 values, after 0..K clicks), the clicks and the refine times (s).

    ``dice_before_box``: the plain proposal's Dice when the session began with
    a box (``dice[0]`` is then the box's refine), else None.
    ``refine_samples``: the proposals each refine drew.
    """

    dice: list[float]
    clicks: list[tuple[int, int, bool]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    dice_before_box: float | None = None
    refine_samples: int | None = None

    def clicks_to(self, level: float) -> int:
        """Clicks needed to reach Dice >= ``level`` (0 if the first proposal does; K if never)."""
        for k, value in enumerate(self.dice):
            if value >= level:
                return k
        return len(self.dice) - 1


def refine_samples_for(segmenter: Segmenter, first_samples: int | None = None) -> int:
    """How many proposals a refine draws by default: the model's ``default_refine_samples``, never more than ``first_samples``.

    ``first_samples``: what the proposal being refined drew (None: the
    model's ``default_samples``), so a user who proposed with few samples is
    not made to wait for more.
    """
    wanted = segmenter.refine_sampling_settings()[0]
    return wanted if first_samples is None else max(1, min(wanted, int(first_samples)))


def is_steered(prompts: Prompts, painted: KeptPixels | None = None, box: Box | None = None) -> bool:
    """Whether a refine has anything to steer it: clicks, painted pixels or a box (else it is the first proposal again)."""
    return bool(prompts.clicks) or painted is not None or box is not None


def refine_iter(
    segmenter: Segmenter,
    image: np.ndarray,
    prompts: Prompts,
    mode: str,
    painted: KeptPixels | None = None,
    reach: bool = True,
    n_samples: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    *,
    box: Box | None = None,
) -> Generator[tuple[int, int], None, Proposal]:
    """Generator form of :func:`refine`: yields ``(steps_done, steps_total)`` per DDIM step, returns the proposal.

    The proposal's ``seconds`` cover the whole refine, the reach step included.

    ``painted``: pixels the clinician painted, kept in every sample; they win
    over click disks and reaches. ``reach``: each click also takes the
    probable region connected to it (:mod:`model.click_reach`). ``box``: the
    lesion lies inside it; the pixels outside are held as skin, over the
    click disks, and the prior is cut to it. Painted pixels win over both.
    ``n_samples`` None: for a refine steered by clicks, painted pixels or a
    box, :meth:`Segmenter.refine_sampling_settings` (the model's
    ``default_refine_samples``, at most its ``default_samples``); with none
    of them, the first proposal's ``default_samples``, so that it comes
    back exactly. ``steps`` None: the model's ``default_steps``.
    ValueError for a box too small for the image (:meth:`Box.window`).
    """
    mode = resolve_mode(segmenter, mode)
    height, width = _image_size(image)
    # Checked here, in every mode: the kept-pixel disks, the box and the reach read them before the proposal would.
    if not isinstance(prompts, Prompts):
        raise ValueError(f"prompts must be a model.inputs.prompts.Prompts, got {type(prompts).__name__}")
    prompts.check(height, width)
    if painted is not None:
        if not isinstance(painted, KeptPixels):
            raise ValueError(f"painted must be a model.inputs.kept.KeptPixels, got {type(painted).__name__}")
        painted.check(height, width)
    if box is not None and not isinstance(box, Box):
        raise ValueError(f"box must be a model.inputs.box.Box, such as Box(top, left, bottom, right), got {type(box).__name__}")
    if not isinstance(reach, (bool, np.bool_)):  # reach="no" is truthy: never read a word as a yes
        raise ValueError(f"reach must be True or False, got {reach!r}")
    n_samples, steps = (segmenter.refine_sampling_settings if is_steered(prompts, painted, box) else segmenter.sampling_settings)(n_samples, steps)
    disks = click_disks(prompts.positive, prompts.negative, height, width) if mode in ("kept", "both") else None
    outside = box.outside_as_skin(height, width) if box is not None else None
    kept = None
    for layer in (disks, outside, painted):  # each wins over those before it
        if layer is not None:
            kept = layer if kept is None else kept.merged(layer)
    if box is not None and prompts.prior is not None and np.shape(prompts.prior) == (height, width):
        prompts = prompts.with_prior(np.asarray(prompts.prior, bool) & box.inside(height, width))
    # No clicks (all undone): the first proposal again, not one steered by its own mask alone.
    given = prompts if mode in ("prompts", "both") and prompts.clicks else None
    proposal = yield from segmenter.propose_iter(image, n_samples, steps, seed, prompts=given, kept=kept)
    if reach and prompts.clicks:
        started = time.perf_counter()
        reached = click_reach(proposal.probability, prompts.prior, prompts.positive, prompts.negative)
        if reached is not None:
            proposal = proposal.with_kept(reached.merged(painted))
        # The refine's time is the proposal's and the reach's together (the plugin's status line shows it).
        proposal = replace(proposal, seconds=proposal.seconds + time.perf_counter() - started)
    return proposal


def _image_size(image: np.ndarray) -> tuple[int, int]:
    """(H, W) of an (H, W) or (H, W, C) array; ValueError otherwise (the proposal checks the rest)."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        shown = f"shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be an (H, W) or (H, W, 3) numpy array, got {shown}")
    return int(image.shape[0]), int(image.shape[1])


def refine(
    segmenter: Segmenter,
    image: np.ndarray,
    prompts: Prompts,
    mode: str,
    painted: KeptPixels | None = None,
    reach: bool = True,
    box: Box | None = None,
    **sampling,
) -> Proposal:
    """One refinement: the proposal for ``image`` given the clicks (and prior) in ``prompts`` and the ``box``, by ``mode``."""
    return run_to_completion(refine_iter(segmenter, image, prompts, mode, painted, reach, box=box, **sampling))


def click_session(
    segmenter: Segmenter,
    image: np.ndarray,
    truth: np.ndarray,
    clicks: int,
    mode: str = "auto",
    first: Proposal | None = None,
    reach: bool = True,
    box: bool = False,
    refine_samples: int | None = None,
    **sampling,
) -> ClickSession:
    """Run the protocol for one image with up to ``clicks`` clicks (``first``: the 0-click proposal, if made already).

    ``reach``: each refine also takes the probable region connected to each
    click (:mod:`model.click_reach`). ``box``: the user first drags the
    reference's tight box (grown to the smallest box allowed; none for an
    image without lesion), and every refine keeps it. ``sampling``: ``n_samples``, ``steps``, ``seed`` for
    :meth:`Segmenter.propose` (the first proposal); each refine draws
    ``refine_samples`` (None: :func:`refine_samples_for` the first
    proposal) with the same steps and seed.
    """
    mode = resolve_mode(segmenter, mode)
    truth = np.asarray(truth, bool)
    proposal = first if first is not None else segmenter.propose(image, **sampling)
    mask = proposal.consensus
    if refine_samples is None:
        refine_samples = refine_samples_for(segmenter, len(proposal.samples))
    session = ClickSession([dice(mask, truth)], refine_samples=refine_samples)
    refining = {**sampling, "n_samples": refine_samples}
    drawn = Box.around(truth) if box else None  # None for an image without lesion
    if drawn is not None:
        drawn = drawn.at_least(*truth.shape)  # a lesion thinner than the smallest box
        started = time.perf_counter()
        proposal = refine(segmenter, image, Prompts(), mode, reach=reach, box=drawn, **refining)
        session.seconds.append(time.perf_counter() - started)
        mask = proposal.consensus
        session.dice_before_box = session.dice[0]
        session.dice[0] = dice(mask, truth)
    prompts = Prompts()
    for _ in range(clicks):
        click = next_click(mask, truth)
        if click is None:
            session.dice.append(session.dice[-1])
            continue
        prompts = prompts.with_click(click.point, click.positive).with_prior(mask)
        session.clicks.append((click.row, click.col, click.positive))
        started = time.perf_counter()
        proposal = refine(segmenter, image, prompts, mode, reach=reach, box=drawn, **refining)
        session.seconds.append(time.perf_counter() - started)
        mask = proposal.consensus
        session.dice.append(dice(mask, truth))
    return session


def summarize_sessions(sessions: list[ClickSession], clicks: int, mode: str, reach: bool = True, box: bool = False) -> dict:
    """The ``clicks`` report of ``mlffm evaluate --clicks K`` (see the module docstring); ``reach``, ``box``: as the sessions ran.

    With ``box``, ``dice_after[0]`` is the Dice after the box and ``dice_before_box`` the plain proposal's mean Dice.
    """
    if not sessions:
        return {"k": clicks, "mode": mode, "reach": reach, "box": box, "n_images": 0}
    table = np.array([s.dice for s in sessions])
    seconds = [t for s in sessions for t in s.seconds]
    within = min(3, clicks)
    report = {
        "k": clicks,
        "mode": mode,
        "reach": reach,
        "box": box,
        "n_images": len(sessions),
        "dice_after": [float(v) for v in table.mean(axis=0)],
        "noc85": float(np.mean([s.clicks_to(0.85) for s in sessions])),
        "noc90": float(np.mean([s.clicks_to(0.90) for s in sessions])),
        "share_90_within_3": float(np.mean([s.clicks_to(0.90) <= within and s.dice[s.clicks_to(0.90)] >= 0.90 for s in sessions])),
        "seconds_per_refine": float(np.mean(seconds)) if seconds else 0.0,
        "refines": len(seconds),
    }
    drawn = sorted({s.refine_samples for s in sessions if s.refine_samples is not None})
    if drawn:
        report["refine_samples"] = drawn[0] if len(drawn) == 1 else drawn
    if box:
        report["dice_before_box"] = float(np.mean([s.dice[0] if s.dice_before_box is None else s.dice_before_box for s in sessions]))
    return report


def format_clicks(report: dict) -> str:
    """The printed table of a ``clicks`` report."""
    if not report.get("n_images"):
        return "clicks: no images"
    shown = [k for k in (0, 1, 2, 3, 5, 10, 20) if k < len(report["dice_after"])]
    how = report["mode"] + (" + reach" if report.get("reach") else "") + (", a box first" if report.get("box") else "")
    per_refine = f", {report['refine_samples']} samples per refine" if "refine_samples" in report else ""
    lines = [f"click protocol ({how}, up to {report['k']} click{'' if report['k'] == 1 else 's'}{per_refine}, {report['n_images']} images):"]
    if report.get("box"):
        lines.append(f"  Dice before the box {report['dice_before_box']:.4f}; Dice@0 is after it")
    lines.append("  " + "  ".join(f"Dice@{k:<2}" for k in shown))
    lines.append("  " + "  ".join(f"{report['dice_after'][k]:7.4f}" for k in shown))
    if report["k"] == 0:  # a box alone: no clicks to count
        lines.append(f"  Dice >= 0.90 {100 * report['share_90_within_3']:.1f} %  {report['seconds_per_refine']:.3f} s / refine")
        return "\n".join(lines)
    lines.append(
        f"  NoC@85 {report['noc85']:.2f}  NoC@90 {report['noc90']:.2f}  "
        f"Dice >= 0.90 within {min(3, report['k'])} clicks {100 * report['share_90_within_3']:.1f} %  {report['seconds_per_refine']:.3f} s / refine"
    )
    return "\n".join(lines)
