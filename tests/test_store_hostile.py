"""A hostile corrections store: records and files that are not what they seem are left out, never a hang or a crash.

Real files throughout: FIFOs made with ``os.mkfifo``, links to ``/dev/zero``,
records nested 200,000 deep. Whatever could hang or read without end runs
in a child process with a ``timeout`` and under an address-space limit, so
a regression fails the test instead of hanging it or exhausting the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from model import Segmenter
from training.cli import main
from training.commands.adapt import MIN_CASES
from training.data.datasets import list_cases
from training.corrections.record_files import MAX_RECORD_BYTES
from training.corrections.store import CorrectionsStore, usable_cases

from .conftest import ROOT

posix_only = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
CHILD_TIMEOUT_S = 180  # a tiny fine-tune takes seconds; a hang is cut off here


def make_store(root: Path, n: int) -> CorrectionsStore:
    """A store of ``n`` accepted synthetic cases (40 x 40 images with a disk lesion), ids ISIC_0000000.. ."""
    store = CorrectionsStore(root)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:40, :40]
    for k in range(n):
        cy, cx, r = 20 + rng.integers(-6, 7), 20 + rng.integers(-6, 7), 6 + rng.integers(0, 8)
        mask = np.hypot(yy - cy, xx - cx) <= r
        image = rng.integers(120, 220, size=(40, 40, 3), dtype=np.uint8)
        image[mask] //= 3
        store.accept(f"ISIC_{k:07d}", image, mask, {"annotator": "A"})
    return store


CHECK = """
import json, sys
from training.corrections.store import CorrectionsStore
check = CorrectionsStore(sys.argv[1]).check()
print(json.dumps({"ids": check.ids, "problems": check.problems}))
"""


def check_in_child(root: Path, timeout: float = 60.0) -> SimpleNamespace:
    """``CorrectionsStore(root).check()`` in a child process under a 4 GiB address-space limit, cut off after ``timeout``:
    a check that blocks on a FIFO or reads a device without end fails the test instead of hanging it or taking all memory."""
    done = _child([sys.executable, "-c", CHECK, str(root)], timeout, 4 * 2**30, "CorrectionsStore.check()")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    return SimpleNamespace(ids=tuple(result["ids"]), problems=tuple(result["problems"]))


def _child(command: list[str], timeout: float, memory_limit: int | None, what: str) -> subprocess.CompletedProcess:
    def limit() -> None:
        if memory_limit is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    try:
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} did not finish within {timeout:.0f} s (it hangs on the store)")


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    """``mlffm ARGS`` in a child process under a 4 GiB address-space limit, cut off after CHILD_TIMEOUT_S."""
    return _child([sys.executable, "-m", "training.cli", *args], CHILD_TIMEOUT_S, 4 * 2**30, f"mlffm {args[0]}")


def finetune_args(store: Path, output: Path, checkpoint: Path) -> list[str]:
    return ["finetune", str(store), "-o", str(output), "--checkpoint", str(checkpoint), "--epochs", "1", "--batch-size", "2", "--device", "cpu"]


def one_line_errors(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    for line in stderr.splitlines():
        assert not line.rstrip().endswith("error:"), f"an empty error message: {line!r}"


@posix_only
def test_a_fifo_record_is_left_out_and_finetune_goes_on(tmp_path, tiny_checkpoint):
    root = tmp_path / "store"
    make_store(root, 5)
    os.mkfifo(root / "meta" / "ISIC_0009999.json")  # a record that is a named pipe: reading it would wait for a writer
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / "images" / "ISIC_0009999.png")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(root / "masks" / "ISIC_0009999.png")

    check = check_in_child(root)
    assert len(check.ids) == 5 and "ISIC_0009999" not in check.ids
    (line,) = [p for p in check.problems if "ISIC_0009999" in p]
    assert "ISIC_0009999.json" in line and "left out" in line and "not a regular file" in line and "FIFO" in line

    output = tmp_path / "tuned.mlffm"
    done = run_cli(finetune_args(root, output, tiny_checkpoint))
    assert done.returncode == 0, done.stderr
    one_line_errors(done.stderr)
    assert "ISIC_0009999.json" in done.stderr and "not a regular file" in done.stderr
    assert Segmenter.load(output, "cpu").provenance["finetune_data"]["n_images"] == 5


@pytest.mark.skipif(not Path("/dev/zero").exists() or sys.platform != "linux", reason="needs /dev/zero and RLIMIT_AS (Linux)")
def test_a_record_linked_to_dev_zero_is_left_out_in_bounded_memory(tmp_path, tiny_checkpoint):
    root = tmp_path / "store"
    make_store(root, 5)
    record = root / "meta" / "ISIC_0000002.json"
    record.unlink()
    os.symlink("/dev/zero", record)  # endless zeros: an unbounded read would take all memory

    check = check_in_child(root)
    assert "ISIC_0000002" not in check.ids and len(check.ids) == 4
    (line,) = [p for p in check.problems if "ISIC_0000002" in p]
    assert "ISIC_0000002.json" in line and "not a regular file" in line and "character device" in line

    output = tmp_path / "tuned.mlffm"
    done = run_cli(finetune_args(root, output, tiny_checkpoint))
    assert done.returncode == 0, done.stderr
    one_line_errors(done.stderr)
    assert "ISIC_0000002.json" in done.stderr and "not a regular file" in done.stderr
    assert Segmenter.load(output, "cpu").provenance["finetune_data"]["n_images"] == 4


@posix_only
def test_fifo_and_device_images_and_masks_are_left_out_without_blocking(tmp_path):
    root = tmp_path / "store"
    make_store(root, 5)
    (root / "images" / "ISIC_0000001.png").unlink()
    os.mkfifo(root / "images" / "ISIC_0000001.png")
    (root / "masks" / "ISIC_0000003.png").unlink()
    os.symlink("/dev/zero", root / "masks" / "ISIC_0000003.png")
    (root / "masks" / "ISIC_0000004.png").unlink()
    (root / "masks" / "ISIC_0000004.png").mkdir()

    check = check_in_child(root)
    assert sorted(check.ids) == ["ISIC_0000000", "ISIC_0000002"]
    text = "\n".join(check.problems)
    for case_id, what, kind in (("ISIC_0000001", "its image images/", "FIFO"), ("ISIC_0000003", "its mask masks/", "character device"), ("ISIC_0000004", "its mask masks/", "folder")):
        (line,) = [p for p in check.problems if f"'{case_id}'" in p]
        assert f"{what}{case_id}.png is not a regular file" in line and kind in line, text


def test_an_oversized_record_is_left_out_and_a_small_one_kept(tmp_path):
    root = tmp_path / "store"
    make_store(root, 3)
    record_path = root / "meta" / "ISIC_0000001.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps(record) + " " * MAX_RECORD_BYTES)  # still the valid record, padded past the cap
    check = CorrectionsStore(root).check()
    assert sorted(check.ids) == ["ISIC_0000000", "ISIC_0000002"]
    (line,) = check.problems
    assert "ISIC_0000001.json" in line and "too large" in line
    record_path.write_text(json.dumps(record))  # the same record within the cap is a good case again
    assert len(CorrectionsStore(root).check().ids) == 3


def test_a_deeply_nested_record_is_left_out_not_a_crash(tmp_path, tiny_checkpoint, capsys):
    root = tmp_path / "store"
    make_store(root, 5)
    (root / "meta" / "ISIC_0000000.json").write_text("[" * 200_000 + "]" * 200_000 + "\n")
    check = CorrectionsStore(root).check()
    assert "ISIC_0000000" not in check.ids and len(check.ids) == 4
    (line,) = check.problems
    assert "ISIC_0000000.json" in line and "not a valid record" in line

    output = tmp_path / "tuned.mlffm"
    assert main(finetune_args(root, output, tiny_checkpoint)) == 0
    err = capsys.readouterr().err
    one_line_errors(err)
    assert "ISIC_0000000.json" in err and "not a valid record" in err
    assert Segmenter.load(output, "cpu").provenance["finetune_data"]["n_images"] == 4


def damage(root: Path) -> tuple[str, str]:
    """One mask that no longer matches its record's SHA-256 and one image (with its mask) without a record."""
    bad_mask, unrecorded = "ISIC_0000003", "ISIC_0000011"
    mask = np.asarray(Image.open(root / "masks" / f"{bad_mask}.png")).copy()
    mask[:5] = 255  # still a valid mask, not the one accepted
    Image.fromarray(mask).save(root / "masks" / f"{bad_mask}.png")
    (root / "meta" / f"{unrecorded}.json").unlink()
    return bad_mask, unrecorded


