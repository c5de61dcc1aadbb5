"""Validation of a checkpoint file before anything in it is trusted.

Every check here raises :class:`CheckpointError` with one line naming the
file. In order: the file type (a FIFO, a device or a folder is refused
before it is read, so nothing hangs or reads forever), the file size, the
safetensors header's length, its JSON nesting depth (checked on the bytes
before parsing, so deep nesting cannot exhaust the recursion limit), its
structure and types, each tensor's dtype, shape and ``data_offsets`` (in
range, ordered, non-overlapping, covering the data exactly, and equal to
dtype size x number of elements), the metadata strings, and the ``meta``
document's types. Tensor values are checked after decoding: NaN or
infinite weights are refused.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from .file_access import FileTooLarge, NotRegularFile, UnreadableFile, file_kind, open_regular

FORMAT_NAME = "mlffm-checkpoint"
FORMAT_VERSION = 1

MAX_CHECKPOINT_BYTES = 8 * 2**30
"""Largest checkpoint file read (the shipped model is a few MB; a training state some times that)."""
MAX_HEADER_BYTES = 16 * 2**20
"""Largest safetensors JSON header (names, shapes and offsets of the tensors, plus the meta string)."""
MAX_JSON_DEPTH = 32
"""Deepest nesting of objects and lists in the header and in the meta document."""
MAX_TENSOR_DIMS = 8

DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
TENSOR_KEYS = {"dtype", "shape", "data_offsets"}


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, foreign, malformed or of an unsupported version."""


