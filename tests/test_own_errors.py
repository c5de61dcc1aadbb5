"""Clicks on the model's own errors (RITM's iterative training): the batch prompts and a short real run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import Segmenter
from model.diffusion.sampler import sample_soft_masks_naive
from model.inputs.prompts import with_prompt_channels
from training.cli import main
from training.interactive import own_errors
from training.interactive.own_errors import own_error_prompts
from training.loop.trainer import resume_path_for

from .conftest import SMALL_DATA

TINY = ["--size", "32", "--widths", "8,16", "--batch-size", "4", "--device", "cpu"]


def _batch(n: int = 6, size: int = 32):
    rows, cols = np.ogrid[:size, :size]
    masks = torch.stack([torch.from_numpy(((rows - 16) ** 2 + (cols - 8 - 2 * i) ** 2 <= 49).astype(np.float32))[None] for i in range(n)])
    images = torch.rand((n, 3, size, size), generator=torch.Generator().manual_seed(1))
    prompts = torch.zeros((n, 3, size, size))
    prompts[1:, 2] = -1.0  # every sample but the first was drawn for clicks (a prior of all skin)
    return images, masks, prompts


def _clicks(channel: torch.Tensor) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in p) for p in torch.nonzero(channel == 1.0)]


@pytest.fixture
def prompted_network(tiny_segmenter):
    network = with_prompt_channels(tiny_segmenter).network
    return network.train()


def test_own_error_clicks_land_on_the_errors_of_the_networks_own_proposal(prompted_network, tiny_segmenter):
    images, masks, prompts = _batch()
    diffusion = tiny_segmenter.config.diffusion
    out = own_error_prompts(prompted_network, images, masks, prompts, 1.0, diffusion, torch.Generator().manual_seed(4), max_rounds=0)
    assert out.shape == prompts.shape and prompted_network.training  # the training mode is given back
    assert torch.count_nonzero(out[0]) == 0  # a sample drawn without clicks stays without
    truth = masks[:, 0] >= 0.5
    changed = 0
    for b in range(1, len(out)):
        positive, negative = _clicks(out[b, 0]), _clicks(out[b, 1])
        prior = out[b, 2] > 0
        if not torch.equal(out[b], prompts[b]):
            changed += 1
            assert len(positive) + len(negative) == 1  # max_rounds 0: exactly the first click
        for r, c in positive:
            assert truth[b, r, c] and not prior[r, c]  # a missed lesion pixel of the proposal
        for r, c in negative:
            assert not truth[b, r, c] and prior[r, c]  # a false lesion pixel of the proposal
    assert changed >= 3  # an untrained network's proposals have errors to click on
    # The prior is the network's own no-prompt proposal: one sample of 2 steps with the call's second seed.
    replay = torch.Generator().manual_seed(4)
    torch.randint(0, 2**62, (1,), generator=replay)
    seed = int(torch.randint(0, 2**31, (1,), generator=replay))
    rows = [b for b in range(1, len(out)) if not torch.equal(out[b], prompts[b])]
    with torch.no_grad():
        own = sample_soft_masks_naive(prompted_network, images[rows], diffusion, len(rows), 2, seed)[:, 0] >= 0.5
    assert torch.equal(out[rows, 2] > 0, own)


def test_own_error_rounds_add_clicks_and_replay_from_the_seed(prompted_network, tiny_segmenter):
    images, masks, prompts = _batch()
    diffusion = tiny_segmenter.config.diffusion
    first = torch.Generator().manual_seed(7)
    a = own_error_prompts(prompted_network, images, masks, prompts, 1.0, diffusion, first, max_rounds=2)
    b = own_error_prompts(prompted_network, images, masks, prompts, 1.0, diffusion, torch.Generator().manual_seed(7), max_rounds=2)
    assert torch.equal(a, b)
    replay = torch.Generator().manual_seed(7)
    torch.randint(0, 2**62, (1,), generator=replay), torch.randint(0, 2**31, (1,), generator=replay)
    assert torch.equal(torch.rand(3, generator=first), torch.rand(3, generator=replay))  # two draws, whatever the batch
    counts = [len(_clicks(a[i, 0])) + len(_clicks(a[i, 1])) for i in range(1, len(a))]
    assert all(0 <= n <= 3 for n in counts) and max(counts) >= 1
    none = own_error_prompts(prompted_network, images, masks, prompts, 0.0, diffusion, torch.Generator().manual_seed(7))
    assert torch.equal(none, prompts)


def test_later_rounds_repropose_with_the_clicks_and_the_prior_is_the_mask_before_the_last_click(prompted_network, tiny_segmenter, monkeypatch):
    images, masks, prompts = _batch(8)
    encoded, clicked = [], []
    encode, click_rule = prompted_network.encode_image, own_errors.next_click

    def spy_encode(x, channels=None):
        encoded.append(channels)
        return encode(x, channels)

    def spy_click(prediction, truth):
        click = click_rule(prediction, truth)
        if click is not None:
            clicked.append((truth.copy(), prediction.copy()))
        return click

    monkeypatch.setattr(prompted_network, "encode_image", spy_encode)
    monkeypatch.setattr(own_errors, "next_click", spy_click)
    out = own_error_prompts(prompted_network, images, masks, prompts, 1.0, tiny_segmenter.config.diffusion, torch.Generator().manual_seed(2), max_rounds=2)
    assert encoded[0] is None and len(encoded) >= 2  # round 0 has no prompts; a later round re-proposes
    assert all(bool((c[:, 2] != 0).all()) for c in encoded[1:])  # later rounds carry the prior (+-1 everywhere)
    counts = [len(_clicks(out[i, 0])) + len(_clicks(out[i, 1])) for i in range(len(out))]
    assert max(counts) >= 2  # some sample got more than its first click
    truths = (masks[:, 0] >= 0.5).numpy()
    last = {}
    for truth, prediction in clicked:  # each sample has its own reference disk
        (owner,) = [i for i in range(len(out)) if np.array_equal(truths[i], truth)]
        last[owner] = prediction
    assert last and all(torch.equal(out[i, 2] > 0, torch.from_numpy(p)) for i, p in last.items())


def test_a_sample_whose_next_proposal_has_no_error_keeps_the_mask_its_last_click_was_placed_on(prompted_network, tiny_segmenter, monkeypatch):
    images, masks, prompts = _batch(8)
    click_rule, clicked = own_errors.next_click, {}

    def first_click_only(prediction, truth):  # every re-proposal "has no error left"
        key = truth.tobytes()
        if key in clicked:
            return None
        clicked[key] = prediction.copy()
        return click_rule(prediction, truth)

    monkeypatch.setattr(own_errors, "next_click", first_click_only)
    out = own_error_prompts(prompted_network, images, masks, prompts, 1.0, tiny_segmenter.config.diffusion, torch.Generator().manual_seed(2), max_rounds=2)
    truths = (masks[:, 0] >= 0.5).numpy()
    for i in range(1, len(out)):
        assert len(_clicks(out[i, 0])) + len(_clicks(out[i, 1])) == 1
        assert torch.equal(out[i, 2] > 0, torch.from_numpy(clicked[truths[i].tobytes()]))  # not the re-proposed mask


def test_train_step_runs_the_own_error_rounds_and_resume_refuses_another_mix(tmp_path, capsys, monkeypatch):
    import training.loop.train_step as train_step_module  # noqa: PLC0415

    calls = []
    real = train_step_module.own_error_prompts
    monkeypatch.setattr(train_step_module, "own_error_prompts", lambda *a, **k: calls.append(a[4]) or real(*a, **k))
    out = tmp_path / "own.mlffm"
    assert main(["train", str(SMALL_DATA), "-o", str(out), *TINY, "--epochs", "1", "--click-prob", "1", "--own-errors", "0.5"]) == 0
    assert calls and set(calls) == {0.5}  # every step asked for its share
    capsys.readouterr()
    again = ["train", str(SMALL_DATA), "-o", str(out), *TINY, "--epochs", "2", "--click-prob", "1", "--resume", str(resume_path_for(out)), "--overwrite"]
    assert main(again) == 2
    err = capsys.readouterr().err
    assert "the run started with --own-errors 0.5, not 0" in err and "Traceback" not in err
    assert main([*again, "--own-errors", "0.5"]) == 0


def test_own_error_prompts_refuse_bad_options(prompted_network, tiny_segmenter):
    images, masks, prompts = _batch()
    diffusion = tiny_segmenter.config.diffusion
    with pytest.raises(ValueError, match="share"):
        own_error_prompts(prompted_network, images, masks, prompts, 1.5, diffusion, torch.Generator())
    with pytest.raises(ValueError, match="disagree"):
        own_error_prompts(prompted_network, images, masks[:2], prompts, 1.0, diffusion, torch.Generator())


def test_train_with_own_errors_writes_a_checkpoint_and_refuses_it_without_clicks(tmp_path, capsys):
    out = tmp_path / "own.mlffm"
    assert main(["train", str(SMALL_DATA), "-o", str(out), *TINY, "--epochs", "1", "--click-prob", "1", "--own-errors", "0.5"]) == 0
    model = Segmenter.load(out, "cpu")
    assert model.provenance["train_config"]["own_error_share"] == 0.5
    assert model.network.prompt_stem.weight.abs().sum() > 0
    capsys.readouterr()
    assert main(["train", str(SMALL_DATA), "-o", str(tmp_path / "x.mlffm"), *TINY, "--epochs", "1", "--own-errors", "0.5"]) == 2
    assert "--own-errors" in capsys.readouterr().err
