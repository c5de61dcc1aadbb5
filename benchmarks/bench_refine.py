"""Seconds per refine against a plain proposal, side by side in one run.

    python benchmarks/bench_refine.py [--prompted FILE] [--repeats 5] [--samples N] [--steps N]

On one sample image (512 x 512), interleaved so machine load hits every row
alike: the plain proposal of the shipped weights; a refine with 2 clicks as
kept-pixel disks (any weights), without and with the click's reach; and,
with ``--prompted``, a refine with 2 clicks and the current mask as prompts
plus kept disks, without and with the reach (the plugin's default), and the
same with a box around the lesion (the first proposal's box, grown by a
tenth: everything outside held as skin). A refine
is what the plugin and the click protocol run
(:func:`training.interactive.protocol.refine`): one proposal, plus the prompt
encoding, the kept-pixel replacement and the reach step, which is also
timed alone. The ratio column shows the overhead over a plain proposal.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import Segmenter  # noqa: E402
from model.click_reach import click_reach  # noqa: E402
from model.inputs.box import Box  # noqa: E402
from model.inputs.prompts import Prompts  # noqa: E402
from training.data.imageio import read_image  # noqa: E402
from training.interactive.protocol import refine  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompted", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    image = read_image(sorted((ROOT / "napari_mlffm" / "samples").glob("*.jpg"))[0])
    shipped = Segmenter.load(None, args.device)
    first = shipped.propose(image, args.samples, args.steps)
    h, w = image.shape[:2]
    prompts = Prompts(((h / 2, w / 2),), ((10.0, 10.0),), first.consensus)
    sampling = {"n_samples": args.samples, "steps": args.steps}
    rows = {"plain proposal (shipped)": lambda: shipped.propose(image, args.samples, args.steps)}
    rows["refine: kept disks (shipped)"] = lambda: refine(shipped, image, prompts, "kept", reach=False, **sampling)
    rows["refine: kept disks + reach (shipped)"] = lambda: refine(shipped, image, prompts, "kept", **sampling)
    if args.prompted is not None:
        prompted = Segmenter.load(args.prompted, args.device)
        rows["refine: prompts + kept (prompted)"] = lambda: refine(prompted, image, prompts, "both", reach=False, **sampling)
        rows["refine: prompts + kept + reach (prompted)"] = lambda: refine(prompted, image, prompts, "both", **sampling)
        box = (Box.around(first.consensus) or Box(0, 0, h, w)).grown(0.1)
        rows["refine: ... + reach, in a box (prompted)"] = lambda: refine(prompted, image, prompts, "both", box=box, **sampling)
    rows["the reach step alone"] = lambda: click_reach(first.probability, prompts.prior, prompts.positive, prompts.negative)
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.repeats):
        for name, run in rows.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    n, steps = shipped.sampling_settings(args.samples, args.steps)
    print(f"{n} samples x {steps} steps, {shipped.config.flip_views} flip views, device {args.device}, median of {args.repeats}")
    base = statistics.median(times["plain proposal (shipped)"])
    print(f"{'row':<44} {'s':>7} {'ratio':>6}")
    for name, values in times.items():
        print(f"{name:<44} {statistics.median(values):>7.3f} {statistics.median(values) / base:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
