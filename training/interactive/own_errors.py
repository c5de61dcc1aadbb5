"""Clicks on the model's own errors: RITM's iterative training, for the prompt weights.

:mod:`training.interactive.prompt_training` imitates a refinement round with
a *perturbed* reference (a boundary too wide or too tight, a false blob, a
bite). Those are cheap, but they are not the errors this model makes: its
misses follow the image (a faint lobe, a shadow read as lesion), not a
random shape. Sofiiuk et al. (RITM, 2022) train on the model's own
predictions instead, and this module does that for a share of the prompted
samples:

1. the network proposes a mask for the (augmented) training image with no
   prompts: one DDIM sample of ``steps`` steps at the working size, without
   gradients (round 0);
2. the protocol's click (:func:`training.interactive.clicks.next_click`) is
   placed on that mask's largest error;
3. for ``r`` further rounds, ``r`` drawn uniformly from 0 to ``max_rounds``
   per sample, the network proposes again *with* the clicks so far and the
   previous mask as the prior (still without gradients, with the prompt
   weights as they are now), and the next click goes to the new mask's
   largest error.

The training sample then gets all its clicks and, as the prior, the mask
proposed before the last click: what the model is given at the (r + 1)-th
click of a session, as :func:`training.interactive.prompt_training.prompt_validation`
gives it the first. It is not the full inference path: there the mask is
the consensus of several samples and flip views, with the click disks and
the click's reach added, and each refine starts from the same x_T, while
here each round is one sample whose x_T follows its row in that round's
batch. A sample whose proposal has no error keeps the perturbed-reference
prompts it was drawn with; a lesion-free image gets clicks only when its
perturbed reference did (never in ISIC's training split, where every image
has a lesion).

Cost: one no-grad proposal (image path plus ``steps`` denoiser passes) per
round for the chosen samples of this process's share of the batch.
"""

from __future__ import annotations

import numpy as np
import torch

from model.diffusion.sampler import iter_sample_soft_masks, run_to_completion
from model.inputs.prompts import PROMPT_CHANNELS, Prompts, encode_prompts

from .clicks import next_click

MAX_ROUNDS = 2  # extra no-grad rounds after the first click (RITM draws 0..3; a CPU affords 0..2)


@torch.no_grad()
def own_error_prompts(
    network: torch.nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    prompts: torch.Tensor,
    share: float,
    diffusion,
    generator: torch.Generator,
    steps: int = 2,
    max_rounds: int = MAX_ROUNDS,
    part: slice = slice(None),
) -> torch.Tensor:
    """(B, 3, S, S) prompts where a ``share`` of the prompted samples click on the network's own errors.

    ``network``: a :class:`model.nets.network.DualPathUNet` with prompt
    channels (a DistributedDataParallel wrapper is unwrapped); ``images``:
    (B, C, S, S) network input (after :func:`model.inputs.preprocess.network_input`);
    ``masks``: (B, 1, S, S) reference coverage in [0, 1]; ``prompts``: (B, 3, S, S)
    from :func:`training.interactive.prompt_training.simulated_prompts`, whose
    non-zero rows mark the prompted samples. Returns a new tensor; samples not
    chosen keep their rows. Every random draw comes from ``generator``: two
    draws per call, whatever the batch, so a seeded run replays exactly.
    ``part``: the rows this process trains on (a DDP rank's share); the
    choice is drawn for the whole batch, so every rank stays in step, and
    only these rows are proposed.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share of own-error samples must lie in [0, 1], got {share}")
    if steps < 1 or max_rounds < 0:
        raise ValueError(f"steps must be >= 1 and max_rounds >= 0, got {steps} and {max_rounds}")
    if prompts.shape[1] != PROMPT_CHANNELS or prompts.shape[0] != images.shape[0] or masks.shape[0] != images.shape[0]:
        raise ValueError(f"images {tuple(images.shape)}, masks {tuple(masks.shape)} and prompts {tuple(prompts.shape)} disagree")
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    seed = int(torch.randint(0, 2**31, (1,), generator=generator))
    prompted = prompts.flatten(1).abs().sum(1).cpu() > 0
    chosen = [b for b in range(images.shape[0]) if prompted[b] and rng.random() < share]
    all_rounds = rng.integers(0, max_rounds + 1, len(chosen))
    mine = set(range(images.shape[0])[part])
    rounds = np.array([r for b, r in zip(chosen, all_rounds) if b in mine], dtype=np.int64)
    chosen = [b for b in chosen if b in mine]
    out = prompts.clone()
    if not chosen:
        return out
    module = getattr(network, "module", network)
    was_training = module.training
    module.eval()
    try:
        size = images.shape[-1]
        device = images.device
        picked = images[chosen]
        truth = (masks[chosen, 0] >= 0.5).cpu().numpy()

        def propose(rows: list[int], channels: torch.Tensor | None) -> np.ndarray:
            features = module.encode_image(picked[rows], None if channels is None else channels.to(device))
            loop = iter_sample_soft_masks(module, features, diffusion, len(rows), size, steps, seed)
            # One trajectory per image: features hold len(rows) views, trajectory i uses view i.
            return (run_to_completion(loop).cpu()[:, 0] >= 0.5).numpy()

        current = propose(list(range(len(chosen))), None)
        # Each session's prior is the mask its newest click was placed on: a copy, as ``current`` is overwritten.
        sessions = [Prompts() for _ in chosen]
        alive = np.ones(len(chosen), bool)  # False once a proposal has no error left
        for step in range(int(rounds.max()) + 1):
            for i in range(len(chosen)):
                if not alive[i] or step > rounds[i]:
                    continue
                click = next_click(current[i], truth[i])
                if click is None:
                    alive[i] = False
                    continue
                sessions[i] = sessions[i].with_click(click.point, click.positive).with_prior(current[i].copy())
            again = [i for i in range(len(chosen)) if alive[i] and step < rounds[i]]
            if not again:
                break
            channels = torch.cat([encode_prompts(sessions[i], size, size, size) for i in again])
            fresh = propose(again, channels)
            for row, i in enumerate(again):
                current[i] = fresh[row]
        for i, b in enumerate(chosen):
            if sessions[i].clicks:
                out[b] = encode_prompts(sessions[i], size, size, size)[0].to(out.device)
    finally:
        module.train(was_training)
    return out
