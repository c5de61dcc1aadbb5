"""How much another clinic's camera costs: Dice on clean and shifted images, side by side.

    python benchmarks/robustness_shifts.py ../shared/data/isic2018_task1 --split val --limit 100 [--checkpoint C ...] [--flat-field both]

Each image is shifted at its own resolution by one of the transforms of
``training/data/acquisition_shifts.py`` at a fixed, clearly visible strength
(vignetting to near-black corners, a hard black frame just inside the
corners, a 30 % illumination ramp, 10 hairs, a
warm colour cast, a 0.7x zoom-out) and segmented with the default sampling
settings; the reference is shifted with it where the geometry changes.
Every row uses the same images and seed, so the columns are paired: the
drop is the shift's cost for that model. ``--flat-field both`` scores every
model twice, with the flat-field correction (model/inputs/shading.py) off and on;
``on`` or ``off`` forces one (default: each model's own choice). A last line checks that Shades of
Gray colour constancy changes nothing this model sees (the largest change
of the standardised network input over the images).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from model import Segmenter  # noqa: E402
from model.inputs.preprocess import resize_to_working, standardize, to_float_rgb  # noqa: E402
from training.data.acquisition_shifts import SHIFTS, apply_shift, shades_of_gray  # noqa: E402
from training.interactive.clicks import dice  # noqa: E402
from training.data.datasets import list_cases, load_case  # noqa: E402


def shifted(image: np.ndarray, truth: np.ndarray, name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) float [0, 1] image and (H, W) bool reference after shift ``name`` ("clean": unchanged)."""
    rgb = to_float_rgb(image)
    if name == "clean":
        return rgb, truth
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
    m = torch.from_numpy(truth.astype(np.float32))[None, None]
    x, m = apply_shift(name, x, m, torch.Generator().manual_seed(seed))
    return x[0].permute(1, 2, 0).clamp(0, 1).numpy(), m[0, 0].numpy() >= 0.5


def write_montage(case, names: list[str], seed: int, path: Path, tile: int = 256) -> None:
    """One row of tiles: the image under each shift, its reference outline in cyan."""
    from PIL import Image, ImageDraw  # noqa: PLC0415
    from scipy.ndimage import binary_erosion  # noqa: PLC0415

    image, truth = load_case(case)
    row = Image.new("RGB", (tile * len(names), tile + 22), "white")
    for k, name in enumerate(names):
        rgb, reference = shifted(image, truth, name, seed)
        pixels = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
        pixels[reference & ~binary_erosion(reference, iterations=3)] = (0, 255, 255)
        row.paste(Image.fromarray(pixels).resize((tile, tile), Image.Resampling.BILINEAR), (k * tile, 22))
        ImageDraw.Draw(row).text((k * tile + 6, 4), name, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    row.save(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--checkpoint", type=Path, action="append", help="weights to compare (repeatable; default: the shipped ones)")
    parser.add_argument("--shifts", default=",".join(SHIFTS))
    parser.add_argument("--samples", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--flat-field", choices=("model", "off", "on", "both"), default="model",
                        help="flat-field correction for every model: its own choice, off, on, or both side by side")
    parser.add_argument("--montage", type=Path, help="also write a PNG of the first image under every shift")
    args = parser.parse_args()
    names = ["clean", *[s for s in args.shifts.split(",") if s]]
    cases = list_cases(args.data, args.split).cases[: args.limit]
    if args.montage is not None:
        write_montage(cases[0], names, args.seed, args.montage)
    loaded = [Segmenter.load(path, args.device) for path in (args.checkpoint or [None])]
    choices = {"model": [None], "off": [False], "on": [True], "both": [False, True]}[args.flat_field]
    models, labels = [], []
    for base in loaded:
        for choice in choices:
            models.append(base if choice is None else base.with_options(flat_field=choice))
            labels.append(f"{base.checkpoint_id} flat {'on' if models[-1].config.flat_field else 'off'}")
    scores = {(label, n): [] for label in labels for n in names}
    worst_sog = 0.0
    started = time.perf_counter()
    for index, case in enumerate(tqdm(cases, desc="images", unit="image", dynamic_ncols=True)):
        image, truth = load_case(case)
        for name in names:
            rgb, reference = shifted(image, truth, name, args.seed + index)
            for model, label in zip(models, labels):
                proposal = model.propose(rgb, n_samples=args.samples, steps=args.steps, seed=args.seed)
                scores[(label, name)].append(dice(proposal.consensus, reference))
        x = resize_to_working(torch.from_numpy(to_float_rgb(image)).permute(2, 0, 1)[None].float(), models[0].config.size)
        worst_sog = max(worst_sog, float((standardize(shades_of_gray(x)) - standardize(x)).abs().max()))
    print(f"\n{args.split}: {len(cases)} images, seed {args.seed}, {time.perf_counter() - started:.0f} s")
    print(" | ".join(["shift".ljust(13), *[f"{label}: Dice (drop)".ljust(32) for label in labels], "below 0.8 (first)"]))
    for name in names:
        cells = [name.ljust(13)]
        for label in labels:
            d = np.array(scores[(label, name)])
            clean = np.array(scores[(label, "clean")])
            cells.append(f"{d.mean():.4f} ({d.mean() - clean.mean():+.4f})".ljust(32))
        cells.append(f"{int((np.array(scores[(labels[0], name)]) < 0.8).sum())}")
        print(" | ".join(cells))
    if len(labels) > 1:
        print(f"\npaired difference, {labels[-1]} minus {labels[0]}: mean (standard error), images better / worse by more than 0.02")
        for name in names:
            diff = np.array(scores[(labels[-1], name)]) - np.array(scores[(labels[0], name)])
            se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
            print(f"{name.ljust(13)} {diff.mean():+.4f} ({se:.4f})  {int((diff > 0.02).sum())} / {int((diff < -0.02).sum())}")
    print(f"Shades of Gray (p = 6) before standardisation: largest change of the network input {worst_sog:.2e} (standardised units)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
