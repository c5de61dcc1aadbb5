"""Launch napari with the plugin docked and an image open.

    python -m napari_mlffm [IMAGE ...]          # default: the first bundled sample
    python -m napari_mlffm --screenshot DIR     # propose on the sample, save screenshots, quit (for docs)
"""

from __future__ import annotations

import argparse
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


def screenshots(folder: Path) -> None:
    """Propose on the first sample, choose a proposal, and save window screenshots into ``folder``."""
    import napari
    from qtpy.QtWidgets import QApplication

    viewer, docked = build_viewer([])
    viewer.window._qt_window.resize(1500, 900)
    folder.mkdir(parents=True, exist_ok=True)
    propose = docked["Propose masks"]
    worker = propose.start()
    while propose.worker is not None:
        QApplication.processEvents()
    viewer.layers[-3].visible = True  # proposals
    viewer.window.screenshot(str(folder / "propose.png"), canvas_only=False)
    viewer.layers[-3].visible = False
    viewer.layers[-2].visible = True  # uncertainty
    review = docked["Review and export"]
    review.update_readout()
    viewer.window.screenshot(str(folder / "review.png"), canvas_only=False)
    viewer.close()
    del worker, napari


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
