"""How a mask's values become lesion and skin (training/data/masks.py) for masks other tools and clinics write:
levels beside labels, 10- and 12-bit masks in 16-bit files, lesions drawn in alpha."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data.imageio import ImageReadError, read_mask
from training.data.masks import binary_mask

from .test_dataset_parsing import _png


def test_a_small_label_beside_a_level_above_half_is_refused_not_cut(tmp_path):
    touched = np.zeros((16, 16), np.uint8)
    touched[4:12, 4:12] = 1
    touched[0:2, 0:2] = 255  # a 0/1 mask touched with 255: the grey rule kept only the dab, Dice 0 against the lesion
    with pytest.raises(ImageReadError, match=r"mask values 0, 1 and 255: .*ambiguous"):
        read_mask(_png(tmp_path / "touched.png", touched))
    ring = np.zeros((16, 16), np.uint8)
    ring[2:14, 2:14] = 127
    ring[4:12, 4:12] = 255
    assert np.array_equal(read_mask(_png(tmp_path / "grey.png", ring)), ring == 255)  # a grey level, not a label: cut at half
    ring[ring == 127] = 128
    assert np.array_equal(read_mask(_png(tmp_path / "both.png", ring)), ring > 0)


def test_a_16_bit_label_map_or_a_linear_ramp_is_not_taken_for_an_anti_aliased_mask(tmp_path):
    labels = np.repeat(np.arange(1, 301, dtype=np.uint16), 20).reshape(60, 100)  # instance labels 1..300
    with pytest.raises(ImageReadError, match="look like labels"):
        read_mask(_png(tmp_path / "labels16.png", labels))
    ramp = np.tile(np.linspace(0, 4096, 64).astype(np.uint16), (64, 1))  # spread evenly: no solid lesion
    with pytest.raises(ImageReadError, match="look like labels"):
        read_mask(_png(tmp_path / "ramp.png", ramp))


def test_a_12_bit_ramp_in_a_16_bit_file_is_a_grey_level_mask(tmp_path):
    rows, cols = np.mgrid[0:64, 0:64]
    distance = np.hypot(rows - 32, cols - 32)
    soft = np.clip((20 - distance) / 4 + 0.5, 0, 1)  # an anti-aliased disk of radius 20
    for top in (4095, 4080):  # 12-bit values, or 8-bit ones times 16: below half the 16-bit range everywhere
        values = (soft * top).round().astype(np.uint16)
        path = tmp_path / f"m{top}.png"
        Image.fromarray(values).save(path)
        assert np.array_equal(read_mask(path), values >= (top + 1) // 2)  # was refused as "labels"


def test_a_lesion_drawn_in_alpha_over_one_colour_is_read_from_alpha(tmp_path):
    truth = np.zeros((8, 8), bool)
    truth[1:5, 2:7] = True
    for colour in ((255, 255, 255), (255, 0, 0)):
        rgba = np.zeros((8, 8, 4), np.uint8)
        rgba[..., :3] = colour
        rgba[truth, 3] = 255
        assert np.array_equal(read_mask(_png(tmp_path / f"alpha{colour[1]}.png", rgba)), truth)  # was all lesion


@pytest.mark.parametrize("radius, sigma", [(8, 1.5), (6, 2.0), (40, 6.0)])
def test_small_or_soft_12_bit_masks_in_16_bits_read_as_their_8_bit_versions(tmp_path, radius, sigma):
    from scipy import ndimage

    disk = np.zeros((128, 128))
    rows, cols = np.mgrid[0:128, 0:128]
    disk[np.hypot(rows - 64, cols - 64) <= radius] = 1.0
    soft = ndimage.gaussian_filter(disk, sigma)
    eight = (soft / soft.max() * 255).round().astype(np.uint8)
    twelve = (soft / soft.max() * 4095).round().astype(np.uint16)
    Image.fromarray(eight).save(tmp_path / "m8.png")
    Image.fromarray(twelve).save(tmp_path / "m12.png")
    assert abs(int(read_mask(tmp_path / "m12.png").sum()) - int(read_mask(tmp_path / "m8.png").sum())) <= max(2, radius // 2)


def test_an_8_bit_mask_touched_with_16_bit_white_is_refused():
    from training.data.masks import AmbiguousMaskError

    values = np.zeros((16, 16), np.uint16)
    values[4:12, 4:12] = 255
    values[0:2, 0:2] = 65535
    with pytest.raises(AmbiguousMaskError, match="0, 255 and 65535"):
        binary_mask(values)


def _sample_photo() -> np.ndarray:
    from pathlib import Path

    sample = sorted((Path(__file__).resolve().parents[1] / "napari_mlffm" / "samples").glob("*.jpg"))[0]
    return np.asarray(Image.open(sample).convert("RGB"))


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_photograph_saved_as_a_mask_is_refused_not_thresholded(tmp_path, mode):
    path = tmp_path / "case_mask.png"
    Image.fromarray(_sample_photo()).convert(mode).save(path)
    with pytest.raises(ImageReadError, match="case_mask.png: mask is .*(mid-grey|colour picture)"):
        read_mask(path)


def test_a_grey_photograph_of_even_skin_and_a_dark_lesion_is_refused_by_its_texture(tmp_path):
    """Such a photograph has two levels, as a mask does, and passed the two-level rule (1,218 of the 2,594 ISIC images
    in grey did): it was thresholded into a lesion. Its skin and lesion are textured; a mask's two levels are flat."""
    fixture = Path(__file__).parent / "fixtures" / "isic_small" / "images" / "ISIC_0000001.jpg"  # two-level in grey
    Image.open(fixture).convert("L").save(tmp_path / "real_mask.png")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:200, :300]
    lesion = (yy - 100) ** 2 / 60**2 + (xx - 150) ** 2 / 90**2 <= 1
    textured = np.where(lesion, 90.0, 185.0) + rng.normal(0, 3, lesion.shape)  # even skin, one dark lesion, sensor noise
    Image.fromarray(np.clip(textured, 0, 255).astype(np.uint8)).save(tmp_path / "even_mask.jpg", quality=90)
    for name in ("real_mask.png", "even_mask.jpg"):
        with pytest.raises(ImageReadError, match=f"{name}: mask is .*textured within its two levels"):
            read_mask(tmp_path / name)
    flat = np.where(lesion, 185, 90).astype(np.uint8)  # the same two levels, flat: a mask, JPEG-saved at quality 10
    Image.fromarray(flat).save(tmp_path / "flat_mask.jpg", quality=10)
    assert ((read_mask(tmp_path / "flat_mask.jpg") == lesion).mean()) > 0.98


