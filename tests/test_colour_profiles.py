"""Embedded ICC profiles: a phone's Display P3 photo or a camera's Adobe RGB file is read as the sRGB it means."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

from tests.icc_profile_bytes import (
    ADOBE_RGB_XY,
    DISPLAY_P3_XY,
    SRGB_XY,
    display_profile,
    expected_srgb,
    grey_profile,
    srgb_encode,
)
from training.data.imageio import ImageReadWarning, read_image, read_mask

P3 = display_profile("Display P3 (test)", DISPLAY_P3_XY)
ADOBE = display_profile("Adobe RGB (1998) (test)", ADOBE_RGB_XY, gamma=563 / 256)


@pytest.fixture
def skin_pixels() -> np.ndarray:
    """(16, 16, 3) uint8: skin and lesion tones, white, black and random colours."""
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    pixels[0, :4] = [[200, 120, 100], [150, 80, 60], [255, 255, 255], [0, 0, 0]]
    return pixels


@pytest.mark.parametrize("profile, primaries, gamma", [(P3, DISPLAY_P3_XY, None), (ADOBE, ADOBE_RGB_XY, 563 / 256)])
def test_a_wide_gamut_png_is_read_as_the_srgb_it_means(tmp_path, skin_pixels, profile, primaries, gamma):
    path = tmp_path / "photo.png"
    Image.fromarray(skin_pixels).save(path, icc_profile=profile)
    read = read_image(path)
    expected = expected_srgb(skin_pixels, primaries, gamma)
    assert np.abs(read.astype(int) - expected).max() <= 1
    assert np.abs(read.astype(int) - skin_pixels).max() > 10  # the stored numbers alone would be another colour
    assert (read[0, 2] == 255).all() and (read[0, 3] == 0).all()  # white stays white, black black


def test_a_display_p3_jpeg_and_tiff_are_converted_too(tmp_path, skin_pixels):
    jpeg, tiff = tmp_path / "phone.jpg", tmp_path / "scan.tif"
    Image.fromarray(skin_pixels).save(jpeg, quality=100, subsampling=0, icc_profile=P3)
    tifffile.imwrite(tiff, skin_pixels, photometric="rgb", iccprofile=P3)
    expected = expected_srgb(skin_pixels, DISPLAY_P3_XY)
    assert np.abs(read_image(tiff).astype(int) - expected).max() <= 1
    assert np.abs(read_image(jpeg).astype(int) - expected).mean() < 1.5  # JPEG rounding on top


def test_an_srgb_profile_or_none_reads_the_stored_pixels_bit_for_bit(tmp_path, skin_pixels):
    tagged, plain = tmp_path / "tagged.png", tmp_path / "plain.png"
    Image.fromarray(skin_pixels).save(tagged, icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    Image.fromarray(skin_pixels).save(plain)
    assert np.array_equal(read_image(tagged), skin_pixels)
    assert np.array_equal(read_image(plain), skin_pixels)


def test_srgb_is_told_by_what_a_profile_does_not_by_its_name(tmp_path, skin_pixels):
    """A linear profile named "sRGB linear" is converted; sRGB's primaries and curve under another name are not."""
    linear, renamed = tmp_path / "linear.png", tmp_path / "renamed.png"
    Image.fromarray(skin_pixels).save(linear, icc_profile=display_profile("sRGB linear", SRGB_XY, gamma=1.0))
    Image.fromarray(skin_pixels).save(renamed, icc_profile=display_profile("my monitor", SRGB_XY))
    assert np.abs(read_image(linear).astype(int) - expected_srgb(skin_pixels, SRGB_XY, 1.0)).max() <= 1  # was read as stored
    assert np.array_equal(read_image(renamed), skin_pixels)


def test_a_16_bit_image_with_a_wide_gamut_profile_says_its_profile_was_not_applied(tmp_path, skin_pixels):
    path = tmp_path / "lightroom.tif"
    tifffile.imwrite(path, skin_pixels.astype(np.uint16) * 257, photometric="rgb", iccprofile=P3)
    with pytest.warns(ImageReadWarning, match=r"lightroom\.tif: its colour profile was not applied to its uint16 pixels"):
        read_image(path)


def test_a_grey_image_with_a_gamma_18_profile(tmp_path):
    grey = np.arange(0, 256, 4, dtype=np.uint8).reshape(8, 8)
    path = tmp_path / "grey.png"
    Image.fromarray(grey).save(path, icc_profile=grey_profile("Gray Gamma 1.8 (test)", 1.8))
    read = read_image(path)
    assert read.shape == (8, 8, 3) and (read == read[..., :1]).all()
    assert np.abs(read[..., 0].astype(int) - np.round(srgb_encode((grey / 255.0) ** 1.8) * 255)).max() <= 1


def test_a_damaged_profile_warns_in_one_line_and_keeps_the_stored_pixels(tmp_path, skin_pixels):
    path = tmp_path / "odd.png"
    Image.fromarray(skin_pixels).save(path, icc_profile=b"not a profile" * 10)
    with pytest.warns(ImageReadWarning, match=r"odd\.png: its embedded colour profile is damaged"):
        read = read_image(path)
    assert np.array_equal(read, skin_pixels)


def test_a_profile_for_other_pixels_is_not_applied(tmp_path, skin_pixels):
    """An RGB profile on CMYK pixels: the plain CMYK conversion, with a warning naming the file."""
    cmyk = Image.fromarray(skin_pixels).convert("CMYK")
    tagged, plain = tmp_path / "tagged.jpg", tmp_path / "plain.jpg"
    cmyk.save(tagged, quality=95, icc_profile=P3)
    cmyk.save(plain, quality=95)
    with pytest.warns(ImageReadWarning, match=r"tagged\.jpg: its colour profile is for RGB pixels, not CMYK"):
        read = read_image(tagged)
    assert np.array_equal(read, read_image(plain))


def test_a_mask_with_a_profile_keeps_its_values(tmp_path):
    """Mask values are labels, not colours: a profile on a mask file is never applied."""
    mask = np.zeros((16, 16, 3), np.uint8)
    mask[4:12, 4:12] = 255
    path = tmp_path / "mask.png"
    Image.fromarray(mask).save(path, icc_profile=P3)
    assert np.array_equal(read_mask(path), mask[..., 0] > 0)


def test_mlffm_segment_prints_a_profile_warning_as_one_line(tmp_path, skin_pixels):
    """The CLI's warnings are one line each ('warning: <file>: <what>'), not a source line under a location."""
    path = tmp_path / "odd.png"
    Image.fromarray(np.kron(skin_pixels, np.ones((4, 4, 1), np.uint8))).save(path, icc_profile=b"not a profile" * 10)
    done = subprocess.run(
        [sys.executable, "-m", "training.cli", "segment", str(path), "-o", str(tmp_path / "out"), "--samples", "2", "--steps", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    warning_lines = [line.split("\r")[-1] for line in done.stderr.splitlines() if "profile" in line]
    assert warning_lines == [f"warning: {path}: its embedded colour profile is damaged and was not applied"], done.stderr


def test_a_warning_naming_a_file_with_control_characters_stays_one_escaped_line(capsys):
    from training.cli import _show_warning_line

    _show_warning_line("in/bad\x1b[2J\nname.jpg: its embedded colour profile is damaged", ImageReadWarning, "x.py", 1)
    assert capsys.readouterr().err == "warning: in/bad\\x1b[2J\\nname.jpg: its embedded colour profile is damaged\n"
