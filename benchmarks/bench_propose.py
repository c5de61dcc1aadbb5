"""Latency of `Segmenter.propose` against a naive sampler, printed as one table.

For N = 1, 8, 16 samples and 5, 10, 25 DDIM steps on a real 512 x 512
dermoscopic image: the cached, batched sampler (image path once, the N
trajectories batched: all at once on a GPU, four per call on a CPU) and the
naive one (image re-encoded at every step, one sample at a time; both draw
sample i on the model's flip view i % B and undo the flip), with the ratio, and the share of mask pixels on which the two agree: 100 % on the
CPU (tests/test_segmenter.py checks it); on a GPU, batched and single-sample
kernels round differently and a few pixels at the 0.5 contour can flip.

    python benchmarks/bench_propose.py [--checkpoint FILE] [--device auto] [--repeats 2] [--quick] [--design] [--flat-field]

``--design`` adds the table the working size and widths were chosen from:
untrained networks of several sizes and widths (and channels_last memory
format) at 8 samples x 10 steps (the defaults when they were chosen).
``--flat-field`` adds the model's default proposal with the flat-field
correction off and on (model/inputs/shading.py), and the correction alone.
``--batching`` adds, on a CPU, the model's default proposal at 64, 96 and
128 px with all trajectories in one network call against
``CPU_TRAJECTORIES_PER_CALL`` per call, and how far their probabilities differ.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import NetworkConfig, Segmenter, SegmenterConfig, default_weights_path  # noqa: E402
from model.diffusion import sampler  # noqa: E402
from model.inputs.preprocess import flip_views, resize_to_working, to_float_rgb, unflip_samples  # noqa: E402
from model.diffusion.sampler import sample_soft_masks_naive  # noqa: E402
from training.data.imageio import read_image  # noqa: E402


def timed(fn, repeats: int, sync) -> float:
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="only the model's default N and steps")
    parser.add_argument("--design", action="store_true", help="also time other working sizes and widths")
    parser.add_argument("--batching", action="store_true", help="also time trajectories per network call on a CPU")
    parser.add_argument("--flat-field", action="store_true", help="also time the default proposal with the flat-field correction off and on")
    args = parser.parse_args()

    if args.checkpoint or default_weights_path().is_file():
        segmenter = Segmenter.load(args.checkpoint, args.device)
    else:
        segmenter = Segmenter(SegmenterConfig(), args.device)
    device = segmenter.device
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    image = read_image(sorted((ROOT / "napari_mlffm" / "samples").glob("*.jpg"))[0])
    x, _ = segmenter.prepare(image)
    views_of_x = flip_views(x, segmenter.config.flip_views)  # the naive sampler draws on the same views
    segmenter.propose(image, n_samples=2, steps=2)  # warm-up

    params = sum(p.numel() for p in segmenter.network.parameters())
    print(f"device {device} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads); model {params / 1e6:.2f} M parameters at {segmenter.config.size} px; image {image.shape[1]}x{image.shape[0]}")
    grid = [(segmenter.config.default_samples, segmenter.config.default_steps)] if args.quick else [(n, s) for n in (1, 8, 16) for s in (5, 10, 25)]
    print(f"{'N':>3} {'steps':>5} {'cached s':>9} {'naive s':>9} {'ratio':>6} {'same pixels %':>13}")
    for n, steps in grid:
        cached = timed(lambda: segmenter.propose(image, n_samples=n, steps=steps, seed=0), args.repeats, sync)
        with torch.inference_mode():
            naive = timed(lambda: naive_soft_masks(segmenter, views_of_x, n, steps), 1, sync)
            fast = segmenter.propose(image, n_samples=n, steps=steps, seed=0)
            slow = naive_soft_masks(segmenter, views_of_x, n, steps)
            agree = float(np.mean(fast.samples == segmenter._to_proposal(slow, *image.shape[:2]).samples))
        print(f"{n:>3} {steps:>5} {cached:>9.3f} {naive:>9.3f} {naive / cached:>5.1f}x {100 * agree:>12.4f}")
    if args.batching:
        batching_table(segmenter, image, args.repeats)
    if args.flat_field:
        flat_field_table(segmenter, image, args.repeats)
    if args.design:
        design_table(image, args.device, args.repeats)


def naive_soft_masks(segmenter: Segmenter, views_of_x: torch.Tensor, n: int, steps: int) -> torch.Tensor:
    """The naive sampler on the model's flip views (sample i on view i % B), flips undone: (n, 1, S, S)."""
    soft = sample_soft_masks_naive(segmenter.network, views_of_x, segmenter.config.diffusion, n, steps, 0)
    return unflip_samples(soft, views_of_x.shape[0])


