"""Datasets as their sources ship them (no images/ folder): ISIC's download, PH2, HAM10000, flat folders, image and
mask folders named another way. Pairs are found by name below DATA, never guessed between two candidate masks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from training.cli import main
from training.data import dataset_tree
from training.data.datasets import DatasetError, list_cases, load_case

from .conftest import SMALL_DATA

STEMS = sorted(p.stem for p in (SMALL_DATA / "images").glob("*.jpg"))


def _isic_download(root):
    """ISIC 2018's own archives unpacked side by side, with their licence files."""
    inputs, truth = root / "ISIC2018_Task1-2_Training_Input", root / "ISIC2018_Task1_Training_GroundTruth"
    inputs.mkdir(parents=True)
    truth.mkdir()
    for stem in STEMS:
        shutil.copy(SMALL_DATA / "images" / f"{stem}.jpg", inputs)
        shutil.copy(SMALL_DATA / "masks" / f"{stem}.png", truth / f"{stem}_segmentation.png")
    (inputs / "LICENSE.txt").write_text("CC BY-NC 4.0\n")
    (inputs / "ATTRIBUTION.txt").write_text("ISIC\n")
    return root


def _ph2(root, stems=STEMS):
    """PH2's own layout: a folder per case, the photo, the lesion mask and ROI drawings each in a subfolder, as BMP."""
    for stem in stems:
        case = root / "PH2 Dataset images" / stem
        for sub in ("_Dermoscopic_Image", "_lesion", "_roi"):
            (case / f"{stem}{sub}").mkdir(parents=True)
        Image.open(SMALL_DATA / "images" / f"{stem}.jpg").save(case / f"{stem}_Dermoscopic_Image" / f"{stem}.bmp")
        mask = Image.open(SMALL_DATA / "masks" / f"{stem}.png")
        mask.save(case / f"{stem}_lesion" / f"{stem}_lesion.bmp")
        mask.save(case / f"{stem}_roi" / f"{stem}_R1_Label4.bmp")  # a drawing of a region of interest: no case
    (root / "PH2_dataset.txt").write_text("PH2\n")
    return root


def _arrays(listing):
    return {case.case_id: load_case(case) for case in listing.cases}


def test_isic_s_download_and_ph2_s_own_layout_read_the_same_pairs_as_images_and_masks_folders(tmp_path):
    reference = _arrays(list_cases(SMALL_DATA, "all"))
    for root in (_isic_download(tmp_path / "isic"), _ph2(tmp_path / "ph2")):
        listing = list_cases(root, "all")
        assert sorted(c.case_id for c in listing.cases) == STEMS
        assert not listing.skipped and not listing.problems
        for case_id, (image, mask) in _arrays(listing).items():
            assert np.array_equal(image, reference[case_id][0]) and np.array_equal(mask, reference[case_id][1])
        assert listing.notes and "no images/ folder; 8 image/mask pairs found by name below it" in listing.notes[0]
    assert "8 images without a mask not taken as cases" in listing.notes[0] and "_R1_Label4.bmp" in listing.notes[0]


@pytest.mark.parametrize("image_folder, mask_folder, mask_name", [
    ("Images", "Masks", "{stem}.png"),                          # letter case of another system
    ("img", "gt", "{stem}.png"),
    ("train/image", "train/labels", "{stem}.png"),
    ("HAM10000_images_part_1", "HAM10000_segmentations_lesion_tschandl", "{stem}_segmentation.png"),
    ("photos", "photos", "{stem}_mask.png"),                   # one flat folder
    ("lesion data", "lesion data/Ground Truth", "{stem}.tif"),
])
def test_image_and_mask_folders_named_another_way_pair_by_name(tmp_path, image_folder, mask_folder, mask_name):
    root = tmp_path / "data"
    (root / image_folder).mkdir(parents=True, exist_ok=True)
    (root / mask_folder).mkdir(parents=True, exist_ok=True)
    for stem in STEMS[:3]:
        shutil.copy(SMALL_DATA / "images" / f"{stem}.jpg", root / image_folder)
        Image.open(SMALL_DATA / "masks" / f"{stem}.png").save(root / mask_folder / mask_name.format(stem=stem))
    listing = list_cases(root, "all")
    assert [c.case_id for c in listing.cases] == STEMS[:3]
    assert all(c.mask_path.parent == root / mask_folder for c in listing.cases)


