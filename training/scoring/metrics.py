"""Segmentation metrics as functions, plus an accumulator over images.

Shape contract: ``pred`` and ``truth`` are (H, W) bool; ``prob`` is (H, W)
float in [0, 1]; ``samples`` is (N, H, W) bool. Conventions for degenerate
cases are stated on each function; they follow the usual choice that two
empty masks agree perfectly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

METRIC_NAMES = ("dice", "jaccard", "accuracy", "precision", "recall", "specificity", "hd95", "hd95_percent", "ece", "ged")


def _check(pred: np.ndarray, truth: np.ndarray) -> None:
    if pred.shape != truth.shape or pred.ndim != 2:
        raise ValueError(f"pred and truth must both be (H, W) with the same shape, got {pred.shape} and {truth.shape}")


def confusion(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) pixel counts."""
    _check(pred, truth)
    pred, truth = pred.astype(bool), truth.astype(bool)
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    return tp, fp, fn, pred.size - tp - fp - fn


def _ratio(num: int, den: int) -> float:
    return num / den if den else 1.0


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """2 TP / (2 TP + FP + FN); 1 when both masks are empty."""
    tp, fp, fn, _ = confusion(pred, truth)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def jaccard(pred: np.ndarray, truth: np.ndarray) -> float:
    """TP / (TP + FP + FN); 1 when both masks are empty."""
    tp, fp, fn, _ = confusion(pred, truth)
    return _ratio(tp, tp + fp + fn)


def pixel_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice, Jaccard, accuracy, precision, recall (sensitivity), specificity.

    A ratio with a zero denominator is 1 (nothing to get wrong): precision
    when nothing is predicted, recall when there is no lesion, specificity
    when the lesion fills the image.
    """
    tp, fp, fn, tn = confusion(pred, truth)
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "jaccard": _ratio(tp, tp + fp + fn),
        "accuracy": (tp + tn) / (tp + fp + fn + tn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
    }


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels: the mask minus its 4-connected erosion (border pixels count as boundary)."""
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1), border_value=0)
    return mask & ~eroded


def hd95(pred: np.ndarray, truth: np.ndarray) -> float:
    """95th-percentile symmetric Hausdorff distance between mask boundaries, in pixels.

    The 95th percentile of each directed set of boundary-to-boundary
    distances, then the larger of the two (MONAI's convention). 0 when both
    masks are empty; NaN when exactly one is.
    """
    _check(pred, truth)
    pred, truth = pred.astype(bool), truth.astype(bool)
    if not pred.any() and not truth.any():
        return 0.0
    if not pred.any() or not truth.any():
        return float("nan")
    surface_pred, surface_truth = _surface(pred), _surface(truth)
    to_truth = ndimage.distance_transform_edt(~surface_truth)[surface_pred]
    to_pred = ndimage.distance_transform_edt(~surface_pred)[surface_truth]
    return float(max(np.percentile(to_truth, 95), np.percentile(to_pred, 95)))


def calibration_bins(prob: np.ndarray, truth: np.ndarray, bins: int = 15) -> np.ndarray:
    """(bins, 3) array of [pixel count, sum of probability, sum of truth] per equal-width bin."""
    _check(prob, truth)
    index = np.clip((prob.ravel() * bins).astype(np.int64), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    prob_sum = np.bincount(index, weights=prob.ravel().astype(np.float64), minlength=bins)
    truth_sum = np.bincount(index, weights=truth.ravel().astype(np.float64), minlength=bins)
    return np.stack([counts, prob_sum, truth_sum], axis=1).astype(np.float64)


def ece_from_bins(table: np.ndarray) -> float:
    """Sum over bins of (count / total) * |mean probability - observed frequency|."""
    counts = table[:, 0]
    total = counts.sum()
    if total == 0:
        return float("nan")
    filled = counts > 0
    gap = np.abs(table[filled, 1] - table[filled, 2]) / counts[filled]
    return float((counts[filled] / total * gap).sum())


def ece(prob: np.ndarray, truth: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of per-pixel probabilities, equal-width bins."""
    return ece_from_bins(calibration_bins(prob, truth, bins))


def _iou_distance(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 0.0 if union == 0 else 1.0 - np.count_nonzero(a & b) / union


def ged(samples: np.ndarray, truth: np.ndarray) -> float:
    """Squared generalized energy distance with d = 1 - IoU, for one ground truth.

    D^2 = 2 E[d(S, Y)] - E[d(S, S')] - E[d(Y, Y')], where the last term is 0
    with a single annotation. Needs N >= 2 samples (NaN otherwise).
    """
    if samples.ndim != 3 or samples.shape[1:] != truth.shape:
        raise ValueError(f"samples must be (N, H, W) matching truth {truth.shape}, got {samples.shape}")
    n = samples.shape[0]
    if n < 2:
        return float("nan")
    samples, truth = samples.astype(bool), truth.astype(bool)
    cross = np.mean([_iou_distance(s, truth) for s in samples])
    within = np.mean([_iou_distance(samples[i], samples[j]) for i in range(n) for j in range(n)])
    return float(2 * cross - within)


@dataclass
class MetricAccumulator:
    """Collects per-image metrics; ``summary()`` averages them (ECE pools all pixels).

    ``hd95`` is in pixels of each image's own size; ``hd95_percent`` is the same distance in percent of the image's
    diagonal, which averages fairly over images of several sizes (another clinic's camera, a mixed folder).
    """

    bins: int = 15
    per_image: list[dict[str, float | str]] = field(default_factory=list)
    _calibration: np.ndarray | None = None

    def update(self, pred: np.ndarray, truth: np.ndarray, prob: np.ndarray | None = None, samples: np.ndarray | None = None, case_id: str = "") -> dict:
        distance = hd95(pred, truth)
        record: dict[str, float | str] = {"id": case_id, **pixel_scores(pred, truth), "hd95": distance,
                                          "hd95_percent": 100.0 * distance / math.hypot(*truth.shape)}
        if prob is not None:
            table = calibration_bins(prob, truth, self.bins)
            self._calibration = table if self._calibration is None else self._calibration + table
            record["ece"] = ece_from_bins(table)
        if samples is not None:
            record["ged"] = ged(samples, truth)
        self.per_image.append(record)
        return record

    @property
    def calibration_table(self) -> np.ndarray | None:
        """(bins, 3) pooled [pixel count, sum of probability, sum of truth] over every case so far."""
        return self._calibration

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in METRIC_NAMES:
            values = [r[name] for r in self.per_image if name in r and not math.isnan(r[name])]
            out[name] = float(np.mean(values)) if values else float("nan")
        if self._calibration is not None:
            out["ece"] = ece_from_bins(self._calibration)
        return out
