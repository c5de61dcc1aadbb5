"""Ctrl-C and SIGTERM for long command-line runs: the first one asks the loop to stop, a second one aborts.

A KeyboardInterrupt raised wherever the signal happens to land (inside a
checkpoint save, a validation pass, a tqdm thread) is hard to recover from
cleanly. :class:`StopOnInterrupt` turns the first SIGINT or SIGTERM (what a
batch scheduler, ``kill`` or ``timeout`` send) into a flag that the training
loop polls between batches, so the run stops at a clean point, scores and
saves what it has, and exits normally.

:class:`TerminateAsInterrupt` is for everything else the command line runs:
a SIGTERM raises :class:`Terminated`, a KeyboardInterrupt, so the same
``finally`` blocks that clean up after a Ctrl-C (locks, claim markers, work
folders, temporary files) run for it too, instead of the process dying where
it stands.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType


class Terminated(KeyboardInterrupt):
    """Raised for a SIGTERM; a KeyboardInterrupt so that every Ctrl-C clean-up handles it."""


class TerminateAsInterrupt:
    """Context manager: while inside, a SIGTERM raises :class:`Terminated` (main thread only)."""

    def __init__(self) -> None:
        self._previous = None
        self._installed = False

    @staticmethod
    def _handle(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    def __enter__(self) -> TerminateAsInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False


class StopOnInterrupt:
    """Context manager; ``bool(flag)`` (or ``flag()``) is True once Ctrl-C was pressed or a SIGTERM came."""

    def __init__(self, message: str = "{name} received: stopping after this batch (again to abort)") -> None:
        self.message = message
        self.requested = False
        self.terminated = False  # the stop was asked for by SIGTERM, not Ctrl-C
        self._previous: dict[int, object] = {}
        self._installed = False

    def __call__(self) -> bool:
        return self.requested

    def __bool__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        self.requested = True
        self.terminated = signum == signal.SIGTERM
        name = "SIGTERM" if self.terminated else "interrupt (Ctrl-C)"
        print(self.message.format(name=name), file=sys.stderr, flush=True)

    def __enter__(self) -> StopOnInterrupt:
        # Signal handlers can only be set from the main thread (a GUI worker runs these loops elsewhere).
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
            self._installed = True
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        if self._installed:
            for sig, previous in self._previous.items():
                signal.signal(sig, previous)
            self._installed = False
