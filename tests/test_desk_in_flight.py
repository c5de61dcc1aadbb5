"""A hurried annotator acting while a proposal or a refine is under way, and a record made after a later
proposal, in real napari under Xvfb: no click is lost, no refusal names the wrong cause, and a record names
the run its mask was made from."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

napari = pytest.importorskip("napari")

from napari_mlffm import results  # noqa: E402

from .test_cases_from_other_clinics import _rgb  # noqa: E402
from .test_plugin import _dock, _propose, plugin_env  # noqa: E402, F401
from .test_refine_desk import _desk, _idle, _slow_refines  # noqa: E402


def _clinic(make_napari_viewer, tmp_path, *docks):
    """A folder of two images, IMG_0001.png and IMG_0002.png, opened in Cases with the first shown: the viewer, the
    folder and the docks named (``Cases`` among them), in that order."""
    folder = tmp_path / "clinic"
    folder.mkdir()
    for k in (1, 2):
        Image.fromarray(_rgb(k)).save(folder / f"IMG_000{k}.png")
    viewer = make_napari_viewer()
    found = tuple(_dock(viewer, name) for name in docks)
    cases = found[docks.index("Cases")]
    cases.open_folder(folder)
    cases.show_case(0)
    return viewer, folder, found


def test_stepping_away_while_a_refine_of_the_shown_case_runs_waits_and_keeps_the_click(
    make_napari_viewer, qtbot, plugin_env, tmp_path, monkeypatch  # noqa: F811
):
    viewer, folder, (propose, cases, refine) = _clinic(make_napari_viewer, tmp_path, "Propose masks", "Cases", "Refine with clicks")
    _propose(qtbot, propose, viewer.layers["IMG_0001"])
    release = _slow_refines(monkeypatch)
    refine.image.value = viewer.layers["IMG_0001"]
    refine.prompts_layer().add([[10, 10]])  # refine on each click: it runs
    assert refine.worker is not None
    cases.step(1)  # Shift-N at once
    assert "IMG_0001" in viewer.layers and "refine" in cases.status.value  # refused in one line: the refine would be dropped
    cases.open_folder(folder)
    assert "IMG_0001" in viewer.layers
    release.set()
    _idle(qtbot, refine)
    assert "refined with 1 lesion" in refine.status.value  # it was "closed ... refine dropped", the click lost with its layer
    cases.step(1)
    cases.step(-1)
    assert viewer.layers["IMG_0001 mask"].metadata["mlffm"]["clicks"]["positive"] == [[10.0, 10.0]]


def test_an_image_renamed_while_its_masks_are_proposed_drops_the_result_in_one_line(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer = make_napari_viewer()
    propose, review = (_dock(viewer, n) for n in ("Propose masks", "Review and export"))
    review.confirm = lambda *_: True
    layer = viewer.add_image(_rgb(3), name="a")
    propose.image.value = layer
    assert propose.start() is not None
    layer.name = "b"  # a layer without a file is its name's case
    qtbot.waitUntil(lambda: propose.worker is None, timeout=120_000)
    assert "renamed" in propose.status.value and "b mask" not in viewer.layers
    # the result landed as 'b mask' made for the case 'a', and Accept said it held edits made on another file
    _propose(qtbot, propose, layer)
    review.image.value = layer
    review.accept()
    assert (plugin_env["store"] / "meta" / "b.json").exists()


def test_a_mask_made_from_a_later_proposal_records_that_proposal(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer, propose, review, refine, (a,) = _desk(make_napari_viewer, qtbot)
    mask = results.case_layers(viewer, "a")["mask"]
    data = np.asarray(mask.data).copy()
    data[:10, :10] = 1 - data[:10, :10]
    mask.data = data  # edited: the next proposal keeps it
    propose.seed.value = 7
    _propose(qtbot, propose, a)
    review.image.value = a
    review.start.value = "consensus"
    review.apply_start()  # the mask is now seed 7's consensus
    stored = results.case_layers(viewer, "a")["proposals"].metadata["mlffm"]
    assert np.array_equal(np.asarray(mask.data) > 0, stored["probability"] >= stored["threshold"])
    review.accept()
    record = json.loads((plugin_env["store"] / "meta" / "a.json").read_text())
    assert record["seed"] == 7 and "later_proposal" not in record  # it said seed 0, and seed 7 a later proposal it did not start from

    # edited again and kept through a seed 9 proposal; a refine goes on from the mask's run (seed 7), and a mask
    # made from the refine's proposals records that run, not the seed 9 proposal the refine replaced
    data = np.asarray(mask.data).copy()
    data[:10, :10] = 1 - data[:10, :10]
    mask.data = data
    propose.seed.value = 9
    _propose(qtbot, propose, a)
    refine.image.value = a
    refine.prompts_layer().add([[30, 30]])
    refine.refine()
    _idle(qtbot, refine)
    review.start.value = "union"
    review.apply_start()
    review.accept()
    record = json.loads((plugin_env["store"] / "meta" / "a.json").read_text())
    assert record["seed"] == 7 and record["start"] == "union"


def test_an_edited_mask_kept_through_a_later_proposal_keeps_its_provenance_through_stepping_away_and_back(
    make_napari_viewer, qtbot, plugin_env, tmp_path  # noqa: F811
):
    viewer, folder, (propose, review, cases) = _clinic(make_napari_viewer, tmp_path, "Propose masks", "Review and export", "Cases")
    review.confirm = lambda *_: True
    _propose(qtbot, propose, viewer.layers["IMG_0001"])
    mask = viewer.layers["IMG_0001 mask"]
    data = np.asarray(mask.data).copy()
    data[:10, :10] = 1 - data[:10, :10]
    mask.data = data
    propose.seed.value = 7
    _propose(qtbot, propose, viewer.layers["IMG_0001"])  # the edited mask is kept: it started from seed 0
    cases.step(1)
    cases.step(-1)
    review.image.value = viewer.layers["IMG_0001"]
    review.accept()
    record = json.loads((plugin_env["store"] / "meta" / "IMG_0001.json").read_text())
    assert record["seed"] == 0 and record["later_proposal"]["seed"] == 7  # it said seed 7, with no later proposal
    assert record["edited_pixels"] == 100


def test_reopening_a_folder_names_an_edited_case_whose_file_is_gone(make_napari_viewer, qtbot, plugin_env, tmp_path):  # noqa: F811
    viewer, folder, (propose, cases) = _clinic(make_napari_viewer, tmp_path, "Propose masks", "Cases")
    _propose(qtbot, propose, viewer.layers["IMG_0001"])
    mask = viewer.layers["IMG_0001 mask"]
    data = np.asarray(mask.data).copy()
    data[:10, :10] = 1 - data[:10, :10]
    mask.data = data
    (folder / "IMG_0001.png").rename(folder / "IMG_0001 copy.png")  # a sync client, or the annotator in a file manager
    assert cases.open_folder(folder) == 2
    assert "IMG_0001.png" in cases.status.value and "edited" in cases.status.value  # the edited case left the list unsaid
    (folder / "IMG_0001 copy.png").rename(folder / "IMG_0001.png")
    cases.open_folder(folder)
    assert [cases.state(c) for c in cases.cases][0] == "edited"  # the edits come back with the file


def test_stepping_away_from_clicks_not_yet_refined_is_refused_in_one_line(make_napari_viewer, qtbot, plugin_env, tmp_path):  # noqa: F811
    viewer, folder, (propose, cases, refine) = _clinic(make_napari_viewer, tmp_path, "Propose masks", "Cases", "Refine with clicks")
    refine.auto.value = False  # collect clicks first, then Refine
    _propose(qtbot, propose, viewer.layers["IMG_0001"])
    refine.image.value = viewer.layers["IMG_0001"]
    refine.prompts_layer().add([[10.37, 12.81]])  # where a mouse puts it; the record keeps 0.1 px
    cases.step(1)
    assert "IMG_0001 prompts" in viewer.layers and "not refined" in cases.status.value  # the click left with its layer, unused
    refine.refine()
    _idle(qtbot, refine)
    cases.step(1)
    assert "IMG_0001" not in viewer.layers  # refined clicks leave with their case, their effect in its mask


def test_a_proposal_that_lands_after_its_case_was_put_away_is_kept_with_the_case(make_napari_viewer, qtbot, plugin_env, tmp_path):  # noqa: F811
    viewer, folder, (propose, cases) = _clinic(make_napari_viewer, tmp_path, "Propose masks", "Cases")
    propose.image.value = viewer.layers["IMG_0001"]
    assert propose.start() is not None
    cases.step(1)  # Shift-N before the run lands: the run goes on, its image layer is put away
    qtbot.waitUntil(lambda: propose.worker is None, timeout=120_000)
    assert "kept with its case" in propose.status.value  # it was "image layer was closed; results dropped"
    assert cases.state(cases.model.cases["IMG_0001"]) == "proposed"
    cases.step(-1)
    assert "IMG_0001 proposals" in viewer.layers and "IMG_0001 mask" in viewer.layers


def test_a_proposal_that_lands_after_another_folder_with_its_case_id_was_opened_is_dropped_in_one_line(
    make_napari_viewer, qtbot, plugin_env, tmp_path  # noqa: F811
):
    viewer, folder, (propose, cases) = _clinic(make_napari_viewer, tmp_path, "Propose masks", "Cases")
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(_rgb(5)).save(other / "IMG_0001.png")  # another photo of the same name
    propose.image.value = viewer.layers["IMG_0001"]
    assert propose.start() is not None
    cases.open_folder(other)  # the run goes on, its image layer is put away; IMG_0001 is now the other file's case
    qtbot.waitUntil(lambda: propose.worker is None, timeout=120_000)
    assert "dropped" in propose.status.value and "rename one" in propose.status.value  # it was a traceback
    assert cases.model.cases["IMG_0001"].proposal is None  # the other photo's case never gets this one's masks


def test_a_proposal_that_lands_after_its_case_was_put_away_and_opened_again_lands_on_screen(make_napari_viewer, qtbot, plugin_env, tmp_path):  # noqa: F811
    viewer, folder, (propose, cases) = _clinic(make_napari_viewer, tmp_path, "Propose masks", "Cases")
    propose.image.value = viewer.layers["IMG_0001"]
    assert propose.start() is not None
    cases.step(1)
    cases.step(-1)  # back before the run lands: a new layer of the same file's same pixels
    qtbot.waitUntil(lambda: propose.worker is None, timeout=120_000)
    assert "IMG_0001 proposals" in viewer.layers and "IMG_0001 mask" in viewer.layers  # they waited for another step away
    assert cases.state(cases.model.cases["IMG_0001"]) == "proposed"
