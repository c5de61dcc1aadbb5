"""A hurried annotator at the Refine and Review docks, in real napari under Xvfb: the keys act on the image
being worked on, held strokes stay the annotator's, two refines of one image never meet, and clicks land
where they were put."""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari_mlffm import cases_model, results  # noqa: E402
from napari_mlffm._qt import refine as refine_module  # noqa: E402

from .test_plugin import _dock, _propose, plugin_env  # noqa: E402, F401


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def _idle(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)


def _slow_refines(monkeypatch) -> threading.Event:
    """Refines wait until the returned event is set: a refine that is still running."""
    release, real = threading.Event(), refine_module.refine_job

    def slow(*args, **kwargs):
        while not release.is_set():
            time.sleep(0.01)
            yield (0, 1)
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(refine_module, "refine_job", slow)
    return release


def _desk(make_napari_viewer, qtbot, names=("a",)):
    viewer = make_napari_viewer()
    propose, review, refine = (_dock(viewer, n) for n in ("Propose masks", "Review and export", "Refine with clicks"))
    layers = [viewer.add_image(_image(i), name=name) for i, name in enumerate(names)]
    for layer in layers:
        _propose(qtbot, propose, layer)
    refine.auto.value = False
    review.confirm = lambda *_: True
    return viewer, propose, review, refine, layers


def _press(viewer, key: str):
    from app_model.types import KeyBinding

    for bound, action in viewer.keymap.items():
        if str(bound) == str(KeyBinding.from_str(key)):
            return action(viewer)
    raise AssertionError(f"{key} is not bound")


