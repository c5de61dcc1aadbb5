"""Launch napari with the plugin docked and an image open.

    python -m napari_mlffm [IMAGE ...]          # default: the first bundled sample
    python -m napari_mlffm --screenshot DIR     # propose on the sample, save screenshots, quit (for docs)
    python -m napari_mlffm --screenshot DIR --window 1920x1080   # the same at another window size

The five widgets share one dock on the right, as tabs (Propose masks,
Review and export, Refine with clicks, Cases, Fine-tune): one step of the review at a time, and
the canvas keeps most of the window. The window opens at most as large as
the screen's free area.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from .sample_data import SAMPLES

PLUGIN = "napari-mlffm"
WIDGETS = ("Propose masks", "Review and export", "Refine with clicks", "Cases", "Fine-tune")
TAB_TITLES = {"Propose masks": "Propose", "Review and export": "Review", "Refine with clicks": "Refine", "Cases": "Cases", "Fine-tune": "Fine-tune"}  # short, so the tabs are not elided
DOCK_WIDTH_FRACTION = 0.23  # of the window: the tabbed dock's width (napari's layer controls take 320 px on the left)
DOCK_WIDTH_PX = (310, 440)  # ... kept within these bounds


def build_viewer(images: list[str], window: tuple[int, int] | None = None):
    """napari with the images open and the five widgets as tabs of one right-hand dock.

    ``window`` (width, height) in px; None fits the window to the screen's
    free area (at most 1600 x 1000).
    """
    import napari

    viewer = napari.Viewer(title="napari-mlffm")
    for image in images or [str(sorted(SAMPLES.glob("*.jpg"))[0])]:
        open_image(viewer, image)
    docked, docks = {}, []
    for index, name in enumerate(WIDGETS):
        dock, docked[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=index > 0)
        dock.setWindowTitle(TAB_TITLES[name])
        docks.append(dock)
    fit_window(viewer, docks, window)
    return viewer, docked


def open_image(viewer, image: str) -> bool:
    """Open one image with this plugin's reader; one line (stderr and a napari warning) and False when it cannot be."""
    from napari.utils.notifications import show_warning

    from training.data.imageio import ImageReadError, read_image

    path = Path(image)
    try:
        if not path.is_file():
            raise ImageReadError(f"{image}: {'a folder, not an image (open it in Cases)' if path.is_dir() else 'no such file'}")
        read_image(path)  # the reader's own checks, with a message that names the file and says what is wrong
        viewer.open(image, plugin=PLUGIN)
        return True
    except (ImageReadError, OSError, ValueError) as err:
        line = str(err).strip().splitlines()[0] if str(err).strip() else f"{image}: cannot be opened"
        show_warning(f"skipped {line}")  # in the viewer, and on the terminal before the window is up
        return False


