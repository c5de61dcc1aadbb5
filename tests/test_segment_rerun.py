"""`mlffm segment` reruns into the same folder: a finished case is kept only when it was made from the
same image file with the same checkpoint and sampling settings; otherwise it is refused (named, left
untouched, exit 1) until `--overwrite`, and the other cases of the run still go through."""

import hashlib
import json
import shutil

from training.cli import main
from training.files.segment_case import RESULT_KEYS

from .conftest import SMALL_DATA

FAST = ["--samples", "2", "--steps", "1", "--device", "cpu"]


def _run(args, capsys):
    code = main(["segment", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _images(tmp_path, n=2):
    folder = tmp_path / "in"
    folder.mkdir()
    for path in sorted((SMALL_DATA / "images").glob("*.jpg"))[:n]:
        shutil.copy(path, folder / path.name)
    return folder, sorted(p.stem for p in folder.iterdir())


def _snapshot(out, stem):
    """Every file of a case: bytes and modification time."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir() if p.name.startswith(stem)}


def _record(out, stem):
    return json.loads((out / f"{stem}.json").read_text())


def test_rerun_with_the_same_settings_keeps_and_the_sidecar_records_the_result_key(tmp_path, tiny_checkpoint, capsys):
    folder, (a, b) = _images(tmp_path)
    out = tmp_path / "out"
    args = [folder, "-o", out, "--checkpoint", tiny_checkpoint, *FAST, "--seed", "3"]
    assert _run(args, capsys)[0] == 0
    record = _record(out, a)
    assert record["source_sha256"] == hashlib.sha256((folder / f"{a}.jpg").read_bytes()).hexdigest()
    assert all(key in record for key in RESULT_KEYS) and (record["samples"], record["steps"], record["seed"]) == (2, 1, 3)
    before = _snapshot(out, a)
    # The same settings from another copy of the same checkpoint and images: still current.
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    copy = tmp_path / "copy.mlffm"
    shutil.copy(tiny_checkpoint, copy)
    code, stdout, stderr = _run([moved, "-o", out, "--checkpoint", copy, *FAST, "--seed", "3"], capsys)
    assert code == 0, stderr
    assert "0 segmented, 0 skipped, 2 already segmented (kept)" in stdout
    assert _snapshot(out, a) == before


def test_changed_seed_or_samples_is_refused_without_overwrite_and_replaced_with_it(tmp_path, tiny_checkpoint, capsys):
    folder, (a, b) = _images(tmp_path)
    out = tmp_path / "out"
    base = [folder, "-o", out, "--checkpoint", tiny_checkpoint, "--device", "cpu", "--steps", "1"]
    assert _run([*base, "--samples", "2"], capsys)[0] == 0
    before = {stem: _snapshot(out, stem) for stem in (a, b)}

    code, stdout, stderr = _run([*base, "--samples", "3", "--seed", "5"], capsys)
    assert code == 1 and "Traceback" not in stderr
    assert "0 segmented, 2 skipped" in stdout and "already segmented" not in stdout
    line = next(line for line in stderr.splitlines() if f"{a}.jpg" in line)
    assert "other settings" in line and "samples 2 -> 3" in line and "seed 0 -> 5" in line and "--overwrite" in line
    assert {stem: _snapshot(out, stem) for stem in (a, b)} == before

    code, stdout, stderr = _run([*base, "--samples", "2", "--seed", "5"], capsys)
    line = next(line for line in stderr.splitlines() if f"{a}.jpg" in line)
    assert code == 1 and "(seed 0 -> 5)" in line

    code, stdout, stderr = _run([*base, "--samples", "3", "--seed", "5", "--overwrite"], capsys)
    assert code == 0, stderr
    assert "2 segmented, 0 skipped" in stdout
    assert (_record(out, a)["samples"], _record(out, a)["seed"]) == (3, 5)
    assert _snapshot(out, a)[f"{a}_samples.tif"][0] != before[a][f"{a}_samples.tif"][0]
    # And the replaced cases are current for their new settings.
    code, stdout, _ = _run([*base, "--samples", "3", "--seed", "5"], capsys)
    assert code == 0 and "0 segmented, 0 skipped, 2 already segmented (kept)" in stdout


def test_another_checkpoint_is_refused(tmp_path, tiny_segmenter, tiny_checkpoint, sample_images, capsys):
    out = tmp_path / "out"
    assert _run([sample_images[0], "-o", out, "--checkpoint", tiny_checkpoint, *FAST], capsys)[0] == 0
    other = tmp_path / "other.mlffm"
    tiny_segmenter.with_options(decision_threshold=0.4).save(other)  # same network, other fitted threshold
    before = _snapshot(out, sample_images[0].stem)
    code, stdout, stderr = _run([sample_images[0], "-o", out, "--checkpoint", other, *FAST], capsys)
    assert code == 1 and "checkpoint_id" in stderr and "--overwrite" in stderr
    assert "0 segmented, 1 skipped" in stdout
    assert _snapshot(out, sample_images[0].stem) == before


def test_a_replaced_image_is_refused_while_the_other_cases_go_through(tmp_path, tiny_checkpoint, capsys):
    folder, (a, b) = _images(tmp_path)
    out = tmp_path / "out"
    args = [folder, "-o", out, "--checkpoint", tiny_checkpoint, *FAST]
    assert _run(args, capsys)[0] == 0
    before = {stem: _snapshot(out, stem) for stem in (a, b)}
    third = sorted((SMALL_DATA / "images").glob("*.jpg"))[2]
    shutil.copy(third, folder / f"{a}.jpg")  # a different picture under the old name
    shutil.copy(third, folder / "zz_new.jpg")  # and a new case in the same run
    code, stdout, stderr = _run(args, capsys)
    assert code == 1 and "Traceback" not in stderr
    assert "1 segmented, 1 skipped, 1 already segmented (kept)" in stdout
    line = next(line for line in stderr.splitlines() if f"{a}.jpg" in line)
    assert "image file changed" in line and "--overwrite" in line
    assert {stem: _snapshot(out, stem) for stem in (a, b)} == before
    assert (out / "zz_new.json").is_file() and (out / "zz_new_samples.tif").is_file()

    code, stdout, stderr = _run([*args, "--overwrite"], capsys)
    assert code == 0, stderr
    assert _record(out, a)["source_sha256"] == hashlib.sha256(third.read_bytes()).hexdigest()
    assert (out / f"{a}_samples.tif").read_bytes() == (out / "zz_new_samples.tif").read_bytes()


def test_a_sidecar_without_the_result_key_cannot_be_told_current(tmp_path, tiny_checkpoint, sample_images, capsys):
    out = tmp_path / "out"
    args = [sample_images[0], "-o", out, "--checkpoint", tiny_checkpoint, *FAST]
    assert _run(args, capsys)[0] == 0
    sidecar = out / f"{sample_images[0].stem}.json"
    record = json.loads(sidecar.read_text())
    del record["source_sha256"], record["eta"]  # as an older version wrote it
    sidecar.write_text(json.dumps(record))
    code, stdout, stderr = _run(args, capsys)
    assert code == 1 and "older version" in stderr and "source_sha256" in stderr and "--overwrite" in stderr
    assert json.loads(sidecar.read_text()) == record
    assert _run([*args, "--overwrite"], capsys)[0] == 0
    assert "source_sha256" in json.loads(sidecar.read_text())


def test_an_output_that_is_a_file_or_empty_is_one_line_before_any_model_is_loaded(tmp_path, capsys):
    folder, _ = _images(tmp_path, 1)
    existing = tmp_path / "results.csv"
    existing.write_bytes(b"keep me")
    code, _, err = _run([folder, "-o", existing, *FAST, "--checkpoint", tmp_path / "absent.mlffm"], capsys)
    assert code != 0 and f"{existing}: -o must be a folder" in err and "Traceback" not in err and "Errno" not in err
    assert existing.read_bytes() == b"keep me"
    try:
        main(["segment", str(folder), "-o", "", *FAST])
    except SystemExit as stop:
        assert stop.code == 2
    else:
        raise AssertionError("-o '' was accepted")
    assert "empty string" in capsys.readouterr().err


def test_flat_field_is_part_of_the_result_key_and_old_sidecars_read_it_as_off(tmp_path, tiny_checkpoint, capsys):
    folder, (a, b) = _images(tmp_path)
    out = tmp_path / "out"
    base = [folder, "-o", out, "--checkpoint", tiny_checkpoint, *FAST]
    assert _run(base, capsys)[0] == 0
    assert _record(out, a)["flat_field"] is False
    # A sidecar written before the field existed meant "off": still current for an off run.
    for stem in (a, b):
        record = _record(out, stem)
        del record["flat_field"]
        (out / f"{stem}.json").write_text(json.dumps(record))
    code, stdout, stderr = _run(base, capsys)
    assert code == 0 and "2 already segmented (kept)" in stdout, stderr
    before = _snapshot(out, a)
    code, stdout, stderr = _run([*base, "--flat-field", "on"], capsys)
    line = next(line for line in stderr.splitlines() if f"{a}.jpg" in line)
    assert code == 1 and "flat_field False -> True" in line and _snapshot(out, a) == before
    assert _run([*base, "--flat-field", "on", "--overwrite"], capsys)[0] == 0
    assert _record(out, a)["flat_field"] is True