def test_maps_an_earlier_segment_run_wrote_are_no_images_and_a_mask_name_in_two_folders_is_not_guessed(tmp_path):
    root = _isic_download(tmp_path / "isic")
    out = root / "predictions"
    out.mkdir()
    shutil.copy(SMALL_DATA / "masks" / f"{STEMS[1]}.png", out / f"{STEMS[1]}_segmentation.png")  # a proposal, named as ISIC names masks
    Image.fromarray(np.zeros((8, 8), np.float32)).save(out / f"{STEMS[1]}_probability.tif")
    (out / f"{STEMS[1]}.json").write_text("{}")
    listing = list_cases(root, "all")
    assert sorted(c.case_id for c in listing.cases) == [s for s in STEMS if s != STEMS[1]]  # no case made of a map either
    assert len(listing.skipped) == 1 and "its masks are found in 2 folders" in listing.skipped[0]
    assert "ISIC2018_Task1_Training_GroundTruth" in listing.skipped[0] and "predictions" in listing.skipped[0]


def test_splits_csv_selects_in_a_tree_and_a_listed_case_without_a_mask_is_skipped_not_dropped(tmp_path):
    root = _ph2(tmp_path / "ph2", STEMS[:4])
    (root / "splits.csv").write_text(f"id,split\n{STEMS[0]},test\n{STEMS[1]},test\n{STEMS[2]},train\n")
    shutil.rmtree(root / "PH2 Dataset images" / STEMS[1] / f"{STEMS[1]}_lesion")
    listing = list_cases(root, "test")
    assert [c.case_id for c in listing.cases] == [STEMS[0]]
    assert len(listing.skipped) == 1 and f"{STEMS[1]}.bmp: skipped, no mask named {STEMS[1]}, {STEMS[1]}_segmentation" in listing.skipped[0]


def test_folders_without_a_pair_are_refused_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(DatasetError, match="no images/ folder and no image below it"):
        list_cases(tmp_path, "all")
    with pytest.raises(DatasetError, match="none of the 8 images below it has a mask"):
        list_cases(SMALL_DATA / "images", "all")  # the images folder itself, not the dataset's
    with pytest.raises(DatasetError, match="no such folder"):
        list_cases(tmp_path / "missing", "all")
    monkeypatch.setattr(dataset_tree, "MAX_ENTRIES", 10)
    with pytest.raises(DatasetError, match="more than 10 files and folders below it"):
        list_cases(_ph2(tmp_path / "ph2", STEMS[:4]), "all")


def test_evaluate_scores_ph2_s_own_layout_as_its_images_and_masks_copy(tmp_path, tiny_checkpoint, capsys):
    root = _ph2(tmp_path / "ph2", STEMS[:3])
    flat = tmp_path / "flat"
    for sub in ("images", "masks"):
        (flat / sub).mkdir(parents=True)
    for stem in STEMS[:3]:
        shutil.copy(SMALL_DATA / "images" / f"{stem}.jpg", flat / "images")
        shutil.copy(SMALL_DATA / "masks" / f"{stem}.png", flat / "masks")
    reports = []
    for data, name in ((root, "tree.json"), (flat, "flat.json")):
        code = main(["evaluate", str(data), "--split", "all", "--checkpoint", str(tiny_checkpoint), "--device", "cpu",
                     "--json", str(tmp_path / name)])
        assert code == 0
        reports.append(json.loads((tmp_path / name).read_text()))
    assert "found by name below it" in capsys.readouterr().err
    assert reports[0]["n_images"] == 3 and reports[0]["metrics"] == reports[1]["metrics"]
    assert [r["dice"] for r in reports[0]["per_image"]] == [r["dice"] for r in reports[1]["per_image"]]


