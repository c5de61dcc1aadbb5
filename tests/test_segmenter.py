"""`Segmenter.propose`: shapes, caching, seeding, progress, bad input."""

import numpy as np
import pytest
import torch

from model.inputs.preprocess import flip_views, image_to_input, to_float_rgb
from model import Segmenter, SegmenterConfig
from model.diffusion.sampler import run_to_completion, sample_soft_masks, sample_soft_masks_naive

from .conftest import tiny_config


_RNG = np.random.default_rng(7)


@pytest.mark.parametrize(
    "image",
    [
        _RNG.integers(100, 140, (40, 56, 3)).astype(np.uint8),
        np.linspace(0, 1, 30 * 20, dtype=np.float32).reshape(30, 20),
        _RNG.integers(180, 220, (25, 33, 4)).astype(np.uint8),
        _RNG.integers(39000, 41000, (50, 40, 3)).astype(np.uint16),
        _RNG.uniform(0.2, 0.4, (17, 9, 1)),
    ],
    ids=["rgb-uint8", "gray-float", "rgba", "uint16", "single-channel"],
)
def test_proposal_is_at_image_resolution(tiny_segmenter, image):
    calls = tiny_segmenter.encode_calls
    p = tiny_segmenter.propose(image, n_samples=3, steps=2, seed=0)
    assert tiny_segmenter.encode_calls == calls + 1 and p.notes == ()  # none of them is blank: the network ran
    h, w = image.shape[:2]
    assert p.samples.shape == (3, h, w) and p.samples.dtype == bool
    assert p.probability.shape == (h, w) and p.probability.dtype == np.float32
    assert p.uncertainty.shape == (h, w) and p.uncertainty.dtype == np.float32
    assert p.consensus.shape == (h, w) and p.consensus.dtype == bool
    assert 0 <= p.probability.min() and p.probability.max() <= 1
    assert 0 <= p.uncertainty.min() and p.uncertainty.max() <= 1
    assert np.array_equal(p.consensus, p.probability >= 0.5)


def test_image_path_runs_once_per_propose(tiny_segmenter, rgb_image, monkeypatch):
    calls = []
    original = tiny_segmenter.network.encode_image
    monkeypatch.setattr(tiny_segmenter.network, "encode_image", lambda x: calls.append(1) or original(x))
    tiny_segmenter.propose(rgb_image, n_samples=4, steps=5)
    assert len(calls) == 1


def test_cached_batched_sampler_matches_naive(tiny_segmenter, rgb_image):
    x = image_to_input(to_float_rgb(rgb_image), tiny_segmenter.config.size, torch.device("cpu"))
    net, diffusion = tiny_segmenter.network, tiny_segmenter.config.diffusion
    with torch.inference_mode():
        fast = sample_soft_masks(net, x, diffusion, n_samples=3, steps=4, seed=7)
        slow = sample_soft_masks_naive(net, x, diffusion, n_samples=3, steps=4, seed=7)
    assert fast.shape == slow.shape == (3, 1, 32, 32)
    assert torch.allclose(fast, slow, atol=1e-4)
    # With flip views (the shipped weights' default) sample i is drawn on view i % B by both samplers.
    views = flip_views(x, 2)
    with torch.inference_mode():
        fast = sample_soft_masks(net, views, diffusion, n_samples=3, steps=4, seed=7)
        slow = sample_soft_masks_naive(net, views, diffusion, n_samples=3, steps=4, seed=7)
        mirrored_only = sample_soft_masks_naive(net, views[1:], diffusion, n_samples=3, steps=4, seed=7)
    assert torch.allclose(fast, slow, atol=1e-4)
    assert torch.allclose(slow[1], mirrored_only[1], atol=1e-4) and not torch.allclose(slow[0], mirrored_only[0], atol=1e-3)


def test_cpu_denoises_trajectories_in_small_batches_with_the_same_masks(tiny_segmenter, rgb_image, monkeypatch):
    from model.diffusion import sampler

    assert sampler.trajectories_per_call(16, "cpu") == sampler.CPU_TRAJECTORIES_PER_CALL == 4
    assert sampler.trajectories_per_call(3, "cpu") == 3 and sampler.trajectories_per_call(16, "cuda") == 16
    with pytest.raises(ValueError, match="n_samples"):
        sampler.trajectories_per_call(0, "cpu")
    batches = []
    original = tiny_segmenter.network.denoise
    monkeypatch.setattr(tiny_segmenter.network, "denoise", lambda f, x, t: batches.append(x.shape[0]) or original(f, x, t))
    chunked = tiny_segmenter.propose(rgb_image, n_samples=10, steps=2, seed=3)
    assert batches == [4, 4, 2] * 2
    batches.clear()  # the sampler's own default, which training's validation also uses
    x = image_to_input(to_float_rgb(rgb_image), tiny_segmenter.config.size, torch.device("cpu"))
    with torch.inference_mode():
        sample_soft_masks(tiny_segmenter.network, x, tiny_segmenter.config.diffusion, n_samples=10, steps=2, seed=3)
    assert batches == [4, 4, 2] * 2
    batches.clear()
    monkeypatch.setattr(sampler, "CPU_TRAJECTORIES_PER_CALL", 64)
    whole = tiny_segmenter.propose(rgb_image, n_samples=10, steps=2, seed=3)
    assert batches == [10, 10]
    assert np.allclose(chunked.probability, whole.probability, atol=1e-4)
    assert (chunked.samples != whole.samples).mean() < 1e-3


