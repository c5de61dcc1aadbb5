"""The tabbed dock on a laptop screen: no row squeezed, every row reachable by scrolling (real napari, shown, under Xvfb)."""

from __future__ import annotations

import os

import pytest

napari = pytest.importorskip("napari")

from qtpy.QtWidgets import QApplication, QLabel, QScrollArea, QWidget  # noqa: E402

from napari_mlffm.__main__ import DOCK_WIDTH_FRACTION, WIDGETS, _raise, build_viewer  # noqa: E402
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


def _cut_off(widget) -> int:
    """How many px of the rows' minimum width the scroll area's viewport cannot show (there is no horizontal bar)."""
    return max(0, widget.body.minimumSizeHint().width() - widget.native.viewport().width())


def test_a_dock_opened_alone_shown_again_or_dragged_narrow_cuts_no_row_off(tmp_path, monkeypatch, qtbot):
    """The Plugins menu's way: one widget in a dock of its own. Its scroll area's own minimum (a few dozen
    px) must not become the dock's: opened, hidden and shown (``.visible``), or dragged narrower, the dock
    stays as wide as its rows need (as before the rows scrolled), since there is no horizontal scroll bar."""
    from qtpy.QtCore import Qt

    monkeypatch.setenv("NAPARI_MLFFM_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    SETTINGS._settings = None
    viewer = napari.Viewer(show=True)
    try:
        main = viewer.window._qt_window
        main.resize(1366, 768)
        for name in ("Review and export", "Cases"):
            dock, widget = viewer.window.add_plugin_dock_widget("napari-mlffm", name)
            qtbot.wait(50)
            assert _cut_off(widget) == 0, f"{name} opened alone"
            widget.visible = False
            qtbot.wait(20)
            widget.visible = True
            qtbot.wait(50)
            assert _cut_off(widget) == 0, f"{name} hidden and shown again"
            main.resizeDocks([dock], [120], Qt.Orientation.Horizontal)  # the splitter dragged to the right
            qtbot.wait(50)
            assert _cut_off(widget) == 0, f"{name} dragged narrower"
    finally:
        viewer.close()
        SETTINGS._settings = None


def test_the_tabbed_dock_is_no_wider_than_its_widest_rows(desk):
    """The scroll area adds no width of its own (napari's 1 px padding on every QWidget would add 2 px)."""
    viewer, docked = desk
    for name in WIDGETS:
        scroll = docked[name].native
        assert scroll.viewport().geometry().left() == 0 and scroll.frameWidth() == 0, name
    widest = max(docked[name].body.minimumSizeHint().width() for name in WIDGETS)
    dock = docked["Propose masks"].native.parentWidget()
    assert dock.width() <= max(widest, int(1366 * DOCK_WIDTH_FRACTION))  # the window's share, or the rows' minimum


def test_a_click_on_the_docks_blank_space_leaves_the_arrow_keys_to_the_viewer(desk, qtbot):
    """The scroll area takes no focus: a click below the rows does not make Up and Down scroll the dock
    instead of reaching napari (nor add a tab stop)."""
    from qtpy.QtCore import QPoint, Qt

    viewer, docked = desk
    pressed = []
    viewer.bind_key("Up", lambda _viewer: pressed.append("Up"), overwrite=True)
    _raise(viewer, "Propose masks")
    widget = docked["Propose masks"]
    body = widget.body
    blank = QPoint(body.width() // 2, body.height() - 5)  # below the rows (the stretch)
    assert body.childAt(blank) is None
    main = viewer.window._qt_window
    main.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is main)
    viewer.window._qt_viewer.canvas.native.setFocus()
    qtbot.mouseClick(body, Qt.MouseButton.LeftButton, pos=blank)
    focused = QApplication.focusWidget()
    assert focused is not widget.native
    qtbot.keyClick(focused or viewer.window._qt_window, Qt.Key.Key_Up)
    assert pressed == ["Up"]


def test_path_fields_keep_room_for_the_path_beside_their_choose_button(desk, qtbot):
    """magicgui's "Choose directory" button took most of a 318 px dock's row, leaving the path itself about 40 px."""
    from magicgui.widgets import FileEdit

    viewer, docked = desk
    for name in WIDGETS:
        _raise(viewer, name)
        qtbot.wait(50)
        for row in docked[name]:
            if isinstance(row, FileEdit) and row.visible:
                assert row.line_edit.native.width() >= 100, (name, row.label, row.line_edit.native.width())


# after the desk tests: a viewer of make_napari_viewer's before build_viewer's own registers the plugin twice
@pytest.mark.parametrize("name", ["Cases", "Review and export"])
def test_a_closed_widget_torn_down_by_the_garbage_collector_does_not_close_again(make_napari_viewer, qtbot, name, tmp_path, monkeypatch):
    """napari keeps a closed dock's widget, parentless; Python's garbage collector may clear its attributes before Qt
    destroys it, and ``destroyed`` then reached ``_on_destroyed`` a second time (AttributeError: no ``model``), which
    PyQt turns into an abort of napari."""
    monkeypatch.setenv("NAPARI_MLFFM_CONFIG_DIR", str(tmp_path / "config"))
    SETTINGS._settings = None
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-mlffm", name)
    viewer.window.remove_dock_widget(dock)  # what the dock's X does: closed once here
    assert widget._closed
    native = widget.native
    with qtbot.waitSignal(native.destroyed, timeout=5000):
        vars(widget).clear()  # what the collector's clearing of a reference cycle does
        native.deleteLater()
    SETTINGS._settings = None
