"""The one checkpoint format: a safetensors file with JSON metadata.

A ``.mlffm`` file holds named tensors (model weights, and optionally the
training state: optimizer moments, EMA weights, RNG state) and a metadata
header with the format name, format version and a JSON document (the
configs, provenance and training counters). safetensors stores raw tensor
bytes and a JSON header, so loading never unpickles anything and cannot run
code hidden in a file. Before anything in a file is trusted, its type,
size, header and meta are validated (:mod:`model.files.checkpoint_check`).

The meta is written as strict JSON: a number that is not finite (a NaN
in a diverged run's history, say) is written as ``null``. Files of
earlier versions that hold ``NaN`` still load.

Writes are atomic: the bytes go to a temporary file in the destination
folder, are flushed to disk, and the temporary file is renamed over the
destination.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .checkpoint_check import (
    FORMAT_NAME, FORMAT_VERSION, MAX_HEADER_BYTES, MAX_JSON_DEPTH, CheckpointError, check_finite, json_depth, provenance_problem, _checked_meta, _open_checkpoint, _read_header,
)

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "CheckpointError", "atomic_write_bytes", "load_checkpoint", "read_checkpoint_meta", "remove_stale_temporaries", "remove_quietly", "save_checkpoint", "write_temporary"]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Files are created with the permissions a plain open() would give, not mkstemp's private 0600.
FILE_MODE = 0o666 & ~_current_umask()


def write_temporary(folder: str | os.PathLike, data: bytes, prefix: str) -> Path:
    """Write ``data`` to a new hidden file ``<prefix><8 random characters>.tmp`` in ``folder``, flushed to disk
    and with :data:`FILE_MODE`; returns its path. On any failure the file is removed (where it can be) and the error
    propagates. The caller renames it into place or removes it."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
    except BaseException:
        remove_quietly(tmp)
        raise
    return Path(tmp)


def remove_quietly(path: str | os.PathLike) -> None:
    """Remove a file where it can be (a failed write's temporary, a marker); one already gone or unremovable stays so."""
    try:
        os.unlink(path)
    except OSError:
        pass


def atomic_write_bytes(path: str | os.PathLike, data: bytes, prefix: str | None = None, replace: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    The temporary is ``.<name>.<random>.tmp`` beside ``path`` (what
    :func:`remove_stale_temporaries` sweeps), or ``<prefix><random>.tmp``
    when ``prefix`` is given: a short one lets a name near the file
    system's limit be written. A failure at any point (a full disk, a kill)
    leaves whatever was at ``path`` before untouched, and removes the
    temporary file where it can. ``replace=False``: ``path`` is created,
    never replaced (a hard link, which fails where a file is): a file that
    another process put there since the caller looked is a FileExistsError
    naming it, and stays as it was.
    """
    path = Path(path)
    tmp = write_temporary(path.parent, data, prefix if prefix is not None else f".{path.name}.")
    try:
        if replace:
            os.replace(tmp, path)
        else:
            _create_from(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise


NO_HARD_LINKS = frozenset(e for e in (errno.EPERM, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", None), errno.EMLINK, errno.EXDEV) if e is not None)
"""What ``os.link`` fails with where a file system has no hard links (FAT's EPERM, a share's EOPNOTSUPP)."""


def _create_from(tmp: Path, path: Path) -> None:
    """Put the written temporary ``tmp`` at ``path`` only if nothing is there (exclusive creation)."""
    written_meanwhile = FileExistsError(
        f"{path}: already exists: another process wrote it while this one ran; it is kept and this run's result is not written "
        "(use --overwrite to replace it)"
    )
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise written_meanwhile from None
    except OSError as err:
        if err.errno not in NO_HARD_LINKS:  # a full disk, a read-only drive: the caller's error, the temporary removed there
            raise
        # a file system without hard links (FAT, exFAT, some network shares): look, then rename; a writer that
        # comes between the two is replaced, the one race left where hard links are missing
        if os.path.lexists(path):
            raise written_meanwhile from None
        os.replace(tmp, path)
        return
    remove_quietly(tmp)


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


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any], replace: bool = True) -> None:
    """Atomically write ``tensors`` and the JSON-serialisable ``meta`` to ``path``.

    ValueError, before anything is written, for a ``meta`` that :func:`load_checkpoint` would refuse
    (not JSON, nested deeper than the loader reads, a header above its size limit, a provenance
    entry of the wrong kind, :func:`model.files.checkpoint_check.provenance_problem`): a save
    never replaces a loadable file with one that does not load. ``replace=False``: as
    :func:`atomic_write_bytes`, never over a file that is there.
    """
    contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    try:
        text = json.dumps(finite_or_null(meta), allow_nan=False)  # strict JSON: other readers of the header refuse NaN
    except (TypeError, ValueError, RecursionError) as err:
        raise ValueError(f"{path}: not saved: the checkpoint's meta is not JSON ({err})") from None
    depth = json_depth(text.encode("utf-8", "surrogatepass"))
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"{path}: not saved: the checkpoint's meta is nested {depth} deep, more than the {MAX_JSON_DEPTH} a load reads")
    problem = provenance_problem(meta.get("provenance") or {}) if isinstance(meta.get("provenance", {}), dict) else "must be a JSON object"
    if problem:
        raise ValueError(f"{path}: not saved: the checkpoint's provenance {problem}")
    header = {"format": FORMAT_NAME, "version": str(FORMAT_VERSION), "meta": text}
    data = save_safetensors(contiguous, metadata=header)
    length = int.from_bytes(data[:8], "little")
    if length > MAX_HEADER_BYTES:
        raise ValueError(f"{path}: not saved: the checkpoint's header would be {length} bytes, above the {MAX_HEADER_BYTES} a load reads")
    atomic_write_bytes(path, data, replace=replace)


def finite_or_null(value: Any) -> Any:
    """``value`` (a JSON document) with every float that is not finite in it replaced by None, so it is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item) for item in value]
    return value


