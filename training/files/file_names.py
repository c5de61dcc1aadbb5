"""File names an output makes, and the file system's limit on them, checked before a run writes anything.

A command writes more than its ``-o``: temporaries for atomic writes, a
lock, a resume state, a stale lock moved aside, a probe of the folder. Each
name is longer than ``-o``'s own, so an ``-o`` near the file system's limit
(255 bytes on ext4, XFS, Btrfs, APFS, NTFS) passes every check and then
fails hours later. :func:`check_name_lengths` refuses it first, in one line.
"""

from __future__ import annotations

import os
from pathlib import Path

from .outputs import STALE_TAG, lock_path_for, one_line

NAME_MAX = 255
"""Bytes a file name may hold where the file system does not say (ext4, XFS, Btrfs, APFS, NTFS: 255)."""


def name_limit(folder: Path) -> int:
    """The longest file name, in bytes, that ``folder`` (or, while it does not exist yet, its nearest existing
    parent, on whose file system it will be made) takes: the file system's ``NAME_MAX``, else :data:`NAME_MAX`."""
    folder = Path(folder).absolute()
    for place in (folder, *folder.parents):
        try:
            if place.is_dir():
                limit = os.pathconf(place, "PC_NAME_MAX")
                return int(limit) if limit and limit > 0 else NAME_MAX  # -1: no limit that it tells
        except (OSError, ValueError, AttributeError):  # no pathconf (Windows), a name it does not know, a folder it cannot ask
            break
    return NAME_MAX


def written_names(name: str) -> list[str]:
    """The names an atomic write of file ``name`` uses: the file and its temporary ``.<name>.<8 characters>.tmp`` (mkstemp)."""
    return [name, f".{name}.{'x' * 8}.tmp"]


def probe_name(name: str) -> str:
    """The longest name :func:`check_output_file`'s probe for file ``name`` takes (a pid has at most 7 digits)."""
    return f".{name}.probe-{'9' * 7}.tmp"


def lock_names(output: Path) -> list[str]:
    """The names :class:`ExclusiveLock` on ``output`` uses: its lock file and the name a stale one is moved to."""
    lock = lock_path_for(output).name
    return [lock, f"{lock}.stale-{'x' * STALE_TAG}"]


def check_name_lengths(path: Path, names: list[str], what: str, option: str = "-o") -> None:
    """ValueError (one line naming ``option``) unless every file name in ``names``, those that ``what`` (a command)
    derives from ``path`` (its temporaries, lock, resume state), fits within the name limit of ``path``'s folder."""
    path = Path(path)
    limit = name_limit(path.parent)
    sizes = {name: len(os.fsencode(name)) for name in names}
    longest = max(sizes, key=sizes.get)
    if sizes[longest] <= limit:
        return
    own = len(os.fsencode(path.name))
    room = max(own - (sizes[longest] - limit), 0)
    raise ValueError(
        f"{one_line(path)}: {option}'s file name is {own} bytes, and {what} derives longer names from it (up to {sizes[longest]} bytes, "
        f"{one_line(longest.replace(path.name, '<name>', 1))}), over the file system's limit of {limit}: "
        f"give {option} a name of at most {room} bytes"
    )


SHORT_TEMPORARY_PREFIX = ".mlffm-"
"""The prefix of a temporary named apart from its target, ``.mlffm-<8 characters>.tmp`` (19 bytes), for writes
whose target's name may be up to the file system's limit (a writer's file name chosen by the user, an export's set)."""