def flat_field_table(segmenter: Segmenter, image: np.ndarray, repeats: int) -> None:
    """The default proposal without and with the flat-field correction, and the correction alone, side by side."""
    from model.inputs.shading import flat_field  # noqa: PLC0415

    n, steps = segmenter.config.default_samples, segmenter.config.default_steps
    seconds = {}
    for on in (False, True):
        chosen = segmenter.with_options(flat_field=on)
        chosen.propose(image, n_samples=2, steps=2)
        seconds[on] = timed(lambda: chosen.propose(image, n_samples=n, steps=steps, seed=0), repeats, lambda: None)
    x = resize_to_working(torch.from_numpy(to_float_rgb(image)).permute(2, 0, 1)[None], segmenter.config.size)
    alone = timed(lambda: flat_field(x), max(3, repeats), lambda: None)
    print(f"\nflat-field correction ({n} samples x {steps} steps, {segmenter.config.size} px)")
    print(f"{'off s':>7} {'on s':>7} {'on/off':>7} {'correction alone s':>19}")
    print(f"{seconds[False]:>7.3f} {seconds[True]:>7.3f} {seconds[True] / seconds[False]:>6.2f}x {alone:>19.3f}")


def batching_table(segmenter: Segmenter, image: np.ndarray, repeats: int) -> None:
    """The default proposal with all trajectories per network call against the CPU's few."""
    if segmenter.device.type != "cpu":
        print("\nbatching table: CPU only (a GPU takes all trajectories at once)")
        return
    n, steps, few = segmenter.config.default_samples, segmenter.config.default_steps, sampler.CPU_TRAJECTORIES_PER_CALL
    print(f"\ntrajectories per network call on the CPU ({n} samples x {steps} steps)")
    print(f"{'size':>5} {f'{n} per call s':>14} {f'{few} per call s':>13} {'ratio':>6} {'max |dp|':>9}")
    try:
        for size in (64, 96, 128):
            sized = segmenter.at_working_size(size)
            results = {}
            for per_call in (n, few):
                sampler.CPU_TRAJECTORIES_PER_CALL = per_call
                sized.propose(image, n_samples=2, steps=2)
                seconds = timed(lambda: sized.propose(image, n_samples=n, steps=steps, seed=0), repeats, lambda: None)
                results[per_call] = seconds, sized.propose(image, n_samples=n, steps=steps, seed=0).probability
            (whole, p_whole), (chunked, p_chunked) = results[n], results[few]
            print(f"{size:>5} {whole:>14.3f} {chunked:>13.3f} {whole / chunked:>5.1f}x {float(np.abs(p_whole - p_chunked).max()):>9.1e}")
    finally:
        sampler.CPU_TRAJECTORIES_PER_CALL = few


def design_table(image: np.ndarray, device: str, repeats: int) -> None:
    """Latency of 8 samples x 10 steps for candidate working sizes and widths."""
    print("\ndesign choices (untrained weights; 8 samples x 10 steps on the same image)")
    print(f"{'size':>5} {'image path':<18} {'denoiser':<18} {'params M':>8} {'layout':<14} {'seconds':>8}")
    light = (16, 32, 64, 96, 128)
    candidates = [
        (64, light, None),
        (96, light, None),
        (128, light, None),
        (128, (16, 32, 64, 128, 192), None),
        (128, (24, 48, 96, 144, 192), None),
        (128, (32, 64, 128, 192, 256), light),
        (160, light, None),
        (192, light, None),
    ]
    for size, widths, mask_widths in candidates:
        network = NetworkConfig(widths=widths, mask_widths=mask_widths)
        segmenter = Segmenter(SegmenterConfig(size=size, network=network), device)
        params = sum(p.numel() for p in segmenter.network.parameters()) / 1e6
        layouts = ["contiguous", "channels_last"] if (size, widths, mask_widths) == (128, light, None) else ["contiguous"]
        for layout in layouts:
            if layout == "channels_last":
                segmenter.network.to(memory_format=torch.channels_last)
            segmenter.propose(image, n_samples=2, steps=2)
            seconds = timed(lambda: segmenter.propose(image, n_samples=8, steps=10, seed=0), repeats, lambda: None)
            denoiser = ",".join(map(str, network.denoiser_widths))
            print(f"{size:>5} {','.join(map(str, widths)):<18} {denoiser:<18} {params:>8.2f} {layout:<14} {seconds:>8.3f}")

if __name__ == "__main__":
    main()