def test_usable_cases_leaves_out_what_the_store_check_leaves_out_and_uses_the_verified_files(tmp_path):
    root = tmp_path / "store"
    make_store(root, 14)
    bad_mask, unrecorded = damage(root)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / "images" / "ISIC_0000005.jpg")  # sorts before the .png
    listing = usable_cases(root)
    ids = [c.case_id for c in listing.cases]
    assert len(ids) == 12 and bad_mask not in ids and unrecorded not in ids
    assert all(c.image_path == root / "images" / f"{c.case_id}.png" for c in listing.cases)  # the hashed file, not the .jpg
    text = "\n".join(listing.problems)
    assert f"{bad_mask}.png does not match the record" in text and f"no record meta/{unrecorded}.json" in text
    # a plain dataset folder (no records, no meta/) is listed as it is: no hashes to check
    plain = tmp_path / "plain"
    for name in ("images", "masks"):
        shutil.copytree(root / name, plain / name)
    assert [c.case_id for c in usable_cases(plain).cases] == [c.case_id for c in list_cases(plain).cases]
    assert len(list_cases(plain).cases) == 14


def test_adapt_uses_the_verified_cases_of_a_store_with_finetunes_warnings(tmp_path, tiny_checkpoint, capsys):
    root = tmp_path / "store"
    make_store(root, MIN_CASES + 2)
    bad_mask, unrecorded = damage(root)
    out = tmp_path / "models" / "adapted.mlffm"
    out.parent.mkdir()
    code = main(["adapt", str(root), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--no-finetune", "--samples", "1", "--steps", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    one_line_errors(captured.err)
    assert f"{bad_mask}.png does not match the record" in captured.err and f"no record meta/{unrecorded}.json" in captured.err
    assert f"of {MIN_CASES} cases" in captured.out + captured.err and f"of {MIN_CASES + 2} cases" not in captured.out + captured.err
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["n_images"] == MIN_CASES and card["data"]["n_images"] == MIN_CASES

    # finetune reads the same store the same way: the same cases, the same warnings
    assert main(finetune_args(root, tmp_path / "tuned.mlffm", tiny_checkpoint)) == 0
    err = capsys.readouterr().err
    assert f"{bad_mask}.png does not match the record" in err and f"no record meta/{unrecorded}.json" in err
    assert Segmenter.load(tmp_path / "tuned.mlffm", "cpu").provenance["finetune_data"]["n_images"] == MIN_CASES


def test_adapt_counts_only_verified_cases_towards_its_minimum(tmp_path, tiny_checkpoint, capsys):
    root = tmp_path / "store"
    make_store(root, MIN_CASES + 1)
    damage(root)
    out = tmp_path / "models" / "adapted.mlffm"
    out.parent.mkdir()
    assert main(["adapt", str(root), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--no-finetune"]) == 2
    err = capsys.readouterr().err
    one_line_errors(err)
    assert f"{MIN_CASES - 1} usable cases" in err and "correct 1 more" in err and "nothing written" in err
    assert list(out.parent.iterdir()) == []


def test_a_holdout_that_leaves_no_training_case_says_so(tmp_path, tiny_checkpoint, capsys):
    root = tmp_path / "store"
    make_store(root, 6)
    try:
        code = main([*finetune_args(root, tmp_path / "tuned.mlffm", tiny_checkpoint), "--holdout", "0.99"])
    except SystemExit as exit_:  # refused while parsing the arguments
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    one_line_errors(err)
    assert "need at least 2 usable cases" not in err  # there are 6: the holdout is what leaves too few
    assert "--holdout" in err and "0.99" in err
    assert not (tmp_path / "tuned.mlffm").exists()


def test_a_holdout_that_takes_every_case_names_the_numbers(tmp_path, tiny_checkpoint, capsys):
    root = tmp_path / "store"
    make_store(root, 4)  # --holdout 0.9 of 4 cases rounds to all 4
    assert main([*finetune_args(root, tmp_path / "tuned.mlffm", tiny_checkpoint), "--holdout", "0.9"]) == 2
    err = capsys.readouterr().err
    one_line_errors(err)
    assert "need at least 2 usable cases" not in err
    assert "--holdout 0.9" in err and "all 4 usable cases" in err and "none to train on" in err
    assert not (tmp_path / "tuned.mlffm").exists()


def _victim(folder: Path) -> dict[str, bytes]:
    (folder / "sub").mkdir(parents=True)
    (folder / "keep.txt").write_bytes(b"keep")
    (folder / "sub" / "notes.txt").write_bytes(b"important")
    (folder / "sub" / "COMMIT").write_bytes(b"commit\n")
    (folder / "sub" / "record.json").write_bytes(b"{}")
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@posix_only
def test_a_staging_folder_that_is_a_link_is_refused_and_nothing_it_points_to_is_touched(tmp_path, tiny_checkpoint):
    root = tmp_path / "store"
    store = make_store(root, 3)
    victim = tmp_path / "victim"
    before = _victim(victim)
    shutil.rmtree(root / ".staging", ignore_errors=True)
    (root / ".staging").symlink_to(victim, target_is_directory=True)
    with pytest.raises(ValueError, match=r"\.staging: is a symbolic link"):
        store.check()
    done = run_cli(finetune_args(root, tmp_path / "tuned.mlffm", tiny_checkpoint))
    assert done.returncode != 0 and ".staging: is a symbolic link" in done.stderr
    one_line_errors(done.stderr)
    assert _contents(victim) == before and not (tmp_path / "tuned.mlffm").exists()


@posix_only
def test_links_inside_the_staging_folder_are_removed_never_followed(tmp_path):
    root = tmp_path / "store"
    store = make_store(root, 3)
    victim = tmp_path / "victim"
    before = _victim(victim)
    staging = root / ".staging"
    staging.mkdir(exist_ok=True)
    (staging / "ISIC_0000001").symlink_to(victim / "sub", target_is_directory=True)  # a "committed" case that is a link
    (staging / "stray").symlink_to(victim / "keep.txt")
    real = staging / "ISIC_0000002"
    real.mkdir()
    (real / "COMMIT").write_bytes(b"commit\n")
    (real / "image.png").symlink_to(victim / "keep.txt")  # a file that is a link is not moved into the store
    check = store.check()
    assert len(check.ids) == 3 and _contents(victim) == before and not any(staging.iterdir())


def test_adapt_never_removes_what_it_did_not_make_and_keeps_one_run_per_output(tmp_path, tiny_checkpoint, capsys):
    from training.commands.adapt import work_folder_for
    from training.files.outputs import ExclusiveLock, lock_path_for

    from training.commands.adapt import _fine_tune
    from training.loop.trainer import SilentReporter

    root = tmp_path / "store"
    make_store(root, MIN_CASES)
    out = tmp_path / "m.mlffm"
    base = ["--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--samples", "1", "--steps", "1"]
    # A folder that happens to have the work folder's name (here: a copy of the store) is used beside, never removed;
    # a work folder adapt made itself is removed once its own candidate is gone.
    work = work_folder_for(out)
    shutil.copytree(root, work)
    before = _contents(work)
    cases = list(usable_cases(root, "all").cases[:4])
    assert _fine_tune(tiny_checkpoint, "cpu", cases, 1.0, 0, SilentReporter(), lambda: False, work) is not None
    assert _contents(work) == before
    fresh = work_folder_for(tmp_path / "other.mlffm")
    assert _fine_tune(tiny_checkpoint, "cpu", cases, 1.0, 0, SilentReporter(), lambda: False, fresh) is not None
    assert not fresh.exists()
    # -o ending in .json would be the card's own name: refused before anything runs.
    assert main(["adapt", str(root), "-o", str(tmp_path / "j.json"), *base, "--no-finetune"]) == 2
    assert "-o must not end in .json" in capsys.readouterr().err and not (tmp_path / "j.json").exists()
    # A second adapt on the same -o while one holds it fails at once, naming the output.
    with ExclusiveLock(lock_path_for(tmp_path / "n.mlffm"), "n.mlffm"):
        assert main(["adapt", str(root), "-o", str(tmp_path / "n.mlffm"), *base, "--no-finetune"]) == 2
    err = capsys.readouterr().err
    assert "n.mlffm" in err and "Traceback" not in err and not (tmp_path / "n.mlffm").exists()


@pytest.mark.parametrize(
    "image, mask, message",
    [
        (np.zeros((8, 8, 3), np.uint8), np.full((8, 8), 256, np.int32), "mask must be boolean or 0/1"),
        (np.zeros((8, 8, 3), np.uint8), np.full((8, 8), 0.5), "mask must be boolean or 0/1"),
        (np.zeros((8, 8, 3), np.uint8), np.full((8, 8), -1, np.int8), "mask must be boolean or 0/1"),
        (np.full((8, 8, 3), np.nan), np.zeros((8, 8), bool), "NaN"),
        (np.full((8, 8, 3), 70000, np.int32), np.zeros((8, 8), bool), "0..65535"),
        (np.zeros((8, 8, 3), np.complex64), np.zeros((8, 8), bool), "dtype"),
    ],
    ids=["mask 256", "mask 0.5", "mask -1", "image NaN", "image int32 70000", "image complex"],
)
def test_accept_refuses_what_it_would_store_wrongly_and_writes_nothing(tmp_path, image, mask, message):
    store = CorrectionsStore(tmp_path / "store")
    with pytest.raises(ValueError, match=message):
        store.accept("c1", image, mask, {})
    assert not (tmp_path / "store" / "meta").exists() or not any((tmp_path / "store" / "meta").iterdir())


def test_accept_takes_0_1_masks_and_a_record_cannot_rename_the_case(tmp_path):
    store = CorrectionsStore(tmp_path / "store")
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 1
    store.accept("c1", np.full((8, 8, 3), 0.5), mask, {"id": "someone else", "annotator": "A"})
    check = store.check()
    assert check.ids == ("c1",) and not check.problems
    record = json.loads((tmp_path / "store" / "meta" / "c1.json").read_text())
    assert record["id"] == "c1" and record["lesion_pixels"] == 9 and record["annotator"] == "A"
