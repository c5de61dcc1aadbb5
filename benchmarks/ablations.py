"""The ablation study of docs/results.md: five variants, one data set, one budget, one test split.

    python benchmarks/ablations.py DATA --out runs/ablations --size 64 --minutes 12

(a) the full model; (b) MLFFM replaced by plain skips; (c) without the
boundary-sensitive term; (d) model (a) run as a single-step direct predictor
(one pass, no sampling); (e) a plain U-Net of similar size (3.4 M parameters)
trained with Dice + BCE. Every variant is an option of the one model, trained
with ``mlffm train`` under the same ``--time-budget`` and scored with
``mlffm evaluate`` on the test split at the default sampling settings.

Each step's output is kept, so a rerun only does what is missing (an
interrupted training resumes from its state). The table is printed at the end, in Markdown.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

VARIANTS = {
    "a": ("full model (MLFFM skips, boundary term, diffusion)", []),
    "b": ("plain skips instead of MLFFM", ["--fusion", "plain"]),
    "c": ("no boundary-sensitive term", ["--boundary-weight", "0"]),
    "e": (
        "plain U-Net, Dice + BCE, one pass",
        ["--prediction", "direct", "--no-mask-path", "--fusion", "plain", "--boundary-weight", "0", "--widths", "24,48,80,128,160"],
    ),
}
COLUMNS = ("dice", "jaccard", "hd95", "ece", "ged")


def _run(command: list[str]) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def _mlffm(*args: str) -> list[str]:
    return [sys.executable, "-m", "training.cli", *args]


def _finished(state: Path, args: argparse.Namespace) -> bool:
    from model import Segmenter

    _, _, meta = Segmenter.load_with_state(state, "cpu")
    return meta["epoch"] >= args.epochs or meta["seconds"] >= args.minutes * 60


def train(variant: str, args: argparse.Namespace) -> Path:
    model = args.out / f"{variant}.mlffm"
    state = args.out / f"{variant}.resume.mlffm"
    if model.exists() and state.exists() and _finished(state, args):
        return model
    common = ["--size", str(args.size), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr)]
    common += ["--time-budget", str(args.minutes), "--seed", str(args.seed), "--device", args.device]
    resume = ["--resume", str(state)] if state.exists() else []
    _run(_mlffm("train", str(args.data), "-o", str(model), *common, *VARIANTS[variant][1], *resume))
    return model


def evaluate(name: str, model: Path, args: argparse.Namespace, extra: list[str]) -> dict:
    report = args.out / f"{name}.test.json"
    if not report.exists():
        _run(_mlffm("evaluate", str(args.data), "--checkpoint", str(model), "--split", args.split, "--device", args.device, "--json", str(report), *extra))
    return json.loads(report.read_text())


def table(results: dict[str, dict]) -> str:
    lines = [
        "| variant | Dice | Jaccard | HD95 (px) | ECE | GED | s / image | epochs | val Dice |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, (label, result, meta) in results.items():
        m = result["metrics"]
        cells = [f"{m[c]:.4f}" if c != "hd95" else f"{m[c]:.1f}" for c in COLUMNS]
        if name in ("d", "e"):
            cells[COLUMNS.index("ged")] = "n/a"  # one deterministic mask: no distribution of samples to compare
        cells = [c if c != "nan" else "n/a" for c in cells]
        lines.append(
            f"| ({name}) {label} | {' | '.join(cells)} | {result['seconds_per_image']:.2f} | {meta.get('epochs', '?')} | {meta.get('val', float('nan')):.4f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/ablations"))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=12.0, help="training budget per variant")
    parser.add_argument("--epochs", type=int, default=40, help="epoch cap (the budget usually ends training first)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="test")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--variants", default="abcde", help="which variants to run, e.g. 'ae'")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from model import Segmenter

    results = {}
    for variant in args.variants:
        source = "a" if variant == "d" else variant
        model = train(source, args)
        provenance = Segmenter.load(model, "cpu").provenance
        meta = {"epochs": len(provenance.get("history", [])), "val": provenance.get("best_val_dice", float("nan"))}
        if variant == "d":
            results["d"] = ("model (a) as a single-step direct predictor", evaluate("d", model, args, ["--direct"]), meta)
        else:
            results[variant] = (VARIANTS[variant][0], evaluate(variant, model, args, []), meta)
    print()
    print(f"size {args.size}, {args.minutes} min of training each, split {args.split}")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
