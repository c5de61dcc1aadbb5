"""Nothing overwritten, even indirectly; a case is all or nothing; outputs checked before the long work.

Real processes throughout: concurrent writers are separate processes, a
kill is ``os._exit`` inside the writer, locks are held by live or dead pids.
"""

import json
import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model import Segmenter
from training.cli import main
from training.data.datasets import list_cases
from training.files.outputs import ExclusiveLock, lock_path_for
from training.corrections.store import CorrectionsStore
from training.loop.trainer import resume_path_for

from .conftest import SMALL_DATA

TINY = ["--size", "32", "--widths", "8,16", "--batch-size", "2", "--device", "cpu"]
FORK = multiprocessing.get_context("fork")


def _digest(path):
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ----- class 4: nothing overwritten, even indirectly ----------------------------------------------


def test_the_resume_file_is_derived_from_the_full_output_name(tmp_path, capsys):
    names = [resume_path_for(tmp_path / n) for n in ("run.mlffm", "run.ckpt", "run", "run.resume")]
    assert len(set(names)) == 4 and all(p.name.endswith(".resume.mlffm") for p in names)
    for name in ("run.mlffm", "run.ckpt"):
        assert main(["train", str(SMALL_DATA), "-o", str(tmp_path / name), *TINY, "--epochs", "1"]) == 0
    first, second = (Segmenter.load_with_state(resume_path_for(tmp_path / n), "cpu")[0] for n in ("run.mlffm", "run.ckpt"))
    assert first.provenance["run_id"] != second.provenance["run_id"]
    assert first.provenance["run_id"] == Segmenter.load(tmp_path / "run.mlffm", "cpu").provenance["run_id"]


def test_resume_never_replaces_a_finished_model_or_another_runs_files(tmp_path, capsys):
    a, b = tmp_path / "a.mlffm", tmp_path / "b.mlffm"
    for output in (a, b):
        assert main(["train", str(SMALL_DATA), "-o", str(output), *TINY, "--epochs", "1"]) == 0
    before = {p: _digest(p) for p in (a, b, resume_path_for(a), resume_path_for(b))}
    capsys.readouterr()
    # another run's state aimed at a finished model
    assert main(["train", str(SMALL_DATA), "-o", str(b), *TINY, "--epochs", "2", "--resume", str(resume_path_for(a))]) == 2
    assert "not written by the run" in capsys.readouterr().err
    # the run's own state, trained further into its finished model
    assert main(["train", str(SMALL_DATA), "-o", str(a), *TINY, "--epochs", "2", "--resume", str(resume_path_for(a))]) == 2
    assert "finished model" in capsys.readouterr().err
    # a fresh run on an output whose unfinished state exists
    c = tmp_path / "c.mlffm"
    resume_path_for(c).write_bytes(resume_path_for(a).read_bytes())
    assert main(["train", str(SMALL_DATA), "-o", str(c), *TINY, "--epochs", "1"]) == 2
    assert "state of an unfinished run" in capsys.readouterr().err
    assert before == {p: _digest(p) for p in before} and not c.exists()
    # continuing the run into a new file is allowed, and so is --overwrite
    assert main(["train", str(SMALL_DATA), "-o", str(a), *TINY, "--epochs", "2", "--resume", str(resume_path_for(a)), "--overwrite"]) == 0


def test_resuming_into_a_new_output_always_writes_a_model_there(tmp_path, capsys):
    a, moved = tmp_path / "a.mlffm", tmp_path / "elsewhere.mlffm"
    assert main(["train", str(SMALL_DATA), "-o", str(a), *TINY, "--epochs", "1"]) == 0
    capsys.readouterr()
    # a later epoch may not beat the first one's Dice: the new file must get a model all the same
    assert main(["train", str(SMALL_DATA), "-o", str(moved), *TINY, "--epochs", "2", "--resume", str(resume_path_for(a))]) == 0
    out = capsys.readouterr()
    assert "does not exist: the earlier best" in out.out + out.err
    assert Segmenter.load(moved, "cpu").provenance["best_epoch"] == 2


