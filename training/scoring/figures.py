"""Figures of an ``mlffm evaluate --json`` report: the reliability diagram and uncertainty against Dice.

Run as ``python -m training.scoring.figures REPORT.json OUT_DIR [--overwrite]``. Needs
matplotlib (the ``figures`` extra); nothing else in the project does. Both figures
are drawn before either is written; an existing figure is replaced only with
``--overwrite``. A report that is not what ``mlffm evaluate`` writes (a field of
another type, a bin row of another length) is refused in one line; a Spearman
rho that could not be computed (one image, constant scores: ``null``) is shown
as "n/a".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from model.files.checkpoint import atomic_write_bytes


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("figures need matplotlib: pip install 'napari-mlffm[figures]'") from None
    return plt


def _png(figure) -> bytes:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()


def _number(value: Any, digits: int) -> str:
    """A report's number for a title; "n/a" for null (a rho or ECE that could not be computed) or anything else."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
        return f"{value:.{digits}f}"
    return "n/a"


def _field(report: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = report.get(key, default)
    if not isinstance(value, kind):
        raise ValueError(f"{key!r} must be a JSON {'object' if kind is dict else 'array'}, not {type(value).__name__}")
    return value


def _title(report: dict[str, Any]) -> str:
    settings = report.get("settings") if isinstance(report.get("settings"), dict) else {}
    return (
        f"{report.get('split', '?')} split, {report.get('n_images', '?')} images, checkpoint {report.get('checkpoint_id', '?')}, "
        f"{settings.get('samples', '?')} samples x {settings.get('steps', '?')} steps"
    )


def reliability_diagram(report: dict[str, Any]) -> bytes:
    """PNG: observed lesion frequency against mean predicted probability per bin, pixels pooled over all images."""
    rows = _field(_field(report, "calibration_bins", dict, {}), "rows", list, [])
    try:
        rows = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("calibration_bins rows must be rows of three numbers (pixels, summed probability, lesion pixels)") from None
    if rows.size == 0:
        raise ValueError("the report has no calibration bins (evaluate with this version of mlffm)")
    if rows.ndim != 2 or rows.shape[1] != 3 or not np.isfinite(rows).all() or (rows < 0).any():
        raise ValueError(f"calibration_bins rows must be rows of three finite numbers >= 0, got an array of shape {rows.shape}")
    if rows[:, 0].sum() == 0:
        raise ValueError("the report has no calibration bins (evaluate with this version of mlffm)")
    plt = _pyplot()
    bins = len(rows)
    filled = rows[:, 0] > 0
    confidence = rows[filled, 1] / rows[filled, 0]
    frequency = rows[filled, 2] / rows[filled, 0]
    share = rows[filled, 0] / rows[:, 0].sum()
    edges = np.linspace(0, 1, bins + 1)
    centres = (edges[:-1] + edges[1:])[filled] / 2
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], color="0.6", linestyle="--", label="perfect calibration")
    top.bar(centres, frequency, width=1 / bins, alpha=0.35, edgecolor="C0", label="observed lesion frequency")
    top.plot(confidence, frequency, "o-", color="C3", label="per bin (mean probability, frequency)")
    top.set_ylabel("fraction of pixels that are lesion")
    metrics = report.get("metrics") if isinstance(report.get("metrics"), dict) else {}
    top.set_title(f"Reliability, ECE {_number(metrics.get('ece'), 4)}\n{_title(report)}", fontsize=8)
    top.legend(fontsize=7, loc="upper left")
    bottom.bar(centres, share, width=1 / bins, color="0.5")
    bottom.set_yscale("log")
    bottom.set_xlabel("mean predicted probability")
    bottom.set_ylabel("share of pixels")
    png = _png(figure)
    plt.close(figure)
    return png


def uncertainty_vs_dice(report: dict[str, Any]) -> bytes:
    """PNG: per-image Dice against the mean uncertainty and, where recorded, the samples' disagreement (the triage score).

    One panel per score, each with its Spearman rho against the error (1 - Dice) in the title.
    """
    per_image = _field(report, "per_image", list, [])
    if not all(isinstance(r, dict) for r in per_image):
        raise ValueError("'per_image' must hold one JSON object per image")
    rows = [r for r in per_image if "mean_uncertainty" in r]
    if not rows:
        raise ValueError("the report has no per-image uncertainty")
    for key in ("dice", "mean_uncertainty", *(("disagreement",) if all("disagreement" in r for r in rows) else ())):
        if not all(isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) for r in rows):
            raise ValueError(f"every per-image {key!r} must be a number")
    panels = [("mean_uncertainty", "mean uncertainty of the image", "uncertainty_error_spearman")]
    if all("disagreement" in r for r in rows):
        panels.append(("disagreement", "disagreement: 1 - mean pairwise Dice of the samples", "disagreement_error_spearman"))
    plt = _pyplot()
    scores = np.array([r["dice"] for r in rows])
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (key, label, rho_key) in zip(axes[0], panels):
        ax.scatter(np.array([r[key] for r in rows]), scores, s=8, alpha=0.5)
        ax.set_xlabel(label)
        ax.set_ylabel("Dice of the consensus mask")
        ax.set_title(f"Spearman rho (vs 1 - Dice) = {_number(report.get(rho_key), 3)}", fontsize=9)
    figure.suptitle(_title(report), fontsize=8)
    png = _png(figure)
    plt.close(figure)
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.scoring.figures", description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="JSON written by mlffm evaluate --json")
    parser.add_argument("out", type=Path, help="folder for reliability_diagram.png and uncertainty_vs_dice.png")
    parser.add_argument("--overwrite", action="store_true", help="replace figures already in OUT")
    args = parser.parse_args(argv)
    targets = (args.out / "reliability_diagram.png", args.out / "uncertainty_vs_dice.png")
    try:
        report = json.loads(args.report.read_text(encoding="utf-8"))
        if not isinstance(report, dict):
            raise ValueError(f"not an evaluation report (a JSON {type(report).__name__}, not an object)")
        existing = [str(path) for path in targets if path.exists()]
        if existing and not args.overwrite:
            raise FileExistsError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''} (use --overwrite to replace)")
        pngs = (reliability_diagram(report), uncertainty_vs_dice(report))  # both drawn before either is written
        args.out.mkdir(parents=True, exist_ok=True)
        for path, png in zip(targets, pngs):
            atomic_write_bytes(path, png)
    except (OSError, ValueError, RecursionError) as err:
        print(f"figures: error: {args.report}: {str(err) or type(err).__name__}", file=sys.stderr)
        return 2
    print(f"wrote {args.out / 'reliability_diagram.png'} and {args.out / 'uncertainty_vs_dice.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
