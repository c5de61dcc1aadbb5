"""Input semantics of image files: TIFF orientation as EXIF's, and pixel values by the Python API's rule."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from training.cli import main
from training.data.imageio import ImageReadError, read_image


def _pattern() -> np.ndarray:
    """(20, 30, 3) uint8 with no symmetry, so every orientation gives a different array."""
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_is_honoured_like_exif(tmp_path, orientation):
    pixels = _pattern()
    tiff = tmp_path / f"o{orientation}.tif"
    tifffile.imwrite(tiff, pixels, photometric="rgb", extratags=[(274, "H", 1, orientation, True)])
    png = tmp_path / f"o{orientation}.png"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(png, exif=exif)
    from_tiff, from_png = read_image(tiff), read_image(png)
    assert np.array_equal(from_tiff, from_png)
    expected_shape = (30, 20, 3) if orientation >= 5 else (20, 30, 3)
    assert from_tiff.shape == expected_shape
    if orientation == 1:
        assert np.array_equal(from_tiff, pixels)


def test_orientation_also_applies_to_a_16_bit_grayscale_tiff(tmp_path):
    pixels = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 50
    path = tmp_path / "gray16.tif"
    tifffile.imwrite(path, pixels, photometric="minisblack", extratags=[(274, "H", 1, 6, True)])
    image = read_image(path)
    assert image.shape == (30, 20, 3) and image.dtype == np.uint16
    assert np.array_equal(image[..., 0], np.rot90(pixels, -1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_tiff_holding_0_to_255_is_refused_as_the_api_refuses_it(tmp_path, dtype, tiny_segmenter):
    pixels = _pattern().astype(dtype)  # 0..255 in floats: not silently clipped to a white image
    path = tmp_path / "float255.tif"
    tifffile.imwrite(path, pixels, photometric="rgb")
    with pytest.raises(ImageReadError, match=r"float image values must lie in \[0, 1\]") as info:
        read_image(path)
    assert "float255.tif" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tiny_segmenter.propose(pixels, n_samples=1, steps=1)  # the Python API's same rule


def test_float_tiff_in_0_to_1_is_read_and_scaled(tmp_path):
    pixels = _pattern()
    path = tmp_path / "float01.tif"
    tifffile.imwrite(path, pixels.astype(np.float32) / 255, photometric="rgb")
    image = read_image(path)
    assert image.dtype == np.uint8 and np.abs(image.astype(int) - pixels).max() <= 1


def test_float_tiff_with_nan_is_refused(tmp_path):
    pixels = np.full((10, 10), 0.5, np.float32)
    pixels[3, 3] = np.nan
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, pixels)
    with pytest.raises(ImageReadError, match="NaN"):
        read_image(path)


def test_integer_tiffs_follow_the_api_value_rule(tmp_path):
    small = tmp_path / "int32_small.tif"
    tifffile.imwrite(small, _pattern().astype(np.int32), photometric="rgb")
    image = read_image(small)
    assert image.dtype == np.uint8 and np.array_equal(image, _pattern())  # 0..255 in int32 is 8-bit, not near-black 16-bit
    negative = tmp_path / "int16_negative.tif"
    tifffile.imwrite(negative, np.full((8, 8), -5, np.int16))
    with pytest.raises(ImageReadError, match="0..65535"):
        read_image(negative)


def test_segment_reports_a_float_tiff_in_one_line_and_goes_on(tmp_path, tiny_checkpoint, sample_images, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "a_float.tif", _pattern().astype(np.float32), photometric="rgb")
    (folder / "b_good.jpg").write_bytes(sample_images[0].read_bytes())
    out = tmp_path / "out"
    code = main(["segment", str(folder), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--samples", "1", "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert [line for line in err.splitlines() if "a_float.tif" in line and "[0, 1]" in line]
    assert (out / "b_good_segmentation.png").is_file()
