"""The Review dock's Export: what it asks before replacing files, and what it leaves in the folder."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from .test_plugin import _dock, _propose, plugin_env  # noqa: E402, F401


def _reviewed(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    propose, review = _dock(viewer, "Propose masks"), _dock(viewer, "Review and export")
    image = viewer.add_image(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8), name="g", rgb=True)
    _propose(qtbot, propose, image)
    review.image.value = image
    asked = []
    review.confirm = lambda title, question: asked.append(question) or True
    return review, asked


def test_export_names_every_file_it_replaces_or_removes_before_it_asks(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    review, asked = _reviewed(make_napari_viewer, qtbot)
    folder = plugin_env["tmp"] / "results"
    folder.mkdir()
    for name in ("g_segmentation.png", "g.json", "g_samples.tif"):  # an `mlffm segment` output: its samples are no export's
        (folder / name).write_bytes(b"old")
    review.export_folder.value = str(folder)
    written = review.export()
    assert written is not None, review.status.value
    question = asked[-1]
    assert question.startswith("3 files of g are already in") and "Replace them?" in question
    replaced, removed = question.split("Removed")
    assert "g_segmentation.png" in replaced and "g.json" in replaced and "g_samples.tif" in removed
    assert not (folder / "g_samples.tif").exists()  # removed, as the dialog said

    for path in folder.iterdir():
        if path.name != "g.json":
            path.unlink()
    review.export()
    assert asked[-1].startswith("1 file of g is already in") and "Replace it?" in asked[-1] and "Removed" not in asked[-1]


def test_an_export_folder_gone_since_it_was_chosen_is_not_made_anew(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    review, asked = _reviewed(make_napari_viewer, qtbot)
    stick = plugin_env["tmp"] / "media" / "STICK"  # its mount point stays when the drive is unplugged
    (stick / "clinic_exports").mkdir(parents=True)
    review.export_folder.value = str(stick / "clinic_exports")
    (stick / "clinic_exports").rmdir()  # unplugged
    assert review.export() is None
    assert review.status.value.startswith(f"{stick / 'clinic_exports'}: the export folder is gone since it was chosen")
    assert list(stick.iterdir()) == []
    review.export_folder.value = str(stick / "new_exports")  # a folder named anew is made
    assert review.export() is not None and (stick / "new_exports" / "g.json").is_file()