def _finetune_args(base, output, *extra):
    return ["finetune", str(SMALL_DATA), "-o", str(output), "--checkpoint", str(base), "--batch-size", "2", "--device", "cpu", *extra]


def test_a_second_process_on_the_same_output_fails_at_once_and_stale_locks_are_taken_over(tmp_path, tiny_checkpoint, capsys):
    output = tmp_path / "tuned.mlffm"
    with ExclusiveLock(lock_path_for(output), str(output)):  # a live holder: this process
        assert main(_finetune_args(tiny_checkpoint, output, "--epochs", "1")) == 2
    err = capsys.readouterr().err
    assert f"process {os.getpid()}" in err and "is writing" in err and not output.exists()
    # a lock left by a process that was killed
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path_for(output).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "token": "x"}))
    assert main(_finetune_args(tiny_checkpoint, output, "--epochs", "1")) == 0
    assert "stale lock" in capsys.readouterr().err
    assert output.is_file() and not lock_path_for(output).exists()


def test_two_finetune_processes_on_one_output_never_both_succeed(tmp_path, tiny_checkpoint):
    output = tmp_path / "tuned.mlffm"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "training.cli", *_finetune_args(tiny_checkpoint, output, "--time-budget", "0.1")]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read()) for p in processes]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(text for code, text in results if code == 2)
    assert "is writing" in loser or "already exists" in loser
    assert not lock_path_for(output).exists() and Segmenter.load(output, "cpu")


def _accept(root, case_id, annotator, overwrite, barrier, results):
    store = CorrectionsStore(root)
    value = 40 + 50 * annotator
    image = np.full((192, 192, 3), value, np.uint8)
    mask = np.zeros((192, 192), bool)
    mask[: 20 * (annotator + 1)] = True
    barrier.wait()
    try:
        store.accept(case_id, image, mask, {"annotator": f"A{annotator}"}, overwrite=overwrite)
        results.put((annotator, "ok"))
    except FileExistsError:
        results.put((annotator, "exists"))


def _stored(root, case_id):
    record = json.loads((root / "meta" / f"{case_id}.json").read_text())
    image = np.asarray(Image.open(root / "images" / f"{case_id}.png"))
    mask = np.asarray(Image.open(root / "masks" / f"{case_id}.png")) > 0
    return record, image, mask


@pytest.mark.parametrize("overwrite", [False, True])
def test_concurrent_accepts_of_one_case_never_mix_annotators(tmp_path, overwrite):
    root = tmp_path / "store"
    writers = 3
    for round_ in range(6):
        case_id = f"case {round_}"
        barrier, results = FORK.Barrier(writers), FORK.Queue()
        processes = [FORK.Process(target=_accept, args=(root, case_id, k, overwrite, barrier, results)) for k in range(writers)]
        for p in processes:
            p.start()
        for p in processes:
            p.join(60)
            assert p.exitcode == 0
        outcomes = sorted(results.get(timeout=5)[1] for _ in range(writers))
        assert outcomes == (["ok"] * writers if overwrite else ["exists"] * (writers - 1) + ["ok"])
        record, image, mask = _stored(root, case_id)
        k = int(record["annotator"][1:])
        assert (image == 40 + 50 * k).all() and mask.sum() == 20 * (k + 1) * 192 and record["lesion_pixels"] == mask.sum()
    check = CorrectionsStore(root).check()
    assert len(check.ids) == 6 and not check.problems and not (root / ".store.lock").exists()


# ----- class 5: a case is all or nothing ----------------------------------------------------------


def _killed_replace(root, kill_at):
    """Replace case 'c' and die (os._exit, no cleanup) just before the kill_at-th os.replace of the write."""
    real, calls = os.replace, [0]

    def replace(src, dst):
        calls[0] += 1
        if calls[0] == kill_at:
            os._exit(9)
        real(src, dst)

    os.replace = replace
    CorrectionsStore(root).accept("c", np.full((16, 16, 3), 200, np.uint8), np.ones((16, 16), bool), {"annotator": "new"}, overwrite=True)


