"""The result layers of an image in real napari: other layers under their names, another image's mask, and where they sit."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mlffm import results

from .test_plugin import _dock, _propose, plugin_env  # noqa: F401


def _rgb(height=64, width=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


OTHER_LAYERS = {
    "mask is an image": lambda v: v.add_image(np.zeros((64, 64)), name="g mask"),
    "mask is points": lambda v: v.add_points([[1, 1]], name="g mask"),
    "mask is 3-D": lambda v: v.add_labels(np.zeros((2, 64, 64), int), name="g mask"),
    "proposals are points": lambda v: v.add_points([[1, 1]], name="g proposals"),
    "uncertainty is labels": lambda v: v.add_labels(np.zeros((64, 64), int), name="g uncertainty"),
}


@pytest.mark.parametrize("make", list(OTHER_LAYERS.values()), ids=list(OTHER_LAYERS))
def test_a_layer_of_another_kind_under_a_result_name_is_refused_in_one_line_and_left_alone(make_napari_viewer, qtbot, plugin_env, make):  # noqa: F811
    viewer = make_napari_viewer()
    propose, review = _dock(viewer, "Propose masks"), _dock(viewer, "Review and export")
    image = viewer.add_image(_rgb(), name="g", rgb=True)
    make(viewer)
    theirs = viewer.layers[-1]
    before = np.asarray(theirs.data).copy()
    propose.image.value = image
    assert propose.start() is None
    assert f"layer '{theirs.name}'" in propose.status.value and "rename or remove it" in propose.status.value
    assert np.array_equal(np.asarray(theirs.data), before) and len(viewer.layers) == 2
    review.image.value = image
    for action in (review.accept, review.apply_clean, lambda: review.step_outline(-1)):
        assert action() is None and "\n" not in review.status.value and review.status.value


def test_a_same_named_image_of_another_size_never_gets_the_old_edited_mask(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer = make_napari_viewer()
    propose, review = _dock(viewer, "Propose masks"), _dock(viewer, "Review and export")
    first = viewer.add_image(_rgb(), name="g", rgb=True)
    _propose(qtbot, propose, first)
    mask = viewer.layers["g mask"]
    edited = np.asarray(mask.data).copy()
    edited[:8, :8] = 1 - edited[:8, :8]
    mask.data = edited
    viewer.layers.remove(first)
    second = viewer.add_image(_rgb(96, 80, 1), name="g", rgb=True)
    _propose(qtbot, propose, second)
    assert "layer 'g mask' (64 x 64) does not fit image 'g' (80 x 96)" in propose.status.value
    assert np.array_equal(np.asarray(mask.data), edited)  # the edits stay where they were
    qtbot.wait(300)  # the read-out timer fires on the mask's events: no exception from its slot
    review.image.value = second
    review.update_readout()
    assert review.readout.value == ""
    for action in (review.accept, review.export, lambda: review.step_outline(1), review.apply_clean):
        assert action() is None and "does not fit image 'g'" in review.status.value
    # Removed, the old mask makes way: the next proposal gives the new image its own.
    viewer.layers.remove(mask)
    _propose(qtbot, propose, second)
    assert viewer.layers["g mask"].data.shape == (96, 80) and "proposals in" in propose.status.value


def test_an_unedited_mask_of_another_size_is_replaced(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer = make_napari_viewer()
    propose = _dock(viewer, "Propose masks")
    first = viewer.add_image(_rgb(), name="g", rgb=True)
    _propose(qtbot, propose, first)
    viewer.layers.remove(first)
    second = viewer.add_image(_rgb(96, 80, 1), name="g", rgb=True)
    _propose(qtbot, propose, second)
    assert viewer.layers["g mask"].data.shape == (96, 80) and viewer.layers["g proposals"].data.shape[1:] == (96, 80)


def test_pixels_swapped_during_a_proposal_drop_its_results(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer = make_napari_viewer()
    propose = _dock(viewer, "Propose masks")
    image = viewer.add_image(_rgb(), name="g", rgb=True)
    propose.image.value = image
    assert propose.start() is not None
    image.data = _rgb(32, 48)  # before the worker's result reaches the main thread
    qtbot.waitUntil(lambda: propose.worker is None, timeout=120_000)
    assert "was given other pixels" in propose.status.value and "g mask" not in viewer.layers


def test_result_and_prompt_layers_sit_where_a_scaled_turned_image_does(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer = make_napari_viewer()
    propose, refine = _dock(viewer, "Propose masks"), _dock(viewer, "Refine with clicks")
    image = viewer.add_image(_rgb(), name="g", rgb=True, scale=(2.0, 3.0), translate=(10.0, -4.0), rotate=25.0)
    _propose(qtbot, propose, image)
    expected = image._data_to_world.affine_matrix
    found = results.case_layers(viewer, "g")
    for layer in (found["mask"], found["uncertainty"]):
        assert np.allclose(layer._data_to_world.affine_matrix, expected), layer.name
    assert np.allclose(found["proposals"]._data_to_world.affine_matrix[1:, 1:], expected)
    refine.image.value = image
    assert np.allclose(refine.prompts_layer()._data_to_world.affine_matrix, expected)
    assert np.allclose(refine.box_layer()._data_to_world.affine_matrix, expected)


def test_a_refine_meets_a_proposal_a_foreign_layer_or_new_pixels_without_mixing_them_in(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer = make_napari_viewer()
    propose, refine = _dock(viewer, "Propose masks"), _dock(viewer, "Refine with clicks")
    image = viewer.add_image(_rgb(), name="g", rgb=True)
    _propose(qtbot, propose, image)
    mask = viewer.layers["g mask"]
    refine.image.value = image
    # A proposal asked for while the refine runs is refused: it would be mixed into the refine's result.
    assert refine.start() is not None
    assert propose.start() is None and "a refine of 'g' is running" in propose.status.value
    qtbot.waitUntil(lambda: refine.worker is None, timeout=120_000)
    assert "painted meanwhile" not in refine.status.value and not mask.metadata["mlffm"]["kept_mask"].any()
    # Another kind of layer put under a result name during the refine: one line, the layer left alone.
    assert refine.start() is not None
    viewer.layers.remove("g uncertainty")
    theirs = viewer.add_labels(np.zeros((64, 64), np.uint8), name="g uncertainty")
    qtbot.waitUntil(lambda: refine.worker is None, timeout=120_000)
    assert "layer 'g uncertainty' is a Labels layer, not the uncertainty of 'g'" in refine.status.value
    assert not np.asarray(theirs.data).any()
    viewer.layers.remove(theirs)
    # New pixels during the refine: its result is dropped.
    before = np.asarray(mask.data).copy()
    assert refine.start() is not None
    image.data = _rgb(seed=5)
    qtbot.waitUntil(lambda: refine.worker is None, timeout=120_000)
    assert "given other pixels during the refine; refine dropped" in refine.status.value
    assert np.array_equal(np.asarray(mask.data), before)


def test_kept_result_layers_follow_the_image_and_cases_leave_a_foreign_layer_alone(make_napari_viewer, qtbot, plugin_env, tmp_path):  # noqa: F811
    from PIL import Image as PILImage

    viewer = make_napari_viewer()
    propose = _dock(viewer, "Propose masks")
    first = viewer.add_image(_rgb(), name="g", rgb=True)
    _propose(qtbot, propose, first)
    viewer.layers.remove(first)
    second = viewer.add_image(_rgb(seed=3), name="g", rgb=True, scale=(2.0, 2.0), translate=(50.0, 0.0))
    _propose(qtbot, propose, second)
    for layer in results.case_layers(viewer, "g").values():
        assert np.allclose(layer._data_to_world.affine_matrix[-3:, -3:], second._data_to_world.affine_matrix), layer.name

    folder = tmp_path / "cases"
    folder.mkdir()
    for index in range(2):
        PILImage.fromarray(_rgb(40, 48, index)).save(folder / f"c{index}.png")
    cases = _dock(viewer, "Cases")
    theirs = viewer.add_points([[1, 1], [5, 5]], name="c0 mask")  # the user's own layer under the mask's name
    cases.model.set_mask(str(folder / "c0.png"), np.ones((40, 48), bool))
    assert cases.open_folder(folder) == 2
    cases.step(1)
    assert "layer 'c0 mask' is a Points layer" in cases.status.value
    cases.step(1)
    assert theirs in viewer.layers and cases.model.get("c0").mask.shape == (40, 48)
