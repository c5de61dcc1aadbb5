"""`Proposal`: N masks of one image with their probability and uncertainty, and how soft masks become one."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import torch

from .inputs.kept import KeptPixels
from .inputs.preprocess import apply_temperature, resize_soft, untempered_threshold


@dataclass(frozen=True)
class Proposal:
    """Several mask proposals for one image, at the image's own resolution.

    Attributes:
        samples: (N, H, W) bool, one mask per diffusion sample.
        probability: (H, W) float32 in [0, 1], the mean of the samples' soft
            masks (temperature-scaled when the config says so).
        uncertainty: (H, W) float32 in [0, 1]: twice the per-pixel standard
            deviation of the N soft masks. 0 where all samples agree; 1 where
            half say "lesion" with certainty and half say "skin". It measures
            disagreement between samples only, so it is 0 when N = 1.
        seconds: wall time of the proposal.
        notes: what had to change on the way (e.g. out-of-memory fallbacks).
        threshold: the decision threshold on ``probability`` that made the
            masks (the model's ``decision_threshold``); each sample's mask
            is its own soft mask thresholded at the same calibrated level.
    """

    samples: np.ndarray
    probability: np.ndarray
    uncertainty: np.ndarray
    seconds: float = 0.0
    notes: tuple[str, ...] = ()
    threshold: float = 0.5

    @property
    def consensus(self) -> np.ndarray:
        """(H, W) bool: probability >= threshold."""
        return self.probability >= self.threshold

    def with_kept(self, kept: KeptPixels | None) -> "Proposal":
        """This proposal with ``kept`` pixels ((H, W)) set to their values in every sample, probability 0 or 1, no uncertainty."""
        if kept is None:
            return self
        kept.check(*self.probability.shape)
        if not kept.any:
            return self
        where, values = np.asarray(kept.mask, bool), np.asarray(kept.values, bool)
        samples = self.samples.copy()
        samples[:, where] = values[where]
        probability = np.where(where, values.astype(np.float32), self.probability).astype(np.float32)
        uncertainty = np.where(where, np.float32(0), self.uncertainty).astype(np.float32)
        return replace(self, samples=samples, probability=probability, uncertainty=uncertainty)

    @cached_property
    def disagreement(self) -> float:
        """1 - the mean Dice between every pair of samples, in [0, 1]: the image's triage score.

        0 when all samples are the same mask (or N < 2); two empty masks agree.
        Unlike the mean of ``uncertainty``, which grows with the lesion's
        outline and so with its size, this is relative to the masks
        themselves. On the val split it ranked images by their error far
        better (Spearman rho 0.68 against 0.08; docs/results.md). Computed
        once per proposal, pair by pair on the boolean masks (no float copy
        of N full-resolution masks).
        """
        n = len(self.samples)
        if n < 2:
            return 0.0
        sizes = [np.count_nonzero(s) for s in self.samples]
        dice = []
        for i in range(n):
            for j in range(i + 1, n):
                total = sizes[i] + sizes[j]
                dice.append(2 * np.count_nonzero(self.samples[i] & self.samples[j]) / total if total else 1.0)
        return float(1.0 - np.mean(dice))


def empty_proposal(n_samples: int, height: int, width: int, threshold: float, note: str, kept: KeptPixels | None = None) -> Proposal:
    """N empty (H, W) masks, probability 0 and no uncertainty, with ``note`` saying why; ``kept`` pixels still hold."""
    zeros = np.zeros((height, width), np.float32)
    proposal = Proposal(np.zeros((n_samples, height, width), bool), zeros, zeros.copy(), notes=(note,), threshold=threshold)
    return proposal.with_kept(kept)


def soft_masks_to_proposal(
    soft: torch.Tensor,
    height: int,
    width: int,
    temperature: float,
    threshold: float,
    smoothing: float,
    kept: KeptPixels | None = None,
) -> Proposal:
    """Resize each (1, S, S) of the (N, 1, S, S) soft masks to (H, W), threshold, and accumulate mean and spread.

    Each sample's mask is its soft mask at the threshold that ``temperature``
    maps to ``threshold`` (so masks and probability agree); the probability
    is the temperature-scaled mean; the uncertainty twice the per-pixel
    standard deviation. ``smoothing`` is the resize's Gaussian sigma in
    working-size pixels (:func:`model.inputs.preprocess.resize_soft`). ``kept``
    pixels ((H, W)) take their known values in every sample, probability 0
    or 1 and no uncertainty.
    """
    n = soft.shape[0]
    raw_threshold = untempered_threshold(threshold, temperature)
    samples = np.empty((n, height, width), dtype=bool)
    # Welford's running mean and sum of squared deviations: exact zeros where all samples agree.
    running_mean = torch.zeros((height, width))
    squares = torch.zeros((height, width))
    for i in range(n):
        resized = resize_soft(soft[i : i + 1], height, width, smoothing)[0]
        samples[i] = (resized >= raw_threshold).numpy()
        delta = resized - running_mean
        running_mean += delta / (i + 1)
        squares += delta * (resized - running_mean)
    mean = apply_temperature(running_mean, temperature)
    variance = (squares / n).clamp_(min=0)
    uncertainty = (2 * variance.sqrt()).clamp_(0, 1)
    proposal = Proposal(samples, mean.numpy().astype(np.float32), uncertainty.numpy().astype(np.float32), threshold=threshold)
    # Kept pixels are exact at the image's resolution: every sample, the probability and no spread.
    return proposal.with_kept(kept)
