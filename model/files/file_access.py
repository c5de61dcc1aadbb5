"""Reading files that may be hostile: only regular files, of bounded size, never blocking.

Shared by the checkpoint loader, the corrections store and the dataset
readers (pure standard library: no napari, Qt or torch here). Each caller
turns :class:`UnreadableFile` into its own exception type and wording; the
exception's message is a phrase without the path (``"is not a regular file
(a FIFO (named pipe))"``, ``"is too large (...)"``, ``"cannot be read
(...)"``), so a caller may write ``f"{what} {err}"``.
"""

from __future__ import annotations

import hashlib
import os
import stat
from typing import BinaryIO

CHUNK_BYTES = 1 << 20
"""Block size for reading a file in pieces (memory does not grow with the file)."""

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


class UnreadableFile(Exception):
    """A file that is refused or fails to open; ``str()`` is a reason phrase without the path.

    ``detail`` is the short cause alone (``"Permission denied"``) for a
    caller with its own wording; for the subclasses it is the phrase.
    """

    def __init__(self, phrase: str, detail: str | None = None) -> None:
        super().__init__(phrase)
        self.detail = phrase if detail is None else detail


class NotRegularFile(UnreadableFile):
    """The path is a folder, FIFO, device, socket or other special file; ``mode`` is its ``st_mode``."""

    def __init__(self, mode: int) -> None:
        super().__init__(f"is not a regular file ({file_kind(mode)})")
        self.mode = mode


class FileTooLarge(UnreadableFile):
    """The file holds more than ``limit`` bytes; ``size`` is its size, or None when it grew while being read."""

    def __init__(self, size: int | None, limit: int) -> None:
        if size is None:
            super().__init__(f"is too large (over {limit:,} bytes)")
        else:
            super().__init__(f"is too large ({size:,} bytes; the limit is {limit:,})")
        self.size = size
        self.limit = limit


def file_kind(mode: int, *, device_type: bool = True) -> str:
    """What a file of ``st_mode`` ``mode`` is, in words: ``"a folder"``, ``"a FIFO (named pipe)"``, ...

    Devices read ``"a character device"`` or ``"a block device"``, or
    ``"a device"`` for both when ``device_type`` is False. A regular file
    reads ``"a regular file"``; a kind not named here ``"a special file"``.
    """
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device" if device_type else "a device"
    if stat.S_ISBLK(mode):
        return "a block device" if device_type else "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _why(err: BaseException) -> str:
    """A short cause for a failed system call, never empty."""
    if isinstance(err, OSError):
        return err.strerror or str(err) or type(err).__name__
    return str(err) or type(err).__name__


def _check(info: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise NotRegularFile(info.st_mode)
    if info.st_size > limit:
        raise FileTooLarge(info.st_size, limit)


def open_regular(path: str | os.PathLike[str], limit: int) -> tuple[BinaryIO, os.stat_result]:
    """``(binary file, stat)`` of ``path`` if its target is a regular file of at most ``limit`` bytes.

    Links are followed: the target decides. The type and size are checked
    before opening and again with ``fstat`` on the open descriptor (the
    file may have been swapped in between). Opening never blocks: the file
    is opened with ``O_NONBLOCK`` (a FIFO returns at once, and is then
    refused), and set back to blocking once it is known to be a regular
    file. The caller closes the returned file; it may still grow after the
    check, so read it with :func:`read_limited` or :func:`sha256_of_handle`.

    Raises FileNotFoundError when the path (or a link's target) is missing,
    :class:`NotRegularFile` or :class:`FileTooLarge` when refused, and
    :class:`UnreadableFile` when it cannot be opened (permission, a NUL
    byte in the name, ...).
    """
    try:
        _check(os.stat(path), limit)
        fd = os.open(path, _OPEN_FLAGS)
    except (FileNotFoundError, UnreadableFile):
        raise
    except (OSError, ValueError) as err:
        raise UnreadableFile(f"cannot be read ({_why(err)})", _why(err)) from None
    try:
        info = os.fstat(fd)
        _check(info, limit)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), info
    except BaseException as err:
        os.close(fd)
        if isinstance(err, OSError):
            raise UnreadableFile(f"cannot be read ({_why(err)})", _why(err)) from None
        raise


def read_limited(handle: BinaryIO, limit: int) -> bytes:
    """The rest of ``handle``; :class:`FileTooLarge` (``size`` None) past ``limit`` bytes (a file may grow after its check)."""
    data = handle.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(None, limit)
    return data


def sha256_of_handle(handle: BinaryIO, limit: int | None = None, chunk: int = CHUNK_BYTES) -> str:
    """Hex SHA-256 of the rest of ``handle``, read in ``chunk``-byte blocks (bounded memory).

    With ``limit``, raises :class:`FileTooLarge` (``size`` None) as soon as
    more than ``limit`` bytes have been read. OSError from reading passes
    through.
    """
    hasher, total = hashlib.sha256(), 0
    while block := handle.read(chunk):
        total += len(block)
        if limit is not None and total > limit:
            raise FileTooLarge(None, limit)
        hasher.update(block)
    return hasher.hexdigest()
