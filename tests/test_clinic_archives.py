"""Other clinics' folders as they are: camera names, upper-case suffixes, masks saved by other tools beside the photo."""

from __future__ import annotations

import shutil

import numpy as np
from PIL import Image

from training.cli import main
from training.data.datasets import list_cases, load_case

from .conftest import SMALL_DATA

STEMS = sorted(p.stem for p in (SMALL_DATA / "images").glob("*.jpg"))


def _mask(stem):
    return np.asarray(Image.open(SMALL_DATA / "masks" / f"{stem}.png")) > 127


def test_a_mask_named_in_another_letter_case_beside_its_photo_is_its_mask(tmp_path):
    visit = tmp_path / "clinic" / "2024-01-30"
    visit.mkdir(parents=True)
    names = {"IMG_0001": "IMG_0001_MASK.PNG", "IMG_0002": "img_0002_mask.png", "IMG_0003": "IMG_0003_Segmentation.png"}
    for (name, mask_name), stem in zip(names.items(), STEMS):
        shutil.copy(SMALL_DATA / "images" / f"{stem}.jpg", visit / f"{name}.JPG")
        Image.fromarray(_mask(stem).astype(np.uint8) * 255).save(visit / mask_name, format="PNG")
    listing = list_cases(tmp_path / "clinic", "all")
    assert {c.case_id: c.mask_path.name for c in listing.cases} == names, listing.notes
    assert "without a mask" not in listing.notes[0]
    for case, stem in zip(listing.cases, STEMS):
        assert np.array_equal(load_case(case)[1], _mask(stem))


def _visit(folder, stem, name="IMG_0001"):
    folder.mkdir(parents=True)
    shutil.copy(SMALL_DATA / "images" / f"{stem}.jpg", folder / f"{name}.JPG")
    Image.fromarray(_mask(stem).astype(np.uint8) * 255).save(folder / f"{name}_mask.png")


def _visits_with_shared_masks(clinic):
    """IMG_0001.JPG in every visit's folder, the masks in one folder apart: whose IMG_0001 mask is which is unknown."""
    for patient, stem in zip(("Patient 001", "Patient 002"), STEMS):
        (clinic / patient / "2024-01-30").mkdir(parents=True)
        shutil.copy(SMALL_DATA / "images" / f"{stem}.jpg", clinic / patient / "2024-01-30" / "IMG_0001.JPG")
    (clinic / "masks").mkdir()
    Image.fromarray(_mask(STEMS[0]).astype(np.uint8) * 255).save(clinic / "masks" / "IMG_0001.png")


def test_evaluate_with_every_case_left_out_says_why_naming_a_file(tmp_path, tiny_checkpoint, capsys):
    _visits_with_shared_masks(tmp_path / "clinic")
    for command in (["evaluate"], ["calibrate", "-o", str(tmp_path / "cal.mlffm")]):
        code = main([*command, str(tmp_path / "clinic"), "--split", "all", "--checkpoint", str(tiny_checkpoint)])
        err = capsys.readouterr().err
        assert code == 2 and "no cases in split 'all'" in err
        assert "IMG_0001.JPG" in err and "2 folders" in err, err


def test_a_jpeg_mask_beside_its_photo_is_its_mask_but_a_second_photo_is_not(tmp_path):
    folder = tmp_path / "clinic"
    folder.mkdir()
    for name, stem in zip(("IMG_0001", "IMG_0002", "mole"), STEMS):
        shutil.copy(SMALL_DATA / "images" / f"{stem}.jpg", folder / f"{name}.JPG")
    Image.fromarray(_mask(STEMS[0]).astype(np.uint8) * 255).save(folder / "IMG_0001_mask.jpg", quality=85)
    Image.fromarray(_mask(STEMS[1]).astype(np.uint8) * 255).save(folder / "IMG_0002_Segmentation.JPG", quality=85)
    shutil.copy(SMALL_DATA / "images" / f"{STEMS[2]}.jpg", folder / "mole_lesion.jpg")  # a close-up: a photo, not a mask
    listing = list_cases(folder, "all")
    assert {c.case_id: c.mask_path.name for c in listing.cases} == {"IMG_0001": "IMG_0001_mask.jpg", "IMG_0002": "IMG_0002_Segmentation.JPG"}
    for case, stem in zip(listing.cases, STEMS):
        mask = load_case(case)[1]
        assert 2 * (mask & _mask(stem)).sum() / (mask.sum() + _mask(stem).sum()) > 0.999
    assert "mole.JPG" in listing.notes[0] and "mole_lesion.jpg" in listing.notes[0]


def test_segment_recursive_on_a_clinic_archive_passes_over_the_masks_beside_the_photos(tmp_path, tiny_checkpoint, capsys):
    clinic = tmp_path / "clinic"
    _visit(clinic / "Patient 001" / "2024-01-30", STEMS[0])
    _visit(clinic / "Patient 002" / "2024-01-30", STEMS[1])
    shutil.copy(SMALL_DATA / "images" / f"{STEMS[2]}.jpg", clinic / "Patient 002" / "2024-01-30" / "IMG_0002.JPG")
    Image.fromarray(_mask(STEMS[2]).astype(np.uint8)).save(clinic / "Patient 002" / "2024-01-30" / "IMG_0002_MASK.PNG")
    out = tmp_path / "out"
    code = main(["segment", str(clinic), "--recursive", "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--samples", "2", "--steps", "1"])
    captured = capsys.readouterr()
    assert code == 0 and "3 segmented, 0 skipped" in captured.out, captured.err
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*_segmentation.png"))
    assert written == ["Patient 001/2024-01-30/IMG_0001_segmentation.png", "Patient 002/2024-01-30/IMG_0001_segmentation.png",
                       "Patient 002/2024-01-30/IMG_0002_segmentation.png"]
    assert "3 files named as the mask of a photo beside them" in captured.err and captured.err.count("named as the mask") == 1


