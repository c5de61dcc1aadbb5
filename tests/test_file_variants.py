"""Image and mask files as other clinics' cameras and tools write them: orientation tags on masks and grey
TIFFs, 16-bit colour masks, thumbnails and channel pages in TIFFs, damaged files."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from training.data.imageio import ImageReadError, read_image, read_mask

TURNED = {  # EXIF / TIFF orientation -> how an upright array is stored under it
    1: lambda x: x, 2: lambda x: x[:, ::-1], 3: lambda x: x[::-1, ::-1], 4: lambda x: x[::-1],
    5: lambda x: x.swapaxes(0, 1), 6: lambda x: np.rot90(x, 1), 7: lambda x: x[::-1, ::-1].swapaxes(0, 1), 8: lambda x: np.rot90(x, -1),
}


@pytest.fixture
def upright() -> np.ndarray:
    """(48, 64) uint8 mask: a lesion in the top left and a grey mark bottom right, so every turn shows."""
    mask = np.zeros((48, 64), np.uint8)
    mask[5:20, 5:25] = 255
    mask[38:42, 50:62] = 128
    return mask


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[274] = orientation
    return exif


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_mask_is_turned_upright_by_its_orientation_tag_as_its_image_is(tmp_path, upright, orientation):
    """PNG masks with EXIF orientation (ImageMagick keeps the photo's tag) and grey TIFFs, plain and LZW:
    Pillow 13 garbles grey TIFFs with orientations 5 to 8 while turning them itself."""
    stored = np.ascontiguousarray(TURNED[orientation](upright))
    rgb = np.ascontiguousarray(np.stack([stored] * 3, -1))
    files = {
        "mask.png": lambda p: Image.fromarray(stored).save(p, exif=_exif(orientation)),
        "mask.tif": lambda p: Image.fromarray(stored).save(p, tiffinfo={274: orientation}),
        "lzw.tif": lambda p: Image.fromarray(stored).save(p, tiffinfo={274: orientation}, compression="tiff_lzw"),
        "image.jpg": lambda p: Image.fromarray(rgb).save(p, exif=_exif(orientation), quality=100),
    }
    for name, write in files.items():
        write(tmp_path / name)
    for name in ("mask.png", "mask.tif", "lzw.tif"):
        assert np.array_equal(read_mask(tmp_path / name), upright >= 128), name
        assert np.array_equal(read_image(tmp_path / name)[..., 0], upright), name
    assert np.abs(read_image(tmp_path / "image.jpg")[..., 0].astype(int) - upright).max() < 40  # the photo: upright too


def _png16(path, array: np.ndarray, colour_type: int) -> None:
    """A 16-bit PNG as OpenCV writes a uint16 colour array (Pillow cannot write one)."""
    raw = b"".join(b"\0" + row.tobytes() for row in array.astype(">u2"))
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    header = struct.pack(">IIBBBBB", array.shape[1], array.shape[0], 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("value", [1, 255])
def test_16_bit_colour_masks_are_read_or_refused_never_empty(tmp_path, upright, value):
    lesion = upright == 255
    colour = np.repeat((lesion * value).astype(np.uint16)[..., None], 3, axis=2)
    tifffile.imwrite(tmp_path / "mask.tif", colour, photometric="rgb")
    assert np.array_equal(read_mask(tmp_path / "mask.tif"), lesion)  # it was read as empty (Pillow keeps the high byte)
    _png16(tmp_path / "mask.png", colour, 2)
    with pytest.raises(ImageReadError, match=r"mask\.png: 16-bit colour PNG mask whose values all lie below 4096.*empty"):
        read_mask(tmp_path / "mask.png")
    _png16(tmp_path / "full.png", colour * (65535 // value), 2)  # 0/65535: the high byte holds it
    assert np.array_equal(read_mask(tmp_path / "full.png"), lesion)


def test_a_16_bit_colour_png_holding_8_bit_values_is_refused_not_read_black(tmp_path):
    photo = np.random.default_rng(0).integers(0, 256, (24, 32, 3)).astype(np.uint16)
    _png16(tmp_path / "photo.png", photo, 2)
    with pytest.raises(ImageReadError, match=r"photo\.png: 16-bit colour PNG image whose values all lie below 4096.*black"):
        read_image(tmp_path / "photo.png")
    _png16(tmp_path / "true16.png", photo * 257, 2)
    assert np.array_equal(read_image(tmp_path / "true16.png"), photo.astype(np.uint8))


def test_a_tiff_with_a_thumbnail_first_is_read_at_its_full_size(tmp_path):
    full = np.random.default_rng(1).integers(0, 256, (60, 80, 3)).astype(np.uint8)
    with tifffile.TiffWriter(tmp_path / "camera.tif") as tif:
        tif.write(full[::10, ::10], photometric="rgb", subfiletype=1)  # NewSubfileType 1: a reduced-resolution preview
        tif.write(full, photometric="rgb")
    assert np.array_equal(read_image(tmp_path / "camera.tif"), full)  # it was the 6 x 8 preview


def test_a_fiji_rgb_tiff_of_channel_pages_is_read_in_colour(tmp_path):
    full = np.random.default_rng(2).integers(0, 256, (60, 80, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "fiji.tif", np.moveaxis(full, -1, 0), imagej=True, metadata={"axes": "CYX"})
    assert np.array_equal(read_image(tmp_path / "fiji.tif"), full)  # it was the red channel in grey


def test_a_narrow_planar_rgb_tiff_is_not_read_turned(tmp_path):
    image = np.random.default_rng(3).integers(0, 256, (20, 3, 3)).astype(np.uint8)  # 3 px wide
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(image, -1, 0), photometric="rgb", planarconfig="separate")
    assert np.array_equal(read_image(tmp_path / "planar.tif"), image)  # it came back (3, 20, 3)


def test_damaged_tiffs_are_one_image_read_error_naming_the_file(tmp_path):
    grey = (np.random.default_rng(0).random((36, 48)) * 255).astype(np.uint8)
    palette = tmp_path / "palette.tif"
    tifffile.imwrite(palette, grey, photometric="palette", colormap=np.tile(np.arange(256, dtype=np.uint16) * 257, (3, 1)))
    with tifffile.TiffFile(palette) as tif:
        count_at = tif.pages[0].tags[320].offset + 4  # ColorMap's count
    data = bytearray(palette.read_bytes())
    data[count_at : count_at + 4] = (700).to_bytes(4, "little")
    palette.write_bytes(bytes(data))
    bits = tmp_path / "bits.tif"
    tifffile.imwrite(bits, np.zeros((36, 48, 3), np.uint8), photometric="rgb", extratags=[(274, 3, 1, 6, True)])
    with tifffile.TiffFile(bits) as tif:
        at = tif.pages[0].tags[258].valueoffset  # BitsPerSample
    data = bytearray(bits.read_bytes())
    data[at : at + 2] = (9992).to_bytes(2, "little")
    bits.write_bytes(bytes(data))
    for path in (palette, bits):  # an IndexError and a bare ValueError ("Axes must be different") before
        with pytest.raises(ImageReadError, match=path.name):
            read_image(path)


def _dataset(tmp_path, names: dict[str, np.ndarray]):
    """DATA/images/<id>.png and whatever mask files ``names`` maps (relative to DATA) to arrays."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name, array in names.items():
        Image.fromarray(array).save(root / name, **({"quality": 50} if name.endswith(".jpg") else {}))
    return root


def test_a_jpeg_mask_is_found_and_an_unread_mask_type_is_named(tmp_path, upright):
    from training.data.datasets import list_cases, load_case

    photo, lesion = np.stack([upright] * 3, -1), (upright == 255).astype(np.uint8) * 255
    root = _dataset(tmp_path, {"images/a.png": photo, "images/b.png": photo, "masks/a.jpg": lesion, "masks/b_lesion.webp": lesion})
    listing = list_cases(root, "all")
    assert [case.case_id for case in listing.cases] == ["a"]
    assert np.array_equal(load_case(listing.cases[0])[1], lesion > 0)  # a JPEG mask reads as its PNG would
    assert any("b.png: skipped, no mask" in line and "masks/b_lesion.webp is of a type not read" in line for line in listing.skipped)


def test_ids_written_in_decomposed_unicode_find_their_images_and_masks(tmp_path, upright):
    """A zip made on a Mac names files in NFD; splits.csv typed elsewhere holds NFC: one case, not 'no image'."""
    import unicodedata

    from training.data.datasets import list_cases

    decomposed = unicodedata.normalize("NFD", "Müller")
    photo = np.stack([upright] * 3, -1)
    root = _dataset(tmp_path, {f"images/{decomposed}.png": photo, f"masks/{decomposed}_mask.png": upright})
    (root / "splits.csv").write_text("id,split\nMüller,test\n", encoding="utf-8")
    listing = list_cases(root, "test")
    assert [case.case_id for case in listing.cases] == ["Müller"] and not listing.problems


def test_an_outline_mask_is_refused_and_a_link_loop_is_named(tmp_path, upright):
    ring = np.zeros((64, 64), np.uint8)
    ring[10:54, 10:54] = 255
    ring[12:52, 12:52] = 0  # a 2-px line round the lesion, not filled
    Image.fromarray(ring).save(tmp_path / "outline.png")
    with pytest.raises(ImageReadError, match=r"outline\.png: mask is an outline: a closed line of \d+ px round 1600 px that it leaves out; fill it"):
        read_mask(tmp_path / "outline.png")
    with_hole = np.zeros((64, 64), np.uint8)
    with_hole[10:54, 10:54] = 255
    with_hole[28:36, 28:36] = 0  # a lesion with a small hole is a lesion
    Image.fromarray(with_hole).save(tmp_path / "hole.png")
    assert read_mask(tmp_path / "hole.png").sum() == 44 * 44 - 64
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    with pytest.raises(ImageReadError, match=r"loop\.png: a link that leads to no file"):
        read_image(loop)


def test_a_mask_drawn_on_an_image_s_stored_pixels_is_told_the_image_was_turned(tmp_path, upright):
    from training.data.datasets import Case, load_case

    photo = np.ascontiguousarray(np.stack([np.rot90(upright, 1)] * 3, -1))  # stored turned, tagged 6
    Image.fromarray(photo).save(tmp_path / "a.jpg", exif=_exif(6), quality=95)
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).save(tmp_path / "a_mask.png")  # drawn on the stored pixels
    with pytest.raises(ImageReadError, match="turned upright by its orientation tag"):
        load_case(Case("a", tmp_path / "a.jpg", tmp_path / "a_mask.png"))


