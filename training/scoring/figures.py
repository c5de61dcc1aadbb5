"""Figures of an ``mlffm evaluate --json`` report: the reliability diagram and uncertainty against Dice.

Run as ``python -m training.scoring.figures REPORT.json OUT_DIR``. Needs matplotlib
(the ``figures`` extra); nothing else in the project does.
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


def _save(figure, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def _title(report: dict[str, Any]) -> str:
    settings = report.get("settings", {})
    return (
        f"{report.get('split', '?')} split, {report.get('n_images', '?')} images, checkpoint {report.get('checkpoint_id', '?')}, "
        f"{settings.get('samples', '?')} samples x {settings.get('steps', '?')} steps"
    )


def reliability_diagram(report: dict[str, Any], path: Path) -> None:
    """Observed lesion frequency against mean predicted probability per bin, pixels pooled over all images."""
    rows = np.asarray(report.get("calibration_bins", {}).get("rows", []), dtype=np.float64)
    if rows.size == 0 or rows[:, 0].sum() == 0:
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
    top.set_title(f"Reliability, ECE {report.get('metrics', {}).get('ece', float('nan')):.4f}\n{_title(report)}", fontsize=8)
    top.legend(fontsize=7, loc="upper left")
    bottom.bar(centres, share, width=1 / bins, color="0.5")
    bottom.set_yscale("log")
    bottom.set_xlabel("mean predicted probability")
    bottom.set_ylabel("share of pixels")
    _save(figure, path)
    plt.close(figure)


def uncertainty_vs_dice(report: dict[str, Any], path: Path) -> None:
    """Per-image Dice against the mean uncertainty and, where recorded, the samples' disagreement (the triage score).

    One panel per score, each with its Spearman rho against the error (1 - Dice) in the title.
    """
    rows = [r for r in report.get("per_image", []) if "mean_uncertainty" in r]
    if not rows:
        raise ValueError("the report has no per-image uncertainty")
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
        ax.set_title(f"Spearman rho (vs 1 - Dice) = {report.get(rho_key, float('nan')):.3f}", fontsize=9)
    figure.suptitle(_title(report), fontsize=8)
    _save(figure, path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.scoring.figures", description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="JSON written by mlffm evaluate --json")
    parser.add_argument("out", type=Path, help="folder for reliability_diagram.png and uncertainty_vs_dice.png")
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.report.read_text())
        args.out.mkdir(parents=True, exist_ok=True)
        reliability_diagram(report, args.out / "reliability_diagram.png")
        uncertainty_vs_dice(report, args.out / "uncertainty_vs_dice.png")
    except (OSError, ValueError, KeyError) as err:
        print(f"figures: error: {args.report}: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out / 'reliability_diagram.png'} and {args.out / 'uncertainty_vs_dice.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
