"""Hostile values (huge ints, tiny thresholds, odd array kinds, absurd pids): each is one ValueError line, never another exception."""

import json
import math
import os
import signal
import socket

import numpy as np
import pytest
import torch

from model import CheckpointError, SegmenterConfig, Segmenter
from model.files.checkpoint import read_checkpoint_meta, save_checkpoint
from model.files.config_schema import check_config_values
from model.inputs.kept import KeptPixels
from model.inputs.limits import MAX_WORKING_SIZE, check_float, check_int
from model.inputs.preprocess import apply_temperature, to_float_rgb, untempered_threshold
from model.inputs.prompts import Prompts, encode_prompts, with_prompt_channels
from training.files.outputs import ExclusiveLock, LockedError

from .conftest import tiny_config

HUGE = 10**400  # beyond float range: float(HUGE) raises OverflowError


def _checkpoint_with(tmp_path, segmenter, **changes):
    config = segmenter.config.to_dict()
    config.update(changes)
    path = tmp_path / "hostile.mlffm"
    save_checkpoint(path, segmenter.state_tensors(), {"config": config})
    return path


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("default_steps", HUGE, "default_steps must be in 1..1000, got an integer of about 401 digits"),
        ("default_steps", -HUGE, "a negative integer of about 401 digits"),
        ("size", HUGE, "size must be in 4..512"),
        ("output_smoothing", HUGE, "output_smoothing must be finite, got an integer of about 401 digits"),
        ("decision_threshold", HUGE, "decision_threshold must be finite"),
    ],
    ids=["steps", "negative-steps", "size", "smoothing", "threshold"],
)
def test_a_huge_integer_in_a_checkpoint_config_is_one_checkpoint_error(tmp_path, tiny_segmenter, field, value, message):
    path = _checkpoint_with(tmp_path, tiny_segmenter, **{field: value})
    assert read_checkpoint_meta(path)["config"][field] == value  # the file really holds it
    for attempt in (lambda: Segmenter.load(path, "cpu"), lambda: Segmenter.read_config(path)):
        with pytest.raises(CheckpointError, match=message) as info:
            attempt()
        assert "\n" not in str(info.value) and path.name in str(info.value)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, HUGE], ids=["inf", "-inf", "nan", "huge-int"])
def test_config_floats_that_are_not_finite_are_one_value_error(value):
    with pytest.raises(ValueError, match="probability_temperature must be finite"):
        check_config_values(SegmenterConfig, {"probability_temperature": value})


def test_the_working_size_is_bounded_by_what_training_supports(tmp_path, tiny_segmenter):
    # A checkpoint claiming a working size of 2048 (13 GB for one proposal) is refused before anything is built.
    path = _checkpoint_with(tmp_path, tiny_segmenter, size=2048)
    with pytest.raises(CheckpointError, match=f"size must be in 4..{MAX_WORKING_SIZE}, got 2048"):
        Segmenter.load(path, "cpu")
    with pytest.raises(ValueError, match=f"size must be in 4..{MAX_WORKING_SIZE}"):
        tiny_segmenter.at_working_size(1024)
    assert tiny_segmenter.at_working_size(MAX_WORKING_SIZE).config.size == MAX_WORKING_SIZE


@pytest.mark.parametrize("threshold", [1e-300, 5e-324, 1e-12, 0.3, 0.5, 0.9, 1 - 1e-16])
@pytest.mark.parametrize("temperature", [1e-3, 0.25, 1.0, 1.9430638823072113, 8.0, 1e3])
def test_untempered_threshold_never_overflows_and_inverts_the_temperature(threshold, temperature):
    raw = untempered_threshold(threshold, temperature)
    assert 0.0 <= raw <= 1.0
    if 1e-6 < raw < 1 - 1e-6:  # where apply_temperature's clamp does not bite, tempering the raw gives the threshold back
        back = float(apply_temperature(torch.tensor(raw, dtype=torch.float64), temperature))
        assert back == pytest.approx(threshold, rel=1e-6)


def test_a_tiny_decision_threshold_proposes_instead_of_overflowing(tiny_segmenter, rgb_image):
    segmenter = tiny_segmenter.with_options(probability_temperature=2.0, decision_threshold=1e-300)
    proposal = segmenter.propose(rgb_image, n_samples=2, steps=1)
    assert proposal.consensus.all()  # every pixel's tempered probability is above 1e-300
    low = tiny_segmenter.with_options(probability_temperature=2.0, decision_threshold=1 - 1e-16).propose(rgb_image, n_samples=2, steps=1)
    assert low.samples.shape == (2, *rgb_image.shape[:2])


def test_a_tiny_threshold_in_a_checkpoint_loads_and_proposes(tmp_path, tiny_segmenter, rgb_image):
    path = _checkpoint_with(tmp_path, tiny_segmenter, decision_threshold=1e-300, probability_temperature=1.943)
    Segmenter.load(path, "cpu").propose(rgb_image, n_samples=2, steps=1)


@pytest.mark.parametrize("value", [HUGE, -HUGE], ids=["huge", "-huge"])
def test_check_float_and_check_int_turn_huge_integers_into_value_errors(value):
    with pytest.raises(ValueError, match="eta must be in \\[0, 1\\], got (a negative|an) integer of about 401 digits"):
        check_float("eta", value, 0.0, 1.0)
    with pytest.raises(ValueError, match="seed must be in 0..9, got (a negative|an) integer of about 401 digits"):
        check_int("seed", value, 0, 9)


def test_eta_beyond_float_range_is_one_value_error(tiny_segmenter, rgb_image):
    with pytest.raises(ValueError, match="eta must be in"):
        tiny_segmenter.propose(rgb_image, n_samples=2, steps=1, eta=HUGE)


