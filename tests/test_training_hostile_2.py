"""A second hostile round on train, finetune and adapt: resumes on changed data, cases refused at load, long or
unwritable -o, NaN in provenance, the commands chain, test cases in any letter case."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model import Segmenter
from model.files.checkpoint import read_checkpoint_meta, save_checkpoint
from training.cli import main
from training.commands.adapt import MIN_CASES, _fine_tune
from training.commands.train import without_test_cases
from training.data.datasets import cache_dataset, list_cases
from training.loop.trainer import TrainConfig, resume_path_for, train

from .conftest import SMALL_DATA, tiny_config
from .test_adapt import make_store

TINY = ["--size", "32", "--widths", "4,8", "--image-blocks", "1", "--batch-size", "2"]
QUICK = ["--time-budget", "0.00001", "--batch-size", "2", "--device", "cpu"]  # stops before its first batch: an unfinished run


def _strict(text: str):
    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def _outline(mask_path: Path) -> None:
    """Replace a mask by a closed ring round its middle: an outline, which loading refuses."""
    height, width = np.asarray(Image.open(mask_path)).shape[:2]
    yy, xx = np.ogrid[:height, :width]
    radius = np.hypot(yy - height / 2, xx - width / 2)
    inner = min(height, width) / 4
    Image.fromarray(((radius > inner) & (radius < inner + 3)).astype(np.uint8) * 255).save(mask_path)


def _five_cases(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for image in sorted((SMALL_DATA / "images").glob("*.jpg"))[:5]:
        shutil.copy(image, root / "images")
        shutil.copy(SMALL_DATA / "masks" / f"{image.stem}.png", root / "masks")
    return root


@pytest.fixture
def base_with_chain(tmp_path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "base.mlffm"
    Segmenter(tiny_config(), "cpu").save(path, provenance={"command": "mlffm train X", "commands": ["mlffm train X"]})
    return path


def _first_finetune(tmp_path, base: Path) -> tuple[Path, Path, Path, list[str]]:
    """A finetune of five cases stopped before its first batch: (data, -o, its resume file, its command)."""
    data = _five_cases(tmp_path / "d")
    out = tmp_path / "ft.mlffm"
    first = ["finetune", str(data), "--checkpoint", str(base), "-o", str(out), *QUICK]
    assert main(first) == 0
    return data, out, resume_path_for(out), first


def test_finetune_resume_refuses_other_cases_or_another_held_out_set(tmp_path, base_with_chain, capsys):
    data, out, state, first = _first_finetune(tmp_path, base_with_chain)
    capsys.readouterr()
    resume = [*first, "--resume", str(state)]
    before = state.read_bytes()
    (data / "images" / "ISIC_0000000.jpg").unlink()
    (data / "masks" / "ISIC_0000000.png").unlink()
    assert main(resume) == 2  # was: exit 0, another held-out set compared with the first
    err = capsys.readouterr().err
    assert "--resume continues a run on its own cases and held-out set" in err and "(5 of d," in err and len([line for line in err.splitlines() if "error:" in line]) == 1
    assert state.read_bytes() == before
    # a case whose mask is now refused at load is a change too, though it is still listed
    shutil.copy(SMALL_DATA / "images" / "ISIC_0000000.jpg", data / "images")
    shutil.copy(SMALL_DATA / "masks" / "ISIC_0000001.png", data / "masks" / "ISIC_0000000.png")
    _outline(data / "masks" / "ISIC_0000000.png")
    assert main(resume) == 2
    assert "--resume continues a run on its own cases" in capsys.readouterr().err
    # another --holdout holds out other cases
    shutil.copy(SMALL_DATA / "masks" / "ISIC_0000000.png", data / "masks")
    assert main([*resume, "--holdout", "0.6"]) == 2
    assert "held out with --holdout 0.6" in capsys.readouterr().err
    assert main(resume) == 0, capsys.readouterr().err  # the same cases: it resumes


def test_finetune_commands_are_the_parents_then_each_of_its_own_resumed_or_not(tmp_path, base_with_chain, capsys):
    data, out, state, first = _first_finetune(tmp_path, base_with_chain)
    assert Segmenter.load(out, "cpu").provenance["commands"] == ["mlffm train X", "mlffm " + " ".join(first)]  # was: the parent's only
    resume = [*first, "--resume", str(state)]
    assert main(resume) == 0, capsys.readouterr().err
    chain = ["mlffm train X", "mlffm " + " ".join(first), "mlffm " + " ".join(resume)]
    assert Segmenter.load(state, "cpu").provenance["commands"] == chain  # was: ["mlffm train X"]
    assert Segmenter.load(out, "cpu").provenance["commands"] in (chain[:2], chain)  # the run whose epoch it holds


def test_train_resume_compares_the_cases_that_load_not_the_listing(tmp_path, capsys):
    data = tmp_path / "d"
    shutil.copytree(SMALL_DATA, data)
    out = tmp_path / "m.mlffm"
    args = ["train", str(data), "-o", str(out), *TINY, "--epochs", "3", "--device", "cpu"]
    assert main([*args, "--time-budget", "0.00001"]) == 0
    _outline(data / "masks" / "ISIC_0000003.png")  # a training case: still listed, refused when loaded
    assert main([*args, "--resume", str(resume_path_for(out))]) == 2  # was: went on with 5 cases under the old hash
    err = capsys.readouterr().err
    assert "--resume continues a run on its own data" in err and "loads now (5, validated on 2)" in err
    _outline(data / "masks" / "ISIC_0000015.png")  # a validation case
    shutil.copy(SMALL_DATA / "masks" / "ISIC_0000003.png", data / "masks")
    assert main([*args, "--resume", str(resume_path_for(out))]) == 2
    assert "validated on 1)" in capsys.readouterr().err


def test_train_refuses_a_split_none_of_whose_cases_load(tmp_path, capsys):
    data = tmp_path / "d"
    shutil.copytree(SMALL_DATA, data)
    for case in ("ISIC_0000015", "ISIC_0000016"):
        _outline(data / "masks" / f"{case}.png")
    out = tmp_path / "m.mlffm"
    assert main(["train", str(data), "-o", str(out), *TINY, "--epochs", "1", "--device", "cpu"]) == 2  # was: val Dice nan, exit 0
    err = capsys.readouterr().err
    assert "none of the 2 cases of split 'val' could be loaded" in err and "--val-split" in err
    assert not out.exists() and not resume_path_for(out).exists()
    assert main(["train", str(data), "-o", str(out), *TINY, "--epochs", "1", "--split", "val", "--val-split", "train", "--device", "cpu"]) == 2
    assert "none of the 2 cases of split 'val' could be loaded" in capsys.readouterr().err and not out.exists()
    # one case and no validation split: nothing would be held out to select on
    one = _five_cases(tmp_path / "one")
    for extra in sorted((one / "images").iterdir())[1:]:
        extra.unlink()
    assert main(["train", str(one), "-o", str(out), *TINY, "--epochs", "1", "--split", "all", "--val-split", "", "--device", "cpu"]) == 2
    assert "need at least 2 usable cases" in capsys.readouterr().err and not out.exists()


def test_adapt_counts_the_cases_that_load_against_the_minimum(tmp_path, tiny_checkpoint, capsys):
    store = make_store(tmp_path / "store", MIN_CASES, erode=0)
    _outline(store / "masks" / "case03.png")
    out = tmp_path / "adapted.mlffm"
    assert main(["adapt", str(store), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"{MIN_CASES - 1} usable cases (1 more could not be read" in err and "correct 1 more" in err and "nothing written" in err
    assert not out.exists()


def test_adapt_leaves_test_cases_out_in_any_letter_case(tmp_path, tiny_checkpoint, capsys):
    store = make_store(tmp_path / "store", MIN_CASES + 1, erode=0)
    (store / "splits.csv").write_text("id,split\n" + "".join(f"case{k:02d},{'Test' if k < 2 else 'train'}\n" for k in range(MIN_CASES + 1)))
    out = tmp_path / "adapted.mlffm"
    assert main(["adapt", str(store), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "left out 2 cases that" in err and "split 'test'" in err and f"{MIN_CASES - 1} usable cases" in err
    kept = without_test_cases(list_cases(store), store)
    assert {"case00", "case01"}.isdisjoint(c.case_id for c in kept.cases) and len(kept.cases) == MIN_CASES - 1


@pytest.mark.parametrize("command", ["train", "finetune", "adapt"])
def test_an_output_name_too_long_for_what_is_derived_from_it_is_refused_first(tmp_path, tiny_checkpoint, capsys, command):
    out = tmp_path / ("a" * 230 + ".mlffm")  # fits the limit, its resume file's temporary (or its card's) does not
    if command == "adapt":
        out = tmp_path / ("a" * 245 + ".mlffm")
    common = {"train": [*TINY, "--epochs", "1"], "finetune": ["--checkpoint", str(tiny_checkpoint), "--epochs", "1"], "adapt": ["--checkpoint", str(tiny_checkpoint)]}
    assert main([command, str(SMALL_DATA), "-o", str(out), *common[command], "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert "-o's file name is" in captured.err and "over the file system's limit of 255" in captured.err and "Errno" not in captured.err
    assert "training on" not in captured.out and "fine-tuning on" not in captured.out
    assert list(tmp_path.iterdir()) == [tiny_checkpoint]


def test_adapt_refuses_an_output_folder_or_an_unwritable_folder_before_any_work(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    args = ["adapt", str(SMALL_DATA), "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--overwrite"]
    assert main([*args, "-o", str(folder)]) == 2
    assert "is a folder; -o needs a file name" in capsys.readouterr().err
    real_open = os.open

    def read_only(path, *rest, **kw):
        if Path(path).parent == folder:
            raise PermissionError(13, "Permission denied")
        return real_open(path, *rest, **kw)

    monkeypatch.setattr(os, "open", read_only)  # a read-only folder (the tests may run as root)
    assert main([*args, "-o", str(folder / "a.mlffm")]) == 2
    err = capsys.readouterr().err
    assert "cannot write -o" in err and "Permission denied" in err and "scoring" not in err


class _Recorder:
    def __init__(self):
        self.lines, self.ends = [], []

    def epoch_start(self, *a):
        pass

    def batch_end(self, *a):
        pass

    def epoch_end(self, epoch, metrics):
        self.ends.append(metrics)

    def message(self, text):
        self.lines.append(text)


def test_a_run_with_no_validation_cases_says_so_and_writes_strict_json(tmp_path):
    data = cache_dataset(list_cases(SMALL_DATA, "train").cases, 32)
    empty = cache_dataset([], 32)
    torch.manual_seed(0)
    segmenter = Segmenter(tiny_config(), "cpu")
    out, reporter = tmp_path / "c.mlffm", _Recorder()
    result = train(segmenter, data, empty, TrainConfig(epochs=2, batch_size=4), out, provenance={}, reporter=reporter)
    epochs = [line for line in reporter.lines if line.startswith("epoch")]
    assert len(epochs) == 2 and all("not validated" in line and "nan" not in line for line in epochs)  # was: val Dice nan (best)
    assert result.best_val_dice is None and result.best_epoch == 2 and all(m["val_dice"] is None for m in reporter.ends)
    for path in (out, resume_path_for(out)):
        header = path.read_bytes()[8 : 8 + int.from_bytes(path.read_bytes()[:8], "little")]
        _strict(json.loads(header)["__metadata__"]["meta"])
    assert Segmenter.load(out, "cpu").provenance["best_val_dice"] is None


def test_adapt_inner_finetune_reports_no_nan(tmp_path, tiny_checkpoint):
    cases = list(list_cases(SMALL_DATA, "train").cases)
    reporter = _Recorder()
    tuned = _fine_tune(tiny_checkpoint, "cpu", cases, 1.0, 0, reporter, lambda: False, tmp_path / ".w.adapt-work")
    assert reporter.lines and not any("nan" in line for line in reporter.lines)
    assert tuned.provenance["best_val_dice"] is None and all(r["val_dice"] is None for r in tuned.provenance["history"])


def test_provenance_numbers_that_are_not_finite_are_written_as_null_and_old_files_with_nan_still_load(tmp_path, tiny_segmenter):
    path = tmp_path / "n.mlffm"
    tiny_segmenter.save(path, provenance={"best_val_dice": float("nan"), "history": [{"val_dice": float("inf"), "train_loss": 0.5}]})
    header = path.read_bytes()[8 : 8 + int.from_bytes(path.read_bytes()[:8], "little")]
    meta = _strict(json.loads(header)["__metadata__"]["meta"])  # was: NaN and Infinity in the header
    assert meta["provenance"] == {"best_val_dice": None, "history": [{"val_dice": None, "train_loss": 0.5}]}
    # a file an earlier version wrote, NaN in its header, still loads
    old = tmp_path / "old.mlffm"
    from safetensors.torch import save_file

    from model.files.checkpoint import FORMAT_NAME, FORMAT_VERSION

    text = json.dumps({"config": tiny_segmenter.config.to_dict(), "provenance": {"best_val_dice": float("nan")}})
    assert "NaN" in text
    save_file({k: v.contiguous() for k, v in tiny_segmenter.state_tensors().items()}, str(old), metadata={"format": FORMAT_NAME, "version": str(FORMAT_VERSION), "meta": text})
    assert np.isnan(Segmenter.load(old, "cpu").provenance["best_val_dice"])
    save_checkpoint(tmp_path / "s.mlffm", {}, {"provenance": {"x": [float("-inf")]}})
    assert read_checkpoint_meta(tmp_path / "s.mlffm")["provenance"] == {"x": [None]}


def test_a_resume_without_epochs_keeps_the_runs_own_plan(tmp_path, capsys):
    """`--resume` without --epochs went on with the default 30 epochs, and the cosine schedule with them."""
    out = tmp_path / "m.mlffm"
    args = ["train", str(SMALL_DATA), "-o", str(out), *TINY, "--device", "cpu", "--progress", "json"]
    assert main([*args, "--epochs", "3", "--time-budget", "0.00001"]) == 0
    capsys.readouterr()
    assert main([*args, "--resume", str(resume_path_for(out))]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert {e["epochs"] for e in events if e.get("event") == "epoch_start"} == {3}
    assert read_checkpoint_meta(out)["provenance"]["planned_epochs"] == 3
