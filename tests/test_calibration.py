"""Temperature scaling: the fit on known over-confidence, the pooled ECE, and `mlffm calibrate` end to end."""

import json

import numpy as np
import pytest

from model import Segmenter
from training.calibration import LogitHistogram
from training.cli import main
from training.metrics import ece

from .conftest import SMALL_DATA


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


def test_calibrate_writes_a_model_with_the_fitted_options_and_evaluate_reports_bins(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "calibrated.mlffm"
    args = ["calibrate", str(SMALL_DATA), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--split", "val", "--flip-views", "2", "--samples", "2", "--steps", "2"]
    assert main(args) == 0
    assert "temperature" in capsys.readouterr().out
    calibrated = Segmenter.load(out, "cpu")
    record = calibrated.provenance["calibration"]
    assert calibrated.config.flip_views == 2
    assert calibrated.config.probability_temperature == pytest.approx(record["temperature"])
    assert record["n_images"] == 2 and record["ece_after"] <= record["ece_before"] + 1e-9
    assert record["command"] == "mlffm " + " ".join(args)
    assert calibrated.provenance["commands"][-1] == record["command"]
    base = Segmenter.load(tiny_checkpoint, "cpu")
    for name, tensor in base.network.state_dict().items():
        assert np.array_equal(tensor.numpy(), calibrated.network.state_dict()[name].numpy()), name
    assert main(args) == 2  # no silent overwrite
    assert "already exists" in capsys.readouterr().err

    report = tmp_path / "eval.json"
    assert main(["evaluate", str(SMALL_DATA), "--checkpoint", str(out), "--split", "val", "--samples", "2", "--steps", "2", "--flip-views", "4", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["settings"]["flip_views"] == 4
    assert result["settings"]["probability_temperature"] == pytest.approx(record["temperature"])
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

    from training.figures import main as figures

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
    del old["calibration_bins"]
    report.write_text(json.dumps(old))
    assert figures([str(report), str(tmp_path / "figs2")]) == 2
    assert "no calibration bins" in capsys.readouterr().err
