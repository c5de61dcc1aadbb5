"""Hostile and malformed checkpoints: each is a one-line CheckpointError naming the file, before a network is built."""

import json
import os
import threading
from pathlib import Path

import pytest
import torch

from model import CheckpointError, Segmenter
from model.files.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from model.files.checkpoint_check import MAX_JSON_DEPTH, json_depth
from training.cli import main


def split_checkpoint(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def write_raw(path: Path, header, data: bytes = b"") -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


def with_meta(header: dict, change) -> dict:
    header = json.loads(json.dumps(header))
    meta = json.loads(header["__metadata__"]["meta"])
    change(meta)
    header["__metadata__"]["meta"] = json.dumps(meta)
    return header


def assert_refused(path: Path, match: str = "", raw: bool = True) -> str:
    """Every way in (load, read_config, and with ``raw`` the format-level reader) gives one CheckpointError line naming the file."""
    messages = []
    attempts = [lambda: Segmenter.load(path, "cpu"), lambda: Segmenter.read_config(path)] + ([lambda: load_checkpoint(path)] if raw else [])
    for attempt in attempts:
        with pytest.raises(CheckpointError) as info:
            attempt()
        text = str(info.value)
        assert path.name in text and "\n" not in text, text
        assert match in text, text
        messages.append(text)
    return messages[0]


@pytest.fixture
def parts(tiny_checkpoint):
    return split_checkpoint(tiny_checkpoint)


def test_deep_nesting_in_the_header_is_refused_not_a_recursion_error(tmp_path, parts):
    _, data = parts
    deep = b'{"x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    assert_refused(write_raw(tmp_path / "deep.mlffm", deep, data), "nested")


def test_deep_nesting_in_the_meta_string_is_refused(tmp_path, parts):
    header, data = parts
    header["__metadata__"]["meta"] = '{"config": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert_refused(write_raw(tmp_path / "deepmeta.mlffm", header, data), "nested")


def test_json_depth_ignores_brackets_inside_strings():
    assert json_depth(b'{"a": "[[[[[[", "b": [1, {"c": "]]"}]}') == 3
    assert json_depth(b'"\\"[[["') == 0
    assert MAX_JSON_DEPTH >= 8


@pytest.mark.parametrize("metadata", [["format"], {"format": 3}, "mlffm-checkpoint", {"format": "mlffm-checkpoint", "version": "1", "meta": 5}])
def test_metadata_of_the_wrong_type_is_refused(tmp_path, parts, metadata):
    header, data = parts
    header["__metadata__"] = metadata
    assert_refused(write_raw(tmp_path / "meta_type.mlffm", header, data))


@pytest.mark.parametrize(
    "offsets",
    [[0, 10**12], [8, 4], [-4, 0], [0], [0, 1, 2], "0-4", [True, 4], [0.0, 4.0], [0, 2**70], None],
)
def test_bad_data_offsets_are_refused(tmp_path, parts, offsets):
    header, data = parts
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"] = offsets
    assert_refused(write_raw(tmp_path / "offsets.mlffm", header, data))


def test_overlapping_and_inconsistent_tensor_entries_are_refused(tmp_path, parts):
    header, data = parts
    names = [k for k in header if k != "__metadata__"]
    overlapping = json.loads(json.dumps(header))
    overlapping[names[1]]["data_offsets"] = overlapping[names[0]]["data_offsets"]
    assert_refused(write_raw(tmp_path / "overlap.mlffm", overlapping, data), "damaged")
    wrong_shape = json.loads(json.dumps(header))
    wrong_shape[names[0]]["shape"] = [10**9, 10**9]
    assert_refused(write_raw(tmp_path / "shape.mlffm", wrong_shape, data), "damaged")
    dtype = json.loads(json.dumps(header))
    dtype[names[0]]["dtype"] = "F128"
    assert_refused(write_raw(tmp_path / "dtype.mlffm", dtype, data), "dtype")
    assert_refused(write_raw(tmp_path / "trailing.mlffm", header, data + b"junk"), "damaged")


@pytest.mark.parametrize("key, value", [("provenance", ["a", "list"]), ("training", 7), ("config", "text"), ("config", None)])
def test_meta_parts_of_the_wrong_type_are_refused(tmp_path, parts, key, value):
    header, data = parts
    assert_refused(write_raw(tmp_path / "parts.mlffm", with_meta(header, lambda m: m.__setitem__(key, value)), data))


def test_a_meta_without_a_config_is_refused(tmp_path, parts):
    header, data = parts
    assert_refused(write_raw(tmp_path / "noconfig.mlffm", with_meta(header, lambda m: m.pop("config")), data), "config", raw=False)


@pytest.mark.parametrize(
    "where, value, match",
    [
        (("size",), 32.0, "size must be an integer"),
        (("size",), 2**30, "size must be in"),
        (("network", "widths"), [200_000, 16, 32], "widths[0] must be in"),
        (("network", "widths"), [8, 16, 32] * 10, "widths must list"),
        (("network", "image_blocks"), True, "image_blocks must be an integer"),
        (("network", "bottleneck_attention"), 1, "bottleneck_attention must be true or false"),
        (("network", "time_dim"), "16", "time_dim must be an integer"),
        (("diffusion", "timesteps"), 10**12, "timesteps must be in"),
        (("default_samples",), 10**8, "default_samples must be in"),
        (("probability_temperature",), float("nan"), "must be finite"),
        (("network",), [1, 2], "must be a JSON object"),
        (("brand_new_key",), 1, "unknown SegmenterConfig fields"),
    ],
)
def test_config_values_of_the_wrong_type_or_range_are_refused(tmp_path, parts, where, value, match):
    header, data = parts

    def change(meta):
        target = meta["config"]
        for key in where[:-1]:
            target = target[key]
        target[where[-1]] = value

    assert_refused(write_raw(tmp_path / "config.mlffm", with_meta(header, change), data), match, raw=False)


def test_a_config_whose_network_would_be_huge_is_refused_before_building(tmp_path, tiny_segmenter):
    config = tiny_segmenter.config.to_dict()
    config["network"].update(widths=[2048] * 8, image_blocks=16, mask_blocks=16)
    config["size"] = 256
    path = tmp_path / "huge.mlffm"
    save_checkpoint(path, tiny_segmenter.state_tensors(), {"config": config})
    assert_refused(path, "billion parameters", raw=False)


def test_weights_of_another_shape_are_refused_before_the_network_is_built(tmp_path, tiny_segmenter):
    config = tiny_segmenter.config.to_dict()
    config["network"]["widths"] = [512, 1024, 2048]  # in bounds, but not what the file holds
    path = tmp_path / "shapes.mlffm"
    save_checkpoint(path, tiny_segmenter.state_tensors(), {"config": config})
    with pytest.raises(CheckpointError, match="do not match"):
        Segmenter.load(path, "cpu")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, tiny_segmenter, bad):
    tensors = tiny_segmenter.state_tensors()
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = torch.full_like(tensors[name], bad)
    path = tmp_path / "nan.mlffm"
    save_checkpoint(path, tensors, {"config": tiny_segmenter.config.to_dict()})
    with pytest.raises(CheckpointError, match="NaN or infinite") as info:
        Segmenter.load(path, "cpu")
    assert "nan.mlffm" in str(info.value)


