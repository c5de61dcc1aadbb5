"""The plugin always opens: a damaged settings.json and models with out-of-range defaults (real napari under Xvfb)."""

from __future__ import annotations

import json

import pytest
import torch

napari = pytest.importorskip("napari")

from model import Segmenter  # noqa: E402
from model.config import DiffusionConfig  # noqa: E402
from napari_mlffm._qt import common  # noqa: E402
from napari_mlffm.settings import SAMPLES_RANGE, SETTINGS, STEPS_RANGE, settings_from_dict  # noqa: E402

from .conftest import tiny_config  # noqa: E402
from .test_checkpoint_hostile import split_checkpoint, with_meta, write_raw  # noqa: E402

PLUGIN = "napari-mlffm"


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_MLFFM_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    (tmp_path / "config").mkdir()
    SETTINGS._settings = None
    common.forget_segmenters()
    yield tmp_path / "config"
    SETTINGS._settings = None
    common.forget_segmenters()


@pytest.fixture
def warnings_shown(monkeypatch):
    """Every napari warning the plugin shows, as text."""
    import napari_mlffm.settings as settings_module

    shown: list[str] = []
    original = napari.utils.notifications.show_warning

    def record(message):
        shown.append(str(message))
        original(message)

    monkeypatch.setattr(napari.utils.notifications, "show_warning", record)
    monkeypatch.setattr(common, "show_warning", record)
    assert settings_module  # _warn imports show_warning at call time, so the patch applies
    return shown


BAD_FILES = {
    "out of range": {"device": "gpu", "samples": 500, "steps": 0, "seed": -5, "annotator": "Dr. Kept"},
    "wrong types": {"device": 3, "samples": "16", "steps": 2.5, "seed": True, "model_folder": ["x"], "annotator": "Dr. Kept"},
    "not a dict": ["device", "cpu"],
    "a string": "settings",
}


@pytest.mark.parametrize("case", [*BAD_FILES, "invalid JSON", "deeply nested"])
def test_a_damaged_settings_file_falls_back_per_field_and_the_dock_opens(make_napari_viewer, config_dir, warnings_shown, case):
    path = config_dir / "settings.json"
    if case == "invalid JSON":
        path.write_text('{"device": "cpu", "samples": ')
    elif case == "deeply nested":
        path.write_text("[" * 100_000 + "]" * 100_000)
    else:
        path.write_text(json.dumps(BAD_FILES[case]))
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Propose masks")
    settings = SETTINGS.get()
    assert settings.device == "auto" and settings.samples is None and settings.steps is None and settings.seed == 0
    assert widget.device.value == "auto" and widget.seed.value == 0
    assert SAMPLES_RANGE[0] <= widget.samples.value <= SAMPLES_RANGE[1]
    if case in ("out of range", "wrong types"):
        assert settings.annotator == "Dr. Kept"  # valid fields are kept
    notes = [w for w in warnings_shown if "settings.json" in w]
    assert len(notes) == 1 and "\n" not in notes[0]
    if case == "out of range":
        assert "device='gpu'" in notes[0] and "samples=500" in notes[0]
    # every other dock opens too
    for name in ("Review and export", "Cases", "Fine-tune"):
        viewer.window.add_plugin_dock_widget(PLUGIN, name)
    # the next change writes a clean file
    SETTINGS.update(seed=3)
    SETTINGS._settings = None
    assert SETTINGS.get().seed == 3 and not SETTINGS.problems
    assert settings_from_dict(json.loads(path.read_text())) == (SETTINGS.get(), [])


@pytest.mark.parametrize("default_samples, shown", [(100, 100), (SAMPLES_RANGE[1] + 244, SAMPLES_RANGE[1])])
def test_a_model_whose_defaults_exceed_the_old_range_opens_the_dock(make_napari_viewer, config_dir, tmp_path, warnings_shown, default_samples, shown):
    torch.manual_seed(0)
    config = tiny_config()
    model = Segmenter(
        type(config)(
            size=config.size, network=config.network, default_steps=40, default_samples=min(default_samples, SAMPLES_RANGE[1]),
            diffusion=DiffusionConfig(timesteps=30),
        ),
        "cpu",
    )
    path = tmp_path / "big-defaults.mlffm"
    model.save(path)
    if default_samples > SAMPLES_RANGE[1]:
        # the model layer refuses such a config (model/inputs/limits.py), so only a hand-edited file can carry it
        header, data = split_checkpoint(path)
        write_raw(path, with_meta(header, lambda meta: meta["config"].update(default_samples=default_samples)), data)
    SETTINGS.update(active_model=str(path))
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Propose masks")
    if default_samples > SAMPLES_RANGE[1]:
        # the dock opens with in-range values; the refused file is named in one warning, not a traceback
        assert SAMPLES_RANGE[0] <= widget.samples.value <= SAMPLES_RANGE[1] == widget.samples.max
        assert any(path.name in w for w in warnings_shown)
        return
    assert widget.samples.value == shown and widget.samples.max == SAMPLES_RANGE[1]
    # DDIM steps are bounded by the model's 30 training timesteps: its default of 40 is shown as 30
    assert widget.steps.max == 30 and widget.steps.value == 30 and STEPS_RANGE[1] >= 30
