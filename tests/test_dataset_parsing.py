"""Hostile dataset folders: splits.csv quirks, train/test leaks, label and palette masks, non-UTF-8 names, skipped cases reported."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from model import Segmenter
from training.cli import main
from training.data.datasets import DatasetError, cache_dataset, list_cases
from training.data.splits import read_splits
from training.data.imageio import ImageReadError, read_mask
from training.data.masks import binary_mask

from .conftest import SMALL_DATA

TINY = ["--size", "32", "--widths", "8,16", "--batch-size", "2", "--device", "cpu"]


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(SMALL_DATA, root)
    return root


def _splits(root, text, bom=False):
    (root / "splits.csv").write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))


def test_a_utf8_bom_and_spaced_headers_are_accepted(data):
    original = (data / "splits.csv").read_text()
    _splits(data, original, bom=True)
    assert len(list_cases(data, "train").cases) == 6 and len(list_cases(data, "val").cases) == 2
    _splits(data, original.replace("id,split", " ID , Split "), bom=True)
    assert len(list_cases(data, "val").cases) == 2


def test_a_row_without_a_comma_is_a_one_line_error_naming_the_line(data, capsys):
    _splits(data, (data / "splits.csv").read_text() + "ISIC_0000099\n")
    with pytest.raises(DatasetError, match=r"splits.csv, line 10: expected id,split, found 'ISIC_0000099'"):
        read_splits(data)
    assert main(["train", str(data), "-o", str(data.parent / "m.mlffm"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "line 10" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    _splits(data, "id,split\nISIC_0000000,\n")
    with pytest.raises(DatasetError, match="line 2: empty id or split"):
        read_splits(data)


def test_an_id_in_two_splits_is_refused_as_a_leak_naming_the_id_and_both_splits(data, capsys):
    _splits(data, (data / "splits.csv").read_text() + "ISIC_0000015,train\n")
    with pytest.raises(DatasetError, match=r"'ISIC_0000015' is listed in two splits, 'val' \(line 8\) and 'train' \(line 10\).*leak"):
        list_cases(data, "val")
    assert main(["evaluate", str(data), "--split", "val", "--device", "cpu"]) == 2
    assert "train/test leak" in capsys.readouterr().err
    # the same split twice is no leak
    _splits(data, (data / "splits.csv").read_text().replace("ISIC_0000015,train\n", "ISIC_0000015,val\n"))
    assert [c.case_id for c in list_cases(data, "val").cases] == ["ISIC_0000015", "ISIC_0000016"]


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab,\n\r\" \ufeff#;\x00\u00e9")), max_size=60), header=st.booleans())
def test_any_splits_csv_is_read_or_refused_with_a_dataset_error(text, header):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "splits.csv").write_text(("id,split\n" if header else "") + text, encoding="utf-8")
        try:
            splits = read_splits(root)
        except DatasetError as err:
            assert "splits.csv" in str(err)
            return
        assert all(isinstance(k, str) and k and isinstance(v, str) and v for k, v in splits.items())


def test_an_exclude_list_with_a_bom_names_its_first_id(tmp_path):
    from training.data.id_lists import read_id_list

    (tmp_path / "ids.txt").write_bytes(b"\xef\xbb\xbfISIC_0000000\nISIC_0000001 # why\n")
    assert read_id_list(tmp_path / "ids.txt") == ("ISIC_0000000", "ISIC_0000001")


def _png(path, array, mode=None, palette=None):
    img = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    if palette is not None:
        img = img.convert("P") if img.mode != "P" else img
        img.putpalette(palette)
    img.save(path)
    return path


def test_label_masks_0_1_2_are_refused_with_a_message_not_read_as_empty(tmp_path):
    labels = np.zeros((8, 8), np.uint8)
    labels[2:5, 2:5], labels[5:7, 5:7] = 1, 2
    path = _png(tmp_path / "labels.png", labels)
    with pytest.raises(ImageReadError, match=r"labels.png: mask values 0, 1, 2 .*ambiguous"):
        read_mask(path)
    # in a dataset the case is skipped with that line, never trained on as an empty mask
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(root / "images" / "a.png")
    shutil.copy(path, root / "masks" / "a.png")
    problems = []
    cached = cache_dataset(list_cases(root).cases, 8, on_problem=problems.append)
    assert cached.ids == [] and len(problems) == 1 and "ambiguous" in problems[0] and "a.png" in problems[0]


def test_palette_and_colour_masks_resolve_their_colours(tmp_path):
    truth = np.zeros((8, 8), bool)
    truth[1:4, 2:6] = True
    indices = truth.astype(np.uint8)  # index 1 = dark red (80, 0, 0): luminance 24, below any 0..255 threshold
    palette = [0, 0, 0, 80, 0, 0] + [0] * (256 * 3 - 6)
    img = Image.fromarray(indices, "L").convert("P")
    img.putpalette(palette)
    img.save(tmp_path / "palette.png")
    assert Image.open(tmp_path / "palette.png").mode == "P"
    assert np.array_equal(read_mask(tmp_path / "palette.png"), truth)
    # palette with the lesion at index 0 and background at index 1: colours decide, not indices
    img = Image.fromarray((~truth).astype(np.uint8), "L").convert("P")
    img.putpalette([200, 30, 30, 0, 0, 0] + [0] * (256 * 3 - 6))
    img.save(tmp_path / "palette0.png")
    assert np.array_equal(read_mask(tmp_path / "palette0.png"), truth)
    red = np.zeros((8, 8, 3), np.uint8)
    red[truth] = (255, 0, 0)
    assert np.array_equal(read_mask(_png(tmp_path / "red.png", red)), truth)
    white_on_blue = np.zeros((8, 8, 3), np.uint8)
    white_on_blue[...] = (0, 0, 255)
    white_on_blue[truth] = (255, 255, 255)
    assert np.array_equal(read_mask(_png(tmp_path / "blue.png", white_on_blue)), truth)
    labels = np.zeros((8, 8, 3), np.uint8)
    labels[truth] = (255, 0, 0)
    labels[6:, 6:] = (0, 255, 0)
    with pytest.raises(ImageReadError, match="colours .* ambiguous"):
        read_mask(_png(tmp_path / "labels.png", labels))
    alpha = np.zeros((8, 8, 4), np.uint8)
    alpha[truth, 3] = 255
    assert np.array_equal(read_mask(_png(tmp_path / "alpha.png", alpha)), truth)
    # the documented rule: two values one of them 0 -> the other is the lesion; one value -> all or nothing
    assert binary_mask(np.array([[0, 7]], np.uint8)).tolist() == [[False, True]]
    assert binary_mask(np.array([[0, 40000]], np.uint16)).tolist() == [[False, True]]
    assert binary_mask(np.ones((2, 2), np.uint8)).all() and not binary_mask(np.zeros((2, 2), np.uint8)).any()
    assert binary_mask(np.array([[0, 100, 200, 255]], np.uint8)).tolist() == [[False, False, True, True]]


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.integers(0, 255), min_size=1, max_size=12), mode=st.sampled_from(["L", "P", "RGB"]))
def test_a_mask_with_lesion_values_is_never_read_as_empty(values, mode):
    with tempfile.TemporaryDirectory() as folder:
        _check_never_empty(Path(folder) / "m.png", values, mode)


def _check_never_empty(path, values, mode):
    array = np.array([values, values], np.uint8)  # two rows: a 1 x 12 strip is beyond the 10:1 aspect limit
    if mode == "P":
        img = Image.fromarray(array, "L").convert("P")
        img.putpalette([c for v in range(256) for c in (v, 0, 0)])  # index v -> colour (v, 0, 0)
    elif mode == "RGB":
        img = Image.fromarray(np.stack([np.zeros_like(array), array, np.zeros_like(array)], axis=2))
    else:
        img = Image.fromarray(array)
    img.save(path)
    try:
        mask = read_mask(path)
    except ImageReadError as err:
        assert "ambiguous" in str(err) and "m.png" in str(err)
        return
    assert mask.shape == array.shape
    assert mask.any() == bool(array.any())


def test_a_file_name_that_is_not_utf8_is_named_and_training_goes_on(data, capsys):
    bad = os.path.join(os.fsencode(data / "images"), b"caf\xe9.jpg")
    shutil.copyfile(os.fsencode(data / "images" / "ISIC_0000000.jpg"), bad)
    shutil.copyfile(os.fsencode(data / "masks" / "ISIC_0000000.png"), os.path.join(os.fsencode(data / "masks"), b"caf\xe9.png"))
    listing = list_cases(data, "all")
    assert len(listing.cases) == 8
    named = [p for p in listing.problems if "not valid UTF-8" in p]
    assert len(named) == 1 and "caf\\xe9.jpg" in named[0]
    named[0].encode("utf-8")  # printable anywhere
    output = data.parent / "m.mlffm"
    assert main(["train", str(data), "-o", str(output), *TINY, "--epochs", "1"]) == 0
    captured = capsys.readouterr()
    assert "caf\\xe9.jpg" in captured.err and "Traceback" not in captured.err
    assert Segmenter.load(output, "cpu").provenance["data"]["n_images"] == 6


def test_evaluate_and_calibrate_list_the_cases_they_skip(data, tiny_checkpoint, capsys):
    (data / "masks" / "ISIC_0000016.png").unlink()
    report = data.parent / "r.json"
    code = main(["evaluate", str(data), "--split", "val", "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--json", str(report)])
    out = capsys.readouterr().out
    assert code == 1  # fewer images than the split has: not a silent success
    assert "skipped 1 cases of val" in out and "ISIC_0000016.jpg: skipped, no mask" in out
    saved = json.loads(report.read_text())
    assert saved["n_images"] == 1 and len(saved["skipped"]) == 1 and "ISIC_0000016" in saved["skipped"][0]
    calibrated = data.parent / "c.mlffm"
    code = main(["calibrate", str(data), "-o", str(calibrated), "--checkpoint", str(tiny_checkpoint), "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 1 and "skipped 1 cases of val" in out and "ISIC_0000016" in out
    record = Segmenter.load(calibrated, "cpu").provenance["calibration"]
    assert record["n_images"] == 1 and "ISIC_0000016" in record["skipped"][0]


def test_evaluate_and_calibrate_skip_an_image_that_runs_out_of_memory_and_go_on(data, tiny_checkpoint, capsys, monkeypatch):
    from model import InsufficientMemoryError

    real_propose = Segmenter.propose
    calls = []

    def propose(self, image, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # the first val case (sorted order)
            raise InsufficientMemoryError("out of memory proposing 16 samples of a 9000 x 9000 image (simulated)")
        return real_propose(self, image, *args, **kwargs)

    monkeypatch.setattr(Segmenter, "propose", propose)
    report = data.parent / "r.json"
    code = main(["evaluate", str(data), "--split", "val", "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--json", str(report)])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    assert "skipped 1 cases of val" in captured.out and "out of memory proposing" in captured.out
    saved = json.loads(report.read_text())
    assert saved["n_images"] == 1 and ".jpg: out of memory" in saved["skipped"][0]
    calls.clear()
    calibrated = data.parent / "c.mlffm"
    code = main(["calibrate", str(data), "-o", str(calibrated), "--checkpoint", str(tiny_checkpoint), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err and "out of memory" in captured.out
    assert Segmenter.load(calibrated, "cpu").provenance["calibration"]["n_images"] == 1


def test_a_split_that_selects_nothing_names_the_splits_the_file_holds(tmp_path, capsys):
    from training.cli import main

    from .conftest import SMALL_DATA

    data = tmp_path / "data"
    shutil.copytree(SMALL_DATA, data)
    rows = (data / "splits.csv").read_text().splitlines()
    (data / "splits.csv").write_text("\n".join([rows[0]] + [row.rsplit(",", 1)[0] + "," + row.rsplit(",", 1)[1].title() for row in rows[1:]]) + "\n")
    for args in (["evaluate", str(data), "--split", "val"], ["train", str(data), "-o", str(tmp_path / "m.mlffm"), "--size", "32", "--epochs", "1"]):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"no cases in split '{'val' if args[0] == 'evaluate' else 'train'}' (its splits.csv has 'Train', 'Val')" in err, err
        assert args[0] != "evaluate" or "is in split 'Val', not 'val'" in err, err  # the first case left out, and why


def test_masks_named_as_other_datasets_name_them_are_found_and_read(tmp_path):
    data = tmp_path / "clinic"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    lesion = np.zeros((30, 40), np.uint8)
    lesion[10:20, 12:30] = 255
    names = {"a": "a_lesion.bmp", "b": "b_mask.PNG", "c": "c_segmentation.tif", "d": "d.gif", "e": "e.png"}
    for case_id, mask_name in names.items():
        Image.fromarray(np.full((30, 40, 3), 120, np.uint8)).save(data / "images" / f"{case_id}.jpg")
        Image.fromarray(lesion).save(data / "masks" / mask_name)
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(data / "masks" / "e_mask.png")  # e.png comes first
    Image.fromarray(np.full((30, 40, 3), 120, np.uint8)).save(data / "images" / "f.jpg")  # no mask at all
    listing = list_cases(data, "all")
    assert {c.case_id: c.mask_path.name for c in listing.cases} == names
    assert any("f.jpg: skipped, no mask masks/f.png (nor f_segmentation, _lesion or _mask" in p for p in listing.problems)
    from training.data.datasets import load_case

    for case in listing.cases:
        assert np.array_equal(load_case(case)[1], lesion > 0), case.case_id


def test_a_mask_name_never_crosses_to_another_image(tmp_path):
    data = tmp_path / "d"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for case_id, value in (("A", 1), ("a", 2), ("mole", 3), ("mole_lesion", 4)):
        Image.fromarray(np.full((10, 12, 3), 100 + value, np.uint8)).save(data / "images" / f"{case_id}.png")
    for name in ("A.png", "a.png", "mole_lesion.png"):  # no mask for "mole": mole_lesion.png is the image mole_lesion's
        Image.fromarray(np.zeros((10, 12), np.uint8)).save(data / "masks" / name)
    (data / "splits.csv").write_text("id,split\nA,train\na,train\nmole,train\nmole_lesion,val\n")
    for split in ("all", "train"):
        listing = list_cases(data, split)
        found = {c.case_id: c.mask_path.name for c in listing.cases}
        assert found == {"A": "A.png", "a": "a.png"} | ({"mole_lesion": "mole_lesion.png"} if split == "all" else {}), split
        assert any("mole.png: skipped, no mask" in p for p in listing.problems)


def test_a_mask_matched_ignoring_letter_case_is_never_another_image_s_exact_mask(tmp_path):
    data = tmp_path / "d"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for case_id, value in (("Lesion", 1), ("lesion", 2), ("Mole", 3)):
        Image.fromarray(np.full((10, 12, 3), 100 + value, np.uint8)).save(data / "images" / f"{case_id}.png")
    for name in ("Lesion.png", "MOLE_lesion.png"):
        Image.fromarray(np.zeros((10, 12), np.uint8)).save(data / "masks" / name)
    listing = list_cases(data, "all")
    found = {c.case_id: c.mask_path.name for c in listing.cases}
    assert found == {"Lesion": "Lesion.png", "Mole": "MOLE_lesion.png"}  # "lesion" was scored against "Lesion"'s mask
    assert any("lesion.png: skipped, no mask" in p for p in listing.problems)


def test_evaluate_names_the_cases_of_its_split_that_it_cannot_score(data, tiny_checkpoint, capsys):
    shutil.copy(data / "images" / "ISIC_0000015.jpg", data / "images" / "ISIC_0000099.webp")  # a photograph of a type not read
    shutil.copy(data / "masks" / "ISIC_0000015.png", data / "masks" / "ISIC_0000099.png")
    (data / "images" / "batch2").mkdir()
    shutil.copy(data / "images" / "ISIC_0000015.jpg", data / "images" / "batch2" / "ISIC_0000098.jpg")
    (data / "images" / "Thumbs.db").write_bytes(b"\0" * 16)  # not a case: a problem for train's listing, no skip
    (data / "splits.csv").write_text((data / "splits.csv").read_text() + "ISIC_0000099,val\nISIC_0000097,val\nISIC_0000096,test\n")
    code = main(["evaluate", str(data), "--split", "val", "--checkpoint", str(tiny_checkpoint), "--samples", "2", "--steps", "1", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1  # was exit 0 with "val: 2 images" and not a word
    assert "skipped 2 cases of val" in captured.out
    assert "ISIC_0000099.webp: skipped, .webp is not a supported image type" in captured.out
    assert "id 'ISIC_0000097' has no image" in captured.out and "ISIC_0000096" not in captured.out  # another split's
    listing = list_cases(data, "train")
    assert any("batch2/: a folder, not read" in p for p in listing.problems) and any("Thumbs.db" in p for p in listing.problems)
    assert listing.skipped == ()


def test_evaluate_says_what_hd95_is_over_and_that_nothing_could_be_scored(tmp_path, tiny_checkpoint, capsys):
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    skin = np.full((32, 32, 3), (200, 150, 130), np.uint8)
    skin[::2] = (190, 140, 120)  # not blank
    lesion = np.zeros((32, 32), np.uint8)
    lesion[8:24, 8:24] = 255
    for case_id, mask in (("a", lesion), ("b", np.zeros((32, 32), np.uint8))):
        Image.fromarray(skin).save(root / "images" / f"{case_id}.png")
        Image.fromarray(mask).save(root / "masks" / f"{case_id}.png")
    report = tmp_path / "r.json"
    args = ["evaluate", str(root), "--split", "all", "--checkpoint", str(tiny_checkpoint), "--samples", "2", "--steps", "1", "--device", "cpu"]
    assert main([*args, "--json", str(report)]) == 0
    saved = json.loads(report.read_text())
    defined = sum(r["hd95"] is not None and r["hd95"] == r["hd95"] for r in saved["per_image"])
    assert saved["hd95_images"] == defined
    if defined < 2:
        assert f"over {defined} of 2 images" in capsys.readouterr().out
    for name in ("a", "b"):
        (root / "masks" / f"{name}.png").write_bytes(b"not a png")
    assert main(args) == 2  # was a table of NaN
    assert "none of the 2 cases of split 'all' could be scored" in capsys.readouterr().err


def test_finetune_never_trains_on_test_cases_and_needs_a_held_out_case(data, tiny_checkpoint, capsys):
    from training.commands.train import without_test_cases

    (data / "splits.csv").write_text((data / "splits.csv").read_text().replace("ISIC_0000000,train", "ISIC_0000000,test"))
    kept = without_test_cases(list_cases(data), data)
    assert "ISIC_0000000" not in {c.case_id for c in kept.cases} and len(kept.cases) == 7
    assert "left out 1 cases that" in capsys.readouterr().err
    one = data.parent / "one"
    (one / "images").mkdir(parents=True)
    (one / "masks").mkdir()
    shutil.copy(data / "images" / "ISIC_0000001.jpg", one / "images")
    shutil.copy(data / "masks" / "ISIC_0000001.png", one / "masks")
    code = main(["finetune", str(one), "-o", str(data.parent / "ft.mlffm"), "--checkpoint", str(tiny_checkpoint), "--epochs", "1", "--batch-size", "2", "--device", "cpu"])
    assert code == 2 and "need at least 2 usable cases" in capsys.readouterr().err  # was "val Dice nan (best)"


def test_calibrate_warns_when_its_fit_cannot_hold(tmp_path, tiny_checkpoint, capsys):
    from training.commands.calibrate import fit_warnings

    assert fit_warnings(40, 30, 40, 1.3, 0.05, 0.03) == []
    lines = fit_warnings(4, 0, 4, 8.0, 0.2, 0.3)
    assert len(lines) == 4 and "no mask holds any lesion" in lines[0] and "fitted on 4 cases" in lines[1]
    assert "end of its search range" in lines[2] and "calibration error rose" in lines[3]


def test_a_val_split_that_is_the_training_split_is_said_and_a_missing_splits_csv_names_the_option(tmp_path, capsys):
    root = tmp_path / "d"
    shutil.copytree(SMALL_DATA, root)
    (root / "splits.csv").unlink()
    args = ["train", str(root), "--split", "all", "-o", str(tmp_path / "m.mlffm"), *TINY, "--epochs", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "(for --val-split val" in err and "--val-split '' holds out 15% of the training cases" in err  # the way out, named
    assert main([*args, "--val-split", "all"]) == 0
    assert "shares cases with --split all" in capsys.readouterr().out + capsys.readouterr().err
    assert main([*args, "--val-split", "", "--overwrite"]) == 0
    assert "holding out 15% of the training cases" in capsys.readouterr().err


def test_evaluate_warns_when_it_scores_cases_the_model_was_fine_tuned_on(data, tiny_segmenter, capsys):
    tuned = data.parent / "tuned.mlffm"
    tiny_segmenter.save(tuned, provenance={"finetune_train_ids": ["ISIC_0000015", "ISIC_0000001"]})
    assert main(["evaluate", str(data), "--split", "val", "--checkpoint", str(tuned), "--samples", "2", "--steps", "1", "--device", "cpu"]) == 0
    assert "1 of the 2 cases were in this model's fine-tuning data (e.g. ISIC_0000015)" in capsys.readouterr().err


def test_evaluate_warns_when_most_reference_masks_look_inverted():
    from training.commands.evaluate import warn_if_swapped

    inverted = [{"truth_area_fraction": 0.9, "truth_touches_border": True}] * 3 + [{"truth_area_fraction": 0.2, "truth_touches_border": False}]
    assert warn_if_swapped(inverted)
    assert not warn_if_swapped(inverted[2:])  # one whole-frame lesion in two cases: legitimate, no warning


def test_evaluate_warns_when_the_proposals_match_the_references_backgrounds(data, capsys):
    """Masks saved with lesion and skin swapped (here by tifffile's or another writer's convention), covering about
    70 % of the image, so the area rule alone misses them: the proposals fit their backgrounds, and evaluate says so."""
    for path in (data / "masks").iterdir():
        mask = np.array(Image.open(path)) > 0
        Image.fromarray(np.where(mask, 0, 255).astype(np.uint8)).save(path)
    assert main(["evaluate", str(data), "--split", "val", "--samples", "2", "--steps", "2", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "images the proposal matches the reference's background better than its lesion" in err
    assert main(["evaluate", str(SMALL_DATA), "--split", "val", "--samples", "2", "--steps", "2", "--device", "cpu"]) == 0
    assert "background better" not in capsys.readouterr().err  # the masks as ISIC wrote them