def test_a_masked_array_image_is_its_data_unless_pixels_are_masked(tiny_segmenter, rgb_image):
    masked = np.ma.masked_array(rgb_image)
    assert np.array_equal(to_float_rgb(masked), to_float_rgb(rgb_image))
    a = tiny_segmenter.propose(masked, n_samples=2, steps=1, seed=1)
    b = tiny_segmenter.propose(rgb_image, n_samples=2, steps=1, seed=1)
    assert np.array_equal(a.probability, b.probability)
    holed = np.ma.masked_array(rgb_image, mask=np.zeros(rgb_image.shape, bool))
    holed[3, 4] = np.ma.masked
    with pytest.raises(ValueError, match="masked array with masked pixels"):
        tiny_segmenter.propose(holed, n_samples=2, steps=1)


@pytest.mark.parametrize(
    "prompts, message",
    [
        (Prompts(positive=5), "positive clicks must be a sequence of \\(row, col\\) pairs, got 5"),
        (Prompts(negative=None), "negative clicks must be a sequence"),
        (Prompts(positive="ab"), "positive clicks must be a sequence"),
        (Prompts(positive=np.float64(3.0)), "positive clicks must be a sequence"),
        (Prompts(positive=((HUGE, 3),)), "positive click .* must be a \\(row, col\\) pair of finite numbers"),
        (Prompts(negative=((3, -HUGE),)), "negative click .* pair of finite numbers"),
        (Prompts(positive=((float("nan"), 3.0),)), "pair of finite numbers"),
        (Prompts(positive=((np.inf, 3.0),)), "pair of finite numbers"),
    ],
)
def test_malformed_clicks_are_one_value_error(prompts, message, rgb_image):
    with pytest.raises(ValueError, match=message):
        encode_prompts(prompts, 40, 56, 32)
    segmenter = with_prompt_channels(Segmenter(tiny_config(), "cpu"))
    with pytest.raises(ValueError, match=message):
        segmenter.propose(rgb_image, 2, 1, prompts=prompts)
    assert segmenter.encode_calls == 0


def test_clicks_as_lists_and_arrays_still_work():
    encode_prompts(Prompts(positive=[[3, 4]], negative=np.array([[5.0, 6.0]])), 40, 56, 32)


@pytest.mark.parametrize(
    "mask, values, message",
    [
        (np.full((40, 56), np.nan), np.ones((40, 56), bool), "kept mask must hold only 0/1 .*got nan"),
        (np.ones((40, 56), bool), np.full((40, 56), 0.5), "kept values must hold only 0/1 .*got 0.5"),
        (np.full((40, 56), 2, np.int64), np.ones((40, 56), bool), "kept mask must hold only 0/1 .*got 2"),
        (np.full((40, 56), None, object), np.ones((40, 56), bool), "kept mask must be a boolean array .*dtype object"),
        (np.ones((40, 56), bool), np.full((40, 56), "x"), "kept values must be a boolean array .*dtype <U1"),
        ([[1, 0], [1]], np.ones((40, 56), bool), "kept mask must be a 40 x 56 array, got list"),
    ],
)
def test_kept_pixels_that_are_not_binary_are_one_value_error(mask, values, message, tiny_segmenter, rgb_image):
    kept = KeptPixels(mask, values)
    with pytest.raises(ValueError, match=message):
        kept.check(40, 56)
    with pytest.raises(ValueError, match=message):
        tiny_segmenter.propose(rgb_image, n_samples=2, steps=1, kept=kept)


def test_kept_pixels_as_zero_one_numbers_are_accepted(tiny_segmenter, rgb_image):
    mask = np.zeros((40, 56), np.uint8)
    mask[:10] = 1
    KeptPixels(mask, mask.astype(np.float32)).check(40, 56)
    proposal = tiny_segmenter.propose(rgb_image, n_samples=2, steps=1, kept=KeptPixels(mask, mask.astype(np.float64)))
    assert proposal.samples[:, :10].all()


def _lock_record(path, pid):
    path.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "token": "x", "since": 0}))


@pytest.mark.parametrize("pid", [2**70, 2**31, -1, 0, "1234", 12.0, None, True], ids=repr)
def test_a_lock_naming_an_impossible_pid_on_this_host_is_stale(tmp_path, pid):
    path = tmp_path / ".store.lock"
    _lock_record(path, pid)
    told = []
    with ExclusiveLock(path, "the store", on_stale=told.append):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert told and "stale" in told[0]
    assert not path.exists() and not list(tmp_path.iterdir())


def test_a_lock_of_another_host_is_respected_whatever_its_pid(tmp_path):
    path = tmp_path / ".store.lock"
    path.write_text(json.dumps({"pid": 2**70, "host": "another-machine", "token": "x", "since": 0}))
    with pytest.raises(LockedError, match="process .* on another-machine is writing the store"):
        ExclusiveLock(path, "the store").acquire()


@pytest.mark.parametrize("kind", ["folder", "link", "fifo"])
def test_a_lock_path_that_is_not_a_file_is_refused_in_one_line_and_left_alone(tmp_path, kind):
    path = tmp_path / ".store.lock"
    if kind == "folder":
        path.mkdir()
        os.utime(path, (0, 0))  # old: it used to be taken for a stale damaged lock and renamed aside
    elif kind == "link":
        path.symlink_to(tmp_path / "nowhere")
    else:
        os.mkfifo(path)  # reading it would block
    def hung(*_):
        raise TimeoutError("acquire blocked on the lock path (it read a FIFO)")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        with pytest.raises(LockedError) as info:
            ExclusiveLock(path, "the store", wait=5.0).acquire()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    text = str(info.value)
    assert ".store.lock: is a" in text and "not a lock file" in text and "\n" not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == [".store.lock"]  # nothing renamed or left behind
