"""``python -m napari_mlffm --screenshot DIR``: the README's screenshots, made by a real, shown napari window."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

CANVAS_SHARE = 0.5  # the canvas keeps most of the window's width


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (run under xvfb-run)")
@pytest.mark.parametrize("window", [(1366, 768), (1920, 1080)])
def test_screenshot_mode_proposes_reviews_triages_and_the_canvas_keeps_most_of_the_width(tmp_path, window):
    folder = tmp_path / "shots"
    env = {**os.environ, "NAPARI_MLFFM_CONFIG_DIR": str(tmp_path / "config"), "XDG_DATA_HOME": str(tmp_path / "data")}
    saved = tmp_path / "config" / "settings.json"
    saved.parent.mkdir()
    saved.write_text('{"samples": 3, "steps": 2}')  # this machine's choices: not what the docs show, and left alone
    command = [sys.executable, "-m", "napari_mlffm", "--screenshot", str(folder), "--window", f"{window[0]}x{window[1]}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert saved.read_text() == '{"samples": 3, "steps": 2}'
    layout = json.loads((folder / "layout.json").read_text())
    assert layout["window"][0] <= window[0] and layout["window"][1] <= window[1], layout  # nothing widened the window
    assert layout["canvas"][0] >= CANVAS_SHARE * window[0], layout
    assert len(layout["docks"]) <= 3, layout  # napari's two (layer controls, layer list) and one tabbed dock of ours
    for name in ("propose.png", "review.png", "refine.png", "box.png", "cases.png"):
        pixels = np.asarray(Image.open(folder / name).convert("RGB"), dtype=np.float32)
        assert pixels.shape[0] > 0.8 * window[1] and pixels.shape[1] > 0.8 * window[0], name
        assert pixels.std() > 20, f"{name} looks blank"
