"""Output files: checked before the long work, claimed by one process at a time, never replaced silently.

* :func:`check_output_file` refuses, before any data is read or any epoch
  runs, an output whose folder is missing, is not a folder, or cannot be
  written to (probed by creating and removing a file there), an output that
  is itself a folder, and an existing output without ``overwrite``.
* :class:`ExclusiveLock` is a lock file created with ``O_CREAT | O_EXCL``:
  two processes can never both hold it. It records the holder's pid and
  host; a lock whose holder is gone (a killed run on this machine) is stale
  and is taken over, with a message. It is removed when released. A lock
  record naming a pid no process can have (not an int, or outside
  1..2**31-1) on this host is stale too. Something at the lock's path that
  is not a regular file (a folder, a link, a FIFO) was not made by this
  program: it is refused in one line (:class:`LockedError`), never moved or
  deleted.
* :func:`display` turns any path, including one whose name is not valid
  UTF-8 (surrogate-escaped by Python), into a printable string;
  :func:`one_line` also escapes control characters (newlines, escapes), so
  a path never splits a one-line message or drives the terminal.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
import uuid
from pathlib import Path
from typing import Callable

from model.files.checkpoint import CheckpointError, read_checkpoint_meta
from model.files.file_access import file_kind


def display(path: str | os.PathLike) -> str:
    """``path`` as text that can always be printed or written as UTF-8.

    Bytes of a name that are not valid UTF-8 are shown as ``\\xNN`` escapes,
    so the message still names the file.
    """
    text = os.fsdecode(os.fspath(path))
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def one_line(path: str | os.PathLike) -> str:
    """``path`` as :func:`display` shows it, quoted with Python's escapes (``'bad\\x1b[2J\\nname.png'``) when it
    holds a character that is not printable: a control character (C0, DEL, C1), a line separator."""
    text = display(path)
    return text if text.isprintable() else repr(text)


def escape_unprintable(text: str) -> str:
    """``text`` with each character that is not printable written as its Python escape (``\\n``, ``\\x1b``)."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def check_output_file(path: Path, overwrite: bool, option: str = "-o") -> None:
    """Refuse an output file that could not be written at the end of a run, before the run starts.

    Raises FileExistsError (exists, no ``overwrite``), FileNotFoundError
    (missing folder), NotADirectoryError / IsADirectoryError (wrong kind of
    path) or PermissionError (the folder cannot be written to); each message
    names the path and the option.
    """
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise IsADirectoryError(f"{display(path)}: is a folder; {option} needs a file name")
    if not folder.exists():
        raise FileNotFoundError(f"{display(folder)}: folder of {option} {display(path)} does not exist (create it first)")
    if not folder.is_dir():
        raise NotADirectoryError(f"{display(folder)}: not a folder, so {option} {display(path)} cannot be written")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{display(path)}: already exists (use --overwrite to replace it)")
    _probe(folder, f".{path.name}", f"cannot write {option} {display(path)} here")


def check_writable_folder(folder: Path, option: str = "-o") -> None:
    """PermissionError (one line naming ``folder`` and ``option``) unless a file can be created in the existing ``folder``."""
    _probe(Path(folder), "", f"{option} cannot be written to")


def _probe(folder: Path, stem: str, what: str) -> None:
    probe = folder / f"{stem}.probe-{os.getpid()}.tmp"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise PermissionError(f"{one_line(folder)}: {what} ({reason})") from None
    os.close(fd)
    os.unlink(probe)


def new_run_id() -> str:
    """A random id recorded in every checkpoint a run writes (its best and its resume state)."""
    return uuid.uuid4().hex[:16]


def run_id_of(path: Path) -> str | None:
    """The run id in a checkpoint's provenance, read from its header; None if it has none or is unreadable."""
    try:
        provenance = read_checkpoint_meta(path).get("provenance")
    except (CheckpointError, OSError, ValueError):
        return None
    run_id = provenance.get("run_id") if isinstance(provenance, dict) else None
    return run_id if isinstance(run_id, str) else None


def lock_path_for(output: Path) -> Path:
    """The lock file that guards ``output``: ``.<name>.lock`` beside it."""
    output = Path(output)
    return output.with_name(f".{output.name}.lock")


STALE_TAG = 8
"""Characters of the tag a stale lock's name takes while it is moved aside (``<lock>.stale-<tag>``)."""


class LockedError(OSError):
    """Another live process holds the lock; the message names it and the file."""


class ExclusiveLock:
    """A lock file created with ``O_EXCL``; use as a context manager.

    ``wait`` seconds: how long to retry while another process holds it
    (0 = fail at once with :class:`LockedError`). A lock left by a process
    that no longer runs on this host is stale: it is removed and taken, and
    ``on_stale`` is told.
    """

    def __init__(self, path: Path, what: str, wait: float = 0.0, on_stale: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self.what = what
        self.wait = wait
        self.on_stale = on_stale
        self._token = f"{os.getpid()}-{uuid.uuid4().hex}"
        self._held = False

    def __enter__(self) -> "ExclusiveLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "token": self._token, "since": time.time()})
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and holder.get("foreign"):
                    raise LockedError(
                        f"{display(self.path)}: is {holder['foreign']}, not a lock file of this program, "
                        f"so {self.what} cannot be locked; remove it if nothing uses it"
                    ) from None
                if holder is not None and not _alive(holder):
                    self._break_stale(holder)
                    continue
                if time.monotonic() >= deadline:
                    raise LockedError(self._busy_message(holder)) from None
                time.sleep(0.02)
                continue
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(record)
                    handle.flush()
                    os.fsync(handle.fileno())
            except BaseException:  # a full disk: no lock without its record is left to block the next run
                self.path.unlink(missing_ok=True)
                raise
            self._held = True
            return

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        holder = self._holder()
        if holder is not None and holder.get("token") == self._token:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def _holder(self) -> dict | None:
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return None
        except OSError:
            mode = stat.S_IFREG  # cannot tell: read it below, and judge it as damaged if that fails
        if not stat.S_ISREG(mode):  # never read a FIFO (it would block) or follow a link
            return {"pid": None, "host": None, "foreign": "a symbolic link" if stat.S_ISLNK(mode) else file_kind(mode)}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            # Being written this instant, or damaged: judge it by its age.
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return None
            return {"pid": None, "host": None, "damaged": True, "age": age}
        return data if isinstance(data, dict) else {"pid": None, "host": None, "damaged": True, "age": 1e9}

    def _break_stale(self, holder: dict) -> None:
        # Rename first so that two processes breaking the same stale lock cannot remove each other's new one.
        aside = self.path.with_name(f"{self.path.name}.stale-{self._token[-STALE_TAG:]}")  # short: it fits where the lock does
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        taken = self._holder_of(aside)
        if taken is not None and taken.get("token") != holder.get("token"):
            # Another process took the stale lock first and this moved its fresh lock: put it back.
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return
        aside.unlink(missing_ok=True)
        if self.on_stale is not None:
            pid = holder.get("pid")
            self.on_stale(f"removed a stale lock {display(self.path)} (process {pid} no longer runs)")

    @staticmethod
    def _holder_of(path: Path) -> dict | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _busy_message(self, holder: dict | None) -> str:
        pid = (holder or {}).get("pid")
        who = f"process {pid} on {holder.get('host')}" if pid else "another process"
        return (
            f"{display(self.path)}: {who} is writing {self.what}; wait for it to finish "
            f"(if no such process runs, delete this lock file)"
        )


MAX_PID = 2**31 - 1
"""Largest pid a process can have (pid_t is a signed 32-bit int; Linux stops at 2**22)."""


def _alive(holder: dict) -> bool:
    """False only when the holder is certainly gone: a pid on this host that no longer exists, or a damaged lock over a minute old."""
    if holder.get("damaged"):
        return holder.get("age", 0) < 60
    pid, host = holder.get("pid"), holder.get("host")
    if host != socket.gethostname():
        return True  # another machine (a shared folder): cannot tell, so respect it
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid <= MAX_PID:
        # This program writes its own pid; no process here has this one (and 0 or -1 would make os.kill
        # signal a whole process group, 2**70 raise OverflowError): the record is damaged, the lock stale.
        return False
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill would terminate the process there
        return True
    return process_exists(pid)


def process_exists(pid: int) -> bool:
    """Whether a live process on this host (POSIX) has ``pid`` in 1..MAX_PID: False for none or a zombie,
    True for another user's (it exists, though it may not be signalled)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    fields = _proc_stat(pid)
    return fields is None or fields[0] != "Z"


def process_started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, field 22 of /proc/<pid>/stat), or None where unreadable;
    with the pid, it tells a process from a later one that took its pid."""
    fields = _proc_stat(pid)
    try:
        return int(fields[19]) if fields is not None else None
    except (IndexError, ValueError):
        return None


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def check_run_outputs(output: Path, state: Path, resume: Path | None, overwrite: bool, epochs: int | None = None) -> None:
    """``train`` / ``finetune``: refuse, before any data is read, to replace a file that is not this run's own.

    ``state`` is the resume file the run will write beside ``output``.
    Without ``resume``, an existing ``output`` or ``state`` is refused (the
    latter holds an unfinished run). With ``resume``, each may exist only if
    the run in ``resume`` wrote it (the same run id), and a finished model
    (the run reached its planned epochs) is not trained further into
    (``epochs`` beyond the ones done) in place. ``overwrite``
    lifts these checks, never the folder checks.
    """
    output, state = Path(output), Path(state)
    check_output_file(output, overwrite=True)
    if resume is not None and output.resolve() == Path(resume).resolve():
        raise ValueError(
            f"{display(output)}: -o is the resume file itself; -o names the model file the run writes beside it "
            f"(its resume file is then <model>.resume.mlffm)"
        )
    if overwrite:
        return
    if resume is None:
        if output.exists():
            raise FileExistsError(f"{display(output)}: already exists (use --overwrite to replace it, or --resume)")
        if state.exists():
            raise FileExistsError(
                f"{display(state)}: holds the state of an unfinished run on {display(output)}; "
                f"continue it with --resume {display(state)}, or use --overwrite to start afresh"
            )
        return
    ours = run_id_of(Path(resume))
    for target in (output, state):
        if not target.exists() or target.resolve() == Path(resume).resolve():
            continue
        if ours is None or run_id_of(target) != ours:
            raise FileExistsError(
                f"{display(target)}: already exists and was not written by the run in {display(resume)}; "
                "--resume replaces only its own run's files (use another -o, or --overwrite)"
            )
    done = _finished_epochs(Path(resume))
    if output.exists() and done is not None and (epochs is None or epochs > done):
        raise FileExistsError(
            f"{display(output)}: the finished model of the run in {display(resume)} (it reached its planned epochs); "
            "resuming would replace it (use another -o, or --overwrite)"
        )


def _finished_epochs(state: Path) -> int | None:
    """The epochs done by the run in ``state`` if it reached its planned number (it finished), else None."""
    try:
        meta = read_checkpoint_meta(state)
    except (CheckpointError, OSError, ValueError):
        return None
    training, provenance = meta.get("training"), meta.get("provenance")
    if not isinstance(training, dict) or not isinstance(provenance, dict):
        return None
    done, planned = training.get("epoch"), provenance.get("planned_epochs")
    finished = isinstance(done, int) and isinstance(planned, int) and done >= planned
    return done if finished else None
