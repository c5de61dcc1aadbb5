"""Ctrl-C for long command-line runs: the first one asks the loop to stop, a second one aborts.

A KeyboardInterrupt raised wherever the signal happens to land (inside a
checkpoint save, a validation pass, a tqdm thread) is hard to recover from
cleanly. :class:`StopOnInterrupt` turns the first SIGINT into a flag that the
training loop polls between batches, so the run stops at a clean point,
scores and saves what it has, and exits normally.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType


class StopOnInterrupt:
    """Context manager; ``bool(flag)`` (or ``flag()``) is True once Ctrl-C was pressed."""

    def __init__(self, message: str = "interrupt received: stopping after this batch (Ctrl-C again to abort)") -> None:
        self.message = message
        self.requested = False
        self._previous = None
        self._installed = False

    def __call__(self) -> bool:
        return self.requested

    def __bool__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(self.message, file=sys.stderr, flush=True)

    def __enter__(self) -> StopOnInterrupt:
        # Signal handlers can only be set from the main thread (a GUI worker runs these loops elsewhere).
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
