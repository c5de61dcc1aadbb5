"""Flat-field correction (model/inputs/shading.py): it undoes vignetting, a black frame and uneven light on real
dermoscopic images, and leaves a lesion on evenly lit skin alone."""

import numpy as np
import pytest
import torch

from model import Segmenter
from model.config import SegmenterConfig
from model.inputs.preprocess import image_to_input, resize_to_working, standardize
from model.inputs.shading import best_field, fit_field, flat_field
from training.data.acquisition_shifts import black_frame, illumination, vignette
from training.data.imageio import read_image, read_mask

from .conftest import SMALL_DATA, tiny_config

SIZE = 96


def _cases(n=4):
    """The first ``n`` fixture images evenly lit to their corners (some ISIC images have a black frame of their own)."""
    images = sorted((SMALL_DATA / "images").glob("*.jpg"))
    out = []
    for path in images:
        rgb = read_image(path).astype(np.float32) / 255
        mask = read_mask(SMALL_DATA / "masks" / f"{path.stem}.png")
        x = resize_to_working(torch.from_numpy(rgb).permute(2, 0, 1)[None], SIZE)
        m = resize_to_working(torch.from_numpy(mask.astype(np.float32))[None, None], SIZE)[0, 0] >= 0.5
        corners = x.mean(1)[0, [0, 0, -1, -1], [0, -1, 0, -1]]
        if float(corners.min()) > 0.3:
            out.append((path.stem, x, m))
    assert len(out) >= n
    return out[:n]


def _skin_log_error(image, clean, lesion):
    """Mean |log luminance ratio| to the clean image on the lit skin, after removing a global gain (standardisation does).

    Lit: some fixtures have a black frame of their own, which the correction rightly turns to skin."""
    ratio = torch.log(image.mean(1)[0].clamp_min(1 / 255)) - torch.log(clean.mean(1)[0].clamp_min(1 / 255))
    skin = ~lesion & (clean.mean(1)[0] > 0.15)
    ratio = ratio[skin]
    return float((ratio - ratio.median()).abs().mean())


def _frame(x, centre=(0.0, 0.0), radius=1.0):
    """``x`` (1, 3, SIZE, SIZE) behind a black frame (the benchmark's shift), and the (SIZE, SIZE) mask of the frame."""
    rows = (torch.arange(SIZE) + 0.5) / SIZE * 2 - 1 - centre[0]
    cols = (torch.arange(SIZE) + 0.5) / SIZE * 2 - 1 - centre[1]
    r = torch.hypot(rows[:, None], cols[None, :])
    return black_frame(x, torch.tensor([radius]), torch.tensor([centre])), r > radius + 0.03


@pytest.mark.parametrize("shift", ["vignette", "illumination"])
def test_a_vignette_or_a_light_ramp_is_mostly_undone_on_the_skin(shift):
    for stem, clean, lesion in _cases():
        if shift == "vignette":
            shifted = vignette(clean, torch.tensor([0.9]), torch.tensor([0.75]), torch.zeros(1, 2))
        else:
            shifted = illumination(clean, torch.tensor([0.3]), torch.tensor([0.7]))
        before = _skin_log_error(shifted, clean, lesion)
        after = _skin_log_error(flat_field(shifted), clean, lesion)
        assert after < 0.5 * before, (stem, before, after)


def test_evenly_lit_images_and_their_lesions_change_little():
    for stem, clean, lesion in _cases():
        corrected = flat_field(clean)
        # the lesion keeps its contrast to the skin: its mean luminance relative to the skin's moves by under 15 %
        contrast = lambda x: float(x.mean(1)[0][lesion].mean() / x.mean(1)[0][~lesion].mean())  # noqa: E731
        assert abs(contrast(corrected) / contrast(clean) - 1) < 0.15, stem


@pytest.mark.parametrize("centre", [(0.0, 0.0), (0.15, -0.1)])
def test_a_black_frame_becomes_skin_coloured_wherever_its_centre_is(centre):
    for stem, clean, lesion in _cases():
        framed, outside = _frame(clean, centre)
        corrected = flat_field(framed)
        skin_level = float(clean.mean(1)[0][~lesion].median())
        # the frame's pixels come back to within a third of the skin's luminance (they were at 3 %)
        assert float(corrected.mean(1)[0][outside].median()) > 0.66 * skin_level, stem
        field = best_field(torch.nn.functional.adaptive_avg_pool2d(framed.mean(1, keepdim=True), 48)[0, 0].double().numpy())
        assert np.allclose(field.centre, centre, atol=0.11), (stem, field.centre)


