"""The Cases dock with awkward folders: file names that share a case id or make none, and folders that cannot be opened."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from PIL import Image  # noqa: E402

from napari_mlffm._qt import common  # noqa: E402

from .test_plugin import _dock, plugin_env  # noqa: E402,F401

LONG = "é" * 120 + ".png"  # a legal Linux name (240 bytes of stem), too long for a case id


def _save(path, seed: int = 0) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _cases(viewer, monkeypatch):
    cases = _dock(viewer, "Cases")
    cases.notes = []
    monkeypatch.setattr(common, "notify", lambda message, warning=False: cases.notes.append(message))
    monkeypatch.setattr(common, "notify_error", lambda error: cases.notes.append(str(error)))
    return cases


def _rows(cases) -> list[str]:
    return [cases.list.item(i).text() for i in range(cases.list.count())]


def test_images_sharing_a_case_id_keep_it_first_in_name_order_and_the_others_are_named(make_napari_viewer, plugin_env, tmp_path, monkeypatch):  # noqa: F811
    folder = tmp_path / "same"
    folder.mkdir()
    for seed, name in enumerate(["a.jpg", "a.png", "b.png", "c.png", "c.tif"]):
        _save(folder / name, seed)
    viewer = make_napari_viewer()
    cases = _cases(viewer, monkeypatch)
    assert cases.open_folder(folder) == 3
    assert [c.path.name for c in cases.cases] == ["a.jpg", "b.png", "c.png"]
    assert cases.model.get("a").source == str(folder / "a.jpg")  # a.png did not take over a.jpg's case
    lines = ["a.png: skipped, its case id 'a' is also a.jpg's; rename one", "c.tif: skipped, its case id 'c' is also c.png's; rename one"]
    assert all(line in cases.status.value for line in lines) and "3 cases in same; 2 skipped" in cases.status.value
    assert any(all(line in note for line in lines) for note in cases.notes)  # a warning too
    for _ in range(3):
        cases.step(1)
    assert [layer.name for layer in viewer.layers] == ["c"] and viewer.layers["c"].metadata["source"] == str(folder / "c.png")


def test_a_name_that_makes_no_case_id_skips_that_image_not_the_folder(make_napari_viewer, plugin_env, tmp_path, monkeypatch):  # noqa: F811
    folder = tmp_path / "names"
    folder.mkdir()
    _save(folder / "ok.png")
    _save(folder / LONG, 1)
    _save(folder / "名前 ✓ 🙂.png", 2)
    (Path(os.fsdecode(os.fsencode(folder) + b"/bad\xff.png"))).write_bytes((folder / "ok.png").read_bytes())
    viewer = make_napari_viewer()
    cases = _cases(viewer, monkeypatch)
    assert cases.open_folder(folder) == 2
    assert [c.path.name for c in cases.cases] == ["ok.png", "名前 ✓ 🙂.png"]
    status = cases.status.value
    assert "2 skipped" in status
    assert "bad\\xff.png: skipped, no safe case id" in status  # named, with its undecodable byte escaped
    assert f"{LONG}: skipped, no safe case id" in status
    cases.step(1)
    cases.step(1)
    assert [layer.name for layer in viewer.layers] == ["名前 ✓ 🙂"]


def test_a_refused_folder_leaves_the_list_the_shown_case_and_the_folder_field_as_they_were(make_napari_viewer, plugin_env, tmp_path, monkeypatch):  # noqa: F811
    good = tmp_path / "good"
    good.mkdir()
    for i in range(3):
        _save(good / f"good{i}.png", i)
    viewer = make_napari_viewer()
    cases = _cases(viewer, monkeypatch)
    assert cases.open_folder(good) == 3
    cases.step(1)
    cases.step(1)
    mask = viewer.add_labels(np.zeros((40, 48), np.uint8), name="good1 mask")  # a mask under review on the shown case
    rows, order, layers = _rows(cases), list(cases.model.order), [layer.name for layer in viewer.layers]

    def unchanged() -> bool:
        return (
            _rows(cases) == rows and cases.model.order == order and cases.model.current == "good1"
            and [layer.name for layer in viewer.layers] == layers and mask in viewer.layers
            and str(cases.folder.value) == str(good)
        )

    # A missing folder typed in the field, a file, and a folder that cannot be listed (as without permission).
    locked = tmp_path / "locked"
    locked.mkdir()
    _save(locked / "x.png")
    original_iterdir = Path.iterdir

    def iterdir(self):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return original_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    for refused, why in [(tmp_path / "missing", "not a folder"), (good / "good0.png", "not a folder"), (locked, "cannot be listed (Permission denied)")]:
        cases.folder.value = str(refused)
        cases.open_button.changed.emit(None)  # as a click on Open folder
        assert unchanged(), refused
        assert cases.status.value == f"{refused}: {why}; still showing good" and cases.notes[-1] == cases.status.value
    cases.step(1)
    assert cases.model.current == "good2" and "▶" in _rows(cases)[2]  # stepping goes on in the open folder

    # A folder with one unusable name opens without it: the list, the model and the field agree.
    other = tmp_path / "other"
    other.mkdir()
    _save(other / "b0.png")
    _save(other / LONG, 1)
    assert cases.open_folder(other) == 1
    assert [c.path.name for c in cases.cases] == ["b0.png"] and len(_rows(cases)) == 1 and str(cases.folder.value) == str(other)
    cases.step(1)
    assert cases.model.current == "b0" and [layer.name for layer in viewer.layers] == ["b0"]
