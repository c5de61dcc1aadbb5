"""Seconds per refine against a plain proposal, side by side in one run.

    python benchmarks/bench_refine.py [--prompted FILE] [--repeats 5] [--samples N] [--refine-samples N] [--steps N]

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
timed alone. The ratio column shows a refine's time over a plain proposal's.
A plain proposal draws ``--samples`` (default: the model's, 16 shipped) and a
refine ``--refine-samples`` (default: the model's refine default, 8 shipped),
as in the plugin; give both the same number to see a refine's overhead.
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
from training.interactive.protocol import refine, refine_samples_for  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompted", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int)
    parser.add_argument("--refine-samples", type=int, help="proposals per refine (default: the model's refine default, at most --samples)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    image = read_image(sorted((ROOT / "napari_mlffm" / "samples").glob("*.jpg"))[0])
    shipped = Segmenter.load(None, args.device)
    first = shipped.propose(image, args.samples, args.steps)
    h, w = image.shape[:2]
    prompts = Prompts(((h / 2, w / 2),), ((10.0, 10.0),), first.consensus)
    n, steps = shipped.sampling_settings(args.samples, args.steps)
    # as in the plugin: the model's refine default, never more than the proposal being refined drew
    per_refine = {"shipped": args.refine_samples or refine_samples_for(shipped, n)}
    plain = {"n_samples": per_refine["shipped"], "steps": args.steps}
    rows = {"plain proposal (shipped)": lambda: shipped.propose(image, args.samples, args.steps)}
    rows["refine: kept disks (shipped)"] = lambda: refine(shipped, image, prompts, "kept", reach=False, **plain)
    rows["refine: kept disks + reach (shipped)"] = lambda: refine(shipped, image, prompts, "kept", **plain)
    if args.prompted is not None:
        prompted = Segmenter.load(args.prompted, args.device)
        per_refine["prompted"] = args.refine_samples or refine_samples_for(prompted, n)
        sampling = {"n_samples": per_refine["prompted"], "steps": args.steps}
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
    refines = ", ".join(f"{count} ({name})" for name, count in per_refine.items()) if len(set(per_refine.values())) > 1 else per_refine["shipped"]
    print(
        f"plain proposal {n} samples, refines {refines} samples, x {steps} steps, {shipped.config.flip_views} flip views, "
        f"device {args.device}, median of {args.repeats}"
    )
    base = statistics.median(times["plain proposal (shipped)"])
    print(f"{'row':<44} {'s':>7} {'ratio':>6}")
    for name, values in times.items():
        print(f"{name:<44} {statistics.median(values):>7.3f} {statistics.median(values) / base:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
