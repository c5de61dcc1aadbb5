"""``mlffm segment``: propose masks for images and folders, writing ISIC-style outputs."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from model import Segmenter

from .cli_types import samples_arg, seed_arg, steps_arg
from .imageio import IMAGE_SUFFIXES, ImageReadError, check_writable, is_image_file, read_image
from .store import export_case

OUTPUT_SUFFIXES = ("_segmentation.png", "_probability.tif", "_uncertainty.tif", "_samples.tif", ".json")


def add_segment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, help="images or folders of images")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--checkpoint", type=Path, help="model file (default: the shipped weights)")
    parser.add_argument("--samples", type=samples_arg, help="number of proposals per image (default: the model's; 16 for the shipped weights)")
    parser.add_argument("--steps", type=steps_arg, help="DDIM steps (default: the model's; 5 for the shipped weights)")
    parser.add_argument("--seed", type=seed_arg, default=0)
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda or mps; a missing GPU is an error")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def collect_images(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """Image files named directly or found (non-recursively) in folders, and problems found."""
    images: list[Path] = []
    problems: list[str] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if is_image_file(p))
            if not found:
                problems.append(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            images.extend(found)
        elif path.is_file():
            images.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    return images, problems


def output_paths(out_dir: Path, stem: str) -> list[Path]:
    return [out_dir / f"{stem}{suffix}" for suffix in OUTPUT_SUFFIXES]


def segment_one(segmenter: Segmenter, path: Path, out_dir: Path, args: argparse.Namespace) -> None:
    targets = output_paths(out_dir, path.stem)
    check_writable(targets, args.overwrite)
    started = time.perf_counter()
    image = read_image(path)
    read_seconds = time.perf_counter() - started
    proposal = segmenter.propose(image, n_samples=args.samples, steps=args.steps, seed=args.seed)
    record = {
        "source": str(path),
        "image_size": [int(image.shape[1]), int(image.shape[0])],
        "checkpoint_id": segmenter.checkpoint_id,
        "checkpoint": str(args.checkpoint) if args.checkpoint else "shipped default",
        "samples": args.samples,
        "steps": args.steps,
        "seed": args.seed,
        "device": str(segmenter.device),
        "working_size": segmenter.config.size,
        "threshold": proposal.threshold,
        "lesion_fraction": float(proposal.consensus.mean()),
        "mean_uncertainty": float(proposal.uncertainty.mean()),
        "timings": {"read_seconds": round(read_seconds, 4), "propose_seconds": round(proposal.seconds, 4), "total_seconds": round(time.perf_counter() - started, 4)},
    }
    export_case(out_dir, path.stem, proposal.consensus, proposal.probability, proposal.uncertainty, record, proposal.samples, args.overwrite)


def run_segment(args: argparse.Namespace) -> int:
    if any(value is not None and value < 1 for value in (args.samples, args.steps)):
        raise ValueError("--samples and --steps must be >= 1")
    images, problems = collect_images(args.paths)
    for line in problems:
        print(f"mlffm segment: {line}", file=sys.stderr)
    stems: dict[str, Path] = {}
    unique = []
    for path in images:
        if path.stem in stems:
            problems.append(f"{path}: skipped, its outputs would clash with {stems[path.stem]}")
            print(f"mlffm segment: {problems[-1]}", file=sys.stderr)
            continue
        stems[path.stem] = path
        unique.append(path)
    if not unique:
        print("mlffm segment: nothing to do", file=sys.stderr)
        return 1
    args.output.mkdir(parents=True, exist_ok=True)
    segmenter = Segmenter.load(args.checkpoint, args.device)
    args.samples, args.steps = segmenter.sampling_settings(args.samples, args.steps)
    done = 0
    for path in tqdm(unique, desc="segmenting", unit="image", dynamic_ncols=True):
        try:
            segment_one(segmenter, path, args.output, args)
            done += 1
        except (ImageReadError, FileExistsError, ValueError, OSError, MemoryError) as err:  # MemoryError: model.limits.InsufficientMemoryError
            message = str(err) if str(path) in str(err) else f"{path}: {err}"
            problems.append(message)
            tqdm.write(f"mlffm segment: {message}", file=sys.stderr)
    print(f"{done} segmented, {len(problems)} skipped -> {args.output}")
    if problems:
        print("skipped:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
    return 0 if not problems else 1
