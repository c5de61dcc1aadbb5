"""Lists of case ids (``mlffm train --exclude``): read without trusting the file, and cases left out by them."""

from __future__ import annotations

import unicodedata
from dataclasses import replace
from pathlib import Path

from model.files.file_access import FileTooLarge, NotRegularFile, UnreadableFile, open_regular, read_limited

from .datasets import DatasetError, DatasetListing

MAX_ID_LIST_BYTES = 16 * 2**20


def read_id_list(path: Path) -> tuple[str, ...]:
    """Case ids from a text file, one per line; blank lines and text after ``#`` are ignored.

    Raises DatasetError when the file cannot be read, is not a regular file
    (a FIFO or device would hang or never end; opening never blocks, see
    :func:`model.files.file_access.open_regular`), is over 16 MiB or lists no id.
    """
    try:
        handle, _ = open_regular(path, MAX_ID_LIST_BYTES)
        with handle:
            data = read_limited(handle, MAX_ID_LIST_BYTES)  # the file may grow between its check and the read
        lines = data.decode("utf-8-sig").splitlines()  # a BOM (Excel, Notepad) is not part of the first id
    except NotRegularFile:
        raise DatasetError(f"{path}: not a regular file (an id list is a text file, one id per line)") from None
    except FileTooLarge as err:
        if err.size is None:
            raise DatasetError(f"{path}: too large for an id list (limit {MAX_ID_LIST_BYTES // 2**20} MiB)") from None
        raise DatasetError(f"{path}: {err.size / 2**20:.0f} MiB is too large for an id list (limit {MAX_ID_LIST_BYTES // 2**20} MiB)") from None
    except UnreadableFile as err:
        raise DatasetError(f"{path}: cannot read the id list ({err.detail})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read the id list ({err})") from None
    ids = tuple(dict.fromkeys(unicodedata.normalize("NFC", line.split("#", 1)[0].strip()) for line in lines))  # as case ids are
    ids = tuple(i for i in ids if i)
    if not ids:
        raise DatasetError(f"{path}: lists no case ids (one per line; '#' starts a comment)")
    return ids


def without_cases(listing: DatasetListing, ids: tuple[str, ...], known: set[str]) -> tuple[DatasetListing, int]:
    """``listing`` without the cases named in ``ids``, and how many it lost.

    ``known`` holds every id of the dataset: an id outside it is an error (a
    typo would otherwise exclude nothing, silently). Ids of other splits are
    allowed and change nothing.
    """
    unknown = [i for i in ids if i not in known]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise DatasetError(f"{listing.root}: no case named {shown}")
    dropped = set(ids)
    kept = tuple(c for c in listing.cases if c.case_id not in dropped)
    return replace(listing, cases=kept), len(listing.cases) - len(kept)
