"""Another clinic's camera as augmentation: vignetting, uneven light, hair; colour constancy under standardisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.inputs.preprocess import resize_to_working, standardize, to_float_rgb
from training.data.acquisition_shifts import SHIFTS, apply_shift, black_frame, hair, random_shifts, shades_of_gray, vignette
from training.data.augment import AugmentConfig, augment_batch
from training.cli import main
from training.data.datasets import list_cases, load_case

from .conftest import SMALL_DATA


@pytest.fixture
def real_batch() -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [load_case(case) for case in list_cases(SMALL_DATA, None).cases[:3]]
    images = torch.stack([resize_to_working(torch.from_numpy(to_float_rgb(i)).permute(2, 0, 1)[None].float(), 64)[0] for i, _ in pairs])
    masks = torch.stack([resize_to_working(torch.from_numpy(m.astype(np.float32))[None, None], 64)[0] for _, m in pairs])
    return images, masks


def test_vignette_darkens_the_corners_and_leaves_the_centre(real_batch):
    images, _ = real_batch
    out = vignette(images, torch.ones(3), torch.full((3,), 0.6), torch.zeros(3, 2))
    assert torch.equal(out[..., 28:36, 28:36], images[..., 28:36, 28:36])
    assert out[..., :4, :4].max() < 1e-6  # strength 1: black corners, as a contact dermatoscope's frame


def test_a_black_frame_is_near_black_beyond_its_circle_wherever_its_centre_is(real_batch):
    images, _ = real_batch
    centre = torch.tensor([[0.0, 0.0], [0.2, -0.1], [-0.15, 0.1]])
    out = black_frame(images, torch.full((3,), 0.9), centre)
    for k, (cy, cx) in enumerate(centre.tolist()):
        rows = (torch.arange(64) + 0.5) / 64 * 2 - 1 - cy
        cols = (torch.arange(64) + 0.5) / 64 * 2 - 1 - cx
        r = torch.hypot(rows[:, None], cols[None, :])
        assert torch.equal(out[k][:, r < 0.85], images[k][:, r < 0.85])
        assert torch.allclose(out[k][:, r > 0.95], 0.03 * images[k][:, r > 0.95])


def test_hair_draws_thin_dark_strands_and_replays_from_the_seed(real_batch):
    images, _ = real_batch
    a = hair(images, 6, torch.Generator().manual_seed(3))
    b = hair(images, 6, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    changed = (a - images).abs().amax(1) > 0.05
    share = float(changed.float().mean())
    assert 0.005 < share < 0.25  # thin strands, not a wash over the image
    assert float((a - images)[changed[:, None].expand_as(a)].mean()) < 0  # darker where drawn


def test_every_shift_keeps_shapes_and_range_and_only_zoom_moves_the_mask(real_batch):
    images, masks = real_batch
    for name in SHIFTS:
        out, out_masks = apply_shift(name, images, masks, torch.Generator().manual_seed(0))
        assert out.shape == images.shape and out_masks.shape == masks.shape
        assert float(out.min()) >= 0 and float(out.max()) <= 1  # exactly: the API refuses float images outside [0, 1]
        assert torch.equal(out_masks, masks) == (name != "zoom_out")
    with pytest.raises(ValueError, match="shift must be one of"):
        apply_shift("fog", images, masks, torch.Generator())


def test_shades_of_gray_is_a_per_channel_gain_that_standardisation_removes(real_batch):
    images, _ = real_batch
    corrected = shades_of_gray(images)
    gains = corrected.flatten(2).median(2).values / images.flatten(2).median(2).values
    assert torch.allclose(corrected, images * gains[:, :, None, None], rtol=1e-4, atol=1e-5)
    assert float((standardize(corrected) - standardize(images)).abs().max()) < 0.05


def test_augmentation_turns_the_shifts_on_only_when_asked(real_batch):
    images, masks = real_batch
    off = augment_batch(images, masks, AugmentConfig(), torch.Generator().manual_seed(1))
    on = augment_batch(images, masks, AugmentConfig(acquisition_shifts=1.0), torch.Generator().manual_seed(1))
    assert torch.equal(off[1], on[1])  # the same geometry: masks are untouched by the shifts
    assert not torch.equal(off[0], on[0])
    every = random_shifts(images, 1.0, torch.Generator().manual_seed(2))
    assert every[..., :2, :2].mean() < images[..., :2, :2].mean()
    with pytest.raises(ValueError, match="acquisition_shifts"):
        AugmentConfig(acquisition_shifts=1.5)


def test_train_refuses_a_bad_shift_probability_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", str(SMALL_DATA), "-o", str(tmp_path / "m.mlffm"), "--acquisition-shifts", "2"])
    assert exited.value.code == 2
    assert "--acquisition-shifts" in capsys.readouterr().err
