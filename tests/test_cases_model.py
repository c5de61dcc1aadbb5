"""The case model shared by the widgets, without Qt or napari: states, Propose-all's to-do list, stepping, accepted cases."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from napari_mlffm.cases_model import STATES, CaseModel
from training.corrections.store import CorrectionsStore

from .conftest import SMALL_DATA


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "cases"
    folder.mkdir()
    for path in sorted((SMALL_DATA / "images").glob("*.jpg"))[:3]:
        shutil.copy(path, folder / path.name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_states_follow_a_review_and_propose_all_skips_done_cases(folder, tmp_path, tiny_segmenter, rgb_image):
    store = tmp_path / "store"
    model = CaseModel(lambda: store)
    events = []
    model.changed.connect(events.append)
    cases = model.open_folder(folder)
    assert [c.path.name for c in cases] == sorted(p.name for p in folder.glob("*.jpg"))
    assert [model.state(c) for c in cases] == ["new"] * 3 and events == [""]
    assert model.to_propose() == cases

    first, second, third = cases
    proposal = tiny_segmenter.propose(rgb_image, seed=0)
    # A proposal made for a case from anywhere (e.g. the Propose widget, keyed by the source path) is that case's.
    model.set_proposal(str(first.path.resolve()), proposal, {"seed": 0})
    assert model.state(first) == "proposed" and first.case_id in events
    assert model.to_propose() == [second, third]

    # Edits make it 'edited'; undoing them back to the start makes it 'proposed' again.
    start = proposal.consensus
    edited = start.copy()
    edited[:4, :4] = ~edited[:4, :4]
    model.set_mask(first.source, edited, "consensus", start)
    assert model.state(first) == "edited"
    # An outline level travels with its start mask, and a start mask without one clears it.
    model.set_mask(first.source, edited, "outline level 0.40", start, 0.4)
    assert first.level == 0.4 and first.start == "outline level 0.40"
    model.set_mask(first.source, edited)  # a stroke: the start and its level stay
    assert first.level == 0.4
    model.set_mask(first.source, edited, "consensus", start)
    assert first.level is None
    model.set_mask(first.source, edited, "outline level 0.40", start, 0.4)
    model.set_proposal(first.source, proposal, {"seed": 0})  # a new probability (a re-proposal or a refine)
    assert first.level is None
    model.set_mask(first.source, start)
    assert model.state(first) == "proposed"

    # Accepted: in the store, with the mask it was accepted with; the state is read from the store.
    model.set_mask(first.source, edited)
    CorrectionsStore(store).accept(first.case_id, rgb_image, edited, {"start": "consensus"})
    model.mark_accepted(first.source, edited, {"start": "consensus"})
    assert model.state(first) == "accepted"
    assert model.to_propose() == [second, third]  # accepted cases are not proposed again
    assert model.to_propose(redo=True) == cases
    # An edit after accepting is 'edited' until accepted again.
    again = edited.copy()
    again[10, 10] = ~again[10, 10]
    model.set_mask(first.source, again)
    assert model.state(first) == "edited"

    # A new session (a fresh model) sees the accepted case and gets its stored mask and record back.
    fresh = CaseModel(lambda: store)
    reopened = fresh.open_folder(folder)[0]
    assert fresh.state(reopened) == "accepted"
    mask, record = fresh.stored(reopened)
    assert np.array_equal(mask, edited) and record["start"] == "consensus" and record["id"] == first.case_id
    assert fresh.stored(fresh.listed()[1]) is None

    model.set_error(third.source, "broken")
    assert model.state(third) == "unreadable" and third not in model.to_propose(redo=True)
    assert set(model.state(c) for c in model.listed()) <= set(STATES)


def test_sorting_keeps_cases_and_puts_unproposed_last(folder, tmp_path, tiny_segmenter, rgb_image):
    model = CaseModel(lambda: tmp_path / "store")
    cases = model.open_folder(folder)
    for seed, case in enumerate(cases[:2]):
        model.set_proposal(case.source, tiny_segmenter.propose(rgb_image, n_samples=3, seed=seed + 3))
    model.sort_most_doubtful_first()
    listed = model.listed()
    assert listed[-1] is cases[2]
    values = [c.disagreement for c in listed[:2]]
    assert values == sorted(values, reverse=True)
    # Reopening the folder keeps what is known about each case.
    model.open_folder(folder)
    assert model.case(cases[0].source).proposal is not None
    with pytest.raises(ValueError, match="not a folder"):
        model.open_folder(folder / "notes.txt")


def test_a_folder_lists_no_export_or_segment_output_beside_its_image_as_a_case(tmp_path):
    from napari_mlffm.case_folder import list_folder

    image = np.zeros((8, 8, 3), np.uint8)
    for name in ("ISIC_1.jpg", "ISIC_2.jpg", "mole.jpg", "mole_lesion.jpg", "lone_segmentation.png", "x_probability.tif"):
        Image.fromarray(image).save(tmp_path / name)
    for stem in ("ISIC_1", "ISIC_2"):  # Export (and mlffm segment) into the open folder
        for suffix in ("_segmentation.png", "_probability.tif", "_uncertainty.tif", "_samples.tif", "_mask.png"):
            Image.fromarray(image[..., 0]).save(tmp_path / f"{stem}{suffix}")
    listing, skipped = list_folder(tmp_path)
    # a JPEG named like a mask may be a second photo; a mask's name with no image of its id beside it is listed
    assert [case_id for case_id, _ in listing] == ["ISIC_1", "ISIC_2", "lone_segmentation", "mole", "mole_lesion", "x_probability"]
    assert len(skipped) == 10 and all(": skipped, named as the mask or a map of ISIC_" in line for line in skipped)
    assert "ISIC_1_probability.tif: skipped, named as the mask or a map of ISIC_1.jpg beside it" in skipped[1]


def test_a_folder_of_per_patient_folders_names_its_subfolders_as_not_read(tmp_path):
    from napari_mlffm.case_folder import list_folder

    image = np.zeros((8, 8, 3), np.uint8)
    for patient in ("patient 1", "patient 2", "patient 3", "patient 4"):
        (tmp_path / patient).mkdir()
        Image.fromarray(image).save(tmp_path / patient / "IMG_0001.jpg")
    (tmp_path / ".thumbnails").mkdir()  # hidden: not named
    (tmp_path / "loop").symlink_to(tmp_path)  # a link to a folder is never followed, nor named
    listing, skipped = list_folder(tmp_path)
    assert listing == []
    assert skipped == ["4 subfolders not read (patient 1, patient 2, patient 3, ...): open each as its own folder"]


def test_a_clinic_s_reference_masks_saved_as_jpeg_beside_their_photos_are_not_cases(tmp_path):
    from napari_mlffm.case_folder import list_folder

    photo = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 255
    for name in ("IMG_0001.JPG", "IMG_0002.jpg", "mole.jpg", "mole_lesion.jpg"):
        Image.fromarray(photo).save(tmp_path / name)
    for name in ("IMG_0001_MASK.JPG", "IMG_0002_segmentation.jpeg", "lone_mask.jpg"):
        Image.fromarray(mask).save(tmp_path / name, format="JPEG")
    listing, skipped = list_folder(tmp_path)
    # as a dataset tree takes them (training/data/mask_files.py: JPEG_MASK_NAMES); they were listed as cases to segment
    assert [case_id for case_id, _ in listing] == ["IMG_0001", "IMG_0002", "lone_mask", "mole", "mole_lesion"]
    assert skipped == [
        "IMG_0001_MASK.JPG: skipped, named as the mask or a map of IMG_0001.JPG beside it (a reference mask, an export's or mlffm segment's), not a case",
        "IMG_0002_segmentation.jpeg: skipped, named as the mask or a map of IMG_0002.jpg beside it (a reference mask, an export's or mlffm segment's), not a case",
    ]