def test_evaluate_gives_hd95_in_percent_of_each_image_s_diagonal_and_says_when_sizes_differ(tmp_path, tiny_checkpoint, capsys):
    root = tmp_path / "clinic"
    (root / "photos").mkdir(parents=True)
    for index, stem in enumerate(STEMS[:2]):
        image, mask = Image.open(SMALL_DATA / "images" / f"{stem}.jpg"), Image.open(SMALL_DATA / "masks" / f"{stem}.png")
        if index:  # another camera: twice the pixels each way
            image, mask = image.resize((image.width * 2, image.height * 2)), mask.resize((mask.width * 2, mask.height * 2), Image.NEAREST)
        image.save(root / "photos" / f"{stem}.png")
        mask.save(root / "photos" / f"{stem}_mask.png")
    code = main(["evaluate", str(root), "--split", "all", "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--json", str(tmp_path / "r.json")])
    assert code == 0
    assert "note: the images have 2 sizes" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    for record in report["per_image"]:
        width, height = record["size"]
        assert record["hd95_percent"] == pytest.approx(100 * record["hd95"] / np.hypot(width, height))
    assert report["metrics"]["hd95_percent"] == pytest.approx(np.mean([r["hd95_percent"] for r in report["per_image"]]))


def _segment_outputs(folder, stem, mask):
    """What ``mlffm segment`` or the plugin's Export leave for one image: its mask proposal, a map, the sidecar naming them."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(folder / f"{stem}_segmentation.png")
    Image.fromarray(np.zeros((8, 8), np.float32)).save(folder / f"{stem}_probability.tif")
    names = [f"{stem}_segmentation.png", f"{stem}_probability.tif", f"{stem}.json"]
    (folder / f"{stem}.json").write_text(json.dumps({"source": f"{stem}.bmp", "outputs": names}))


def test_segment_outputs_in_the_tree_are_never_the_reference_nor_a_mask_of_another_name_in_another_folder(tmp_path):
    root = _ph2(tmp_path / "ph2", STEMS[:3])
    for stem in STEMS[:3]:  # an earlier `mlffm segment -o predictions`: <id>_segmentation.png beside PH2's <id>_lesion.bmp
        _segment_outputs(root / "predictions", stem, np.full((8, 8), 255, np.uint8))
    listing = list_cases(root, "all")
    assert [c.case_id for c in listing.cases] == STEMS[:3]
    assert all(c.mask_path.name == f"{c.case_id}_lesion.bmp" for c in listing.cases), [c.mask_path for c in listing.cases]
    assert "6 files an earlier mlffm segment or export wrote (named in their .json) not taken" in listing.notes[0]
    (root / "predictions" / f"{STEMS[0]}.json").unlink()  # the proposals copied without their sidecar: which is the reference?
    listing = list_cases(root, "all")
    assert [c.case_id for c in listing.cases] == STEMS[1:3]
    assert len(listing.skipped) == 1 and "masks are found in 2 folders" in listing.skipped[0]
    assert f"{STEMS[0]}_lesion.bmp" in listing.skipped[0] and f"predictions/{STEMS[0]}_segmentation.png" in listing.skipped[0]


def test_an_image_name_in_two_folders_is_paired_with_neither(tmp_path):
    root = tmp_path / "kaggle"  # Kaggle's train/ + train_masks/ beside test/, each numbered from 0: test/0.jpg is not train/0.jpg
    for folder in ("train", "train_masks", "test"):
        (root / folder).mkdir(parents=True)
    for index, stem in enumerate(STEMS[:2]):
        shutil.copy(SMALL_DATA / "images" / f"{stem}.jpg", root / "train" / f"{index}.jpg")
        shutil.copy(SMALL_DATA / "masks" / f"{stem}.png", root / "train_masks" / f"{index}.png")
        shutil.copy(SMALL_DATA / "images" / f"{STEMS[-1 - index]}.jpg", root / "test" / f"{index}.jpg")
    shutil.copy(SMALL_DATA / "images" / f"{STEMS[2]}.jpg", root / "train" / "2.jpg")
    shutil.copy(SMALL_DATA / "masks" / f"{STEMS[2]}.png", root / "train_masks" / "2.png")
    listing = list_cases(root, "all")
    assert [(c.case_id, c.image_path.parent.name) for c in listing.cases] == [("2", "train")]
    assert len(listing.skipped) == 2 and all("its image name is found in 2 folders" in line for line in listing.skipped)
    assert "test/0.jpg" in listing.skipped[0] and "train/0.jpg" in listing.skipped[0]


def test_folders_the_search_does_not_look_into_are_named_and_a_folder_of_pairs_is_not_read_by_its_name(tmp_path, monkeypatch):
    import os

    root = tmp_path / "clinic"
    deep = root.joinpath(*[f"level{i}" for i in range(dataset_tree.MAX_DEPTH + 1)])
    pairs = root / "lesion_segmentation"  # a mask word in its name, but it holds photos beside their masks
    unreadable, outside = root / "visit2", tmp_path / "elsewhere"
    for folder, stem in ((root / "visit1", STEMS[0]), (deep, STEMS[1]), (pairs, STEMS[2]), (unreadable, STEMS[3]), (outside, STEMS[4])):
        folder.mkdir(parents=True)
        shutil.copy(SMALL_DATA / "images" / f"{stem}.jpg", folder)
        shutil.copy(SMALL_DATA / "masks" / f"{stem}.png", folder / f"{stem}_mask.png")
    (root / "visit3").symlink_to(outside, target_is_directory=True)
    scandir = os.scandir

    def refuse(path="."):
        if os.fspath(path) == str(unreadable):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)
    listing = list_cases(root, "all")
    assert {c.case_id: c.image_path.parent for c in listing.cases} == {STEMS[0]: root / "visit1", STEMS[2]: pairs}
    note = listing.notes[0]
    assert "folders not looked into" in note and "visit2 (cannot be listed: Permission denied)" in note
    assert "visit3 (a link to a folder)" in note and f"level{dataset_tree.MAX_DEPTH} (deeper than {dataset_tree.MAX_DEPTH} folders)" in note


def test_one_photo_unpacked_from_two_archives_is_one_image(tmp_path):
    root = _isic_download(tmp_path / "isic")
    shutil.copytree(root / "ISIC2018_Task1-2_Training_Input", root / "ISIC2018_Task3_Training_Input")  # the same photos again
    listing = list_cases(root, "all")
    assert sorted(c.case_id for c in listing.cases) == STEMS
    assert all(c.image_path.parent.name == "ISIC2018_Task1-2_Training_Input" for c in listing.cases)


def test_a_photo_of_a_type_not_read_with_a_mask_is_a_case_left_out_and_said_to_be(tmp_path):
    root = tmp_path / "clinic"
    for folder in ("Images", "Masks", "phone"):
        (root / folder).mkdir(parents=True)
    shutil.copy(SMALL_DATA / "images" / f"{STEMS[0]}.jpg", root / "Images")
    shutil.copy(SMALL_DATA / "masks" / f"{STEMS[0]}.png", root / "Masks")
    Image.open(SMALL_DATA / "images" / f"{STEMS[1]}.jpg").save(root / "Images" / f"{STEMS[1]}.webp")
    shutil.copy(SMALL_DATA / "masks" / f"{STEMS[1]}.png", root / "Masks")
    (root / "phone" / f"{STEMS[2]}.heic").write_bytes(b"heic")  # a photo of another type, beside its mask
    shutil.copy(SMALL_DATA / "masks" / f"{STEMS[2]}.png", root / "phone" / f"{STEMS[2]}_mask.png")
    (root / "phone" / "logo.webp").write_bytes(b"webp")  # no mask: not a case
    listing = list_cases(root, "all")
    assert [c.case_id for c in listing.cases] == [STEMS[0]]
    assert len(listing.skipped) == 2 and all("is not a supported image type" in line for line in listing.skipped)
    assert f"{STEMS[1]}.webp" in listing.skipped[0] + listing.skipped[1] and f"{STEMS[2]}.heic" in listing.skipped[0] + listing.skipped[1]
    assert "1 image without a mask not taken as cases (phone/logo.webp)" in listing.notes[0]


def test_evaluate_says_which_of_two_masks_beside_an_image_it_scored_against(tmp_path, tiny_checkpoint, capsys):
    root = tmp_path / "flat"
    root.mkdir()
    stem = STEMS[0]
    shutil.copy(SMALL_DATA / "images" / f"{stem}.jpg", root)
    shutil.copy(SMALL_DATA / "masks" / f"{stem}.png", root / f"{stem}_mask.png")
    shutil.copy(SMALL_DATA / "masks" / f"{stem}.png", root / f"{stem}_segmentation.png")  # a proposal copied in, no sidecar
    code = main(["evaluate", str(root), "--split", "all", "--checkpoint", str(tiny_checkpoint), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 0
    assert f"warning: {root / (stem + '_segmentation.png')}: used as {stem}'s mask; {stem}_mask.png beside it ignored" in err


def _isic_with_splits(root):
    """ISIC's three archives of each kind unpacked side by side: the split of each case is its folder's."""
    parts = {"Training": STEMS[:4], "Validation": STEMS[4:6], "Test": STEMS[6:]}
    for name, stems in parts.items():
        inputs, truth = root / f"ISIC2018_Task1-2_{name}_Input", root / f"ISIC2018_Task1_{name}_GroundTruth"
        inputs.mkdir(parents=True)
        truth.mkdir()
        for stem in stems:
            shutil.copy(SMALL_DATA / "images" / f"{stem}.jpg", inputs)
            shutil.copy(SMALL_DATA / "masks" / f"{stem}.png", truth / f"{stem}_segmentation.png")
    return root


def test_a_tree_without_splits_csv_takes_its_splits_from_its_folders_names(tmp_path):
    root = _isic_with_splits(tmp_path / "isic")
    assert [c.case_id for c in list_cases(root, "test").cases] == STEMS[6:]
    assert [c.case_id for c in list_cases(root, "val").cases] == STEMS[4:6]
    listing = list_cases(root, "train")
    assert [c.case_id for c in listing.cases] == STEMS[:4]
    assert any("no splits.csv; the splits are its folders' names: train 4, val 2, test 2" in n for n in listing.notes)
    assert len(list_cases(root, "all").cases) == 8
    (root / "splits.csv").write_text("id,split\n" + "".join(f"{s},test\n" for s in STEMS))  # a splits.csv wins
    assert len(list_cases(root, "test").cases) == 8
    from training.data.splits import folder_split

    assert folder_split(("train_test",)) is None and folder_split(("data", "Testing", "batch 2")) == "test"
    assert folder_split(("contest photos",)) is None  # a word, not a part of one


def test_finetune_and_calibrate_never_use_the_test_folder_of_a_tree(tmp_path, tiny_checkpoint, capsys):
    root = _isic_with_splits(tmp_path / "isic")
    out = tmp_path / "c.mlffm"
    assert main(["calibrate", str(root), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--split", "all",
                 "--samples", "2", "--steps", "1"]) == 0
    assert "left out 2 cases that" in capsys.readouterr().err
    from model import Segmenter

    assert Segmenter.load(out, "cpu").provenance["calibration"]["n_images"] == 6
    code = main(["evaluate", str(root), "--split", "Test", "--checkpoint", str(tiny_checkpoint), "--device", "cpu"])
    assert code == 2 and "no cases in split 'Test' (its folders name 'test', 'train', 'val')" in capsys.readouterr().err


def test_images_without_a_mask_in_a_split_folder_are_no_cases_nor_counted_in_its_split(tmp_path):
    """ISIC 2017's archives ship <id>_superpixels.png beside each photo: no case, not a skipped one of its split."""
    root = _isic_with_splits(tmp_path / "isic")
    for folder in root.glob("*_Input"):
        for photo in folder.glob("*.jpg"):
            Image.new("RGB", (8, 8)).save(folder / f"{photo.stem}_superpixels.png")
    listing = list_cases(root, "test")
    assert [c.case_id for c in listing.cases] == STEMS[6:]
    assert not listing.skipped and not listing.problems
    assert any("the splits are its folders' names: train 4, val 2, test 2" in n for n in listing.notes), listing.notes