@contextlib.contextmanager
def _open_checkpoint(path: Path) -> Iterator[tuple[IO[bytes], int]]:
    """Open ``path`` for reading without blocking, refusing anything but a regular file of a bounded size.

    Yields ``(file, size)``; raises :class:`CheckpointError` naming the file
    otherwise. See :func:`model.files.file_access.open_regular`: a FIFO is refused
    without waiting for a writer, and the type is checked again on the open
    descriptor, so the file cannot be swapped between check and read.
    """
    try:
        file, info = open_regular(path, MAX_CHECKPOINT_BYTES)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except NotRegularFile as err:
        raise CheckpointError(f"{path}: not a checkpoint file: it is {file_kind(err.mode, device_type=False)}") from None
    except FileTooLarge as err:
        raise CheckpointError(f"{path}: not a checkpoint of this program ({err.size / 2**30:.1f} GiB, above the {MAX_CHECKPOINT_BYTES // 2**30} GiB limit)") from None
    except UnreadableFile as err:
        raise CheckpointError(f"{path}: cannot read checkpoint ({err.detail})") from None
    with file:
        yield file, info.st_size


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_depth(raw: bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` in JSON text, brackets inside strings not counted (no parsing)."""
    if not raw:
        return 0
    codes = np.frombuffer(_JSON_STRING.sub(b'""', raw), dtype=np.uint8)
    steps = (np.isin(codes, (0x5B, 0x7B)).astype(np.int64)) - np.isin(codes, (0x5D, 0x7D)).astype(np.int64)
    return int(np.cumsum(steps).max(initial=0))


def parse_json(path: Path, raw: bytes | str, what: str) -> Any:
    """``json.loads`` after a depth check; every failure is a one-line CheckpointError."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise CheckpointError(f"{path}: not a checkpoint of this program ({what} is nested {depth} deep, more than {MAX_JSON_DEPTH})")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CheckpointError(f"{path}: not a checkpoint of this program ({what} is not valid JSON)") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_header(path: Path, data: bytes, file_size: int | None = None) -> dict[str, Any]:
    """Parse and validate the safetensors header: 8-byte little-endian length, then JSON.

    ``data`` is the whole file, or (with ``file_size``) at least its header.
    """
    size = len(data) if file_size is None else file_size
    if size < 8:
        raise CheckpointError(f"{path}: not a checkpoint (file is {size} bytes, truncated or empty)")
    length = int.from_bytes(data[:8], "little")
    if length <= 0 or 8 + length > size:
        raise CheckpointError(f"{path}: not a checkpoint, or truncated (header length {length} does not fit a {size}-byte file)")
    if length > MAX_HEADER_BYTES:
        raise CheckpointError(f"{path}: not a checkpoint of this program (header of {length} bytes, above the {MAX_HEADER_BYTES} limit)")
    raw = data[8 : 8 + length]
    if len(raw) != length:
        raise CheckpointError(f"{path}: truncated checkpoint header")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not a checkpoint (header is not safetensors JSON)") from None
    header = parse_json(path, raw, "the header")
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a checkpoint (unexpected header)")
    _check_tensor_entries(path, header, size - 8 - length, size)
    return header


def _check_tensor_entries(path: Path, header: dict[str, Any], data_bytes: int, file_size: int) -> None:
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        where = f"{path}: damaged checkpoint (tensor {name[:60]!r}"
        if not isinstance(entry, dict) or set(entry) != TENSOR_KEYS:
            raise CheckpointError(f"{where} must have exactly dtype, shape and data_offsets)")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
            raise CheckpointError(f"{where}: unknown dtype {str(dtype)[:20]!r})")
        if not isinstance(shape, list) or len(shape) > MAX_TENSOR_DIMS or not all(_is_int(d) and d >= 0 for d in shape):
            raise CheckpointError(f"{where}: shape must be a list of at most {MAX_TENSOR_DIMS} non-negative integers)")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
            raise CheckpointError(f"{where}: data_offsets must be two integers)")
        begin, end = offsets
        if not 0 <= begin <= end:
            raise CheckpointError(f"{where}: data_offsets {begin}..{end} out of order)")
        if end - begin != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise CheckpointError(f"{where}: data_offsets span {end - begin} bytes, its {dtype} shape {shape} needs {math.prod(shape) * DTYPE_BYTES[dtype]})")
        spans.append((begin, end, name))
    spans.sort()
    position = 0
    for begin, end, name in spans:
        if begin != position:
            problem = "overlaps the previous one" if begin < position else "leaves a gap before it"
            raise CheckpointError(f"{path}: damaged checkpoint (tensor {name[:60]!r} {problem})")
        position = end
    if position > data_bytes:
        raise CheckpointError(f"{path}: truncated checkpoint (expected {file_size - data_bytes + position} bytes, found {file_size})")
    if position < data_bytes:
        raise CheckpointError(f"{path}: damaged checkpoint ({data_bytes - position} bytes after the last tensor)")


def _checked_meta(path: Path, header: dict[str, Any]) -> dict[str, Any]:
    """The parsed ``meta`` of a header of this format and version, with the types of its parts checked."""
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: not a checkpoint of this program (its __metadata__ must map names to strings)")
    if metadata.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not an napari-mlffm checkpoint (safetensors file without the {FORMAT_NAME} header)")
    version = metadata.get("version")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(f"{path}: checkpoint format version {str(version)[:20]} is not supported (this program reads version {FORMAT_VERSION})")
    meta = parse_json(path, metadata.get("meta", "{}"), "the meta document")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: damaged checkpoint (meta must be a JSON object, got {type(meta).__name__})")
    for key in ("config", "provenance", "training"):
        if key in meta and not isinstance(meta[key], dict):
            raise CheckpointError(f"{path}: damaged checkpoint (meta {key!r} must be a JSON object, got {type(meta[key]).__name__})")
    problem = provenance_problem(meta.get("provenance", {}))
    if problem:
        raise CheckpointError(f"{path}: damaged checkpoint (provenance {problem})")
    return meta


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


# The provenance entries the program reads back (commands chain, held-out ids, the training recipe, ...), with
# the JSON kind each must have; null is allowed (a value not recorded) except for those of _NOT_NULL. Other entries are not read.
_PROVENANCE_KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    **{key: ("a string", lambda v: isinstance(v, str)) for key in ("command", "run_id", "licence", "torch")},
    **{key: ("a list of strings", _is_strings) for key in ("commands", "finetune_train_ids")},
    **{key: ("a JSON object", lambda v: isinstance(v, dict)) for key in (
        "data", "val_data", "finetune_data", "replay_data", "distributed", "train_config", "parent", "adaptation", "calibration")},
    "history": ("a list", lambda v: isinstance(v, list)),
    **{key: ("a number", _is_number) for key in (
        "planned_epochs", "best_epoch", "best_val_dice", "val_dice_before", "held_out_dice_before", "held_out_dice_after", "train_seconds")},
}


# Entries read as provenance.get(key, default): a null would reach the reader as None, not as the default.
_NOT_NULL = ("commands", "finetune_train_ids", "train_config", "history")


def provenance_problem(provenance: dict[str, Any]) -> str | None:
    """What is wrong with the entries of a checkpoint's provenance that the program reads, or None."""
    for key, (kind, fits) in _PROVENANCE_KINDS.items():
        value = provenance.get(key)
        if (value is not None or (key in _NOT_NULL and key in provenance)) and not fits(value):
            return f"{key!r} must be {kind}, got {'null' if value is None else type(value).__name__}"
    fraction = (provenance.get("train_config") or {}).get("high_t_fraction")
    if fraction is not None and not (_is_number(fraction) and 0.0 <= fraction <= 1.0):
        return f"'train_config' 'high_t_fraction' must be a number in [0, 1], got {str(fraction)[:40]!r}"
    return None


def check_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse a checkpoint whose floating-point tensors hold NaN or infinity."""
    for name, tensor in tensors.items():
        if not tensor.is_floating_point() or not tensor.numel():
            continue
        if tensor.dtype in (torch.float16, torch.float32, torch.float64):
            finite = bool(np.isfinite(tensor.numpy()).all())
        else:
            finite = bool(torch.isfinite(tensor).all())
        if not finite:
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{path}: damaged checkpoint (tensor {name[:60]!r} holds {bad} NaN or infinite values of {tensor.numel()})")
