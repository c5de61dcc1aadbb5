"""model.files.file_access: opening only regular files of bounded size, never blocking, and hashing in chunks.

Real files throughout: a FIFO made with ``os.mkfifo`` (no writer ever
opens it, so a blocking open would hang the thread), a folder, ``/dev/null``.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

from model.files.file_access import (
    FileTooLarge,
    NotRegularFile,
    UnreadableFile,
    file_kind,
    open_regular,
    read_limited,
    sha256_of_handle,
)


def test_a_regular_file_opens_with_its_stat(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_bytes(b"ISIC_0000000\n")
    handle, info = open_regular(path, 100)
    with handle:
        assert info.st_size == 13 and read_limited(handle, 100) == b"ISIC_0000000\n"
    assert handle.closed


def test_a_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_regular(tmp_path / "missing.txt", 100)


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(NotRegularFile, match=r"is not a regular file \(a folder\)") as refused:
        open_regular(tmp_path, 100)
    assert isinstance(refused.value, UnreadableFile) and str(tmp_path) not in str(refused.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            open_regular(fifo, 100)[0].close()
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            outcome.append(err)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "opening a FIFO blocks"
    assert isinstance(outcome[0], NotRegularFile) and "a FIFO (named pipe)" in str(outcome[0])


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="no /dev/null")
def test_a_device_is_named_with_or_without_its_type():
    with pytest.raises(NotRegularFile, match="a character device") as refused:
        open_regular("/dev/null", 100)
    assert file_kind(refused.value.mode, device_type=False) == "a device"


def test_a_file_over_the_limit_is_refused_before_reading(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * 101)
    with pytest.raises(FileTooLarge, match=r"is too large \(101 bytes; the limit is 100\)") as refused:
        open_regular(path, 100)
    assert refused.value.size == 101 and refused.value.limit == 100
    handle, _ = open_regular(path, 101)
    with handle, pytest.raises(FileTooLarge, match=r"over 100 bytes") as grown:
        read_limited(handle, 100)  # as if the file had grown after its check
    assert grown.value.size is None


def test_an_unopenable_name_is_unreadable_not_a_crash(tmp_path):
    with pytest.raises(UnreadableFile, match="cannot be read"):
        open_regular(str(tmp_path / "bad\x00name"), 100)


def test_the_hash_equals_hashlib_over_a_real_file_in_any_chunk_size(tmp_path):
    path = tmp_path / "data.bin"
    data = os.urandom(3 * 4096 + 17)
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    for chunk in (1, 4096, 1 << 20):
        handle, _ = open_regular(path, len(data))
        with handle:
            assert sha256_of_handle(handle, len(data), chunk=chunk) == expected
    with open(path, "rb") as handle:
        assert sha256_of_handle(handle) == expected


def test_hashing_stops_once_the_limit_is_exceeded(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"y" * 5000)
    with open(path, "rb") as handle, pytest.raises(FileTooLarge, match=r"over 4,999 bytes"):
        sha256_of_handle(handle, 4999, chunk=1024)
    read: list[int] = []

    class Counting(io.BytesIO):
        def read(self, size: int = -1) -> bytes:
            block = super().read(size)
            read.append(len(block))
            return block

    with pytest.raises(FileTooLarge):
        sha256_of_handle(Counting(b"z" * 10_000), 1000, chunk=512)
    assert sum(read) <= 1024  # stopped at the block that crossed the limit, not at the end
