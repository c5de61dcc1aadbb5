"""How another clinic's framing costs: Dice of photos put in pages, between bars or at other sizes, side by side.

    python benchmarks/framing.py ../shared/data/isic2018_task1 --split val --limit 20 [--margins both] [--samples 4]

Each image and its reference are framed the same way (a white page round
the photo, black or skin-coloured bars to 2:1, a letterbox, a small photo
in a large skin-coloured field, an upscale to 4000 x 3000) and segmented
with the shipped weights at one seed. The rows are paired: the same images
in each. ``--margins both`` runs every row with the uniform-margin rule
(model/inputs/margins.py) off and on; the "inside" column is the Dice within
the photo's own rectangle, so a mask traced round the page shows as a low
Dice with a fair "inside".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

import model.inputs.margins as margins_rule  # noqa: E402
from model import Segmenter  # noqa: E402
from training.data.datasets import list_cases, load_case  # noqa: E402
from training.interactive.clicks import dice  # noqa: E402


def _framed(image, truth, height, width, top, left, colour):
    page = np.empty((height, width, 3), np.uint8)
    page[:] = colour
    mask = np.zeros((height, width), bool)
    h, w = truth.shape
    page[top:top + h, left:left + w], mask[top:top + h, left:left + w] = image, truth
    return page, mask, (slice(top, top + h), slice(left, left + w))


def _skin(image, truth):
    return np.median(image[~truth], axis=0).astype(np.uint8) if (~truth).any() else np.array([200, 150, 130], np.uint8)


def _upscaled(image, truth, width, height):
    big = np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))
    mask = np.asarray(Image.fromarray(truth.astype(np.uint8) * 255).resize((width, height), Image.NEAREST)) > 127
    return big, mask, None


def framings(image, truth):
    """Name -> (framed image, framed reference, the photo's rows and columns in it or None)."""
    h, w = truth.shape
    return {
        "as given": (image, truth, None),
        "white page, 3x": _framed(image, truth, 3 * h, 3 * w, h, w, 255),
        "black bars to 2:1": _framed(image, truth, h, 2 * w, 0, w // 2, 0),
        "skin-coloured bars to 2:1": _framed(image, truth, h, 2 * w, 0, w // 2, _skin(image, truth)),
        "letterbox, black, 2:3": _framed(image, truth, h + h // 2, w, h // 4, 0, 0),
        "small photo in a 3x skin field": _framed(image, truth, 3 * h, 3 * w, h, w, _skin(image, truth)),
        "upscaled to 4000 x 3000": _upscaled(image, truth, 4000, 3000),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--margins", choices=["on", "off", "both"], default="both")
    args = parser.parse_args(argv)
    listing = list_cases(args.data, args.split)
    cases = listing.cases[:: max(1, len(listing.cases) // args.limit)][: args.limit]
    segmenter = Segmenter.load(None, device="cpu")
    settings = {"off": [-1], "on": [margins_rule.FLAT_LEVELS], "both": [-1, margins_rule.FLAT_LEVELS]}[args.margins]
    scores: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for case in tqdm(cases, desc="images"):
        image, truth = load_case(case)
        for name, (framed, reference, inside) in framings(image, truth).items():
            for level in settings:
                margins_rule.FLAT_LEVELS = level
                mask = segmenter.propose(framed, args.samples, args.steps, seed=0).consensus
                inner = dice(mask[inside], truth) if inside is not None else float("nan")
                scores.setdefault((name, level), []).append((dice(mask, reference), inner))
    print(f"\n{len(cases)} {args.split} images, {args.samples} x {args.steps}, seed 0")
    print("| framing | margins rule | Dice | inside the photo | images below 0.8 |\n| --- | --- | --- | --- | --- |")
    for (name, level), rows in scores.items():
        values = np.array(rows)
        inner = f"{np.nanmean(values[:, 1]):.4f}" if np.isfinite(values[:, 1]).any() else ""
        print(f"| {name} | {'off' if level < 0 else 'on'} | {values[:, 0].mean():.4f} | {inner} | {int((values[:, 0] < 0.8).sum())} |")


if __name__ == "__main__":
    main()
