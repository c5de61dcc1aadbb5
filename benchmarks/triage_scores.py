"""Compare per-image triage scores by their Spearman rho with the error (1 - Dice) on one split.

    python benchmarks/triage_scores.py ../shared/data/isic2018_task1 --split val

Runs the shipped weights (or --checkpoint) with the default settings on every
case of the split and prints, for each candidate score computed from the
proposal alone, its rank correlation with 1 - Dice of the consensus mask.
Choose on val; score the test split once with ``mlffm evaluate``.
"""

from __future__ import annotations

import argparse

from scipy.stats import spearmanr
from tqdm import tqdm

from model import Segmenter
from training.data.datasets import list_cases, load_case
from training.scoring.metrics import dice


def scores_of(proposal) -> dict[str, float]:
    """Candidate triage scores of one proposal (each a float, higher = more doubtful)."""
    mask = proposal.consensus
    area = max(int(mask.sum()), 1)
    soft_dice = 2 * float((proposal.probability * mask).sum()) / max(float(proposal.probability.sum()) + mask.sum(), 1.0)
    return {
        "disagreement (1 - mean pairwise sample Dice)": proposal.disagreement,
        "uncertainty sum / predicted area": float(proposal.uncertainty.sum()) / area,
        "1 - soft Dice of probability vs its mask": 1.0 - soft_dice,
        "mean uncertainty": float(proposal.uncertainty.mean()),
        "predicted lesion area": float(mask.mean()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--split", default="val")
    parser.add_argument("--checkpoint")
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    segmenter = Segmenter.load(args.checkpoint, "cpu")
    cases = list_cases(args.data, args.split).cases[: args.limit]
    rows, errors = [], []
    for case in tqdm(cases, desc=f"proposing {args.split}", unit="image"):
        image, truth = load_case(case)
        proposal = segmenter.propose(image, seed=0)
        errors.append(1.0 - dice(proposal.consensus, truth))
        rows.append(scores_of(proposal))
    print(f"{args.split}: {len(rows)} images, checkpoint {segmenter.checkpoint_id}")
    for name in rows[0]:
        rho = spearmanr([r[name] for r in rows], errors).statistic
        print(f"{name:<48} rho {rho:6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
