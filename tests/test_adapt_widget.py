"""The Fine-tune widget's "Adapt to my corrections", in real napari: the child process, progress, the card, use and roll back."""

from __future__ import annotations

import json

import pytest

napari = pytest.importorskip("napari")

from napari_mlffm._qt.finetune import adapt_command, adapt_change, widget_event  # noqa: E402
from napari_mlffm.settings import SETTINGS  # noqa: E402
from training.commands.adapt import MIN_CASES  # noqa: E402

from .test_adapt import make_store  # noqa: E402
from .test_plugin import _dock, plugin_env  # noqa: E402, F401


def test_adapt_events_and_command():
    assert widget_event('{"event": "stage", "name": "scoring the base model", "total": 24}') == ("stage", "scoring the base model", 24)
    assert widget_event('{"event": "stage", "name": "fine-tuning", "total": null}') == ("stage", "fine-tuning", None)
    assert widget_event('{"event": "item", "done": 3, "total": 24}') == ("item", 3, 24)
    command = adapt_command("store", None, "out.mlffm", 0.0, "cpu")
    assert command[3:5] == ["adapt", "store"] and "--time-budget" not in command and "--progress" in command
    assert adapt_command("store", "b.mlffm", "out.mlffm", 2.5, "cpu")[-4:] == ["--checkpoint", "b.mlffm", "--time-budget", "2.5"]
    card = {"method": "calibration", "val_dice_before": 0.9, "val_dice_after": 0.93, "ece_before": 0.03, "ece_after": 0.02}
    assert adapt_change(card) == "calibration: held-out Dice 0.900 -> 0.930, ECE 0.030 -> 0.020"
    assert adapt_change({"val_dice_before": 0.9, "val_dice_after": 0.93}) == ""


@pytest.mark.parametrize(
    "card",
    [
        json.loads('{"method": "fine-tune", "val_dice_before": NaN, "val_dice_after": Infinity, "ece_before": 0.1, "ece_after": 1e400}'),
        {"method": "fine-tune", "val_dice_before": True, "val_dice_after": 7, "ece_before": -1, "ece_after": "0.1"},
        {"method": ["x"] * 10_000, "val_dice_before": 0.9, "val_dice_after": 0.93},
        {"method": "calibration\nfake line", "val_dice_before": 0.9, "val_dice_after": 0.93},
    ],
)
def test_a_hand_edited_card_shows_no_impossible_numbers(card):
    """A card is a file anyone may edit: NaN, infinite, boolean or out-of-range numbers and odd methods show nothing."""
    from napari_mlffm._qt.finetune import dice_change

    text = adapt_change(card) + dice_change(card)
    assert "nan" not in text and "inf" not in text and "True" not in text and "\n" not in text and len(text) < 100


def test_adapt_to_my_corrections_then_use_and_roll_back(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer = make_napari_viewer()
    propose, finetune = _dock(viewer, "Propose masks"), _dock(viewer, "Fine-tune")
    base, store = plugin_env["base"], plugin_env["store"]
    base_bytes = base.read_bytes()
    finetune.base.value = str(base)

    # too few corrections: the child says how many more, and no version appears
    make_store(store, MIN_CASES - 2, erode=2)
    finetune.store.value = str(store)
    finetune.start("adapt")
    qtbot.waitUntil(lambda: finetune.worker is None, timeout=120_000)
    assert "correct 2 more" in finetune.status.value and "nothing written" in finetune.status.value
    assert not any(p.name.startswith("adapted-") for p in plugin_env["models"].iterdir())

    # enough: a short budget, so the fine-tune candidate trains for real too
    make_store(plugin_env["tmp"] / "store2", MIN_CASES + 4, erode=2)
    finetune.store.value = str(plugin_env["tmp"] / "store2")
    finetune.minutes.value = 0.6
    stages = []
    worker = finetune.start("adapt")
    assert finetune.adapt_button.text == "Cancel" and not finetune.run_button.enabled
    worker.yielded.connect(lambda event: stages.append(event[1]) if event[0] == "stage" else None)
    qtbot.waitUntil(lambda: finetune.worker is None, timeout=300_000)
    output = finetune.output
    assert output is not None and output.is_file() and output.name.startswith("adapted-"), finetune.status.value
    assert stages[0] == "scoring the base model"
    card = json.loads(output.with_suffix(".json").read_text())
    assert card["method"] in ("calibration", "fine-tune + calibration", "none")
    assert card["n_images"] == MIN_CASES + 4
    assert f"{card['val_dice_before']:.3f} -> {card['val_dice_after']:.3f}" in finetune.status.value
    assert f"ECE {card['ece_before']:.3f} -> {card['ece_after']:.3f}" in finetune.status.value
    assert finetune.adapt_button.text == "Adapt to my corrections" and finetune.run_button.enabled
    assert not any(p.name.endswith(".adapt-work") for p in plugin_env["models"].iterdir())
    assert base.read_bytes() == base_bytes

    # use it, then roll back to the base
    assert finetune.versions.value == str(output)
    finetune.use_selected()
    assert SETTINGS.get().active_model == str(output) and propose.model.value == str(output)
    finetune.versions.value = str(base)
    finetune.use_selected()
    assert SETTINGS.get().active_model == str(base) and propose.model.value == str(base)


def test_cancel_adapt_leaves_no_version_and_no_work_files(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer = make_napari_viewer()
    finetune = _dock(viewer, "Fine-tune")
    finetune.base.value = str(plugin_env["base"])
    make_store(plugin_env["store"], MIN_CASES + 4, erode=0)
    finetune.minutes.value = 30.0  # a long fine-tune candidate, cancelled while it trains
    finetune.start("adapt")
    qtbot.waitUntil(lambda: finetune.status.value.startswith("fine-tune candidate"), timeout=240_000)
    finetune.adapt_or_cancel()
    assert finetune.adapt_button.text == "Cancelling..." and not finetune.adapt_button.enabled  # the button pressed says so
    qtbot.waitUntil(lambda: finetune.worker is None, timeout=60_000)
    assert "cancelled" in finetune.status.value
    assert sorted(p.name for p in plugin_env["models"].iterdir()) == ["tiny-base.mlffm"]
    qtbot.wait(3000)  # a child that stopped gracefully on SIGTERM would save a version about now
    assert sorted(p.name for p in plugin_env["models"].iterdir()) == ["tiny-base.mlffm"]
