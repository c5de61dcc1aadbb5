"""The tabbed dock on a laptop screen: no row squeezed, every row reachable by scrolling (real napari, shown, under Xvfb)."""

from __future__ import annotations

import os

import pytest

napari = pytest.importorskip("napari")

from qtpy.QtWidgets import QApplication, QLabel, QScrollArea, QWidget  # noqa: E402

from napari_mlffm.__main__ import WIDGETS, _raise, build_viewer  # noqa: E402
from napari_mlffm.settings import SETTINGS  # noqa: E402

pytestmark = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (run under xvfb-run)")

READOUT = "\n".join(f"line {i}: a read-out line long enough to wrap in a dock a third of a laptop screen wide" for i in range(6))


def _squeezed(widget) -> list[str]:
    """The rows (labels and the rest) that got less height than they need for their width."""
    rows = []
    for child in widget.native.findChildren(QWidget):
        if not child.isVisibleTo(widget.native) or child.width() <= 1:
            continue
        need = child.heightForWidth(child.width()) if child.hasHeightForWidth() else child.minimumSizeHint().height()
        if child.height() + 1 < need:
            rows.append(f"{type(child).__name__} {child.text()[:20] if isinstance(child, QLabel) else ''}: {child.height()} < {need} px")
    return rows


def _scroll_area(widget) -> QScrollArea | None:
    parent = widget.status.native.parentWidget()
    while parent is not None and not isinstance(parent, QScrollArea):
        parent = parent.parentWidget()
    return parent


@pytest.fixture
def desk(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_MLFFM_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    SETTINGS._settings = None
    viewer, docked = build_viewer([], (1366, 620))  # a laptop screen less the taskbar and a browser's bars
    viewer.window._qt_window.show()
    yield viewer, docked
    viewer.close()
    SETTINGS._settings = None


def test_every_tab_at_a_laptop_size_squeezes_no_row_and_scrolls_to_its_last(desk, qtbot):
    viewer, docked = desk
    review = docked["Review and export"]
    review.readout.value = READOUT  # the tallest the read-out gets: area, diameter, uncertainty, spread, border
    review.status.value = "a status line " * 12
    for name in WIDGETS:
        _raise(viewer, name)
        qtbot.wait(50)
        widget = docked[name]
        assert _squeezed(widget) == [], name
        scroll = _scroll_area(widget)
        assert scroll is not None, f"{name}: its rows are in no scroll area"
        scroll.ensureWidgetVisible(widget.status.native)
        QApplication.processEvents()
        assert not widget.status.native.visibleRegion().isEmpty(), f"{name}: its status line cannot be scrolled to"
    assert review.readout.native.height() >= review.readout.native.heightForWidth(review.readout.native.width())


def test_the_docked_widget_is_what_napari_finds_and_removes(desk):
    viewer, docked = desk
    review = docked["Review and export"]
    assert viewer.window.dock_widgets["Review and export (napari-mlffm)"] is review
    viewer.window.remove_dock_widget(review.native)  # what scripts and this project's tests call
    assert review._closed  # dock_life saw it leave its dock