def test_a_jpeg_in_masks_never_wins_over_a_lossless_mask_of_another_name(tmp_path, upright):
    """masks/<id>.jpg may be a copy of the photo: <id>_segmentation.png is the mask."""
    from training.data.datasets import list_cases

    photo = np.stack([upright] * 3, -1)
    root = _dataset(tmp_path, {"images/a.png": photo, "masks/a.jpg": photo, "masks/a_segmentation.png": upright})
    assert list_cases(root, "all").cases[0].mask_path.name == "a_segmentation.png"


def test_16_bit_alpha_pngs_holding_low_values_are_refused_and_a_mask_drawn_in_alpha_reads(tmp_path, upright):
    lesion = upright == 255
    grey = (lesion * 255).astype(np.uint16)
    opaque = np.full(grey.shape, 65535, np.uint16)
    _png16(tmp_path / "la.png", np.stack([grey, opaque], -1), 4)
    _png16(tmp_path / "rgba.png", np.stack([grey, grey, grey, opaque], -1), 6)
    for name in ("la.png", "rgba.png"):  # the opaque alpha hid them: read as empty masks
        with pytest.raises(ImageReadError, match=rf"{name}: 16-bit colour PNG mask"):
            read_mask(tmp_path / name)
    _png16(tmp_path / "alpha.png", np.stack([np.zeros_like(grey), lesion * np.uint16(65535)], -1), 4)
    assert np.array_equal(read_mask(tmp_path / "alpha.png"), lesion)


def test_id_lists_match_ids_in_any_unicode_form_and_unread_masks_are_only_named_when_unread(tmp_path, upright):
    import unicodedata

    from training.data.datasets import list_cases
    from training.data.id_lists import read_id_list

    ids = tmp_path / "exclude.txt"
    ids.write_text(unicodedata.normalize("NFD", "Müller") + "\n", encoding="utf-8")
    assert read_id_list(ids) == ("Müller",)
    photo = np.stack([upright] * 3, -1)
    root = _dataset(tmp_path, {"images/lesion.png": photo, "images/Lesion.png": photo, "masks/Lesion.png": upright})
    skipped = " ".join(list_cases(root, "all").skipped)
    assert "lesion.png: skipped, no mask" in skipped and "type not read" not in skipped
