"""Adapting a model's calibration to a clinic's cases, with held-out estimates.

The decision contour and the calibration are separate knobs. A pixel is
lesion when its *raw* (untempered) mean probability p reaches the raw
threshold r = sigmoid(T * logit(t)); the temperature T only reshapes the
probabilities shown and pooled into ECE. So the mask's Dice depends on r
alone and the calibration on T alone, and the two are fitted separately:

- r maximizes the mean per-image Dice on the fit cases;
- T minimizes the pooled pixel NLL on the fit cases;

each shrunk towards the base model's value in logit (for r) or log (for T)
space with weight n / (n + n0): with few cases the base's values, fitted on
hundreds, dominate. A fitted T is kept only if it lowers the held-out ECE;
otherwise the base's T stays (adapting never trades calibration for Dice);
"lowers" means by at least 5 %, since the estimate from a few dozen cases is noisy.

Every case is reduced once to :class:`CaseStats` (its Dice at every raw
threshold and a histogram of its pixels' raw logits), so leave-one-out
cross-validation of the whole fit costs no further model runs.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from model import Segmenter
from model.inputs.preprocess import untempered_threshold

from .calibration import LogitHistogram, ThresholdSweep
from ..data.datasets import Case, load_case
from ..data.imageio import ImageReadError
from .metrics import ece_from_bins

PRIOR_CASES = 10.0  # n0 of the shrinkage towards the base's values (docs/results.md, "Adapting to a clinic")
ECE_MARGIN = 0.95  # a fitted temperature must lower the held-out ECE by 5 % to replace the base's
RAW_GRID = np.round(np.arange(0.05, 0.951, 0.01), 6)  # raw thresholds the fit may choose


@dataclass(frozen=True)
class CaseStats:
    """One case, reduced: ``dice`` (1001,) Dice of ``raw p >= k / 1000``; ``counts``/``positives`` (bins,) of logit(raw p)."""

    case_id: str
    dice: np.ndarray
    counts: np.ndarray
    positives: np.ndarray


@dataclass(frozen=True)
class Calibration:
    """A temperature T and a decision threshold t on the tempered probability (what the model config stores)."""

    temperature: float
    threshold: float

    @property
    def raw_threshold(self) -> float:
        """The raw mean probability at which a pixel becomes lesion."""
        return untempered_threshold(self.threshold, self.temperature)

    @classmethod
    def of(cls, segmenter: Segmenter) -> Calibration:
        return cls(segmenter.config.probability_temperature, segmenter.config.decision_threshold)

    @classmethod
    def from_raw(cls, temperature: float, raw_threshold: float) -> Calibration:
        return cls(temperature, untempered_threshold(raw_threshold, 1 / temperature))  # sigmoid(logit(raw) / T), never overflowing


def case_stats(
    segmenter: Segmenter,
    cases: Sequence[Case],
    samples: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    progress: Callable[[Iterable], Iterable] = lambda items: items,
) -> list[CaseStats]:
    """Propose each case with ``segmenter`` (its flip views, ``samples`` x ``steps``) and reduce it.

    Unreadable cases are skipped with a warning on stderr. Raises
    ValueError when no case could be read.
    """
    raw = segmenter.with_options(probability_temperature=1.0, decision_threshold=0.5)
    out = []
    for case in progress(cases):
        try:
            image, truth = load_case(case)
        except ImageReadError as err:
            print(f"warning: skipped: {err}", file=sys.stderr)
            continue
        probability = raw.propose(image, samples, steps, seed=seed).probability
        out.append(stats_of(case.case_id, probability, truth))
    if not out:
        raise ValueError("no case could be read")
    return out


def stats_of(case_id: str, probability: np.ndarray, truth: np.ndarray) -> CaseStats:
    """Reduce one raw probability map (H, W) float in [0, 1] and its reference (H, W) bool."""
    sweep, histogram = ThresholdSweep(), LogitHistogram()
    sweep.update(probability, truth)
    histogram.update(probability, truth)
    return CaseStats(case_id, sweep.dice_sum.copy(), histogram.counts, histogram.positives)


def _pooled(stats: Sequence[CaseStats]) -> LogitHistogram:
    histogram = LogitHistogram()
    for s in stats:
        histogram.counts += s.counts
        histogram.positives += s.positives
    return histogram


def dice_at(stats: CaseStats, raw_threshold: float) -> float:
    """The case's Dice of ``raw p >= raw_threshold`` (on the 1/1000 grid)."""
    return float(stats.dice[int(round(raw_threshold * (len(stats.dice) - 1)))])


def _shrink(fitted: float, base: float, n: int, prior_cases: float) -> float:
    weight = n / (n + prior_cases) if prior_cases > 0 else 1.0
    return weight * fitted + (1 - weight) * base


