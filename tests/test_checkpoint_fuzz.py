"""Hypothesis fuzz of checkpoint headers and configs: a load either succeeds or raises CheckpointError, nothing else.

Bounded in examples and with no per-example deadline, so the file runs in
seconds to tens of seconds on a laptop CPU.
"""

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model import CheckpointError, Segmenter
from model.files.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint

from .conftest import tiny_config

torch.manual_seed(0)
SEGMENTER = Segmenter(tiny_config(), "cpu")
TENSORS = SEGMENTER.state_tensors()
CONFIG = SEGMENTER.config.to_dict()
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2, 3, 4, 8, 16, 32, 2**30, 2**31, 2**63, -1, 10**12]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["F32", "I64", "U8", "BOOL", "F128", "mlffm-checkpoint", "1", "cosine", "x0", "mlffm", "{}", "[]"]),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def _reference() -> tuple[dict, bytes]:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ref.mlffm"
        save_checkpoint(path, TENSORS, {"config": CONFIG, "provenance": {"note": "fuzz"}})
        data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length]), data[8 + length :]


HEADER, DATA = _reference()
NAMES = [k for k in HEADER if k != "__metadata__"]


def _write(path: Path, header, data: bytes) -> Path:
    raw = json.dumps(header, allow_nan=True).encode() if not isinstance(header, bytes) else header
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


def _only_checkpoint_errors(path: Path) -> None:
    for attempt in (lambda: load_checkpoint(path), lambda: read_checkpoint_meta(path), lambda: Segmenter.read_config(path), lambda: Segmenter.load(path, "cpu")):
        try:
            attempt()
        except CheckpointError as err:
            text = str(err)
            assert text and "\n" not in text and path.name in text, text


@FUZZ
@given(header=json_values, data=st.binary(max_size=64))
def test_any_json_header_is_a_checkpoint_error(tmp_path_factory, header, data):
    _only_checkpoint_errors(_write(tmp_path_factory.mktemp("h") / "any.mlffm", header, data))


@FUZZ
@given(raw=st.binary(max_size=200), length=st.one_of(st.none(), st.integers(0, 2**64 - 1)))
def test_any_bytes_are_a_checkpoint_error(tmp_path_factory, raw, length):
    path = tmp_path_factory.mktemp("b") / "bytes.mlffm"
    path.write_bytes(raw if length is None else length.to_bytes(8, "little") + raw)
    _only_checkpoint_errors(path)


@st.composite
def mutated_headers(draw):
    header = json.loads(json.dumps(HEADER))
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(["tensor", "field", "metadata", "meta"]))
        if target == "tensor":
            header[draw(st.sampled_from(NAMES))] = draw(json_values)
        elif target == "field":
            entry = header[draw(st.sampled_from(NAMES))]
            if not isinstance(entry, dict):
                continue
            entry[draw(st.sampled_from(["dtype", "shape", "data_offsets", "extra"]))] = draw(json_values)
        elif target == "metadata":
            if not isinstance(header["__metadata__"], dict):
                continue
            header["__metadata__"][draw(st.sampled_from(["format", "version", "meta", "other"]))] = draw(json_values)
        elif isinstance(header["__metadata__"].get("meta"), str):
            meta = json.loads(header["__metadata__"]["meta"])
            meta[draw(st.sampled_from(["config", "provenance", "training", "other"]))] = draw(json_values)
            header["__metadata__"]["meta"] = json.dumps(meta, allow_nan=True)
    return header


@FUZZ
@given(header=mutated_headers())
def test_a_mutated_real_header_is_a_checkpoint_error_or_loads(tmp_path_factory, header):
    _only_checkpoint_errors(_write(tmp_path_factory.mktemp("m") / "mutated.mlffm", header, DATA))


def _paths(config: dict, prefix=()) -> list[tuple[str, ...]]:
    out = []
    for key, value in config.items():
        out.append(prefix + (key,))
        if isinstance(value, dict):
            out.extend(_paths(value, prefix + (key,)))
    return out


CONFIG_PATHS = _paths(CONFIG)
config_values = st.one_of(
    json_values,
    st.integers(-5, 5000),
    st.lists(st.integers(-5, 300_000), max_size=10),
    st.floats(-10, 10),
    st.sampled_from([2**30, 200_000, 10**12, 1e308, -0.0, "linear", "eps", "direct", "plain", [8, 16, 32], [16, 32], None]),
)


@settings(FUZZ, max_examples=150)
@given(changes=st.lists(st.tuples(st.sampled_from(CONFIG_PATHS), config_values), min_size=1, max_size=3))
def test_any_config_values_are_a_checkpoint_error_or_load(tmp_path_factory, changes):
    config = json.loads(json.dumps(CONFIG))
    for where, value in changes:
        target = config
        try:
            for key in where[:-1]:
                target = target[key]
            target[where[-1]] = value
        except (TypeError, KeyError):
            continue  # an earlier change replaced a parent with a non-object
    path = tmp_path_factory.mktemp("c") / "config.mlffm"
    meta = json.dumps({"config": config}, allow_nan=True)
    header = json.loads(json.dumps(HEADER))
    header["__metadata__"]["meta"] = meta
    _write(path, header, DATA)
    try:
        loaded = Segmenter.load(path, "cpu")
    except CheckpointError as err:
        assert "\n" not in str(err) and "config.mlffm" in str(err)
        return
    # It loaded: the values were valid and matched the weights, so the model runs.
    config = loaded.config
    assert 1 <= config.default_samples <= 256 and math.isfinite(config.probability_temperature)


@pytest.mark.parametrize("depth", [MAX := 32, 33, 5000])
def test_nesting_at_and_beyond_the_limit(tmp_path, depth):
    header = json.loads(json.dumps(HEADER))
    nested = "[" * (depth - 2) + "]" * (depth - 2)  # provenance.deep: depth counted from the meta object
    header["__metadata__"]["meta"] = json.dumps({"config": CONFIG})[:-1] + ', "provenance": {"deep": ' + nested + "}}"
    path = _write(tmp_path / "nest.mlffm", header, DATA)
    if depth <= MAX:
        Segmenter.load(path, "cpu")
    else:
        with pytest.raises(CheckpointError, match="nested"):
            Segmenter.load(path, "cpu")