def _refused_within(path, seconds=10.0) -> BaseException | None:
    result = []

    def attempt():
        try:
            Segmenter.load(path, "cpu")
        except BaseException as err:  # noqa: BLE001 - the test inspects it
            result.append(err)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"loading {path} hangs"
    return result[0] if result else None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe.mlffm"
    os.mkfifo(fifo)
    error = _refused_within(fifo)
    assert isinstance(error, CheckpointError) and "FIFO" in str(error) and "pipe.mlffm" in str(error)
    with pytest.raises(CheckpointError, match="FIFO"):
        Segmenter.read_config(fifo)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_a_device_file_is_refused_before_reading():
    error = _refused_within(Path("/dev/zero"))
    assert isinstance(error, CheckpointError) and "a device" in str(error)


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="a folder"):
        Segmenter.load(tmp_path, "cpu")
    with pytest.raises(CheckpointError, match="a folder"):
        read_checkpoint_meta(tmp_path)


def test_cli_reports_a_hostile_checkpoint_in_one_line(tmp_path, sample_images, capsys):
    fifo = tmp_path / "pipe.mlffm"
    os.mkfifo(fifo)
    code = main(["segment", str(sample_images[0]), "-o", str(tmp_path / "out"), "--checkpoint", str(fifo)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pipe.mlffm" in err[0] and "FIFO" in err[0]


def test_a_valid_checkpoint_still_loads_and_new_fields_with_defaults_are_optional(tmp_path, parts, tiny_checkpoint):
    header, data = parts
    # A file written before a field existed (here: flip_views and decision_threshold missing) loads with the defaults.
    older = with_meta(header, lambda m: [m["config"].pop(k) for k in ("flip_views", "decision_threshold")])
    loaded = Segmenter.load(write_raw(tmp_path / "older.mlffm", older, data), "cpu")
    assert loaded.config.flip_views == 1 and loaded.config.decision_threshold == 0.5
    assert Segmenter.load(tiny_checkpoint, "cpu").config == Segmenter.read_config(tiny_checkpoint)


def test_config_checks_follow_the_dataclass_fields_so_new_fields_just_work():
    from dataclasses import dataclass

    from model.files.config_schema import check_config_values

    @dataclass(frozen=True)
    class WithNewFields:  # as if a field were added to NetworkConfig with a default
        prompt_channels: int = 0
        prompt_kind: str = "box"
        scale: float | None = None
        levels: tuple[int, ...] = (8, 16)

    check_config_values(WithNewFields, {})  # an older file without the new fields
    check_config_values(WithNewFields, {"prompt_channels": 2, "prompt_kind": "points", "scale": None, "levels": [4, 8, 16]})
    for bad in ({"prompt_channels": 2.0}, {"prompt_channels": True}, {"prompt_channels": 10**12}, {"scale": "x"}, {"levels": [4, "8"]}, {"other": 1}):
        with pytest.raises(ValueError):
            check_config_values(WithNewFields, bad)


def test_integer_bytes_relabelled_as_weights_are_refused(tmp_path, parts):
    header, data = parts
    name = next(k for k, v in header.items() if k.startswith("model.") and v["dtype"] == "F32")
    header = json.loads(json.dumps(header))
    header[name]["dtype"] = "I32"  # same bytes: loaded as integers near 1e9, which gave masks
    path = write_raw(tmp_path / "ints.mlffm", header, data)
    with pytest.raises(CheckpointError, match=r"is torch.int32, the network needs a floating-point tensor"):
        Segmenter.load(path, "cpu")


@pytest.mark.parametrize(
    "key, value",
    [("commands", 5), ("commands", [1]), ("finetune_train_ids", [[1]]), ("train_config", [1]), ("parent", "x"),
     ("best_val_dice", "high"), ("train_config", {"high_t_fraction": "abc"}), ("commands", None), ("train_config", None),
     ("finetune_train_ids", None)],
)
def test_provenance_entries_the_program_reads_are_checked_at_load(tmp_path, parts, key, value):
    header, data = parts
    path = write_raw(tmp_path / "prov.mlffm", with_meta(header, lambda m: m.setdefault("provenance", {}).update({key: value})), data)
    assert_refused(path, f"provenance '{key}'")


def test_the_cli_reports_a_checkpoint_with_bad_provenance_in_one_line(tmp_path, parts, tiny_checkpoint, capsys):
    header, data = parts
    bad = write_raw(tmp_path / "prov.mlffm", with_meta(header, lambda m: m.setdefault("provenance", {}).update({"commands": 5})), data)
    assert main(["average", str(bad), str(tiny_checkpoint), "-o", str(tmp_path / "soup.mlffm")]) == 2  # was a TypeError traceback
    err = capsys.readouterr().err
    assert "prov.mlffm" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "provenance, match",
    [({"note": {1, 2}}, "not JSON"), ({"commands": 5}, "provenance 'commands'"), ("deep", "nested"), ("long", "header would be")],
)
def test_save_refuses_what_load_would_refuse_and_keeps_the_file_it_would_replace(tmp_path, tiny_segmenter, provenance, match):
    path = tmp_path / "mine.mlffm"
    tiny_segmenter.save(path)
    before = path.read_bytes()
    if provenance == "deep":
        provenance = nested = {}
        for _ in range(40):
            nested["a"] = {}
            nested = nested["a"]
    elif provenance == "long":
        provenance = {"note": "x" * (17 * 2**20)}
    with pytest.raises(ValueError, match=match):
        tiny_segmenter.save(path, provenance=provenance)
    assert path.read_bytes() == before
    Segmenter.load(path, "cpu")


def test_a_file_that_is_no_checkpoint_is_refused_from_its_first_bytes(tmp_path, monkeypatch):
    path = tmp_path / "big.mlffm"
    with open(path, "wb") as handle:
        handle.truncate(200 * 2**20)  # 200 MB of zeros (sparse): the 8-byte length says 0
    reads = []

    class Counting:
        def __init__(self, handle):
            self.handle = handle

        def read(self, n=-1):
            data = self.handle.read(n)
            reads.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    import model.files.checkpoint_check as check

    real_open_regular = check.open_regular
    monkeypatch.setattr(check, "open_regular", lambda p, limit: (lambda f, info: (Counting(f), info))(*real_open_regular(p, limit)))
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(path)
    assert sum(reads) <= 8  # the whole file was read before the header was checked
