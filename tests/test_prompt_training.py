"""Training with simulated clicks: the batch prompts, and short real runs of train and finetune with --click-prob."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model import Segmenter
from model.inputs.prompts import Prompts
from training.cli import main
from training.interactive.prompt_training import perturb_mask, simulate_session, simulated_prompts

from .conftest import SMALL_DATA

TINY = ["--size", "32", "--widths", "8,16", "--batch-size", "4", "--device", "cpu"]


def _disk(size, centre, radius):
    rows, cols = np.ogrid[:size, :size]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def test_simulated_sessions_click_on_the_errors_of_a_perturbed_mask():
    truth = _disk(48, (24, 20), 10)
    rng = np.random.default_rng(0)
    sessions = [simulate_session(truth, rng) for _ in range(40)]
    assert all(s is None or isinstance(s, Prompts) for s in sessions)
    real = [s for s in sessions if s is not None]
    assert len(real) > 30
    for s in real:
        assert s.prior is not None and s.prior.shape == truth.shape and 1 <= s.clicks <= 5
        for r, c in s.positive:
            assert truth[int(r), int(c)]  # a positive click is always on the lesion
        for r, c in s.negative:
            assert not truth[int(r), int(c)]
    assert any(s.negative for s in real) and any(s.positive for s in real)
    assert any(not perturb_mask(truth, np.random.default_rng(k)).any() for k in range(40))  # sometimes the lesion is missed


def test_batch_prompts_mix_in_unprompted_samples_and_replay_from_the_seed():
    masks = torch.stack([torch.from_numpy(_disk(32, (16, 10 + i), 6)).float()[None] for i in range(16)])
    a = simulated_prompts(masks, 0.5, torch.Generator().manual_seed(3))
    b = simulated_prompts(masks, 0.5, torch.Generator().manual_seed(3))
    assert a.shape == (16, 3, 32, 32) and torch.equal(a, b)
    prompted = a.flatten(1).abs().sum(1) > 0
    assert 0 < int(prompted.sum()) < 16
    assert torch.count_nonzero(simulated_prompts(masks, 0.0, torch.Generator().manual_seed(3))) == 0


def test_train_and_finetune_with_clicks_write_loadable_prompted_checkpoints(tmp_path, capsys):
    out = tmp_path / "prompted.mlffm"
    assert main(["train", str(SMALL_DATA), "-o", str(out), *TINY, "--epochs", "1", "--click-prob", "0.7"]) == 0
    model = Segmenter.load(out, "cpu")
    assert model.config.network.prompt_channels == 3
    assert model.network.prompt_stem.weight.abs().sum() > 0  # the prompt weights were trained
    history = model.provenance["history"][-1]
    assert {"val_dice_0_clicks", "val_dice_1_click"} <= set(history)
    assert model.provenance["train_config"]["click_prob"] == 0.7
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    with_click = model.propose(image, n_samples=2, steps=2, prompts=Prompts(((20.0, 20.0),)))
    assert with_click.samples.shape == (2, 40, 40)
    # finetune widens a plain checkpoint the same way.
    plain = tmp_path / "plain.mlffm"
    assert main(["train", str(SMALL_DATA), "-o", str(plain), *TINY, "--epochs", "1"]) == 0
    assert Segmenter.load(plain, "cpu").config.network.prompt_channels == 0
    tuned = tmp_path / "tuned.mlffm"
    assert main(["finetune", str(SMALL_DATA), "-o", str(tuned), "--checkpoint", str(plain), "--epochs", "1", "--batch-size", "4", "--click-prob", "0.5", "--device", "cpu"]) == 0
    tuned_model = Segmenter.load(tuned, "cpu")
    assert tuned_model.config.network.prompt_channels in (0, 3)  # 0 only if no epoch beat the base
    with pytest.raises(SystemExit) as refused:  # argparse: one line, exit 2
        main(["train", str(SMALL_DATA), "-o", str(tmp_path / "x.mlffm"), *TINY, "--epochs", "1", "--click-prob", "1.5"])
    assert refused.value.code == 2
    assert "--click-prob" in capsys.readouterr().err
    json.dumps(model.provenance)


def test_freeze_base_trains_only_the_prompt_weights_and_keeps_the_calibration(tmp_path, capsys):
    plain = tmp_path / "plain.mlffm"
    assert main(["train", str(SMALL_DATA), "-o", str(plain), *TINY, "--epochs", "1"]) == 0
    calibrated = tmp_path / "calibrated.mlffm"
    Segmenter.load(plain, "cpu").with_options(probability_temperature=1.7, decision_threshold=0.45).save(calibrated)
    frozen = tmp_path / "frozen.mlffm"
    args = ["train", str(SMALL_DATA), "-o", str(frozen), "--init", str(calibrated), "--batch-size", "4", "--device", "cpu", "--epochs", "2"]
    assert main([*args, "--click-prob", "1", "--freeze-base"]) == 0
    base, tuned = Segmenter.load(calibrated, "cpu"), Segmenter.load(frozen, "cpu")
    assert tuned.config.network.prompt_control and tuned.provenance["train_config"]["freeze_base"]
    assert (tuned.config.probability_temperature, tuned.config.decision_threshold) == (1.7, 0.45)
    base_state, tuned_state = base.network.state_dict(), tuned.network.state_dict()
    assert all(torch.equal(base_state[k], tuned_state[k]) for k in base_state)  # every base weight, bit for bit
    assert sum(float(v.abs().sum()) for k, v in tuned_state.items() if k.startswith("prompt_control.zero_out")) > 0
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert np.array_equal(base.propose(image, n_samples=2, steps=2).probability, tuned.propose(image, n_samples=2, steps=2).probability)
    capsys.readouterr()
    assert main([*args[:3], str(tmp_path / "x.mlffm"), *args[4:], "--freeze-base"]) == 2
    assert "--freeze-base" in capsys.readouterr().err


def test_prompt_weights_stay_exact_when_training_without_clicks_and_freeze_base_refuses_what_breaks_it(tmp_path, capsys):
    prompted = tmp_path / "prompted.mlffm"
    assert main(["train", str(SMALL_DATA), "-o", str(prompted), *TINY, "--epochs", "1", "--click-prob", "1"]) == 0
    tuned = tmp_path / "tuned.mlffm"
    assert main(["finetune", str(SMALL_DATA), "-o", str(tuned), "--checkpoint", str(prompted), "--epochs", "2", "--batch-size", "4", "--device", "cpu"]) == 0
    assert tuned.is_file()
    before, after = Segmenter.load(prompted, "cpu").network.state_dict(), Segmenter.load(tuned, "cpu").network.state_dict()
    prompt_keys = [k for k in before if k.startswith(("prompt_stem.", "prompt_control."))]
    assert prompt_keys and all(torch.equal(before[k], after[k]) for k in prompt_keys)  # no clicks: no gradient, no EMA drift
    assert any(not torch.equal(before[k], after[k]) for k in before if k not in prompt_keys)
    out = str(tmp_path / "x.mlffm")
    capsys.readouterr()
    assert main(["train", str(SMALL_DATA), "-o", out, *TINY, "--epochs", "1", "--click-prob", "1", "--freeze-base"]) == 2
    assert "--init" in capsys.readouterr().err  # a random base has nothing to keep
    assert main(["train", str(SMALL_DATA), "-o", out, "--init", str(prompted), "--size", "64", "--device", "cpu", "--epochs", "1", "--click-prob", "1", "--freeze-base"]) == 2
    assert "working size" in capsys.readouterr().err
    assert main(["train", str(SMALL_DATA), "-o", out, *TINY, "--epochs", "1", "--no-augment", "--acquisition-shifts", "0.5"]) == 2
    assert "--no-augment" in capsys.readouterr().err


def test_prompt_validation_shards_gather_to_the_scores_of_one_process(tiny_segmenter):
    from model.inputs.prompts import with_prompt_channels
    from training.data.datasets import cache_dataset, list_cases
    from training.interactive.prompt_training import mean_prompt_scores, prompt_validation, prompt_validation_scores

    model = with_prompt_channels(tiny_segmenter)
    data = cache_dataset(list_cases(SMALL_DATA).cases, 32)
    whole = prompt_validation(model, data, 2, batch_size=3, seed=5)
    shards = [batch for rank in range(2) for batch in prompt_validation_scores(model, data, 2, batch_size=3, seed=5, shard=(rank, 2))]
    assert sorted(start for start, _, _ in shards) == list(range(0, len(data), 3))  # every batch once
    assert mean_prompt_scores(shards) == whole
