"""Outputs that another process writes while a command runs.

``evaluate --json``, ``calibrate -o`` and ``average -o`` check their output
before any work, then write it at the end: a file that appeared in between
(a second run of the same command, a colleague's copy) must be named and
kept, not replaced without a word.
"""

from __future__ import annotations

import errno
import os

import pytest

from model import Segmenter
from training.cli import main

from .conftest import SMALL_DATA

THEIRS = b"the other run's file\n"


def _written_meanwhile(monkeypatch, method: str, output):
    """Let another writer create ``output`` just before the command's first call of ``Segmenter.<method>``."""
    real = getattr(Segmenter, method)

    def other_writer_first(*args, **kwargs):
        if not output.exists():
            output.write_bytes(THEIRS)
        return real(*args, **kwargs)

    if method == "load":
        monkeypatch.setattr(Segmenter, method, staticmethod(other_writer_first))
    else:
        monkeypatch.setattr(Segmenter, method, other_writer_first)


@pytest.mark.parametrize("command", ["evaluate", "calibrate", "average"])
def test_an_output_written_by_another_process_during_the_run_is_kept_not_replaced(tmp_path, tiny_checkpoint, tiny_segmenter, monkeypatch, capsys, command):
    output = tmp_path / ("report.json" if command == "evaluate" else "out.mlffm")
    common = ["--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--split", "val"]
    if command == "average":
        second = tmp_path / "second.mlffm"
        with_other_weights = Segmenter(tiny_segmenter.config, "cpu")
        with_other_weights.save(second)
        argv = ["average", str(tiny_checkpoint), str(second), "-o", str(output)]
        _written_meanwhile(monkeypatch, "load", output)
    else:
        argv = [command, str(SMALL_DATA), *common, "--json" if command == "evaluate" else "-o", str(output)]
        _written_meanwhile(monkeypatch, "propose", output)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{output}: already exists" in err and "another process" in err and "Traceback" not in err
    assert output.read_bytes() == THEIRS  # was replaced by this run's result, exit 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []
    # --overwrite asks for the replacement: the run's own result is written
    assert main([*argv, "--overwrite"]) == 0
    assert output.read_bytes() != THEIRS and output.stat().st_size > 0


@pytest.mark.parametrize("code, falls_back", [(errno.EPERM, True), (errno.ENOSPC, False), (errno.EROFS, False)])
def test_exclusive_creation_falls_back_to_a_rename_only_where_hard_links_are_missing(tmp_path, monkeypatch, code, falls_back):
    from model.files import checkpoint

    def no_link(*_):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(checkpoint.os, "link", no_link)
    target = tmp_path / "out.json"
    if falls_back:  # FAT: look, then rename
        checkpoint.atomic_write_bytes(target, b"{}", replace=False)
        assert target.read_bytes() == b"{}"
    else:  # a full disk or a read-only drive is the error it is, not a reason to rename
        with pytest.raises(OSError) as caught:
            checkpoint.atomic_write_bytes(target, b"{}", replace=False)
        assert caught.value.errno == code and not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == (["out.json"] if falls_back else [])  # no temporary left
