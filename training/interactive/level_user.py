"""A simulated user of the outline level: steps it while the outline gets better.

Like the simulated clicker (:mod:`training.interactive.clicks`), this user
sees the reference. Starting from the proposal's own threshold, they try one
step down (a looser outline) and one step up (a tighter one); they keep
stepping in the direction that raised the Dice and stop at the first step
that does not, within [LEVEL_MIN, LEVEL_MAX]
(:mod:`training.corrections.outline_level`). Each step is one key press in
the Review dock (Shift-G / Shift-S), with no model run. Deterministic; pure
numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..corrections.outline_level import LEVEL_STEP, step_level
from .clicks import dice


@dataclass(frozen=True)
class LevelSteps:
    """Where the simulated user stopped: the ``level``, its ``dice`` and the key presses (``steps``, >= 0)."""

    level: float
    dice: float
    steps: int


def stepped_level(probability: np.ndarray, truth: np.ndarray, start: float, step: float = LEVEL_STEP) -> LevelSteps:
    """The simulated user's level for ``probability`` ((H, W) in [0, 1]) against ``truth`` ((H, W) bool), from ``start``.

    Kept pixels (probability exactly 0 or 1) never change. ValueError for arrays of other shapes.
    """
    probability, truth = np.asarray(probability), np.asarray(truth, bool)
    if probability.shape != truth.shape or probability.ndim != 2:
        raise ValueError(f"probability {probability.shape} and truth {truth.shape} must be the same (H, W)")
    start = float(start)
    first = dice(probability >= start, truth)
    best = LevelSteps(start, first, 0)
    for direction in (-1, 1):
        level, score, steps = start, first, 0
        while True:
            nxt = step_level(level, direction, step)
            if nxt == level:
                break
            trial = dice(probability >= nxt, truth)
            if trial <= score:
                break
            level, score, steps = nxt, trial, steps + 1
        if score > best.dice:
            best = LevelSteps(level, score, steps)
    return best