def test_same_seed_same_masks_different_seed_different(tiny_segmenter, rgb_image):
    a = tiny_segmenter.propose(rgb_image, n_samples=3, steps=3, seed=1)
    b = tiny_segmenter.propose(rgb_image, n_samples=3, steps=3, seed=1)
    c = tiny_segmenter.propose(rgb_image, n_samples=3, steps=3, seed=2)
    assert np.array_equal(a.samples, b.samples) and np.array_equal(a.probability, b.probability)
    assert not np.array_equal(a.probability, c.probability)


def test_stochastic_eta_is_seeded(tiny_segmenter, rgb_image):
    a = tiny_segmenter.propose(rgb_image, n_samples=2, steps=3, seed=4, eta=1.0)
    b = tiny_segmenter.propose(rgb_image, n_samples=2, steps=3, seed=4, eta=1.0)
    assert np.array_equal(a.probability, b.probability)


def test_progress_callback_and_cancel(tiny_segmenter, rgb_image):
    seen = []
    tiny_segmenter.propose(rgb_image, n_samples=2, steps=4, on_step=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        if done == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        tiny_segmenter.propose(rgb_image, n_samples=2, steps=4, on_step=cancel)


def test_generator_form_returns_proposal(tiny_segmenter, rgb_image):
    loop = tiny_segmenter.propose_iter(rgb_image, n_samples=2, steps=3)
    assert [next(loop) for _ in range(3)] == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(StopIteration) as stop:
        next(loop)
    assert stop.value.value.samples.shape == (2, 40, 56)


def test_uncertainty_is_twice_sample_std(tiny_segmenter):
    soft = torch.tensor([[[[0.0, 1.0]]], [[[1.0, 1.0]]]])  # (2, 1, 1, 2)
    p = tiny_segmenter._to_proposal(soft, 1, 2)
    assert np.allclose(p.probability, [[0.5, 1.0]])
    assert np.allclose(p.uncertainty, [[1.0, 0.0]])
    assert p.samples.tolist() == [[[False, True]], [[True, True]]]


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((4, 4, 4, 3), np.uint8), "shape"),
        (np.zeros((4, 4, 2), np.uint8), "shape"),
        (np.full((8, 8), np.nan, np.float32), "NaN"),
        (np.full((8, 8), 3.0, np.float32), r"\[0, 1\]"),
        (np.full((8, 8), -5, np.int32), "0..65535"),
        ("not an array", "numpy"),
    ],
)
def test_bad_input_raises_value_error(tiny_segmenter, bad, message):
    with pytest.raises(ValueError, match=message):
        tiny_segmenter.propose(bad)


def test_bad_sampling_settings(tiny_segmenter, rgb_image):
    with pytest.raises(ValueError, match="n_samples"):
        tiny_segmenter.propose(rgb_image, n_samples=0)
    with pytest.raises(ValueError, match="steps"):
        tiny_segmenter.propose(rgb_image, steps=0)


def test_large_image_is_subsampled_before_float_conversion():
    image = np.zeros((2000, 1500, 3), np.uint8)
    assert to_float_rgb(image, max_side=32).shape[0] < 200


def _soft(segmenter, x, n, steps=3, seed=0):
    return run_to_completion(segmenter._sample(segmenter.network, x, n, steps, seed, 0.0, n))


