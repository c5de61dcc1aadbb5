"""Training with simulated clicks: prompts for a batch, and the validation score of a click.

**What a prompted training sample sees.** With probability ``click_prob``
a sample gets prompts (the rest get none, so the no-click path keeps being
trained: zero prompts are exactly the unprompted network). Its prompts
imitate a refinement round of the protocol in :mod:`training.interactive.clicks`:

1. a *current mask* is made from the reference by a random perturbation
   (dilated or eroded by up to 1/12 of the working size, a false blob added
   near the lesion, a bite taken out of it, or, in 15 % of the cases, no
   lesion found at all);
2. 1 to ``max_clicks`` clicks are simulated against it with the protocol's
   rule. After each click the error region it was placed in is corrected in
   the virtual mask (the effect a good refinement has), and the next click
   goes to the largest remaining error;
3. the prompts are all the clicks and, as the prior, the virtual mask
   *before the last click*, which is what the model sees at inference: the
   clicks so far and the mask it proposed before the newest one.

The perturbations imitate the errors a segmenter makes (a boundary too
wide or too tight, a false blob, a missed lobe, a missed lesion) at the
cost of a few distance transforms at the working size, and the
corrected-region step gives later clicks the right context. The errors of
*this* model, with clicks simulated on its own proposals (RITM's iterative
training), are :mod:`training.interactive.own_errors` (``--own-errors``),
which costs a few no-grad proposals per step.

:func:`prompt_validation` scores model selection on both the no-click
Dice and the Dice after one click placed by the protocol on the model's own
no-click prediction (a real first refinement round, at the working size).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt, label

from model import Segmenter
from model.inputs.preprocess import network_input
from model.inputs.prompts import PROMPT_CHANNELS, Prompts, encode_prompts
from model.diffusion.sampler import iter_sample_soft_masks, run_to_completion

from .clicks import dice, next_click

MAX_CLICKS = 5


def perturb_mask(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible wrong mask near ``truth`` ((S, S) bool): the errors a segmenter makes."""
    size = truth.shape[0]
    if not truth.any() or rng.random() < 0.15:
        if truth.any():
            return np.zeros_like(truth)  # the lesion was missed altogether
        mask = np.zeros_like(truth)
    else:
        mask = truth.copy()
    rows, cols = np.ogrid[:size, : truth.shape[1]]
    radius = rng.uniform(1, size / 12)
    choice = rng.random()
    if choice < 0.35 and mask.any():
        mask = distance_transform_edt(~mask) <= radius  # too wide
    elif choice < 0.7 and mask.any():
        mask = distance_transform_edt(mask) > radius  # too tight
    if rng.random() < 0.4:  # a false blob near the lesion (or anywhere when there is none)
        ys, xs = np.nonzero(truth) if truth.any() else (np.array([size / 2]), np.array([size / 2]))
        cy = float(np.clip(rng.choice(ys) + rng.normal(0, size / 5), 0, size - 1))
        cx = float(np.clip(rng.choice(xs) + rng.normal(0, size / 5), 0, size - 1))
        a, b = rng.uniform(size / 24, size / 8, 2)
        mask |= ((rows - cy) / a) ** 2 + ((cols - cx) / b) ** 2 <= 1
    if rng.random() < 0.4 and truth.any():  # a bite out of the lesion
        ys, xs = np.nonzero(truth)
        pick = rng.integers(len(ys))
        a, b = rng.uniform(size / 20, size / 6, 2)
        mask &= ~(((rows - ys[pick]) / a) ** 2 + ((cols - xs[pick]) / b) ** 2 <= 1)
    return mask


def simulate_session(truth: np.ndarray, rng: np.random.Generator, max_clicks: int = MAX_CLICKS) -> Prompts | None:
    """Prompts of one simulated refinement round against a perturbed mask (see the module docstring); None if it is already right."""
    current = perturb_mask(truth, rng)
    wanted = int(rng.integers(1, max_clicks + 1))
    prompts, prior = Prompts(), current.copy()
    for _ in range(wanted):
        click = next_click(current, truth)
        if click is None:
            break
        prior = current.copy()
        prompts = prompts.with_click(click.point, click.positive)
        # The refinement corrects the error region that was clicked.
        error = (truth & ~current) if click.positive else (current & ~truth)
        regions, _ = label(error)
        fixed = regions == regions[click.row, click.col]
        current = np.where(fixed, truth, current)
    if not prompts.clicks:
        return None
    return prompts.with_prior(prior)