def test_images_in_no_split_folder_are_not_said_to_be_missing_from_a_splits_csv_that_does_not_exist(tmp_path):
    root = _isic_with_splits(tmp_path / "isic")
    extra = root / "extra_images"
    extra.mkdir()
    shutil.copy(SMALL_DATA / "images" / f"{STEMS[0]}.jpg", extra / "other.jpg")
    shutil.copy(SMALL_DATA / "masks" / f"{STEMS[0]}.png", extra / "other_mask.png")
    listing = list_cases(root, "test")
    assert [c.case_id for c in listing.cases] == STEMS[6:]
    assert not any(str(root / "splits.csv") in p for p in listing.problems), listing.problems
    assert any("1 image is in no split (other)" in p for p in listing.problems), listing.problems


def test_finetune_never_replays_the_test_folder_of_a_tree(tmp_path, tiny_checkpoint, capsys):
    replay = _isic_with_splits(tmp_path / "isic")
    data = tmp_path / "clinic"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for n, stem in enumerate(STEMS[:3]):
        shutil.copy(SMALL_DATA / "images" / f"{stem}.jpg", data / "images" / f"c{n}.jpg")
        shutil.copy(SMALL_DATA / "masks" / f"{stem}.png", data / "masks" / f"c{n}.png")
    out = tmp_path / "tuned.mlffm"
    assert main(["finetune", str(data), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--epochs", "1",
                 "--batch-size", "4", "--replay", str(replay)]) == 0
    from model import Segmenter

    provenance = Segmenter.load(out, "cpu").provenance
    assert provenance["replay_data"]["n_images"] == 6  # its train and val folders, never its test folder
    assert not set(STEMS[6:]) & set(provenance["finetune_train_ids"])


