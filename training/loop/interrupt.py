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
from typing import Any, Self


class Terminated(KeyboardInterrupt):
    """Raised for a SIGTERM; a KeyboardInterrupt so that every Ctrl-C clean-up handles it."""


class SignalScope:
    """Context-manager base: while inside, :meth:`_handle` answers :attr:`signals`; on leaving, the earlier handlers return.

    Signal handlers can only be set from the main thread: elsewhere (a GUI
    worker runs the same loops) nothing is installed and the scope is inert.
    Subclasses define :meth:`_handle`, and may choose per signal what is
    restored on leaving (:meth:`_restore_to`).
    """

    signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        raise NotImplementedError

    def _restore_to(self, signum: int, previous: Any, exc_type: type[BaseException] | None) -> Any:
        """The handler to put back for ``signum`` when the scope ends (by default the one it replaced)."""
        return previous

    def __enter__(self) -> Self:
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.signals}
        return self

    def __exit__(self, exc_type: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        for sig, previous in getattr(self, "_previous", {}).items():
            signal.signal(sig, self._restore_to(sig, previous, exc_type))
        self._previous = {}


class TerminateAsInterrupt(SignalScope):
    """Context manager: while inside, a SIGTERM raises :class:`Terminated` (main thread only)."""

    signals = (signal.SIGTERM,)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        raise Terminated


class StopOnInterrupt(SignalScope):
    """Context manager; ``bool(flag)`` (or ``flag()``) is True once Ctrl-C was pressed or a SIGTERM came."""

    def __init__(self, message: str = "{name} received: stopping after this batch (again to abort)") -> None:
        self.message = message
        self.requested = False
        self.terminated = False  # the stop was asked for by SIGTERM, not Ctrl-C

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