def test_review_keys_act_on_the_image_whose_layer_is_selected(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer, _, review, refine, (a, b) = _desk(make_napari_viewer, qtbot, ("a", "b"))
    review.image.value = a
    refine.image.value = b
    refine.prompts_layer().add([40, 40])  # the clicks layer is selected: both docks follow to b
    assert review.image.value is b or review.image.value == b
    viewer.layers.selection.active = results.case_layers(viewer, "b")["mask"]
    _press(viewer, "Shift-G")
    _press(viewer, "Shift-A")
    assert (plugin_env["store"] / "meta" / "b.json").exists()
    assert not (plugin_env["store"] / "meta" / "a.json").exists()  # it used to accept a, the Review tab's first image


def test_strokes_a_refine_held_keep_the_case_edited_through_a_new_proposal(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer, propose, review, refine, (a,) = _desk(make_napari_viewer, qtbot)
    mask = results.case_layers(viewer, "a")["mask"]
    data = np.asarray(mask.data).copy()
    data[:10, :10] = 1 - data[:10, :10]
    mask.data = data
    painted = data[:10, :10].copy()
    refine.image.value = a
    refine.refine()
    _idle(qtbot, refine)
    assert "100 kept px" in refine.status.value
    cases = cases_model.for_viewer(viewer)
    qtbot.waitUntil(lambda: cases.state(cases.for_source("a")) == "edited", timeout=5_000)  # it said "proposed"
    propose.seed.value = 9
    _propose(qtbot, propose, a)
    assert np.array_equal(np.asarray(mask.data)[:10, :10], painted)  # a new proposal replaced the held strokes
    review.image.value = a
    review.accept()
    import json

    record = json.loads((plugin_env["store"] / "meta" / "a.json").read_text())
    assert record["edited_pixels"] >= 100  # it said 0 beside 100 kept pixels


def test_refine_refuses_a_mask_layer_propose_did_not_make(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer = make_napari_viewer()
    refine = _dock(viewer, "Refine with clicks")
    a = viewer.add_image(_image(), name="a")
    hand = np.zeros((64, 64), np.uint8)
    hand[20:40, 20:40] = 1
    mask = viewer.add_labels(hand.copy(), name="a mask")
    refine.image.value = a
    assert refine.refine() is None
    assert "was not made by Propose masks" in refine.status.value
    assert np.array_equal(np.asarray(mask.data), hand)  # a refine with the shipped weights replaced it


def test_a_second_refine_of_one_image_waits_even_from_a_dock_opened_again(make_napari_viewer, qtbot, plugin_env, monkeypatch):  # noqa: F811
    viewer, propose, _, refine, (a,) = _desk(make_napari_viewer, qtbot)
    release = _slow_refines(monkeypatch)
    refine.image.value = a
    refine.prompts_layer().add([40, 40])
    assert refine.refine() is not None
    viewer.window.remove_dock_widget(refine.native)
    again = _dock(viewer, "Refine with clicks")
    again.image.value = a
    again.auto.value = False
    assert again.refine() is None and "a refine of a is running" in again.status.value
    viewer.layers.remove("a mask")  # deleted and proposed again during the refine: Propose waits too
    propose.seed.value = 5
    propose.image.value = a
    assert propose.start() is None
    release.set()
    _idle(qtbot, refine)
    assert "painted meanwhile" not in refine.status.value + again.status.value


def test_the_result_lands_only_on_the_mask_it_started_from(make_napari_viewer, qtbot, plugin_env, monkeypatch):  # noqa: F811
    viewer, propose, _, refine, (a,) = _desk(make_napari_viewer, qtbot)
    release = _slow_refines(monkeypatch)
    refine.image.value = a
    refine.prompts_layer().add([40, 40])
    refine.refine()
    old = viewer.layers["a mask"]
    viewer.layers.remove(old)
    replacement = viewer.add_labels(np.zeros((64, 64), np.uint8), name="a mask", metadata={"mlffm": {"source": "a"}})
    release.set()
    _idle(qtbot, refine)
    assert "made again during the refine; refine dropped" in refine.status.value
    assert not np.asarray(replacement.data).any()


def test_the_next_click_has_the_polarity_the_dock_shows_on_every_image(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer, _, _, refine, (a, b) = _desk(make_napari_viewer, qtbot, ("a", "b"))
    refine.image.value = a
    clicks_a = refine.prompts_layer()
    refine.image.value = b
    refine.prompts_layer()
    refine.toggle_polarity()
    refine.image.value = a
    assert refine.positive.value is False
    clicks_a.add([10, 10])
    assert list(clicks_a.features["positive"]) == [False]  # it was recorded as lesion


def test_clicks_follow_the_image_when_it_is_moved_or_scaled(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer, _, _, refine, (a,) = _desk(make_napari_viewer, qtbot)
    refine.image.value = a
    clicks = refine.prompts_layer()
    a.scale = (2, 2)
    a.translate = (5, -3)
    assert np.allclose(clicks.scale, (2, 2)) and np.allclose(clicks.translate, (5, -3))
    assert np.allclose(results.case_layers(viewer, "a")["mask"].scale, (2, 2))
    clicks.add(clicks.world_to_data(np.array([45.0, 37.0])))  # world (45, 37) is image pixel (20, 20)
    assert np.allclose(clicks.data[0], [20, 20])


def test_ctrl_z_after_a_plugin_write_does_not_paint_old_values_back(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer, _, review, refine, (a,) = _desk(make_napari_viewer, qtbot)
    mask = results.case_layers(viewer, "a")["mask"]
    review.image.value = a
    mask.selected_label = 1
    mask.paint((5, 5), 1)
    refine.image.value = a
    refine.prompts_layer().add([40, 40])
    refine.refine()
    _idle(qtbot, refine)
    review.step_outline(-1)
    grown = np.asarray(mask.data).copy()
    mask.undo()
    assert np.array_equal(np.asarray(mask.data), grown)  # 97 px of an older stroke's values came back


def test_a_click_on_another_image_during_a_refine_is_refined_after_it(make_napari_viewer, qtbot, plugin_env, monkeypatch):  # noqa: F811
    viewer, _, _, refine, (a, b) = _desk(make_napari_viewer, qtbot, ("a", "b"))
    refine.auto.value = True
    release = _slow_refines(monkeypatch)
    refine.image.value = a
    refine.prompts_layer().add([40, 40])
    refine.image.value = b
    refine.prompts_layer().add([20, 20])
    refine.image.value = a
    release.set()
    qtbot.waitUntil(lambda: results.case_layers(viewer, "b")["mask"].metadata["mlffm"].get("clicks") is not None, timeout=120_000)
    _idle(qtbot, refine)


def test_undoing_the_only_click_of_a_renamed_clicks_layer_re_runs(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer, _, _, refine, (a,) = _desk(make_napari_viewer, qtbot)
    refine.auto.value = True
    refine.image.value = a
    clicks = refine.prompts_layer()
    clicks.add([40, 40])
    qtbot.waitUntil(lambda: "1 lesion" in refine.status.value, timeout=120_000)
    clicks.name = "my clicks"
    refine.undo_click()
    qtbot.waitUntil(lambda: "0 lesion" in refine.status.value, timeout=120_000)


def test_undoing_the_last_click_leaves_the_empty_layer_without_a_colour_warning(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    """Recolouring an empty clicks layer made napari warn of 'illegal values' and reset the colours to white."""
    viewer, _, _, refine, (a,) = _desk(make_napari_viewer, qtbot)
    refine.image.value = a
    clicks = refine.prompts_layer()
    clicks.add([40, 40])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        refine.undo_click()
    assert len(clicks.data) == 0
    clicks.add([20, 20])  # the next click still takes the polarity's colour
    assert refine.clicks().positive == ((20.0, 20.0),)


@pytest.mark.parametrize("odd", ["False", "skin", float("nan"), 2])
def test_a_click_table_edited_to_odd_values_is_refused_not_read_as_lesion(make_napari_viewer, qtbot, plugin_env, odd):  # noqa: F811
    viewer, _, _, refine, (a,) = _desk(make_napari_viewer, qtbot)
    refine.image.value = a
    clicks = refine.prompts_layer()
    clicks.add([40, 40])
    clicks.features = {"positive": [odd]}
    assert refine.refine() is None
    assert "'positive' column holds" in refine.status.value


def test_deleting_the_clicks_layer_refines_without_its_clicks(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer, _, _, refine, (a,) = _desk(make_napari_viewer, qtbot)
    refine.auto.value = True
    refine.image.value = a
    refine.prompts_layer().add([40, 40])
    qtbot.waitUntil(lambda: "1 lesion" in refine.status.value, timeout=120_000)
    viewer.layers.remove("a prompts")
    qtbot.waitUntil(lambda: "0 lesion / 0 skin" in refine.status.value, timeout=120_000)
    assert results.case_layers(viewer, "a")["mask"].metadata["mlffm"]["clicks"]["positive"] == []


def test_accept_refuses_an_outline_that_was_never_filled(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    """A lesion drawn round with the brush and not filled: training would leave it out, so Accept says so now."""
    viewer, _, review, _, (a,) = _desk(make_napari_viewer, qtbot)
    mask = results.case_layers(viewer, "a")["mask"]
    ring = np.zeros((64, 64), np.uint8)
    ring[10:54, 10:54] = 1
    ring[12:52, 12:52] = 0
    mask.data = ring
    review.image.value = a
    assert review.accept() is None
    assert "not accepted: mask is an outline" in review.status.value and "fill holes" in review.status.value
    assert not (plugin_env["store"] / "meta" / "a.json").exists()
    review.fill_holes.value, review.largest.value = True, False
    review.apply_clean()
    assert review.accept() is not None and (plugin_env["store"] / "meta" / "a.json").exists()


def test_clicks_during_a_refine_re_run_it_once(make_napari_viewer, qtbot, plugin_env, monkeypatch):  # noqa: F811
    """Layers reach a dock through proxies, a new one at each access: the queue must still know one image."""
    viewer, _, _, refine, (a,) = _desk(make_napari_viewer, qtbot)
    calls, release, real = [], threading.Event(), refine_module.refine_job

    def counted(*args, **kwargs):
        calls.append(1)
        while not release.is_set():
            time.sleep(0.01)
            yield (0, 1)
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(refine_module, "refine_job", counted)
    refine.auto.value = True
    refine.image.value = a
    clicks = refine.prompts_layer()
    for point in ([40, 40], [30, 30], [20, 20], [10, 10]):
        clicks.add(point)
    assert len(refine._pending) == 1
    release.set()
    qtbot.waitUntil(lambda: refine.worker is None and len(calls) == 2 and "4 lesion" in refine.status.value, timeout=120_000)
    qtbot.wait(300)
    assert len(calls) == 2  # it ran once per click


def test_a_proposal_landing_for_another_image_leaves_the_selection_and_the_review(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer, propose, review, _, (a, b) = _desk(make_napari_viewer, qtbot, ("a", "b"))
    a_mask = results.case_layers(viewer, "a")["mask"]
    viewer.layers.selection.active = a_mask
    assert review.image.value == a
    propose.seed.value = 7
    _propose(qtbot, propose, b)  # started for b; the annotator went on reviewing a meanwhile
    assert review.image.value == a and viewer.layers.selection.active == a_mask
    _press(viewer, "Shift-A")
    assert (plugin_env["store"] / "meta" / "a.json").exists() and not (plugin_env["store"] / "meta" / "b.json").exists()
