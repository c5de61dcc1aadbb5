"""Temperature scaling: the fit on known over-confidence, the pooled ECE, and `mlffm calibrate` end to end."""

import json

import numpy as np
import pytest
import torch

from model import Segmenter
from model.config import NetworkConfig
from training.scoring.calibration import LogitHistogram, ThresholdSweep
from training.cli import main
from training.scoring.metrics import dice, ece

from .conftest import SMALL_DATA, tiny_config


def _overconfident(sharpness, n=200_000, seed=0):
    """Truth drawn from sigmoid(z); the 'model' reports sigmoid(sharpness * z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, n)
    truth = rng.random(n) < 1 / (1 + np.exp(-z))
    return 1 / (1 + np.exp(-sharpness * z)), truth


@pytest.mark.parametrize("sharpness", [0.5, 1.0, 3.0])
def test_fitted_temperature_undoes_a_known_sharpening(sharpness):
    probability, truth = _overconfident(sharpness)
    histogram = LogitHistogram()
    histogram.update(probability[:100_000].reshape(100, 1000), truth[:100_000].reshape(100, 1000))
    histogram.update(probability[100_000:], truth[100_000:])
    fitted = histogram.fit_temperature("nll")
    assert fitted == pytest.approx(sharpness, rel=0.08)
    assert histogram.ece(fitted) <= histogram.ece(1.0) + 1e-4
    assert histogram.fit_temperature("ece") == pytest.approx(sharpness, rel=0.15)


def test_histogram_ece_matches_the_metric_on_the_same_pixels():
    probability, truth = _overconfident(2.0, n=50_000, seed=3)
    histogram = LogitHistogram()
    histogram.update(probability, truth)
    assert histogram.ece(1.0) == pytest.approx(ece(probability.reshape(50, 1000), truth.reshape(50, 1000)), abs=2e-3)
    assert histogram.counts.sum() == 50_000 and histogram.positives.sum() == truth.sum()


def test_bad_calibration_inputs_are_refused():
    with pytest.raises(ValueError, match="objective"):
        LogitHistogram().fit_temperature("brier")
    with pytest.raises(ValueError, match="no pixels"):
        LogitHistogram().fit_temperature()
    with pytest.raises(ValueError, match="shape"):
        LogitHistogram().update(np.zeros((2, 3)), np.zeros((3, 2), bool))
    with pytest.raises(ValueError, match="width"):
        LogitHistogram(width=0)


def test_threshold_sweep_matches_the_dice_metric_and_finds_a_known_optimum():
    rng = np.random.default_rng(5)
    cases = []
    for _ in range(4):
        truth = np.zeros((40, 50), bool)
        truth[10:30, 12:40] = True
        # a model that under-segments: the lesion's pixels score 0.35-1, the skin's 0-0.3
        probability = np.where(truth, rng.uniform(0.35, 1.0, truth.shape), rng.uniform(0.0, 0.3, truth.shape))
        cases.append((probability, truth))
    cases.append((np.full((40, 50), 0.1), np.zeros((40, 50), bool)))  # empty truth, empty prediction above 0.1
    sweep = ThresholdSweep()
    for probability, truth in cases:
        sweep.update(probability, truth)
    for t in (0.0, 0.05, 0.32, 0.5, 0.77, 1.0):
        expected = np.mean([dice(probability >= t, truth) for probability, truth in cases])
        assert sweep.dice_at(t) == pytest.approx(expected, abs=1e-12), t
    best = sweep.best()
    assert 0.30 <= best <= 0.35 and sweep.dice_at(best) == pytest.approx(1.0)
    assert sweep.dice_at(0.5) < 0.9
    with pytest.raises(ValueError, match="no cases"):
        ThresholdSweep().best()
    with pytest.raises(ValueError, match="shape"):
        ThresholdSweep().update(np.zeros((2, 3)), np.zeros((3, 2), bool))
    with pytest.raises(ValueError, match="low"):
        sweep.best(low=0.6)


def test_calibrate_writes_a_model_with_the_fitted_options_and_evaluate_reports_bins(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "calibrated.mlffm"
    args = ["calibrate", str(SMALL_DATA), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--split", "val", "--flip-views", "2", "--samples", "2", "--steps", "2"]
    assert main(args) == 0
    assert "temperature" in capsys.readouterr().out
    calibrated = Segmenter.load(out, "cpu")
    record = calibrated.provenance["calibration"]
    assert calibrated.config.flip_views == 2
    assert (calibrated.config.default_samples, calibrated.config.default_steps) == (2, 2)  # fitted for these, so stored
    assert (record["samples"], record["steps"]) == (2, 2)
    assert calibrated.config.probability_temperature == pytest.approx(record["temperature"])
    assert calibrated.config.decision_threshold == pytest.approx(record["threshold"]) and record["threshold_fitted"]
    assert record["dice_at_threshold"] >= record["dice"] - 1e-9  # 0.5 is on the grid the fit chose from
    assert record["n_images"] == 2 and record["ece_after"] <= record["ece_before"] + 1e-9
    assert record["command"] == "mlffm " + " ".join(args)
    assert calibrated.provenance["commands"][-1] == record["command"]
    base = Segmenter.load(tiny_checkpoint, "cpu")
    for name, tensor in base.network.state_dict().items():
        assert np.array_equal(tensor.numpy(), calibrated.network.state_dict()[name].numpy()), name
    assert main(args) == 2  # no silent overwrite
    assert "already exists" in capsys.readouterr().err
    fixed = tmp_path / "fixed.mlffm"
    assert main([*args[:3], str(fixed), *args[4:], "--threshold", "0.4"]) == 0
    assert Segmenter.load(fixed, "cpu").config.decision_threshold == 0.4
    assert main([*args[:3], str(tmp_path / "bad.mlffm"), *args[4:], "--threshold", "1.5"]) == 2
    assert "--threshold must be 'fit' or a number in (0, 1), got '1.5'" in capsys.readouterr().err

    report = tmp_path / "eval.json"
    assert main(["evaluate", str(SMALL_DATA), "--checkpoint", str(out), "--split", "val", "--samples", "2", "--steps", "2", "--flip-views", "4", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["settings"]["flip_views"] == 2  # asked 4, but one view per sample at most: 2 samples saw 2 views
    assert result["settings"]["probability_temperature"] == pytest.approx(record["temperature"])
    assert result["settings"]["decision_threshold"] == pytest.approx(record["threshold"])
    rows = np.array(result["calibration_bins"]["rows"])
    assert rows.shape == (15, 3) and rows[:, 0].sum() == sum(96 * 96 for _ in range(2))

    direct = tmp_path / "direct.json"
    assert main(["evaluate", str(SMALL_DATA), "--checkpoint", str(out), "--split", "val", "--direct", "--json", str(direct)]) == 0
    assert "direct (1 pass, no sampling)" in capsys.readouterr().out
    result = json.loads(direct.read_text())
    assert result["settings"]["direct"] and result["settings"]["samples"] == 1
    assert all("ged" not in r and "mean_uncertainty" not in r for r in result["per_image"])


def test_with_options_refuses_architecture_changes(tiny_segmenter):
    with pytest.raises(ValueError, match="retraining"):
        tiny_segmenter.with_options(size=64)
    other = tiny_segmenter.with_options(flip_views=2)
    assert other.network is tiny_segmenter.network and tiny_segmenter.config.flip_views == 1


def test_figures_of_an_evaluation_report(tmp_path, tiny_checkpoint, capsys):
    from PIL import Image

    from training.scoring.figures import main as figures

    report = tmp_path / "eval.json"
    assert main(["evaluate", str(SMALL_DATA), "--checkpoint", str(tiny_checkpoint), "--split", "all", "--samples", "3", "--steps", "2", "--json", str(report)]) == 0
    assert figures([str(report), str(tmp_path / "figs")]) == 0
    for name in ("reliability_diagram.png", "uncertainty_vs_dice.png"):
        with Image.open(tmp_path / "figs" / name) as image:
            pixels = np.asarray(image.convert("L"))
        assert pixels.shape[0] > 200 and pixels.std() > 5, name
    with Image.open(tmp_path / "figs" / "uncertainty_vs_dice.png") as image:
        assert image.width > 1.5 * image.height  # two panels: mean uncertainty and disagreement
    old = json.loads(report.read_text())
    assert all("disagreement" in r for r in old["per_image"]) and "disagreement_error_spearman" in old
    # Figures already there are kept without --overwrite; a rho that could not be computed (null) is drawn as n/a.
    capsys.readouterr()
    assert figures([str(report), str(tmp_path / "figs")]) == 2 and "already exist (use --overwrite" in capsys.readouterr().err
    nulls = {**old, "uncertainty_error_spearman": None, "disagreement_error_spearman": None, "metrics": {"ece": None}}
    report.write_text(json.dumps(nulls))
    assert figures([str(report), str(tmp_path / "figs"), "--overwrite"]) == 0
    # Hand-edited reports: one line each, and nothing written.
    broken = {
        "a list": [1, 2],
        "metrics null": {**old, "metrics": None, "calibration_bins": {"rows": [[1, 2]]}},
        "bins a list": {**old, "calibration_bins": [1]},
        "rows 1-D": {**old, "calibration_bins": {"rows": [1, 2, 3]}},
        "per_image ints": {**old, "per_image": [1, 2]},
        "dice text": {**old, "per_image": [{**r, "dice": "x"} for r in old["per_image"]]},
    }
    for name, content in broken.items():
        report.write_text(json.dumps(content))
        assert figures([str(report), str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith(f"figures: error: {report}: ") and len(err.strip().splitlines()) == 1, (name, err)
        assert not (tmp_path / name).exists(), name
    del old["calibration_bins"]
    report.write_text(json.dumps(old))
    assert figures([str(report), str(tmp_path / "figs2")]) == 2
    assert "no calibration bins" in capsys.readouterr().err


def test_average_is_the_mean_of_the_weights_and_refuses_other_architectures(tmp_path, tiny_segmenter, capsys):
    first, second, other = tmp_path / "a.mlffm", tmp_path / "b.mlffm", tmp_path / "other.mlffm"
    tiny_segmenter.with_options(probability_temperature=1.7, decision_threshold=0.44).save(first, provenance={"commands": ["mlffm train x -o a"]})
    torch.manual_seed(1)
    Segmenter(tiny_segmenter.config, "cpu").save(second, provenance={"commands": ["mlffm train x -o b"]})
    out = tmp_path / "soup.mlffm"
    assert main(["average", str(first), str(second), "-o", str(out)]) == 0
    soup, a, b = (Segmenter.load(p, "cpu") for p in (out, first, second))
    for name, tensor in soup.network.state_dict().items():
        pair = a.network.state_dict()[name], b.network.state_dict()[name]
        expected = (pair[0].double() + pair[1].double()) / 2 if tensor.is_floating_point() else pair[0]
        assert torch.allclose(tensor.double(), expected.double(), atol=1e-7), name
    # the fitted options belong to the old weights: reset, to be calibrated again
    assert soup.config == a.with_options(probability_temperature=1.0, decision_threshold=0.5).config
    assert soup.provenance["commands"] == ["mlffm train x -o a", "mlffm train x -o b", soup.provenance["command"]]
    assert [p["checkpoint_id"] for p in soup.provenance["average_of"]] == [a.checkpoint_id, b.checkpoint_id]
    # weighted: a point on the line between two weights (benchmarks/weight_interpolation.py)
    from training.commands.average import average_weights

    quarter = average_weights([a, b], weights=(0.25, 0.75))
    for name, tensor in quarter.items():
        pair = a.network.state_dict()[name], b.network.state_dict()[name]
        expected = 0.25 * pair[0].double() + 0.75 * pair[1].double() if tensor.is_floating_point() else pair[0]
        assert torch.allclose(tensor.double(), expected.double(), atol=1e-7), name
    with pytest.raises(ValueError, match="one weight per model"):
        average_weights([a, b], weights=(1.0,))

    Segmenter(tiny_config(network=NetworkConfig(widths=(8, 16, 24), time_dim=16)), "cpu").save(other)
    capsys.readouterr()
    assert main(["average", str(first), str(other), "-o", str(tmp_path / "x.mlffm")]) == 2
    assert "other.mlffm: its size, network or diffusion settings differ" in capsys.readouterr().err
    assert main(["average", str(first), "-o", str(tmp_path / "x.mlffm")]) == 2
    assert "need two or more" in capsys.readouterr().err
    assert main(["average", str(first), str(first), "-o", str(tmp_path / "x.mlffm")]) == 2
    assert "named twice" in capsys.readouterr().err
    assert main(["average", str(first), str(second), "-o", str(out)]) == 2  # no silent overwrite
    assert "already exists" in capsys.readouterr().err
    assert not (tmp_path / "x.mlffm").exists()
    # -o a folder, or in a folder that does not exist: named in one line, not the temporary file
    assert main(["average", str(first), str(second), "-o", str(tmp_path), "--overwrite"]) == 2
    assert f"{tmp_path}: is a folder; -o needs a file name" in capsys.readouterr().err
    assert main(["average", str(first), str(second), "-o", str(tmp_path / "missing" / "x.mlffm")]) == 2
    err = capsys.readouterr().err
    assert "missing: folder of -o" in err and ".tmp" not in err


def test_calibrate_on_cases_that_are_all_skipped_names_them(tmp_path, tiny_checkpoint, capsys):
    from PIL import Image

    data = tmp_path / "thin"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for index in range(2):
        Image.fromarray(np.full((4, 300, 3), 90 + index, np.uint8)).save(data / "images" / f"t{index}.png")
        Image.fromarray(np.zeros((4, 300), np.uint8)).save(data / "masks" / f"t{index}.png")
    code = main(["calibrate", str(data), "-o", str(tmp_path / "c.mlffm"), "--checkpoint", str(tiny_checkpoint), "--split", "all", "--samples", "2", "--steps", "1"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and line.startswith(f"mlffm calibrate: error: {data}: none of the 2 cases of split 'all' could be used (")
    assert "t0.png" in line and "t1.png" in line and not (tmp_path / "c.mlffm").exists()


def test_average_refuses_models_that_differ_in_flat_field_correction(tmp_path, tiny_segmenter, capsys):
    plain, corrected = tmp_path / "plain.mlffm", tmp_path / "ff.mlffm"
    tiny_segmenter.save(plain)
    torch.manual_seed(1)
    Segmenter(tiny_segmenter.config, "cpu").with_options(flat_field=True).save(corrected)
    for order in ((corrected, plain), (plain, corrected)):  # the first one's setting was kept, whichever it was
        assert main(["average", str(order[0]), str(order[1]), "-o", str(tmp_path / "soup.mlffm")]) == 2
        err = capsys.readouterr().err
        assert "flat-field correction is" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "soup.mlffm").exists()


def test_average_refuses_a_copy_of_one_model_under_another_name(tmp_path, tiny_segmenter, capsys):
    import shutil

    first, copy = tmp_path / "a.mlffm", tmp_path / "copy_of_a.mlffm"
    tiny_segmenter.save(first)
    shutil.copyfile(first, copy)
    assert main(["average", str(first), str(copy), "-o", str(tmp_path / "soup.mlffm")]) == 2  # "averaged 2 models"
    assert "the same model as" in capsys.readouterr().err and not (tmp_path / "soup.mlffm").exists()


def test_evaluate_and_calibrate_report_the_flip_views_they_used_one_per_sample_at_most(tmp_path, tiny_checkpoint, capsys):
    report, calibrated = tmp_path / "r.json", tmp_path / "c.mlffm"
    args = ["--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--flip-views", "4", "--samples", "2", "--steps", "1"]
    assert main(["evaluate", str(SMALL_DATA), "--split", "val", "--json", str(report), *args]) == 0
    assert "flip views 2," in capsys.readouterr().out
    assert json.loads(report.read_text())["settings"]["flip_views"] == 2
    assert main(["calibrate", str(SMALL_DATA), "-o", str(calibrated), *args]) == 0
    assert Segmenter.load(calibrated, "cpu").provenance["calibration"]["flip_views"] == 2