@pytest.mark.parametrize("kill_at, winner", [(2, "old"), (4, "old"), (5, "new"), (6, "new"), (7, "new")])
def test_a_replace_killed_midway_leaves_the_old_case_or_the_new_one_never_a_mix(tmp_path, kill_at, winner):
    # os.replace calls of one accept: 1-3 the staged image, mask, record; 4 COMMIT; 5-7 into place
    root = tmp_path / "store"
    store = CorrectionsStore(root)
    store.accept("c", np.full((16, 16, 3), 10, np.uint8), np.zeros((16, 16), bool), {"annotator": "old"})
    child = FORK.Process(target=_killed_replace, args=(root, kill_at))
    child.start()
    child.join(60)
    assert child.exitcode == 9
    # what fine-tuning reads: the store's listing, verified (it finishes or discards the killed write first)
    listing = CorrectionsStore(root).verified_listing(list_cases(root))
    assert [c.case_id for c in listing.cases] == ["c"] and not [p for p in listing.problems if "left out" in p]
    record, image, mask = _stored(root, "c")
    assert record["annotator"] == winner
    assert (image == (200 if winner == "new" else 10)).all() and mask.all() == (winner == "new") and mask.any() == (winner == "new")
    assert not any((root / ".staging").iterdir()) if (root / ".staging").exists() else True


def _store_with_cases(root, n):
    store = CorrectionsStore(root)
    for case in list_cases(SMALL_DATA, "all").cases[:n]:
        image = np.asarray(Image.open(case.image_path).convert("RGB"))
        mask = np.asarray(Image.open(case.mask_path)) > 127
        store.accept(case.case_id, image, mask, {"annotator": "A"})
    return store


