"""One case of ``mlffm segment`` as a unit: all of its files, or none.

A case ``<stem>`` is five files in the output folder::

    <stem>_segmentation.png  <stem>_probability.tif  <stem>_uncertainty.tif  <stem>_samples.tif  <stem>.json

Writing one: the outputs are encoded in memory first (so a failure while
encoding writes nothing), a hidden marker ``.<stem>.segmenting`` is created,
each output is written atomically (temporary file, rename), then the JSON
sidecar, which lists every output with its size in bytes, and last the
marker is removed. The sidecar is the commit record: a case is *finished*
when its sidecar parses and every output it lists exists with that size.

A finished case is *current* only if its sidecar records the same result
key (:data:`RESULT_KEYS`) as the present run: the SHA-256 of the input
file's bytes, the checkpoint id (a hash of the model file, so it covers the
fitted threshold and temperature too), samples, steps, seed and eta.
:func:`result_differences` says what differs; the command keeps a current
case and refuses to replace a stale one without ``--overwrite``. A sidecar
that lacks any of these keys (an older version wrote it) cannot be told
current and is treated as stale.

A stem whose longest file name (the segmentation's temporary,
``.<stem>_segmentation.png.<8>.tmp``) would pass the file system's name
limit (:func:`training.files.file_names.name_limit`) is refused before
anything is written (:func:`name_too_long`).

If writing fails (a full disk, an I/O error, Ctrl-C), every file of the case
is removed again. If the process is killed, the marker stays, and the next
run (without ``--overwrite``) takes the case as *unfinished* and writes it
again. Outputs without a sidecar and without a marker (copied in, or left by
an older version) are completed only if they are byte-identical to what this
run computes; otherwise they are someone else's and are never replaced
without ``--overwrite``; nor is a finished case whose files have changed.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from model.files.checkpoint import remove_quietly
from model.files.file_access import sha256_of_handle

from ..data import imageio
from .file_names import written_names
from .outputs import MAX_PID, one_line, process_exists, process_started
from ..data.imageio import encode_json, encode_png, encode_tiff

OUTPUT_SUFFIXES = ("_segmentation.png", "_probability.tif", "_uncertainty.tif", "_samples.tif", ".json")
IMAGE_OUTPUT_SUFFIXES = OUTPUT_SUFFIXES[:-1]
MARKER_SUFFIX = ".segmenting"
RESULT_KEYS = ("source_sha256", "checkpoint_id", "samples", "steps", "seed", "eta", "flat_field")
"""Sidecar fields that decide the outputs: a finished case is kept only if all of them match the present run."""
RESULT_DEFAULTS = {"flat_field": False}
"""What a sidecar written before a field existed meant by its absence (flat-field correction did not exist: off)."""


def longest_name_bytes(stem: str) -> int:
    """Bytes of the longest file name that writing case ``stem`` uses: its outputs, its marker and their temporaries."""
    names = [f"{stem}{suffix}" for suffix in OUTPUT_SUFFIXES] + [f".{stem}{MARKER_SUFFIX}"]
    return max(len(os.fsencode(written)) for name in names for written in written_names(name))


def name_too_long(stem: str, limit: int) -> str | None:
    """Why case ``stem``'s files cannot be written under a ``limit``-byte name limit, in words; None when they can.
    Checked before anything of the case is written, so that a long name never leaves half a case (or ends a batch)."""
    longest = longest_name_bytes(stem)
    if longest <= limit:
        return None
    room = limit - (longest - len(os.fsencode(stem)))
    return (
        f"its outputs' file names would be up to {longest} bytes, over the file system's limit of {limit}: "
        f"rename it (at most {max(room, 0)} bytes before the extension)"
    )


class CaseState(Enum):
    NEW = "new"  # none of its files exist
    FINISHED = "finished"  # sidecar and every output it lists, at the recorded sizes
    UNFINISHED = "unfinished"  # a run writing it was killed (marker present)
    CHANGED = "changed"  # a finished case whose outputs were edited or removed since
    FOREIGN = "foreign"  # some of its file names exist, written by something else (or an older version)


def output_paths(out_dir: Path, stem: str) -> list[Path]:
    return [out_dir / f"{stem}{suffix}" for suffix in OUTPUT_SUFFIXES]


def marker_path(out_dir: Path, stem: str) -> Path:
    return out_dir / f".{stem}{MARKER_SUFFIX}"


def is_output_name(name: str) -> bool:
    """Whether a file name looks like one of the image outputs this command writes."""
    return name.lower().endswith(IMAGE_OUTPUT_SUFFIXES)


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar's record if it is one this command wrote (a JSON object listing its outputs), else None."""
    try:
        if path.stat().st_size > 10_000_000:
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("outputs"), list):
        return None
    if not all(isinstance(name, str) and "/" not in name and "\\" not in name for name in record["outputs"]):
        return None
    sizes = record.get("output_bytes")
    if sizes is not None and not (isinstance(sizes, dict) and all(isinstance(v, int) for v in sizes.values())):
        return None
    return record


