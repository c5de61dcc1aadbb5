"""Temperature scaling of the mean probability, fitted on validation data.

The segmenter's probability map is the mean of N soft masks. Diffusion
samples drawn with x0-prediction are nearly binary, so the mean tends to be
over-confident near the lesion border. A single temperature T, applied as
sigmoid(logit(p) / T), is fitted on held-out cases (Guo et al. 2017, "On
Calibration of Modern Neural Networks"). It leaves the 0.5 contour, the
samples and the uncertainty map as they were.

Pixels are pooled in a fine histogram of logit(p) so that every pixel of
every case counts without being kept in memory.

The decision threshold is chosen on the same cases by :class:`ThresholdSweep`:
the mean per-image Dice of ``probability >= t`` for every t on a grid. For
calibrated probabilities the Dice-optimal threshold is below 0.5 (about half
the attainable Dice; Lipton, Elkan & Naryanaswamy 2014, "Optimal
thresholding of classifiers to maximize F1 measure").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .metrics import ece_from_bins

LOGIT_LIMIT = 14.0
OBJECTIVES = ("nll", "ece")


TEMPERATURE_RANGE = (0.25, 8.0)
"""The temperatures :meth:`LogitHistogram.fit_temperature` searches (a fit at either end is not pinned down)."""


@dataclass
class LogitHistogram:
    """Pooled (count, lesion count) of pixels per logit(p) bin of width ``width``."""

    width: float = 0.01
    counts: np.ndarray = field(init=False)
    positives: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if not 0 < self.width <= 1:
            raise ValueError(f"width must be in (0, 1], got {self.width}")
        n = int(round(2 * LOGIT_LIMIT / self.width)) + 1
        self.counts = np.zeros(n, np.float64)
        self.positives = np.zeros(n, np.float64)

    @property
    def centres(self) -> np.ndarray:
        """(n_bins,) logit at each bin's centre."""
        return np.arange(len(self.counts)) * self.width - LOGIT_LIMIT

    def update(self, probability: np.ndarray, truth: np.ndarray) -> None:
        """Add one case: ``probability`` (H, W) float in [0, 1], ``truth`` (H, W) bool."""
        if probability.shape != truth.shape:
            raise ValueError(f"probability {probability.shape} and truth {truth.shape} differ in shape")
        p = np.clip(probability.astype(np.float64).ravel(), 1e-12, 1 - 1e-12)
        logit = np.clip(np.log(p / (1 - p)), -LOGIT_LIMIT, LOGIT_LIMIT)
        index = np.rint((logit + LOGIT_LIMIT) / self.width).astype(np.int64)
        self.counts += np.bincount(index, minlength=len(self.counts))
        self.positives += np.bincount(index, weights=truth.ravel().astype(np.float64), minlength=len(self.counts))

    def probabilities(self, temperature: float) -> np.ndarray:
        """(n_bins,) the bins' probability after temperature scaling."""
        return 1 / (1 + np.exp(-self.centres / temperature))

    def nll(self, temperature: float) -> float:
        """Mean binary cross-entropy of all pooled pixels at ``temperature``."""
        p = np.clip(self.probabilities(temperature), 1e-12, 1 - 1e-12)
        total = -(self.positives * np.log(p) + (self.counts - self.positives) * np.log(1 - p)).sum()
        return float(total / max(self.counts.sum(), 1))

    def ece(self, temperature: float, bins: int = 15) -> float:
        """Expected calibration error (equal-width probability bins) at ``temperature``."""
        p = self.probabilities(temperature)
        index = np.clip((p * bins).astype(np.int64), 0, bins - 1)
        table = np.stack(
            [
                np.bincount(index, weights=self.counts, minlength=bins),
                np.bincount(index, weights=self.counts * p, minlength=bins),
                np.bincount(index, weights=self.positives, minlength=bins),
            ],
            axis=1,
        )
        return ece_from_bins(table)

    def fit_temperature(self, objective: str = "nll", low: float = TEMPERATURE_RANGE[0], high: float = TEMPERATURE_RANGE[1], points: int = 241) -> float:
        """The temperature in [low, high] (log-spaced grid) that minimizes ``objective`` ("nll" or "ece")."""
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if self.counts.sum() == 0:
            raise ValueError("no pixels to calibrate on")
        grid = np.exp(np.linspace(np.log(low), np.log(high), points))
        score = self.nll if objective == "nll" else self.ece
        return float(grid[int(np.argmin([score(t) for t in grid]))])


@dataclass
class ThresholdSweep:
    """Mean per-image Dice of ``probability >= k / resolution`` for every k.

    Each case is reduced to two cumulative histograms (predicted pixels and
    true positives at each threshold), so the sweep is exact on its grid
    and keeps no images.
    """

    resolution: int = 1000
    dice_sum: np.ndarray = field(init=False)
    cases: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.resolution < 2:
            raise ValueError(f"resolution must be >= 2, got {self.resolution}")
        self.dice_sum = np.zeros(self.resolution + 1, np.float64)

    @property
    def thresholds(self) -> np.ndarray:
        """(resolution + 1,) the thresholds k / resolution, k = 0..resolution."""
        return np.arange(self.resolution + 1) / self.resolution

    def update(self, probability: np.ndarray, truth: np.ndarray) -> None:
        """Add one case: ``probability`` (H, W) float in [0, 1], ``truth`` (H, W) bool."""
        if probability.shape != truth.shape:
            raise ValueError(f"probability {probability.shape} and truth {truth.shape} differ in shape")
        # bin k holds the pixels with k / r <= p < (k + 1) / r; p == 1 goes to bin r
        index = np.clip(np.floor(probability.astype(np.float64).ravel() * self.resolution), 0, self.resolution).astype(np.int64)
        truth = truth.ravel().astype(bool)
        predicted = np.cumsum(np.bincount(index, minlength=self.resolution + 1)[::-1])[::-1]
        hits = np.cumsum(np.bincount(index[truth], minlength=self.resolution + 1)[::-1])[::-1]
        denominator = predicted + np.count_nonzero(truth)
        self.dice_sum += np.where(denominator > 0, 2 * hits / np.maximum(denominator, 1), 1.0)
        self.cases += 1

    def mean_dice(self) -> np.ndarray:
        """(resolution + 1,) mean Dice at each of :attr:`thresholds`."""
        if self.cases == 0:
            raise ValueError("no cases to choose a threshold on")
        return self.dice_sum / self.cases

    def dice_at(self, threshold: float) -> float:
        """Mean Dice at the grid threshold nearest ``threshold``."""
        return float(self.mean_dice()[int(round(threshold * self.resolution))])

    def best(self, low: float = 0.2, high: float = 0.8, step: float = 0.01) -> float:
        """The threshold in [low, high] (a grid of ``step``) with the highest mean Dice; ties go to the one nearest 0.5.

        The coarse grid keeps the choice from chasing noise between
        neighbouring fine thresholds.
        """
        if not 0 < low <= 0.5 <= high < 1:
            raise ValueError(f"need 0 < low <= 0.5 <= high < 1, got {low}, {high}")
        candidates = np.round(np.arange(low, high + step / 2, step), 6)
        scores = np.array([self.dice_at(t) for t in candidates])
        top = np.flatnonzero(scores >= scores.max() - 1e-12)
        return float(candidates[top[np.argmin(np.abs(candidates[top] - 0.5))]])