def test_a_grey_lesion_saved_as_jpeg_is_cut_half_way_between_its_two_levels(tmp_path):
    """A lesion at 128 comes back from JPEG as 126..130 and was cut at 128 (up to 17 % of a 64 px mask wrong); a lesion
    at 100 was read as labels and refused, or, with ringing above 128, as the few pixels there (agreement 0.03)."""
    yy, xx = np.mgrid[:64, :64]
    lesion = (yy - 30) ** 2 / 20**2 + (xx - 34) ** 2 / 24**2 <= 1
    for level in (128, 100):
        Image.fromarray(np.where(lesion, level, 0).astype(np.uint8)).save(tmp_path / f"m{level}.jpg", quality=90)
        assert (read_mask(tmp_path / f"m{level}.jpg") == lesion).mean() > 0.995, level


def test_a_lesion_at_255_beside_a_larger_grey_region_saved_as_jpeg_is_not_cut_between_background_and_grey(tmp_path):
    """0 background, a grey ruler / field of view at 100 larger than the lesion, the lesion at 255: its PNG reads the
    lesion; its JPEG (or a resampled copy) had its two commonest levels 0 and 100 and was cut at 50, the grey region
    read as lesion too (0.82 of pixels right on ISIC shapes)."""
    yy, xx = np.mgrid[:128, :128]
    lesion = (yy - 40) ** 2 / 18**2 + (xx - 60) ** 2 / 22**2 <= 1
    values = np.where(lesion, 255, 0).astype(np.uint8)
    values[80:, :] = 100  # a grey region of 38 % of the image, the lesion 10 %
    Image.fromarray(values).save(tmp_path / "m.png")
    Image.fromarray(values).save(tmp_path / "m.jpg", quality=75)
    for name in ("m.png", "m.jpg"):
        assert (read_mask(tmp_path / name) == lesion).mean() > 0.995, name


def test_masks_resampled_or_saved_as_jpeg_in_one_colour_are_still_masks(tmp_path):
    yy, xx = np.mgrid[:200, :300]
    lesion = (yy - 90) ** 2 / 60**2 + (xx - 140) ** 2 / 90**2 <= 1
    for colour in [(255, 0, 0), (200, 120, 40), (255, 255, 255)]:
        rgb = (lesion[..., None] * np.array(colour)).astype(np.uint8)
        soft = np.asarray(Image.fromarray(rgb).resize((40, 30), Image.BILINEAR).resize((300, 200), Image.BICUBIC))
        for array, name in [(rgb, "m.jpg"), (soft, "m.png")]:
            Image.fromarray(array).save(tmp_path / name, quality=30)
            mask = read_mask(tmp_path / name)
            assert (mask & lesion).sum() / (mask | lesion).sum() > 0.9, (colour, name)
    Image.fromarray(soft[..., 0]).save(tmp_path / "g.png")  # the white one, resampled, in grey
    assert (read_mask(tmp_path / "g.png") == lesion).mean() > 0.98