def fit_window(viewer, docks, window: tuple[int, int] | None = None) -> None:
    """Size the window (to ``window`` or to the screen) and give the tabbed dock a fixed share of its width."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    main = viewer.window._qt_window
    if window is None:
        screen = QApplication.primaryScreen()
        free = screen.availableGeometry() if screen is not None else None
        width = min(1600, free.width() - 20) if free is not None else 1366
        height = min(1000, free.height() - 40) if free is not None else 768
        window = (width, height)
    from qtpy.QtCore import QTimer

    main.resize(*window)
    width = int(min(max(window[0] * DOCK_WIDTH_FRACTION, DOCK_WIDTH_PX[0]), DOCK_WIDTH_PX[1]))

    def arrange() -> None:
        docks[0].raise_()  # the Propose tab in front
        main.resizeDocks(docks[:1], [width], Qt.Orientation.Horizontal)

    arrange()
    QTimer.singleShot(0, arrange)  # again once the window is shown and laid out


def layout_report(viewer) -> dict:
    """Window, canvas and dock sizes in px (what the screenshot test checks)."""
    from qtpy.QtWidgets import QDockWidget

    main = viewer.window._qt_window
    canvas = viewer.window._qt_viewer.canvas.native
    shown = [d for d in main.findChildren(QDockWidget) if d.isVisible() and not d.visibleRegion().isEmpty()]  # tabs behind others excluded
    docks = {d.windowTitle(): [d.width(), d.height()] for d in shown}
    return {"window": [main.width(), main.height()], "canvas": [canvas.width(), canvas.height()], "docks": docks}


def _wait(widget) -> None:
    """Run Qt's event loop until the widget's run ends.

    A blocking loop with a slow poll, not a busy ``processEvents`` loop, which
    would hold the GIL and slow the worker (and the timing it reports) down.
    """
    from qtpy.QtCore import QEventLoop, QTimer

    loop, timer = QEventLoop(), QTimer()
    timer.timeout.connect(lambda: widget.worker is None and loop.quit())
    timer.start(50)
    if widget.worker is not None:
        loop.exec()
    timer.stop()


def _settle(seconds: float = 1.0) -> None:
    """Let Qt and the canvas catch up before a screenshot."""
    import time

    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def _raise(viewer, name: str) -> None:
    """Bring a (possibly tabbed) dock widget to the front."""
    from qtpy.QtWidgets import QApplication, QDockWidget

    for dock in viewer.window._qt_window.findChildren(QDockWidget):
        if dock.windowTitle().startswith(TAB_TITLES.get(name, name)):
            dock.raise_()
    QApplication.processEvents()


def screenshots(folder: Path, window: tuple[int, int] = (1366, 768)) -> None:
    """Propose on the first sample, review it, triage the sample folder; save window screenshots into ``folder``.

    Runs with a fresh install's settings (a temporary settings folder), so
    the pictures show the defaults, not this machine's saved choices.
    """
    from .settings import SETTINGS

    saved = os.environ.get("NAPARI_MLFFM_CONFIG_DIR")
    with tempfile.TemporaryDirectory() as config:
        os.environ["NAPARI_MLFFM_CONFIG_DIR"] = config
        SETTINGS._settings = None
        try:
            _screenshots(folder, window)
        finally:
            if saved is None:
                os.environ.pop("NAPARI_MLFFM_CONFIG_DIR", None)
            else:
                os.environ["NAPARI_MLFFM_CONFIG_DIR"] = saved
            SETTINGS._settings = None


def _screenshots(folder: Path, window: tuple[int, int]) -> None:
    viewer, docked = build_viewer([], window)
    folder.mkdir(parents=True, exist_ok=True)
    propose = docked["Propose masks"]
    _raise(viewer, "Propose masks")
    propose.start()
    _wait(propose)
    name = propose.image.value.name
    viewer.layers[f"{name} proposals"].visible = True
    viewer.layers[f"{name} mask"].visible = False
    viewer.dims.set_current_step(0, 2)
    _settle()
    viewer.window.screenshot(str(folder / "propose.png"), canvas_only=False)
    viewer.layers[f"{name} proposals"].visible = False
    viewer.layers[f"{name} mask"].visible = True
    viewer.layers[f"{name} uncertainty"].visible = True
    review = docked["Review and export"]
    review.start.value = "consensus"
    review.apply_start()
    review.step_outline(-1)  # Shift-G: the whole outline one level looser
    review.pixel_size.value = 0.02
    _raise(viewer, "Review and export")
    _settle()
    review.native.ensureWidgetVisible(review.status.native)  # at 1366 x 768 the tab scrolls: show the read-out down to the status line
    _settle(0.3)
    viewer.window.screenshot(str(folder / "review.png"), canvas_only=False)
    _refine_screenshot(viewer, docked["Refine with clicks"], propose.image.value, folder / "refine.png")
    _box_screenshot(viewer, docked["Refine with clicks"], propose.image.value, folder / "box.png")
    cases = docked["Cases"]
    cases.open_folder(SAMPLES)
    cases.start()
    _wait(cases)
    cases.sort_most_doubtful_first()
    _raise(viewer, "Cases")
    _settle()
    viewer.window.screenshot(str(folder / "cases.png"), canvas_only=False)
    (folder / "layout.json").write_text(json.dumps(layout_report(viewer), indent=2))
    viewer.close()


def _refine_screenshot(viewer, refine, image_layer, path: Path) -> None:
    """One skin click just inside the mask's edge, refined, as the annotator would do it."""
    import numpy as np
    from scipy import ndimage

    mask = np.asarray(viewer.layers[f"{image_layer.name} mask"].data) > 0
    depth = ndimage.distance_transform_edt(mask)
    rows, cols = np.nonzero((depth >= 10) & (depth < 12))
    refine.image.value = image_layer
    points = refine.prompts_layer()
    _raise(viewer, "Refine with clicks")
    if rows.size:
        refine.positive.value = False
        points.add([rows[0], cols[0]])  # the click itself starts the refine
        _wait(refine)
        points.selected_data = set()
    _settle()
    viewer.window.screenshot(str(path), canvas_only=False)


def _box_screenshot(viewer, refine, image_layer, path: Path) -> None:
    """The clicks undone, then a box dragged around the mask's largest part with a margin, refined."""
    import numpy as np
    from scipy import ndimage

    from model.inputs.box import Box

    points = refine.prompts_layer()
    while len(points.data):
        refine.undo_click()
        _wait(refine)
    mask = np.asarray(viewer.layers[f"{image_layer.name} mask"].data) > 0
    parts, count = ndimage.label(mask)
    if count:
        largest = parts == 1 + int(np.argmax(ndimage.sum(mask, parts, range(1, count + 1))))
        box = Box.around(largest).grown(0.08)
        corners = np.array([[box.top, box.left], [box.bottom, box.right]])
        boxes = refine.box_layer()
        boxes.add_rectangles(np.clip(corners, 0, np.array(mask.shape) - 1))  # the new box starts the refine
        _wait(refine)
        boxes.selected_data = set()
    _settle()
    viewer.window.screenshot(str(path), canvas_only=False)


MAX_IMAGES = 50
"""Most images the launcher opens as layers (50 took about 27 s; 500 gave no window in 400 s)."""


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m napari_mlffm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="*")
    parser.add_argument("--screenshot", type=Path, metavar="DIR", help="save screenshots of the widgets in use (and layout.json), then quit")
    parser.add_argument("--window", type=_window_size, metavar="WxH", help="window size in px (default: fit the screen; 1366x768 for --screenshot)")
    args = parser.parse_args()
    if args.screenshot:
        if args.screenshot.exists() and not args.screenshot.is_dir():
            parser.error(f"--screenshot {args.screenshot}: is a file; give a folder for the screenshots")
        try:
            args.screenshot.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            parser.error(f"--screenshot {args.screenshot}: cannot be made ({err.strerror or err})")
        screenshots(args.screenshot, args.window or (1366, 768))
        return
    if len(args.images) > MAX_IMAGES:  # each is a layer: hundreds make napari unusable for minutes
        parser.error(f"{len(args.images)} images: open at most {MAX_IMAGES} this way; for a folder of cases, open it in the Cases dock")
    import napari

    build_viewer(args.images, args.window)
    napari.run()


def _window_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give the window size as WIDTHxHEIGHT, e.g. 1366x768") from None
    if not (320 <= width <= 10000 and 240 <= height <= 10000):
        raise argparse.ArgumentTypeError(f"{text!r}: width 320-10000 and height 240-10000 px")
    return width, height


if __name__ == "__main__":
    main()
