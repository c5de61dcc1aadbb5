"""Training for real on the small ISIC fixture: optimisation, train -> finetune -> evaluate, resume."""

import json

import numpy as np
import pytest
import torch

from model import Segmenter
from model.inputs.preprocess import standardize
from model.diffusion.schedule import NoiseSchedule
from training.cli import main
from training.data.datasets import cache_dataset, list_cases
from training.loop.losses import SegmentationDiffusionLoss
from training.loop.trainer import resume_path_for, to_batch

from .conftest import SMALL_DATA, tiny_config

TINY = ["--size", "32", "--widths", "8,16", "--batch-size", "4"]


def test_two_optimisation_steps_reduce_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    segmenter = Segmenter(tiny_config(), "cpu")
    data = cache_dataset(list_cases(SMALL_DATA, "train").cases, 32)
    images, masks = to_batch(data, np.arange(4))
    target = (masks >= 0.5).float()
    schedule = NoiseSchedule(segmenter.config.diffusion)
    t = torch.tensor([10, 200, 500, 900])
    x_t = schedule.q_sample(2 * target - 1, t, torch.randn(target.shape, generator=torch.Generator().manual_seed(1)))
    loss_fn = SegmentationDiffusionLoss()
    net = segmenter.network.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(3):
        loss, _ = loss_fn(net(standardize(images), x_t, t), target)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[2] < losses[0]


