"""Strange images: each is processed at its own size and orientation, or refused with a one-line message."""

import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from training.data.imageio import ImageReadError, read_image

from .conftest import SAMPLES


def _jpeg_bytes(array, **kwargs):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", **kwargs)
    return buffer.getvalue()


@pytest.fixture
def real_jpeg():
    return sorted(SAMPLES.glob("*.jpg"))[0].read_bytes()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.jpg", b"", "empty file"),
        ("text.png", b"just some notes, not pixels", "cannot read"),
        ("text.tif", b"II*\x00 broken tiff", "cannot read"),
    ],
)
def test_unreadable_files_are_refused_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=message) as info:
        read_image(path)
    assert name in str(info.value) and "\n" not in str(info.value)


def test_truncated_jpeg_is_refused(tmp_path, real_jpeg):
    path = tmp_path / "cut.jpg"
    path.write_bytes(real_jpeg[: len(real_jpeg) // 2])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        read_image(path)


def _write(tmp_path, name, writer):
    path = tmp_path / name
    writer(path)
    return path


CASES = {
    "1x1.png": (lambda p: Image.fromarray(np.full((1, 1, 3), 90, np.uint8)).save(p), (1, 1)),
    "gray.png": (lambda p: Image.fromarray(np.full((30, 20), 90, np.uint8)).save(p), (30, 20)),
    "rgba.png": (lambda p: Image.fromarray(np.full((30, 20, 4), 90, np.uint8)).save(p), (30, 20)),
    "palette.png": (lambda p: Image.fromarray(np.full((30, 20, 3), 90, np.uint8)).convert("P").save(p), (30, 20)),
    "cmyk.jpg": (lambda p: Image.fromarray(np.full((30, 20, 3), 90, np.uint8)).convert("CMYK").save(p), (30, 20)),
    "16bit.tif": (lambda p: tifffile.imwrite(p, np.full((30, 20, 3), 40000, np.uint16)), (30, 20)),
    "16bit-gray.png": (lambda p: Image.fromarray(np.full((30, 20), 40000, np.uint16)).save(p), (30, 20)),
    "pages.tif": (lambda p: tifffile.imwrite(p, np.zeros((3, 30, 20), np.uint8), photometric="minisblack"), (30, 20)),
    "space é ü.bmp": (lambda p: Image.fromarray(np.full((30, 20, 3), 90, np.uint8)).save(p), (30, 20)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_odd_images_segment_at_their_own_size(tmp_path, tiny_segmenter, name):
    writer, (h, w) = CASES[name]
    image = read_image(_write(tmp_path, name, writer))
    assert image.shape[:2] == (h, w) and image.shape[2] == 3 and image.dtype in (np.uint8, np.uint16)
    proposal = tiny_segmenter.propose(image, n_samples=2, steps=1)
    assert proposal.samples.shape == (2, h, w) and proposal.probability.shape == (h, w)


def test_exif_rotated_jpeg_is_read_upright(tmp_path, tiny_segmenter):
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :10] = 255  # a white band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(array).save(path, exif=exif, quality=95)
    image = read_image(path)
    assert image.shape[:2] == (40, 20)
    assert image[:10].mean() > 200 and image[-10:].mean() < 50  # the band is now on top
    assert tiny_segmenter.propose(image, n_samples=1, steps=1).samples.shape == (1, 40, 20)


def test_huge_image_is_downscaled_for_the_model_and_upscaled_back(tmp_path, tiny_segmenter):
    path = tmp_path / "huge.png"
    Image.fromarray(np.full((6000, 8000, 3), 120, np.uint8)).save(path, compress_level=1)
    image = read_image(path)
    assert image.shape == (6000, 8000, 3)
    proposal = tiny_segmenter.propose(image, n_samples=2, steps=1)
    assert proposal.samples.shape == (2, 6000, 8000) and proposal.uncertainty.shape == (6000, 8000)


def test_timedelta_images_are_refused_and_json_records_are_strict():
    import json

    from model.inputs.preprocess import to_float_rgb
    from training.data.imageio import encode_json

    with pytest.raises(ValueError, match="unsupported image dtype timedelta64"):
        to_float_rgb(np.zeros((4, 4, 3), "timedelta64[s]"))
    text = encode_json({"hd95": float("nan"), "per_image": [{"x": np.float32("inf")}, 1.5]}).decode()
    assert json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in JSON")) == {"hd95": None, "per_image": [{"x": None}, 1.5]}


def _square(value, dtype=np.uint8, channels=None):
    shape = (60, 80) if channels is None else (60, 80, channels)
    image = np.zeros(shape, dtype)
    image[20:40, 30:50] = value
    return image


def test_tiff_colour_types_are_read_as_they_look(tmp_path):
    """MINISWHITE is stored inverted, a palette TIFF holds indices into a colour map, CMYK may be 16-bit: each reads as its picture."""
    tifffile.imwrite(tmp_path / "white8.tif", 255 - _square(200), photometric="miniswhite")
    tifffile.imwrite(tmp_path / "white16.tif", 65535 - _square(50000, np.uint16), photometric="miniswhite")
    colormap = np.zeros((3, 256), np.uint16)
    colormap[:, 1] = (200 * 257, 30 * 257, 30 * 257)  # index 1 is red
    tifffile.imwrite(tmp_path / "palette.tif", _square(1), photometric="palette", colormap=colormap)
    cmyk = _square(0, np.uint16, 4)
    cmyk[20:40, 30:50] = (0, 65535, 65535, 0)  # no cyan, full magenta and yellow: red
    tifffile.imwrite(tmp_path / "cmyk16.tif", cmyk, photometric="separated")
    assert read_image(tmp_path / "white8.tif")[30, 40].tolist() in (200, [200, 200, 200])
    assert read_image(tmp_path / "white8.tif")[0, 0].tolist() in (0, [0, 0, 0])
    assert read_image(tmp_path / "white16.tif")[30, 40].tolist() in (50000, [50000] * 3)
    assert read_image(tmp_path / "palette.tif")[30, 40].tolist() == [200, 30, 30]
    red = read_image(tmp_path / "cmyk16.tif")
    assert red.dtype == np.uint8 and red[30, 40, 0] > 200 and red[30, 40, 1] < 40 and red[0, 0].min() > 200  # white paper around


@pytest.mark.parametrize("mode", ["YCbCr", "LAB"])
def test_other_tiff_colour_spaces_are_converted_or_refused_in_one_line(tmp_path, mode):
    rgb = _square(0, np.uint8, 3) + 255
    rgb[20:40, 30:50] = (200, 30, 30)
    path = tmp_path / f"{mode}.tif"
    Image.fromarray(rgb).convert(mode).save(path)
    try:
        image = read_image(path)
    except ImageReadError as err:
        assert str(err).startswith(str(path)) and "\n" not in str(err)
        return
    assert image.shape == (60, 80, 3) and abs(int(image[30, 40, 0]) - 200) < 30 and image[30, 40, 1] < 70


def test_a_big_endian_uint16_image_is_read_by_its_values(tiny_segmenter):
    image = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint16)  # dark 16-bit values, all below 256
    native = tiny_segmenter.propose(image, 2, 1)
    swapped = tiny_segmenter.propose(image.astype(">u2"), 2, 1)  # was scaled as 8-bit: a different proposal
    assert np.array_equal(native.probability, swapped.probability)


def test_a_torch_device_is_checked_as_its_name_is():
    import torch

    from model.devices import resolve_device

    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'meta'"):
        resolve_device(torch.device("meta"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device(torch.device("cuda"))


def test_a_large_photo_is_subsampled_from_the_middle_of_each_block_so_it_does_not_move():
    """A smooth blob centred in an 8192 x 6144 frame stays at the centre of what the network sees (strided
    sampling from each block's first pixel moved it 15.5 px down and right)."""
    import torch

    from model.inputs.preprocess import resize_to_working, subsample_stride, to_float_rgb

    height, width, size = 6144, 8192, 96
    yy, xx = np.ogrid[:height, :width]
    blob = np.exp(-(((yy + 0.5 - height / 2) / (height / 8)) ** 2 + ((xx + 0.5 - width / 2) / (width / 8)) ** 2))
    image = (blob * 255).round().astype(np.uint8)
    assert subsample_stride(image.shape, size) == 32
    seen = resize_to_working(torch.from_numpy(to_float_rgb(image, max_side=size)).permute(2, 0, 1)[None], size)[0, 0].numpy()
    seen = seen - seen.min()
    rows, cols = np.mgrid[:size, :size]
    centre = ((seen * rows).sum() / seen.sum(), (seen * cols).sum() / seen.sum())
    shift = ((centre[0] - (size - 1) / 2) * height / size, (centre[1] - (size - 1) / 2) * width / size)
    assert abs(shift[0]) < 1.0 and abs(shift[1]) < 1.0, shift
