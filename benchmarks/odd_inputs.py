"""What the model proposes for images that are no dermoscopic image of a lesion, beside a real one, in one table.

    python benchmarks/odd_inputs.py [IMAGE] [--checkpoint FILE] [--seed 0]

IMAGE (default: the first sample image) is the real one; the other rows are
made from it or from nothing: flat grey, black, white and skin-coloured
frames; uniform noise; a lesion-free corner of the image (its top-left
sixth, enlarged to the image's size: skin only, when the lesion is central);
the image's colours inverted; and the image turned by 90 degrees (its last
column compares the turned proposal with the real one's, turned). Each row
gives the share of the image called lesion, the triage score (1 - the mean
Dice between proposals: high means "look at this one"), the mean
uncertainty and the proposal's notes. For comparison, the shipped weights'
triage score on the ISIC test split has median 0.04 and 99th percentile
0.26 (docs/test_eval.json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import Segmenter  # noqa: E402
from training.data.imageio import read_image  # noqa: E402


def odd_images(image: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The table's inputs, all (H, W, 3) uint8 at the real image's size."""
    from PIL import Image

    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    rgb = rgb[..., :3].astype(np.uint8)
    height, width = rgb.shape[:2]
    corner = rgb[: max(height // 6, 8), : max(width // 6, 8)]
    return {
        "the image": rgb,
        "flat grey": np.full_like(rgb, 128),
        "black": np.zeros_like(rgb),
        "white": np.full_like(rgb, 255),
        "skin colour": np.broadcast_to(np.array([220, 170, 150], np.uint8), rgb.shape).copy(),
        "uniform noise": np.random.default_rng(seed).integers(0, 256, rgb.shape, dtype=np.uint8),
        "skin only (a corner, enlarged)": np.asarray(Image.fromarray(corner).resize((width, height), Image.BILINEAR)),
        "colours inverted": 255 - rgb,
        "turned 90 degrees": np.ascontiguousarray(np.rot90(rgb)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", type=Path, default=sorted((ROOT / "napari_mlffm" / "samples").glob("*.jpg"))[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="model file (default: the shipped weights)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    segmenter = Segmenter.load(args.checkpoint, "cpu")
    rows, reference = [], None
    for name, image in odd_images(read_image(args.image), args.seed).items():
        proposal = segmenter.propose(image, seed=args.seed)
        mask = proposal.consensus
        agreement = ""
        if name == "the image":
            reference = mask
        elif name == "turned 90 degrees" and reference is not None:
            turned = np.rot90(reference)
            agreement = f"{2 * np.count_nonzero(turned & mask) / max(np.count_nonzero(turned) + np.count_nonzero(mask), 1):.3f}"
        rows.append((name, f"{mask.mean():.3f}", f"{proposal.disagreement:.3f}", f"{proposal.uncertainty.mean():.3f}", agreement, "; ".join(proposal.notes)))
    header = ("input", "lesion share", "triage score", "mean uncertainty", "Dice with the image's, turned", "notes")
    print(f"{args.image.name}, checkpoint {segmenter.checkpoint_id}, {segmenter.config.default_samples} x {segmenter.config.default_steps}, seed {args.seed}")
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join("---" for _ in header) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