def test_two_level_masks_with_a_grey_lesion_or_a_dark_background_saved_as_jpeg_still_read(tmp_path):
    """The photograph rule's first form refused these (their lesion or background reads as mid-grey); a mask of
    any two levels keeps its pixels near them, which a photograph does not."""
    yy, xx = np.mgrid[:200, :300]
    lesion = (yy - 100) ** 2 / 80**2 + (xx - 150) ** 2 / 120**2 <= 1  # 42 % of the image
    cases = [
        (np.where(lesion, 200, 0).astype(np.uint8), 75),
        (np.where(lesion, 128, 0).astype(np.uint8), 75),
        (np.where(lesion, 255, 40).astype(np.uint8), 90),
        (np.where(lesion[..., None], np.array([255, 0, 0]), np.array([40, 40, 40])).astype(np.uint8), 90),
        (np.where(lesion[..., None], np.array([255, 0, 0]), np.array([0, 0, 80])).astype(np.uint8), 90),
    ]
    for index, (array, quality) in enumerate(cases):
        path = tmp_path / f"m{index}.jpg"
        Image.fromarray(array).save(path, quality=quality)
        mask = read_mask(path)
        assert (mask & lesion).sum() / (mask | lesion).sum() > 0.9, index  # read, not refused (cut half-way between the two levels)


def test_a_min_is_white_mask_from_fiji_or_tifffile_is_read_by_its_stored_values(tmp_path):
    """Fiji saves a binary mask drawn with its default inverting LUT (lesion 255, shown black) as a MINISWHITE TIFF,
    and tifffile.imwrite saves every bool array so; both, and napari, read the lesion back as 255 / True. They were read
    as they look, lesion and skin swapped (evaluate of 2 ISIC cases: Dice 0.0179 for 0.9792, exit 0). Other programs' MINISWHITE masks are
    still read as they look."""
    import tifffile

    lesion = np.zeros((40, 60), bool)
    lesion[10:30, 15:40] = True
    tifffile.imwrite(tmp_path / "numpy_bool.tif", lesion)  # tifffile's default for bool: bilevel MINISWHITE
    tifffile.imwrite(tmp_path / "fiji.tif", lesion.astype(np.uint8) * 255, imagej=True, photometric="miniswhite")
    tifffile.imwrite(tmp_path / "fiji16.tif", lesion.astype(np.uint16) * 65535, imagej=True, photometric="miniswhite")
    for name in ("numpy_bool.tif", "fiji.tif", "fiji16.tif"):
        assert tifffile.TiffFile(tmp_path / name).pages[0].photometric == 0, name
        assert np.array_equal(read_mask(tmp_path / name), lesion), name
    # a scanner's or ImageMagick's MINISWHITE mask stores the white lesion as 0: read as it looks
    tifffile.imwrite(tmp_path / "other.tif", ~lesion, photometric="miniswhite", software="ImageMagick 7", metadata=None)
    tifffile.imwrite(tmp_path / "other8.tif", np.where(lesion, 0, 255).astype(np.uint8), photometric="miniswhite", software="scanner", metadata=None)
    for name in ("other.tif", "other8.tif"):
        assert np.array_equal(read_mask(tmp_path / name), lesion), name


def test_a_small_grey_level_mask_whose_outline_runs_along_the_border_is_not_taken_for_a_photograph(tmp_path):
    """A mask whose lesion fills the photo, its outline a few px in from the top (as in many ISIC masks), shrunk to
    64 px: the outline becomes a row of grey at the border that does not cross the cut, so the pixels beside it looked
    textured (roughness 0.4 to 0.7) and the mask, PNG or JPEG, was refused as a photograph. The image's border is now
    left out of the texture, as the edge between the levels is."""
    yy, xx = np.mgrid[:512, :512]
    lesion = (xx <= 340 + yy * 0.35) & (yy >= 3)
    big = Image.fromarray(np.where(lesion, 128, 0).astype(np.uint8))
    truth = np.asarray(big.resize((64, 64), Image.NEAREST)) > 64
    for resample in (Image.BOX, Image.LANCZOS):
        small = big.resize((64, 64), resample)
        for name, kw in (("mask.png", {}), ("mask.jpg", {"quality": 75})):
            small.save(tmp_path / name, **kw)
            assert (read_mask(tmp_path / name) == truth).mean() > 0.9  # read, not refused (JPEG drops some 128s to 127)
