"""Resource bombs: images too large are refused from their header, numbers are bounded before allocation,
and running out of memory is one line that a batch survives."""

import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from model import InsufficientMemoryError, Segmenter
from model.inputs.limits import MAX_IMAGE_PIXELS, MAX_SAMPLES, MAX_SEED
from napari_mlffm.reader import get_reader
from training.cli import main
from training.data.image_header import ImageTooLargeError, check_image_header
from training.data.imageio import ImageReadError, read_image, read_mask


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height RGB pixels, with one tiny (wrong) IDAT: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(1000))) + chunk(b"IEND", b"")


def tiff_header_only(width: int, height: int, samples: int = 3, bits: int = 8) -> bytes:
    """A little-endian TIFF whose first IFD claims width x height pixels in one deflate strip of a few bytes."""
    payload = zlib.compress(bytes(64))
    entries = [
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, bits), (259, 3, 1, 8),  # deflate
        (262, 3, 1, 2 if samples == 3 else 1), (273, 4, 1, 0), (277, 3, 1, samples), (278, 4, 1, height), (279, 4, 1, len(payload)),
    ]  # fmt: skip
    ifd_offset = 8
    data_offset = ifd_offset + 2 + 12 * len(entries) + 4
    out = b"II*\x00" + struct.pack("<I", ifd_offset) + struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        value = data_offset if tag == 273 else value
        packed = struct.pack("<H", value) + b"\x00\x00" if kind == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, count) + packed
    return out + struct.pack("<I", 0) + payload


