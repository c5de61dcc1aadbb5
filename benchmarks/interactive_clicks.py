"""The click protocol side by side: what trained prompts and kept pixels each add.

    python benchmarks/interactive_clicks.py DATA --split test [--prompted FILE] [--baseline FILE]
        [--clicks 10] [--limit N] [--samples N] [--refine-samples N] [--steps N] [--seed 0] [--reach on|off|both] [--box off|on|both] [--json FILE]
    python benchmarks/interactive_clicks.py --merge ROW1.json ROW2.json   # rows run as separate processes, one table

A simulated user (``training/interactive/clicks.py``, the RITM / SimpleClick rule: the
deepest point of the largest error region, positive for a missed region,
negative for a false one) refines each image's proposal with up to K clicks.
Rows, all on the same images, seed and sampling settings:

1. ``--baseline`` weights (default: the shipped ones), clicks as kept pixels
   (a disk of lesion / skin held fixed around each click; no training): the
   kept-pixel sampler alone. Its Dice@0 is the baseline with no refinement.
2. ``--prompted`` weights (trained with ``--click-prob``), clicks as input
   prompts with the current mask as the prior;
3. the same weights, prompts and kept disks together.

``--reach on`` (the default, as in ``mlffm evaluate``) lets each click also
take the probable region connected to it (``model/click_reach.py``); ``off``
leaves it out, and ``both`` runs every row with and without it.
``--box on`` has the simulated user drag the reference's tight box around
the lesion before the first click (``model/inputs/box.py``: the outside
held as skin); Dice@0 is then after the box, and the Dice before it is
printed beside. ``--box both`` runs every row without and with the box.

Without ``--prompted``, only row 1 is run. Columns: mean Dice after 0, 1, 2,
3, 5, 10, 20 clicks (those up to K), NoC@85 and NoC@90 (mean clicks to reach
that Dice; never reached counts as K), the share of images at Dice >= 0.90
within 3 clicks, and the mean seconds per refine (one proposal). ``--samples``
sets the first proposal's samples and ``--refine-samples`` each refine's
(default: the model's refine default, never more than the first's; 8 for
the shipped weights). CPU time is scarce: ``--limit`` takes the first N
images of the split; the table says what was run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tqdm import tqdm  # noqa: E402

from model import Segmenter  # noqa: E402
from training.cli_types import samples_arg  # noqa: E402
from training.data.datasets import list_cases, load_case  # noqa: E402
from training.interactive.protocol import ClickSession, click_session, summarize_sessions  # noqa: E402


def run_row(segmenter: Segmenter, cases, mode: str, reach: bool, box: bool, args) -> dict:
    sessions = []
    desc = mode + (" + reach" if reach else "") + (" + box" if box else "")
    for case in tqdm(cases, desc=desc, unit="image", dynamic_ncols=True):
        image, truth = load_case(case)
        sessions.append(
            click_session(
                segmenter, image, truth, args.clicks, mode, reach=reach, box=box,
                refine_samples=args.refine_samples, n_samples=args.samples, steps=args.steps, seed=args.seed,
            )
        )
    report = summarize_sessions(sessions, args.clicks, mode, reach, box)
    report["per_image"] = [
        {"id": c.case_id, "dice_after": s.dice, "clicks": s.clicks, "dice_before_box": s.dice_before_box} for c, s in zip(cases, sessions)
    ]
    return report


def print_table(results: list[dict], split: str, n_images: int, clicks: int, seed: int, device: str) -> None:
    shown = [k for k in (0, 1, 2, 3, 5, 10, 20) if k <= clicks]
    per_refine = results[0].get("refine_samples", results[0]["samples"])
    print(
        f"\n{split}: {n_images} images, up to {clicks} clicks, seed {seed}, "
        f"{results[0]['samples']} samples x {results[0]['steps']} steps"
        f"{f', {per_refine} per refine' if per_refine is not None else ''}, device {device}"
    )
    header = ["row".ljust(50), "no box", *[f"Dice@{k}" for k in shown], "NoC@85", "NoC@90", ">=0.90 in 3", "s/refine"]
    print(" | ".join(header))
    for r in results:
        before = r.get("dice_before_box", r["dice_after"][0])
        cells = [r["name"].ljust(50), f"{before:.4f}", *[f"{r['dice_after'][k]:.4f}" for k in shown]]
        cells += [f"{r['noc85']:.2f}", f"{r['noc90']:.2f}", f"{100 * r['share_90_within_3']:.1f} %", f"{r['seconds_per_refine']:.3f}"]
        print(" | ".join(cells))


def _restricted(row: dict, ids: list[str], clicks: int) -> dict:
    """``row`` summarised over the images ``ids`` only (its seconds per refine kept: per-image times are not stored)."""
    by_id = {image["id"]: image for image in row["per_image"]}
    sessions = [
        ClickSession(dice=by_id[i]["dice_after"], clicks=[tuple(c) for c in by_id[i]["clicks"]], dice_before_box=by_id[i].get("dice_before_box"))
        for i in ids
    ]
    summary = summarize_sessions(sessions, clicks, row.get("mode", ""), row.get("reach", False), row.get("box", False))
    summary.update(name=row["name"], samples=row["samples"], steps=row["steps"], seconds_per_refine=row["seconds_per_refine"])
    if "refine_samples" in row:
        summary["refine_samples"] = row["refine_samples"]
    summary["per_image"] = [by_id[i] for i in ids]
    return summary


def merge_tables(paths: list[Path]) -> int:
    """One table from several runs' JSON; refuses runs that differ in split, images, clicks, seed or sampling."""
    records = [json.loads(path.read_text()) for path in paths]
    for record in records:  # files written before these keys existed: seed 0, K from the Dice list
        record.setdefault("clicks", len(record["rows"][0]["dice_after"]) - 1)
        record.setdefault("seed", 0)
    first = records[0]
    for path, record in zip(paths, records):
        for key in ("split", "clicks", "seed"):
            if record[key] != first[key]:
                print(f"{path}: {key} {record.get(key)!r} differs from {paths[0]}'s {first.get(key)!r}", file=sys.stderr)
                return 2
        for row in record["rows"]:
            # runs from before refines drew fewer samples refined with the first proposal's
            if (row["samples"], row["steps"], row.get("refine_samples", row["samples"])) != (
                first["rows"][0]["samples"], first["rows"][0]["steps"], first["rows"][0].get("refine_samples", first["rows"][0]["samples"])
            ):
                print(
                    f"{path}: row {row['name']!r} was sampled differently (samples, steps, samples per refine: "
                    f"{row['samples']}, {row['steps']}, {row.get('refine_samples', row['samples'])} against "
                    f"{first['rows'][0]['samples']}, {first['rows'][0]['steps']}, {first['rows'][0].get('refine_samples', first['rows'][0]['samples'])})",
                    file=sys.stderr,
                )
                return 2
    rows = [row for record in records for row in record["rows"]]
    ids = [[image["id"] for image in row["per_image"]] for row in rows]
    common = [i for i in ids[0] if all(i in set(other) for other in ids[1:])]
    n_images = first["n_images"]
    if any(len(other) != len(common) for other in ids):
        if not common:
            print("the runs share no image", file=sys.stderr)
            return 2
        # Rows run on different subsamples (--stride, --limit): every row rescored on the images they share.
        rows = [_restricted(row, common, first["clicks"]) for row in rows]
        n_images = len(common)
        print(f"(rows rescored on the {n_images} images common to all runs)")
    print_table(rows, first["split"], n_images, first["clicks"], first["seed"], first.get("device", "cpu"))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, nargs="?")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="JSON", help="print one table from the --json files of runs of other rows (same split, images, clicks, seed)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--baseline", type=Path, help="weights without prompt channels (default: the shipped weights)")
    parser.add_argument("--prompted", type=Path, help="weights trained with prompts (--click-prob)")
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--stride", type=int, default=1, help="score every Nth image of the split (after --limit): a deterministic subsample")
    parser.add_argument("--samples", type=samples_arg)
    parser.add_argument("--refine-samples", type=samples_arg, help="proposals per refine (default: the model's refine default, at most --samples)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--rows", default="kept,prompts,both", help="which rows to run, comma-separated (default: all three)")
    parser.add_argument(
        "--reach", choices=("on", "off", "both"), default="on",
        help="each click also takes the probable region connected to it (model.click_reach); both: every row with and without",
    )
    parser.add_argument(
        "--box", choices=("off", "on", "both"), default="off",
        help="the user first drags the reference's tight box (outside held as skin); both: every row without and with",
    )
    args = parser.parse_args()
    if args.merge:
        return merge_tables(args.merge)
    if args.data is None:
        parser.error("give DATA (or --merge JSON files)")
    wanted = set(args.rows.split(","))
    cases = list_cases(args.data, args.split).cases
    cases = cases[: args.limit] if args.limit else cases
    cases = cases[:: args.stride]
    rows = []
    if "kept" in wanted:
        baseline = Segmenter.load(args.baseline, args.device)
        rows.append((f"{baseline.checkpoint_id} kept-pixel clicks", baseline, "kept"))
    if args.prompted is not None:
        prompted = Segmenter.load(args.prompted, args.device)
        if "prompts" in wanted:
            rows.append((f"{prompted.checkpoint_id} prompts", prompted, "prompts"))
        if "both" in wanted:
            rows.append((f"{prompted.checkpoint_id} prompts + kept", prompted, "both"))
    if not rows:
        parser.error("no rows to run (--rows, and --prompted for the prompts rows)")
    reaches = {"on": (True,), "off": (False,), "both": (False, True)}[args.reach]
    boxes = {"off": (False,), "on": (True,), "both": (False, True)}[args.box]
    rows = [
        (name + (" + reach" if reach else "") + (" + box" if box else ""), segmenter, mode, reach, box)
        for name, segmenter, mode in rows
        for box in boxes
        for reach in reaches
    ]
    results = []
    for name, segmenter, mode, reach, box in rows:
        started = time.perf_counter()
        report = run_row(segmenter, cases, mode, reach, box, args)
        report.update(name=name, checkpoint_id=segmenter.checkpoint_id, minutes=(time.perf_counter() - started) / 60)
        n, steps = segmenter.sampling_settings(args.samples, args.steps)
        report.update(samples=n, steps=steps, flip_views=segmenter.config.flip_views)
        results.append(report)
        print(f"done: {name} in {report['minutes']:.1f} min", file=sys.stderr)
    print_table(results, args.split, len(cases), args.clicks, args.seed, args.device)
    if args.json is not None:
        record = {"split": args.split, "n_images": len(cases), "clicks": args.clicks, "seed": args.seed, "device": args.device, "rows": results}
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
