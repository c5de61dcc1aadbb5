"""Killed and interrupted runs: earlier checkpoints intact, the base never touched, --resume continues."""

import hashlib
import os
import signal
import subprocess
import sys
import time


from model import Segmenter
from training.loop.trainer import resume_path_for

from .conftest import SMALL_DATA

TINY = ["--size", "32", "--widths", "8,16", "--batch-size", "2", "--device", "cpu"]


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _start(args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "training.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)


def _wait_for(path, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_sigkill_during_training_leaves_loadable_checkpoints_and_resume_continues(tmp_path):
    output = tmp_path / "m.mlffm"
    process = _start(["train", str(SMALL_DATA), "-o", str(output), *TINY, "--epochs", "500"])
    state = resume_path_for(output)
    _wait_for(state, process)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # Whatever moment the kill hit, both files are complete checkpoints (atomic writes).
    _, _, meta = Segmenter.load_with_state(state, "cpu")
    Segmenter.load(output, "cpu")
    # The kill may land inside a write and leave its temporary file; plant one to be sure.
    (tmp_path / f".{state.name}.killed.tmp").write_bytes(b"half")
    epoch = meta["epoch"]
    resumed = _start(["train", str(SMALL_DATA), "-o", str(output), *TINY, "--epochs", str(epoch + 1), "--resume", str(state)])
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert f"at epoch {epoch}" in out
    resumed_state, _, resumed_meta = Segmenter.load_with_state(state, "cpu")
    assert resumed_meta["epoch"] == epoch + 1
    commands = resumed_state.provenance["commands"]
    assert len(commands) == 2 and "--resume" not in commands[0] and "--resume" in commands[1]
    # The resumed run swept the temporaries the killed one left behind.
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_sigkill_during_finetune_leaves_the_base_byte_identical(tmp_path, tiny_checkpoint):
    before = _digest(tiny_checkpoint)
    output = tmp_path / "tuned.mlffm"
    process = _start(["finetune", str(SMALL_DATA), "-o", str(output), "--checkpoint", str(tiny_checkpoint), "--epochs", "500", "--batch-size", "2", "--device", "cpu"])
    _wait_for(resume_path_for(output), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert _digest(tiny_checkpoint) == before
    Segmenter.load_with_state(resume_path_for(output), "cpu")


def test_ctrl_c_saves_and_exits_cleanly(tmp_path):
    output = tmp_path / "m.mlffm"
    process = _start(["train", str(SMALL_DATA), "-o", str(output), *TINY, "--epochs", "500"])
    state = resume_path_for(output)
    _wait_for(state, process)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out
    assert "stopped by interrupt" in out and "Traceback" not in out
    Segmenter.load_with_state(state, "cpu")
    assert output.is_file()


def test_sigterm_stops_training_as_ctrl_c_does_and_saves(tmp_path):
    output = tmp_path / "m.mlffm"
    process = _start(["train", str(SMALL_DATA), "-o", str(output), *TINY, "--epochs", "500"])
    state = resume_path_for(output)
    _wait_for(state, process)
    process.send_signal(signal.SIGTERM)  # what kill, timeout and batch schedulers send
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out
    assert "SIGTERM received" in out and "stopped by SIGTERM" in out and "Traceback" not in out
    Segmenter.load_with_state(state, "cpu")
    assert output.is_file()


def test_sigterm_during_segment_is_one_line_and_leaves_no_marker_or_temporary(tmp_path, tiny_checkpoint):
    from training.files import segment_case

    folder = tmp_path / "in"
    folder.mkdir()
    images = sorted((SMALL_DATA / "images").glob("*.jpg"))
    for i in range(12):
        folder.joinpath(f"case{i:02d}.jpg").write_bytes(images[i % len(images)].read_bytes())
    out = tmp_path / "out"
    process = _start(["segment", str(folder), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--samples", "2", "--steps", "1", "--device", "cpu"])
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(p.suffix == ".json" for p in out.iterdir())):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    out_text, _ = process.communicate(timeout=120)
    assert process.returncode == 143, out_text
    assert "mlffm segment: terminated (SIGTERM)" in out_text and "Traceback" not in out_text
    left = [p.name for p in out.iterdir() if p.name.endswith(".tmp") or p.name.endswith(segment_case.MARKER_SUFFIX)]
    assert not left
    # every case is either complete (sidecar written last) or absent
    for sidecar in out.glob("*.json"):
        assert (out / f"{sidecar.stem}_segmentation.png").is_file()