def case_state(out_dir: Path, stem: str) -> CaseState:
    """Where case ``stem`` stands in ``out_dir`` (see :class:`CaseState`)."""
    sidecar = out_dir / f"{stem}.json"
    unfinished = marker_path(out_dir, stem).exists()
    present = [p for p in output_paths(out_dir, stem) if p.exists()]
    if not present:
        return CaseState.UNFINISHED if unfinished else CaseState.NEW
    record = read_sidecar(sidecar) if sidecar in present else None
    if record is None:
        return CaseState.UNFINISHED if unfinished else CaseState.FOREIGN
    sizes = record.get("output_bytes") or {}
    for name in record["outputs"]:
        path = out_dir / name
        if name == sidecar.name:
            continue
        try:
            size = path.stat().st_size
        except OSError:
            return CaseState.UNFINISHED if unfinished else CaseState.CHANGED
        if name in sizes and sizes[name] != size:
            return CaseState.UNFINISHED if unfinished else CaseState.CHANGED
    return CaseState.FINISHED  # a marker left beside a written sidecar (killed just before removing it) is stale


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in ``chunk``-byte blocks (memory does not grow with the file)."""
    with open(path, "rb") as handle:
        return sha256_of_handle(handle, chunk=chunk)


def result_differences(out_dir: Path, stem: str, present: dict[str, Any]) -> str | None:
    """Why finished case ``stem`` is not this run's result, in words; None when every :data:`RESULT_KEYS`
    field of its sidecar equals ``present``'s (then it is current and may be kept).

    A sidecar missing some of the fields (written by an older version) is reported as not
    telling; a changed input file and changed settings are each named, settings as ``old -> new``.
    """
    record = {**RESULT_DEFAULTS, **(read_sidecar(out_dir / f"{stem}.json") or {})}
    missing = [key for key in RESULT_KEYS if key not in record]
    if missing:
        return f"segmented before by an older version that did not record {', '.join(missing)}, so it cannot tell whether it is current"
    reasons = []
    if record["source_sha256"] != present["source_sha256"]:
        reasons.append("the image file changed since it was segmented")
    changed = [f"{key} {record[key]} -> {present[key]}" for key in RESULT_KEYS[1:] if record[key] != present[key]]
    if changed:
        reasons.append(f"segmented before with other settings ({', '.join(changed)})")
    return "; ".join(reasons) or None


@dataclass(frozen=True)
class EncodedCase:
    """A case's image outputs as bytes, by file name, in writing order."""

    stem: str
    files: dict[str, bytes]


def encode_case(stem: str, mask: np.ndarray, probability: np.ndarray, uncertainty: np.ndarray, samples: np.ndarray) -> EncodedCase:
    """Encode ``mask`` (H, W) bool as 0/255 PNG, ``probability`` and ``uncertainty`` (H, W) as float32
    TIFFs and ``samples`` (N, H, W) bool as a uint8 0/1 TIFF stack."""
    return EncodedCase(
        stem,
        {
            f"{stem}_segmentation.png": encode_png(mask.astype(np.uint8) * 255),
            f"{stem}_probability.tif": encode_tiff(probability.astype(np.float32)),
            f"{stem}_uncertainty.tif": encode_tiff(uncertainty.astype(np.float32)),
            f"{stem}_samples.tif": encode_tiff(_as_uint8(samples)),
        },
    )


