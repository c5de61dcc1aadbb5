"""Combining and cleaning masks, the case read-out, the corrections store and exports."""

import json

import numpy as np
import pytest
from PIL import Image

from training.data import imageio
from training.cli import main
from training.corrections.postprocess import border_pixels, case_readout, clean_mask, combine, max_diameter
from training.corrections.store import CorrectionsStore, case_id_for
from training.files.export import export_case


def test_combinations():
    samples = np.array([[[1, 1, 0, 0]], [[1, 0, 1, 0]], [[1, 0, 0, 0]]], bool)
    assert combine(samples, "majority").tolist() == [[True, False, False, False]]
    assert combine(samples, "union").tolist() == [[True, True, True, False]]
    assert combine(samples, "intersection").tolist() == [[True, False, False, False]]
    assert combine(samples[:2], "majority").tolist() == [[True, True, True, False]]  # ties count as lesion
    with pytest.raises(ValueError, match="unknown"):
        combine(samples, "average")


def test_clean_mask_fills_holes_keeps_largest_and_drops_specks():
    mask = np.zeros((40, 40), bool)
    mask[5:25, 5:25] = True
    mask[10:12, 10:12] = False  # a hole
    mask[30:32, 30:32] = True  # a speck
    mask[2:8, 32:38] = True  # a second, smaller object
    cleaned = clean_mask(mask, fill_holes=True, largest_only=True, min_size=10)
    assert cleaned[10:12, 10:12].all() and not cleaned[30:32, 30:32].any() and not cleaned[2:8, 32:38].any()
    assert clean_mask(mask, fill_holes=False, min_size=10)[2:8, 32:38].all()


def test_readout_hand_checked():
    mask = np.zeros((30, 30), bool)
    mask[10:20, 5:25] = True  # 10 x 20 rectangle
    uncertainty = np.zeros((30, 30), np.float32)
    uncertainty[mask] = 0.0
    samples = np.stack([mask, mask, np.zeros_like(mask)])
    values = case_readout(mask, samples, uncertainty, pixel_size_mm=0.1)
    assert values["area_px"] == 200 and values["area_mm2"] == pytest.approx(2.0)
    assert values["max_diameter_px"] == pytest.approx(np.hypot(9, 19))
    assert values["boundary_uncertainty"] == 0.0
    assert values["area_spread"] == pytest.approx(np.std([200, 200, 0]) / np.mean([200, 200, 0]))
    assert max_diameter(np.zeros((5, 5), bool)) == 0.0
    assert values["border_px"] == 0
    cut = np.zeros((30, 30), bool)
    cut[0:5, 0:8] = True  # in the top-left corner: 8 pixels on the top row, 5 on the left column, the corner once
    assert case_readout(cut)["border_px"] == 12 and border_pixels(cut) == 12
    assert border_pixels(np.ones((3, 3), bool)) == 8 and border_pixels(np.ones((1, 1), bool)) == 1


@pytest.mark.parametrize("bad", ["../../x", "..", ".hidden", "a/b"])
def test_store_refuses_ids_that_escape(tmp_path, bad):
    store = CorrectionsStore(tmp_path / "store")
    with pytest.raises(ValueError, match="unsafe"):
        store.accept(bad, np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), bool), {})
    assert not (tmp_path / "x").exists() and not any(tmp_path.rglob("*.png"))


def test_case_ids_from_file_names_are_safe():
    assert case_id_for("/data/ISIC_0001.jpg") == "ISIC_0001"
    assert case_id_for("naïve lesion 1.png") == "naïve lesion 1"
    assert case_id_for(".hidden.png") == "hidden"


def test_store_accept_never_overwrites_silently(tmp_path):
    store = CorrectionsStore(tmp_path / "store")
    image = np.full((6, 8, 3), 100, np.uint8)
    mask = np.zeros((6, 8), bool)
    mask[1:3, 1:4] = True
    meta = store.accept("case 1", image, mask, {"annotator": "A"})
    record = json.loads(meta.read_text())
    assert record["lesion_pixels"] == 6 and record["annotator"] == "A" and store.has("case 1") and store.count() == 1
    assert np.array_equal(np.asarray(Image.open(tmp_path / "store" / "masks" / "case 1.png")) > 0, mask)
    with pytest.raises(FileExistsError):
        store.accept("case 1", image, ~mask, {})
    assert np.array_equal(np.asarray(Image.open(tmp_path / "store" / "masks" / "case 1.png")) > 0, mask)
    store.accept("case 1", image, ~mask, {}, overwrite=True)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "store" / "masks" / "case 1.png")) > 0, ~mask)


def test_export_refuses_before_writing_anything(tmp_path):
    mask = np.ones((4, 4), bool)
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(FileExistsError):
        export_case(tmp_path, "c", mask, np.ones((4, 4)), np.zeros((4, 4)), {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json"]


def test_an_export_replaced_with_overwrite_is_replaced_whole(tmp_path):
    mask = np.ones((4, 4), bool)
    export_case(tmp_path, "c", mask, np.ones((4, 4)), np.zeros((4, 4)), {}, samples=np.ones((2, 4, 4), bool))
    written = export_case(tmp_path, "c", mask, None, None, {}, overwrite=True)  # no maps, no samples this time
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written) == ["c.json", "c_segmentation.png"]
    assert json.loads((tmp_path / "c.json").read_text())["outputs"] == ["c_segmentation.png", "c.json"]


def test_full_disk_midway_keeps_earlier_outputs_intact(tmp_path, tiny_checkpoint, sample_images, monkeypatch, capsys):
    out = tmp_path / "out"
    calls = {"n": 0}
    original = imageio.atomic_write_bytes

    def failing(path, data):
        calls["n"] += 1
        if calls["n"] == 7:  # the second image's second file
            raise OSError(28, "No space left on device")
        return original(path, data)

    monkeypatch.setattr(imageio, "atomic_write_bytes", failing)
    code = main(["segment", *map(str, sample_images[:2]), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--samples", "2", "--steps", "1"])
    assert code == 1 and "No space left" in capsys.readouterr().err
    first = sample_images[0].stem
    assert len(list(out.glob(f"{first}*"))) == 5
    json.loads((out / f"{first}.json").read_text())
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_failure_montage_script_draws_one_row_per_case(tmp_path, tiny_checkpoint):
    import subprocess
    import sys

    from .conftest import ROOT, SMALL_DATA

    out = tmp_path / "montage.png"
    script = [sys.executable, str(ROOT / "scripts" / "failure_montage.py"), str(SMALL_DATA)]
    common = ["-o", str(out), "--checkpoint", str(tiny_checkpoint), "--panel", "40"]
    done = subprocess.run([*script, "ISIC_0000000", "ISIC_0000001", *common], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    montage = np.asarray(Image.open(out))
    assert montage.shape == (80, 160, 3)
    truth = np.asarray(Image.open(SMALL_DATA / "masks" / "ISIC_0000000.png").resize((40, 40))) > 127
    masks_panel = montage[:40, 80:120]
    assert (masks_panel[truth] > 0).any(axis=-1).mean() > 0.9  # the reference shows where the true lesion is
    for args, message in (([*script, "ISIC_0000000", *common], "already exists"), ([*script, "nope", *common, "--overwrite"], "no case named nope")):
        done = subprocess.run(args, capture_output=True, text=True)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
