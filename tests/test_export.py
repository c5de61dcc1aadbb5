"""Exporting one reviewed case (training/files/export.py): where it may go, what a fault leaves, who may write it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.files.export import export_case


def _case(fill: bool = True):
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = fill
    return mask, np.full((8, 8), 0.25, np.float32), np.full((8, 8), 0.5, np.float32)


def test_an_export_folder_whose_parent_is_gone_is_refused_and_only_the_last_level_is_made(tmp_path):
    mask, probability, uncertainty = _case()
    gone = tmp_path / "usb_stick" / "clinic_exports"  # the stick was unplugged: its mount point's folder is gone
    with pytest.raises(FileNotFoundError, match="parent folder .*usb_stick does not exist") as caught:
        export_case(gone, "c", mask, probability, uncertainty, {})
    assert str(caught.value).startswith(str(gone)) and "\n" not in str(caught.value)
    assert not (tmp_path / "usb_stick").exists()
    made = tmp_path / "new_exports"  # one level to make: made
    assert [p.name for p in export_case(made, "c", mask, probability, uncertainty, {})][-1] == "c.json"


def test_an_export_folder_that_is_a_file_and_a_full_disk_are_one_line_naming_the_path(tmp_path, monkeypatch):
    import errno
    import os

    mask, probability, uncertainty = _case()
    a_file = tmp_path / "exports"
    a_file.write_text("x")
    with pytest.raises(OSError) as caught:
        export_case(a_file, "c", mask, probability, uncertainty, {})
    assert str(caught.value).startswith(f"{a_file}: not a folder") and "Errno" not in str(caught.value)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    folder = tmp_path / "out"
    with pytest.raises(OSError) as caught:
        export_case(folder, "c", mask, probability, uncertainty, {})
    message = str(caught.value)
    assert message.startswith(str(folder)) and "No space left on device" in message and "Errno" not in message and "\n" not in message


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def _fail_at(monkeypatch, module, name, at):
    """``module.name`` raises a full disk's OSError on its ``at``-th call (1 = the first); returns the call counter."""
    import errno

    original, calls = getattr(module, name), []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == at:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)
    return calls


@pytest.mark.parametrize("at", [1, 2, 3])
def test_a_first_export_that_fails_midway_leaves_no_file(tmp_path, monkeypatch, at):
    import os

    mask, probability, uncertainty = _case()
    folder = tmp_path / "out"
    folder.mkdir()
    _fail_at(monkeypatch, os, "fsync", at)  # the disk fills while the at-th file is flushed
    with pytest.raises(OSError, match="No space left on device"):
        export_case(folder, "c", mask, probability, uncertainty, {"annotator": "b"})
    assert _files(folder) == {}  # no orphan PNG, no temporary


@pytest.mark.parametrize("fault", ["fsync 2", "fsync 3", "replace 1", "replace 3", "replace 6", "replace 8"])
def test_a_replacing_export_that_fails_anywhere_leaves_the_earlier_set_whole(tmp_path, monkeypatch, fault):
    import os

    mask, probability, uncertainty = _case()
    folder = tmp_path / "out"
    export_case(folder, "c", mask, probability, uncertainty, {"annotator": "a"}, samples=np.ones((2, 8, 8), bool))
    before = _files(folder)
    name, at = fault.split()
    calls = _fail_at(monkeypatch, os, name, int(at))
    new_mask, new_probability, new_uncertainty = _case(fill=False)
    with pytest.raises(OSError, match="No space left on device") as caught:
        export_case(folder, "c", new_mask, new_probability * 3, None, {"annotator": "b"}, overwrite=True)  # no maps, no samples
    assert len(calls) >= int(at) and "\n" not in str(caught.value)
    assert _files(folder) == before  # the old PNG, maps, samples and sidecar, byte for byte; no temporary left
    monkeypatch.undo()
    written = export_case(folder, "c", new_mask, new_probability * 3, None, {"annotator": "b"}, overwrite=True)
    assert sorted(_files(folder)) == sorted(p.name for p in written) == ["c.json", "c_probability.tif", "c_segmentation.png"]
    assert json.loads((folder / "c.json").read_text())["annotator"] == "b"


def test_two_exports_of_one_case_at_once_never_mix_the_second_is_refused_in_one_line(tmp_path, monkeypatch):
    import os
    import threading

    folder = tmp_path / "shared"
    folder.mkdir()
    first, second = _case(), _case(fill=False)
    original, paused, outcome = os.fsync, threading.Event(), {}

    def slow_share(fd):  # the first export's first file takes as long as the second export needs
        if threading.current_thread().name == "A" and not paused.is_set():
            paused.set()
            outcome["B"] = other_export()
        return original(fd)

    def other_export():
        try:
            export_case(folder, "case1", *second, {"annotator": "B"})
            return "exported"
        except OSError as err:
            return str(err)

    monkeypatch.setattr(os, "fsync", slow_share)
    a = threading.Thread(target=lambda: export_case(folder, "case1", *first, {"annotator": "A"}), name="A")
    a.start()
    a.join(30)
    assert outcome["B"] != "exported" and "an export of case1" in outcome["B"] and "\n" not in outcome["B"]
    assert json.loads((folder / "case1.json").read_text())["annotator"] == "A"
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(folder / "case1_segmentation.png")) > 0, first[0])  # A's whole set
    assert sorted(p.name for p in folder.iterdir()) == ["case1.json", "case1_probability.tif", "case1_segmentation.png", "case1_uncertainty.tif"]
    with pytest.raises(FileExistsError, match="already exists"):  # afterwards: refused as any existing export is
        export_case(folder, "case1", *second, {"annotator": "B"})


def test_a_folder_under_an_export_files_name_is_refused_before_the_question_and_never_replaced(tmp_path):
    from training.files.export import existing_files

    mask, probability, uncertainty = _case()
    (tmp_path / "c_uncertainty.tif").mkdir()
    (tmp_path / "c_uncertainty.tif" / "notes.txt").write_text("kept")
    with pytest.raises(IsADirectoryError, match=r"c_uncertainty\.tif: is a folder"):
        existing_files(tmp_path, "c", True, True)  # the Review dock asks nothing
    with pytest.raises(IsADirectoryError, match=r"c_uncertainty\.tif: is a folder"):
        export_case(tmp_path, "c", mask, probability, uncertainty, {}, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c_uncertainty.tif"]
    assert (tmp_path / "c_uncertainty.tif" / "notes.txt").read_text() == "kept"
