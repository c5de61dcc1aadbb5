"""What Accept and Export write, in real napari under Xvfb: never one photo's pixels with another photo's mask,
never the unedited proposal in place of the annotator's renamed or closed mask, the provenance of the proposal
the mask came from, and no shortcut of a dock that was closed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

napari = pytest.importorskip("napari")

from napari_mlffm import results  # noqa: E402
from napari_mlffm.settings import SETTINGS  # noqa: E402

from .test_plugin import _dock, _propose, plugin_env  # noqa: E402, F401
from .test_refine_desk import _press  # noqa: E402


def _photo(path, seed: int):
    image = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(image).save(path)
    return image


def _desk(make_napari_viewer, qtbot, plugin_env, name="IMG_0001"):  # noqa: F811
    viewer = make_napari_viewer()
    propose, review = _dock(viewer, "Propose masks"), _dock(viewer, "Review and export")
    review.confirm = lambda *_: True
    folder = plugin_env["tmp"] / "clinic_a"
    folder.mkdir()
    image = _photo(folder / f"{name}.png", 0)
    layer = viewer.add_image(image, name=name, metadata={"source": str(folder / f"{name}.png")})
    _propose(qtbot, propose, layer)
    review.image.value = layer
    mask = results.case_layers(viewer, name)["mask"]
    edited = np.zeros(mask.data.shape, np.uint8)
    edited[10:30, 10:40] = 1
    mask.data = edited
    return viewer, propose, review, layer, edited


def test_a_mask_left_from_another_file_of_the_same_name_is_not_stored_with_the_new_photo(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer, _, review, layer, _ = _desk(make_napari_viewer, qtbot, plugin_env)
    viewer.layers.remove(layer)  # its edited mask stays
    other = plugin_env["tmp"] / "clinic_b"
    other.mkdir()
    image = _photo(other / "IMG_0001.png", 1)
    new = viewer.add_image(image, name="IMG_0001", metadata={"source": str(other / "IMG_0001.png")})
    review.reset_choices()
    review.image.value = new
    assert review.accept() is None
    assert "another file" in review.status.value
    review.export_folder.value = str(plugin_env["tmp"] / "out")
    assert review.export() is None
    assert not (plugin_env["store"] / "meta" / "IMG_0001.json").exists() and not (plugin_env["tmp"] / "out").exists()


def test_new_pixels_under_the_image_layer_refuse_accept_and_export_until_proposed_again(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer, propose, review, layer, _ = _desk(make_napari_viewer, qtbot, plugin_env)
    layer.data = np.random.default_rng(5).integers(0, 256, layer.data.shape, dtype=np.uint8)  # another photo, same size
    assert review.accept() is None and "pixels" in review.status.value
    review.export_folder.value = str(plugin_env["tmp"] / "out")
    assert review.export() is None and not (plugin_env["tmp"] / "out").exists()
    _propose(qtbot, propose, layer)  # proposed again: the edited mask is kept, and still belongs to the old pixels
    assert "kept" in propose.status.value and review.accept() is None and "pixels" in review.status.value
    review.start.value = "consensus"
    review.apply_start()  # the mask made again from the new proposal
    assert review.accept() is not None


def test_a_renamed_mask_layer_is_named_not_replaced_by_the_unedited_proposal(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer, _, review, layer, edited = _desk(make_napari_viewer, qtbot, plugin_env)
    results.case_layers(viewer, layer.name)["mask"].name = "IMG_0001 mask (mine)"
    review.export_folder.value = str(plugin_env["tmp"] / "out")
    assert review.export() is None and review.accept() is None
    assert "IMG_0001 mask (mine)" in review.status.value
    assert not (plugin_env["tmp"] / "out").exists() and not (plugin_env["store"] / "meta").exists()
    viewer.layers["IMG_0001 mask (mine)"].name = "IMG_0001 mask"
    assert review.accept() is not None
    stored = np.asarray(Image.open(plugin_env["store"] / "masks" / "IMG_0001.png")) > 0
    assert np.array_equal(stored, edited > 0)


def test_a_closed_edited_mask_comes_back_before_it_is_exported(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer, _, review, layer, edited = _desk(make_napari_viewer, qtbot, plugin_env)
    qtbot.waitUntil(lambda: review.cases.for_source(layer.metadata["source"]).edited, timeout=5000)  # the read-out's refresh
    viewer.layers.remove(results.case_layers(viewer, layer.name)["mask"])
    out = plugin_env["tmp"] / "out"
    review.export_folder.value = str(out)
    assert review.export() is None and "back with your edits" in review.status.value and not out.exists()
    back = results.case_layers(viewer, layer.name)["mask"]
    assert np.array_equal(np.asarray(back.data) > 0, edited > 0)
    assert review.export() is not None
    assert np.array_equal(np.asarray(Image.open(out / "IMG_0001_segmentation.png")) > 0, edited > 0)


def test_an_edited_mask_kept_through_another_models_proposal_keeps_its_own_provenance(make_napari_viewer, qtbot, plugin_env, tiny_segmenter):  # noqa: F811
    viewer, propose, review, layer, _ = _desk(make_napari_viewer, qtbot, plugin_env)
    first = results.case_layers(viewer, layer.name)["mask"].metadata[results.KEY]["checkpoint_id"]
    other = plugin_env["models"] / "other.mlffm"
    tiny_segmenter.with_options(probability_temperature=2.0).save(other)
    propose.model.reset_choices()
    propose.model.value = str(other)
    propose.seed.value = 7
    _propose(qtbot, propose, layer)
    assert "kept" in propose.status.value
    review.export_folder.value = str(plugin_env["tmp"] / "out")
    assert review.export() is not None
    record = json.loads((plugin_env["tmp"] / "out" / "IMG_0001.json").read_text())
    assert record["checkpoint_id"] == first and record["seed"] == 0  # what the edits started from
    assert record["later_proposal"]["seed"] == 7 and record["later_proposal"]["checkpoint_id"] != first
    assert record["image_sha256"] and record["threshold"] is not None and "flat_field" in record


def test_a_model_chosen_during_a_run_stays_chosen_when_the_run_lands(make_napari_viewer, qtbot, plugin_env, tiny_segmenter):  # noqa: F811
    viewer = make_napari_viewer()
    propose = _dock(viewer, "Propose masks")
    other = plugin_env["models"] / "other.mlffm"
    tiny_segmenter.save(other)
    propose.model.reset_choices()
    propose.model.value = str(other)
    propose.image.value = viewer.add_image(np.zeros((32, 32, 3), np.uint8) + np.arange(32, dtype=np.uint8)[:, None, None])
    assert propose.start() is not None
    propose.model.value = str(plugin_env["base"])  # chosen while it runs: nothing has landed yet (no events processed)
    qtbot.waitUntil(lambda: propose.worker is None, timeout=120_000)
    assert propose.model.value == str(plugin_env["base"])
    assert SETTINGS.get().active_model != str(other)


def test_keys_of_a_closed_dock_do_nothing_and_a_dock_opened_again_answers_them(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer, _, review, layer, _ = _desk(make_napari_viewer, qtbot, plugin_env)
    viewer.window.remove_dock_widget(review.native)  # what the dock's X does
    assert review._closed
    _press(viewer, "Shift-A")
    assert not (plugin_env["store"] / "meta" / "IMG_0001.json").exists()
    again = _dock(viewer, "Review and export")
    again.image.value = layer
    _press(viewer, "Shift-A")
    assert (plugin_env["store"] / "meta" / "IMG_0001.json").exists()
