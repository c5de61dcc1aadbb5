"""Checkpoints: round trip, damaged and foreign files, no code execution, atomic writes."""

import os
import pickle

import numpy as np
import pytest
import torch

from model import CheckpointError, NetworkConfig, NoDefaultWeightsError, Segmenter, default_weights_path
from model.files.checkpoint import FORMAT_NAME, atomic_write_bytes, load_checkpoint, read_checkpoint_meta, remove_stale_temporaries, save_checkpoint

from .conftest import tiny_config


def test_round_trip_gives_same_config_weights_and_masks(tmp_path, tiny_segmenter, rgb_image):
    path = tmp_path / "m.mlffm"
    tiny_segmenter.save(path, provenance={"note": "unit test"})
    loaded = Segmenter.load(path, device="cpu")
    assert loaded.config == tiny_segmenter.config
    assert loaded.provenance == {"note": "unit test"}
    assert len(loaded.checkpoint_id) == 12
    for (name, a), (_, b) in zip(tiny_segmenter.network.state_dict().items(), loaded.network.state_dict().items()):
        assert torch.equal(a, b), name
    a = tiny_segmenter.propose(rgb_image, n_samples=2, steps=2, seed=3)
    b = loaded.propose(rgb_image, n_samples=2, steps=2, seed=3)
    assert np.array_equal(a.probability, b.probability)


def test_truncated_file_is_refused(tmp_checkpoint_bytes, tmp_path):
    path = tmp_path / "cut.mlffm"
    path.write_bytes(tmp_checkpoint_bytes[: len(tmp_checkpoint_bytes) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        Segmenter.load(path, "cpu")


@pytest.mark.parametrize("payload", [b"", b"hello world, not a model", b"\x89PNG\r\n\x1a\n" + bytes(100)])
def test_foreign_files_are_refused(tmp_path, payload):
    path = tmp_path / "foreign.mlffm"
    path.write_bytes(payload)
    with pytest.raises(CheckpointError, match="foreign.mlffm"):
        Segmenter.load(path, "cpu")


def test_plain_safetensors_file_is_foreign(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=FORMAT_NAME):
        Segmenter.load(path, "cpu")


def test_other_format_version_is_refused(tmp_path, tiny_segmenter):
    from safetensors.torch import save

    path = tmp_path / "v99.mlffm"
    path.write_bytes(save({"w": torch.zeros(1)}, metadata={"format": FORMAT_NAME, "version": "99", "meta": "{}"}))
    with pytest.raises(CheckpointError, match="version 99"):
        Segmenter.load(path, "cpu")


def test_other_architecture_is_refused(tmp_path, tiny_segmenter):
    path = tmp_path / "arch.mlffm"
    tensors = tiny_segmenter.state_tensors()
    config = tiny_config(network=NetworkConfig(widths=(8, 16, 64), time_dim=16)).to_dict()
    save_checkpoint(path, tensors, {"config": config})
    with pytest.raises(CheckpointError, match="do not match"):
        Segmenter.load(path, "cpu")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.mlffm"
    evil.write_bytes(pickle.dumps({"weights": _Payload(str(marker))}))
    torch_file = tmp_path / "evil_torch.mlffm"
    torch.save({"x": _Payload(str(marker))}, torch_file)
    assert not marker.exists()
    for path in (evil, torch_file):
        with pytest.raises(CheckpointError):
            Segmenter.load(path, "cpu")
    assert not marker.exists()


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "keep.bin"
    path.write_bytes(b"old contents")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"new contents")
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.bin"]


def test_header_only_read_gives_the_config_and_refuses_what_load_refuses(tmp_path, tiny_segmenter, tmp_checkpoint_bytes):
    from safetensors.torch import save

    good = tmp_path / "m.mlffm"
    tiny_segmenter.with_options(default_samples=7, decision_threshold=0.4).save(good, provenance={"note": "x"})
    assert Segmenter.read_config(good) == Segmenter.load(good, "cpu").config
    assert read_checkpoint_meta(good)["provenance"] == {"note": "x"}
    if default_weights_path().is_file():
        assert Segmenter.read_config(None) == Segmenter.load(None, "cpu").config
    bad = {
        "cut.mlffm": tmp_checkpoint_bytes[: len(tmp_checkpoint_bytes) // 2],
        "empty.mlffm": b"",
        "text.mlffm": b"hello world, not a model",
        "plain.mlffm": save({"w": torch.zeros(2)}),
        "v99.mlffm": save({"w": torch.zeros(1)}, metadata={"format": FORMAT_NAME, "version": "99", "meta": "{}"}),
    }
    for name, payload in bad.items():
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(CheckpointError) as loading:
            load_checkpoint(path)
        with pytest.raises(CheckpointError) as reading:
            Segmenter.read_config(path)
        assert str(reading.value) == str(loading.value), name
    with pytest.raises(CheckpointError, match="nope.mlffm: no such"):
        Segmenter.read_config(tmp_path / "nope.mlffm")


def test_missing_file_message_names_it(tmp_path):
    with pytest.raises(CheckpointError, match="nope.mlffm: no such"):
        load_checkpoint(tmp_path / "nope.mlffm")


def test_default_weights(rgb_image):
    if default_weights_path().is_file():
        segmenter = Segmenter.load(None, device="cpu")
        assert segmenter.propose(rgb_image, n_samples=2, steps=2).samples.shape == (2, 40, 56)
    else:
        with pytest.raises(NoDefaultWeightsError, match="no default weights"):
            Segmenter.load(None)


@pytest.fixture
def tmp_checkpoint_bytes(tmp_path, tiny_segmenter):
    path = tmp_path / "full.mlffm"
    tiny_segmenter.save(path)
    return path.read_bytes()


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    path = tmp_path / "mask.png"
    atomic_write_bytes(path, b"data")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_stale_temporaries_of_a_killed_write_are_swept_and_nothing_else(tmp_path):
    target = tmp_path / "m.mlffm"
    target.write_bytes(b"good")
    stale = tmp_path / ".m.mlffm.abc123.tmp"
    stale.write_bytes(b"half")
    others = [tmp_path / ".other.mlffm.abc.tmp", tmp_path / "m.mlffm.tmp", tmp_path / ".m.mlffmx.abc.tmp"]
    for other in others:
        other.write_bytes(b"keep")
    assert remove_stale_temporaries(target) == [stale]
    assert target.read_bytes() == b"good"
    assert all(other.exists() for other in others)