@pytest.mark.parametrize(
    "name, content",
    [
        ("bomb.tif", tiff_header_only(20000, 20000)),  # TIFF: no pixel limit in tifffile
        ("between.png", png_header_only(12000, 12000)),  # 144 Mpx: above ours, below Pillow's 240 Mpx error
        ("huge.png", png_header_only(30000, 30000)),  # above Pillow's own error limit
        ("wide.tif", tiff_header_only(200_000, 700, samples=1)),  # 140 Mpx in one row band
    ],
)
def test_oversized_images_are_refused_from_the_header_before_decoding(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    for reader in (read_image, read_mask, check_image_header):
        started = time.perf_counter()
        with pytest.raises(ImageTooLargeError, match="limit") as info:
            reader(path)
        assert time.perf_counter() - started < 5  # nothing was decoded
        assert name in str(info.value) and "\n" not in str(info.value)
        assert "Mpx, above the limit of 120 Mpx (refused before decoding)" in str(info.value)  # not Pillow's own words
    assert isinstance(info.value, ImageReadError)


def test_an_image_at_the_limit_passes_the_gate(tmp_path):
    path = tmp_path / "edge.png"
    side = int(MAX_IMAGE_PIXELS**0.5)
    path.write_bytes(png_header_only(side, side))
    header = check_image_header(path)
    assert header.width == header.height == side


def test_plugin_reader_claims_a_bomb_and_refuses_it_in_one_line(tmp_path):
    path = tmp_path / "bomb.tif"
    path.write_bytes(tiff_header_only(20000, 20000))
    reader = get_reader(str(path))
    assert reader is not None  # claimed, so no other reader tries to decode it
    with pytest.raises(ImageTooLargeError, match="bomb.tif"):
        reader(str(path))


def test_segment_refuses_a_bomb_in_one_line_and_segments_the_next_image(tmp_path, tiny_checkpoint, sample_images, capsys):
    bomb = tmp_path / "in" / "a_bomb.tif"
    bomb.parent.mkdir()
    bomb.write_bytes(tiff_header_only(20000, 20000))
    good = bomb.parent / "b_good.jpg"
    good.write_bytes(sample_images[0].read_bytes())
    out = tmp_path / "out"
    code = main(["segment", str(bomb.parent), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--samples", "2", "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert (out / "b_good_segmentation.png").is_file() and not (out / "a_bomb_segmentation.png").exists()
    lines = [line for line in err.splitlines() if "a_bomb.tif" in line]
    assert lines and "Mpx" in lines[0] and "Traceback" not in err


@pytest.mark.parametrize(
    "flag, value",
    [("--samples", "100000000"), ("--samples", "0"), ("--steps", "10000000"), ("--seed", "-1"), ("--seed", str(2**64)), ("--samples", "1.5")],
)
def test_cli_numbers_are_bounded_by_argparse_in_one_line(tmp_path, sample_images, capsys, flag, value):
    with pytest.raises(SystemExit) as info:
        main(["segment", str(sample_images[0]), "-o", str(tmp_path / "out"), flag, value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and flag in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "command, flag, value",
    [
        ("train", "--batch-size", "100000000"), ("train", "--epochs", "0"), ("train", "--lr", "nan"), ("train", "--lr", "-1"),
        ("train", "--time-budget", "inf"), ("train", "--limit", "0"), ("finetune", "--batch-size", "0"),
        ("finetune", "--time-budget", "-5"), ("finetune", "--seed", "-1"),
        ("adapt", "--limit", "-1"), ("adapt", "--samples", "0"), ("adapt", "--steps", "100000000"),
        ("adapt", "--seed", "-1"), ("adapt", "--time-budget", "nan"),
    ],
)
def test_training_numbers_are_bounded_before_any_data_is_read(tmp_path, capsys, command, flag, value):
    with pytest.raises(SystemExit) as info:
        main([command, str(tmp_path / "no-such-data"), "-o", str(tmp_path / "m.mlffm"), flag, value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"argument {flag}" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_samples": 100_000_000}, "n_samples must be in 1..256"),
        ({"n_samples": 2.5}, "n_samples must be an integer"),
        ({"n_samples": True}, "n_samples must be an integer"),
        ({"steps": 10**12}, "steps must be in"),
        ({"steps": 4}, "steps must be in 1..3"),  # more DDIM steps than the tiny model's 3 training timesteps
        ({"seed": -1}, "seed must be in"),
        ({"seed": 2**64}, "seed must be in"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"eta": float("nan")}, "eta must be in"),
    ],
)
def test_api_numbers_are_bounded_before_allocation(kwargs, message, rgb_image):
    from model.config import DiffusionConfig

    from .conftest import tiny_config

    segmenter = Segmenter(tiny_config(diffusion=DiffusionConfig(timesteps=3)), "cpu")
    with pytest.raises(ValueError, match=message):
        segmenter.propose(rgb_image, **kwargs)
    assert segmenter.encode_calls == 0  # refused before the network ran
    assert MAX_SAMPLES == 256 and MAX_SEED == 2**63 - 1  # the documented limits


def test_proposals_too_large_for_memory_are_refused_before_sampling(tiny_segmenter):
    huge_view = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (10000, 10000, 3))  # no memory behind it
    # 64 masks and the float maps of 100 Mpx: about 10 GB (the masks alone were 6.4 GB and passed a 4.3 GB bound by count)
    with pytest.raises(ValueError, match="use at most 45 samples"):
        tiny_segmenter.propose(huge_view, n_samples=64, steps=1)
    # the files' pixel bound holds for arrays too: 144 Mpx with one sample needed 5.6 GB and was accepted
    too_many_pixels = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (12000, 12000, 3))
    with pytest.raises(ValueError, match="above the limit of 120 Mpx"):
        tiny_segmenter.propose(too_many_pixels, n_samples=1, steps=1)
    assert tiny_segmenter.encode_calls == 0


def test_out_of_cpu_memory_during_a_proposal_is_one_line(tiny_segmenter, rgb_image, monkeypatch):
    def exhausted(*args, **kwargs):
        return torch.empty(2**45)  # a real allocator failure (128 TiB)

    monkeypatch.setattr(tiny_segmenter.network, "denoise", exhausted)
    with pytest.raises(InsufficientMemoryError, match="out of memory proposing 2 samples of a 56 x 40 image") as info:
        tiny_segmenter.propose(rgb_image, n_samples=2, steps=1)
    assert "\n" not in str(info.value) and isinstance(info.value, MemoryError)


def test_segment_goes_on_after_running_out_of_memory_on_one_image(tmp_path, tiny_checkpoint, sample_images, capsys, monkeypatch):
    from model import segmenter as segmenter_module

    folder = tmp_path / "in"
    folder.mkdir()
    first, second = folder / "a_first.jpg", folder / "b_second.jpg"
    first.write_bytes(sample_images[0].read_bytes())
    second.write_bytes(sample_images[1].read_bytes())
    original = segmenter_module.Segmenter._to_proposal
    calls = []

    def first_one_exhausts(self, soft, height, width, *args, **kwargs):
        calls.append(height)
        if len(calls) == 1:
            np.empty(2**45)  # numpy's MemoryError, as a full-resolution allocation would raise
        return original(self, soft, height, width, *args, **kwargs)

    monkeypatch.setattr(segmenter_module.Segmenter, "_to_proposal", first_one_exhausts)
    out = tmp_path / "out"
    code = main(["segment", str(folder), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--samples", "2", "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert [line for line in err.splitlines() if "a_first.jpg" in line and "out of memory" in line]
    assert (out / "b_second_segmentation.png").is_file() and not (out / "a_first_segmentation.png").exists()


def test_realistic_compressed_tiff_bomb(tmp_path):
    """A 20000 x 20000 deflate TIFF written by tifffile (tiles of zeros), about half a megabyte on disk."""
    import tifffile

    path = tmp_path / "zeros.tif"
    tile = np.zeros((512, 512), np.uint8)
    tiles = (tile for _ in range(40 * 40))
    tifffile.imwrite(path, tiles, shape=(20480, 20480), dtype=np.uint8, tile=(512, 512), compression="zlib")
    assert path.stat().st_size < 2_000_000
    with pytest.raises(ImageTooLargeError, match="20480 x 20480"):
        read_image(path)


def test_pillow_large_but_allowed_png_reads_without_a_warning(tmp_path, recwarn):
    path = tmp_path / "ok.png"
    Image.fromarray(np.zeros((300, 200, 3), np.uint8)).save(path)
    assert read_image(path).shape == (300, 200, 3)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_a_thin_strip_is_refused_from_its_header_and_by_the_api_before_allocation(tmp_path, tiny_segmenter):
    # under the pixel limit, but 1 x 100 million: the resize and the masks would need tens of GB
    strip = tmp_path / "strip.png"
    strip.write_bytes(png_header_only(100_000_000, 1))
    with pytest.raises(ImageTooLargeError, match="100000000 x 1 pixels: its sides differ 100,000,000:1"):
        check_image_header(strip)
    thin = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (1, 5_000_000, 3))  # no memory behind it
    with pytest.raises(ValueError, match="above the limit of 10:1"):
        tiny_segmenter.propose(thin, 2, 1)
    tiny_segmenter.propose(np.zeros((10, 100, 3), np.uint8), 2, 1)  # 10:1 is still an image
