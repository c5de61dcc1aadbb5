"""Where the model fails, and whether the triage finds the failures.

A mean Dice hides where a model fails. :func:`truth_traits` describes one
case's true mask; :func:`strata_table` groups per-image records (from
:class:`training.scoring.metrics.MetricAccumulator`, with those traits added) and
gives, per group, the number of images, mean and median Dice, mean Jaccard
and the count of failures (Dice < 0.5). :func:`triage_recall` says how many
of the failures a reviewer meets first when the cases are sorted by a
per-image doubt score (the plugin sorts by the proposals' disagreement).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..corrections.postprocess import border_pixels

# Bands of the true lesion's share of the image (upper bounds, exclusive).
AREA_BANDS: tuple[tuple[str, float], ...] = (("< 5%", 0.05), ("5-15%", 0.15), ("15-40%", 0.40), (">= 40%", math.inf))
FAILURE_DICE = 0.5


def truth_traits(truth: np.ndarray) -> dict[str, float | bool]:
    """``truth``: (H, W) bool. Returns the lesion's share of the image and whether it touches the image edge."""
    if truth.ndim != 2:
        raise ValueError(f"truth must be (H, W), got shape {truth.shape}")
    return {"truth_area_fraction": float(truth.mean()), "truth_touches_border": border_pixels(truth) > 0}


def area_band(fraction: float) -> str:
    """The :data:`AREA_BANDS` label for a lesion covering ``fraction`` (0-1) of the image."""
    return next(label for label, upper in AREA_BANDS if fraction < upper)


def _row(group: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    dice = np.array([r["dice"] for r in records], dtype=float)
    jaccard = np.array([r["jaccard"] for r in records], dtype=float)
    empty = len(records) == 0
    return {
        "group": group,
        "n_images": len(records),
        "dice_mean": float("nan") if empty else float(dice.mean()),
        "dice_median": float("nan") if empty else float(np.median(dice)),
        "jaccard_mean": float("nan") if empty else float(jaccard.mean()),
        "failures": int((dice < FAILURE_DICE).sum()),
    }


def strata_table(per_image: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for every image, each area band, and border contact (records without traits are left out of the groups)."""
    described = [r for r in per_image if "truth_area_fraction" in r and "truth_touches_border" in r]
    rows = [_row("all images", per_image)]
    for label, _ in AREA_BANDS:
        rows.append(_row(f"lesion {label} of the image", [r for r in described if area_band(r["truth_area_fraction"]) == label]))
    rows.append(_row("lesion touches the image border", [r for r in described if r["truth_touches_border"]]))
    rows.append(_row("lesion inside the image", [r for r in described if not r["truth_touches_border"]]))
    return rows


def format_strata(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`strata_table` rows."""
    def number(value: float) -> str:
        return f"{value:>7.4f}" if math.isfinite(value) else f"{'-':>7}"  # an empty group has no mean

    lines = [f"{'group':<34} {'images':>6} {'Dice':>7} {'median':>7} {'Jaccard':>7} {'Dice<0.5':>8}"]
    for r in rows:
        scores = " ".join(number(r[key]) for key in ("dice_mean", "dice_median", "jaccard_mean"))
        lines.append(f"{r['group']:<34} {r['n_images']:>6} {scores} {r['failures']:>8}")
    return "\n".join(lines)


def triage_recall(
    per_image: list[dict[str, Any]],
    score: str = "disagreement",
    review_fractions: tuple[float, ...] = (0.1, 0.2),
    below: tuple[float, ...] = (0.5, 0.8),
) -> list[dict[str, Any]]:
    """For each share of the images reviewed first (highest ``score`` first) and each Dice level:
    how many of the images below that Dice are among them.

    Records without ``score`` are left out. Returns dicts with
    ``review_fraction``, ``reviewed`` (images), ``dice_below``, ``caught``
    and ``total``; ``[]`` when no record has the score.
    """
    for fraction in review_fractions:
        if not 0 < fraction <= 1:
            raise ValueError(f"review fractions must lie in (0, 1], got {fraction}")
    scored = [r for r in per_image if score in r]
    if not scored:
        return []
    ranked = sorted(scored, key=lambda r: -r[score])  # stable: ties keep the split's order
    rows = []
    for fraction in review_fractions:
        reviewed = ranked[: math.ceil(fraction * len(ranked))]
        for level in below:
            rows.append({
                "review_fraction": fraction, "reviewed": len(reviewed), "dice_below": level,
                "caught": sum(r["dice"] < level for r in reviewed), "total": sum(r["dice"] < level for r in scored),
            })
    return rows


def format_triage(rows: list[dict[str, Any]], score: str = "disagreement") -> str:
    """One line per row of :func:`triage_recall`."""
    def line(r: dict[str, Any]) -> str:
        head = f"the {100 * r['review_fraction']:g}% most doubtful by {score} ({r['reviewed']} image{'s' * (r['reviewed'] != 1)})"
        if r["total"] == 0:
            return f"{head}: no image has Dice < {r['dice_below']:g}"
        return f"{head} hold {r['caught']} of the {r['total']} with Dice < {r['dice_below']:g}"

    return "\n".join(line(r) for r in rows)
