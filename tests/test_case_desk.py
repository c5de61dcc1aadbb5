"""The review desk in real napari: one case model across Propose, Review and Cases; progress, cancel, outline, dialogs, curves."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari_mlffm import cases_model, results  # noqa: E402

from .conftest import SAMPLES, SMALL_DATA  # noqa: E402
from .test_plugin import _dock, _propose, plugin_env  # noqa: E402,F401


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "cases"
    folder.mkdir()
    for path in sorted((SMALL_DATA / "images").glob("*.jpg"))[:3]:
        shutil.copy(path, folder / path.name)
    return folder


def _states(cases):
    return [cases.state(c) for c in cases.cases]


def test_one_case_model_across_the_widgets(make_napari_viewer, qtbot, plugin_env, folder):
    viewer = make_napari_viewer()
    propose, review, cases = (_dock(viewer, n) for n in ("Propose masks", "Review and export", "Cases"))
    assert propose.cases is review.cases is cases.model is cases_model.for_viewer(viewer)
    cases.open_folder(folder)
    cases.step(1)
    first = cases.cases[0]
    assert _states(cases) == ["new"] * 3 and len(viewer.layers) == 1

    # A Run from Propose masks belongs to the case on screen: the list says so, and Propose all skips it.
    _propose(qtbot, propose, viewer.layers[first.path.stem])
    assert _states(cases) == ["proposed", "new", "new"]
    assert "[proposed]" in cases.list.item(0).text()
    proposal_of_first = first.proposal
    calls = []
    original = cases.model.set_proposal
    cases.model.set_proposal = lambda source, *a, **k: (calls.append(source), original(source, *a, **k))[1]
    cases.propose_or_cancel()
    qtbot.waitUntil(lambda: cases.worker is None, timeout=120_000)
    assert sorted(calls) == sorted(c.source for c in cases.cases[1:])
    assert cases.cases[0].proposal is proposal_of_first and _states(cases) == ["proposed"] * 3

    # Edit the shown mask, step on and back: proposals and the edited mask come back; the list says 'edited'.
    mask = results.case_layers(viewer, first.path.stem)["mask"]
    edited = mask.data.copy()
    edited[:8, :8] = 1 - edited[:8, :8]
    mask.data = edited
    cases.step(1)
    assert _states(cases)[0] == "edited" and "[edited]" in cases.list.item(0).text()
    shown = results.case_layers(viewer, cases.cases[1].path.stem)
    assert shown["proposals"] is not None and shown["mask"] is not None  # Propose all's proposal is on screen
    cases.step(-1)
    back = results.case_layers(viewer, first.path.stem)
    assert back["proposals"] is not None and np.array_equal(back["proposals"].data > 0, proposal_of_first.samples)
    assert np.array_equal(back["mask"].data, edited) and results.mask_edited(back["mask"])

    # Shift-A accepts and the list follows at once.
    review.image.value = viewer.layers[first.path.stem]
    from app_model.types import KeyBinding

    viewer.keymap[KeyBinding.from_str("Shift+A")](viewer)
    assert _states(cases)[0] == "accepted" and "[accepted]" in cases.list.item(0).text()

    # Propose all skips accepted and proposed cases; with 'redo' it proposes them all again.
    calls.clear()
    cases.propose_or_cancel()
    assert cases.worker is None and calls == [] and "nothing to propose" in cases.status.value
    cases.redo.value = True
    cases.propose_or_cancel()
    qtbot.waitUntil(lambda: cases.worker is None, timeout=120_000)
    assert len(calls) == 3
    assert np.array_equal(results.case_layers(viewer, first.path.stem)["mask"].data, edited)  # an edited mask is kept


def test_an_accepted_case_reopens_with_its_stored_mask_and_record(make_napari_viewer, qtbot, plugin_env, folder):
    viewer = make_napari_viewer()
    propose, review, cases = (_dock(viewer, n) for n in ("Propose masks", "Review and export", "Cases"))
    cases.open_folder(folder)
    cases.step(1)
    name = cases.cases[0].path.stem
    _propose(qtbot, propose, viewer.layers[name])
    mask = results.case_layers(viewer, name)["mask"]
    painted = np.zeros_like(mask.data)
    h, w = painted.shape
    painted[h // 4: h // 2, w // 4: 3 * w // 4] = 1
    area = int(painted.sum())
    assert area > 0
    mask.data = painted
    review.image.value = viewer.layers[name]
    assert review.accept() is not None
    viewer.close()

    # A new session: nothing in memory, the store has the case.
    cases_model._MODELS.clear()
    viewer = make_napari_viewer()
    cases = _dock(viewer, "Cases")
    review = _dock(viewer, "Review and export")
    cases.open_folder(folder)
    assert _states(cases) == ["accepted", "new", "new"]
    cases.step(1)
    reopened = results.case_layers(viewer, name)["mask"]
    assert reopened is not None and np.array_equal(reopened.data > 0, painted > 0)
    state = reopened.metadata["mlffm"]
    assert state["start"] == "accepted" and state["record"]["id"] == name and state["accepted"]
    review.image.value = viewer.layers[name]
    review.update_readout()
    assert review.readout.value.startswith(f"area {area} px")


def test_read_out_follows_paint_and_erase_and_the_mask_is_an_outline(make_napari_viewer, qtbot, plugin_env):
    viewer = make_napari_viewer()
    propose, review = (_dock(viewer, n) for n in ("Propose masks", "Review and export"))
    layer = viewer.open(str(sorted(SAMPLES.glob("*.jpg"))[0]), plugin="napari-mlffm")[0]
    _propose(qtbot, propose, layer)
    review.image.value = layer
    mask = results.case_layers(viewer, layer.name)["mask"]
    assert mask.contour == results.OUTLINE_PX and mask.opacity == 1.0  # outline by default
    review.outline.value = False
    assert mask.contour == 0
    review.outline.value = True
    mask.data = np.zeros_like(mask.data)
    qtbot.waitUntil(lambda: review.readout.value.startswith("area 0 px"), timeout=5_000)
    mask.brush_size = 10
    mask.paint((256, 256), 1)  # a brush stroke
    qtbot.waitUntil(lambda: not review.readout.value.startswith("area 0 px") and review.readout.value.startswith("area"), timeout=5_000)
    painted_area = int((mask.data > 0).sum())
    assert review.readout.value.startswith(f"area {painted_area} px")
    mask.paint((256, 256), 0)  # erase
    qtbot.waitUntil(lambda: review.readout.value.startswith(f"area {int((mask.data > 0).sum())} px"), timeout=5_000)
    assert int((mask.data > 0).sum()) < painted_area
    assert review.cases.state(review.cases.case(layer.metadata["source"])) == "edited"


def test_dialogs_name_every_file_they_replace(make_napari_viewer, qtbot, plugin_env):
    viewer = make_napari_viewer()
    propose, review = (_dock(viewer, n) for n in ("Propose masks", "Review and export"))
    layer = viewer.open(str(sorted(SAMPLES.glob("*.jpg"))[0]), plugin="napari-mlffm")[0]
    _propose(qtbot, propose, layer)
    review.image.value = layer
    review.export_folder.value = str(plugin_env["tmp"] / "export")
    assert review.export()
    asked = []
    review.confirm = lambda title, question: asked.append(question) or False
    assert review.export() is None
    for suffix in ("_segmentation.png", "_probability.tif", "_uncertainty.tif", ".json"):
        assert f"{layer.name}{suffix}" in asked[-1]
    assert "--overwrite" not in asked[-1]
    assert review.accept() is not None
    assert review.accept() is None
    assert all(f"{layer.name}.{ext}" in asked[-1] for ext in ("png", "json")) and "--overwrite" not in asked[-1]


def test_progress_in_the_widget_and_cancel_shows_at_once(make_napari_viewer, qtbot, plugin_env):
    from napari.utils import progress

    viewer = make_napari_viewer()
    propose = _dock(viewer, "Propose masks")
    layer = viewer.open(str(sorted(SAMPLES.glob("*.jpg"))[0]), plugin="napari-mlffm")[0]
    propose.image.value = layer
    propose.samples.value, propose.steps.value = 4, 250
    worker = propose.start()
    seen = []
    worker.yielded.connect(lambda step: seen.append((step, len(progress._all_instances), propose._progress.label.text())))
    qtbot.waitUntil(lambda: len(seen) >= 3, timeout=60_000)
    assert not propose._progress.isHidden() and propose._progress.label.text().startswith("step ")
    assert all(n == 0 for _, n, _ in seen)  # napari's activity progress is not used during a run
    propose.run_or_cancel()  # Cancel
    assert propose.run_button.text == "Cancelling..." and not propose.run_button.enabled
    propose.run_or_cancel()  # a second click while cancelling neither cancels again nor starts a run
    assert propose.worker is worker
    steps_at_cancel = len(seen)
    qtbot.waitUntil(lambda: propose.worker is None, timeout=60_000)
    assert len(seen) <= steps_at_cancel + 1  # stops within one DDIM step
    assert propose.run_button.text == "Run" and propose.run_button.enabled and propose._progress.isHidden()
    assert propose._progress.updates_shown < len(seen) or len(seen) <= 2  # throttled


def test_fine_tune_curve_autoscales_and_says_how_many_were_held_out(qtbot):
    from napari_mlffm._qt.curves import TrainingCurves

    curves = TrainingCurves()
    qtbot.addWidget(curves)
    curves.add_point(0, float("nan"), 0.962)
    curves.add_point(1, 0.12, 0.970)
    curves.set_held_out(7)
    (loss_low, loss_high), (dice_low, dice_high) = curves.scales()
    assert 0.95 < dice_low < 0.962 and 0.970 < dice_high < 0.98
    assert loss_low >= 0 and loss_high > 0.12
    curves.resize(300, 140)
    assert curves.grab().width() == 300
    from napari_mlffm._qt.finetune import HELD_OUT

    assert HELD_OUT.search("fine-tuning on 12 cases (+0 replay), held out 3; val Dice before: 0.9").group(1) == "3"


def test_long_paths_show_their_tail():
    from napari_mlffm._qt.common import path_tail

    tail = path_tail("/home/someone/very/long/folder/names/for/exports/of/the/day/2026-12-01", 40)
    assert tail.startswith("…/") and tail.endswith("/day/2026-12-01") and len(tail) <= 40
    assert path_tail("/short") == "/short"


def test_the_fine_tune_child_runs_at_the_main_threads_priority_not_the_worker_threads():
    import os
    import sys
    import threading

    from napari_mlffm._qt.finetune import finetune_job

    main_nice = os.getpriority(os.PRIO_PROCESS, os.getpid())
    printed = []

    def worker() -> None:  # a worker thread niced further, as a thread pool may be
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(main_nice + 5, 19))
        job = finetune_job([sys.executable, "-c", "import os; print(os.nice(0))"], {})
        try:
            while True:
                printed.append(next(job))
        except StopIteration as stop:
            printed.append(stop.value)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(60)
    assert printed[0] == ("line", str(main_nice)) and printed[-1][0] == 0


def test_painted_pixels_and_the_outline_level_survive_stepping_away_and_back(make_napari_viewer, plugin_env, folder):  # noqa: F811
    from model import Proposal
    from training.data.imageio import read_image

    viewer = make_napari_viewer()
    review, cases = _dock(viewer, "Review and export"), _dock(viewer, "Cases")
    cases.open_folder(folder)
    entry = cases.cases[0]
    height, width = read_image(entry.path).shape[:2]
    rows, cols = np.mgrid[:height, :width]
    cone = np.clip(1 - np.hypot(rows - height / 2, cols - width / 2) / (min(height, width) / 2), 0, 1).astype(np.float32)
    proposal = Proposal(samples=(cone >= 0.5)[None].repeat(2, 0), probability=cone, uncertainty=np.zeros_like(cone), threshold=0.5)
    cases.model.set_proposal(entry.source, proposal, {"source": str(entry.path)})

    def shown_mask():
        layer = viewer.layers[entry.path.stem]
        review.image.value = layer
        return results.case_layers(viewer, layer.name)["mask"]

    cases.show_case(0)
    mask = shown_mask()
    pixel = tuple(np.argwhere((cone > 0.465) & (cone < 0.475))[0])  # skin at the 0.50 cut, lesion at 0.45
    data = mask.data.copy()
    data[pixel] = 1
    mask.data = data
    review.step_outline(-1)  # 0.45: the painted pixel now agrees with the cut
    cases.step(1)
    cases.step(-1)
    mask = shown_mask()
    assert mask.metadata["mlffm"]["level"] == pytest.approx(0.45)
    review.step_outline(1)
    review.step_outline(1)  # 0.55: the pixel is still painted, so it stays lesion
    assert mask.metadata["mlffm"]["level"] == pytest.approx(0.55) and mask.data[pixel] == 1
