"""1 against 2 gloo processes under torchrun: training images/s and segment images/s, with the ratio.

    python benchmarks/bench_distributed.py [--data DIR] [--train-images 64] [--epochs 3] [--size 64]
                                           [--segment-images 16] [--gpu] [--no-default-threads]

Training: ``mlffm train`` from scratch (default widths, ``--size``, global
batch 16) on ``--train-images`` cases of the ISIC folder's train split;
images/s counts only the batches of epochs 2.. (from each epoch's first
progress event to its last batch, so start-up, data loading and validation
are left out). Segment: ``mlffm segment`` with the shipped weights and their
default settings on ``--segment-images`` val images; images/s is N / (wall
time of the run - wall time of the same command rerun on the finished folder,
which only starts, loads the model and checks the cases), so start-up is left
out too. The segment outputs of the runs are compared byte for byte.

Rows: one process with torch's default threads (all cores), one process with
one thread, and torchrun with 2 processes of one thread each (torchrun's
default); ratios and the byte comparison are against the one-thread process. ``--gpu`` adds one process on CUDA. On a 2-core machine expect no
speed-up: the point of the CPU rows is that the distributed path works; a
multi-GPU machine is where the scaling shows.
"""

from __future__ import annotations

import argparse
import csv
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "isic2018_task1"


def small_dataset(data: Path, n_train: int, n_val: int, folder: Path) -> list[Path]:
    """A dataset folder of symlinks: n_train train and n_val val cases; returns n_val.. val image paths too."""
    rows = list(csv.DictReader((data / "splits.csv").open()))
    train = [r["id"] for r in rows if r["split"] == "train"][:n_train]
    val = [r["id"] for r in rows if r["split"] == "val"]
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
    images = {p.stem: p for p in (data / "images").iterdir()}
    masks = {p.stem.removesuffix("_segmentation"): p for p in (data / "masks").iterdir()}
    with (folder / "splits.csv").open("w") as out:
        out.write("id,split\n")
        for case, split in [(c, "train") for c in train] + [(c, "val") for c in val[:n_val]]:
            (folder / "images" / images[case].name).symlink_to(images[case])
            (folder / "masks" / masks[case].name).symlink_to(masks[case])
            out.write(f"{case},{split}\n")
    return [images[c] for c in val]


def command(nproc: int, args: list[str]) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "training.cli", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m", "training.cli", *args]


def environment(threads: int | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def train_rate(nproc: int, threads: int | None, device: str, data: Path, out: Path, args: argparse.Namespace) -> float:
    """Training images/s over epochs 2.. (batches only)."""
    cli = ["train", str(data), "-o", str(out / "m.mlffm"), "--size", str(args.size), "--batch-size", str(args.batch_size),
           "--epochs", str(args.epochs), "--device", device, "--progress", "json", "--high-t-fraction", "0.6"]
    process = subprocess.Popen(command(nproc, cli), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=environment(threads), cwd=ROOT)
    spans: dict[int, list[float]] = {}
    batches: dict[int, int] = {}
    for line in process.stdout:
        now = time.perf_counter()
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        if event["event"] == "epoch_start":
            spans[event["epoch"]] = [now, now]
            batches[event["epoch"]] = event["batches"]
        elif event["event"] == "batch_end" and event["batch"] == event["batches"]:
            spans[event["epoch"]][1] = now
    if process.wait() != 0:
        raise RuntimeError(f"training with {nproc} processes failed (exit {process.returncode})")
    timed = [e for e in spans if e > 1]
    seconds = sum(spans[e][1] - spans[e][0] for e in timed)
    return sum(batches[e] for e in timed) * args.batch_size / seconds


def segment_rate(nproc: int, threads: int | None, device: str, images: Path, out: Path) -> float:
    """Segment images/s: N / (wall time - wall time of the rerun on the finished folder)."""
    cli = ["segment", str(images), "-o", str(out), "--device", device]
    walls = []
    for _ in range(2):
        start = time.perf_counter()
        result = subprocess.run(command(nproc, cli), capture_output=True, text=True, env=environment(threads), cwd=ROOT)
        walls.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise RuntimeError(f"segment with {nproc} processes failed: {result.stderr.strip().splitlines()[-1:]}")
    n = len(list(images.iterdir()))
    return n / max(walls[0] - walls[1], 1e-9)


def same_files(a: Path, b: Path) -> tuple[int, int, int]:
    """(image outputs identical, masks identical, image outputs compared) between two segment folders."""
    names = sorted(p.name for p in a.iterdir() if p.suffix != ".json")
    identical = sum(filecmp.cmp(a / n, b / n, shallow=False) for n in names)
    masks = [n for n in names if n.endswith(("_segmentation.png", "_samples.tif"))]
    return identical, sum(filecmp.cmp(a / n, b / n, shallow=False) for n in masks), len(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--train-images", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--segment-images", type=int, default=16)
    parser.add_argument("--gpu", action="store_true", help="add one process on CUDA")
    parser.add_argument("--no-default-threads", action="store_true", help="leave out the row of one process with all cores' threads")
    args = parser.parse_args()
    rows = [("1 process, default threads", 1, None, "cpu"), ("1 process, 1 thread", 1, 1, "cpu"), ("torchrun 2 x 1 thread (gloo)", 2, 1, "cpu")]
    if args.no_default_threads:
        rows = rows[1:]
    if args.gpu:
        rows.append(("1 process, CUDA", 1, None, "cuda"))
    with tempfile.TemporaryDirectory(prefix="bench_distributed_") as tmp:
        tmp = Path(tmp)
        val_images = small_dataset(args.data, args.train_images, 4, tmp / "data")
        seg_in = tmp / "segment_in"
        seg_in.mkdir()
        for path in val_images[4 : 4 + args.segment_images]:
            (seg_in / path.name).symlink_to(path)
        print(f"cpu cores {os.cpu_count()}; training {args.train_images} images at {args.size} px, batch {args.batch_size}, "
              f"{args.epochs} epochs (epoch 1 untimed); segment {args.segment_images} val images, shipped weights and settings")
        results = []
        for label, nproc, threads, device in rows:
            run_dir = tmp / f"run{len(results)}"
            run_dir.mkdir()
            train = train_rate(nproc, threads, device, tmp / "data", run_dir, args)
            segment = segment_rate(nproc, threads, device, seg_in, run_dir / "segment")
            results.append((label, train, segment, run_dir / "segment"))
            print(f"  measured {label}: train {train:.2f} images/s, segment {segment:.3f} images/s", flush=True)
        # The base is one process with one thread: torchrun gives each rank one thread too.
        base_label, base_train, base_segment, base_folder = next(r for r in results if r[0] == "1 process, 1 thread")
        print()
        print(f"{'':32s} {'train img/s':>12s} {'ratio':>6s} {'segment img/s':>14s} {'ratio':>6s}  outputs equal to '{base_label}' (all / masks+samples)")
        for label, train, segment, folder in results:
            same, masks, total = same_files(base_folder, folder)
            print(f"{label:32s} {train:12.2f} {train / base_train:6.2f} {segment:14.3f} {segment / base_segment:6.2f}  {same}/{total}  {masks}/{total // 2}")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
