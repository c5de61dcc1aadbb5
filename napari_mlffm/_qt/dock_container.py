"""The plugin's dock widgets' top container: its rows scroll up and down when the dock is shorter than they need.

At 1366 x 768 the Review tab needs more height than its dock has, and
without a scroll area Qt squeezes the rows: the read-out lost its last lines.
magicgui's ``scrollable=True`` puts the rows in a ``QScrollArea``, but napari
docks a magicgui widget's ``.native``, which for a scrollable container is
the widget inside the scroll area, so the scroll area would be left behind.
:class:`DockContainer` makes ``.native`` the scroll area itself (what napari
docks, finds and removes); :attr:`DockContainer.body` is the widget that
holds the rows' layout.
"""

from __future__ import annotations

from magicgui.widgets import Container
from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QSizePolicy, QWidget

from . import common

_GROWING = {QSizePolicy.Policy.Expanding, QSizePolicy.Policy.MinimumExpanding, QSizePolicy.Policy.Ignored}


class _WidthFloor(QObject):
    """Keeps the scroll area at least as wide as its rows' minimum (plus the vertical scroll bar while it shows).

    Without it the scroll area's own minimum (a few dozen px) is the dock's:
    a dock opened alone, shown again after ``.visible = False``, floated or
    dragged narrower cuts its rows off on the right, with no scroll bar to
    reach them. The rows' minimum is what the dock had before it scrolled.
    """

    def __init__(self, scroll: QScrollArea) -> None:
        super().__init__(scroll)
        self._scroll = scroll
        scroll.widget().installEventFilter(self)
        scroll.verticalScrollBar().rangeChanged.connect(self.update)
        self.update()

    def update(self, *_) -> None:
        scroll = self._scroll
        body = scroll.widget()
        if body is None:
            return
        bar = scroll.verticalScrollBar()
        width = body.minimumSizeHint().width() + 2 * scroll.frameWidth()
        if bar.maximum() > 0:  # the bar shows (as needed) and takes its width from the rows
            width += bar.sizeHint().width()
        if scroll.minimumWidth() != width:
            scroll.setMinimumWidth(width)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.LayoutRequest:
            self.update()
        return False


class DockContainer(Container):
    """A vertical magicgui ``Container`` in a ``QScrollArea`` that scrolls vertically, never horizontally.

    ``.native`` is the ``QScrollArea`` (docked by napari); ``.body`` is the
    ``QWidget`` inside it whose ``layout()`` holds the rows. Call
    :meth:`finish_rows` once every row is in.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(scrollable=True, **kwargs)
        scroll = self.root_native_widget
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setObjectName("mlffmDockScroll")
        scroll.setStyleSheet("QScrollArea#mlffmDockScroll { padding: 0px; }")  # napari's QWidget padding (1 px) would widen the dock by 2 px
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        scroll.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # a click on the dock's blank space leaves the keys (arrows too) to the viewer; no extra tab stop

    @property
    def native(self) -> QScrollArea:  # what napari docks: the scroll area, not the rows inside it
        return self.root_native_widget

    @property
    def body(self) -> QWidget:
        """The widget that holds the rows (its ``layout()`` is theirs)."""
        return self.root_native_widget.widget()

    def finish_rows(self, *status_labels) -> None:
        """Rows narrow (:func:`common.fit_width`, ``status_labels`` the Labels whose text changes), at the top (a
        stretch below, as napari adds below a docked widget's rows, unless a row wants the height itself: a list),
        and the dock no narrower than the rows' minimum.

        magicgui sets the scroll area's minimum to its rows' unwrapped width
        + 20 px; the rows' real minimum (labels wrap) replaces it, and follows
        the rows and the vertical scroll bar from then on.
        """
        common.fit_width(self, *status_labels)
        layout = self.body.layout()
        rows = [layout.itemAt(i).widget() for i in range(layout.count())]
        if not any(row is not None and row.sizePolicy().verticalPolicy() in _GROWING for row in rows):
            layout.addStretch(1)
        self._width_floor = _WidthFloor(self.root_native_widget)
