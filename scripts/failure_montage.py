"""Draw chosen cases side by side: the image, the reference (green) and proposed (magenta) outlines, the masks, the uncertainty.

    python scripts/failure_montage.py ../shared/data/isic2018_task1 ISIC_0015353 ISIC_0015251 ISIC_0010862 \\
        -o docs/figures/confident_failures.png

One row per case, four panels: the image; the image with the reference
mask's outline in green and the proposal's consensus outline in magenta;
the two masks (green: reference only, magenta: proposal only, white: both);
the proposals' uncertainty (white = the samples disagree). The proposal uses
the shipped weights (or --checkpoint) with their default settings, seed 0.
The images are ISIC 2018 (CC BY-NC 4.0).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import Segmenter  # noqa: E402
from training.data.datasets import list_cases, load_case  # noqa: E402
from training.data.imageio import check_writable, write_png  # noqa: E402

REFERENCE, PROPOSAL = (0, 220, 0), (255, 0, 255)


def outline(mask: np.ndarray, width: int) -> np.ndarray:
    """(H, W) bool: the band of ``width`` pixels just inside the mask's boundary."""
    return mask & ~ndimage.binary_erosion(mask, iterations=width, border_value=0)


def case_row(segmenter: Segmenter, image: np.ndarray, truth: np.ndarray, panel: int) -> np.ndarray:
    """(panel, 4 * panel, 3) uint8: image | outlines | masks | uncertainty, each resized to panel x panel."""
    proposal = segmenter.propose(image, seed=0)
    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    rgb = rgb[..., :3].astype(np.uint8)
    drawn = rgb.copy()
    width = max(min(rgb.shape[:2]) // 170, 1)
    drawn[outline(truth, width)] = REFERENCE
    drawn[outline(proposal.consensus, width)] = PROPOSAL
    masks = np.zeros_like(rgb)
    masks[truth] = REFERENCE
    masks[proposal.consensus] = PROPOSAL
    masks[truth & proposal.consensus] = 255
    uncertainty = np.repeat((proposal.uncertainty * 255).astype(np.uint8)[..., None], 3, axis=2)
    panels = [np.asarray(Image.fromarray(p).resize((panel, panel), Image.BILINEAR)) for p in (rgb, drawn, masks, uncertainty)]
    return np.concatenate(panels, axis=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("ids", nargs="+", help="case ids (file stems) of the dataset")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--panel", type=int, default=256, help="panel size in pixels (default 256)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    try:
        check_writable([args.output], args.overwrite)
        cases = {case.case_id: case for case in list_cases(args.data, None).cases}
        missing = [i for i in args.ids if i not in cases]
        if missing:
            raise ValueError(f"{args.data}: no case named {', '.join(missing)}")
        segmenter = Segmenter.load(args.checkpoint, "cpu")
        rows = [case_row(segmenter, *load_case(cases[i]), args.panel) for i in args.ids]
    except (ValueError, OSError) as err:
        print(f"failure_montage: error: {err}", file=sys.stderr)
        return 2
    write_png(args.output, np.concatenate(rows, axis=0))  # atomic: a temporary file, then a rename
    print(f"wrote {args.output} ({len(rows)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
