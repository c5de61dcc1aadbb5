"""The outline level: one number that grows or shrinks the whole outline, headless and in the Review dock."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.corrections.outline_level import LEVEL_MAX, LEVEL_MIN, check_level, mask_at_level, step_level
from training.interactive.clicks import dice
from training.interactive.level_user import stepped_level


def _cone(size: int = 64) -> np.ndarray:
    """(size, size) probability falling linearly from 1 at the centre to 0 at ``size / 2`` from it."""
    rows, cols = np.mgrid[:size, :size]
    radius = np.hypot(rows - size / 2, cols - size / 2)
    return np.clip(1 - radius / (size / 2), 0, 1).astype(np.float32)


def test_a_lower_level_grows_the_mask_and_painted_pixels_keep_their_value():
    probability = _cone()
    masks = [mask_at_level(probability, level) for level in (0.3, 0.5, 0.7)]
    assert masks[0].sum() > masks[1].sum() > masks[2].sum() > 0
    assert np.all(masks[2] <= masks[1]) and np.all(masks[1] <= masks[0])  # nested: the outline moves as one
    painted = np.zeros_like(masks[0])
    painted[:4, :4] = True  # a painted corner far outside every level
    painted[32, 32] = True  # an erased centre pixel
    current = masks[1].copy()
    current[:4, :4] = True
    current[32, 32] = False
    for level in (0.1, 0.5, 0.9):
        out = mask_at_level(probability, level, painted, current)
        assert out[:4, :4].all() and not out[32, 32]
        assert np.array_equal(out[~painted], (probability >= level)[~painted])


@pytest.mark.parametrize("level", [0.0, 1.0, LEVEL_MIN - 0.01, float("nan"), float("inf"), "high", None])
def test_levels_out_of_range_are_refused_with_one_line(level):
    with pytest.raises(ValueError, match="outline level"):
        mask_at_level(_cone(8), level)
    assert check_level(LEVEL_MIN) == LEVEL_MIN and check_level(LEVEL_MAX) == LEVEL_MAX


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="painted must be 8 x 8"):
        mask_at_level(_cone(8), 0.5, np.zeros((4, 4), bool), np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match="both or neither"):
        mask_at_level(_cone(8), 0.5, np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        mask_at_level(np.zeros((2, 8, 8)), 0.5)


def test_steps_stay_in_range_and_do_not_drift():
    assert step_level(0.469, -1) == pytest.approx(0.419)
    assert step_level(0.469, 1) == pytest.approx(0.519)
    level = 0.5
    for _ in range(100):
        level = step_level(level, -1)
    assert level == LEVEL_MIN
    assert step_level(0.5, 4) == pytest.approx(0.7) and step_level(0.5, 1000) == LEVEL_MAX
    assert step_level(0.99, -1) == pytest.approx(0.94)  # a threshold above the range steps into it
    # ... but never the wrong way: Grow from 0.02 would be a tighter outline, Shrink from 0.99 a looser one.
    assert step_level(0.02, -1) == 0.02 and step_level(0.02, 1) == pytest.approx(0.07)
    assert step_level(0.99, 1) == 0.99 and step_level(0.5, 0) == 0.5
    with pytest.raises(ValueError):
        step_level(0.5, 1, step=0)
    with pytest.raises(ValueError):
        step_level(float("nan"), 1)


def test_the_simulated_user_steps_towards_the_reference_outline():
    probability = _cone()
    truth = probability >= 0.3  # an annotator who drew a looser outline than the model's 0.5 cut
    user = stepped_level(probability, truth, 0.5)
    assert user.level == pytest.approx(0.3) and user.steps == 4 and user.dice == 1.0
    assert user.presses == 6  # four that helped, a fifth that did not, and its undo
    assert user.dice > dice(probability >= 0.5, truth)
    tighter = stepped_level(probability, probability >= 0.65, 0.5)
    assert tighter.level == pytest.approx(0.65) and tighter.steps == 3
    assert tighter.presses == 2 + 3 + 2  # Grow and its undo, three Shrinks that helped, a fourth and its undo
    # Already right: both ways probed and undone, no net step.
    right = stepped_level(probability, probability >= 0.5, 0.5)
    assert right.steps == 0 and right.presses == 4 and right.level == 0.5
    with pytest.raises(ValueError):
        stepped_level(probability, truth[:10], 0.5)


napari = pytest.importorskip("napari")


def test_grow_and_shrink_in_the_review_dock(make_napari_viewer, qtbot, tmp_path, monkeypatch, tiny_segmenter):
    from app_model.types import KeyBinding

    from napari_mlffm import results
    from napari_mlffm._qt import common
    from napari_mlffm.settings import SETTINGS

    from .conftest import SAMPLES

    monkeypatch.setenv("NAPARI_MLFFM_CONFIG_DIR", str(tmp_path / "config"))
    SETTINGS._settings = None
    common.forget_segmenters()
    base = tmp_path / "tiny.mlffm"
    tiny_segmenter.save(base)
    SETTINGS.update(model_folder=str(tmp_path), corrections_store=str(tmp_path / "store"), active_model=str(base), samples=3, steps=2)
    try:
        viewer = make_napari_viewer()
        _, propose = viewer.window.add_plugin_dock_widget("napari-mlffm", "Propose masks")
        _, review = viewer.window.add_plugin_dock_widget("napari-mlffm", "Review and export")
        layer = viewer.open(str(sorted(SAMPLES.glob("*.jpg"))[0]), plugin="napari-mlffm")[0]
        propose.image.value = layer
        assert propose.start() is not None
        qtbot.waitUntil(lambda: propose.worker is None, timeout=120_000)
        found = results.case_layers(viewer, layer.name)
        height, width = found["mask"].data.shape
        # A known probability (a cone), as a proposal would have stored it, so the outline's moves are exact.
        rows, cols = np.mgrid[:height, :width]
        cone = np.clip(1 - np.hypot(rows - height / 2, cols - width / 2) / (min(height, width) / 2), 0, 1).astype(np.float32)
        found["proposals"].metadata["mlffm"].update(probability=cone, threshold=0.5)
        results.set_mask(found["mask"], cone >= 0.5, "consensus")
        review.image.value = layer
        review.confirm = lambda title, question: True  # "the mask has edits: replace it?" answered yes
        area = int(found["mask"].data.sum())

        viewer.keymap[KeyBinding.from_str("Shift+G")](viewer)  # grow: level 0.45
        assert found["mask"].metadata["mlffm"]["level"] == pytest.approx(0.45)
        assert np.array_equal(found["mask"].data > 0, cone >= 0.45) and found["mask"].data.sum() > area
        assert "grown" in review.status.value and "0.45" in review.status.value

        # A painted stroke outside the outline survives shrinking; so does a pixel erased where a later cut agrees with it.
        erased = tuple(np.argwhere((cone > 0.47) & (cone < 0.49))[0])  # inside at 0.45, outside at 0.50 and above
        data = np.where(np.arange(width) < 5, 1, found["mask"].data).astype(np.uint8)
        data[erased] = 0
        found["mask"].data = data
        for _ in range(3):
            viewer.keymap[KeyBinding.from_str("Shift+S")](viewer)  # 0.50, 0.55, 0.60
        for _ in range(3):
            review.step_outline(-1)  # back to 0.55, 0.50, then 0.45, where the erased pixel would be lesion again
        review.step_outline(1)
        review.step_outline(1)
        mask = found["mask"].data > 0
        assert found["mask"].metadata["mlffm"]["level"] == pytest.approx(0.55)
        assert mask[:, :5].all() and not mask[erased]
        painted = np.zeros_like(mask)
        painted[:, :5] = True
        painted[erased] = True
        assert np.array_equal(mask[~painted], (cone >= 0.55)[~painted])
        assert "painted pixels kept" in review.status.value
        review.step_outline(1)
        mask = found["mask"].data > 0

        # The level goes into the accepted record; the edits are the pixels the annotator set: those that differ from
        # the level's own mask and those painted earlier, held through the steps (the erased one agrees with it now).
        record = json.loads(review.accept().read_text())
        assert record["level"] == pytest.approx(0.60)
        assert record["edited_pixels"] == int(((mask != (cone >= 0.60)) | painted).sum())

        # A mask made from the union is not a cut of the probability: Grow refuses it in one line and leaves it be.
        review.start.value = "union"
        review.apply_start()
        union = found["mask"].data.copy()
        assert review.step_outline(-1) is None and "did not come from the proposals' probability" in review.status.value
        assert np.array_equal(found["mask"].data, union)
        # A new mask from the proposals forgets the level and the paint.
        review.start.value = "consensus"
        review.apply_start()
        assert "level" not in found["mask"].metadata["mlffm"] and results.painted_pixels(found["mask"]) is None
        for _ in range(20):
            review.step_outline(1)
        assert found["mask"].metadata["mlffm"]["level"] == pytest.approx(0.95)
        assert review.step_outline(1) is None and "highest" in review.status.value
    finally:
        SETTINGS._settings = None
        common.forget_segmenters()
