"""The napari plugin, headless under Xvfb with real napari: manifest, widgets, the whole review flow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

napari = pytest.importorskip("napari")

from napari_mlffm import results  # noqa: E402
from napari_mlffm._qt import common  # noqa: E402
from napari_mlffm.reader import get_reader  # noqa: E402
from napari_mlffm.settings import SETTINGS  # noqa: E402
from napari_mlffm.writer import write_labels  # noqa: E402

from .conftest import SAMPLES, SMALL_DATA  # noqa: E402

PLUGIN = "napari-mlffm"
WIDGETS = ["Propose masks", "Review and export", "Cases", "Fine-tune", "Refine with clicks"]


@pytest.fixture
def plugin_env(tmp_path, monkeypatch, tiny_segmenter):
    """Settings, model folder and corrections store in tmp; a tiny model as the active one."""
    monkeypatch.setenv("NAPARI_MLFFM_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    SETTINGS._settings = None
    common.forget_segmenters()
    models = tmp_path / "models"
    models.mkdir()
    base = models / "tiny-base.mlffm"
    tiny_segmenter.save(base)
    SETTINGS.update(model_folder=str(models), corrections_store=str(tmp_path / "store"), active_model=str(base), samples=3, steps=2)
    yield {"models": models, "base": base, "store": tmp_path / "store", "tmp": tmp_path}
    SETTINGS._settings = None
    common.forget_segmenters()


def _dock(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def _propose(qtbot, widget, layer=None):
    if layer is not None:
        widget.image.value = layer
    worker = widget.start()
    assert worker is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)


def test_manifest_validates_and_every_python_name_imports():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution(PLUGIN)
    manifest.validate_imports()
    assert {w.display_name for w in manifest.contributions.widgets} == set(WIDGETS)


@pytest.mark.parametrize("name", WIDGETS)
def test_each_widget_docks(make_napari_viewer, plugin_env, name):
    viewer = make_napari_viewer()
    widget = _dock(viewer, name)
    assert widget is not None


def test_sample_data_opens(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "ISIC_0000018")
    assert viewer.layers[-1].data.shape == (512, 512, 3)


def test_reader_writer_round_trip(tmp_path):
    source = sorted(SAMPLES.glob("*.jpg"))[0]
    reader = get_reader(str(source))
    (data, meta, kind), = reader(str(source))
    assert kind == "image" and meta["name"] == source.stem and data.shape == (512, 512, 3)
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:20] = 1
    write_labels(str(tmp_path / "m.png"), mask, {})
    assert np.array_equal(np.asarray(Image.open(tmp_path / "m.png")), mask * 255)
    labels = mask * 3
    write_labels(str(tmp_path / "m.tif"), labels, {})
    import tifffile

    assert np.array_equal(tifffile.imread(tmp_path / "m.tif"), labels)
    with pytest.raises(ValueError, match="2-D"):
        write_labels(str(tmp_path / "stack.png"), np.zeros((3, 4, 4), np.uint8), {})


def test_reader_declines_files_it_cannot_read(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_text("not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert get_reader(str(bad)) is None and get_reader(str(empty)) is None
    assert get_reader(str(tmp_path / "notes.txt")) is None


def test_full_review_flow(make_napari_viewer, qtbot, plugin_env):
    viewer = make_napari_viewer()
    propose, review, finetune = (_dock(viewer, n) for n in ("Propose masks", "Review and export", "Fine-tune"))
    sources = sorted(SAMPLES.glob("*.jpg")) + [sorted((SMALL_DATA / "images").glob("*.jpg"))[0]]

    # 1-2: open with the reader, propose; the three layers appear with the right shapes.
    layer = viewer.open(str(sources[0]), plugin=PLUGIN)[0]
    _propose(qtbot, propose, layer)
    found = results.case_layers(viewer, layer.name)
    assert found["proposals"].data.shape == (3, 512, 512)
    assert found["uncertainty"].data.shape == (512, 512) and found["uncertainty"].data.dtype == np.float32
    assert found["mask"].data.shape == (512, 512) and viewer.layers.selection.active is found["mask"]
    for dock in (propose, review):  # the uncertainty map is not offered as an image to segment or review
        dock.image.reset_choices()
        assert layer in dock.image.choices and found["uncertainty"] not in dock.image.choices

    # 3: pick proposal 2 and paint a few pixels.
    viewer.dims.set_current_step(0, 1)
    review.image.value = layer
    review.start.value = "shown proposal"
    review.apply_start()
    assert found["mask"].metadata["mlffm"]["start"] == "proposal 2"
    assert np.array_equal(found["mask"].data > 0, found["proposals"].data[1] > 0)
    painted = found["mask"].data.copy()
    painted[:6, :6] = 1 - painted[:6, :6]
    found["mask"].data = painted
    review.update_readout()
    assert "area" in review.readout.value and "boundary uncertainty" in review.readout.value
    from training.corrections.postprocess import border_pixels

    assert ("touches the image border" in review.readout.value) == (border_pixels(painted > 0) > 0)

    # 4: accept; files and JSON appear in the store.
    review.annotator.value = "Dr. Test"
    assert review.accept() is not None
    store = plugin_env["store"]
    record = json.loads((store / "meta" / f"{sources[0].stem}.json").read_text())
    assert record["start"] == "proposal 2" and record["edited_pixels"] == 36 and record["annotator"] == "Dr. Test"
    assert record["seed"] == 0 and record["steps"] == 2 and len(record["image_sha256"]) == 64
    assert (store / "images" / f"{sources[0].stem}.png").is_file() and (store / "masks" / f"{sources[0].stem}.png").is_file()

    for source in sources[1:]:
        other = viewer.open(str(source), plugin=PLUGIN)[0]
        _propose(qtbot, propose, other)
        review.image.value = other
        assert review.accept() is not None
    assert len(list((store / "meta").glob("*.json"))) == 4

    # 5: fine-tune on the store; a new version appears and can be selected.
    finetune.base.value = str(plugin_env["base"])
    finetune.epochs.value = 1
    base_bytes = plugin_env["base"].read_bytes()
    finetune.start()
    qtbot.waitUntil(lambda: finetune.worker is None, timeout=300_000)
    assert finetune.output is not None and finetune.output.is_file(), finetune.status.value
    card = json.loads(finetune.output.with_suffix(".json").read_text())
    assert card["n_images"] == 4 and "val_dice_after" in card
    # The live plot got the Dice before (epoch 0) and the epoch's loss and Dice, as the subprocess printed them.
    assert sorted(finetune.curves.points) == [0, 1]
    assert finetune.curves.points[0][1] == pytest.approx(card["selection_dice_before"], abs=1e-4)
    loss, dice_after_epoch = finetune.curves.points[1]
    assert 0 < loss < 10 and 0 <= dice_after_epoch <= 1
    assert finetune.curves.grab().width() > 0  # paints without error
    assert plugin_env["base"].read_bytes() == base_bytes
    finetune.versions.value = str(finetune.output)
    finetune.use_selected()
    assert SETTINGS.get().active_model == str(finetune.output)
    assert propose.model.value == str(finetune.output)

    # 6: export; the files appear, and a second export does not overwrite them.
    review.image.value = layer
    out = plugin_env["tmp"] / "export"
    review.export_folder.value = str(out)
    written = review.export()
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"{layer.name}_segmentation.png", f"{layer.name}_probability.tif", f"{layer.name}_uncertainty.tif", f"{layer.name}.json"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    found["mask"].data = np.zeros_like(found["mask"].data)
    review.confirm = lambda *a: False
    assert review.export() is None
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert written


def test_cancel_propose_keeps_layers(make_napari_viewer, qtbot, plugin_env):
    viewer = make_napari_viewer()
    propose = _dock(viewer, "Propose masks")
    layer = viewer.open(str(sorted(SAMPLES.glob("*.jpg"))[0]), plugin=PLUGIN)[0]
    propose.samples.value, propose.steps.value = 64, 250
    worker = propose.start()
    worker.yielded.connect(lambda _: propose.cancel())
    qtbot.waitUntil(lambda: propose.worker is None, timeout=120_000)
    assert propose.status.value == "cancelled"
    assert [l.name for l in viewer.layers] == [layer.name]


def test_cancel_finetune_leaves_base_untouched(make_napari_viewer, qtbot, plugin_env):
    store = plugin_env["store"]
    shutil.copytree(SMALL_DATA, store, ignore=shutil.ignore_patterns("splits.csv"))
    viewer = make_napari_viewer()
    finetune = _dock(viewer, "Fine-tune")
    finetune.base.value = str(plugin_env["base"])
    finetune.epochs.value = 1000
    base_bytes = plugin_env["base"].read_bytes()
    finetune.start()
    qtbot.waitUntil(lambda: finetune.status.value.startswith("epoch"), timeout=120_000)
    finetune.cancel()
    qtbot.waitUntil(lambda: finetune.worker is None, timeout=60_000)
    assert "cancelled" in finetune.status.value
    assert not finetune.output.exists()
    assert plugin_env["base"].read_bytes() == base_bytes
    assert sorted(p.name for p in plugin_env["models"].iterdir()) == ["tiny-base.mlffm"]


def test_cases_widget_steps_proposes_and_sorts(make_napari_viewer, qtbot, plugin_env, tmp_path):
    folder = tmp_path / "cases"
    folder.mkdir()
    for path in sorted((SMALL_DATA / "images").glob("*.jpg"))[:3]:
        shutil.copy(path, folder / path.name)
    (folder / "corrupt.png").write_bytes(b"\x89PNG broken")
    (folder / "notes.txt").write_text("x")
    viewer = make_napari_viewer()
    cases = _dock(viewer, "Cases")
    assert cases.open_folder(folder) == 4
    cases.step(1)
    assert len(viewer.layers) == 1
    cases.propose_or_cancel()
    qtbot.waitUntil(lambda: cases.worker is None, timeout=120_000)
    states = [cases.state(e) for e in cases.cases]
    assert states.count("proposed") == 3 and states.count("unreadable") == 1
    cases.sort_most_doubtful_first()
    values = [e.disagreement for e in cases.cases if e.disagreement is not None]
    assert values == sorted(values, reverse=True)
    cases.show_case(0)
    assert [l.name for l in viewer.layers][0] == cases.cases[0].path.stem  # the previous case was closed
    assert results.case_layers(viewer, cases.cases[0].path.stem)["mask"] is not None
    broken = next(i for i, e in enumerate(cases.cases) if e.path.name == "corrupt.png")
    cases.show_case(broken)  # the status names the unreadable case, not the one shown before
    assert cases.status.value.startswith(f"case {broken + 1}/4: ") and "corrupt.png" in cases.status.value


def test_corrupt_image_shows_error_and_does_not_crash(make_napari_viewer, plugin_env, tmp_path):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    viewer = make_napari_viewer()
    with pytest.raises(Exception):
        viewer.open(str(bad), plugin=PLUGIN)
    assert len(viewer.layers) == 0
    propose = _dock(viewer, "Propose masks")
    assert propose.start() is None  # no image: a notification, no worker


def test_closing_the_viewer_stops_a_running_proposal(make_napari_viewer, qtbot, plugin_env):
    viewer = make_napari_viewer()
    propose = _dock(viewer, "Propose masks")
    layer = viewer.open(str(sorted(SAMPLES.glob("*.jpg"))[0]), plugin=PLUGIN)[0]
    propose.image.value = layer
    propose.samples.value, propose.steps.value = 64, 250
    worker = propose.start()
    steps = []
    worker.yielded.connect(steps.append)
    qtbot.waitUntil(lambda: len(steps) > 0, timeout=60_000)
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=60_000)
    assert len(steps) < 250


def test_bad_checkpoint_in_a_worker_is_a_one_line_failure(make_napari_viewer, qtbot, plugin_env):
    bad = plugin_env["tmp"] / "broken.mlffm"
    bad.write_bytes(b"not a model at all")
    viewer = make_napari_viewer()
    propose = _dock(viewer, "Propose masks")
    layer = viewer.open(str(sorted(SAMPLES.glob("*.jpg"))[0]), plugin=PLUGIN)[0]
    propose.image.value = layer
    propose.model.value = common.OTHER_FILE
    propose.model_file.value = str(bad)
    propose.start()
    qtbot.waitUntil(lambda: propose.worker is None, timeout=60_000)
    assert propose.status.value.startswith("failed: ") and "broken.mlffm" in propose.status.value
    assert "\n" not in propose.status.value
    assert [l.name for l in viewer.layers] == [layer.name]


def test_settings_persist_between_sessions(plugin_env):
    SETTINGS.update(annotator="Dr. Persist", samples=5, device="cpu")
    SETTINGS._settings = None  # a new session reads the file
    settings = SETTINGS.get()
    assert (settings.annotator, settings.samples, settings.device) == ("Dr. Persist", 5, "cpu")
    assert SETTINGS.path.is_file() and str(plugin_env["tmp"]) in str(SETTINGS.path)


def test_fine_tune_events_are_read_from_json_lines():
    from napari_mlffm._qt.finetune import finetune_command, widget_event

    assert widget_event('{"event": "epoch_start", "epoch": 2, "epochs": 10, "batches": 5}') == ("epoch", 2, 10)
    assert widget_event('{"event": "batch_end", "epoch": 2, "batch": 5, "batches": 5, "loss": 0.25}') == ("batch", 2, 5, 5, 0.25)
    assert widget_event('{"event": "epoch_end", "epoch": 3, "train_loss": 0.0931, "val_dice": 0.863}') == ("curve", 3, 0.0931, 0.863)
    epoch, loss, dice = widget_event('{"event": "epoch_end", "epoch": 0, "train_loss": null, "val_dice": 0.7123}')[1:]
    assert (epoch, dice) == (0, 0.7123) and np.isnan(loss)
    assert widget_event('{"event": "message", "text": "saved x"}') == ("line", "saved x")
    # Anything else is a plain line (warnings and errors come on stderr as text).
    for line in ("mlffm finetune: error: no usable pairs", '{"event": "epoch_start"}', "[1, 2]", '{"event": "unknown"}'):
        assert widget_event(line) == ("line", line)
    assert finetune_command(Path("store"), None, Path("out.mlffm"), 3, 0.0, "cpu")[-2:] == ["--epochs", "3"]
    assert "--progress" in finetune_command(Path("store"), None, Path("out.mlffm"), 3, 0.0, "cpu")


def test_consensus_start_uses_the_models_decision_threshold(make_napari_viewer, qtbot, plugin_env, tiny_segmenter):
    low = plugin_env["models"] / "tiny-low-threshold.mlffm"
    tiny_segmenter.with_options(decision_threshold=0.3).save(low)
    SETTINGS.update(active_model=str(low))
    common.forget_segmenters()
    viewer = make_napari_viewer()
    propose, review = (_dock(viewer, n) for n in ("Propose masks", "Review and export"))
    layer = viewer.open(str(sorted(SAMPLES.glob("*.jpg"))[0]), plugin=PLUGIN)[0]
    _propose(qtbot, propose, layer)
    found = results.case_layers(viewer, layer.name)
    state = found["proposals"].metadata["mlffm"]
    expected = state["probability"] >= 0.3
    assert state["threshold"] == 0.3 and (expected != (state["probability"] >= 0.5)).any()
    assert np.array_equal(found["mask"].data > 0, expected)  # the first mask is the model's consensus
    review.image.value = layer
    for start in ("intersection", "consensus"):  # leave the consensus, then come back to it
        review.start.value = start
        review.apply_start()
    assert found["mask"].metadata["mlffm"]["start"] == "consensus"
    assert np.array_equal(found["mask"].data > 0, expected)


def test_sampling_settings_follow_the_model_unless_the_user_changes_them(make_napari_viewer, qtbot, plugin_env, tiny_segmenter):
    own = plugin_env["models"] / "tiny-4x1.mlffm"
    tiny_segmenter.with_options(default_samples=4, default_steps=1).save(own)
    SETTINGS.update(active_model=str(own), samples=None, steps=None)  # a fresh install: no choice made
    viewer = make_napari_viewer()
    propose = _dock(viewer, "Propose masks")
    assert (propose.samples.value, propose.steps.value) == (4, 1)  # the model's own settings
    propose.model.value = str(plugin_env["base"])  # another model brings its own (the tiny config's 2 x 3)
    assert (propose.samples.value, propose.steps.value) == (2, 3)
    propose.model.value = str(own)
    layer = viewer.open(str(sorted(SAMPLES.glob("*.jpg"))[0]), plugin=PLUGIN)[0]
    _propose(qtbot, propose, layer)
    assert results.case_layers(viewer, layer.name)["proposals"].data.shape[0] == 4
    assert (SETTINGS.get().samples, SETTINGS.get().steps) == (None, None)  # still "the model's"
    propose.samples.value = 6  # the user's own choice is kept, for every model
    _propose(qtbot, propose, layer)
    assert SETTINGS.reload().samples == 6 and SETTINGS.get().steps is None
    propose.model.value = str(plugin_env["base"])
    assert (propose.samples.value, propose.steps.value) == (6, 3)


def test_the_flat_field_box_follows_the_model_and_its_choice_reaches_the_proposal(make_napari_viewer, qtbot, plugin_env, tiny_segmenter):
    flat = plugin_env["models"] / "tiny-flat.mlffm"
    tiny_segmenter.with_options(flat_field=True).save(flat)
    SETTINGS.update(flat_field=None)
    viewer = make_napari_viewer()
    propose = _dock(viewer, "Propose masks")
    assert propose.flat_field.value is False  # the tiny base's own choice
    propose.model.value = str(flat)
    assert propose.flat_field.value is True  # another model brings its own
    propose.model.value = str(plugin_env["base"])
    layer = viewer.open(str(sorted(SAMPLES.glob("*.jpg"))[0]), plugin=PLUGIN)[0]
    _propose(qtbot, propose, layer)
    mask = results.case_layers(viewer, layer.name)["mask"]
    plain = results.case_layers(viewer, layer.name)["proposals"].metadata[results.KEY]["probability"].copy()
    assert mask.metadata[results.KEY]["flat_field"] is False and SETTINGS.get().flat_field is None
    propose.flat_field.value = True  # the user's choice: kept in the settings, recorded with the proposal, and it changes the input
    _propose(qtbot, propose, layer)
    assert SETTINGS.reload().flat_field is True
    assert results.case_layers(viewer, layer.name)["mask"].metadata[results.KEY]["flat_field"] is True
    corrected = results.case_layers(viewer, layer.name)["proposals"].metadata[results.KEY]["probability"]
    assert not np.array_equal(plain, corrected)
    propose.model.value = str(flat)
    assert propose.flat_field.value is True  # the user's choice holds for every model
