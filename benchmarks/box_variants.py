"""How should a box around the lesion steer the proposals? Several ways, side by side on the same images.

    python benchmarks/box_variants.py DATA [--split val] [--stride 4] [--limit N] [--samples N] [--steps N] [--margins 0.1,0.25]

The simulated user's box is the reference's tight bounding box (as in SAM's
and MedSAM's box-prompt evaluations). For each image:

* ``no box``: the ordinary proposal;
* ``clip``: that proposal cut to the box (no extra work);
* ``kept``: the whole image re-proposed with everything outside the box
  held as skin (``model/inputs/box.py``; what the plugin and ``mlffm
  evaluate --box`` do);
* ``zoom M``: the box grown by M of its size on each side, cropped,
  proposed at the model's working size, pasted back and cut to the box
  (RITM's Zoom-In applied to a box).

Columns: mean Dice, the paired gain over ``no box`` with its standard
error, the images better and worse by more than 0.005, the share at Dice
>= 0.90, and the worst image's Dice.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import Segmenter  # noqa: E402
from model.inputs.box import Box  # noqa: E402
from training.data.datasets import list_cases, load_case  # noqa: E402
from training.interactive.clicks import dice  # noqa: E402


def zoomed(segmenter: Segmenter, image: np.ndarray, box: Box, margin: float, sampling: dict) -> np.ndarray:
    """(H, W) bool: the proposal of the box's crop (grown by ``margin``), pasted back and cut to the box."""
    height, width = image.shape[:2]
    r0, c0, r1, c1 = box.grown(margin).window(height, width)
    crop = segmenter.propose(image[r0:r1, c0:c1], **sampling)
    mask = np.zeros((height, width), bool)
    mask[r0:r1, c0:c1] = crop.consensus
    return mask & box.inside(height, width)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--split", default="val")
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--samples", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--margins", default="0.1,0.25", help="the zoom rows' margins, comma-separated")
    args = parser.parse_args()
    margins = [float(m) for m in args.margins.split(",") if m]
    segmenter = Segmenter.load(args.checkpoint, "cpu")
    sampling = {"n_samples": args.samples, "steps": args.steps, "seed": args.seed}
    cases = list_cases(args.data, args.split).cases
    cases = (cases[: args.limit] if args.limit else cases)[:: args.stride]
    names = ["no box", "clip", "kept", *[f"zoom {m:g}" for m in margins]]
    scores: dict[str, list[float]] = {name: [] for name in names}
    for case in tqdm(cases, unit="image", dynamic_ncols=True):
        image, truth = load_case(case)
        truth = np.asarray(truth, bool)
        height, width = truth.shape
        box = Box.around(truth)
        if box is None:
            continue  # no lesion: no box to draw
        box = box.at_least(height, width)
        first = segmenter.propose(image, **sampling)
        inside = box.inside(height, width)
        scores["no box"].append(dice(first.consensus, truth))
        scores["clip"].append(dice(first.consensus & inside, truth))
        scores["kept"].append(dice(segmenter.propose(image, kept=box.outside_as_skin(height, width), **sampling).consensus, truth))
        for margin in margins:
            scores[f"zoom {margin:g}"].append(dice(zoomed(segmenter, image, box, margin, sampling), truth))
    base = np.array(scores["no box"])
    n_samples, steps = segmenter.sampling_settings(args.samples, args.steps)
    print(f"\n{args.split}: {len(base)} images (every {args.stride}th), {n_samples} samples x {steps} steps, seed {args.seed}")
    print(f"{'row':<10} | Dice   | gain (SE)         | better / worse | >= 0.90 | worst")
    for name in names:
        values = np.array(scores[name])
        gain = values - base
        se = gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else 0.0
        print(
            f"{name:<10} | {values.mean():.4f} | {gain.mean():+.4f} ({se:.4f}) | {int((gain > 0.005).sum()):>6} / {int((gain < -0.005).sum()):<5} "
            f"| {100 * (values >= 0.9).mean():5.1f} % | {values.min():.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
