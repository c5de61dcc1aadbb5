"""A click's reach: the probable region connected to a click, near it, taken whole."""

from __future__ import annotations

import numpy as np
import pytest

from model import Proposal
from model.click_reach import click_reach
from model.inputs.kept import KeptPixels


def _disk(shape, center, radius):
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2


def _scene():
    """A 128 x 128 probability: a confident lesion, a probable lobe joined to it, and a probable blob far away."""
    shape = (128, 128)
    probability = np.full(shape, 0.02, np.float32)
    lesion = _disk(shape, (64, 40), 20)
    lobe = _disk(shape, (64, 70), 12)
    far = _disk(shape, (20, 110), 6)
    probability[lobe] = 0.35
    probability[far] = 0.35
    probability[lesion] = 0.95
    return probability, lesion, lobe, far


def test_a_positive_click_takes_the_probable_lobe_it_sits_in_and_nothing_far():
    probability, lesion, lobe, far = _scene()
    reach = click_reach(probability, lesion, [(64, 72)], [])
    assert isinstance(reach, KeptPixels)
    taken = reach.mask & reach.values
    assert taken[lobe & ~lesion].mean() > 0.95
    assert not taken[far].any()  # probable, but not connected to the click
    assert not (reach.mask & (probability < 0.2)).any()  # improbable pixels are never reached


def test_the_reach_is_bounded_by_the_clicks_distance_to_the_outline():
    probability, lesion, _, _ = _scene()
    probability[:, 60:] = 0.35  # a probable band running off to the right edge
    probability[lesion] = 0.95
    near = click_reach(probability, lesion, [(64, 64)], [], factor=3.0)  # 4 px beyond the outline
    far = click_reach(probability, lesion, [(64, 90)], [], factor=3.0)  # 30 px beyond it
    assert near.mask.sum() < far.mask.sum()
    cols = np.nonzero(near.mask.any(axis=0))[0]
    assert cols.max() <= 64 + 3 * 5 + 1


def test_a_negative_click_removes_the_doubtful_part_it_sits_in():
    shape = (96, 96)
    prior = _disk(shape, (48, 48), 30)
    probability = np.where(prior, 0.97, 0.01).astype(np.float32)
    doubtful = prior & (np.arange(96)[None, :] > 60)
    probability[doubtful] = 0.55
    reach = click_reach(probability, prior, [], [(48, 70)])
    removed = reach.mask & ~reach.values
    assert removed[doubtful].mean() > 0.9
    assert not removed[prior & ~doubtful].any()  # confident lesion (p >= 0.8) is not probable skin


def test_a_click_on_an_improbable_pixel_reaches_nothing_and_no_clicks_give_none():
    probability, lesion, _, _ = _scene()
    assert click_reach(probability, lesion, [(5, 5)], []) is None
    assert click_reach(probability, lesion, [], []) is None


def test_without_an_outline_the_radius_is_a_share_of_the_image():
    probability = np.full((128, 128), 0.5, np.float32)
    for prior in (None, np.zeros((128, 128), bool), np.ones((128, 128), bool)):
        reach = click_reach(probability, prior, [(64, 64)], [], factor=2.0)
        rows = np.nonzero(reach.mask.any(axis=1))[0]
        assert rows.max() - rows.min() + 1 == 2 * 2 * 128 // 8 + 1


def test_options_and_shapes_are_checked_up_front():
    probability, lesion, _, _ = _scene()
    with pytest.raises(ValueError, match="low"):
        click_reach(probability, lesion, [(64, 40)], [], low=0.6)
    with pytest.raises(ValueError, match="factor"):
        click_reach(probability, lesion, [(64, 40)], [], factor=float("nan"))
    with pytest.raises(ValueError, match="prior must be 128 x 128"):
        click_reach(probability, lesion[:10], [(64, 40)], [])
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        click_reach(probability[None], None, [(64, 40)], [])


def test_proposal_with_kept_sets_every_sample_and_clears_the_spread():
    rng = np.random.default_rng(0)
    samples = rng.random((4, 32, 32)) > 0.5
    proposal = Proposal(samples, samples.mean(0).astype(np.float32), np.full((32, 32), 0.5, np.float32), threshold=0.5)
    mask = np.zeros((32, 32), bool)
    mask[8:16, 8:16] = True
    kept = proposal.with_kept(KeptPixels(mask, mask.copy()))
    assert kept.samples[:, mask].all() and kept.consensus[mask].all()
    assert (kept.uncertainty[mask] == 0).all()
    assert np.array_equal(kept.samples[:, ~mask], samples[:, ~mask])
    assert proposal.with_kept(None) is proposal
    with pytest.raises(ValueError, match="32 x 32"):
        proposal.with_kept(KeptPixels(mask[:8], mask[:8]))
