"""Write a downscaled copy of a dataset folder, for carrying to a GPU machine.

    python scripts/make_compact_copy.py ../shared/data/isic2018_task1 gpu/isic192 --size 192 --splits train,val

Images become ``size x size`` JPEG (quality 95), masks ``size x size`` PNG
(area-averaged, then thresholded at half), and ``splits.csv`` keeps only the
listed splits: the test split never leaves this machine. The layout is the
one ``mlffm train`` reads, and training resizes to its working size as usual.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.data.datasets import list_cases, load_case  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--splits", default="train,val")
    parser.add_argument("--quality", type=int, default=95)
    args = parser.parse_args()
    if args.out.exists():
        print(f"{args.out}: already exists", file=sys.stderr)
        return 2
    (args.out / "images").mkdir(parents=True)
    (args.out / "masks").mkdir()
    rows = []
    for split in args.splits.split(","):
        for case in list_cases(args.data, split).cases:
            image, mask = load_case(case)
            rgb = Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((args.size, args.size), Image.Resampling.BOX)
            rgb.save(args.out / "images" / f"{case.case_id}.jpg", quality=args.quality)
            coverage = Image.fromarray(mask.astype(np.uint8) * 255).resize((args.size, args.size), Image.Resampling.BOX)
            Image.fromarray(((np.asarray(coverage) >= 128) * 255).astype(np.uint8)).save(args.out / "masks" / f"{case.case_id}.png")
            rows.append((case.case_id, split))
    with (args.out / "splits.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "split"])
        writer.writerows(rows)
    print(f"wrote {len(rows)} cases to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
