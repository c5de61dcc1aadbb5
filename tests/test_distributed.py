"""torchrun with gloo on the CPU: 2 processes, a tiny model, the fixture images.

Each torchrun is a subprocess under a timeout, so a hang fails the test
instead of stalling the suite. ``--standalone`` picks a free port, so
parallel runs do not meet.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model import Segmenter
from training.cli import main
from training.loop.trainer import resume_path_for

from .conftest import ROOT, SMALL_DATA

TINY = ["--size", "32", "--widths", "8,16", "--device", "cpu"]
SEGMENT = ["--samples", "2", "--steps", "1", "--device", "cpu"]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", MLFFM_DIST_TIMEOUT="120")


def _torchrun(args, nproc=2):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m", "training.cli", *map(str, args)]


def _run(args, timeout=240):
    result = subprocess.run(_torchrun(args), capture_output=True, text=True, timeout=timeout, env=_env(), cwd=ROOT)
    return result.returncode, result.stdout, result.stderr


def _events(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_two_process_training_agrees_writes_one_checkpoint_and_resumes(tmp_path):
    output = tmp_path / "m.mlffm"
    args = ["train", SMALL_DATA, "-o", output, *TINY, "--batch-size", "2", "--lr", "0.2", "--high-t-fraction", "0", "--progress", "json"]
    code, stdout, stderr = _run([*args, "--epochs", "4"])
    assert code == 0, stderr
    events = _events(stdout)
    texts = [e["text"] for e in events if e["event"] == "message"]
    assert any(t.startswith("all 2 processes hold identical weights") for t in texts), texts
    assert sum(t.startswith("training on 6 cases") for t in texts) == 1  # rank 0 alone reports
    losses = [e["train_loss"] for e in events if e["event"] == "epoch_end"]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlffm", resume_path_for(output).name]  # one checkpoint, no temporaries
    model = Segmenter.load(output, "cpu")
    assert model.provenance["distributed"] == {"world_size": 2, "backend": "gloo", "global_batch": 2, "per_rank_batch": 1}
    _, _, meta = Segmenter.load_with_state(resume_path_for(output), "cpu")
    assert meta["epoch"] == 4 and meta["world_size"] == 2
    # Resuming that run continues from the saved epoch (it reached its planned 4, so training it
    # further in place takes --overwrite: --resume alone never replaces a finished model).
    code, stdout, stderr = _run([*args, "--epochs", "5", "--resume", resume_path_for(output), "--overwrite"])
    assert code == 0, stderr
    texts = [e["text"] for e in _events(stdout) if e["event"] == "message"]
    assert any("at epoch 4, step 12" in t for t in texts) and any(t.startswith("epoch 5: ") for t in texts)
    _, _, meta = Segmenter.load_with_state(resume_path_for(output), "cpu")
    assert meta["epoch"] == 5 and meta["step"] == 15


def test_two_processes_take_the_same_step_as_one(tmp_path, tiny_checkpoint):
    """Same global batch (4), seed and starting weights: after one step both hold the same weights and Adam moments.

    Augmentation stays on: every rank draws the random numbers of the whole
    global batch, so the draws are those of one process. The boundary term is
    off because its weight sum is normalised per rank (docs/distributed.md).
    """
    common = ["train", SMALL_DATA, *TINY[2:], "--init", tiny_checkpoint, "--batch-size", "4", "--epochs", "1", "--lr", "0.1", "--boundary-weight", "0"]
    one, two = tmp_path / "one.mlffm", tmp_path / "two.mlffm"
    assert main([*map(str, common), "-o", str(one)]) == 0
    code, _, stderr = _run([*common, "-o", two])
    assert code == 0, stderr
    start = Segmenter.load(tiny_checkpoint, "cpu").network.state_dict()
    (a, ta, ma), (b, tb, mb) = (Segmenter.load_with_state(resume_path_for(p), "cpu") for p in (one, two))
    assert ma["step"] == mb["step"] == 1
    names = [name for name, _ in a.network.named_parameters()]
    wa, wb = a.network.state_dict(), b.network.state_dict()
    ga, gb = ({name: t[f"optim.{i}.exp_avg"] for i, name in enumerate(names)} for t in (ta, tb))  # 0.1 * gradient
    scale = max(g.abs().max().item() for g in ga.values())
    assert max((wa[n] - start[n]).abs().max().item() for n in names) > 1e-4  # the step did change the weights
    # The ranks' averaged gradient is one process's gradient of the whole batch.
    assert max((ga[n] - gb[n]).abs().max().item() for n in names) < 1e-5 * scale
    # So are the weights, except where the true gradient is zero (a bias before a GroupNorm): there
    # Adam's first step, m / sqrt(v), turns float noise of 1e-10 into a full step of either sign.
    for n in names:
        real = (ga[n].abs() > 1e-4 * scale) & (gb[n].abs() > 1e-4 * scale)
        assert ((wa[n] - wb[n]).abs()[real].max().item() if real.any() else 0.0) < 1e-6, n
    assert torch.equal(ta["rng.torch"], tb["rng.torch"])  # the data generators stayed in step


def _folder(tmp_path, n):
    folder = tmp_path / "in"
    folder.mkdir()
    for path in sorted((SMALL_DATA / "images").glob("*.jpg"))[:n]:
        shutil.copy(path, folder / path.name)
    return folder


def _without_run_details(record):
    return {k: v for k, v in record.items() if k not in ("timings", "device", "shard")}


def test_two_process_segment_writes_the_same_files_as_one(tmp_path, tiny_checkpoint, capsys):
    folder = _folder(tmp_path, 5)
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["segment", str(folder), "-o", str(one), "--checkpoint", str(tiny_checkpoint), *SEGMENT]) == 0
    capsys.readouterr()
    code, stdout, stderr = _run(["segment", folder, "-o", two, "--checkpoint", tiny_checkpoint, *SEGMENT])
    assert code == 0, stderr
    assert stdout.count("5 segmented, 0 skipped") == 1  # one summary for the job
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir()) and len(names) == 25
    for name in names:
        if name.endswith(".json"):
            a, b = (json.loads((d / name).read_text()) for d in (one, two))
            assert _without_run_details(a) == _without_run_details(b) and b["shard"] in ("0/2", "1/2")
        else:
            assert (one / name).read_bytes() == (two / name).read_bytes(), name
    # The rerun under torchrun has nothing left to do.
    code, stdout, _ = _run(["segment", folder, "-o", two, "--checkpoint", tiny_checkpoint, *SEGMENT])
    assert code == 0 and "0 segmented, 0 skipped, 5 already segmented (kept)" in stdout


def test_shards_cover_every_image_exactly_once(tmp_path, tiny_checkpoint, capsys):
    folder = _folder(tmp_path, 5)
    out = tmp_path / "out"
    for shard in ("0/2", "1/2"):
        assert main(["segment", str(folder), "-o", str(out), "--checkpoint", str(tiny_checkpoint), *SEGMENT, "--shard", shard]) == 0
        assert f"(shard {shard})" in capsys.readouterr().out
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    sources = sorted(Path(r["source"]).name for r in records)
    assert sources == sorted(p.name for p in folder.iterdir())
    assert sorted(r["shard"] for r in records) == ["0/2", "0/2", "0/2", "1/2", "1/2"]


def _children(pid):
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _rank_of(pid):
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next((int(v.split(b"=")[1]) for v in environ if v.startswith(b"RANK=")), None)


def _train_until_saved(output, *extra):
    """A 2-rank training started under torchrun, once it has saved: (the torchrun process, rank 1's pid)."""
    process = subprocess.Popen(
        _torchrun(["train", SMALL_DATA, "-o", output, *TINY, "--batch-size", "2", "--epochs", "500", *extra]),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=ROOT,
    )
    deadline = time.monotonic() + 180
    while not resume_path_for(output).exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the run never saved: {process.communicate()[0]}")
        time.sleep(0.05)
    return process, next(pid for pid in _children(process.pid) if _rank_of(pid) == 1)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the ranks through /proc")
def test_a_killed_rank_ends_the_run_with_a_clear_message_and_no_partial_checkpoint(tmp_path):
    for attempt in range(3):
        output = tmp_path / f"try{attempt}" / "m.mlffm"
        output.parent.mkdir()
        process, rank1 = _train_until_saved(output)
        try:
            time.sleep(0.3)
            os.kill(rank1, signal.SIGKILL)
            out, _ = process.communicate(timeout=120)  # the others exit, they do not hang
        finally:
            if process.poll() is None:
                process.kill()
        # Under heavy load torchrun's agent can end rank 0 (SIGTERM) before its next collective notices the loss;
        # that race is the launcher's, not ours, so the scenario is run again (at most three times).
        if "lost contact" in out or "exitcode  : -15" not in out:
            break
    tmp_path = output.parent
    assert process.returncode != 0
    assert "mlffm train: error: rank 0 of 2: lost contact with the other processes" in out, out
    assert "training/" not in out.replace(str(SMALL_DATA), "")  # no traceback of ours (torchrun prints its own)
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    Segmenter.load(output, "cpu")
    Segmenter.load_with_state(resume_path_for(output), "cpu")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the ranks through /proc")
def test_ctrl_c_on_one_rank_stops_every_rank_at_the_same_batch_and_saves(tmp_path):
    output = tmp_path / "m.mlffm"
    process, rank1 = _train_until_saved(output, "--progress", "json")
    try:
        os.kill(rank1, signal.SIGINT)  # rank 0 never sees a signal: it learns of it in the next all-reduce
        out, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, out
    assert "rank 1 of 2: SIGINT received" in out and "Traceback" not in out
    texts = [e["text"] for e in _events(out) if e["event"] == "message"]
    assert any(t.startswith("all 2 processes hold identical weights") for t in texts)
    assert any(t.startswith("stopped by interrupt") for t in texts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlffm", resume_path_for(output).name]
    Segmenter.load_with_state(resume_path_for(output), "cpu")


def test_each_rank_takes_its_own_slice_of_the_global_batch():
    from training.loop.distributed import SINGLE, Distributed

    assert SINGLE.batch_part(5) == slice(None)
    assert [Distributed(r, 4).batch_part(8) for r in range(4)] == [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]
    with pytest.raises(ValueError, match="global batch"):
        Distributed(0, 4).check_batch(6)


def test_two_process_click_training_on_own_errors_scores_val_as_one_process_would(tmp_path):
    from training.data.datasets import cache_dataset, list_cases
    from training.interactive.prompt_training import prompt_validation

    output = tmp_path / "clicks.mlffm"
    args = ["train", SMALL_DATA, "-o", output, *TINY, "--batch-size", "2", "--epochs", "1", "--click-prob", "1", "--own-errors", "0.5", "--progress", "json"]
    code, stdout, stderr = _run(args)
    assert code == 0, stderr
    model = Segmenter.load(output, "cpu")
    record = model.provenance["history"][-1]
    # The saved model is the one scored; its val split scored in one process gives the gathered numbers of two.
    val = cache_dataset(list_cases(SMALL_DATA, "val").cases, 32)
    assert len(val) >= 2
    no_click, one_click = prompt_validation(model, val, model.provenance["train_config"]["val_steps"], seed=0)
    assert (record["val_dice_0_clicks"], record["val_dice_1_click"]) == pytest.approx((no_click, one_click), abs=1e-6)
    assert model.provenance["train_config"]["own_error_share"] == 0.5