def test_the_note_on_isic_s_download_counts_the_pairs_of_the_split_asked_for_as_such(tmp_path):
    for folder, stems in (("Training", STEMS[:5]), ("Test", STEMS[5:])):
        inputs, truth = tmp_path / f"ISIC2018_Task1-2_{folder}_Input", tmp_path / f"ISIC2018_Task1_{folder}_GroundTruth"
        inputs.mkdir()
        truth.mkdir()
        for stem in stems:
            shutil.copy(SMALL_DATA / "images" / f"{stem}.jpg", inputs)
            shutil.copy(SMALL_DATA / "masks" / f"{stem}.png", truth / f"{stem}_segmentation.png")
    listing = list_cases(tmp_path, "test")
    assert len(listing.cases) == len(STEMS) - 5
    assert f"{len(STEMS) - 5} image/mask pairs of split 'test' found by name below it" in listing.notes[0], listing.notes
    assert f"{len(STEMS)} image/mask pairs found" in list_cases(tmp_path, "all").notes[0]


def test_a_camera_name_in_every_visit_folder_is_a_case_each_where_its_mask_lies_beside_it(tmp_path):
    for patient, stem in zip(("Patient 001", "Patient 002"), STEMS):
        _visit(tmp_path / "clinic" / patient / "2024-01-30", stem)
    listing = list_cases(tmp_path / "clinic", "all")
    assert [c.case_id for c in listing.cases] == ["Patient 001__2024-01-30__IMG_0001", "Patient 002__2024-01-30__IMG_0001"]
    for case, stem in zip(listing.cases, STEMS):  # each photo with the mask of its own folder
        assert case.mask_path.parent == case.image_path.parent
        assert np.array_equal(load_case(case)[1], _mask(stem))
    _visits_with_shared_masks(tmp_path / "shared")  # the masks apart: which IMG_0001 a mask belongs to is not guessed
    (line,) = list_cases(tmp_path / "shared", "all").skipped
    assert "IMG_0001.JPG: skipped, its image name is found in 2 folders" in line
    assert "give each photo a name of its own, or its mask beside it in its folder" in line

def test_cases_named_by_their_folders_take_their_folder_s_split_and_a_test_one_is_never_trained_on(tmp_path):
    from training.commands.run_data import without_test_cases

    _visit(tmp_path / "train" / "Patient 001", STEMS[0])
    _visit(tmp_path / "test" / "Patient 002", STEMS[1])
    assert [c.case_id for c in list_cases(tmp_path, "train").cases] == ["train__Patient 001__IMG_0001"]
    assert [c.case_id for c in list_cases(tmp_path, "test").cases] == ["test__Patient 002__IMG_0001"]
    kept = without_test_cases(list_cases(tmp_path, None), tmp_path)  # adapt's, calibrate --split all's, finetune --replay's
    assert [c.case_id for c in kept.cases] == ["train__Patient 001__IMG_0001"]


def test_a_mask_named_in_another_letter_case_is_never_given_to_a_photo_of_another_folder_named_like_its_own(tmp_path):
    _visit(tmp_path / "clinic" / "Patient 001", STEMS[0], "IMG_0001")
    Image.fromarray(_mask(STEMS[0]).astype(np.uint8) * 255).save(tmp_path / "clinic" / "Patient 001" / "IMG_0001_MASK.PNG")
    (tmp_path / "clinic" / "Patient 001" / "IMG_0001_mask.png").unlink()  # only the upper-case mask
    (tmp_path / "clinic" / "Patient 002").mkdir()
    shutil.copy(SMALL_DATA / "images" / f"{STEMS[1]}.jpg", tmp_path / "clinic" / "Patient 002" / "img_0001.jpg")  # another phone's
    listing = list_cases(tmp_path / "clinic", "all")
    assert {c.case_id: c.mask_path.name for c in listing.cases} == {"IMG_0001": "IMG_0001_MASK.PNG"}  # img_0001 was given it too
    assert "img_0001.jpg" in listing.notes[0]  # an image without a mask, said


def test_a_visit_folder_holding_its_photo_in_two_types_keeps_one_and_says_so(tmp_path):
    for patient, stem in zip(("Patient 001", "Patient 002"), STEMS):
        _visit(tmp_path / "clinic" / patient, stem)
        (tmp_path / "clinic" / patient / "IMG_0001.heic").write_bytes(b"not read")  # a phone's export beside the JPEG
    listing = list_cases(tmp_path / "clinic", "all")
    assert {c.case_id: c.image_path.name for c in listing.cases} == {"Patient 001__IMG_0001": "IMG_0001.JPG", "Patient 002__IMG_0001": "IMG_0001.JPG"}
    assert all(".heic is not a supported image type" in line for line in listing.skipped) and len(listing.skipped) == 2
    (tmp_path / "clinic" / "Patient 001" / "IMG_0001.heic").unlink()
    Image.open(SMALL_DATA / "images" / f"{STEMS[0]}.jpg").save(tmp_path / "clinic" / "Patient 001" / "IMG_0001.png")
    listing = list_cases(tmp_path / "clinic", "all")
    assert listing.cases[0].image_path.name == "IMG_0001.JPG"
    assert any("Patient 001/IMG_0001.png: skipped, duplicate id 'Patient 001__IMG_0001'" in line for line in listing.skipped), listing.skipped
