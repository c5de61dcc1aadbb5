"""Does a click's change belong near the click? Global re-proposal against FocalClick-style local refinement, on val.

    OMP_NUM_THREADS=1 python benchmarks/click_locality.py --split val --stride 4 --clicks 3 --strategies both,focus4 --out runs/locality.json

Strategies (all with the shipped prompt weights, prompts + kept click disks, default sampling):
``both``: the whole mask is re-proposed after each click (what the plugin does);
``focusC``: the previous mask is also kept outside a disk around the newest click of radius C x (the click's
distance to the previous mask's outline), at least 1/16 of the short side;
``changesC``: the whole mask is re-proposed, but only the changed regions that reach into that disk are taken.
Prints the mean Dice after 0..K clicks and the share at Dice >= 0.90 within K clicks.
"""
import sys, json, time, argparse
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np
from scipy.ndimage import distance_transform_edt, label
from model import Segmenter
from model.inputs.kept import KeptPixels, click_disks
from model.inputs.prompts import Prompts
from training.data.datasets import list_cases, load_case
from training.interactive.clicks import dice, next_click

p = argparse.ArgumentParser()
p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/isic2018_task1"))
p.add_argument("--split", default="val")
p.add_argument("--stride", type=int, default=4)
p.add_argument("--offset", type=int, default=0)
p.add_argument("--clicks", type=int, default=3)
p.add_argument("--strategies", default="both,focus4,changes2")
p.add_argument("--out", required=True)
a = p.parse_args()

seg = Segmenter.load(None)

def focus_kept(prior, click, c):
    r, col, pos = click
    region = ~prior if pos else prior
    if not prior.any() or prior.all():
        return None
    d = distance_transform_edt(region)[r, col]
    rad = max(c * d, min(prior.shape) / 16)
    rows, cols = np.ogrid[:prior.shape[0], :prior.shape[1]]
    outside = (rows - r) ** 2 + (cols - col) ** 2 > rad ** 2
    return KeptPixels(outside, prior.copy())

def accept_connected(prior, new, click, c):
    r, col, pos = click
    change = prior != new
    if not change.any():
        return new
    region = ~prior if pos else prior
    d = distance_transform_edt(region)[r, col] if prior.any() and not prior.all() else 1e9
    rad = max(c * d, min(prior.shape) / 16)
    rows, cols = np.ogrid[:prior.shape[0], :prior.shape[1]]
    near = (rows - r) ** 2 + (cols - col) ** 2 <= rad ** 2
    lab, n = label(change)
    keep_ids = np.unique(lab[near & change])
    accepted = np.isin(lab, keep_ids[keep_ids > 0])
    return np.where(accepted, new, prior)

def session(image, truth, first_mask, strategy, K):
    mask = first_mask
    out = [dice(mask, truth)]
    prompts = Prompts()
    H, W = truth.shape
    for _ in range(K):
        click = next_click(mask, truth)
        if click is None:
            out.append(out[-1]); continue
        ck = (click.row, click.col, click.positive)
        prior = mask
        prompts = prompts.with_click(click.point, click.positive).with_prior(mask)
        kept = click_disks(prompts.positive, prompts.negative, H, W)
        if strategy.startswith("focus"):
            f = focus_kept(prior, ck, float(strategy[5:]))
            if f is not None:
                kept = f.merged(kept)
        prop = seg.propose(image, prompts=prompts, kept=kept)
        mask = prop.consensus
        if strategy.startswith("changes"):
            mask = accept_connected(prior, mask, ck, float(strategy[7:]))
        out.append(dice(mask, truth))
    return out

cases = list(list_cases(a.data, a.split).cases)[a.offset::a.stride]
strategies = a.strategies.split(",")
res = {s: [] for s in strategies}
t0 = time.time()
for i, case in enumerate(cases):
    image, truth = load_case(case)
    truth = np.asarray(truth, bool)
    first = seg.propose(image).consensus
    for s in strategies:
        res[s].append(session(image, truth, first, s, a.clicks))
    if i % 10 == 9:
        print(i + 1, f"{time.time()-t0:.0f}s", {s: np.round(np.mean(res[s], axis=0), 4).tolist() for s in strategies}, flush=True)
    json.dump({"ids": [c.case_id for c in cases[: i + 1]], "res": res}, open(a.out, "w"))
for s in strategies:
    t = np.array(res[s])
    share = np.mean([(row[:4] >= 0.9).any() for row in t])
    print(s, np.round(t.mean(0), 4).tolist(), "share90in3", round(share, 3))
