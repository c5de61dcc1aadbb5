"""A simulated user of the outline level: steps it while the outline gets better.

Like the simulated clicker (:mod:`training.interactive.clicks`), this user
sees the reference. Starting from the proposal's own threshold, they press
Grow (one step down, a looser outline) and keep pressing while the Dice
rises; the press that makes it worse is undone with one press the other
way. If the first Grow did not help, they undo it and try Shrink the same
way. Levels stay in [LEVEL_MIN, LEVEL_MAX]
(:mod:`training.corrections.outline_level`). Every press (Shift-G / Shift-S
in the Review dock) is counted, the probing and undoing ones included; none
runs the model. Deterministic; pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..corrections.outline_level import LEVEL_STEP, step_level
from .clicks import dice


@dataclass(frozen=True)
class LevelSteps:
    """Where the simulated user stopped: the ``level``, its ``dice``, the net ``steps`` from the start and every key press (``presses``)."""

    level: float
    dice: float
    steps: int
    presses: int


def stepped_level(probability: np.ndarray, truth: np.ndarray, start: float, step: float = LEVEL_STEP) -> LevelSteps:
    """The simulated user's level for ``probability`` ((H, W) in [0, 1]) against ``truth`` ((H, W) bool), from ``start``.

    Kept pixels (probability exactly 0 or 1) never change. ValueError for arrays of other shapes.
    """
    probability, truth = np.asarray(probability), np.asarray(truth, bool)
    if probability.shape != truth.shape or probability.ndim != 2:
        raise ValueError(f"probability {probability.shape} and truth {truth.shape} must be the same (H, W)")
    start = float(start)
    first = dice(probability >= start, truth)
    presses = 0
    for direction in (-1, 1):
        level, score, steps = start, first, 0
        while True:
            nxt = step_level(level, direction, step)
            if nxt == level:  # at the end of the range: the key does nothing, and the user sees it
                break
            presses += 1
            trial = dice(probability >= nxt, truth)
            if trial <= score:
                presses += 1  # undo the press that did not help
                break
            level, score, steps = nxt, trial, steps + 1
        if steps:
            return LevelSteps(level, score, steps, presses)
    return LevelSteps(start, first, 0, presses)