def _as_uint8(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool masks as 0/1 uint8 without a copy where they can be viewed so (one byte each either way)."""
    if masks.dtype == np.bool_ and masks.flags.c_contiguous:
        return masks.view(np.uint8)
    return masks.astype(np.uint8)


def matches_existing(out_dir: Path, case: EncodedCase) -> bool:
    """Whether every existing image output of ``case`` holds exactly these bytes (and no sidecar exists)."""
    if (out_dir / f"{case.stem}.json").exists():
        return False
    for name, data in case.files.items():
        path = out_dir / name
        if path.exists():
            try:
                if path.stat().st_size != len(data) or path.read_bytes() != data:
                    return False
            except OSError:
                return False
    return True


LIVE_MARKER_SECONDS = 600


def marker_record() -> bytes:
    """What a marker holds: the writing process's pid, start time and host, so another run can tell a live write
    from a killed one whose pid a new process has taken."""
    return json.dumps({"pid": os.getpid(), "started": process_started(os.getpid()), "host": socket.gethostname()}).encode()


def writer_alive(out_dir: Path, stem: str) -> int | None:
    """The pid of another live process on this host whose marker says it is writing case ``stem`` now, else None
    (no marker, an empty one from an older version, another host's, or a writer that is gone: a killed run).

    A case's files are written within seconds of its marker, so a marker older than
    :data:`LIVE_MARKER_SECONDS` is a killed run's even if its pid now belongs to another process.
    """
    marker = marker_path(out_dir, stem)
    try:
        if time.time() - marker.stat().st_mtime > LIVE_MARKER_SECONDS:
            return None
        record = json.loads(marker.read_bytes()[:4096] or b"null")
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("host") != socket.gethostname():
        return None
    pid = record.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid <= MAX_PID or pid == os.getpid() or os.name == "nt":
        return None
    if not process_exists(pid):
        return None
    started = record.get("started")
    if isinstance(started, int) and process_started(pid) not in (None, started):
        return None  # the pid was reused: the writer is gone
    return pid


def check_still(out_dir: Path, stem: str, planned: CaseState) -> None:
    """FileExistsError (one line) when case ``stem`` is no longer as this run found it, or another live run is writing it."""
    pid = writer_alive(out_dir, stem)
    if pid is not None:
        raise FileExistsError(f"{one_line(out_dir / (stem + '.json'))}: being written by another run (pid {pid}); kept (rerun when it ends)")
    if case_state(out_dir, stem) is not planned:
        raise FileExistsError(f"{one_line(out_dir / (stem + '.json'))}: written by another run since this one started; kept (use --overwrite to replace it)")


def claim_new_case(out_dir: Path, stem: str) -> None:
    """Create the case's marker exclusively, for a case that had no files when this run looked.

    FileExistsError (one line) when another writer holds the marker now, or
    wrote any of the case's files since: two runs into one folder never
    replace each other's cases without ``--overwrite``.
    """
    marker = marker_path(out_dir, stem)
    taken = f"{one_line(out_dir / (stem + '.json'))}: written by another run since this one started; kept (use --overwrite to replace it)"
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise FileExistsError(taken) from None
    try:
        os.write(fd, marker_record())
    finally:
        os.close(fd)
    if any(path.exists() for path in output_paths(out_dir, stem)):
        marker.unlink(missing_ok=True)
        raise FileExistsError(taken)


def write_case(out_dir: Path, case: EncodedCase, record: dict[str, Any], claimed: bool = False) -> list[Path]:
    """Write a case all or nothing (see the module docstring); returns the paths written.

    ``claimed``: the marker was made by :func:`claim_new_case` (it is this
    run's). On any failure (OSError such as a full disk, KeyboardInterrupt)
    every file of the case is removed before the error propagates.
    """
    marker = marker_path(out_dir, case.stem)
    sidecar = out_dir / f"{case.stem}.json"
    written = [out_dir / name for name in case.files] + [sidecar]
    full = {**record, "outputs": [p.name for p in written], "output_bytes": {name: len(data) for name, data in case.files.items()}}
    text = encode_json(full)
    try:
        if not claimed:
            imageio.atomic_write_bytes(marker, marker_record())
        if sidecar.exists():
            sidecar.unlink()  # an old commit record must not vouch for a half-replaced case
        for name, data in case.files.items():
            imageio.atomic_write_bytes(out_dir / name, data)
        imageio.atomic_write_bytes(sidecar, text)
    except BaseException:
        for path in [*written, marker]:
            remove_quietly(path)
        raise
    remove_quietly(marker)  # the sidecar is written: the case is finished; a marker left is swept next time
    return written


def clear_marker(out_dir: Path, stem: str) -> None:
    remove_quietly(marker_path(out_dir, stem))


def sweep_temporaries(out_dir: Path, stems: set[str]) -> list[Path]:
    """Remove temporary files that killed writes of these cases left (``.<output name>.<random>.tmp``).

    One listing of the folder; other cases' temporaries (another rank's, another job's) are left alone.
    """
    names = {f"{stem}{suffix}" for stem in stems for suffix in OUTPUT_SUFFIXES}
    names |= {f".{stem}{MARKER_SUFFIX}" for stem in stems}
    removed = []
    try:
        entries = list(os.scandir(out_dir))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(".tmp")):
            continue
        target = name[1:-4].rsplit(".", 1)[0]
        if target in names:
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed
