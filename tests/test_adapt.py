"""`mlffm adapt`: the choice on a clinic whose references are tighter, the minimum, the card, rollback, the fits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from model import Segmenter, default_weights_path
from training.scoring.adapt import Calibration, CaseStats, fit_calibration, leave_one_out, plan_calibration, stats_of
from training.cli import main
from training.corrections.model_store import list_versions
from training.commands.adapt import MIN_CASES

from .conftest import SMALL_DATA

needs_weights = pytest.mark.skipif(not default_weights_path().is_file(), reason="no shipped weights installed")


def make_store(root: Path, n: int, erode: int) -> Path:
    """A corrections-store layout of ``n`` real cases: the 8 fixture images in 4 orientations, references eroded by ``erode`` px.

    Eroding the ISIC references makes a clinic that draws tighter than ISIC:
    the shipped model's masks then run outside every reference.
    """
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    images = sorted((SMALL_DATA / "images").glob("*.jpg"))
    disk = np.hypot(*np.ogrid[-erode : erode + 1, -erode : erode + 1]) <= erode if erode else None
    for k in range(n):
        path = images[k % len(images)]
        image = np.asarray(Image.open(path).convert("RGB"))
        mask = np.asarray(Image.open(SMALL_DATA / "masks" / f"{path.stem}.png")) > 127
        turn = k // len(images)
        image, mask = np.rot90(image, turn), np.rot90(mask, turn)
        if disk is not None:
            mask = ndimage.binary_erosion(mask, structure=disk)
        Image.fromarray(np.ascontiguousarray(image)).save(root / "images" / f"case{k:02d}.png")
        Image.fromarray(np.ascontiguousarray(mask).astype(np.uint8) * 255).save(root / "masks" / f"case{k:02d}.png")
    return root


def test_too_few_cases_says_how_many_more_and_writes_nothing(tmp_path, tiny_checkpoint, capsys):
    store = make_store(tmp_path / "store", MIN_CASES - 3, 0)
    out = tmp_path / "models" / "adapted.mlffm"
    out.parent.mkdir()
    code = main(["adapt", str(store), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{MIN_CASES - 3} usable cases" in err and f"at least {MIN_CASES}" in err and "correct 3 more" in err
    assert "nothing written" in err and "Traceback" not in err
    assert list(out.parent.iterdir()) == []



def test_split_test_is_refused_as_calibrate_refuses_it(tmp_path, tiny_checkpoint, capsys):
    """Test cases are always left out, so `--split test` says that rather than "0 usable cases: correct 20 more"."""
    data = make_store(tmp_path / "data", MIN_CASES, 0)
    (data / "splits.csv").write_text("id,split\n" + "".join(f"case{k:02d},test\n" for k in range(MIN_CASES)), encoding="utf-8")
    out = tmp_path / "adapted.mlffm"
    code = main(["adapt", str(data), "-o", str(out), "--split", "Test", "--checkpoint", str(tiny_checkpoint), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "a model is never adapted on its test split" in err and "usable cases" not in err
    assert not out.exists()

def _synthetic_stats(n: int, best_raw: float, rng) -> list[CaseStats]:
    """Cases whose Dice curve peaks at ``best_raw`` (plus noise) and whose pixels are calibrated at T = 1."""
    grid = np.arange(1001) / 1000
    out = []
    for i in range(n):
        peak = best_raw + rng.normal(0, 0.05)
        dice = np.clip(0.9 - 2 * (grid - peak) ** 2, 0, 1)
        probability = rng.uniform(0, 1, (64, 64))
        truth = rng.uniform(0, 1, (64, 64)) < probability
        s = stats_of(f"c{i}", probability, truth)
        out.append(CaseStats(s.case_id, dice, s.counts, s.positives))
    return out


def test_threshold_fit_shrinks_towards_the_base_and_keeps_a_calibrated_temperature():
    rng = np.random.default_rng(0)
    stats = _synthetic_stats(40, 0.7, rng)
    base = Calibration(1.0, 0.5)
    free = fit_calibration(stats, base, prior_cases=0)
    assert free.raw_threshold == pytest.approx(0.7, abs=0.03)
    shrunk = fit_calibration(stats, base, prior_cases=40)  # weight 1/2 in logit space
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    assert logit(shrunk.raw_threshold) == pytest.approx(logit(free.raw_threshold) / 2, abs=1e-6)
    # the pixels are calibrated at T = 1: a base at T = 1 keeps it (a fit cannot lower the held-out ECE)
    plan = plan_calibration(stats, base)
    assert plan.after.ece <= plan.before.ece + 1e-12
    assert plan.after.mean_dice > plan.before.mean_dice
    held = leave_one_out(stats, base)
    assert held.dice.shape == (40,)


@needs_weights
def test_adapt_chooses_calibration_where_references_are_tighter(tmp_path, capsys):
    store = make_store(tmp_path / "store", 24, erode=5)
    out = tmp_path / "models" / "adapted-1.mlffm"
    out.parent.mkdir()
    args = ["adapt", str(store), "-o", str(out), "--samples", "2", "--steps", "2", "--device", "cpu", "--no-finetune"]
    assert main(args) == 0, capsys.readouterr().err
    adapted = Segmenter.load(out, "cpu")
    shipped = Segmenter.load(None, "cpu")
    card = json.loads(out.with_suffix(".json").read_text())
    record = adapted.provenance["adaptation"]
    assert card["method"] == record["method"] == "calibration"
    # tighter references: a higher raw threshold, and a clear held-out gain
    assert record["fitted"]["raw_threshold"] > Calibration.of(shipped).raw_threshold + 0.05
    assert card["val_dice_after"] > card["val_dice_before"] + 0.01
    assert card["ece_after"] <= card["ece_before"]
    assert card["n_images"] == 24 and card["base_checkpoint"] == shipped.checkpoint_id
    assert adapted.config.decision_threshold == pytest.approx(record["fitted"]["threshold"])
    assert adapted.config.probability_temperature == pytest.approx(record["fitted"]["temperature"])
    assert (adapted.config.default_samples, adapted.config.default_steps) == (2, 2)
    assert adapted.provenance["parent"]["checkpoint_id"] == shipped.checkpoint_id
    for name, tensor in shipped.network.state_dict().items():  # calibration alone leaves the weights
        assert np.array_equal(tensor.numpy(), adapted.network.state_dict()[name].numpy()), name
    # it joins the model versions, after the shipped default (rolling back = choosing that one again)
    versions = list_versions(out.parent)
    assert [v.label for v in versions] == ["shipped default", "adapted-1"]
    assert versions[1].card["method"] == "calibration"
    assert "calibration:" in capsys.readouterr().out
    # no silent overwrite
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err


def test_finetune_keeps_the_base_calibration_scores_with_it_and_its_cases_are_never_calibrated_on(tmp_path, tiny_segmenter, capsys):
    from training.data.datasets import list_cases, load_case
    from training.scoring.metrics import dice
    from training.corrections.model_store import write_card

    base = tmp_path / "base.mlffm"
    tiny_segmenter.with_options(probability_temperature=1.7, decision_threshold=0.4).save(base)
    store = make_store(tmp_path / "store", 10, erode=0)
    out = tmp_path / "tuned.mlffm"
    assert main(["finetune", str(store), "-o", str(out), "--checkpoint", str(base), "--epochs", "1", "--batch-size", "4", "--device", "cpu"]) == 0
    tuned = Segmenter.load(out, "cpu")
    provenance = tuned.provenance
    # the calibration is the base's, fitted on none of the cases it trained on
    assert (tuned.config.probability_temperature, tuned.config.decision_threshold) == pytest.approx((1.7, 0.4))
    trained, held = set(provenance["finetune_train_ids"]), set(provenance["holdout_ids"])
    assert trained and held and not trained & held and len(trained | held) == 10
    # "Dice after" is the model's own masks (its threshold, samples, views) on the held-out cases
    cases = [c for c in list_cases(store).cases if c.case_id in held]
    expected = np.mean([dice(tuned.propose(load_case(c)[0]).consensus, load_case(c)[1]) for c in cases])
    card = write_card(out)
    assert card["val_dice_after"] == pytest.approx(expected) == pytest.approx(provenance["held_out_dice_after"])
    assert card["selection_dice_after"] == provenance["best_val_dice"]
    capsys.readouterr()
    # calibrate leaves the trained cases out of its fit
    calibrated = tmp_path / "calibrated.mlffm"
    assert main(["calibrate", str(store), "-o", str(calibrated), "--checkpoint", str(out), "--split", "all", "--device", "cpu"]) == 0
    assert f"left out {len(trained)} cases this model was fine-tuned on" in capsys.readouterr().err
    assert Segmenter.load(calibrated, "cpu").provenance["calibration"]["n_images"] == len(held)
    # and so does adapt, counting them against the minimum
    big = make_store(tmp_path / "big", MIN_CASES + 2, erode=0)
    assert main(["adapt", str(big), "-o", str(tmp_path / "a.mlffm"), "--checkpoint", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"{len(trained)} more were left out: the base model was fine-tuned on them" in err and "nothing written" in err