def load_checkpoint(
    path: str | os.PathLike, check_meta: Callable[[dict[str, Any]], Any] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Returns ``(tensors, meta, checkpoint_id)``, where the id is the first 12
    hex digits of the file's SHA-256. Raises :class:`CheckpointError` with a
    one-line message naming the file when it is not a regular file (a FIFO,
    a device, a folder), is missing, too large, truncated, foreign, of
    another format version, malformed in any part of its header (see
    :mod:`model.files.checkpoint_check`), or holds a NaN or infinite value.
    ``check_meta`` (e.g. a config validation) runs on the checked ``meta``
    before any tensor is decoded; its ``CheckpointError`` passes through.
    """
    path = Path(path)
    with _open_checkpoint(path) as (file, size):
        # The header first: a file that is no checkpoint is refused before its (up to 8 GiB of) data is read.
        head = _read_head(path, file, size)
        meta = _checked_meta(path, _read_header(path, head, size))
        if check_meta is not None:
            check_meta(meta)
        try:
            data = head + file.read(size - len(head) + 1)
        except OSError as err:
            raise CheckpointError(f"{path}: cannot read checkpoint ({err.strerror or err})") from None
    if len(data) != size:
        raise CheckpointError(f"{path}: the file changed size while it was read")
    try:
        tensors = load_safetensors(data)
    except SafetensorError as err:
        raise CheckpointError(f"{path}: damaged checkpoint ({err})") from None
    check_finite(path, tensors)
    return tensors, meta, hashlib.sha256(data).hexdigest()[:12]


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``meta`` of a checkpoint (config, provenance) from its header alone, without reading the tensors.

    Raises :class:`CheckpointError` as :func:`load_checkpoint` does for a
    file that is not a regular file, is missing, truncated, foreign, of
    another version or has a malformed header.
    """
    path = Path(path)
    with _open_checkpoint(path) as (file, size):
        head = _read_head(path, file, size)
    return _checked_meta(path, _read_header(path, head, size))


def _read_head(path: Path, file: Any, size: int) -> bytes:
    """The first 8 bytes and, where their length is plausible, the header they announce (checked by the caller)."""
    try:
        head = file.read(8)
        if len(head) == 8:
            length = int.from_bytes(head, "little")
            if 0 < length <= min(MAX_HEADER_BYTES, size - 8):
                head += file.read(length)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read checkpoint ({err.strerror or err})") from None
    return head