def test_flip_views_share_samples_over_mirrored_images_and_undo_the_flip(rgb_image):
    torch.manual_seed(0)
    plain = Segmenter(tiny_config(), "cpu")
    mirrored = Segmenter(tiny_config(flip_views=4), "cpu")
    mirrored.network.load_state_dict(plain.network.state_dict())
    x, _ = plain.prepare(rgb_image)
    with_views = _soft(mirrored, x, 8)
    assert with_views.shape == (8, 1, 32, 32)
    for i, dims in enumerate([(), (-1,), (-2,), (-2, -1)] * 2):
        # Sample i saw view i % 4 with sample i's starting noise; its mask comes back in the image's orientation.
        expected = _soft(plain, x.flip(dims) if dims else x, 8)[i]
        expected = expected.flip(dims) if dims else expected
        assert torch.allclose(with_views[i], expected, atol=1e-4), i
    p = mirrored.propose(rgb_image, n_samples=8, steps=3)
    assert p.samples.shape == (8, 40, 56) and mirrored.encode_calls == 2  # one encoding of the 4 views per call
    # Fewer samples than views: only the views that a sample uses are encoded, with the same masks.
    batches = []
    original = mirrored.network.encode_image
    mirrored.network.encode_image = lambda views: batches.append(views.shape[0]) or original(views)
    assert torch.allclose(_soft(mirrored, x, 2), with_views[:2], atol=1e-5)
    assert batches == [2]


def test_temperature_softens_probability_but_keeps_masks(tiny_segmenter, rgb_image):
    hot = Segmenter(tiny_config(probability_temperature=2.0), "cpu")
    hot.network.load_state_dict(tiny_segmenter.network.state_dict())
    cold, warm = (s.propose(rgb_image, n_samples=3, steps=2, seed=1) for s in (tiny_segmenter, hot))
    assert np.array_equal(cold.samples, warm.samples) and np.array_equal(cold.uncertainty, warm.uncertainty)
    assert np.array_equal(cold.consensus, warm.consensus)
    moved = np.abs(cold.probability - 0.5) > 0.05
    assert moved.any()
    assert (np.abs(warm.probability - 0.5)[moved] < np.abs(cold.probability - 0.5)[moved]).all()


def test_decision_threshold_moves_the_consensus_and_each_sample_at_the_same_calibrated_level(tiny_segmenter):
    tiny_segmenter = tiny_segmenter.with_options(output_smoothing=0.0)
    soft = torch.tensor([[[[0.30, 0.46, 0.60, 0.90]]], [[[0.35, 0.38, 0.50, 0.95]]]])  # (2, 1, 1, 4)
    plain = tiny_segmenter._to_proposal(soft, 1, 4)
    assert plain.threshold == 0.5 and plain.consensus.tolist() == [[False, False, True, True]]
    low = tiny_segmenter.with_options(decision_threshold=0.4)._to_proposal(soft, 1, 4)
    assert np.array_equal(low.probability, plain.probability)  # the threshold moves masks, not probabilities
    assert low.consensus.tolist() == [[False, True, True, True]]
    assert low.samples.tolist() == [[[False, True, True, True]], [[False, False, True, True]]]
    # with a temperature, a sample pixel is lesion where its tempered soft value reaches the threshold
    tempered = tiny_segmenter.with_options(probability_temperature=2.0, decision_threshold=0.45)._to_proposal(soft, 1, 4)
    soft_tempered = torch.sigmoid(torch.logit(soft[:, 0, 0]) / 2.0)
    assert tempered.samples[:, 0].tolist() == (soft_tempered >= 0.45).tolist()
    assert np.array_equal(tempered.consensus, tempered.probability >= 0.45)
    assert tempered.samples.sum() > plain.samples.sum()


@pytest.mark.parametrize("overrides", [{"flip_views": 3}, {"probability_temperature": 0.0}, {"probability_temperature": -1.0}, {"decision_threshold": 0.0}, {"decision_threshold": 1.0}])
def test_bad_test_time_options_are_refused(overrides):
    with pytest.raises(ValueError, match=next(iter(overrides))):
        tiny_config(**overrides)


def test_refine_samples_default_to_8_in_old_files_and_are_validated(tiny_segmenter):
    data = tiny_segmenter.config.to_dict()
    assert data.pop("default_refine_samples") == 8
    assert SegmenterConfig.from_dict(data).default_refine_samples == 8  # a file written before the option existed
    with pytest.raises(ValueError, match="default_refine_samples"):
        SegmenterConfig.from_dict({**data, "default_refine_samples": 0})
    with pytest.raises(ValueError, match="default_refine_samples"):
        tiny_config(default_refine_samples=0)
    assert tiny_segmenter.with_options(default_refine_samples=2).refine_sampling_settings(None, 1) == (2, 1)
    assert tiny_segmenter.refine_sampling_settings(5, 1) == (5, 1)
    assert tiny_segmenter.refine_sampling_settings(None, 1) == (2, 1)  # 8 by default, but never more than default_samples (2)