def test_the_radial_profile_never_rises_outward_and_the_gain_peaks_at_one():
    _, clean, _ = _cases(1)[0]
    field = fit_field(clean.mean(1)[0].double().numpy())
    assert np.all(np.diff(field.profile) <= 1e-12)
    gain = field.gain(SIZE, SIZE)
    assert gain.max() == pytest.approx(1.0) and gain.min() > 0


def test_flat_field_refuses_a_wrong_shape_and_keeps_the_range():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        flat_field(torch.rand(3, 8, 8))
    out = flat_field(torch.rand(2, 3, 40, 56))
    assert out.shape == (2, 3, 40, 56) and float(out.min()) >= 0 and float(out.max()) <= 1


def test_the_option_is_in_the_config_old_configs_read_it_as_off_and_it_reaches_the_network_input():
    data = SegmenterConfig().to_dict()
    del data["flat_field"]
    assert SegmenterConfig.from_dict(data).flat_field is False
    with pytest.raises(ValueError, match="flat_field"):
        SegmenterConfig.from_dict({**data, "flat_field": "yes"})
    _, clean, _ = _cases(1)[0]
    framed, _ = _frame(clean)
    rgb = np.ascontiguousarray(framed[0].permute(1, 2, 0).numpy())
    off, on = (image_to_input(rgb, SIZE, torch.device("cpu"), flat) for flat in (False, True))
    assert torch.equal(off, standardize(resize_to_working(torch.from_numpy(rgb).permute(2, 0, 1)[None], SIZE)))
    assert not torch.allclose(off, on)
    segmenter = Segmenter(tiny_config(), "cpu")
    assert segmenter.with_options(flat_field=True).config.flat_field and not segmenter.config.flat_field


def test_calibrate_stores_the_choice_evaluate_overrides_it_and_training_applies_it(tmp_path, tiny_checkpoint, capsys):
    import json

    from training.cli import main

    stored = tmp_path / "flat.mlffm"
    fast = ["--samples", "2", "--steps", "2", "--device", "cpu"]
    assert main(["calibrate", str(SMALL_DATA), "-o", str(stored), "--checkpoint", str(tiny_checkpoint), "--split", "val", "--flat-field", "on", *fast]) == 0
    flat = Segmenter.load(stored, "cpu")
    assert flat.config.flat_field and flat.provenance["calibration"]["flat_field"] is True
    for choice, expected in ((None, True), ("off", False)):
        report = tmp_path / f"eval_{choice}.json"
        extra = [] if choice is None else ["--flat-field", choice]
        assert main(["evaluate", str(SMALL_DATA), "--checkpoint", str(stored), "--split", "val", *fast, *extra, "--json", str(report)]) == 0
        assert json.loads(report.read_text())["settings"]["flat_field"] is expected
    # A warm start keeps the choice, and trains on flat-fielded images: the model it writes still has it.
    trained = tmp_path / "trained.mlffm"
    assert main(["train", str(SMALL_DATA), "-o", str(trained), "--init", str(stored), "--epochs", "1", "--batch-size", "4", "--device", "cpu"]) == 0
    assert Segmenter.load(trained, "cpu").config.flat_field
    # --flat-field off on a warm start turns it off; a resumed run keeps its input and refuses a change in one line.
    plain = tmp_path / "plain.mlffm"
    assert main(["train", str(SMALL_DATA), "-o", str(plain), "--init", str(stored), "--flat-field", "off", "--epochs", "1", "--batch-size", "4", "--device", "cpu"]) == 0
    assert not Segmenter.load(plain, "cpu").config.flat_field
    capsys.readouterr()
    resume = next(tmp_path.glob("plain*.resume.mlffm"))
    assert main(["train", str(SMALL_DATA), "-o", str(tmp_path / "again.mlffm"), "--resume", str(resume), "--flat-field", "on", "--epochs", "2", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--flat-field on" in err[0] and "keeps its input" in err[0]
