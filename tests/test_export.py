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
    assert message.startswith(str(folder / "c_")) and "No space left on device" in message and "Errno" not in message and "\n" not in message