def test_direct_prediction_is_one_deterministic_pass(tiny_segmenter, rgb_image):
    from model.inputs.preprocess import resize_soft

    p = tiny_segmenter.predict_direct(rgb_image)
    assert p.samples.shape == (1, 40, 56) and not p.uncertainty.any()
    assert tiny_segmenter.encode_calls == 1
    # A diffusion-trained model is run once at t = T - 1 from the seeded x_T it saw there in training.
    x, _ = tiny_segmenter.prepare(rgb_image)
    x_T = torch.randn((1, 1, 32, 32), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        t = torch.tensor([tiny_segmenter.config.diffusion.timesteps - 1])
        logits = tiny_segmenter.network(x, x_T, t)
        from_zero = tiny_segmenter.network(x, torch.zeros(1, 1, 32, 32), t)
    expected = resize_soft(torch.sigmoid(logits), 40, 56, tiny_segmenter.config.output_smoothing)[0].numpy()
    assert np.allclose(p.probability, expected, atol=1e-5)
    assert not torch.allclose(logits, from_zero)
    assert np.array_equal(tiny_segmenter.predict_direct(rgb_image).probability, p.probability)
    assert not np.array_equal(tiny_segmenter.predict_direct(rgb_image, seed=1).probability, p.probability)


def test_disagreement_is_one_minus_mean_pairwise_dice():
    from model.segmenter import Proposal

    def proposal(samples):
        samples = np.asarray(samples, dtype=bool)
        zeros = np.zeros(samples.shape[1:], np.float32)
        return Proposal(samples, zeros, zeros)

    a = np.zeros((4, 4), bool)
    a[:2, :2] = True  # 4 pixels
    b = np.zeros((4, 4), bool)
    b[:2, :1] = True  # 2 pixels inside a: Dice(a, b) = 2*2 / 6
    empty = np.zeros((4, 4), bool)
    assert proposal([a, a, a]).disagreement == 0.0
    assert proposal([a]).disagreement == 0.0  # one sample: nothing to disagree with
    assert proposal([empty, empty]).disagreement == 0.0  # two empty masks agree
    assert proposal([a, b]).disagreement == pytest.approx(1 - 4 / 6)
    # three pairs: (a, b) 4/6, (a, empty) 0, (b, empty) 0
    assert proposal([a, b, empty]).disagreement == pytest.approx(1 - (4 / 6) / 3)
    assert proposal([a, ~a]).disagreement == 1.0


@pytest.mark.parametrize(
    "image",
    [
        np.full((40, 56, 3), 120, np.uint8),
        np.zeros((30, 20), np.float32),
        np.full((25, 33, 4), 255, np.uint8),
        np.full((50, 40, 3), 40000, np.uint16),
        np.full((64, 64, 3), 0.5) + np.random.default_rng(0).normal(0, 2e-6, (64, 64, 3)),  # float rounding, no picture
    ],
    ids=["grey-uint8", "black-float", "white-rgba", "uint16", "faint-noise"],
)
def test_a_blank_image_gets_empty_masks_and_a_note_without_running_the_network(tiny_segmenter, image):
    calls = tiny_segmenter.encode_calls
    h, w = image.shape[:2]
    for p in (tiny_segmenter.propose(image, n_samples=3, steps=2, seed=0), tiny_segmenter.predict_direct(image)):
        assert not p.samples.any() and p.samples.shape[1:] == (h, w) and p.samples.dtype == bool
        assert not p.probability.any() and not p.uncertainty.any() and not p.consensus.any()
        assert p.probability.dtype == p.uncertainty.dtype == np.float32 and p.disagreement == 0.0
        assert len(p.notes) == 1 and p.notes[0].startswith("blank image") and "nothing to outline" in p.notes[0]
    assert tiny_segmenter.encode_calls == calls


def test_a_blank_image_still_holds_kept_pixels_and_a_faint_real_image_is_not_blank(tiny_segmenter):
    from model.inputs.kept import KeptPixels

    blank = np.full((32, 32, 3), 90, np.uint8)
    where = np.zeros((32, 32), bool)
    where[10:20, 10:20] = True
    p = tiny_segmenter.propose(blank, n_samples=2, steps=1, kept=KeptPixels(where, where.copy()))
    assert np.array_equal(p.consensus, where) and all(np.array_equal(s, where) for s in p.samples)
    # One grey level of difference (a faint lesion on flat skin) is an image, not a blank; so is an
    # image of 8-bit values stored as uint16 (read as a dim 16-bit image: 1/256 of the range).
    faint = blank.copy()
    faint[8:24, 8:24] += 1
    dim = (np.random.default_rng(1).integers(0, 256, (32, 32, 3))).astype(np.uint16)
    for image in (faint, dim):
        calls = tiny_segmenter.encode_calls
        assert tiny_segmenter.propose(image, n_samples=2, steps=1).notes == () and tiny_segmenter.encode_calls == calls + 1
