"""The clinician's prompts as input channels of the image path.

A :class:`Prompts` holds positive clicks (on the lesion), negative clicks (on
skin) and, optionally, the current mask as a prior, all in the *image's*
pixel coordinates. :func:`encode_prompts` turns them into a
(1, 3, S, S) tensor at the working size S:

* channel 0, positive clicks: a clipped distance map, ``max(0, 1 - d / R)``
  with d the distance (working pixels) to the nearest positive click and
  ``R = click_radius(S)`` (4 px at 96);
* channel 1, negative clicks: the same for the negative clicks;
* channel 2, the prior: ``2 * coverage - 1`` of the current mask resized to
  S (1 lesion, -1 skin), or 0 everywhere when there is no prior.

No prompts at all encode to zeros, and the network's prompt weights start at
zero (:func:`with_prompt_channels`), so a widened network with no prompts
gives exactly the proposals of the network it was widened from.

The image path runs once per (image, prompts): prompts cost nothing per
DDIM step.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .preprocess import resize_to_working

PROMPT_CHANNELS = 3
CLICK_RADIUS_FRACTION = 1 / 24  # of the working size: 4 px at 96, 5.3 at 128


def click_radius(size: int) -> float:
    """R, the radius in working pixels over which a click's channel falls from 1 to 0."""
    return max(2.0, size * CLICK_RADIUS_FRACTION)


Point = tuple[float, float]

MAX_CLICKS = 1000
"""The most clicks (positive and negative together) one set of prompts may hold.

No review needs more; each click costs a distance map, a disk and a reach at
the image's resolution, so a pasted layer of 100,000 points is refused in one
line instead of running for minutes."""


@dataclass(frozen=True)
class Prompts:
    """Clicks and an optional prior for one image, in the image's pixels.

    Attributes:
        positive: (row, col) points on the lesion.
        negative: (row, col) points on skin (background).
        prior: (H, W) bool, the current mask, or None.
    """

    positive: tuple[Point, ...] = ()
    negative: tuple[Point, ...] = ()
    prior: np.ndarray | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # Clicks given as an (N, 2) array or a list are kept as a tuple of points, so that with_click appends
        # a click (an array would add the point to every row) and every reader sees one form.
        for name in ("positive", "negative"):
            points = getattr(self, name)
            if isinstance(points, np.ndarray) and points.ndim == 2 and points.shape[1] == 2 and points.dtype.kind in "iuf":
                object.__setattr__(self, name, tuple((float(r), float(c)) for r, c in points))
            elif isinstance(points, list):
                object.__setattr__(self, name, tuple(points))

    @property
    def clicks(self) -> int:
        return _count(self.positive) + _count(self.negative)

    @property
    def empty(self) -> bool:
        return not self.clicks and self.prior is None

    def with_click(self, point: Point, positive: bool) -> "Prompts":
        """These prompts and one more click."""
        point = (float(point[0]), float(point[1]))
        if positive:
            return Prompts(self.positive + (point,), self.negative, self.prior)
        return Prompts(self.positive, self.negative + (point,), self.prior)

    def with_prior(self, prior: np.ndarray | None) -> "Prompts":
        return Prompts(self.positive, self.negative, prior)

    def check(self, height: int, width: int) -> None:
        """ValueError naming the problem if a click lies outside the (H, W) image, there are more than
        :data:`MAX_CLICKS` clicks, or the prior has another shape."""
        if self.clicks > MAX_CLICKS:
            raise ValueError(f"{self.clicks} clicks given, above the limit of {MAX_CLICKS} per refine")
        for name, points in (("positive", self.positive), ("negative", self.negative)):
            if isinstance(points, (str, bytes)) or not isinstance(points, (Sequence, np.ndarray)) or np.ndim(points) == 0:
                raise ValueError(f"{name} clicks must be a sequence of (row, col) pairs, got {_brief(points)}")
            for point in points:
                if not _is_point(point):
                    raise ValueError(f"{name} click {_brief(point)} must be a (row, col) pair of numbers")
                r, c = _finite_pair(point)
                if r is None:
                    raise ValueError(f"{name} click {_brief(point)} must be a (row, col) pair of finite numbers")
                if not (-0.5 <= r < height + 0.5 and -0.5 <= c < width + 0.5):
                    raise ValueError(f"{name} click ({r:g}, {c:g}) lies outside the {height} x {width} image")
        if self.prior is not None:
            prior = np.asarray(self.prior)
            if prior.shape != (height, width):
                raise ValueError(f"prior mask must be {height} x {width} like the image, got shape {prior.shape}")
            if not (prior.dtype == np.bool_ or np.issubdtype(prior.dtype, np.integer) or np.issubdtype(prior.dtype, np.floating)):
                raise ValueError(f"prior mask must be a boolean or numeric array, got dtype {prior.dtype}")
            if np.issubdtype(prior.dtype, np.floating) and not np.isfinite(prior).all():
                raise ValueError("prior mask contains NaN or infinite values")

    def to_record(self) -> dict:
        """JSON-ready provenance: the clicks (rounded to 0.1 px) and whether a prior was given."""
        pick = lambda pts: [[round(float(r), 1), round(float(c), 1)] for r, c in pts]  # noqa: E731
        return {"positive": pick(self.positive), "negative": pick(self.negative), "prior": self.prior is not None}


