"""`mlffm segment` end to end on real dermoscopic images, with an untrained tiny checkpoint."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image

from training.cli import main


def _run(args, capsys):
    code = main(["segment", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_segment_writes_five_outputs_with_documented_shapes(tmp_path, tiny_checkpoint, sample_images, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = _run([*sample_images[:2], "-o", out, "--checkpoint", tiny_checkpoint, "--samples", "3", "--steps", "2"], capsys)
    assert code == 0, stderr
    for path in sample_images[:2]:
        stem = path.stem
        w, h = Image.open(path).size
        mask = np.asarray(Image.open(out / f"{stem}_segmentation.png"))
        assert mask.shape == (h, w) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        prob = tifffile.imread(out / f"{stem}_probability.tif")
        unc = tifffile.imread(out / f"{stem}_uncertainty.tif")
        samples = tifffile.imread(out / f"{stem}_samples.tif")
        assert prob.shape == unc.shape == (h, w) and prob.dtype == unc.dtype == np.float32
        assert samples.shape == (3, h, w) and samples.dtype == np.uint8
        assert np.array_equal(mask == 255, prob >= 0.5)
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["samples"] == 3 and record["steps"] == 2 and record["seed"] == 0
        assert record["device"] == "cpu" or record["device"].startswith(("cuda", "mps"))
        assert len(record["checkpoint_id"]) == 12 and record["timings"]["propose_seconds"] > 0


def test_a_blank_image_in_a_batch_is_no_lesion_said_in_one_line_and_in_its_sidecar(tmp_path, tiny_checkpoint, sample_images, capsys):
    blank = tmp_path / "flat grey.png"
    Image.fromarray(np.full((60, 80, 3), 128, np.uint8)).save(blank)
    out = tmp_path / "out"
    code, stdout, stderr = _run([blank, sample_images[0], "-o", out, "--checkpoint", tiny_checkpoint, "--samples", "2", "--steps", "1"], capsys)
    assert code == 0 and "2 segmented, 0 skipped" in stdout, stderr
    lines = [line for line in stderr.splitlines() if "blank image" in line]
    assert len(lines) == 1 and lines[0].startswith(f"mlffm segment: {blank}: blank image") and "Traceback" not in stderr
    assert not np.asarray(Image.open(out / "flat grey_segmentation.png")).any()
    assert json.loads((out / "flat grey.json").read_text())["notes"] == [lines[0].split(f"{blank}: ", 1)[1]]
    assert json.loads((out / f"{sample_images[0].stem}.json").read_text())["notes"] == []


def test_segment_defaults_to_the_models_sampling_settings_and_threshold(tmp_path, tiny_segmenter, sample_images, capsys):
    checkpoint = tmp_path / "fitted.mlffm"
    tiny_segmenter.with_options(default_samples=4, default_steps=1, decision_threshold=0.35).save(checkpoint)
    out = tmp_path / "out"
    code, _, stderr = _run([sample_images[0], "-o", out, "--checkpoint", checkpoint], capsys)
    assert code == 0, stderr
    stem = sample_images[0].stem
    record = json.loads((out / f"{stem}.json").read_text())
    assert (record["samples"], record["steps"], record["threshold"]) == (4, 1, 0.35)
    assert tifffile.imread(out / f"{stem}_samples.tif").shape[0] == 4
    mask = np.asarray(Image.open(out / f"{stem}_segmentation.png"))
    assert np.array_equal(mask == 255, tifffile.imread(out / f"{stem}_probability.tif") >= 0.35)


def test_segment_never_overwrites_without_flag(tmp_path, tiny_checkpoint, sample_images, capsys):
    out = tmp_path / "out"
    args = [sample_images[0], "-o", out, "--checkpoint", tiny_checkpoint, "--samples", "2", "--steps", "1"]
    assert _run(args, capsys)[0] == 0
    mask = out / f"{sample_images[0].stem}_segmentation.png"
    mask.write_bytes(b"clinician's edited mask")
    code, _, stderr = _run(args, capsys)
    assert code != 0 and "already exists" in stderr and "--overwrite" in stderr
    assert mask.read_bytes() == b"clinician's edited mask"
    assert _run([*args, "--overwrite"], capsys)[0] == 0
    assert mask.read_bytes() != b"clinician's edited mask"


def test_segment_goes_on_past_a_bad_file(tmp_path, tiny_checkpoint, sample_images, capsys):
    folder = tmp_path / "cases"
    folder.mkdir()
    shutil.copy(sample_images[0], folder / "good case.jpg")
    (folder / "broken.jpg").write_text("this is not a JPEG")
    (folder / "notes.txt").write_text("ignored")
    (folder / "sub").mkdir()
    out = tmp_path / "out"
    code, stdout, stderr = _run([folder, "-o", out, "--checkpoint", tiny_checkpoint, "--samples", "2", "--steps", "1"], capsys)
    assert code == 1
    assert "broken.jpg" in stderr and "Traceback" not in stderr
    assert (out / "good case_segmentation.png").is_file()
    assert not (out / "broken_segmentation.png").exists()
    assert "1 segmented, 1 skipped" in stdout
    assert "skipped:" in stderr and stderr.count("broken.jpg") == 2  # once as it happens, once in the summary


def test_subfolders_are_named_as_not_read_but_not_the_run_s_own_output_folder(tmp_path, tiny_checkpoint, sample_images, capsys):
    folder = tmp_path / "clinic"
    for patient in ("patient 1", "patient 2"):
        (folder / patient).mkdir(parents=True)
        shutil.copy(sample_images[0], folder / patient / "IMG_0001.jpg")
    shutil.copy(sample_images[1], folder / "loose.jpg")
    code, stdout, stderr = _run([folder, "-o", folder / "results", "--checkpoint", tiny_checkpoint, "--samples", "2", "--steps", "1"], capsys)
    assert code == 0 and "1 segmented" in stdout
    assert "2 subfolders not read (patient 1, patient 2)" in stderr and "add --recursive" in stderr
    code, stdout, stderr = _run([folder, "-o", folder / "results", "--checkpoint", tiny_checkpoint, "--samples", "2", "--steps", "1"], capsys)
    assert "results" not in stderr.split("subfolders not read")[1].split(";")[0]  # the run's own output is no subfolder of cases


def test_recursive_segments_each_patient_s_folder_into_the_same_subfolder_of_the_output(tmp_path, tiny_checkpoint, sample_images, capsys):
    folder = tmp_path / "clinic"
    for patient in ("patient 1", "patient 2/visit 2"):
        (folder / patient).mkdir(parents=True)
        shutil.copy(sample_images[0], folder / patient / "IMG_0001.jpg")  # one camera name in every folder: no clash
    shutil.copy(sample_images[1], folder / "loose.jpg")
    (folder / "elsewhere").symlink_to(folder / "patient 1")  # a link to a folder is not followed
    out = folder / "results"
    args = [folder, "-o", out, "--recursive", "--checkpoint", tiny_checkpoint, "--samples", "2", "--steps", "1"]
    code, stdout, stderr = _run(args, capsys)
    assert code == 0 and "3 segmented, 0 skipped" in stdout
    for written in ("loose_segmentation.png", "patient 1/IMG_0001_segmentation.png", "patient 2/visit 2/IMG_0001.json"):
        assert (out / written).is_file(), written
    assert json.loads((out / "patient 1" / "IMG_0001.json").read_text())["source"] == str(folder / "patient 1" / "IMG_0001.jpg")
    assert "1 folder not looked into: elsewhere (a link to a folder)" in stderr
    code, stdout, _ = _run(args, capsys)  # rerun: every case kept, and the outputs under results/ are not read as inputs
    assert code == 0 and "0 segmented, 0 skipped, 3 already segmented (kept)" in stdout


def test_a_run_that_writes_nothing_leaves_no_empty_folder_behind(tmp_path, tiny_checkpoint, capsys):
    (tmp_path / "broken.jpg").write_text("this is not a JPEG")
    out = tmp_path / "new" / "out"
    code, stdout, _ = _run([tmp_path / "broken.jpg", "-o", out, "--checkpoint", tiny_checkpoint, "--samples", "2", "--steps", "1"], capsys)
    assert code == 1 and "0 segmented, 1 skipped" in stdout and "nothing written" in stdout
    assert not out.exists()
    out.mkdir()  # a folder the user made is theirs: kept
    code, stdout, _ = _run([tmp_path / "broken.jpg", "-o", out, "--checkpoint", tiny_checkpoint, "--samples", "2", "--steps", "1"], capsys)
    assert code == 1 and out.is_dir() and "nothing written" not in stdout


def test_missing_default_weights_or_checkpoint_is_one_line(tmp_path, sample_images, capsys):
    code, _, stderr = _run([sample_images[0], "-o", tmp_path, "--checkpoint", tmp_path / "missing.mlffm"], capsys)
    assert code == 2 and "missing.mlffm" in stderr and len(stderr.strip().splitlines()) == 1


def test_console_script_runs_without_traceback(tmp_path, tiny_checkpoint, sample_images):
    result = subprocess.run(
        [sys.executable, "-m", "training.cli", "segment", str(sample_images[0]), "-o", str(tmp_path / "o"),
         "--checkpoint", str(tiny_checkpoint), "--samples", "2", "--steps", "1", "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "o" / f"{sample_images[0].stem}_samples.tif").is_file()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_missing_gpu_is_a_clear_error(tmp_path, tiny_checkpoint, sample_images, capsys):
    code, _, stderr = _run([sample_images[0], "-o", tmp_path, "--checkpoint", tiny_checkpoint, "--device", "cuda"], capsys)
    assert code == 2 and "CUDA is not available" in stderr


def test_a_case_another_run_wrote_after_this_one_looked_is_kept_not_replaced(tmp_path, tiny_checkpoint, sample_images, capsys, monkeypatch):
    from training.commands import segment as segment_command
    from training.files.segment_case import CaseState, claim_new_case, marker_path

    out = tmp_path / "out"
    args = [sample_images[0], "-o", out, "--checkpoint", tiny_checkpoint, "--samples", "2", "--steps", "1"]
    assert _run([*args, "--seed", "0"], capsys)[0] == 0
    sidecar = out / f"{sample_images[0].stem}.json"
    first = sidecar.read_bytes()
    # A second run that looked at the folder before the first one wrote (two runs started together).
    monkeypatch.setattr(segment_command, "case_state", lambda out_dir, stem: CaseState.NEW)
    code, stdout, stderr = _run([*args, "--seed", "1"], capsys)
    assert code == 1 and "0 segmented, 1 skipped" in stdout
    assert f"{sidecar}: written by another run since this one started; kept" in stderr and "Traceback" not in stderr
    assert sidecar.read_bytes() == first and not marker_path(out, sample_images[0].stem).exists()
    # Two writers claiming one new case: the second is refused while the first holds it.
    claim_new_case(out, "fresh")
    with pytest.raises(FileExistsError, match="written by another run"):
        claim_new_case(out, "fresh")


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="named pipes and links are POSIX")
def test_paths_that_are_no_file_say_what_they_are(tmp_path, tiny_checkpoint, capsys):
    import os

    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "loop1.png").symlink_to(tmp_path / "loop2.png")
    (tmp_path / "loop2.png").symlink_to(tmp_path / "loop1.png")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    names = ["pipe.png", "loop1.png", "dangling.png", "missing.png"]
    code, _, stderr = _run([*(tmp_path / n for n in names), "-o", tmp_path / "out", "--checkpoint", tiny_checkpoint], capsys)
    assert code == 1 and "Traceback" not in stderr
    for name, words in zip(names, ["a named pipe", "a symbolic link in a loop", "a symbolic link to nothing", "no such file or folder"]):
        assert f"{tmp_path / name}: {words}" in stderr, stderr


def test_an_output_folder_that_cannot_be_written_is_one_line_before_any_work(tmp_path, tiny_checkpoint, sample_images, capsys, monkeypatch):
    """As root, permissions never refuse a write, so the refusal of the folder (EACCES) is made by the probe's os.open."""
    import errno
    import os

    from model import Segmenter
    from training.files import outputs

    real_open, proposed = os.open, []

    def refusing(path, *args, **kwargs):
        if ".probe-" in os.fspath(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(outputs.os, "open", refusing)
    monkeypatch.setattr(Segmenter, "propose", lambda *a, **k: proposed.append(1))
    out = tmp_path / "out"
    out.mkdir()
    code, _, stderr = _run([*sample_images[:2], "-o", out, "--checkpoint", tiny_checkpoint], capsys)
    assert code == 2 and proposed == [] and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == f"mlffm segment: error: {out}: -o cannot be written to (Permission denied)"


def test_a_case_a_live_run_is_writing_is_left_to_it_and_a_killed_runs_is_written_again(tmp_path, tiny_checkpoint, sample_images, capsys):
    import json as json_module
    import os
    import socket
    import time

    from training.files.segment_case import marker_path

    out = tmp_path / "out"
    out.mkdir()
    stem = sample_images[0].stem
    partial = out / f"{stem}_segmentation.png"
    partial.write_bytes(b"half")  # what a writer leaves between its first file and its sidecar
    args = [sample_images[0], "-o", out, "--checkpoint", tiny_checkpoint, "--samples", "2", "--steps", "1"]
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        from training.files.outputs import process_started as _started

        marker_path(out, stem).write_text(json_module.dumps({"pid": live.pid, "started": _started(live.pid), "host": socket.gethostname()}))
        code, _, stderr = _run(args, capsys)
        assert code == 1 and f"being written by another run (pid {live.pid}); kept" in stderr
        if _started(live.pid) is not None:  # the same pid, started at another time: a reused pid, the writer gone
            marker_path(out, stem).write_text(json_module.dumps({"pid": live.pid, "started": _started(live.pid) - 1, "host": socket.gethostname()}))
            assert _run(args, capsys)[0] == 0 and partial.read_bytes() != b"half"
            partial.write_bytes(b"half")
            (out / f"{stem}.json").unlink()
            marker_path(out, stem).write_text(json_module.dumps({"pid": live.pid, "host": socket.gethostname()}))
        assert partial.read_bytes() == b"half" and marker_path(out, stem).exists()
        # A marker older than any write of one case is a killed run's, even if its pid is alive again (reused).
        old = time.time() - 3600
        os.utime(marker_path(out, stem), (old, old))
        assert _run(args, capsys)[0] == 0 and partial.read_bytes() != b"half"
        partial.write_bytes(b"half")
        (out / f"{stem}.json").unlink()
        marker_path(out, stem).write_text(json_module.dumps({"pid": live.pid, "host": socket.gethostname()}))
    finally:
        live.kill()
        live.wait()
    # The same marker once its writer is gone: a killed run's case, written again.
    code, _, stderr = _run(args, capsys)
    assert code == 0, stderr
    assert partial.read_bytes() != b"half" and not marker_path(out, stem).exists()


def test_recursive_names_a_folder_it_cannot_list_as_one_not_read(tmp_path, sample_images, monkeypatch):
    import os

    from training.commands.segment_inputs import collect_images

    folder = tmp_path / "clinic"
    for patient in ("patient 1", "patient 2"):
        (folder / patient).mkdir(parents=True)
        shutil.copy(sample_images[0], folder / patient / "IMG_0001.jpg")
    unreadable = {str(folder / "patient 2"), str(tmp_path / "locked")}
    (tmp_path / "locked").mkdir()
    real_scandir, real_listdir = os.scandir, os.listdir

    def refuse(real):
        def listing(path="."):
            if os.fspath(path) in unreadable:
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real(path)
        return listing

    monkeypatch.setattr(os, "scandir", refuse(real_scandir))
    monkeypatch.setattr(os, "listdir", refuse(real_listdir))
    found = collect_images([folder], recursive=True)
    assert found.images == [folder / "patient 1" / "IMG_0001.jpg"]
    assert any("patient 2: cannot be listed (Permission denied)" in p for p in found.problems), (found.problems, found.notes)
    found = collect_images([tmp_path / "locked"], recursive=True)
    assert any("locked: cannot be listed (Permission denied)" in p for p in found.problems), found.problems


def test_a_recursive_run_that_writes_nothing_leaves_no_empty_folders_behind(tmp_path, tiny_checkpoint, capsys):
    (tmp_path / "clinic" / "patient 1").mkdir(parents=True)
    (tmp_path / "clinic" / "patient 1" / "broken.jpg").write_text("this is not a JPEG")
    out = tmp_path / "new" / "out"
    args = [tmp_path / "clinic", "-o", out, "--recursive", "--checkpoint", tiny_checkpoint, "--samples", "2", "--steps", "1"]
    code, stdout, _ = _run(args, capsys)
    assert code == 1 and "0 segmented, 1 skipped" in stdout and "nothing written" in stdout
    assert not out.exists()
    out.mkdir()  # a folder the user made is kept, but not the empty subfolder this run made in it
    code, stdout, _ = _run(args, capsys)
    assert code == 1 and out.is_dir() and not (out / "patient 1").exists()
