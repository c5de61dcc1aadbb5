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
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QSizePolicy, QWidget

_GROWING = {QSizePolicy.Policy.Expanding, QSizePolicy.Policy.MinimumExpanding, QSizePolicy.Policy.Ignored}


class DockContainer(Container):
    """A vertical magicgui ``Container`` in a ``QScrollArea`` that scrolls vertically, never horizontally.

    ``.native`` is the ``QScrollArea`` (docked by napari); ``.body`` is the
    ``QWidget`` inside it whose ``layout()`` holds the rows. Call
    :meth:`finish_rows` once every row is in: it adds the stretch napari adds
    below a docked widget's rows (so they sit at the top, not spread over
    the dock), unless a row wants the height itself (a list).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(scrollable=True, **kwargs)
        scroll = self.root_native_widget
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)

    @property
    def native(self) -> QScrollArea:  # what napari docks: the scroll area, not the rows inside it
        return self.root_native_widget

    @property
    def body(self) -> QWidget:
        """The widget that holds the rows (its ``layout()`` is theirs)."""
        return self.root_native_widget.widget()

    def finish_rows(self) -> None:
        """Rows at the top (a stretch below, unless a row grows) and no minimum width from magicgui's scroll set-up."""
        layout = self.body.layout()
        rows = [layout.itemAt(i).widget() for i in range(layout.count())]
        if not any(row is not None and row.sizePolicy().verticalPolicy() in _GROWING for row in rows):
            layout.addStretch(1)
        self.root_native_widget.setMinimumWidth(0)  # magicgui sets its rows' unwrapped width + 20 px: the dock's width is the window's choice
