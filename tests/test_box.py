"""The box prompt: its geometry, bad boxes, every sample skin outside it, and the protocol's simulated box."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from model.inputs.box import Box, min_box_side
from model.inputs.kept import KeptPixels, click_disks
from model.inputs.prompts import Prompts
from training.cli import main
from training.data.datasets import list_cases, load_case
from training.interactive.protocol import click_session, refine

from .conftest import SMALL_DATA


def test_a_rectangles_corners_make_its_box_and_the_box_its_pixels():
    corners = np.array([[10.0, 40.0], [10.0, 5.0], [30.0, 5.0], [30.0, 40.0]])  # napari's 4 vertices, any order
    box = Box.from_corners(corners)
    assert box == Box(10.0, 5.0, 30.0, 40.0)
    inside = box.inside(50, 60)
    assert inside.sum() == 20 * 35 and inside[10, 5] and inside[29, 39] and not inside[30, 39] and not inside[9, 5]
    assert Box.from_corners(np.c_[np.zeros(4), corners]).window(50, 60) == (10, 5, 30, 40)  # a leading (z) axis is ignored
    assert Box(-20, -3.5, 1e9, 25.2).window(50, 60) == (0, 0, 50, 26)  # clipped to the image
    outside = Box(0, 0, 50, 60).outside_as_skin(50, 60)
    assert outside is None  # the whole image: nothing to hold
    kept = box.outside_as_skin(50, 60)
    assert np.array_equal(kept.mask, ~inside) and not kept.values.any()
    assert box.to_record() == {"top": 10.0, "left": 5.0, "bottom": 30.0, "right": 40.0}
    assert box.grown(0.1) == Box(8.0, 1.5, 32.0, 43.5) and box.grown(0.1).window(50, 60) == (8, 1, 32, 44)


def test_the_reference_box_is_tight_and_empty_masks_have_none():
    mask = np.zeros((20, 30), bool)
    mask[4:9, 7:21] = True
    assert Box.around(mask) == Box(4.0, 7.0, 9.0, 21.0)
    assert np.array_equal(Box.around(mask).inside(20, 30), mask)
    assert Box.around(np.zeros((5, 5), bool)) is None


@pytest.mark.parametrize(
    "box, match",
    [
        (Box(100, 100, 200, 200), "leaves less than 2 x 2"),  # wholly outside the 50 x 60 image
        (Box(10, 10, 11, 40), "leaves less than 2 x 2"),  # one row
        (Box(float("nan"), 0, 10, 10), "top must be a finite number"),
        (Box(0, 0, float("inf"), 10), "bottom must be a finite number"),
        (Box(0, "a", 10, 10), "left must be a finite number"),
        (Box(0, 0, True, 10), "bottom must be a finite number"),
    ],
)
def test_bad_boxes_are_one_value_error(box, match):
    with pytest.raises(ValueError, match=match):
        box.window(50, 60)


@pytest.mark.parametrize("box", [(10, 10, 40, 50), [10, 10, 40, 50], np.array([10, 10, 40, 50]), {"top": 10}, "10,10,40,50"])
def test_a_box_that_is_not_a_box_is_one_value_error_before_any_work(tiny_segmenter, box):
    """refine(..., box=(top, left, bottom, right)) was an AttributeError ('tuple' object has no attribute 'outside_as_skin')."""
    before = tiny_segmenter.encode_calls
    with pytest.raises(ValueError, match=r"box must be a model.inputs.box.Box, .*Box\(top, left, bottom, right\)"):
        refine(tiny_segmenter, np.zeros((50, 60, 3), np.uint8) + 100, Prompts(), "kept", box=box, n_samples=1, steps=1)
    assert tiny_segmenter.encode_calls == before


@pytest.mark.parametrize("reach", ["no", "off", 0.5, None, [False]])
def test_a_reach_that_is_not_a_bool_is_one_value_error_before_any_work(tiny_segmenter, reach):
    """refine(..., reach="no") took the word for a yes (any truthy value)."""
    before = tiny_segmenter.encode_calls
    with pytest.raises(ValueError, match="reach must be True or False"):
        refine(tiny_segmenter, np.zeros((50, 60, 3), np.uint8) + 100, Prompts(), "kept", reach=reach, n_samples=1, steps=1)
    assert tiny_segmenter.encode_calls == before


@pytest.mark.parametrize("corners", [[[1.0, 2.0]], [[np.nan, 0], [3, 3]], "corner", [[1, 2, 3]], [["a", "b"], ["c", "d"]]])
def test_malformed_corners_are_one_value_error(corners):
    with pytest.raises(ValueError, match="box corners"):
        Box.from_corners(corners)


def test_a_click_meant_to_select_is_no_box_and_only_axis_aligned_rectangles_are_boxes():
    assert min_box_side(512, 512) == 8 and min_box_side(40, 900) == 2
    with pytest.raises(ValueError, match="leaves less than 8 x 8 pixels"):
        Box(100, 200, 102.2, 202.2).window(512, 512)  # what a press without a drag draws in napari
    assert Box(100, 200, 108, 208).window(512, 512) == (100, 200, 108, 208)
    square = [[10.0, 10.0], [10.0, 50.0], [50.0, 50.0], [50.0, 10.0]]
    assert Box.from_rectangle(square) == Box(10.0, 10.0, 50.0, 50.0)
    for shape in ([[156, 256], [256, 356], [356, 256], [256, 156]], [[10, 10], [10, 50], [55, 58], [50, 10]], square[:3]):
        with pytest.raises(ValueError, match="axis-aligned rectangle"):
            Box.from_rectangle(shape)  # rotated, a dragged vertex, a triangle


def test_a_thin_lesions_box_grows_to_the_smallest_box_inside_the_image():
    grown = Box(48, 10, 49, 60).at_least(512, 512)  # a 1-px-thick reference
    assert grown.bottom - grown.top == 8 and grown.left == 10 and grown.right == 60 and grown.top <= 48 and grown.bottom >= 49
    assert grown.window(512, 512)  # now a valid box
    edge = Box(0, 508, 1, 512).at_least(512, 512)  # at the corner: moved inside, not cut
    assert edge.window(512, 512) == (0, 504, 8, 512)


@pytest.mark.parametrize("seed", [0, 7])
def test_every_sample_is_skin_outside_the_box_painted_pixels_win_and_a_lesion_clicks_disk_stops_at_it(tiny_segmenter, seed):
    image, _ = load_case(list_cases(SMALL_DATA, "all").cases[0])
    height, width = image.shape[:2]
    box = Box(height * 0.25, width * 0.25, height * 0.75, width * 0.75)
    inside = box.inside(height, width)
    painted = np.zeros((height, width), bool)
    painted[:6, :6] = True  # lesion painted outside the box: the clinician's paint wins
    click = (height * 0.75, width * 0.5)  # a lesion click on the box's edge: its disk is cut there
    prior = np.ones((height, width), bool)
    prompts = Prompts().with_click(click, True).with_prior(prior)
    proposal = refine(
        tiny_segmenter, image, prompts, "kept", KeptPixels(painted, painted), reach=False, box=box, n_samples=3, steps=2, seed=seed
    )
    disk = click_disks([click], [], height, width).mask
    assert (disk & ~inside).any() and (disk & inside).any()
    free_outside = ~inside & ~painted
    assert not proposal.samples[:, free_outside].any() and (proposal.probability[free_outside] == 0).all()
    assert proposal.samples[:, painted].all() and proposal.samples[:, disk & inside].all()
    unboxed = refine(tiny_segmenter, image, prompts, "kept", KeptPixels(painted, painted), reach=False, n_samples=3, steps=2, seed=seed)
    assert unboxed.samples[:, free_outside & ~disk].any()  # the untrained model's proposals do spill outside: the box is what holds them


def test_the_simulated_box_comes_first_and_is_kept_in_every_refine(tiny_segmenter):
    image, truth = load_case(list_cases(SMALL_DATA, "all").cases[0])
    image, truth = image[::8, ::8], truth[::8, ::8]
    plain = click_session(tiny_segmenter, image, truth, 2, "kept", reach=False, n_samples=2, steps=2, seed=0)
    boxed = click_session(tiny_segmenter, image, truth, 2, "kept", reach=False, box=True, n_samples=2, steps=2, seed=0)
    assert plain.dice_before_box is None and boxed.dice_before_box == plain.dice[0]
    assert len(boxed.dice) == 3 and len(boxed.seconds) == 1 + len(boxed.clicks)  # the box's refine counts as one
    inside = Box.around(truth).inside(*truth.shape)
    for row, col, _ in boxed.clicks:
        assert inside[row, col]  # every error, and so every click, lies in the box


def test_evaluate_with_a_box(tmp_path, tiny_checkpoint, capsys):
    folder = tmp_path / "clinic"
    shutil.copytree(SMALL_DATA, folder)
    report = tmp_path / "r.json"
    args = ["evaluate", str(folder), "--checkpoint", str(tiny_checkpoint), "--split", "all", "--limit", "2", "--samples", "2", "--steps", "2"]
    assert main([*args, "--box", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "a box first" in out and "Dice before the box" in out and "NoC" not in out  # no clicks to count
    record = json.loads(report.read_text())
    clicks = record["clicks"]
    assert clicks["box"] is True and len(clicks["dice_after"]) == 1 and clicks["k"] == 0
    assert np.isclose(clicks["dice_before_box"], record["metrics"]["dice"])  # before the box: the ordinary proposal
    assert all("dice_before_box" in r for r in record["per_image"])
    assert main([*args, "--box", "--direct"]) == 2
    assert "--box needs sampling" in capsys.readouterr().err


def test_evaluate_with_a_box_scores_a_lesion_one_pixel_thick(tmp_path, tiny_checkpoint):
    from PIL import Image  # noqa: PLC0415

    folder = tmp_path / "clinic"
    shutil.copytree(SMALL_DATA, folder)
    mask_path = sorted((folder / "masks").iterdir())[0]
    thin = np.zeros(np.asarray(Image.open(mask_path)).shape[:2], np.uint8)
    thin[thin.shape[0] // 2, 10:60] = 255
    Image.fromarray(thin).save(mask_path)
    report = tmp_path / "r.json"
    args = ["evaluate", str(folder), "--checkpoint", str(tiny_checkpoint), "--split", "all", "--limit", "1", "--samples", "2", "--steps", "2"]
    assert main([*args, "--box", "--clicks", "1", "--json", str(report)]) == 0
    record = json.loads(report.read_text())
    assert record["clicks"]["n_images"] == 1 and record["per_image"][0]["id"] == mask_path.stem.removesuffix("_segmentation")
