"""Prompt channels (clicks and a prior as input) and kept pixels (RePaint-style inpainting)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from model import Segmenter
from model.checkpoint import load_checkpoint
from model.config import NetworkConfig
from model.kept import KeptPixels, click_disks
from model.prompts import Prompts, encode_prompts, with_prompt_channels
from model.segmenter import default_weights_path

from .conftest import SAMPLES, tiny_config


@pytest.fixture
def dermoscopy() -> np.ndarray:
    from training.imageio import read_image

    return read_image(sorted(SAMPLES.glob("*.jpg"))[0])


def test_shipped_weights_widened_give_exactly_todays_proposals(dermoscopy):
    shipped = Segmenter.load(None, "cpu")
    widened = with_prompt_channels(shipped)
    assert widened.config.network.prompt_channels == 3 and shipped.config.network.prompt_channels == 0
    assert torch.count_nonzero(widened.network.prompt_stem.weight) == 0
    image = dermoscopy[::2, ::2]
    before = shipped.propose(image, n_samples=4, steps=3, seed=5)
    after = widened.propose(image, n_samples=4, steps=3, seed=5)
    # All-zero prompt weights: clicks and a prior change nothing either, until trained.
    h, w = image.shape[:2]
    prompted = widened.propose(image, n_samples=4, steps=3, seed=5, prompts=Prompts(((h / 2, w / 2),), ((2.0, 2.0),), before.consensus))
    for other in (after, prompted):
        assert np.array_equal(before.samples, other.samples)
        assert np.array_equal(before.probability, other.probability)
        assert np.array_equal(before.uncertainty, other.uncertainty)


def test_old_checkpoints_load_without_prompt_channels_and_refuse_clicks(rgb_image):
    _, meta, _ = load_checkpoint(default_weights_path())
    assert "prompt_channels" not in meta["config"]["network"]  # written before prompts existed
    shipped = Segmenter.load(None, "cpu")
    assert shipped.network.prompt_stem is None
    with pytest.raises(ValueError, match="no prompt channels"):
        shipped.propose(rgb_image, n_samples=1, steps=1, prompts=Prompts(((3.0, 3.0),)))
    with pytest.raises(ValueError, match="prompt_channels"):
        NetworkConfig(prompt_channels=2)


def test_prompted_checkpoint_round_trips(tmp_path, rgb_image):
    torch.manual_seed(0)
    segmenter = Segmenter(tiny_config(network=NetworkConfig(widths=(8, 16, 32), time_dim=16, prompt_channels=3)), "cpu")
    torch.nn.init.normal_(segmenter.network.prompt_stem.weight, std=0.5)
    segmenter.save(tmp_path / "p.mlffm")
    loaded = Segmenter.load(tmp_path / "p.mlffm", "cpu")
    assert loaded.config.network.prompt_channels == 3
    prompts = Prompts(((10.0, 20.0),), ((30.0, 5.0),))
    a = segmenter.propose(rgb_image, n_samples=2, steps=2, prompts=prompts)
    b = loaded.propose(rgb_image, n_samples=2, steps=2, prompts=prompts)
    c = loaded.propose(rgb_image, n_samples=2, steps=2)
    assert np.array_equal(a.probability, b.probability)
    assert not np.array_equal(b.probability, c.probability)  # trained prompt weights do steer


def test_prompt_encoding_places_clicks_and_prior_at_the_working_size():
    prior = np.zeros((64, 128), bool)
    prior[:, 64:] = True
    encoded = encode_prompts(Prompts(((31.5, 95.5),), (), prior), 64, 128, 32)
    assert encoded.shape == (1, 3, 32, 32)
    positive = encoded[0, 0]
    assert 0.6 < positive.max() <= 1.0  # the click falls between four working pixels
    row, col = divmod(int(positive.argmax()), 32)
    assert (row, col) in {(15, 23), (16, 23), (15, 24), (16, 24)}
    assert encoded[0, 1].abs().sum() == 0
    assert encoded[0, 2, :, :15].max() == -1 and encoded[0, 2, :, 17:].min() == 1
    assert encode_prompts(Prompts(), 64, 128, 32).abs().sum() == 0
    with pytest.raises(ValueError, match="outside"):
        encode_prompts(Prompts(((70.0, 3.0),)), 64, 128, 32)
    with pytest.raises(ValueError, match="prior"):
        encode_prompts(Prompts(prior=np.zeros((3, 3), bool)), 64, 128, 32)


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("flips", [1, 2])
def test_kept_pixels_stay_fixed_in_every_sample_whatever_the_seed(tiny_segmenter, rgb_image, seed, flips):
    segmenter = tiny_segmenter.with_options(flip_views=flips)
    h, w = rgb_image.shape[:2]
    mask = np.zeros((h, w), bool)
    mask[5:25, 10:40] = True
    mask[30:, :8] = True
    values = np.zeros((h, w), bool)
    values[5:25, 10:40] = True  # a kept lesion block and a kept skin block
    kept = KeptPixels(mask, values)
    proposal = segmenter.propose(rgb_image, n_samples=3, steps=3, seed=seed, eta=0.5, kept=kept)
    for sample in proposal.samples:
        assert np.array_equal(sample[mask], values[mask])
    assert np.array_equal(proposal.consensus[mask], values[mask])
    assert np.all(proposal.uncertainty[mask] == 0)
    free = segmenter.propose(rgb_image, n_samples=3, steps=3, seed=seed, eta=0.5)
    assert not np.array_equal(free.probability, proposal.probability)


def test_kept_pixels_steer_the_free_pixels_through_the_trajectory(tiny_segmenter, rgb_image):
    """RePaint: the known region enters x_t at every step, so pixels outside it change too."""
    h, w = rgb_image.shape[:2]
    mask = np.zeros((h, w), bool)
    mask[:, : w // 2] = True
    kept = KeptPixels(mask, mask.copy())
    free = tiny_segmenter.propose(rgb_image, n_samples=2, steps=3, seed=0)
    steered = tiny_segmenter.propose(rgb_image, n_samples=2, steps=3, seed=0, kept=kept)
    right = np.s_[:, w // 2 + 4 :]
    assert not np.allclose(free.probability[right], steered.probability[right])


def test_click_disks_are_kept_lesion_and_skin():
    kept = click_disks([(10, 10)], [(40, 40)], 64, 64, radius=3)
    assert kept.mask[10, 10] and kept.values[10, 10]
    assert kept.mask[40, 40] and not kept.values[40, 40]
    assert not kept.mask[25, 25] and kept.mask.sum() == 2 * 29
    assert click_disks([], [], 64, 64) is None
    with pytest.raises(ValueError, match="kept mask"):
        KeptPixels(np.zeros((3, 3), bool), np.zeros((3, 3), bool)).check(4, 4)
    merged = kept.merged(KeptPixels(np.ones((64, 64), bool), np.zeros((64, 64), bool)))
    assert merged.mask.all() and not merged.values.any()


def test_widening_is_refused_for_a_different_prompt_width():
    segmenter = Segmenter(tiny_config(network=NetworkConfig(widths=(8, 16, 32), time_dim=16, prompt_channels=3)), "cpu")
    assert with_prompt_channels(segmenter) is segmenter
    plain = Segmenter(tiny_config(), "cpu")
    widened = with_prompt_channels(plain)
    assert dataclasses.replace(widened.config.network, prompt_channels=0) == plain.config.network
