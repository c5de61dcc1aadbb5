"""Which image a case, a mask or a click belongs to, in real napari: files of one name, dotted layer names, odd layers."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

napari = pytest.importorskip("napari")

from napari_mlffm import cases_model, results  # noqa: E402
from napari_mlffm.writer import write_labels  # noqa: E402

from .test_cases_and_models import _edit_first_case  # noqa: E402
from .test_plugin import PLUGIN, _dock, _propose, plugin_env  # noqa: E402, F401


def _rgb(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _two_files_named_alike(tmp_path):
    for folder, seed in (("patientA", 1), ("patientB", 2)):
        (tmp_path / folder).mkdir()
        Image.fromarray(_rgb(seed)).save(tmp_path / folder / "IMG_0001.png")
    return tmp_path / "patientA" / "IMG_0001.png", tmp_path / "patientB" / "IMG_0001.png"


def test_a_file_of_the_same_name_in_another_folder_never_gets_the_other_s_proposal(make_napari_viewer, qtbot, plugin_env, tmp_path):  # noqa: F811
    viewer = make_napari_viewer()
    propose, review = _dock(viewer, "Propose masks"), _dock(viewer, "Review and export")
    review.confirm = lambda title, question: True
    path_a, path_b = _two_files_named_alike(tmp_path)
    a = viewer.open(str(path_a), plugin=PLUGIN)[0]
    b = viewer.open(str(path_b), plugin=PLUGIN)[0]
    _propose(qtbot, propose, b)
    review.image.value = a
    assert review.accept() is None  # patient B's proposal used to be put on A's image and stored as A's
    assert results.case_layers(viewer, a.name)["mask"] is None and "no mask for" in review.status.value
    # A's own proposal is A's; B's layers stay B's
    _propose(qtbot, propose, a)
    mask_a = results.case_layers(viewer, a.name)["mask"]
    assert mask_a.metadata[results.KEY]["source"] == str(path_a.absolute())
    assert results.case_layers(viewer, b.name)["mask"].metadata[results.KEY]["source"] == str(path_b.absolute())
    model = cases_model.for_viewer(viewer)
    assert model.for_source(str(path_a.absolute())) is not None and model.for_source(str(path_b.absolute())) is None


def test_an_edited_mask_left_by_another_file_of_the_same_name_is_refused_not_kept(make_napari_viewer, qtbot, plugin_env, tmp_path):  # noqa: F811
    viewer = make_napari_viewer()
    propose = _dock(viewer, "Propose masks")
    path_a, path_b = _two_files_named_alike(tmp_path)
    first = viewer.open(str(path_a), plugin=PLUGIN)[0]
    _propose(qtbot, propose, first)
    mask = results.case_layers(viewer, "IMG_0001")["mask"]
    edited = np.asarray(mask.data).copy()
    edited[:10, :10] = 1
    mask.data = edited
    viewer.layers.remove(first)  # its result layers stay
    second = viewer.open(str(path_b), plugin=PLUGIN)[0]
    assert second.name == "IMG_0001"
    propose.image.value = second
    worker = propose.start()
    qtbot.waitUntil(lambda: propose.worker is None, timeout=120_000)
    assert worker is not None and "holds edits made on another file" in propose.status.value  # was: "your edited mask was kept"
    assert np.array_equal(np.asarray(mask.data), edited)  # and the edits are not thrown away


def test_layer_names_that_differ_after_a_dot_are_two_cases(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer = make_napari_viewer()
    propose, review = _dock(viewer, "Propose masks"), _dock(viewer, "Review and export")
    left = viewer.add_image(_rgb(1), name="lesion.left", rgb=True)
    right = viewer.add_image(_rgb(2), name="lesion.right", rgb=True)
    _propose(qtbot, propose, right)
    review.image.value = left
    review.start.value = "consensus"
    review.apply_start()  # used to show lesion.right's proposal as lesion.left's
    assert results.case_layers(viewer, left.name)["mask"] is None and "no mask for lesion.left" in review.status.value
    assert cases_model.CaseModel.id_for("lesion.left") == "lesion.left" and cases_model.CaseModel.id_for("/d/lesion.left.png") == "lesion.left"


@pytest.mark.parametrize("name", ["scan\n2", "x" * 300])
def test_a_layer_name_that_makes_no_case_id_is_refused_before_the_run(make_napari_viewer, qtbot, plugin_env, name):  # noqa: F811
    viewer = make_napari_viewer()
    propose = _dock(viewer, "Propose masks")
    layer = viewer.add_image(_rgb(0), name=name, rgb=True)
    propose.image.value = layer
    assert propose.start() is None  # was an uncaught ValueError when the run ended, and the proposal was lost
    assert "cannot make a safe case id" in propose.status.value


def test_shown_proposal_is_the_one_on_screen_with_a_4d_layer_in_the_viewer(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer = make_napari_viewer()
    propose, review = _dock(viewer, "Propose masks"), _dock(viewer, "Review and export")
    layer = viewer.add_image(_rgb(0), name="img", rgb=True)
    _propose(qtbot, propose, layer)
    proposals = results.case_layers(viewer, "img")["proposals"]
    data = np.zeros_like(proposals.data)
    for k in range(3):
        data[k, :, 10 * k : 10 * k + 10] = 1
    proposals.data = data
    viewer.add_image(np.random.default_rng(0).random((5, 4, 48, 64)), name="movie")
    viewer.dims.set_current_step(viewer.dims.ndim - 3, 2)  # the proposals slider on proposal 3
    viewer.dims.set_current_step(0, 0)
    review.image.value = layer
    review.start.value = "shown proposal"
    review.apply_start()
    mask = results.case_layers(viewer, "img")["mask"]
    assert np.array_equal(np.asarray(mask.data) > 0, data[2] > 0), review.status.value  # was proposal 1


def test_a_click_off_the_image_is_removed_and_later_clicks_refine(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer = make_napari_viewer()
    propose, refine = _dock(viewer, "Propose masks"), _dock(viewer, "Refine with clicks")
    layer = viewer.add_image(_rgb(0), name="img", rgb=True)
    _propose(qtbot, propose, layer)
    refine.image.value = layer
    points = refine.prompts_layer()
    points.add([-2, 10])  # a few pixels above the image: with prompt weights every later refine failed on it
    assert len(points.data) == 0 and "off the image removed" in refine.status.value and refine.worker is None
    points.add([20, 30])
    qtbot.waitUntil(lambda: refine.worker is None and "refined with 1 lesion" in refine.status.value, timeout=120_000)


def test_the_tiff_labels_writer_keeps_labels_above_32_bits(tmp_path):
    data = np.array([[0, 2**32 + 5], [2**40, 7]], np.int64)
    write_labels(str(tmp_path / "l.tif"), data, {})
    assert np.array_equal(tifffile.imread(tmp_path / "l.tif"), data)  # was wrapped into uint32: [[0, 5], [0, 7]]


def test_a_writer_refusal_is_shown_with_its_reason(make_napari_viewer, tmp_path):
    from napari.utils import notifications

    shown = []
    notifications.notification_manager.notification_ready.connect(lambda n: shown.append(str(n.message)))
    viewer = make_napari_viewer()
    viewer.add_labels(np.zeros((2, 8, 8), np.uint8), name="stack")
    try:
        viewer.layers.save(str(tmp_path / "stack.png"), plugin=PLUGIN)
    except Exception:  # noqa: BLE001 - napari's own answer varies by version; the reason must be shown either way
        pass
    assert any("save it as .tif" in message for message in shown), shown
    assert not (tmp_path / "stack.png").exists()


def _session_folders(tmp_path):
    """Two camera folders whose photos have the same names (IMG_0001.png, IMG_0002.png), different pixels."""
    folders = []
    for name, seed in (("sessionA", 10), ("sessionB", 20)):
        folder = tmp_path / name
        folder.mkdir()
        for k in (1, 2):
            Image.fromarray(_rgb(seed + k)).save(folder / f"IMG_000{k}.png")
        folders.append(folder)
    return folders


def test_opening_another_folder_puts_the_shown_case_away_and_its_edits_stay_its_own(make_napari_viewer, qtbot, plugin_env, tmp_path):  # noqa: F811
    viewer = make_napari_viewer()
    propose, cases = _dock(viewer, "Propose masks"), _dock(viewer, "Cases")
    first, second = _session_folders(tmp_path)
    cases.open_folder(first)
    cases.step(1)
    _propose(qtbot, propose, viewer.layers["IMG_0001"])
    mask = results.case_layers(viewer, "IMG_0001")["mask"]
    painted = np.asarray(mask.data).copy()
    painted[:6, :6] = 1 - painted[:6, :6]
    mask.data = painted
    assert cases.open_folder(second) == 2
    assert "IMG_0001" not in viewer.layers and cases.model.current is None  # put away, not left on screen
    cases.step(1)
    cases.step(1)  # the edits of session A's IMG_0001 used to be kept as session B's on this step
    model = cases.model
    assert model.for_source(str((second / "IMG_0001.png").absolute())).mask is None
    assert [cases.state(c) for c in cases.cases] == ["new", "new"]


def test_another_folder_is_refused_while_propose_all_runs(make_napari_viewer, qtbot, plugin_env, tmp_path):  # noqa: F811
    viewer = make_napari_viewer()
    cases = _dock(viewer, "Cases")
    first, second = _session_folders(tmp_path)
    cases.open_folder(first)
    cases.propose_or_cancel()
    assert cases.worker is not None
    assert cases.open_folder(second) == 0 and "Propose all is running" in cases.status.value  # was a traceback per case
    qtbot.waitUntil(lambda: cases.worker is None, timeout=120_000)
    assert [cases.state(c) for c in cases.cases] == ["proposed", "proposed"] and cases.model.folder == first


def test_the_folder_dot_lists_cases_by_their_files(make_napari_viewer, qtbot, plugin_env, tmp_path, monkeypatch):  # noqa: F811
    viewer = make_napari_viewer()
    cases = _dock(viewer, "Cases")
    first, _ = _session_folders(tmp_path)
    monkeypatch.chdir(first)
    cases.open_folder(".")
    cases.propose_or_cancel()
    qtbot.waitUntil(lambda: cases.worker is None, timeout=120_000)
    assert [cases.state(c) for c in cases.cases] == ["proposed", "proposed"]  # were 'new': their ids became 'IMG_0001.png'
    assert sorted(cases.model.cases) == ["IMG_0001", "IMG_0002"]


def test_going_back_to_a_folder_after_another_with_the_same_names_keeps_its_proposals_and_edits(make_napari_viewer, qtbot, plugin_env, tmp_path):  # noqa: F811
    viewer = make_napari_viewer()
    cases = _dock(viewer, "Cases")
    first, second = _session_folders(tmp_path)
    painted = _edit_first_case(viewer, qtbot, cases, first)
    assert cases.open_folder(second) == 2
    cases.show_case(0)  # session B's IMG_0001 on screen: its own, new case
    assert cases.state(cases.cases[0]) == "new" and results.case_layers(viewer, "IMG_0001")["mask"] is None
    assert cases.open_folder(first) == 2
    assert [cases.state(c) for c in cases.cases] == ["edited", "proposed"]  # they were ["new", "new"]: the edits and proposals gone
    cases.show_case(0)
    assert np.array_equal(np.asarray(results.case_layers(viewer, "IMG_0001")["mask"].data) > 0, painted > 0)
    assert cases.open_folder(second) == 2
    assert [cases.state(c) for c in cases.cases] == ["new", "new"]  # A's work never becomes B's


def test_accepting_a_file_named_like_one_accepted_before_says_that_one_leaves_the_store(make_napari_viewer, qtbot, plugin_env, tmp_path):  # noqa: F811
    viewer = make_napari_viewer()
    propose, review = _dock(viewer, "Propose masks"), _dock(viewer, "Review and export")
    asked = []
    review.confirm = lambda title, question: asked.append(question) or False
    path_a, path_b = _two_files_named_alike(tmp_path)
    for path in (path_a, path_b):
        layer = viewer.open(str(path), plugin=PLUGIN)[0]
        _propose(qtbot, propose, layer)
        review.image.value = layer
        review.accept()
    (question,) = asked  # the second accept asks, and the answer no keeps A's
    assert "accepted before from another file" in question and "leaves the store and fine-tuning" in question
    assert "images/IMG_0001.png" in question and "masks/IMG_0001.png" in question and "meta/IMG_0001.json" in question
    assert "not accepted" in review.status.value