def test_a_photo_unpacked_from_two_archives_is_no_skipped_case(tmp_path):
    """Kaggle's HAM10000 holds each photo in HAM10000_images_part_1/ and again in ham10000_images_part_1/."""
    root = _isic_download(tmp_path / "isic")
    shutil.copytree(root / "ISIC2018_Task1-2_Training_Input", root / "ISIC2018_Task3_Training_Input")
    listing = list_cases(root, "all")
    assert sorted(c.case_id for c in listing.cases) == STEMS
    assert not listing.skipped and not listing.problems, listing.skipped[:2]


def test_a_photo_copied_into_train_and_test_folders_is_a_test_case_never_trained_on(tmp_path):
    root = tmp_path / "data"
    for folder in ("Train", "test", "masks"):
        (root / folder).mkdir(parents=True)
    for stem in STEMS[:3]:
        shutil.copy(SMALL_DATA / "images" / f"{stem}.jpg", root / "Train")
        shutil.copy(SMALL_DATA / "masks" / f"{stem}.png", root / "masks")
    shutil.copy(SMALL_DATA / "images" / f"{STEMS[0]}.jpg", root / "test")  # the same photo unpacked twice
    assert [c.case_id for c in list_cases(root, "test").cases] == [STEMS[0]]
    assert [c.case_id for c in list_cases(root, "train").cases] == STEMS[1:3]  # it was in train: Train/ sorts first
    assert list_cases(root, "all").splits[STEMS[0]] == "test"  # what finetune, calibrate and adapt leave out


def test_a_split_asked_of_a_tree_that_names_none_says_neither_splits_csv_nor_folders_give_one(tmp_path):
    root = _ph2(tmp_path / "ph2", STEMS[:2])
    with pytest.raises(DatasetError, match="no splits.csv and no folder below it is named for a split .* ask for the split 'all'"):
        list_cases(root, "test")
