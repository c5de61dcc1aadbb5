"""The plugin's writer, Fine-tune and image lists given what a hostile user (or a script) gives them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_mlffm.writer import write_labels

from .test_plugin import _dock, _propose, plugin_env  # noqa: F401


@pytest.mark.parametrize(
    "data, message",
    [
        (np.full((8, 8), 0.5), "must be whole numbers"),
        (np.full((8, 8), np.nan), "must be whole numbers"),
        (np.zeros((0, 8), np.uint8), "the layer is empty"),
    ],
    ids=["fractions", "nan", "empty"],
)
def test_the_writer_refuses_what_is_no_labels_in_one_line_naming_the_file(tmp_path, data, message):
    target = tmp_path / "m.png"
    with pytest.raises(ValueError, match=message) as caught:
        write_labels(str(target), data, {})
    assert str(caught.value).startswith(str(target)) and not target.exists()


def test_the_writer_takes_whole_floats_and_names_a_missing_folder(tmp_path):
    mask = np.zeros((8, 8))
    mask[2:5, 2:5] = 1.0
    assert write_labels(str(tmp_path / "m.png"), mask, {}) == [str(tmp_path / "m.png")]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "m.png")) == 255, mask == 1)
    missing = tmp_path / "nowhere" / "m.png"
    with pytest.raises(ValueError, match=r"m\.png: its folder .*nowhere does not exist"):
        write_labels(str(missing), mask, {})


def test_the_writer_takes_a_name_up_to_the_limit_and_refuses_failures_in_one_line_naming_the_file(tmp_path, monkeypatch):
    import errno
    import tempfile

    from training.files.file_names import name_limit

    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 1
    longest = tmp_path / ("x" * (name_limit(tmp_path) - 4) + ".png")  # its temporary's name once was 14 bytes longer
    assert write_labels(str(longest), mask, {}) == [str(longest)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [longest.name]  # no temporary left
    over = tmp_path / ("x" * (name_limit(tmp_path) - 3) + ".png")
    with pytest.raises(ValueError, match="over the file system's limit") as caught:
        write_labels(str(over), mask, {})
    assert str(caught.value).startswith(str(over)) and "\n" not in str(caught.value)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    target = tmp_path / "m.png"
    with pytest.raises(ValueError, match=r"m\.png: cannot be written \(Read-only file system\)$") as caught:
        write_labels(str(target), mask, {})
    assert str(caught.value).startswith(str(target)) and not target.exists()


def test_a_mask_saved_as_png_is_0_255_whatever_label_painted_it_and_a_label_map_keeps_its_values(tmp_path):
    def saved(name, data, meta):
        write_labels(str(tmp_path / name), data, meta)
        return np.asarray(Image.open(tmp_path / name))

    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 2  # painted with label 2 by mistake: a 0/2 PNG looks black
    assert sorted(np.unique(saved("two.png", mask, {}))) == [0, 255]
    painted = mask.copy()
    painted[6, 6] = 1  # the plugin's mask layer, partly painted with another label: still one mask
    plugin_meta = {"name": "ISIC_0000018 mask", "metadata": {"mlffm": {"start": "consensus"}}}
    assert np.array_equal(saved("plugin.png", painted, plugin_meta), (painted > 0) * 255)
    assert sorted(np.unique(saved("map.png", painted, {"name": "regions"}))) == [0, 1, 2]  # a label map of two labels keeps them
    write_labels(str(tmp_path / "two.tif"), mask, {})
    import tifffile

    assert sorted(np.unique(tifffile.imread(tmp_path / "two.tif"))) == [0, 2]  # a TIFF keeps the values


def test_a_model_folder_that_cannot_be_made_is_one_line_and_nothing_starts(make_napari_viewer, plugin_env, tmp_path):  # noqa: F811
    viewer = make_napari_viewer()
    widget = _dock(viewer, "Fine-tune")
    store = tmp_path / "s"
    (store / "images").mkdir(parents=True)
    widget.store.value = str(store)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    widget.model_folder.value = str(blocker / "models")  # under a file: no folder can be made there
    for kind in ("finetune", "adapt"):
        assert widget.start(kind) is None and widget.worker is None


def test_an_uncertainty_map_stays_out_of_the_image_lists_after_its_image_is_removed(make_napari_viewer, qtbot, plugin_env):  # noqa: F811
    viewer = make_napari_viewer()
    propose, review = _dock(viewer, "Propose masks"), _dock(viewer, "Review and export")
    image = viewer.add_image(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8), name="g", rgb=True)
    _propose(qtbot, propose, image)
    viewer.layers.remove(image)
    for widget in (propose, review):
        widget.reset_choices()
        assert [c for c in widget.image.choices if c is not None] == []


def test_a_model_folder_of_odd_cards_and_names_lists_only_real_versions_with_dict_cards(tmp_path):
    from training.corrections.model_store import list_versions

    folder = tmp_path / "models"
    folder.mkdir()
    cards = {"null": "null", "list": "[1, 2]", "nan": "NaN", "deep": "[" * 100_000 + "]" * 100_000, "bad": "{not json", "good": '{"val_dice_before": 0.8}'}
    for name, text in cards.items():
        (folder / f"finetuned-{name}.mlffm").write_bytes(b"weights")
        (folder / f"finetuned-{name}.json").write_text(text)
    (folder / "finetuned-folder.mlffm").mkdir()
    (folder / "finetuned-dangling.mlffm").symlink_to(folder / "nowhere")
    versions = {v.label: v.card for v in list_versions(folder) if v.path is not None}
    assert sorted(versions) == sorted(f"finetuned-{name}" for name in cards)
    assert versions["finetuned-good"] == {"val_dice_before": 0.8}
    assert all(card == {} for label, card in versions.items() if label != "finetuned-good")


def test_the_dock_opens_over_a_model_folder_with_a_card_that_is_no_object(make_napari_viewer, plugin_env):  # noqa: F811
    (plugin_env["models"] / "finetuned-20240101-000000.mlffm").write_bytes(b"weights")
    (plugin_env["models"] / "finetuned-20240101-000000.json").write_text("null")
    viewer = make_napari_viewer()
    for name in ("Fine-tune", "Propose masks"):
        assert _dock(viewer, name) is not None


def test_the_launcher_skips_what_it_cannot_open_in_one_line_and_opens_the_rest(make_napari_viewer, tmp_path):
    from napari.utils import notifications

    from napari_mlffm.__main__ import open_image

    from .conftest import SAMPLES

    (tmp_path / "text.jpg").write_text("hello")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "afolder").mkdir()
    viewer = make_napari_viewer()
    shown = []
    notifications.notification_manager.notification_ready.connect(lambda n: shown.append(str(n.message)))
    for name in ("missing.jpg", "afolder", "text.jpg", "corrupt.png"):
        assert open_image(viewer, str(tmp_path / name)) is False
    good = sorted(SAMPLES.glob("*.jpg"))[0]
    assert open_image(viewer, str(good)) is True and [layer.name for layer in viewer.layers] == [good.stem]
    assert len(shown) == 4 and all(m.startswith(f"skipped {tmp_path}") and "\n" not in m for m in shown), shown
