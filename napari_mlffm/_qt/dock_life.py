"""When a dock widget's life ends: destroyed with the viewer, or closed by its dock's X.

napari's ``remove_dock_widget`` (what the X of a dock calls) takes the widget
out of its dock with ``setParent(None)`` and does not destroy it, so Qt's
``destroyed`` never comes and a widget that listens only for it goes on
answering its shortcuts and landing its runs' results after it was closed.
:func:`watch_closing` calls the widget's ``_on_destroyed`` once, on whichever
comes first; :func:`bind_key` binds a viewer shortcut that does nothing once
the widget is closed (a dock opened again binds the key anew).
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QDockWidget, QMainWindow, QWidget


class _RemovalWatch(QObject):
    """Calls ``on_removed`` once when ``widget``, or a container between it and its dock, loses its parent.

    Only the widgets below the dock are watched (not the dock or the main
    window, whose many events would all pass through the filter).
    """

    def __init__(self, widget: QWidget, on_removed: Callable[[], None]) -> None:
        super().__init__(widget)
        self._on_removed = on_removed
        self._watched: list[QWidget] = []
        self._done = False
        self._watch_up(widget)

    def _watch_up(self, widget: QWidget | None) -> None:
        while widget is not None and not isinstance(widget, (QDockWidget, QMainWindow)):
            if not any(widget is seen for seen in self._watched):
                widget.installEventFilter(self)
                self._watched.append(widget)
            widget = widget.parentWidget()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.ParentChange and not self._done and isinstance(watched, QWidget):
            if watched.parentWidget() is None:
                self._done = True
                self._on_removed()
            else:
                self._watch_up(watched)  # put into a container or a dock: watch the way up to it
        return False


def watch_closing(widget) -> None:
    """Call ``widget._on_destroyed()`` once, when its Qt widget is destroyed or taken out of its dock.

    ``widget`` is a magicgui widget (``.native``) with an ``_on_destroyed`` method
    and a ``_closed`` attribute, which is True from then on.
    """
    done = []  # in the closure, not on the widget: Python's garbage collector may clear the widget's attributes
    # before Qt destroys its native widget, and ``destroyed`` then comes a second time to a widget with none

    def closing(*_):
        if done:
            return
        done.append(True)
        try:
            widget._on_destroyed()
        except (AttributeError, RuntimeError):  # torn down already (attributes cleared, Qt objects deleted): nothing left to undo
            if vars(widget):  # a real error of a whole widget is not hidden
                raise
        widget._closed = True

    widget.native.destroyed.connect(closing)
    widget._removal_watch = _RemovalWatch(widget.native, closing)


def bind_key(viewer, key: str, widget, action: Callable[[], object]) -> None:
    """Bind ``key`` in the viewer to ``action``, silent once ``widget`` is closed (its ``_closed``)."""
    viewer.bind_key(key, lambda _viewer: None if getattr(widget, "_closed", False) else action(), overwrite=True)