def simulated_prompts(masks: torch.Tensor, click_prob: float, generator: torch.Generator, max_clicks: int = MAX_CLICKS) -> torch.Tensor:
    """(B, 3, S, S) prompt channels for a batch of (B, 1, S, S) reference masks; zeros for the unprompted share.

    Every random draw is seeded from ``generator`` (one draw per batch), so a
    run replays exactly.
    """
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    batch, _, size, _ = masks.shape
    out = torch.zeros((batch, PROMPT_CHANNELS, size, size))
    truth_all = (masks[:, 0] >= 0.5).cpu().numpy()
    for b in range(batch):
        if rng.random() >= click_prob:
            continue
        prompts = simulate_session(truth_all[b], rng, max_clicks)
        if prompts is not None:
            out[b] = encode_prompts(prompts, size, size, size)[0]
    return out


def prompt_validation(segmenter: Segmenter, data, steps: int, batch_size: int = 32, seed: int = 0) -> tuple[float, float]:
    """(no-click Dice, Dice after one protocol click) of one DDIM sample per image at the working size.

    The click is placed on the model's own no-click mask against the
    reference, and the prompts are that click and that mask as the prior.
    """
    if len(data) == 0:
        return float("nan"), float("nan")
    return mean_prompt_scores(prompt_validation_scores(segmenter, data, steps, batch_size, seed))


def mean_prompt_scores(batches: list[tuple[int, list[float], list[float]]]) -> tuple[float, float]:
    """The means of :func:`prompt_validation_scores`' batches (from one process or gathered from several)."""
    ordered = sorted(batches, key=lambda batch: batch[0])
    plain = [score for _, chunk, _ in ordered for score in chunk]
    clicked = [score for _, _, chunk in ordered for score in chunk]
    return float(np.mean(plain)), float(np.mean(clicked))


@torch.inference_mode()
def prompt_validation_scores(
    segmenter: Segmenter, data, steps: int, batch_size: int = 32, seed: int = 0, shard: tuple[int, int] = (0, 1)
) -> list[tuple[int, list[float], list[float]]]:
    """Per-image (no-click, one-click) Dice as (first index, scores, scores) for the batches ``shard = (i, n)`` owns.

    Batch ``start`` is sampled with seed ``seed + start`` whichever process
    runs it, so the gathered scores of n processes are those of one.
    """
    from ..loop.train_step import to_batch  # noqa: PLC0415 (train_step imports this module)

    network = segmenter.network.eval()
    size = segmenter.config.size
    out = []
    for start in range(0, len(data), batch_size)[shard[0] :: shard[1]]:
        index = np.arange(start, min(start + batch_size, len(data)))
        images, masks = to_batch(data, index)
        x = network_input(images, segmenter.config.flat_field).to(segmenter.device)
        features = network.encode_image(x)
        loop = iter_sample_soft_masks(network, features, segmenter.config.diffusion, len(index), size, steps, seed + start)
        first = (run_to_completion(loop).cpu()[:, 0] >= 0.5).numpy()
        truth = (masks[:, 0] >= 0.5).numpy()
        channels = torch.zeros((len(index), PROMPT_CHANNELS, size, size))
        plain = []
        for i in range(len(index)):
            plain.append(dice(first[i], truth[i]))
            click = next_click(first[i], truth[i])
            if click is not None:
                channels[i] = encode_prompts(Prompts().with_click(click.point, click.positive).with_prior(first[i]), size, size, size)[0]
        features = network.encode_image(x, channels.to(segmenter.device))
        loop = iter_sample_soft_masks(network, features, segmenter.config.diffusion, len(index), size, steps, seed + start)
        second = (run_to_completion(loop).cpu()[:, 0] >= 0.5).numpy()
        out.append((start, plain, [dice(second[i], truth[i]) for i in range(len(index))]))
    return out