def fit_calibration(
    stats: Sequence[CaseStats], base: Calibration, prior_cases: float = PRIOR_CASES, fit_temperature: bool = True
) -> Calibration:
    """The threshold (and, with ``fit_temperature``, the temperature) fitted on ``stats``, shrunk towards ``base``."""
    if not stats:
        raise ValueError("no cases to fit on")
    n = len(stats)
    curve = np.mean([s.dice for s in stats], axis=0)
    scores = curve[np.rint(RAW_GRID * (len(curve) - 1)).astype(int)]
    top = np.flatnonzero(scores >= scores.max() - 1e-12)
    base_raw = min(max(base.raw_threshold, 1e-4), 1 - 1e-4)
    fitted_raw = float(RAW_GRID[top[np.argmin(np.abs(RAW_GRID[top] - base_raw))]])  # ties: nearest the base's
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    raw = 1 / (1 + math.exp(-_shrink(logit(fitted_raw), logit(base_raw), n, prior_cases)))
    temperature = base.temperature
    if fit_temperature:
        fitted_t = _pooled(stats).fit_temperature("nll")
        temperature = math.exp(_shrink(math.log(fitted_t), math.log(base.temperature), n, prior_cases))
    return Calibration.from_raw(temperature, raw)


def _ece_table(stats: Sequence[CaseStats], temperature: float, bins: int = 15) -> np.ndarray:
    histogram = _pooled(stats)
    p = histogram.probabilities(temperature)
    index = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    return np.stack(
        [
            np.bincount(index, weights=histogram.counts, minlength=bins),
            np.bincount(index, weights=histogram.counts * p, minlength=bins),
            np.bincount(index, weights=histogram.positives, minlength=bins),
        ],
        axis=1,
    )


def ece_of(stats: Sequence[CaseStats], temperature: float) -> float:
    """ECE (15 bins) of all the cases' pixels pooled, at ``temperature``."""
    return ece_from_bins(_ece_table(stats, temperature))


@dataclass(frozen=True)
class HeldOut:
    """Leave-one-out estimates of a calibration fit: per-case Dice (in the order given) and pooled ECE."""

    dice: np.ndarray
    ece: float

    @property
    def mean_dice(self) -> float:
        return float(np.mean(self.dice))


def leave_one_out(
    stats: Sequence[CaseStats], base: Calibration, prior_cases: float = PRIOR_CASES, fit_temperature: bool = True
) -> HeldOut:
    """Fit on all cases but one, score the one left out; for every case. Needs >= 2 cases."""
    if len(stats) < 2:
        raise ValueError("leave-one-out needs at least 2 cases")
    dice, table = [], np.zeros((15, 3))
    for i, held in enumerate(stats):
        fit = fit_calibration([s for j, s in enumerate(stats) if j != i], base, prior_cases, fit_temperature)
        dice.append(dice_at(held, fit.raw_threshold))
        table += _ece_table([held], fit.temperature)
    return HeldOut(np.array(dice), ece_from_bins(table))


def score(stats: Sequence[CaseStats], calibration: Calibration) -> HeldOut:
    """Per-case Dice and pooled ECE of a fixed calibration (no fitting)."""
    return HeldOut(np.array([dice_at(s, calibration.raw_threshold) for s in stats]), ece_of(stats, calibration.temperature))


@dataclass(frozen=True)
class CalibrationPlan:
    """The calibration to write and its held-out estimates (before = the base's values on the same cases)."""

    calibration: Calibration
    temperature_fitted: bool
    before: HeldOut
    after: HeldOut


def plan_calibration(stats: Sequence[CaseStats], base: Calibration, prior_cases: float = PRIOR_CASES) -> CalibrationPlan:
    """Fit on all ``stats``; keep the base's temperature unless the fitted one lowers the held-out ECE by 5 %."""
    before = score(stats, base)
    with_t = leave_one_out(stats, base, prior_cases, True)
    fit_t = with_t.ece <= ECE_MARGIN * before.ece  # a clear gain, not the noise of a 40-case estimate
    # without a fitted temperature every case keeps the base's: its pooled ECE is the base's, exactly
    after = with_t if fit_t else HeldOut(leave_one_out(stats, base, prior_cases, False).dice, before.ece)
    return CalibrationPlan(fit_calibration(stats, base, prior_cases, fit_t), fit_t, before, after)


def fine_tune_wins(calibrated: np.ndarray, fine_tuned: np.ndarray, margin: float) -> tuple[bool, float, float]:
    """Whether fine-tuning beats calibration alone on the same held-out cases.

    ``calibrated``, ``fine_tuned``: (n,) per-case held-out Dice. It wins when
    the mean paired gain exceeds both ``margin`` and its standard error.
    Returns (wins, mean gain, standard error).
    """
    gain = np.asarray(fine_tuned) - np.asarray(calibrated)
    error = float(gain.std(ddof=1) / math.sqrt(len(gain))) if len(gain) > 1 else float("inf")
    mean = float(gain.mean())
    return mean > max(margin, error), mean, error


def calibrated_dice(segmenter: Segmenter, cases: Sequence[Case], seed: int = 0) -> float:
    """Mean Dice of the model's own masks (its temperature, threshold, samples, steps, flip views) on ``cases``.

    This is the Dice a user of the model gets; NaN without readable cases.
    """
    scores = []
    for case in cases:
        try:
            image, truth = load_case(case)
        except ImageReadError as err:
            print(f"warning: skipped: {err}", file=sys.stderr)
            continue
        consensus = segmenter.propose(image, seed=seed).consensus
        total = np.count_nonzero(consensus) + np.count_nonzero(truth)
        scores.append(2 * np.count_nonzero(consensus & truth) / total if total else 1.0)
    return float(np.mean(scores)) if scores else float("nan")