def test_train_finetune_evaluate_end_to_end_with_resume(tmp_path, capsys):
    model_path = tmp_path / "model.mlffm"
    # An interrupted run: the time budget (checked before each batch) ends it in epoch 2 of 3.
    assert main(["train", str(SMALL_DATA), "-o", str(model_path), *TINY, "--epochs", "3", "--time-budget", "0.00001"]) == 0
    state = resume_path_for(model_path)
    assert state.is_file() and model_path.is_file()
    _, _, meta = Segmenter.load_with_state(state, "cpu")
    assert meta["epoch"] < 3
    # -o naming the resume file itself is refused; the state is left as it was.
    before = state.read_bytes()
    assert main(["train", str(SMALL_DATA), "-o", str(state), *TINY, "--epochs", "3", "--resume", str(state)]) == 2
    assert "-o is the resume file itself" in capsys.readouterr().err and state.read_bytes() == before
    # Other data than the run began with: refused (its best val Dice would compare different things).
    assert main(["train", str(SMALL_DATA), "-o", str(model_path), *TINY, "--epochs", "3", "--resume", str(state), "--split", "all"]) == 2
    assert "--resume continues a run on its own data" in capsys.readouterr().err and state.read_bytes() == before
    # Resume finishes the two epochs and keeps the best.
    assert main(["train", str(SMALL_DATA), "-o", str(model_path), *TINY, "--epochs", "3", "--resume", str(state)]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "epoch 3: train loss " in out
    _, _, meta = Segmenter.load_with_state(state, "cpu")
    assert meta["epoch"] == 3 and meta["step"] >= 3
    trained = Segmenter.load(model_path, "cpu")
    provenance = trained.provenance
    assert provenance["data"]["n_images"] == 6 and len(provenance["data"]["ids_sha256"]) == 12
    assert provenance["train_config"]["epochs"] == 3 and "val_dice" in provenance["history"][-1]
    assert all(r["train_loss"] is None or r["train_loss"] > 0 for r in provenance["history"])
    assert provenance["history"][-1]["train_loss"] > 0
    # No silent overwrite of a finished model.
    assert main(["train", str(SMALL_DATA), "-o", str(model_path), *TINY, "--epochs", "1"]) == 2
    assert "already exists" in capsys.readouterr().err

    tuned = tmp_path / "tuned.mlffm"
    code = main(["finetune", str(SMALL_DATA), "-o", str(tuned), "--checkpoint", str(model_path), "--epochs", "2", "--batch-size", "4", "--replay", str(SMALL_DATA)])
    assert code == 0
    out = capsys.readouterr().out
    assert "val Dice before" in out and "after" in out
    tuned_model = Segmenter.load(tuned, "cpu")
    assert tuned_model.provenance["parent"]["checkpoint_id"] == trained.checkpoint_id
    assert len(tuned_model.provenance["holdout_ids"]) >= 1
    # The replay set is the corrections' own folder here: its held-out cases are not replayed, and what was is recorded.
    trained_ids = set(tuned_model.provenance["finetune_train_ids"])
    assert trained_ids.isdisjoint(tuned_model.provenance["holdout_ids"]) and tuned_model.provenance["replay_data"]["n_images"] >= 1
    split_of = dict(line.split(",")[:2] for line in (SMALL_DATA / "splits.csv").read_text().split()[1:])
    replayable = {i for i, split in split_of.items() if split == "train"}
    assert tuned_model.provenance["replay_data"]["n_images"] == len(replayable - set(tuned_model.provenance["holdout_ids"]))

    report = tmp_path / "eval.json"
    assert main(["evaluate", str(SMALL_DATA), "--checkpoint", str(tuned), "--split", "val", "--samples", "2", "--steps", "2", "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "dice" in printed and "sec/image" in printed
    result = json.loads(report.read_text())
    assert result["n_images"] == 2 and len(result["per_image"]) == 2
    assert set(result["metrics"]) == {"dice", "jaccard", "accuracy", "precision", "recall", "specificity", "hd95", "hd95_percent", "ece", "ged"}
    assert 0 <= result["metrics"]["dice"] <= 1 and result["seconds_per_image"] > 0
    assert "uncertainty_error_spearman" in result and "Spearman" in printed
    spearman = [line for line in printed.splitlines() if line.startswith("Spearman rho")]
    assert len(spearman) == 2 and all(line.endswith(": n/a (fewer than 3 images)") for line in spearman), spearman
    assert "by the true lesion's size and position" in printed
    assert "most doubtful by disagreement" in printed and {r["total"] for r in result["triage_recall"]} <= {0, 1, 2}
    assert result["strata"][0] == {**result["strata"][0], "group": "all images", "n_images": 2}
    assert result["strata"][0]["dice_mean"] == pytest.approx(result["metrics"]["dice"])
    assert all(0 <= r["truth_area_fraction"] <= 1 and isinstance(r["truth_touches_border"], bool) for r in result["per_image"])
    # --json never overwrites silently either.
    assert main(["evaluate", str(SMALL_DATA), "--checkpoint", str(tuned), "--split", "val", "--json", str(report)]) == 2


def test_finetune_needs_two_cases(tmp_path, tiny_checkpoint, capsys):
    (tmp_path / "one" / "images").mkdir(parents=True)
    assert main(["finetune", str(tmp_path / "one"), "-o", str(tmp_path / "x.mlffm"), "--checkpoint", str(tiny_checkpoint)]) == 2
    assert "no usable" in capsys.readouterr().err


def test_finetune_progress_json_is_one_event_per_line(tmp_path, tiny_checkpoint, capsys):
    tuned = tmp_path / "tuned.mlffm"
    args = ["finetune", str(SMALL_DATA), "-o", str(tuned), "--checkpoint", str(tiny_checkpoint), "--epochs", "2", "--batch-size", "2"]
    assert main([*args, "--progress", "json"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every stdout line is an event
    kinds = [e["event"] for e in events]
    assert set(kinds) == {"epoch_start", "batch_end", "epoch_end", "message"}
    ends = [e for e in events if e["event"] == "epoch_end"]
    assert [e["epoch"] for e in ends] == [0, 1, 2]
    assert ends[0]["train_loss"] is None and 0 <= ends[0]["val_dice"] <= 1  # the Dice before fine-tuning
    assert all(e["train_loss"] > 0 and 0 <= e["val_dice"] <= 1 for e in ends[1:])
    history = Segmenter.load(tuned, "cpu").provenance["history"]
    assert [e["val_dice"] for e in ends[1:]] == pytest.approx([r["val_dice"] for r in history])
    starts = [e for e in events if e["event"] == "epoch_start"]
    assert [(e["epoch"], e["epochs"]) for e in starts] == [(1, 2), (2, 2)]
    for start in starts:  # every epoch reports its last batch
        last = [e for e in events if e["event"] == "batch_end" and e["epoch"] == start["epoch"]][-1]
        assert last["batch"] == last["batches"] == start["batches"] and last["loss"] > 0
    assert any("val Dice before" in e["text"] for e in events if e["event"] == "message")
    # The default stays human-readable, and a wrong choice is refused.
    assert main([*args, "--overwrite"]) == 0
    assert "val Dice before" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*args, "--overwrite", "--progress", "xml"])
    assert "--progress" in capsys.readouterr().err


def test_feed_forward_ablations_train_and_propose_identical_masks(tmp_path, capsys):
    """(e) a plain U-Net with Dice + BCE, trained and run through the same commands as the diffusion model."""
    plain = tmp_path / "plain.mlffm"
    args = ["train", str(SMALL_DATA), "-o", str(plain), *TINY, "--epochs", "1", "--prediction", "direct", "--no-mask-path", "--fusion", "plain", "--boundary-weight", "0"]
    assert main(args) == 0
    model = Segmenter.load(plain, "cpu")
    assert model.config.diffusion.prediction == "direct" and not model.config.network.mask_path
    image = (np.random.default_rng(0).random((50, 60, 3)) * 255).astype(np.uint8)
    p = model.propose(image, n_samples=3, steps=5)
    assert p.samples.shape == (3, 50, 60) and not p.uncertainty.any()
    assert (p.samples == p.samples[0]).all()
    assert np.array_equal(p.probability, model.predict_direct(image).probability)
    # A mask-path-free network that is asked to diffuse is refused with a message, not a traceback.
    assert main(["train", str(SMALL_DATA), "-o", str(tmp_path / "bad.mlffm"), *TINY, "--epochs", "1", "--no-mask-path"]) == 2
    assert "direct" in capsys.readouterr().err


def test_learning_rate_follows_the_time_budget_when_it_ends_first():
    from training.loop.trainer import TrainConfig, learning_rate

    config = TrainConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.02, time_budget_minutes=1)
    # Early in the steps but the budget nearly spent: the schedule is already at its floor.
    assert learning_rate(config, 20, 10_000, time_fraction=1.0) == pytest.approx(2e-5)
    assert learning_rate(config, 20, 10_000, time_fraction=0.5) == pytest.approx(1e-3 * (0.02 + 0.98 * 0.5))
    # Without a budget (or with time to spare) the steps decide, as before.
    assert learning_rate(config, 20, 10_000) == pytest.approx(learning_rate(config, 20, 10_000, time_fraction=0.0))
    assert learning_rate(config, 10_000, 10_000, time_fraction=0.1) == pytest.approx(2e-5)
    assert learning_rate(config, 4, 10_000, time_fraction=0.9) == pytest.approx(5e-4)  # warm-up is by steps only


def test_train_cli_builds_a_wide_image_path_and_rejects_bad_widths(tmp_path, capsys):
    out = tmp_path / "wide.mlffm"
    args = ["train", str(SMALL_DATA), "-o", str(out), "--size", "32", "--widths", "8,16", "--mask-widths", "4,8"]
    assert main([*args, "--image-blocks", "1", "--batch-size", "4", "--epochs", "1", "--device", "cpu"]) == 0
    network = Segmenter.load(out, "cpu").config.network
    assert network.widths == (8, 16) and network.mask_widths == (4, 8) and network.image_blocks == 1
    assert main(["train", str(SMALL_DATA), "-o", str(tmp_path / "x.mlffm"), "--widths", "8,a"]) == 2
    assert "--widths '8,a'" in capsys.readouterr().err


def test_train_init_warm_starts_from_weights_with_a_fresh_schedule(tmp_path, capsys):
    first = tmp_path / "first.mlffm"
    tiny = ["--size", "32", "--widths", "8,16", "--batch-size", "4", "--epochs", "1", "--device", "cpu"]
    assert main(["train", str(SMALL_DATA), "-o", str(first), *tiny]) == 0
    Segmenter.load(first, "cpu").with_options(probability_temperature=2.0, decision_threshold=0.4).save(first)  # as if calibrated
    second = tmp_path / "second.mlffm"
    assert main(["train", str(SMALL_DATA), "-o", str(second), "--init", str(first), "--batch-size", "4", "--epochs", "1", "--device", "cpu"]) == 0
    base, warm = Segmenter.load(first, "cpu"), Segmenter.load(second, "cpu")
    # the starting model's architecture and size, not the CLI defaults; the old weights' temperature and threshold are dropped
    assert warm.config == base.with_options(probability_temperature=1.0, decision_threshold=0.5).config
    assert "reset to 1" in capsys.readouterr().out
    assert warm.provenance["init"]["checkpoint_id"] == base.checkpoint_id
    assert len(warm.provenance["commands"]) == 2 and "--init" in warm.provenance["commands"][1]
    changed = [k for k, v in warm.network.state_dict().items() if not torch.equal(v, base.network.state_dict()[k])]
    assert changed  # it trained
    assert main(["train", str(SMALL_DATA), "-o", str(tmp_path / "x.mlffm"), "--init", str(first), "--resume", str(first)]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_train_init_with_size_trains_the_same_network_at_another_working_size(tmp_path, capsys):
    first = tmp_path / "first.mlffm"
    assert main(["train", str(SMALL_DATA), "-o", str(first), "--size", "32", "--widths", "8,16", "--batch-size", "4", "--epochs", "1", "--device", "cpu"]) == 0
    second = tmp_path / "second.mlffm"
    warm_args = ["train", str(SMALL_DATA), "-o", str(second), "--init", str(first), "--size", "48", "--batch-size", "4", "--epochs", "1", "--device", "cpu"]
    assert main(warm_args) == 0
    base, warm = Segmenter.load(first, "cpu"), Segmenter.load(second, "cpu")
    assert warm.config.size == 48 and warm.config.network == base.config.network
    assert "working size changed from 32 to 48 px" in capsys.readouterr().out
    assert warm.propose(np.zeros((40, 56, 3), np.uint8), n_samples=2, steps=2).probability.shape == (40, 56)
    # a size the network cannot take (not a multiple of 2 for two levels) is a one-line error naming it
    assert main(["train", str(SMALL_DATA), "-o", str(tmp_path / "x.mlffm"), "--init", str(first), "--size", "33", "--device", "cpu"]) == 2
    assert "size 33" in capsys.readouterr().err
    # a resumed run keeps its size: an explicit --size that differs is a one-line error, not silently ignored
    resume = resume_path_for(second)
    assert resume.exists()
    resumed = ["train", str(SMALL_DATA), "-o", str(second), "--resume", str(resume), "--epochs", "1", "--device", "cpu"]
    assert main([*resumed, "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert "--size 32" in err and "48 px" in err and "Traceback" not in err
    assert main([*resumed, "--size", "48"]) == 0  # the same size is accepted


def test_high_t_fraction_moves_that_share_of_timesteps_into_the_top_decile(tmp_path, capsys):
    from training.loop.train_step import draw_timesteps
    from training.loop.trainer import TrainConfig

    def top_share(fraction: float) -> float:
        t = draw_timesteps(20_000, 1000, fraction, torch.Generator().manual_seed(0))
        assert t.dtype == torch.int64 and int(t.min()) >= 0 and int(t.max()) <= 999
        return float((t >= 900).float().mean())

    assert top_share(0.0) == pytest.approx(0.1, abs=0.01)  # uniform
    assert top_share(0.5) == pytest.approx(0.5 + 0.5 * 0.1, abs=0.015)
    assert top_share(1.0) == 1.0
    # fraction 0 draws nothing extra: the same stream as plain uniform draws (old runs replay)
    plain = torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(draw_timesteps(64, 1000, 0.0, torch.Generator().manual_seed(3)), plain)
    with pytest.raises(ValueError, match="high-t-fraction"):
        TrainConfig(high_t_fraction=1.5)
    out = tmp_path / "high.mlffm"
    tiny = ["--size", "32", "--widths", "8,16", "--batch-size", "4", "--epochs", "1", "--device", "cpu"]
    assert main(["train", str(SMALL_DATA), "-o", str(out), *tiny, "--high-t-fraction", "0.3"]) == 0
    assert Segmenter.load(out, "cpu").provenance["train_config"]["high_t_fraction"] == 0.3
    tuned = tmp_path / "tuned.mlffm"  # fine-tuning keeps the timestep mix of its base weights
    assert main(["finetune", str(SMALL_DATA), "-o", str(tuned), "--checkpoint", str(out), "--epochs", "1", "--batch-size", "4"]) == 0
    assert Segmenter.load(tuned, "cpu").provenance["train_config"]["high_t_fraction"] == 0.3
    with pytest.raises(SystemExit) as refused:  # argparse: one line, exit 2
        main(["train", str(SMALL_DATA), "-o", str(tmp_path / "x.mlffm"), *tiny, "--high-t-fraction", "2"])
    assert refused.value.code == 2
    assert "--high-t-fraction" in capsys.readouterr().err


def test_train_exclude_leaves_listed_cases_out_and_records_them(tmp_path, capsys):
    from training.data.splits import read_splits

    train_ids = sorted(i for i, split in read_splits(SMALL_DATA).items() if split == "train")
    val_id = next(i for i, split in read_splits(SMALL_DATA).items() if split == "val")
    listed = tmp_path / "suspect.txt"
    listed.write_text(f"# suspected label errors\n{train_ids[0]}  # ring-shaped mask\n\n{val_id}\n{train_ids[0]}\n")
    out = tmp_path / "clean.mlffm"
    assert main(["train", str(SMALL_DATA), "-o", str(out), *TINY, "--epochs", "1", "--exclude", str(listed)]) == 0
    output = capsys.readouterr().out
    assert f"left out 1 training cases listed in {listed} (2 ids listed)" in output
    assert f"1 id(s) in {listed} are --val-split val cases ({val_id}): they stay in validation" in output  # it said nothing
    provenance = Segmenter.load(out, "cpu").provenance
    assert provenance["data"]["n_images"] == len(train_ids) - 1
    assert provenance["excluded"] == {"file": "suspect.txt", "ids": sorted([train_ids[0], val_id])}
    listed.write_text("ISIC_9999999\n")
    assert main(["train", str(SMALL_DATA), "-o", str(out), *TINY, "--epochs", "1", "--overwrite", "--exclude", str(listed)]) == 2
    assert "no case named ISIC_9999999" in capsys.readouterr().err
    listed.write_text("# nothing\n")
    assert main(["train", str(SMALL_DATA), "-o", str(out), *TINY, "--epochs", "1", "--overwrite", "--exclude", str(listed)]) == 2
    assert "lists no case ids" in capsys.readouterr().err
    assert main(["train", str(SMALL_DATA), "-o", str(out), *TINY, "--epochs", "1", "--overwrite", "--exclude", str(tmp_path / "missing.txt")]) == 2
    assert "cannot read the id list" in capsys.readouterr().err


def test_a_loss_that_is_not_finite_stops_training_in_one_line_and_writes_no_model(tmp_path):
    from training.loop.trainer import TrainConfig, train

    data = cache_dataset(list_cases(SMALL_DATA, "train").cases, 32)
    segmenter = Segmenter(tiny_config(), "cpu")
    with torch.no_grad():
        next(segmenter.network.parameters()).fill_(float("nan"))  # damaged weights in memory (files with NaN never load)
    output = tmp_path / "nan.mlffm"
    with pytest.raises(ValueError, match="training diverged at step 1: the loss is not finite"):
        train(segmenter, data, data, TrainConfig(epochs=1, batch_size=4), output, provenance={})
    assert not output.exists()
    with pytest.raises(ValueError, match="boundary_weight must be a finite number"):
        TrainConfig(boundary_weight=float("nan"))


@pytest.mark.parametrize("flag, value", [("--boundary-weight", "nan"), ("--boundary-weight", "inf"), ("--high-t-fraction", "nan"), ("--holdout", "1")])
def test_training_numbers_that_are_not_finite_or_out_of_range_are_refused_by_argparse(tmp_path, capsys, flag, value):
    command = "finetune" if flag == "--holdout" else "train"
    with pytest.raises(SystemExit) as stop:
        main([command, str(SMALL_DATA), "-o", str(tmp_path / "x.mlffm"), flag, value])
    assert stop.value.code == 2 and f"argument {flag}" in capsys.readouterr().err


def test_an_epoch_cut_short_is_named_as_the_epoch_it_cut_and_still_scored(tmp_path):
    from training.loop.trainer import SilentReporter, TrainConfig, train

    data = cache_dataset(list_cases(SMALL_DATA, "train").cases, 32)
    messages = []

    class Collect(SilentReporter):
        def message(self, text: str) -> None:
            messages.append(text)

    asked = iter([False, False, False, False, True])  # epoch 1: 3 batches of 2; epoch 2 stops before its second batch
    result = train(Segmenter(tiny_config(), "cpu"), data, data, TrainConfig(epochs=3, batch_size=2), tmp_path / "m.mlffm", provenance={}, reporter=Collect(), should_stop=lambda: next(asked))
    assert result.stopped_by == "cancel" and len(result.history) == 2
    assert any(m.startswith("epoch 1: train loss") for m in messages)
    assert any(m.startswith("epoch 2 (stopped after 1 of 3 batches): train loss") for m in messages), messages
    assert [r["epoch"] for r in result.history] == [1, 2] and result.history[1]["batches_done"] == 1  # the cut epoch is the 2nd
    assert result.best_epoch in (1, 2) and "batches_done" not in result.history[0]


@pytest.mark.parametrize("asked_to_stop", [False, True])
def test_an_interrupt_inside_a_batch_stops_gracefully_unless_a_stop_was_already_asked_for(tmp_path, monkeypatch, asked_to_stop):
    from training.loop import trainer
    from training.loop.trainer import TrainConfig, train

    data = cache_dataset(list_cases(SMALL_DATA, "train").cases, 32)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # what a signal handler raises inside a batch

    monkeypatch.setattr(trainer, "train_step", interrupted)
    flags = iter([False] + [asked_to_stop] * 10)  # the loop's check before the batch, then the handler's
    output = tmp_path / "m.mlffm"
    run = lambda: train(Segmenter(tiny_config(), "cpu"), data, data, TrainConfig(epochs=2, batch_size=2), output, provenance={}, should_stop=lambda: next(flags))  # noqa: E731
    if asked_to_stop:  # the second signal: abort, as promised, nothing saved (it used to validate and save too)
        with pytest.raises(KeyboardInterrupt):
            run()
        assert not output.exists()
    else:  # a KeyboardInterrupt with no handler installed (the first one): a graceful stop
        assert run().stopped_by == "interrupt"