def _count(points) -> int:
    """How many clicks ``points`` holds; 1 for something that is not a sequence, so :meth:`Prompts.check` sees and refuses it."""
    try:
        return len(points)
    except TypeError:
        return 1


def _brief(value) -> str:
    """``value`` for a one-line message: at most 60 characters of its repr, or its type."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__ must not replace the message
        text = type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _finite_pair(point) -> tuple[float, float] | tuple[None, None]:
    """(row, col) as finite floats, or (None, None) for a NaN, an infinity or an int beyond float range."""
    try:
        r, c = (float(v) for v in point)
    except (OverflowError, ValueError, TypeError):
        return None, None
    return (r, c) if math.isfinite(r) and math.isfinite(c) else (None, None)


def _is_point(point) -> bool:
    """True for a (row, col) pair of real numbers (bools, strings and complex numbers are not)."""
    try:
        values = tuple(point)
    except TypeError:
        return False
    return len(values) == 2 and all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in values)


def _points_map(points: Sequence[Point], height: int, width: int, size: int) -> torch.Tensor:
    """(S, S) float32 clipped distance map of ``points`` (image pixels) at the working size."""
    out = torch.zeros((size, size))
    if not len(points):
        return out
    axis = torch.arange(size, dtype=torch.float32)
    radius = click_radius(size)
    for r, c in points:
        # Pixel centres map to pixel centres: y = (r + 0.5) * S / H - 0.5.
        y = (float(r) + 0.5) * size / height - 0.5
        x = (float(c) + 0.5) * size / width - 0.5
        # The map is 0 beyond the radius: compute only the click's window (the same values, at any number of clicks).
        top, bottom = max(0, math.floor(y - radius)), min(size, math.ceil(y + radius) + 1)
        left, right = max(0, math.floor(x - radius)), min(size, math.ceil(x + radius) + 1)
        if top >= bottom or left >= right:
            continue
        d = torch.sqrt((axis[top:bottom, None] - y) ** 2 + (axis[None, left:right] - x) ** 2)
        window = out[top:bottom, left:right]
        torch.maximum(window, (1 - d / radius).clamp_(min=0), out=window)
    return out


def encode_prompts(prompts: Prompts, height: int, width: int, size: int) -> torch.Tensor:
    """(1, 3, size, size) float32 prompt channels for an (H, W) image (see the module docstring)."""
    prompts.check(height, width)
    prior = torch.zeros((size, size))
    if prompts.prior is not None:
        coverage = torch.from_numpy(np.asarray(prompts.prior, dtype=np.float32))[None, None]
        prior = 2 * resize_to_working(coverage, size)[0, 0].clamp(0, 1) - 1
    channels = [
        _points_map(prompts.positive, height, width, size),
        _points_map(prompts.negative, height, width, size),
        prior,
    ]
    return torch.stack(channels)[None]


def with_prompt_channels(segmenter, channels: int = PROMPT_CHANNELS, control: bool = True):
    """A copy of ``segmenter`` whose network also takes prompts, with every old weight unchanged.

    It gains the stem's prompt input weights and, with ``control`` (the
    default), the prompt branch of :mod:`model.nets.prompt_control`, started from
    the image path's weights. Every new weight that touches the image
    features is zero, so with no prompts (or all-zero prompts) it gives bit
    for bit the same proposals. A segmenter that already has what is asked
    for is returned as it is; one with prompt channels but no branch gains
    the branch.
    """
    old = segmenter.config.network
    if old.prompt_channels not in (0, channels):
        raise ValueError(f"the network already has {old.prompt_channels} prompt channels, not {channels}")
    if old.prompt_channels == channels and (old.prompt_control or not control):
        return segmenter
    from ..nets.prompt_control import is_prompt_parameter  # noqa: PLC0415

    widened = segmenter.with_network_changes(is_prompt_parameter, prompt_channels=channels, prompt_control=control or old.prompt_control)
    network = widened.config.network
    if network.prompt_control and not old.prompt_control:
        widened.network.prompt_control.copy_image_path(widened.network)
    return widened


def without_prompt_weights(segmenter):
    """A copy of ``segmenter`` with its prompt weights removed: the base it was widened from.

    With no prompts the two give bit for bit the same proposals (that is the
    contract of the zero-initialised, per-sample gated prompt weights); this
    is how to check it for any prompted checkpoint.
    """
    from ..nets.prompt_control import is_prompt_parameter  # noqa: PLC0415

    if not segmenter.config.network.prompt_channels:
        return segmenter
    return segmenter.with_network_changes(is_prompt_parameter, prompt_channels=0, prompt_control=False)
