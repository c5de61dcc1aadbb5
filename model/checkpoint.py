"""The one checkpoint format: a safetensors file with JSON metadata.

A ``.mlffm`` file holds named tensors (model weights, and optionally the
training state: optimizer moments, EMA weights, RNG state) and a metadata
header with the format name, format version and a JSON document (the
configs, provenance and training counters). safetensors stores raw tensor
bytes and a JSON header, so loading never unpickles anything and cannot run
code hidden in a file.

Writes are atomic: the bytes go to a temporary file in the destination
folder, are flushed to disk, and the temporary file is renamed over the
destination.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Files are created with the permissions a plain open() would give, not mkstemp's private 0600.
FILE_MODE = 0o666 & ~_current_umask()

FORMAT_NAME = "mlffm-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, foreign or of an unsupported version."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    A failure at any point (a full disk, a kill) leaves whatever was at
    ``path`` before untouched, and removes the temporary file where it can.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete temporary files that an earlier, killed :func:`atomic_write_bytes` to ``path`` left behind.

    Only names of the form ``.<name>.<random>.tmp`` next to ``path`` are
    touched; ``path`` itself never is. Returns what was removed.
    """
    path = Path(path)
    removed = []
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            stale.unlink()
            removed.append(stale)
        except OSError:
            pass
    return removed


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Atomically write ``tensors`` and the JSON-serialisable ``meta`` to ``path``."""
    contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    header = {"format": FORMAT_NAME, "version": str(FORMAT_VERSION), "meta": json.dumps(meta)}
    atomic_write_bytes(path, save_safetensors(contiguous, metadata=header))


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Returns ``(tensors, meta, checkpoint_id)``, where the id is the first 12
    hex digits of the file's SHA-256. Raises :class:`CheckpointError` with a
    one-line message naming the file when it is missing, truncated, foreign
    or of another format version.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read checkpoint ({err.strerror or err})") from None
    header = _read_header(path, data)
    meta = _checked_meta(path, header)
    try:
        tensors = load_safetensors(data)
    except SafetensorError as err:
        raise CheckpointError(f"{path}: damaged checkpoint ({err})") from None
    return tensors, meta, hashlib.sha256(data).hexdigest()[:12]


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``meta`` of a checkpoint (config, provenance) from its header alone, without reading the tensors.

    Raises :class:`CheckpointError` as :func:`load_checkpoint` does for a
    missing, truncated, foreign or other-version file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            head = file.read(8)
            if len(head) == 8:
                head += file.read(min(int.from_bytes(head, "little"), size))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read checkpoint ({err.strerror or err})") from None
    return _checked_meta(path, _read_header(path, head, size))


def _checked_meta(path: Path, header: dict[str, Any]) -> dict[str, Any]:
    """The parsed ``meta`` of a header of this format and version."""
    fmt = header.get("__metadata__", {}).get("format")
    if fmt != FORMAT_NAME:
        raise CheckpointError(f"{path}: not an napari-mlffm checkpoint (safetensors file without the {FORMAT_NAME} header)")
    version = header["__metadata__"].get("version")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(f"{path}: checkpoint format version {version} is not supported (this program reads version {FORMAT_VERSION})")
    try:
        return json.loads(header["__metadata__"].get("meta", "{}"))
    except ValueError as err:
        raise CheckpointError(f"{path}: damaged checkpoint ({err})") from None


def _read_header(path: Path, data: bytes, file_size: int | None = None) -> dict[str, Any]:
    """Parse the safetensors header: 8-byte little-endian length, then JSON.

    ``data`` is the whole file, or (with ``file_size``) at least its header.
    """
    size = len(data) if file_size is None else file_size
    if size < 8:
        raise CheckpointError(f"{path}: not a checkpoint (file is {size} bytes, truncated or empty)")
    length = int.from_bytes(data[:8], "little")
    if length <= 0 or 8 + length > size:
        raise CheckpointError(f"{path}: not a checkpoint, or truncated (header length {length} does not fit a {size}-byte file)")
    try:
        header = json.loads(data[8 : 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: not a checkpoint (header is not safetensors JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a checkpoint (unexpected header)")
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
    if ends and 8 + length + max(ends) > size:
        raise CheckpointError(f"{path}: truncated checkpoint (expected {8 + length + max(ends)} bytes, found {size})")
    return header
