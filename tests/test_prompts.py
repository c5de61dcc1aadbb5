"""Prompt channels (clicks and a prior as input) and kept pixels (RePaint-style inpainting)."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

from model import Segmenter
from model.files.checkpoint import load_checkpoint, save_checkpoint
from model.config import NetworkConfig
from model.inputs.kept import KeptPixels, click_disks
from model.inputs.prompts import Prompts, encode_prompts, with_prompt_channels, without_prompt_weights

from .conftest import SAMPLES, tiny_config


@pytest.fixture
def dermoscopy() -> np.ndarray:
    from training.data.imageio import read_image

    return read_image(sorted(SAMPLES.glob("*.jpg"))[0])


def test_shipped_weights_give_their_base_s_proposals_without_clicks(dermoscopy):
    shipped = Segmenter.load(None, "cpu")
    if shipped.config.network.prompt_channels:  # prompt weights trained on a frozen base (--freeze-base)
        prompted, base = shipped, without_prompt_weights(shipped)
        assert shipped.config.network.prompt_control and base.config.network.prompt_channels == 0
    else:  # a base without prompts: widened, its new weights are zero
        prompted, base = with_prompt_channels(shipped), shipped
        assert torch.count_nonzero(prompted.network.prompt_stem.weight) == 0
    image = dermoscopy[::2, ::2]
    before = base.propose(image, n_samples=4, steps=3, seed=5)
    after = prompted.propose(image, n_samples=4, steps=3, seed=5)
    assert np.array_equal(before.samples, after.samples)
    assert np.array_equal(before.probability, after.probability)
    assert np.array_equal(before.uncertainty, after.uncertainty)
    h, w = image.shape[:2]
    clicked = prompted.propose(image, n_samples=4, steps=3, seed=5, prompts=Prompts(((h / 2, w / 2),), ((2.0, 2.0),), before.consensus))
    trained = bool(shipped.config.network.prompt_channels)
    assert np.array_equal(before.probability, clicked.probability) != trained  # zero weights change nothing; trained ones steer


def test_old_checkpoints_load_without_prompt_channels_and_refuse_clicks(tmp_path, rgb_image, tiny_segmenter):
    tensors, meta, _ = load_checkpoint(_saved(tiny_segmenter, tmp_path / "new.mlffm"))
    for key in ("prompt_channels", "prompt_control"):  # as written before prompts existed
        meta["config"]["network"].pop(key)
    save_checkpoint(tmp_path / "old.mlffm", tensors, meta)
    old = Segmenter.load(tmp_path / "old.mlffm", "cpu")
    assert old.network.prompt_stem is None and old.network.prompt_control is None
    with pytest.raises(ValueError, match="no prompt channels") as refused:
        old.propose(rgb_image, n_samples=1, steps=1, prompts=Prompts(((3.0, 3.0),)))
    _names_only_real_options(str(refused.value))
    with pytest.raises(ValueError, match="prompt_channels"):
        NetworkConfig(prompt_channels=2)


def _names_only_real_options(message):
    """Every --option a message names is one that mlffm train and finetune accept."""
    from training.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if a.dest == "command").choices
    named = re.findall(r"--[a-z][a-z-]*", message)
    assert named, message
    for command in ("train", "finetune"):
        options = {o for action in subparsers[command]._actions for o in action.option_strings}
        assert set(named) <= options, (command, named)


def _saved(segmenter, path):
    segmenter.save(path)
    return path


def test_prompted_checkpoint_round_trips(tmp_path, rgb_image):
    torch.manual_seed(0)
    segmenter = Segmenter(tiny_config(network=NetworkConfig(widths=(8, 16, 32), time_dim=16, prompt_channels=3)), "cpu")
    torch.nn.init.normal_(segmenter.network.prompt_stem.weight, std=0.5)
    segmenter.save(tmp_path / "p.mlffm")
    loaded = Segmenter.load(tmp_path / "p.mlffm", "cpu")
    assert loaded.config.network.prompt_channels == 3
    prompts = Prompts(((10.0, 20.0),), ((30.0, 5.0),))
    a = segmenter.propose(rgb_image, n_samples=2, steps=2, prompts=prompts)
    b = loaded.propose(rgb_image, n_samples=2, steps=2, prompts=prompts)
    c = loaded.propose(rgb_image, n_samples=2, steps=2)
    assert np.array_equal(a.probability, b.probability)
    assert not np.array_equal(b.probability, c.probability)  # trained prompt weights do steer


def test_prompt_encoding_places_clicks_and_prior_at_the_working_size():
    prior = np.zeros((64, 128), bool)
    prior[:, 64:] = True
    encoded = encode_prompts(Prompts(((31.5, 95.5),), (), prior), 64, 128, 32)
    assert encoded.shape == (1, 3, 32, 32)
    positive = encoded[0, 0]
    assert 0.6 < positive.max() <= 1.0  # the click falls between four working pixels
    row, col = divmod(int(positive.argmax()), 32)
    assert (row, col) in {(15, 23), (16, 23), (15, 24), (16, 24)}
    assert encoded[0, 1].abs().sum() == 0
    assert encoded[0, 2, :, :15].max() == -1 and encoded[0, 2, :, 17:].min() == 1
    assert encode_prompts(Prompts(), 64, 128, 32).abs().sum() == 0
    with pytest.raises(ValueError, match="outside"):
        encode_prompts(Prompts(((70.0, 3.0),)), 64, 128, 32)
    with pytest.raises(ValueError, match="prior"):
        encode_prompts(Prompts(prior=np.zeros((3, 3), bool)), 64, 128, 32)


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("flips", [1, 2])
def test_kept_pixels_stay_fixed_in_every_sample_whatever_the_seed(tiny_segmenter, rgb_image, seed, flips):
    segmenter = tiny_segmenter.with_options(flip_views=flips)
    h, w = rgb_image.shape[:2]
    mask = np.zeros((h, w), bool)
    mask[5:25, 10:40] = True
    mask[30:, :8] = True
    values = np.zeros((h, w), bool)
    values[5:25, 10:40] = True  # a kept lesion block and a kept skin block
    kept = KeptPixels(mask, values)
    proposal = segmenter.propose(rgb_image, n_samples=3, steps=3, seed=seed, eta=0.5, kept=kept)
    for sample in proposal.samples:
        assert np.array_equal(sample[mask], values[mask])
    assert np.array_equal(proposal.consensus[mask], values[mask])
    assert np.all(proposal.uncertainty[mask] == 0)
    free = segmenter.propose(rgb_image, n_samples=3, steps=3, seed=seed, eta=0.5)
    assert not np.array_equal(free.probability, proposal.probability)


def test_kept_pixels_steer_the_free_pixels_through_the_trajectory(tiny_segmenter, rgb_image):
    """RePaint: the known region enters x_t at every step, so pixels outside it change too."""
    h, w = rgb_image.shape[:2]
    mask = np.zeros((h, w), bool)
    mask[:, : w // 2] = True
    kept = KeptPixels(mask, mask.copy())
    free = tiny_segmenter.propose(rgb_image, n_samples=2, steps=3, seed=0)
    steered = tiny_segmenter.propose(rgb_image, n_samples=2, steps=3, seed=0, kept=kept)
    right = np.s_[:, w // 2 + 4 :]
    assert not np.allclose(free.probability[right], steered.probability[right])


def test_click_disks_are_kept_lesion_and_skin():
    kept = click_disks([(10, 10)], [(40, 40)], 64, 64, radius=3)
    assert kept.mask[10, 10] and kept.values[10, 10]
    assert kept.mask[40, 40] and not kept.values[40, 40]
    assert not kept.mask[25, 25] and kept.mask.sum() == 2 * 29
    assert click_disks([], [], 64, 64) is None
    with pytest.raises(ValueError, match="kept mask"):
        KeptPixels(np.zeros((3, 3), bool), np.zeros((3, 3), bool)).check(4, 4)
    merged = kept.merged(KeptPixels(np.ones((64, 64), bool), np.zeros((64, 64), bool)))
    assert merged.mask.all() and not merged.values.any()


def test_widening_is_refused_for_a_different_prompt_width():
    segmenter = Segmenter(tiny_config(network=NetworkConfig(widths=(8, 16, 32), time_dim=16, prompt_channels=3)), "cpu")
    assert with_prompt_channels(segmenter, control=False) is segmenter
    with_branch = with_prompt_channels(segmenter)  # a stem-only prompted network gains the branch
    assert with_branch.config.network.prompt_control and with_prompt_channels(with_branch) is with_branch
    plain = Segmenter(tiny_config(), "cpu")
    widened = with_prompt_channels(plain)
    assert dataclasses.replace(widened.config.network, prompt_channels=0, prompt_control=False) == plain.config.network
    with pytest.raises(ValueError, match="already has 3 prompt channels"):
        with_prompt_channels(segmenter, channels=5)


def test_prompt_branch_is_gated_per_sample_and_needs_prompt_channels():
    torch.manual_seed(0)
    network_config = NetworkConfig(widths=(8, 16, 32), time_dim=16, prompt_channels=3, prompt_control=True)
    segmenter = Segmenter(tiny_config(network=network_config), "cpu")
    for parameter in segmenter.network.prompt_control.parameters():  # as if trained: nothing is zero any more
        torch.nn.init.normal_(parameter, std=0.3)
    network = segmenter.network.eval()
    images = torch.rand(2, 3, 32, 32)
    prompts = torch.zeros(2, 3, 32, 32)
    prompts[0, 0, 10:14, 10:14] = 1.0  # sample 0 has a click, sample 1 none
    with torch.no_grad():
        plain = network.encode_image(images)
        prompted = network.encode_image(images, prompts)
    for a, b in zip(plain.levels + plain.skips, prompted.levels + prompted.skips):
        assert torch.equal(a[1], b[1])  # the unprompted sample: exactly the image path alone
        assert not torch.equal(a[0], b[0])  # the prompted one is steered at every level
    with pytest.raises(ValueError, match="prompt_control needs prompt channels"):
        NetworkConfig(prompt_control=True)


def test_prompt_weights_can_be_stripped_to_the_base_with_the_same_proposals(rgb_image):
    torch.manual_seed(1)
    base = Segmenter(tiny_config(network=NetworkConfig(widths=(8, 16, 32), time_dim=16)), "cpu")
    widened = with_prompt_channels(base)
    assert widened.config.network.prompt_control
    for parameter in widened.network.prompt_control.zero_out.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    stripped = without_prompt_weights(widened)
    assert stripped.config.network == base.config.network
    a = base.propose(rgb_image, n_samples=2, steps=2, seed=3)
    b = widened.propose(rgb_image, n_samples=2, steps=2, seed=3)
    c = stripped.propose(rgb_image, n_samples=2, steps=2, seed=3)
    assert np.array_equal(a.probability, b.probability) and np.array_equal(a.probability, c.probability)
    clicked = widened.propose(rgb_image, n_samples=2, steps=2, seed=3, prompts=Prompts(((10.0, 10.0),)))
    assert not np.array_equal(a.probability, clicked.probability)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prompts=Prompts(prior=np.full((40, 56), np.nan))), "prior mask contains NaN"),
        (dict(prompts=Prompts(prior=np.full((40, 56), None, object))), "boolean or numeric array, got dtype object"),
        (dict(prompts=Prompts(positive=((1, 2, 3),))), r"positive click \(1, 2, 3\) must be a \(row, col\) pair"),
        (dict(prompts=Prompts(negative=(("a", "b"),))), "negative click .* must be a"),
        (dict(prompts=Prompts(positive=((1j, 2),))), "must be a"),
        (dict(prompts={"positive": [(1, 2)]}), "prompts must be a model.inputs.prompts.Prompts, got dict"),
        (dict(kept=np.zeros((40, 56), bool)), "kept must be a model.inputs.kept.KeptPixels, got ndarray"),
    ],
)
def test_malformed_prompts_and_kept_pixels_are_one_value_error_before_any_work(kwargs, message, rgb_image):
    segmenter = with_prompt_channels(Segmenter(tiny_config(), "cpu"))
    with pytest.raises(ValueError, match=message):
        segmenter.propose(rgb_image, 2, 1, **kwargs)
    assert segmenter.encode_calls == 0


def test_weights_that_overflow_give_one_line_not_nan_masks(rgb_image):
    segmenter = Segmenter(tiny_config(), "cpu")
    with torch.no_grad():
        for weight in segmenter.network.parameters():
            weight.mul_(1e30)  # finite, so a file with them loads; float32 arithmetic overflows
    with pytest.raises(ValueError, match="the network's output is not finite"):
        segmenter.propose(rgb_image, 2, 1)


def test_clicks_given_as_arrays_or_lists_are_points_and_with_click_appends():
    prompts = Prompts(np.array([[30.0, 40.0]]), [(10.0, 10.0), (20.0, 20.0)])
    assert prompts.positive == ((30.0, 40.0),) and prompts.negative == ((10.0, 10.0), (20.0, 20.0))
    more = prompts.with_click((5, 5), True).with_click((1, 2), False)
    assert more.positive == ((30.0, 40.0), (5.0, 5.0))  # an array used to add (5, 5) to every click
    assert more.negative[-1] == (1.0, 2.0) and more.clicks == 5


@pytest.mark.parametrize("mode", ["kept", "both", "prompts", "auto"])
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prompts=Prompts(((1e6, 1e6),))), r"positive click \(1e\+06, 1e\+06\) lies outside the 40 x 56 image"),
        (dict(prompts=Prompts(((float("nan"), 5.0),))), "finite numbers"),
        (dict(prompts=Prompts(negative=(("a", 5),))), "must be a"),
        (dict(prompts=Prompts(((5.0, 5.0),)), painted=KeptPixels(np.ones(56, bool), np.ones(56, bool))), "kept mask must be 40 x 56"),
        (dict(prompts=Prompts(((5.0, 5.0),)), painted=KeptPixels(np.full((40, 56), np.nan), np.full((40, 56), np.nan))), "kept mask"),
        (dict(prompts={"positive": [(1, 2)]}), "prompts must be a model.inputs.prompts.Prompts"),
        (dict(prompts=Prompts(((5.0, 5.0),) * 600, ((9.0, 9.0),) * 401)), "1001 clicks given, above the limit of 1000 per refine"),
    ],
)
def test_refine_checks_its_clicks_and_painted_pixels_in_every_mode_before_any_work(mode, kwargs, message, rgb_image):
    from training.interactive.protocol import refine

    segmenter = with_prompt_channels(Segmenter(tiny_config(), "cpu"))
    with pytest.raises(ValueError, match=message):
        refine(segmenter, rgb_image, mode=mode, n_samples=2, steps=1, **kwargs)
    assert segmenter.encode_calls == 0


def test_refine_refuses_an_unknown_mode(rgb_image, tiny_segmenter):
    from training.interactive.protocol import refine

    with pytest.raises(ValueError, match="click mode must be one of"):
        refine(tiny_segmenter, rgb_image, Prompts(((5.0, 5.0),)), "Both", n_samples=2, steps=1)  # was ignored: the click did nothing
    assert tiny_segmenter.encode_calls == 0


def test_click_maps_are_computed_in_each_click_s_window_with_the_whole_image_s_values():
    """The distance channels and the click disks, windowed around each click, equal the whole-image formula."""
    from model.inputs.prompts import _points_map, click_radius

    rng = np.random.default_rng(0)
    for height, width, size in ((37, 300, 96), (500, 41, 128), (3, 3, 32)):
        points = [(float(rng.uniform(-0.5, height + 0.49)), float(rng.uniform(-0.5, width + 0.49))) for _ in range(9)]
        points += [(-0.5, -0.5), (height - 0.51, width - 0.51)]  # the corners: windows cut by the border
        axis = torch.arange(size, dtype=torch.float32)
        whole = torch.zeros((size, size))
        for r, c in points:
            y, x = (r + 0.5) * size / height - 0.5, (c + 0.5) * size / width - 0.5
            d = torch.sqrt((axis[:, None] - y) ** 2 + (axis[None, :] - x) ** 2)
            whole = torch.maximum(whole, (1 - d / click_radius(size)).clamp(min=0))
        assert torch.equal(_points_map(points, height, width, size), whole)
        negative = points[:3]
        disks = click_disks(points[3:], negative, height, width, radius=7.3)
        rows, cols = np.ogrid[:height, :width]
        near = lambda pts: np.any([(rows - r) ** 2 + (cols - c) ** 2 <= 7.3**2 for r, c in pts], axis=0)  # noqa: E731
        assert np.array_equal(disks.mask, near(points[3:]) | near(negative))
        assert np.array_equal(disks.values, near(points[3:]) & ~near(negative))