def test_damaged_cases_are_reported_and_left_out_by_count_and_finetune(tmp_path, tiny_checkpoint, capsys):
    root = tmp_path / "store"
    store = _store_with_cases(root, 7)
    ids = sorted(p.stem for p in (root / "meta").glob("*.json"))
    (root / "meta" / f"{ids[0]}.json").write_text("{ not json")
    (root / "images" / f"{ids[1]}.png").unlink()
    other = np.asarray(Image.open(root / "images" / f"{ids[3]}.png"))
    Image.fromarray(other).save(root / "images" / f"{ids[2]}.png")  # the image of another case under this record
    (root / "meta" / f"{ids[4]}.json").unlink()  # an image and mask without a record
    check = store.check()
    assert sorted(check.ids) == ids[3:4] + ids[5:] and store.count() == 3
    text = "\n".join(check.problems)
    assert "cannot be read" in text and "is missing" in text and "does not match the record" in text and "no record" in text
    for case_id in (ids[0], ids[1], ids[2], ids[4]):
        assert case_id in text
    output = tmp_path / "tuned.mlffm"
    assert main(["finetune", str(root), "-o", str(output), "--checkpoint", str(tiny_checkpoint), "--epochs", "1", "--batch-size", "2", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "does not match the record" in err and ids[2] in err
    assert Segmenter.load(output, "cpu").provenance["finetune_data"]["n_images"] == 3


def test_a_resumed_finetune_records_the_original_base_and_scores_dice_before_on_it(tmp_path, tiny_checkpoint, tiny_segmenter, capsys):
    output = tmp_path / "tuned.mlffm"
    assert main(_finetune_args(tiny_checkpoint, output, "--epochs", "1")) == 0
    first = Segmenter.load(output, "cpu").provenance
    state = resume_path_for(output)
    partly_trained = Segmenter.load_with_state(state, "cpu")[0]
    assert partly_trained.checkpoint_id != tiny_segmenter.checkpoint_id
    output.unlink()  # as after a kill before the first improvement was saved
    resumed = ["finetune", str(SMALL_DATA), "-o", str(output), "--resume", str(state), "--epochs", "2", "--batch-size", "2", "--device", "cpu"]
    assert main(resumed) == 0
    provenance = Segmenter.load(output, "cpu").provenance
    base_id = Segmenter.load(tiny_checkpoint, "cpu").checkpoint_id
    assert provenance["parent"] == {"checkpoint_id": base_id, "path": str(tiny_checkpoint)}
    assert provenance["val_dice_before"] == first["val_dice_before"]
    # a --checkpoint that is not the run's base is refused
    other = tmp_path / "other.mlffm"
    partly_trained.save(other)
    output.unlink()
    assert main([*resumed, "--checkpoint", str(other)]) == 2
    assert "continues a fine-tune of" in capsys.readouterr().err


# ----- class 6: check before the long work ---------------------------------------------------------


@pytest.fixture
def unwritable_folder(tmp_path):
    """A folder this process cannot create files in: mode 0o500 for a user, a read-only /sys for root."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    candidates = [folder, Path("/sys")]
    try:
        for candidate in candidates:
            try:
                (candidate / ".probe").touch()
                (candidate / ".probe").unlink()
            except OSError:
                yield candidate
                return
        pytest.skip("no unwritable folder available (root on a writable /sys)")
    finally:
        folder.chmod(0o700)


def test_train_and_finetune_check_their_output_before_the_first_epoch(tmp_path, tiny_checkpoint, unwritable_folder, capsys):
    targets = {
        tmp_path / "nodir" / "m.mlffm": "does not exist",
        unwritable_folder / "m.mlffm": "cannot write",
        tmp_path: "is a folder",
    }
    for output, reason in targets.items():
        assert main(["train", str(SMALL_DATA), "-o", str(output), *TINY, "--epochs", "1"]) == 2
        captured = capsys.readouterr()
        assert reason in captured.err and "training on" not in captured.out and "loading" not in captured.err
        assert main(_finetune_args(tiny_checkpoint, output, "--epochs", "1")) == 2
        captured = capsys.readouterr()
        assert reason in captured.err and "fine-tuning on" not in captured.out


def test_evaluate_and_calibrate_check_their_output_before_scoring(tmp_path, tiny_checkpoint, unwritable_folder, capsys):
    existing = tmp_path / "exists.json"
    existing.write_text("{}")
    targets = {
        tmp_path / "nodir" / "r.json": "does not exist",
        unwritable_folder / "r.json": "cannot write",
        existing: "already exists",
    }
    common = ["--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--split", "val"]
    for output, reason in targets.items():
        assert main(["evaluate", str(SMALL_DATA), *common, "--json", str(output)]) == 2
        captured = capsys.readouterr()
        assert reason in captured.err and "evaluating" not in captured.err and "images, checkpoint" not in captured.out
        assert main(["calibrate", str(SMALL_DATA), *common, "-o", str(output)]) == 2
        captured = capsys.readouterr()
        assert reason in captured.err and "calibrating" not in captured.err
    assert existing.read_text() == "{}"


def test_sample_stacks_are_written_compressed_and_read_back_exactly():
    """16 full-size 0/1 masks were written raw (805 MB for one 50 Mpx photo); now deflated, and any reader opens them."""
    import io

    import tifffile
    from PIL import Image as PILImage

    from training.files.segment_case import encode_case

    rows, cols = np.mgrid[:600, :800]
    samples = np.stack([(rows - 300) ** 2 + (cols - 400) ** 2 < (150 + k) ** 2 for k in range(16)])
    zeros = np.zeros((600, 800), np.float32)
    files = encode_case("c", samples[0], zeros, zeros, samples).files
    assert len(files["c_samples.tif"]) < samples.size / 20
    assert np.array_equal(tifffile.imread(io.BytesIO(files["c_samples.tif"])), samples.astype(np.uint8))
    with PILImage.open(io.BytesIO(files["c_samples.tif"])) as first:
        assert np.array_equal(np.asarray(first), samples[0].astype(np.uint8))
    assert len(files["c_probability.tif"]) < zeros.nbytes / 20
