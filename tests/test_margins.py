"""Uniform margins round a photo (letterbox bars, a white page) are left out: the segmenter proposes on the photo
inside, as if it had been given alone, and the margins are background."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from model.inputs.kept import KeptPixels
from model.inputs.margins import find_margins
from model.inputs.prompts import Prompts
from training.data.imageio import read_image

from .conftest import FIXTURES


@pytest.fixture
def photo(sample_images) -> np.ndarray:
    return read_image(sample_images[0])


def _in_page(photo: np.ndarray, height: int, width: int, top: int, left: int, colour) -> np.ndarray:
    page = np.empty((height, width, 3), np.uint8)
    page[:] = colour
    page[top:top + photo.shape[0], left:left + photo.shape[1]] = photo
    return page


@pytest.mark.parametrize("colour", [255, 0, (200, 150, 130)])
def test_a_photo_in_a_page_or_between_bars_gets_the_proposal_it_gets_alone(tiny_segmenter, photo, colour):
    h, w = photo.shape[:2]
    page = _in_page(photo, h + 300, w + 160, 120, 40, colour)
    alone = tiny_segmenter.propose(photo, n_samples=3, steps=2, seed=4)
    framed = tiny_segmenter.propose(page, n_samples=3, steps=2, seed=4)
    inside = (slice(120, 120 + h), slice(40, 40 + w))
    assert np.array_equal(framed.samples[:, inside[0], inside[1]], alone.samples)
    assert np.array_equal(framed.probability[inside], alone.probability)
    outside = np.ones(page.shape[:2], bool)
    outside[inside] = False
    assert not framed.samples[:, outside].any() and not framed.probability[outside].any() and not framed.uncertainty[outside].any()
    assert any("margins" in note for note in framed.notes)


def test_clicks_and_kept_pixels_are_moved_with_the_photo(tiny_segmenter, photo):
    import torch

    from model.inputs.prompts import with_prompt_channels
    from model.nets.prompt_control import is_prompt_parameter

    segmenter = with_prompt_channels(tiny_segmenter)
    with torch.no_grad():  # prompt weights that do something, so a click in the wrong place would show
        generator = torch.Generator().manual_seed(0)
        for name, parameter in segmenter.network.named_parameters():
            if is_prompt_parameter(name):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    h, w = photo.shape[:2]
    page = _in_page(photo, h + 100, w, 60, 0, 255)  # bars above and below only
    kept = np.zeros(photo.shape[:2], bool)
    kept[10:20, 10:30] = True
    alone = segmenter.propose(photo, n_samples=2, steps=2, seed=1, prompts=Prompts(((h / 2, w / 2),), ((5.0, 5.0),)),
                                   kept=KeptPixels(kept, kept))
    page_kept = np.zeros(page.shape[:2], bool)
    page_kept[60:60 + h] = kept
    page_kept[0:3, 0:3] = True  # kept lesion on a bar: the annotator's word holds there too
    framed = segmenter.propose(page, n_samples=2, steps=2, seed=1,
                                    prompts=Prompts(((h / 2 + 60, w / 2), (2.0, 2.0)), ((65.0, 5.0),)),  # a lesion click on a bar is dropped
                                    kept=KeptPixels(page_kept, page_kept))
    assert np.array_equal(framed.samples[:, 60:60 + h], alone.samples)
    unclicked = segmenter.propose(photo, n_samples=2, steps=2, seed=1, kept=KeptPixels(kept, kept))
    assert not np.array_equal(unclicked.probability, alone.probability)  # the clicks count
    assert framed.samples[:, 0:3, 0:3].all() and not framed.samples[:, 3:60].any()


def test_photos_without_flat_margins_and_dermatoscope_frames_are_left_whole(sample_images, photo):
    for path in sample_images:
        assert find_margins(read_image(path)) is None
    h, w = photo.shape[:2]
    rows, cols = np.mgrid[:h, :w]
    framed = photo.copy()
    framed[np.hypot((rows - h / 2) / (h / 2), (cols - w / 2) / (w / 2)) > 1.02] = 0  # a round black frame, touching the sides
    assert find_margins(framed) is None
    assert find_margins(np.full((64, 64, 3), 255, np.uint8)) is None  # one colour: the blank rule's case
    thin = _in_page(photo, h + 2, w, 1, 0, 255)
    assert find_margins(thin) is None  # a 1 px line is not worth it


def test_bars_saved_as_jpeg_are_found_despite_the_noise(photo):
    h, w = photo.shape[:2]
    page = _in_page(photo, h + 200, w, 100, 0, 0)
    buffer = io.BytesIO()
    Image.fromarray(page).save(buffer, format="JPEG", quality=75)
    margins = find_margins(np.asarray(Image.open(buffer)))
    assert margins is not None and 92 <= margins.top <= 104 and h + 96 <= margins.bottom <= h + 108
    assert (margins.left, margins.right) == (0, w)


def test_sixteen_bit_and_float_pages_use_their_own_range(photo):
    page = _in_page(photo, photo.shape[0] + 80, photo.shape[1], 40, 0, 255)
    for image in (page.astype(np.uint16) * 257, page.astype(np.float32) / 255):
        margins = find_margins(image)
        assert margins is not None and margins.top == 40 and margins.bottom == photo.shape[0] + 40


def test_fixture_licence_is_beside_the_images():
    assert (FIXTURES / "isic_small" / "LICENSE.md").exists() or any(FIXTURES.rglob("LICENSE*"))


def test_direct_prediction_and_training_frame_the_photo_as_propose_does(tiny_segmenter, photo):
    from training.data.datasets import resize_pair

    h, w = photo.shape[:2]
    page = _in_page(photo, h + 200, w + 100, 100, 50, 255)
    alone = tiny_segmenter.predict_direct(photo, seed=3)
    framed = tiny_segmenter.predict_direct(page, seed=3)
    assert np.array_equal(framed.probability[100:100 + h, 50:50 + w], alone.probability) and not framed.probability[:100].any()
    mask = np.zeros(photo.shape[:2], bool)
    mask[50:150, 60:200] = True
    page_mask = np.zeros(page.shape[:2], bool)
    page_mask[100:100 + h, 50:50 + w] = mask
    for seen, own in zip(resize_pair(page, page_mask, 32), resize_pair(photo, mask, 32)):
        assert np.array_equal(seen, own)  # training and validation see the photo as the segmenter does


def test_dark_twelve_bit_photos_and_thin_strips_keep_their_frame(sample_images):
    """A tolerance in the dtype's levels took a 12-bit photo's skin rows (or a dark photo's) for margins and cut the
    lesion out; a crop to a strip thinner than the image limits would have refused a valid image."""
    for path in sample_images:
        photo = read_image(path)
        assert find_margins((photo.astype(np.uint16) * 16)) is None  # 12-bit values in a uint16
        assert find_margins((photo * 0.25).astype(np.uint8)) is None
    strip = np.full((1000, 3000, 3), 255, np.uint8)
    strip[440:560] = np.random.default_rng(0).integers(0, 200, (120, 3000, 3), dtype=np.uint8)
    assert find_margins(strip) is None  # 3000 x 120 would be 25:1
