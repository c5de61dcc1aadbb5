"""The "Refine with clicks" widget in real napari under Xvfb: clicks re-run the proposals, undo re-runs, Accept records."""

from __future__ import annotations

import json

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from model import Segmenter  # noqa: E402
from napari_mlffm import results  # noqa: E402
from napari_mlffm.settings import SETTINGS  # noqa: E402
from training.interactive.clicks import farthest_point  # noqa: E402
from training.interactive.protocol import resolve_mode  # noqa: E402

from .conftest import SAMPLES  # noqa: E402
from .test_plugin import PLUGIN, _dock, _propose, plugin_env  # noqa: E402, F401


def _wait_refined(qtbot, widget, text):
    qtbot.waitUntil(lambda: widget.worker is None and text in widget.status.value, timeout=120_000)


def test_clicks_refine_undo_reruns_and_accept_records_the_clicks(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    SETTINGS.update(active_model="", samples=2, steps=2)  # the shipped weights: a real lesion
    mode = resolve_mode(Segmenter.load(None, "cpu"), "auto")  # both (prompts + kept disks) for prompt weights, else kept
    viewer = make_napari_viewer()
    propose, review, refine = (_dock(viewer, n) for n in ("Propose masks", "Review and export", "Refine with clicks"))
    layer = viewer.open(str(sorted(SAMPLES.glob("*.jpg"))[0]), plugin=PLUGIN)[0]
    _propose(qtbot, propose, layer)
    found = results.case_layers(viewer, layer.name)
    first = np.asarray(found["mask"].data).copy()
    assert 0 < first.sum() < first.size

    refine.image.value = layer
    points = refine.prompts_layer()
    assert points.name == f"{layer.name} prompts" and points.mode == "add"
    # A positive click in the middle of the largest stretch of skin: the lesion must grow there.
    row, col, _ = farthest_point(first == 0)
    assert refine.positive.value
    points.add([row, col])
    _wait_refined(qtbot, refine, "refined with 1 lesion / 0 skin")
    refined = np.asarray(found["mask"].data)
    assert refined[row, col] == 1 and not np.array_equal(refined, first)
    assert found["proposals"].data.shape == (2, 512, 512) and all(s[row, col] == 1 for s in found["proposals"].data)
    assert f" s ({mode})" in refine.status.value  # the refine time, and how the clicks reached the model

    # T toggles the polarity; undo removes the newest click and re-runs.
    refine.toggle_polarity()
    assert not refine.positive.value and "skin" in refine.status.value
    refine.positive.value = True
    refine.undo_click()
    _wait_refined(qtbot, refine, "refined with 0 lesion / 0 skin")
    assert np.array_equal(np.asarray(found["mask"].data), first)  # same seed, no clicks, nothing painted: the first proposal

    # A painted edit is kept through the next refine; the click goes into the accepted record.
    points.add([row, col])
    review.image.value = layer
    assert review.step_outline(-1) is None and "a refine is running" in review.status.value  # it would be overwritten
    review.confirm = lambda title, question: True
    assert review.apply_start() is None and "Make mask when it ends" in review.status.value
    # What is painted while the refine runs is laid over its result, and held as painted from then on.
    during = np.asarray(found["mask"].data).copy()
    during[-10:, -10:] = 1 - during[-10:, -10:]
    found["mask"].data = during
    _wait_refined(qtbot, refine, "refined with 1 lesion")
    assert "the 100 px you painted meanwhile were kept" in refine.status.value
    assert np.array_equal(np.asarray(found["mask"].data)[-10:, -10:], during[-10:, -10:])
    assert "refining" not in found["mask"].metadata["mlffm"]
    painted = np.asarray(found["mask"].data).copy()
    painted[:12, :12] = 1 - painted[:12, :12]
    found["mask"].data = painted
    refine.refine()
    _wait_refined(qtbot, refine, "244 kept px")  # the 144 just painted and the 100 painted during the refine
    assert np.array_equal(np.asarray(found["mask"].data)[:12, :12], painted[:12, :12])
    review.image.value = layer
    assert review.accept() is not None
    record = json.loads((plugin_env["store"] / "meta" / f"{sorted(SAMPLES.glob('*.jpg'))[0].stem}.json").read_text())
    assert record["clicks"]["positive"] == [[float(row), float(col)]] and record["clicks"]["negative"] == []
    assert record["clicks"]["kept_pixels"] == 244 and record["clicks"]["mode"] == mode
    assert record["clicks"]["prior"] == (mode != "kept")
    assert record["clicks"]["reach"] is True  # on by default


def test_a_box_holds_skin_outside_it_the_newest_box_counts_and_accept_records_it(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    SETTINGS.update(active_model="", samples=2, steps=2)
    viewer = make_napari_viewer()
    propose, review, refine = (_dock(viewer, n) for n in ("Propose masks", "Review and export", "Refine with clicks"))
    path = sorted(SAMPLES.glob("*.jpg"))[0]
    layer = viewer.open(str(path), plugin=PLUGIN)[0]
    _propose(qtbot, propose, layer)
    found = results.case_layers(viewer, layer.name)
    first = np.asarray(found["mask"].data).copy()
    rows, cols = np.nonzero(first)
    # A box over the top-left part of the proposed lesion only: the mask must leave everything outside it.
    top, left = int(rows.min()), int(cols.min())
    bottom, right = (top + int(rows.max())) // 2, (left + int(cols.max())) // 2
    refine.image.value = layer
    boxes = refine.box_layer()
    assert boxes.name == f"{layer.name} box" and str(boxes.mode) == "add_rectangle"
    assert viewer.layers.selection.active.name == boxes.name  # the dock holds a proxy of the layer
    boxes.add_rectangles(np.array([[top, left], [bottom, right]], float))
    _wait_refined(qtbot, refine, "0 skin clicks in a box")
    boxed = np.asarray(found["mask"].data)
    inside = np.zeros_like(first, bool)
    inside[top:bottom, left:right] = True
    assert first[~inside].any() and not boxed[~inside].any() and boxed[inside].any()
    assert not np.asarray(found["proposals"].data)[:, ~inside].any()

    # A second box replaces the first (one box per image) and re-runs.
    boxes.add_rectangles(np.array([[0, 0], [first.shape[0], first.shape[1]]], float))
    qtbot.waitUntil(lambda: len(boxes.data) == 1, timeout=10_000)
    _wait_refined(qtbot, refine, "in a box")
    qtbot.waitUntil(lambda: refine.worker is None and np.asarray(found["mask"].data)[~inside].any(), timeout=120_000)

    review.image.value = layer
    assert review.accept() is not None
    record = json.loads((plugin_env["store"] / "meta" / f"{path.stem}.json").read_text())
    assert record["clicks"]["box"] == {"top": 0.0, "left": 0.0, "bottom": float(first.shape[0]), "right": float(first.shape[1])}
    assert record["clicks"]["mode"] == "kept"

    # A press without a drag (a box of a pixel or two) and an ellipse are no boxes: refused in one line, the box stays.
    whole = np.asarray(boxes.data[0]).copy()
    boxes.add_rectangles(np.array([[100.0, 200.0], [102.2, 202.2]]))
    assert "leaves less than 8 x 8 pixels" in refine.status.value and len(boxes.data) == 1 and refine.worker is None
    boxes.add_ellipses(np.array([[100.0, 100.0], [300.0, 300.0]]))
    assert "is not a box" in refine.status.value and len(boxes.data) == 1 and np.array_equal(boxes.data[0], whole)
    # The box shrunk to a press, moved off the image or turned is refused the same way, and goes back to where it was.
    tiny = np.array([[100.0, 200.0], [100.0, 202.0], [102.0, 202.0], [102.0, 200.0]])
    turned = np.array([[50.0, 150.0], [150.0, 250.0], [250.0, 150.0], [150.0, 50.0]])
    for edited, refusal in ((tiny, "leaves less than 8 x 8"), (tiny + 5000, "leaves less than 8 x 8"), (turned, "")):
        refine.status.value = ""
        boxes.data = [(edited, "rectangle")]
        assert refusal in refine.status.value and refine.status.value, refine.status.value
        assert len(boxes.data) == 1 and np.array_equal(boxes.data[0], whole) and refine.worker is None

    # A renamed box layer still counts; deleting it whole re-runs without the box.
    refine.box_layer()
    boxes.add_rectangles(np.array([[top, left], [bottom, right]], float))
    _wait_refined(qtbot, refine, "in a box")
    boxes.name = "my box"
    refine.refine()
    _wait_refined(qtbot, refine, "in a box")
    assert not np.asarray(found["mask"].data)[~inside].any()
    # A lesion click outside the box changes nothing, and the status line says so.
    points = refine.prompts_layer()
    points.add([bottom + 5, right + 5])
    _wait_refined(qtbot, refine, "1 lesion click outside the box had no effect")
    assert not np.asarray(found["mask"].data)[~inside].any()
    refine.undo_click()
    _wait_refined(qtbot, refine, "0 lesion")
    viewer.layers.remove(boxes.name)
    qtbot.waitUntil(lambda: refine.worker is None and "clicks," in refine.status.value and "in a box" not in refine.status.value, timeout=120_000)
    assert np.asarray(found["mask"].data)[~inside].any()

    # A box off the image is one line in the status and is not kept; so is a layer of another kind under the box's name.
    boxes = refine.box_layer()
    boxes.add_rectangles(np.array([[5000.0, 5000.0], [6000.0, 6000.0]]))
    assert "leaves less than 8 x 8" in refine.status.value and len(boxes.data) == 0 and refine.worker is None
    viewer.layers.remove(boxes.name)
    viewer.add_points(np.array([[10.0, 10.0]]), name=f"{layer.name} box")
    assert refine.start() is None and "is not a Shapes layer" in refine.status.value
    assert refine._guard(refine.box_layer) is None and "is not a Shapes layer" in refine.status.value



def test_closing_the_viewer_starts_no_refine(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    """napari's Viewer.close() removes every layer, the box and clicks layers first: that is no box or click undone.

    It started a refine at close (python -m napari_mlffm --screenshot ended with "RuntimeWarning:
    RuntimeError in aborted thread"); deleting the box or clicks layer alone still re-runs (above).
    """
    SETTINGS.update(active_model="", samples=2, steps=2)
    viewer = make_napari_viewer()
    propose, refine = (_dock(viewer, n) for n in ("Propose masks", "Refine with clicks"))
    layer = viewer.open(str(sorted(SAMPLES.glob("*.jpg"))[0]), plugin=PLUGIN)[0]
    _propose(qtbot, propose, layer)
    rows, cols = np.nonzero(np.asarray(results.case_layers(viewer, layer.name)["mask"].data))
    refine.image.value = layer
    refine.auto.value = False  # the click and the box wait for one refine
    refine.prompts_layer().add([rows.mean(), cols.mean()])
    refine.box_layer().add_rectangles(np.array([[rows.min(), cols.min()], [rows.max(), cols.max()]], float))
    refine.refine()
    _wait_refined(qtbot, refine, "in a box")
    refine.auto.value = True
    viewer.layers.clear()  # what Viewer.close() does before it closes the window
    assert refine.worker is None
    qtbot.wait(200)
    assert refine.worker is None and "refining" not in refine.status.value

def test_a_refine_dock_opened_again_takes_over_the_clicks_layer(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    SETTINGS.update(active_model="", samples=2, steps=2)
    viewer = make_napari_viewer()
    propose = _dock(viewer, "Propose masks")
    dock, refine = viewer.window.add_plugin_dock_widget(PLUGIN, "Refine with clicks")
    layer = viewer.open(str(sorted(SAMPLES.glob("*.jpg"))[0]), plugin=PLUGIN)[0]
    _propose(qtbot, propose, layer)
    refine.image.value = layer
    points = refine.prompts_layer()
    viewer.window.remove_dock_widget(dock)  # napari keeps the old widget alive, undocked: it must not refine too
    again = _dock(viewer, "Refine with clicks")
    assert again is not refine and again.image.value.name == layer.name  # the proposed image, not its uncertainty map
    again.image.value = layer  # choosing the image takes its clicks layer over, before any button is pressed
    first = np.asarray(results.case_layers(viewer, layer.name)["mask"].data).copy()
    row, col, _ = farthest_point(first == 0)
    points.add([row, col])
    _wait_refined(qtbot, again, "refined with 1 lesion / 0 skin")
    assert np.asarray(results.case_layers(viewer, layer.name)["mask"].data)[row, col] == 1
    assert refine.worker is None and "refined" not in refine.status.value
    assert again.prompts_layer().name == points.name and len(viewer.layers) == 5  # the same layer, not a second one

    # Renamed, the clicks layer still counts: its clicks are not dropped.
    points.name = "my clicks"
    refine_row, refine_col = farthest_point(np.asarray(results.case_layers(viewer, layer.name)["mask"].data) == 0)[:2]
    points.add([refine_row, refine_col])
    _wait_refined(qtbot, again, "refined with 2 lesion / 0 skin")

    # An unfinished polygon in an empty box layer says "added" with no shape: nothing happens.
    boxes = again.box_layer()
    boxes.events.data(value=boxes.data, action="added", data_indices=(-1,), vertex_indices=((),))
    assert again.worker is None

    # Another kind of layer under the clicks layer's name: one line, no traceback, from Refine and from T.
    viewer.layers.remove(points.name)
    qtbot.waitUntil(lambda: again.worker is None, timeout=120_000)
    viewer.add_points(np.array([[10.0, 10.0]]), name=f"{layer.name} prompts")
    assert again.start() is None and "is not a clicks layer" in again.status.value
    again.toggle_polarity()
    assert "next click" in again.status.value


def test_a_refine_draws_fewer_proposals_unless_asked_for_as_many_as_the_proposal(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    SETTINGS.update(active_model="", samples=10, steps=1)  # more than the shipped weights' refine default (8)
    fewer = Segmenter.load(None, "cpu").config.default_refine_samples
    assert fewer < 10
    viewer = make_napari_viewer()
    propose, refine = (_dock(viewer, n) for n in ("Propose masks", "Refine with clicks"))
    layer = viewer.open(str(sorted(SAMPLES.glob("*.jpg"))[0]), plugin=PLUGIN)[0]
    _propose(qtbot, propose, layer)
    found = results.case_layers(viewer, layer.name)
    assert len(found["proposals"].data) == 10
    refine.image.value = layer
    points = refine.prompts_layer()
    row, col, _ = farthest_point(np.asarray(found["mask"].data) == 0)
    points.add([row, col])
    _wait_refined(qtbot, refine, f"{fewer} proposals in")
    found["proposals"].visible = False  # as in the layout the plugin opens: the proposals are hidden, the slider still follows them
    points.add([row + 1, col])
    _wait_refined(qtbot, refine, "refined with 2 lesion")
    assert len(found["proposals"].data) == fewer and viewer.dims.nsteps[0] == fewer  # the proposals slider follows the new length
    assert not found["proposals"].visible
    assert found["mask"].metadata[results.KEY]["clicks"]["samples"] == fewer
    refine.per_refine.value = refine.per_refine.choices[1]  # as many as the proposal
    refine.refine()
    _wait_refined(qtbot, refine, "10 proposals in")
    assert len(found["proposals"].data) == 10
    refine.per_refine.value = refine.per_refine.choices[0]
    refine.undo_click()
    _wait_refined(qtbot, refine, f"refined with 1 lesion / 0 skin clicks, 0 kept px, {fewer} proposals in")
    assert viewer.dims.nsteps[0] == fewer
    refine.undo_click()  # no clicks left: the first proposal again, as many as it drew
    _wait_refined(qtbot, refine, "0 lesion / 0 skin clicks, 0 kept px, 10 proposals in")
    assert len(found["proposals"].data) == 10


def test_proposing_again_with_fewer_samples_shortens_the_hidden_proposals_slider(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    SETTINGS.update(active_model="", samples=4, steps=1)
    viewer = make_napari_viewer()
    propose = _dock(viewer, "Propose masks")
    layer = viewer.open(str(sorted(SAMPLES.glob("*.jpg"))[0]), plugin=PLUGIN)[0]
    _propose(qtbot, propose, layer)
    found = results.case_layers(viewer, layer.name)
    assert not found["proposals"].visible and viewer.dims.nsteps[0] == 4  # the plugin adds the proposals hidden
    propose.samples.value = 2
    _propose(qtbot, propose, layer)
    assert len(found["proposals"].data) == 2 and viewer.dims.nsteps[0] == 2
    assert not found["proposals"].visible
