"""Progress inside a dock widget: a plain QProgressBar and a "step k/n, case i/m" line, throttled.

Used in place of napari's activity progress during a run: that one lives in
the viewer's status bar and, with software OpenGL, makes the window redraw
while the run shares the CPU with it. This one repaints two small widgets,
at most ``MIN_INTERVAL_S`` apart (the first and the last update always show).
"""

from __future__ import annotations

import time

from qtpy.QtWidgets import QLabel, QProgressBar, QSizePolicy, QVBoxLayout, QWidget

MIN_INTERVAL_S = 0.25


def progress_text(step: int, steps: int, case: int | None = None, cases: int | None = None) -> str:
    """'step 3/5' or 'step 3/5, case 2/10' (1-based counts)."""
    text = f"step {step}/{steps}"
    if case is not None and cases is not None:
        text += f", case {case}/{cases}"
    return text


class InlineProgress(QWidget):
    """A progress bar over the whole run and a line saying where it is; hidden when idle."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setTextVisible(False)
        self.bar.setMaximumHeight(10)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.bar)
        layout.addWidget(self.label)
        self._last = 0.0
        self.updates_shown = 0  # how many updates reached the screen (the throttle's effect; read by tests and benchmarks)
        self.setVisible(False)

    def begin(self, text: str = "starting...", total: int = 0) -> None:
        """Show the bar at 0 (``total`` 0: busy, no known length)."""
        self.bar.setRange(0, max(int(total), 0))
        self.bar.setValue(0)
        self.label.setText(text)
        self._last = 0.0
        self.updates_shown = 0
        self.setVisible(True)

    def set(self, done: int, total: int, text: str, force: bool = False) -> bool:
        """Move to ``done`` of ``total``; shown only if ``MIN_INTERVAL_S`` has passed (or ``force``, or at the end)."""
        now = time.monotonic()
        if not force and done < total and now - self._last < MIN_INTERVAL_S:
            return False
        self._last = now
        if self.bar.maximum() != total:
            self.bar.setRange(0, max(int(total), 0))
        self.bar.setValue(min(int(done), int(total)) if total > 0 else 0)
        self.label.setText(text)
        self.updates_shown += 1
        return True

    def finish(self, text: str | None = None) -> None:
        """End of a run: hide the bar, keep nothing on screen (the widget's status line says how it ended)."""
        if text is not None:
            self.label.setText(text)
        self.setVisible(False)
