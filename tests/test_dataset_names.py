"""Datasets whose names and splits another clinic spelled its own way: one name in two Unicode forms, split names
in another letter case, images in no split; and where test cases must stay unseen (calibration, the store)."""

from __future__ import annotations

import shutil
import unicodedata

import numpy as np
import pytest
from PIL import Image

from training.cli import main
from training.data.datasets import list_cases, load_case

from .conftest import SMALL_DATA


def _pair(root, stem: str, seed: int, square: slice) -> np.ndarray:
    image = np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    mask = np.zeros((48, 48), np.uint8)
    mask[square, square] = 255
    Image.fromarray(image).save(root / "images" / f"{stem}.png")
    Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    return mask > 0


def _folder(tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    return root


def test_one_name_in_two_unicode_forms_never_pairs_one_file_s_image_with_the_other_s_mask(tmp_path):
    root = _folder(tmp_path)
    composed, decomposed = unicodedata.normalize("NFC", "Müller"), unicodedata.normalize("NFD", "Müller")
    masks = {decomposed: _pair(root, decomposed, 1, slice(5, 20)), composed: _pair(root, composed, 2, slice(20, 45))}
    listing = list_cases(root, "all")
    assert len(listing.cases) == 1
    case = listing.cases[0]
    assert case.image_path.stem == case.mask_path.stem  # it took the other file's mask
    assert np.array_equal(load_case(case)[1], masks[case.image_path.stem])
    assert any("one name in two Unicode forms" in line for line in listing.problems)


def test_a_split_named_in_another_letter_case_and_images_in_no_split_are_said(tmp_path):
    root = _folder(tmp_path)
    for index, stem in enumerate(("a", "b", "c", "d")):
        _pair(root, stem, index, slice(10, 30))
    (root / "splits.csv").write_text("id,split\na,train\nb,test\nc,Test\n", encoding="utf-8")
    listing = list_cases(root, "test")
    assert [case.case_id for case in listing.cases] == ["b"]
    assert any("'c' is in split 'Test', not 'test'" in line for line in listing.skipped)  # evaluate names it and exits 1
    assert any("1 image is in no split (d), so not in 'test'" in line for line in listing.problems)


def test_calibrate_never_fits_on_test_cases(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "c.mlffm"
    code = main(["calibrate", str(SMALL_DATA), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--split", "Test", "--samples", "2", "--steps", "1"])
    assert code == 2 and "a model is never calibrated on its test split" in capsys.readouterr().err and not out.exists()
    data = tmp_path / "data"
    shutil.copytree(SMALL_DATA, data)
    ids = sorted(p.stem for p in (data / "images").iterdir())
    (data / "splits.csv").write_text("id,split\n" + "".join(f"{i},{'test' if k < 2 else 'val'}\n" for k, i in enumerate(ids)), encoding="utf-8")
    assert main(["calibrate", str(data), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--split", "all", "--samples", "2", "--steps", "1"]) == 0
    captured = capsys.readouterr()
    assert "left out 2 cases that" in captured.err and f"all: {len(ids) - 2} images" in captured.out


def test_the_store_refuses_an_outline_mask_that_training_would_leave_out(tmp_path):
    from training.corrections.store import CorrectionsStore

    ring = np.zeros((48, 48), bool)
    ring[5:43, 5:43] = True
    ring[7:41, 7:41] = False
    with pytest.raises(ValueError, match="case ring: mask is an outline"):
        CorrectionsStore(tmp_path).accept("ring", np.zeros((48, 48, 3), np.uint8), ring, {})
    assert not (tmp_path / "meta").exists() or not any((tmp_path / "meta").iterdir())


def test_two_masks_for_one_case_say_which_one_is_used(tmp_path):
    root = _folder(tmp_path)
    _pair(root, "a", 0, slice(10, 30))
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(root / "masks" / "a_segmentation.png")
    listing = list_cases(root, "all")
    assert listing.cases[0].mask_path.name == "a.png"
    assert any("a.png: used as a's mask; a_segmentation.png beside it ignored" in line for line in listing.problems)
