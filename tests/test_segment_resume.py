"""`mlffm segment` batches: each case all or nothing, reruns complete what is unfinished, bad images do not stop a batch."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from model import Segmenter
from training.files import segment_case
from training.data import imageio
from training.cli import main

from .conftest import ROOT, SMALL_DATA

SUFFIXES = ("_segmentation.png", "_probability.tif", "_uncertainty.tif", "_samples.tif", ".json")
FAST = ["--samples", "2", "--steps", "1", "--device", "cpu"]


def _run(args, capsys):
    code = main(["segment", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _images(tmp_path, n=3):
    folder = tmp_path / "in"
    folder.mkdir()
    for path in sorted((SMALL_DATA / "images").glob("*.jpg"))[:n]:
        shutil.copy(path, folder / path.name)
    return folder, sorted(p.stem for p in folder.iterdir())


def _complete(out, stem):
    record = json.loads((out / f"{stem}.json").read_text())
    assert sorted(record["outputs"]) == sorted(f"{stem}{s}" for s in SUFFIXES)
    return all((out / name).is_file() for name in record["outputs"])


def _leftovers(out):
    return [p.name for p in out.iterdir() if p.name.endswith(".tmp") or p.name.endswith(segment_case.MARKER_SUFFIX)]


def test_rerun_completes_unfinished_cases_keeps_finished_ones_and_sweeps_temporaries(tmp_path, tiny_checkpoint, capsys):
    folder, (a, b, c) = _images(tmp_path)
    out = tmp_path / "out"
    args = [folder, "-o", out, "--checkpoint", tiny_checkpoint, *FAST]
    assert _run(args, capsys)[0] == 0
    reference = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix != ".json"}
    kept = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name.startswith(a)}
    # b: killed mid-case (its marker, a stray temporary, 2 of 5 files); c: 1 of 5 files, no marker or sidecar.
    for suffix in ("_uncertainty.tif", "_samples.tif", ".json"):
        (out / f"{b}{suffix}").unlink()
    (out / f".{b}{segment_case.MARKER_SUFFIX}").write_bytes(b"")
    (out / f".{b}_uncertainty.tif.k1ll3d.tmp").write_bytes(b"half")
    for suffix in SUFFIXES[1:]:
        (out / f"{c}{suffix}").unlink()
    code, stdout, stderr = _run(args, capsys)
    assert code == 0, stderr
    assert "2 segmented, 0 skipped, 1 already segmented (kept)" in stdout
    assert "removed 1 temporary files" in stderr
    assert all(_complete(out, stem) for stem in (a, b, c))
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name.startswith(a)} == kept
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix != ".json"} == reference
    assert not _leftovers(out)
    # A third run has nothing left to do.
    code, stdout, _ = _run(args, capsys)
    assert code == 0 and "0 segmented, 0 skipped, 3 already segmented (kept)" in stdout


def test_outputs_not_written_by_this_command_are_never_replaced(tmp_path, tiny_checkpoint, capsys):
    folder, (a, b, _) = _images(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{a}_segmentation.png").write_bytes(b"a clinician's own mask")
    code, stdout, stderr = _run([folder, "-o", out, "--checkpoint", tiny_checkpoint, *FAST], capsys)
    assert code == 1 and "already exists" in stderr and "--overwrite" in stderr
    assert (out / f"{a}_segmentation.png").read_bytes() == b"a clinician's own mask"
    assert not (out / f"{a}.json").exists() and _complete(out, b)
    assert "2 segmented, 1 skipped" in stdout


def test_a_write_failure_leaves_none_of_the_cases_files_and_the_batch_goes_on(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    folder, (a, b, c) = _images(tmp_path)
    out = tmp_path / "out"
    real_write = imageio.atomic_write_bytes

    def disk_full_on_b(path, data):
        if path.name == f"{b}_uncertainty.tif":  # the third file of case b
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data)

    monkeypatch.setattr(imageio, "atomic_write_bytes", disk_full_on_b)
    code, stdout, stderr = _run([folder, "-o", out, "--checkpoint", tiny_checkpoint, *FAST], capsys)
    assert code == 1 and "No space left on device" in stderr and "Traceback" not in stderr
    assert "2 segmented, 1 skipped" in stdout
    assert not [p for p in out.iterdir() if p.name.startswith((b, f".{b}"))]
    assert _complete(out, a) and _complete(out, c)
    monkeypatch.undo()
    code, stdout, _ = _run([folder, "-o", out, "--checkpoint", tiny_checkpoint, *FAST], capsys)
    assert code == 0 and "1 segmented, 0 skipped, 2 already segmented" in stdout and _complete(out, b)


def test_out_of_memory_on_one_image_is_one_line_and_the_batch_goes_on(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    folder, (a, b, c) = _images(tmp_path)
    out = tmp_path / "out"
    real_propose = Segmenter.propose
    calls = []

    def propose(self, image, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the images go in sorted order: b is the second
            raise MemoryError
        return real_propose(self, image, *args, **kwargs)

    monkeypatch.setattr(Segmenter, "propose", propose)
    code, stdout, stderr = _run([folder, "-o", out, "--checkpoint", tiny_checkpoint, *FAST], capsys)
    assert code == 1 and f"{b}.jpg: out of memory" in stderr and "Traceback" not in stderr
    assert "2 segmented, 1 skipped" in stdout and _complete(out, a) and _complete(out, c)
    assert not [p for p in out.iterdir() if p.name.startswith(b)]


def test_segmenting_a_folder_into_itself_twice_skips_its_own_outputs(tmp_path, tiny_checkpoint, capsys):
    folder, stems = _images(tmp_path, 2)
    args = [folder, "-o", folder, "--checkpoint", tiny_checkpoint, *FAST]
    assert _run(args, capsys)[0] == 0
    code, stdout, stderr = _run(args, capsys)
    assert code == 0, stderr
    assert "0 segmented, 0 skipped, 2 already segmented (kept)" in stdout
    assert "passed over 8 files named like segment outputs" in stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{s}.jpg" for s in stems] + [f"{s}{x}" for s in stems for x in SUFFIXES])


def test_a_killed_batch_is_completed_by_the_same_command(tmp_path, tiny_checkpoint):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(12):  # one image many times: a batch long enough to kill part-way
        shutil.copy(sorted((SMALL_DATA / "images").glob("*.jpg"))[i % 8], folder / f"case{i:02d}.jpg")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "training.cli", "segment", str(folder), "-o", str(out), "--checkpoint", str(tiny_checkpoint), *FAST]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(p.suffix == ".json" for p in out.iterdir())):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    first = sum(p.suffix == ".json" for p in out.iterdir())
    assert first < 12
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{12 - first} segmented, 0 skipped, {first} already segmented (kept)" in result.stdout
    assert all(_complete(out, f"case{i:02d}") for i in range(12))
    assert not _leftovers(out)


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "0/-1", "0/0"])
def test_bad_shard_is_one_line(tmp_path, tiny_checkpoint, sample_images, capsys, text):
    code, _, stderr = _run([sample_images[0], "-o", tmp_path, "--checkpoint", tiny_checkpoint, "--shard", text], capsys)
    assert code == 2 and "--shard" in stderr and len(stderr.strip().splitlines()) == 1
