"""Reading a corrections store's files without trusting them: bounded, never blocking, one reason per failure.

A store is a folder anyone may edit: a record may be a FIFO, a link to a
device, gigabytes long or nested 200,000 deep. Every read here opens only
regular files, reads at most a limit, and turns each failure into
:class:`_Unusable` carrying the reason the case is left out for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO

from model.files.file_access import FileTooLarge, UnreadableFile, open_regular, read_limited, sha256_of_handle
from model.inputs.limits import MAX_DECODED_IMAGE_BYTES

MAX_RECORD_BYTES = 2**20  # a record is a few kB of JSON; a larger one is not a record
MAX_STORE_FILE_BYTES = MAX_DECODED_IMAGE_BYTES  # a lossless PNG of the largest image read is below its decoded size

_DIGESTS: dict[tuple, str] = {}  # (path, device, inode, size, mtime_ns) -> SHA-256: a process re-checking its store hashes only what changed


class _Unusable(Exception):
    """A store file that readers leave out; the message is the reason, for the left-out line."""


def _why(err: BaseException) -> str:
    """A short reason for a failed read, never empty."""
    if isinstance(err, MemoryError):
        return "out of memory"
    if isinstance(err, OSError):
        return err.strerror or str(err) or type(err).__name__
    return str(err) or type(err).__name__


def _open_regular(path: Path, what: str, limit: int) -> tuple[BinaryIO, os.stat_result]:
    """(binary file, stat) of ``path`` if its resolved target is a regular file of at most ``limit`` bytes.

    Raises FileNotFoundError when it (or a link's target) is missing and
    :class:`_Unusable` (``what`` and the reason) otherwise; opening never
    blocks (see :func:`model.files.file_access.open_regular`).
    """
    try:
        return open_regular(path, limit)
    except UnreadableFile as err:
        raise _Unusable(f"{what} {err}") from None


def _read_limited(handle: BinaryIO, what: str, limit: int) -> bytes:
    """All of ``handle``, refusing more than ``limit`` bytes (a file may grow after its size was checked)."""
    try:
        return read_limited(handle, limit)
    except FileTooLarge as err:
        raise _Unusable(f"{what} {err}") from None


def _file_sha256(path: Path, what: str = "the file") -> str:
    """SHA-256 of a regular file of at most :data:`MAX_STORE_FILE_BYTES`, read in chunks (bounded memory).

    Remembered per (path, device, inode, size, mtime): a file unchanged since
    it was last hashed by this process is not read again.
    """
    handle, info = _open_regular(path, what, MAX_STORE_FILE_BYTES)
    with handle:
        key = (str(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        digest = _DIGESTS.get(key)
        if digest is not None:
            return digest
        try:
            digest = sha256_of_handle(handle, MAX_STORE_FILE_BYTES)
        except FileTooLarge as err:
            raise _Unusable(f"{what} {err}") from None
    if len(_DIGESTS) > 100_000:
        _DIGESTS.clear()
    _DIGESTS[key] = digest
    return digest


def _read_record(path: Path) -> Any:
    """The JSON of a store record; :class:`_Unusable` (its reason) when it is not a regular file, too large or not JSON."""
    try:
        handle, _ = _open_regular(path, "the record", MAX_RECORD_BYTES)
    except FileNotFoundError:
        raise _Unusable("the record cannot be read (missing, or a link to nothing)") from None
    try:
        with handle:
            data = _read_limited(handle, "the record", MAX_RECORD_BYTES)
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise _Unusable("not a valid record (JSON nested too deeply)") from None
    except (OSError, UnicodeDecodeError, ValueError, MemoryError) as err:
        raise _Unusable(f"the record cannot be read ({type(err).__name__}: {_why(err)[:120]})") from None
