"""The ablation study of docs/results.md: five variants, one data set, one budget, one test split.

    python benchmarks/ablations.py DATA --out runs/ablations --size 64 --minutes 12
    python benchmarks/ablations.py COMPACT_COPY --eval-data TEST_DATA --parallel --size 128 --minutes 16 --epochs 400  # one GPU

(a) the full model; (b) MLFFM replaced by plain skips; (c) without the
boundary-sensitive term; (d) model (a) run as a single-step direct predictor
(one pass, no sampling); (e) a plain U-Net of similar size (7.0 M parameters against 7.0 M)
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

FULL_MODEL = ["--widths", "32,64,128,192,256", "--mask-widths", "16,32,64,96,128"]
VARIANTS = {
    "a": ("full model (MLFFM skips, boundary term, diffusion)", FULL_MODEL),
    "b": ("plain skips instead of MLFFM", [*FULL_MODEL, "--fusion", "plain"]),
    "c": ("no boundary-sensitive term", [*FULL_MODEL, "--boundary-weight", "0"]),
    "e": (
        "plain U-Net, Dice + BCE, one pass",
        ["--prediction", "direct", "--no-mask-path", "--fusion", "plain", "--boundary-weight", "0", "--widths", "32,64,112,176,240"],
    ),
}
COLUMNS = ("dice", "jaccard", "hd95", "ece", "ged")


def _run(command: list[str], log: Path | None = None) -> subprocess.Popen:
    """Start a command (its output to ``log`` if given); the caller waits."""
    print("$", " ".join(command), flush=True)
    if log is None:
        return subprocess.Popen(command)
    with log.open("a") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)


def _wait(processes: list[subprocess.Popen]) -> None:
    failed = [p.args for p in processes if p.wait() != 0]
    if failed:
        raise SystemExit(f"failed: {failed}")


def _mlffm(*args: str) -> list[str]:
    return [sys.executable, "-m", "training.cli", *args]


def _finished(state: Path, args: argparse.Namespace) -> bool:
    from model import Segmenter

    _, _, meta = Segmenter.load_with_state(state, "cpu")
    return meta["epoch"] >= args.epochs or meta["seconds"] >= args.minutes * 60


def train(variant: str, args: argparse.Namespace) -> tuple[Path, subprocess.Popen | None]:
    model = args.out / f"{variant}.mlffm"
    state = args.out / f"{variant}.mlffm.resume.mlffm"  # training.loop.trainer.resume_path_for(model)
    if model.exists() and state.exists() and _finished(state, args):
        return model, None
    common = ["--size", str(args.size), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr)]
    common += ["--time-budget", str(args.minutes), "--seed", str(args.seed), "--device", args.device]
    common += ["--high-t-fraction", str(args.high_t_fraction)]
    resume = ["--resume", str(state)] if state.exists() else []
    log = args.out / f"{variant}.train.log" if args.parallel else None
    return model, _run(_mlffm("train", str(args.data), "-o", str(model), *common, *VARIANTS[variant][1], *resume), log)


def evaluate(name: str, model: Path, args: argparse.Namespace, extra: list[str]) -> tuple[Path, subprocess.Popen | None]:
    report = args.out / f"{name}.test.json"
    if report.exists():
        return report, None
    data = args.eval_data or args.data
    log = args.out / f"{name}.eval.log" if args.parallel else None
    command = ["evaluate", str(data), "--checkpoint", str(model), "--split", args.split, "--device", args.device, "--json", str(report), *extra]
    command += ["--limit", str(args.eval_limit)] if args.eval_limit else []
    return report, _run(_mlffm(*command), log)


def table(results: dict[str, dict]) -> str:
    lines = [
        "| variant | Dice | Jaccard | HD95 (px) | ECE | GED | Spearman rho | s / image | epochs | val Dice |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, (label, result, meta) in results.items():
        m = result["metrics"]
        cells = ["nan" if m[c] is None else f"{m[c]:.4f}" if c != "hd95" else f"{m[c]:.1f}" for c in COLUMNS]  # null: not finite
        if name in ("d", "e"):
            cells[COLUMNS.index("ged")] = "n/a"  # one deterministic mask: no distribution of samples to compare
        cells = [c if c != "nan" else "n/a" for c in cells]
        rho = result.get("uncertainty_error_spearman")
        rho = float("nan") if rho is None else rho
        cells.append("n/a" if rho != rho else f"{rho:.3f}")
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
    parser.add_argument(
        "--high-t-fraction", type=float, default=0.0,
        help="passed to every training (default 0, uniform timesteps: the setting docs/results.md's tables were measured with)",
    )
    parser.add_argument("--split", default="test")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--variants", default="abcde", help="which variants to run, e.g. 'ae'")
    parser.add_argument("--eval-data", type=Path, help="dataset folder holding the evaluation split (default: DATA)")
    parser.add_argument("--eval-limit", type=int, help="score only the first N cases (smoke runs; never for the table)")
    parser.add_argument("--parallel", action="store_true", help="train (then evaluate) all variants at once, each logging to OUT/<variant>.*.log (one GPU)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from model import Segmenter

    trained, running = {}, []
    for variant in sorted({"a" if v == "d" else v for v in args.variants}):
        trained[variant], process = train(variant, args)
        running += [process] if process else []
        if not args.parallel and process:
            _wait([process])
    _wait(running)
    reports, running = {}, []
    for variant in args.variants:
        source = "a" if variant == "d" else variant
        reports[variant], process = evaluate(variant, trained[source], args, ["--direct"] if variant == "d" else [])
        running += [process] if process else []
        if not args.parallel and process:
            _wait([process])
    _wait(running)
    results = {}
    for variant in args.variants:
        provenance = Segmenter.load(trained["a" if variant == "d" else variant], "cpu").provenance
        history = provenance.get("history", [])
        meta = {"epochs": history[-1]["epoch"] if history else 0, "val": provenance.get("best_val_dice", float("nan"))}
        label = "model (a) as a single-step direct predictor" if variant == "d" else VARIANTS[variant][0]
        results[variant] = (label, json.loads(reports[variant].read_text()), meta)
    print()
    print(f"size {args.size}, {args.minutes} min of training each, split {args.split}")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
