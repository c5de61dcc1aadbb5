"""The simulated user: first click at the farthest interior point, corrections on the largest error."""

from __future__ import annotations

import numpy as np
import pytest

from training.interactive.clicks import boundary_distance, dice, farthest_point, first_click, next_click


def _disk(shape, centre, radius):
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def test_first_click_lands_at_the_farthest_interior_point():
    truth = np.zeros((60, 80), bool)
    truth[10:41, 20:71] = True  # a 31 x 51 rectangle: its medial axis is row 25
    click = first_click(truth)
    assert click.positive and click.row == 25 and 35 <= click.col <= 55
    assert click.depth == pytest.approx(16.0)
    # An L shape: the click goes into the thick arm (depth 15), not the thin one (depth 5).
    shape = np.zeros((100, 100), bool)
    shape[10:90, 10:20] = True  # thin arm, 10 px
    shape[60:90, 10:90] = True  # thick arm, 30 px
    click = first_click(shape)
    assert 70 <= click.row <= 80 and click.col >= 24 and click.depth == pytest.approx(15.0)
    assert first_click(np.zeros((5, 5), bool)) is None


def test_image_border_counts_as_boundary_unless_told_otherwise():
    truth = np.zeros((50, 50), bool)
    truth[:, :20] = True  # a lesion cut by the left edge of the frame
    inside = first_click(truth)
    assert inside.col == 9 or inside.col == 10  # the middle of the visible part
    beyond = first_click(truth, border_is_boundary=False)
    assert beyond.col == 0  # as if the lesion went on beyond the frame
    assert boundary_distance(np.ones((4, 4), bool), border_is_boundary=False).min() == 4


def test_a_false_positive_blob_gets_a_negative_click():
    truth = _disk((80, 80), (40, 25), 12)
    prediction = truth | _disk((80, 80), (40, 62), 9)  # the lesion found, plus a false blob
    click = next_click(prediction, truth)
    assert not click.positive
    assert abs(click.row - 40) <= 1 and abs(click.col - 62) <= 1


def test_a_missed_region_gets_a_positive_click_and_the_larger_error_wins():
    truth = _disk((80, 80), (40, 25), 12) | _disk((80, 80), (40, 62), 10)
    prediction = _disk((80, 80), (40, 25), 12) | _disk((80, 80), (10, 10), 4)  # misses a lobe, small false blob
    click = next_click(prediction, truth)
    assert click.positive and abs(click.row - 40) <= 1 and abs(click.col - 62) <= 1
    assert next_click(truth, truth) is None
    with pytest.raises(ValueError, match="shape"):
        next_click(truth[:10], truth)


def test_farthest_point_and_dice_basics():
    assert farthest_point(np.zeros((3, 3), bool)) is None
    assert dice(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0
    a = np.zeros((4, 4), bool)
    a[:2] = True
    assert dice(a, np.ones((4, 4), bool)) == pytest.approx(2 * 8 / 24)
