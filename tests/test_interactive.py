"""The click protocol: sessions, the summary contract, and mlffm evaluate --clicks on a folder without splits."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from model import Segmenter
from model.config import NetworkConfig
from training.cli import main
from training.data.datasets import list_cases, load_case
from model.click_reach import click_reach
from model.inputs.kept import KeptPixels
from model.inputs.prompts import Prompts
from training.interactive import protocol
from training.interactive.protocol import ClickSession, click_session, refine, resolve_mode, summarize_sessions

from .conftest import SMALL_DATA, tiny_config


def test_summary_follows_the_contract():
    sessions = [ClickSession([0.80, 0.86, 0.91, 0.95], seconds=[0.1, 0.2, 0.3]), ClickSession([0.5, 0.6, 0.7, 0.8], seconds=[0.2, 0.2, 0.2])]
    report = summarize_sessions(sessions, 3, "kept")
    assert report["dice_after"] == pytest.approx([0.65, 0.73, 0.805, 0.875])
    assert report["noc85"] == pytest.approx((1 + 3) / 2)  # never reached counts as K
    assert report["noc90"] == pytest.approx((2 + 3) / 2)
    assert report["share_90_within_3"] == pytest.approx(0.5)
    assert report["seconds_per_refine"] == pytest.approx(0.2)
    assert ClickSession([0.95, 0.95]).clicks_to(0.9) == 0


def test_a_refine_draws_the_models_refine_default_never_more_than_the_first_proposal(tiny_segmenter):
    image, truth = load_case(list_cases(SMALL_DATA, "all").cases[0])
    image, truth = image[::8, ::8], truth[::8, ::8]
    segmenter = tiny_segmenter.with_options(default_samples=6, default_refine_samples=3)
    prompts = Prompts().with_click((10, 10), True).with_prior(np.zeros(truth.shape, bool))
    assert len(refine(segmenter, image, prompts, "kept", steps=1).samples) == 3  # None: the refine default
    assert len(refine(segmenter, image, Prompts().with_prior(prompts.prior), "kept", steps=1).samples) == segmenter.config.default_samples
    assert len(refine(segmenter.with_options(default_samples=2), image, prompts, "kept", steps=1).samples) == 2  # never more than a first
    assert len(refine(segmenter, image, prompts, "kept", n_samples=5, steps=1).samples) == 5
    assert protocol.refine_samples_for(segmenter, 2) == 2 and protocol.refine_samples_for(segmenter, 16) == 3
    drawn = []
    original = segmenter.propose_iter

    def counting(image, n_samples=None, *args, **kwargs):
        drawn.append(n_samples)
        return original(image, n_samples, *args, **kwargs)

    segmenter.propose_iter = counting
    segmenter.propose = lambda image, n_samples=None, *a, **k: protocol.run_to_completion(counting(image, n_samples, *a, **k))
    sessions = [
        click_session(segmenter, image, truth, 2, "kept", n_samples=4, steps=1, seed=0),
        click_session(segmenter, image, truth, 2, "kept", n_samples=2, steps=1, seed=0),
        click_session(segmenter, image, truth, 2, "kept", refine_samples=4, n_samples=2, steps=1, seed=0),
    ]
    assert [s.refine_samples for s in sessions] == [3, 2, 4]
    assert drawn == [4, 3, 3, 2, 2, 2, 2, 4, 4]  # each session: its first proposal, then two refines
    assert summarize_sessions(sessions[:1], 2, "kept")["refine_samples"] == 3
    assert summarize_sessions(sessions, 2, "kept")["refine_samples"] == [2, 3, 4]
    assert "3 samples per refine" in protocol.format_clicks(summarize_sessions(sessions[:1], 2, "kept"))


def test_a_refine_over_the_size_limits_skips_its_case_and_the_run_goes_on(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    from model.inputs import limits

    monkeypatch.setattr(limits, "MAX_PROPOSAL_BYTES", (3 + limits.PROPOSAL_BYTES_PER_PIXEL) * 96 * 96)  # the fixture's images are 96 x 96: 2 samples fit, 4 do not
    report = tmp_path / "r.json"
    args = ["evaluate", str(SMALL_DATA), "--checkpoint", str(tiny_checkpoint), "--split", "all", "--limit", "2", "--steps", "1"]
    assert main([*args, "--samples", "2", "--refine-samples", "4", "--clicks", "1", "--json", str(report)]) == 2  # nothing could be scored
    err = capsys.readouterr().err
    assert err.count("skipped") >= 2 and "use at most 3 samples" in err and "none of the 2 cases" in err
    assert main([*args, "--samples", "2", "--refine-samples", "2", "--clicks", "1", "--json", str(report), "--overwrite"]) == 0


def test_kept_pixel_clicks_hold_their_disks_in_the_next_mask(tiny_segmenter):
    image, truth = load_case(list_cases(SMALL_DATA, "all").cases[0])
    image, truth = image[::8, ::8], truth[::8, ::8]
    session = click_session(tiny_segmenter, image, truth, 3, "kept", n_samples=2, steps=2, seed=0)
    assert len(session.dice) == 4 and len(session.clicks) == len(session.seconds) <= 3
    assert session.clicks  # an untrained model is wrong somewhere
    with pytest.raises(ValueError, match="prompt channels"):
        resolve_mode(tiny_segmenter, "prompts")
    prompted = Segmenter(tiny_config(network=NetworkConfig(widths=(8, 16, 32), time_dim=16, prompt_channels=3)), "cpu")
    assert resolve_mode(prompted, "auto") == "both" and resolve_mode(tiny_segmenter, "auto") == "kept"


def test_a_reached_region_joins_the_refined_mask_and_painted_pixels_win(tiny_segmenter):
    image, _ = load_case(list_cases(SMALL_DATA, "all").cases[0])
    height, width = image.shape[:2]
    prior = np.zeros((height, width), bool)
    prior[: height // 2] = True
    prompts = Prompts().with_click((height * 3 // 4, width // 2), True).with_prior(prior)
    painted = np.zeros((height, width), bool)
    painted[-6:] = True  # painted skin along the bottom edge, which the click's reach crosses
    kept = KeptPixels(painted, np.zeros_like(painted))
    plain = refine(tiny_segmenter, image, prompts, "kept", kept, reach=False, n_samples=2, steps=2, seed=0)
    reached = refine(tiny_segmenter, image, prompts, "kept", kept, n_samples=2, steps=2, seed=0)
    expected = click_reach(plain.probability, prior, prompts.positive, prompts.negative)
    assert expected is not None
    grown = expected.mask & expected.values & ~painted
    assert reached.consensus[grown].all()
    assert not reached.consensus[painted].any() and (reached.uncertainty[painted] == 0).all()


def test_a_refines_seconds_include_the_reach_step(tiny_segmenter, monkeypatch):
    """The plugin's status line shows ``proposal.seconds``: it must cover the reach step, not only the sampler."""
    pause = 0.5

    def slow_reach(*args, **kwargs):
        time.sleep(pause)
        return click_reach(*args, **kwargs)

    monkeypatch.setattr(protocol, "click_reach", slow_reach)
    image, _ = load_case(list_cases(SMALL_DATA, "all").cases[0])
    height, width = image.shape[:2]
    prompts = Prompts().with_click((height // 2, width // 2), True).with_prior(np.zeros((height, width), bool))
    started = time.perf_counter()
    proposal = refine(tiny_segmenter, image, prompts, "kept", n_samples=2, steps=2, seed=0)
    assert pause <= proposal.seconds <= time.perf_counter() - started


def test_evaluate_with_clicks_on_any_folder(tmp_path, tiny_checkpoint, capsys):
    folder = tmp_path / "clinic"
    shutil.copytree(SMALL_DATA, folder)
    (folder / "splits.csv").unlink()
    report = tmp_path / "r.json"
    args = ["evaluate", str(folder), "--checkpoint", str(tiny_checkpoint), "--split", "all", "--limit", "3", "--samples", "2", "--steps", "2"]
    assert main([*args, "--clicks", "3", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "click protocol (kept" in out and "NoC@90" in out
    clicks = json.loads(report.read_text())["clicks"]
    assert len(clicks["dice_after"]) == 4 and clicks["n_images"] == 3
    assert 0 <= clicks["noc85"] <= 3 and 0 <= clicks["noc90"] <= 3 and 0 <= clicks["share_90_within_3"] <= 1
    assert clicks["seconds_per_refine"] >= 0
    per_image = json.loads(report.read_text())["per_image"]
    assert all(len(r["dice_after_clicks"]) == 4 for r in per_image)
    assert np.isclose(np.mean([r["dice_after_clicks"][0] for r in per_image]), clicks["dice_after"][0])
    assert clicks["reach"] is True and "click protocol (kept + reach" in out
    assert clicks["refine_samples"] == 2  # the refine default (8), never more than the first proposal's 2
    assert main([*args, "--clicks", "1", "--click-reach", "off", "--refine-samples", "1", "--json", str(report), "--overwrite"]) == 0
    assert json.loads(report.read_text())["clicks"]["reach"] is False
    assert json.loads(report.read_text())["clicks"]["refine_samples"] == 1
    assert main([*args, "--refine-samples", "1"]) == 2  # nothing to refine without --clicks or --box
    assert "--refine-samples 1 needs the click protocol" in capsys.readouterr().err
    for option in (["--click-mode", "kept"], ["--click-reach", "off"]):  # no silent no-op either
        assert main([*args, *option]) == 2
        assert "--click-mode and --click-reach need the click protocol" in capsys.readouterr().err
    assert main([*args, "--clicks", "2", "--click-mode", "prompts"]) == 2
    assert "prompt" in capsys.readouterr().err
