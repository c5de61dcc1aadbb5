"""Launch napari with the plugin docked and an image open.

    python -m napari_mlffm [IMAGE ...]          # default: the first bundled sample
    python -m napari_mlffm --screenshot DIR     # propose on the sample, save screenshots, quit (for docs)
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from .sample_data import SAMPLES

PLUGIN = "napari-mlffm"


def build_viewer(images: list[str]):
    import napari

    viewer = napari.Viewer(title="napari-mlffm")
    for image in images or [str(sorted(SAMPLES.glob("*.jpg"))[0])]:
        viewer.open(image, plugin=PLUGIN)
    docked = {}
    for name in ("Propose masks", "Review and export", "Cases", "Fine-tune"):
        _, docked[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=name == "Fine-tune")
    return viewer, docked


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
        if dock.windowTitle().startswith(name):
            dock.raise_()
    QApplication.processEvents()


def screenshots(folder: Path) -> None:
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
            _screenshots(folder)
        finally:
            if saved is None:
                os.environ.pop("NAPARI_MLFFM_CONFIG_DIR", None)
            else:
                os.environ["NAPARI_MLFFM_CONFIG_DIR"] = saved
            SETTINGS._settings = None


def _screenshots(folder: Path) -> None:
    viewer, docked = build_viewer([])
    viewer.window._qt_window.resize(1500, 950)
    folder.mkdir(parents=True, exist_ok=True)
    propose = docked["Propose masks"]
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
    review.start.value = "majority"
    review.apply_start()
    review.pixel_size.value = 0.02
    _raise(viewer, "Review and export")
    _settle()
    viewer.window.screenshot(str(folder / "review.png"), canvas_only=False)
    cases = docked["Cases"]
    cases.open_folder(SAMPLES)
    cases.start()
    _wait(cases)
    cases.sort_most_doubtful_first()
    _raise(viewer, "Cases")
    _settle()
    viewer.window.screenshot(str(folder / "cases.png"), canvas_only=False)
    viewer.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m napari_mlffm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="*")
    parser.add_argument("--screenshot", type=Path, metavar="DIR", help="save screenshots of the widgets in use, then quit")
    args = parser.parse_args()
    if args.screenshot:
        screenshots(args.screenshot)
        return
    import napari

    build_viewer(args.images)
    napari.run()


if __name__ == "__main__":
    main()
