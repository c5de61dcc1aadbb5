"""`mlffm segment` over odd file names and folder entries: each is one line naming it, and the batch goes on."""

import os
import shutil
import signal

import numpy as np
import pytest
from PIL import Image

from training.cli import main

FAST = ["--samples", "2", "--steps", "1"]


def _run(args, capsys):
    code = main(["segment", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _said(stderr, path):
    """The live lines (not the summary's) that name ``path``."""
    return [line for line in stderr.splitlines() if line.startswith(f"mlffm segment: {path}: ")]


def test_an_image_whose_output_names_pass_the_name_limit_is_one_line_and_the_batch_goes_on(tmp_path, tiny_checkpoint, sample_images, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(sample_images[0], folder / "good.jpg")
    long_name = folder / ("x" * 240 + ".jpg")  # a legal 244-byte name: its "<stem>_segmentation.png" would be 257
    shutil.copy(sample_images[0], long_name)
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    at_limit = folder / ("é" * ((limit - 31) // 2) + ".jpg")  # two bytes a letter: the longest temporary is exactly the limit
    shutil.copy(sample_images[1], at_limit)
    out = tmp_path / "out"
    code, stdout, stderr = _run([folder, "-o", out, "--checkpoint", tiny_checkpoint, *FAST], capsys)
    assert code == 1 and "Traceback" not in stderr and "error:" not in stderr
    lines = _said(stderr, long_name)
    assert len(lines) == 1 and "would be up to 271 bytes" in lines[0] and f"limit of {limit}" in lines[0] and "rename it" in lines[0]
    assert "2 segmented, 1 skipped" in stdout
    assert (out / "good_segmentation.png").is_file() and (out / f"{at_limit.stem}.json").is_file()
    assert not [name for name in os.listdir(out) if "xxxx" in name]  # nothing of it half-written, no marker, no temporary
    # The same command again keeps the finished cases and says the long one again.
    code, stdout, stderr = _run([folder, "-o", out, "--checkpoint", tiny_checkpoint, *FAST], capsys)
    assert code == 1 and "0 segmented, 1 skipped, 2 already segmented (kept)" in stdout and len(_said(stderr, long_name)) == 1
    # Two shards into a fresh folder write the same cases as one job.
    sharded = tmp_path / "sharded"
    for shard in ("0/2", "1/2"):
        code, stdout, stderr = _run([folder, "-o", sharded, "--checkpoint", tiny_checkpoint, *FAST, "--shard", shard], capsys)
        assert code == 1 and "error:" not in stderr and len(_said(stderr, long_name)) == 1
    assert sorted(os.listdir(sharded)) == sorted(os.listdir(out))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes and links are POSIX")
def test_a_folder_scan_names_image_files_it_does_not_take_and_stays_silent_on_other_files(tmp_path, tiny_checkpoint, sample_images, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(sample_images[0], folder / "good.jpg")
    for name in ("iphone.heic", "scan.jp2", "photo.webp", "anim.GIF"):
        (folder / name).write_bytes(b"an image of a type this program does not read")
    (folder / "gone.jpg").symlink_to(folder / "nowhere")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    os.mkfifo(folder / "pipe.png")
    for name in ("notes.txt", "meta.json", "table.csv"):
        (folder / name).write_text("not an image")
    (folder / "sub").mkdir()
    expected = {
        "iphone.heic": ".heic images are not read; convert it to PNG, JPEG or TIFF",
        "scan.jp2": ".jp2 images are not read",
        "photo.webp": ".webp images are not read",
        "anim.GIF": ".gif images are not read",
        "gone.jpg": "not a regular file (a symbolic link to nothing)",
        "loop.png": "not a regular file (a symbolic link in a loop)",
        "pipe.png": "not a regular file (a named pipe)",
    }
    signal.alarm(120)  # opening the FIFO would block forever: fail instead
    try:
        for out in (tmp_path / "out", folder):  # -o the input folder itself: its own outputs stay silent too
            code, stdout, stderr = _run([folder, "-o", out, "--checkpoint", tiny_checkpoint, *FAST], capsys)
            assert code == 1 and "Traceback" not in stderr, stderr
            for name, words in expected.items():
                lines = _said(stderr, folder / name)
                assert len(lines) == 1 and words in lines[0], (name, stderr)
            assert "1 segmented, 7 skipped" in stdout
            for quiet in ("notes.txt", "meta.json", "table.csv", "good.json", "_segmentation.png", ".segmenting"):
                assert quiet not in stderr, (quiet, stderr)
            assert "1 subfolder not read (sub); add --recursive" in stderr  # said once, not a skip
    finally:
        signal.alarm(0)


def test_control_characters_in_names_are_escaped_in_one_line_messages_that_keep_the_reason(tmp_path, tiny_checkpoint, sample_images, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(sample_images[0], folder / "good.jpg")
    broken = folder / "bad\x1b[2J\nsecond line.png"
    broken.write_bytes(b"\x00\x01 garbage, not a PNG")
    blank = folder / "grey\tred\x1b[31m.png"  # segmented, with a note (a blank image) that names it
    Image.fromarray(np.full((40, 50, 3), 128, np.uint8)).save(blank)
    clash = tmp_path / "other" / broken.name.replace(".png", ".jpg")  # same stem as the broken one: a clash line names both
    clash.parent.mkdir()
    shutil.copy(sample_images[1], clash)
    code, stdout, stderr = _run([folder, clash, "-o", tmp_path / "out", "--checkpoint", tiny_checkpoint, *FAST], capsys)
    assert code == 1 and "Traceback" not in stderr
    assert not any(c in stderr + stdout for c in "\x1b\t"), stderr
    shown_broken = repr(str(broken))
    lines = _said(stderr, shown_broken)
    assert len(lines) == 1 and lines[0].endswith(": cannot read image (not a readable image)"), stderr
    assert f"  {shown_broken}: cannot read image" in stderr  # in the summary too, on one line
    assert len(_said(stderr, repr(str(blank)))) == 1 and "blank image" in _said(stderr, repr(str(blank)))[0]
    assert f"{repr(str(clash))}: skipped, its outputs would clash with {shown_broken}" in stderr
    assert "2 segmented, 2 skipped" in stdout
    assert (tmp_path / "out" / f"{blank.stem}_segmentation.png").is_file()
