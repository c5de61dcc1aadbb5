"""Dataset folders: both mask namings, splits.csv, bad files, size mismatches, unsafe ids."""

import shutil

import numpy as np
import pytest
from PIL import Image

from training.data.datasets import DatasetError, cache_dataset, list_cases, load_case, safe_id
from training.data.imageio import ImageReadError, read_mask

from .conftest import SMALL_DATA


def _make(root, cases):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name, mask_name, size in cases:
        Image.fromarray(np.full((size, size, 3), 90, np.uint8)).save(root / "images" / name)
        if mask_name:
            mask = np.zeros((size, size), np.uint8)
            mask[2:6, 2:6] = 255
            Image.fromarray(mask).save(root / "masks" / mask_name)
    return root


def test_real_fixture_folder_with_splits():
    train = list_cases(SMALL_DATA, "train")
    val = list_cases(SMALL_DATA, "val")
    assert len(train.cases) == 6 and len(val.cases) == 2 and not train.problems
    image, mask = load_case(train.cases[0])
    assert image.shape == (96, 96, 3) and mask.dtype == bool and 0 < mask.mean() < 1
    assert len(list_cases(SMALL_DATA, "all").cases) == 8
    assert train.ids_hash() != val.ids_hash()


def test_both_mask_namings_and_problems(tmp_path):
    root = _make(tmp_path / "d", [("a.png", "a.png", 8), ("b.jpg", "b_segmentation.png", 8), ("c.png", None, 8)])
    (root / "images" / "readme.txt").write_text("x")
    listing = list_cases(root)
    assert [c.case_id for c in listing.cases] == ["a", "b"]
    assert any("c.png" in p and "no mask" in p for p in listing.problems)
    assert any("readme.txt" in p for p in listing.problems)


def test_splits_csv_unknown_ids_and_missing_splits(tmp_path):
    root = _make(tmp_path / "d", [("a.png", "a.png", 8), ("b.png", "b.png", 8)])
    (root / "splits.csv").write_text("id,split\na,train\nb,val\nghost,train\n")
    listing = list_cases(root, "train")
    assert [c.case_id for c in listing.cases] == ["a"]
    assert any("ghost" in p for p in listing.problems)
    (root / "splits.csv").unlink()
    with pytest.raises(DatasetError, match="splits.csv"):
        list_cases(root, "train")
    with pytest.raises(DatasetError, match="no such folder"):
        list_cases(tmp_path / "nowhere")


def test_duplicate_ids_are_reported(tmp_path):
    root = _make(tmp_path / "d", [("a.png", "a.png", 8), ("a.jpg", None, 8)])
    listing = list_cases(root)
    assert len(listing.cases) == 1 and any("duplicate" in p for p in listing.problems)


def test_size_mismatch_and_unreadable_files_are_named_and_skipped(tmp_path):
    root = _make(tmp_path / "d", [("a.png", "a.png", 8), ("b.png", "b.png", 8)])
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(root / "masks" / "b.png")
    (root / "images" / "c.png").write_bytes(b"garbage")
    shutil.copy(root / "masks" / "a.png", root / "masks" / "c.png")
    listing = list_cases(root)
    with pytest.raises(ImageReadError, match="b.png: mask size 7x5 differs"):
        load_case(listing.cases[1])
    problems = []
    cached = cache_dataset(listing.cases, 16, on_problem=problems.append)
    assert cached.ids == ["a"] and cached.images.shape == (1, 16, 16, 3)
    assert any("b.png" in p for p in problems) and any("c.png" in p for p in problems)


@pytest.mark.parametrize("values, expected", [((0, 1), [False, True]), ((0, 255), [False, True]), ((100, 200), [False, True])])
def test_mask_encodings(tmp_path, values, expected):
    path = tmp_path / "m.png"
    Image.fromarray(np.array([values], np.uint8)).save(path)
    assert read_mask(path).tolist() == [expected]


@pytest.mark.parametrize("case_id, ok", [("ISIC_0000001", True), ("a b é", True), ("../../x", False), ("..", False), (".hidden", False), ("a\\b", False), ("", False), ("a\nb", False), ("a\tb", False), ("a\x1b[31mb", False), ("a\x9b31mb", False), ("a\u2028b", False), ("a\xa0b", True)])
def test_safe_ids(case_id, ok):
    assert safe_id(case_id) is ok


def test_a_mask_drawn_on_an_unturned_photo_is_warned_of_and_an_upright_one_is_not(tmp_path):
    """A square photo stored turned with an orientation tag (6) keeps its size upright, so a mask drawn on its
    stored pixels passed every size check and scored against the wrong orientation, silently."""
    import warnings

    from training.data.image_header import ImageReadWarning

    ids = sorted(p.stem for p in (SMALL_DATA / "images").glob("*.jpg"))
    warned = {}
    for kind in ("as_stored", "upright"):
        root = tmp_path / kind
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
        for case_id in ids:
            photo = np.asarray(Image.open(SMALL_DATA / "images" / f"{case_id}.jpg").convert("RGB"))
            side = min(photo.shape[:2])
            photo = np.ascontiguousarray(photo[:side, :side])
            lesion = read_mask(next((SMALL_DATA / "masks").glob(f"{case_id}*")))[:side, :side]
            exif = Image.Exif()
            exif[0x0112] = 6  # shown turned a quarter clockwise: stored a quarter anticlockwise
            Image.fromarray(np.rot90(photo, 1)).save(root / "images" / f"{case_id}.png", exif=exif)
            mask = np.rot90(lesion, 1) if kind == "as_stored" else lesion
            Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"{case_id}.png")
        count = 0
        for case in list_cases(root).cases:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                load_case(case)
            count += sum(isinstance(w.message, ImageReadWarning) and "as stored" in str(w.message) for w in caught)
        warned[kind] = count
    assert warned["upright"] == 0
    assert warned["as_stored"] >= len(ids) // 2, warned
