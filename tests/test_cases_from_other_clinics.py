"""The Cases dock with folders other clinics send, in real napari under Xvfb: names in two Unicode forms, a photo
saved over the shown case, results landing while the annotator is elsewhere, clicks that belong to one file."""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest
from PIL import Image

napari = pytest.importorskip("napari")

from napari_mlffm import results  # noqa: E402
from training.corrections.store import CorrectionsStore, usable_cases  # noqa: E402

from .test_plugin import _dock, _propose, plugin_env  # noqa: E402, F401
from .test_refine_desk import _press  # noqa: E402


def _rgb(seed: int, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _square() -> np.ndarray:
    mask = np.zeros((64, 64), np.uint8)
    mask[10:40, 10:40] = 1
    return mask


def test_a_case_stored_under_a_decomposed_name_is_found_by_fine_tuning(tmp_path):
    store = CorrectionsStore(tmp_path)
    store.accept(case_id=unicodedata.normalize("NFD", "café"), image=_rgb(0), mask=_square().astype(bool), record={"source": "/x/café.png"})
    listing = usable_cases(tmp_path)
    assert [case.case_id for case in listing.cases] == ["café"]  # it was left out without a word
    from training.data.datasets import load_case

    assert load_case(listing.cases[0])[1].sum() == 900


def test_a_mac_folder_accepted_then_opened_in_composed_names_is_still_accepted(make_napari_viewer, qtbot, plugin_env, tmp_path):  # noqa: F811
    mac, linux = tmp_path / "mac", tmp_path / "linux"
    mac.mkdir()
    linux.mkdir()
    Image.fromarray(_rgb(1)).save(mac / (unicodedata.normalize("NFD", "café") + ".png"))
    Image.fromarray(_rgb(1)).save(linux / (unicodedata.normalize("NFC", "café") + ".png"))
    Image.fromarray(_rgb(1)).save(mac / (unicodedata.normalize("NFC", "café") + ".png"))  # one name in both forms
    viewer = make_napari_viewer()
    cases, review = _dock(viewer, "Cases"), _dock(viewer, "Review and export")
    review.confirm = lambda *_: True
    assert cases.open_folder(mac) == 1 and "its case id 'café' is also" in cases.status.value
    cases.propose_or_cancel()
    qtbot.waitUntil(lambda: cases.worker is None, timeout=120_000)
    cases.show_case(0)
    mask = results.case_layers(viewer, cases.cases[0].path.stem)["mask"]
    mask.data = _square()
    assert review.accept() is not None
    assert len(usable_cases(plugin_env["store"]).cases) == 1  # fine-tuning sees it (it saw 0)
    cases.open_folder(linux)
    cases.show_case(0)
    assert cases.state(cases.cases[0]) == "accepted"  # it read "new"


def test_a_photo_saved_over_the_shown_case_during_propose_all_is_not_given_the_new_mask(make_napari_viewer, qtbot, plugin_env, tmp_path):  # noqa: F811
    folder = tmp_path / "clinic"
    folder.mkdir()
    Image.fromarray(_rgb(1)).save(folder / "a.png")
    viewer = make_napari_viewer()
    cases = _dock(viewer, "Cases")
    cases.open_folder(folder)
    cases.show_case(0)
    shown = np.asarray(viewer.layers["a"].data).copy()
    Image.fromarray(_rgb(2)).save(folder / "a.png")
    cases.propose_or_cancel()
    qtbot.waitUntil(lambda: cases.worker is None, timeout=120_000)
    assert np.array_equal(np.asarray(viewer.layers["a"].data), shown)
    assert "a mask" not in viewer.layers  # the new photo's mask was laid on the old photo, where Accept stored them together
    assert cases.model.get("a").proposal is not None  # kept for the case, shown with the new photo next time


@pytest.mark.parametrize("active", ["a notes layer", "nothing"])
def test_a_proposal_landing_for_the_shown_case_leaves_the_review_where_it_is(make_napari_viewer, qtbot, plugin_env, tmp_path, active):  # noqa: F811
    folder = tmp_path / "clinic"
    folder.mkdir()
    Image.fromarray(_rgb(1)).save(folder / "c0.png")
    viewer = make_napari_viewer()
    propose, review, cases = (_dock(viewer, n) for n in ("Propose masks", "Review and export", "Cases"))
    review.confirm = lambda *_: True
    x = viewer.add_image(_rgb(9), name="x")
    _propose(qtbot, propose, x)
    cases.open_folder(folder)
    cases.show_case(0)
    viewer.layers.selection.active = viewer.layers["x mask"]
    if active == "nothing":
        viewer.layers.selection.clear()
    else:
        viewer.add_shapes(name="notes")
    assert review.image.value.name == "x"
    cases.propose_or_cancel()
    qtbot.waitUntil(lambda: cases.worker is None, timeout=120_000)
    _press(viewer, "Shift-A")
    assert sorted(p.stem for p in (plugin_env["store"] / "meta").glob("*.json")) == ["x"]  # it accepted c0's untouched proposal


def test_a_case_s_clicks_leave_with_it_and_never_steer_another_folder_s_file_of_that_name(make_napari_viewer, qtbot, plugin_env, tmp_path):  # noqa: F811
    first, second = tmp_path / "sessionA", tmp_path / "sessionB"
    for folder, seed in ((first, 1), (second, 5)):
        folder.mkdir()
        for k in (1, 2):
            Image.fromarray(_rgb(seed + k)).save(folder / f"IMG_000{k}.png")
    viewer = make_napari_viewer()
    propose, cases, refine = (_dock(viewer, n) for n in ("Propose masks", "Cases", "Refine with clicks"))
    refine.auto.value = False
    cases.open_folder(first)
    cases.show_case(0)
    _propose(qtbot, propose, viewer.layers["IMG_0001"])
    refine.image.value = viewer.layers["IMG_0001"]
    refine.prompts_layer().add([[10, 10]])
    refine.refine()
    qtbot.waitUntil(lambda: refine.worker is None and "refined with 1 lesion" in refine.status.value, timeout=120_000)
    cases.step(1)
    assert not [layer.name for layer in viewer.layers if layer.name.startswith("IMG_0001")]  # its clicks layer stayed over the next case
    cases.step(-1)
    clicks = viewer.layers["IMG_0001 mask"].metadata["mlffm"]["clicks"]  # Accept still records them after the return
    assert clicks["positive"] == [[10.0, 10.0]]
    cases.open_folder(second)
    cases.show_case(0)
    _propose(qtbot, propose, viewer.layers["IMG_0001"])
    assert refine.clicks(viewer.layers["IMG_0001"]).clicks == 0  # session A's click steered session B's photo


def test_control_characters_in_file_names_are_escaped_in_the_case_list_s_status(make_napari_viewer, plugin_env, tmp_path):  # noqa: F811
    folder = tmp_path / "clinic"
    folder.mkdir()
    for name, seed in (("ok.png", 0), ("bad\x1b[2J.png", 1), ("two\nlines.png", 2)):
        Image.fromarray(_rgb(seed)).save(folder / name)
    cases = _dock(make_napari_viewer(), "Cases")
    assert cases.open_folder(folder) == 1
    assert "\x1b" not in cases.status.value and "'two\\nlines.png'" in cases.status.value
    assert "holding a control character" in cases.status.value
    assert json.dumps(cases.status.value)  # one string, whatever it holds


def test_a_store_written_before_under_decomposed_names_is_still_read_and_added_to_in_place(tmp_path):
    """An earlier version kept a Mac folder's decomposed names in the store: its records are found as they are."""
    from training.data.datasets import load_case

    store = CorrectionsStore(tmp_path)
    store.accept("café", _rgb(0), _square().astype(bool), {"source": "/x/café.png"})
    decomposed = unicodedata.normalize("NFD", "café")
    for folder, suffix in (("images", ".png"), ("masks", ".png"), ("meta", ".json")):
        (tmp_path / folder / f"café{suffix}").rename(tmp_path / folder / f"{decomposed}{suffix}")
    record = json.loads((tmp_path / "meta" / f"{decomposed}.json").read_text())
    (tmp_path / "meta" / f"{decomposed}.json").write_text(json.dumps({**record, "id": decomposed}))
    assert store.check().problems == () and store.has("café") and store.has(decomposed)
    listing = usable_cases(tmp_path)
    assert [case.case_id for case in listing.cases] == ["café"] and load_case(listing.cases[0])[1].sum() == 900
    with pytest.raises(FileExistsError):  # accepting it again meets the old record, not a second one beside it
        store.accept("café", _rgb(0), _square().astype(bool), {"source": "/x/café.png"})
    store.accept("café", _rgb(3), _square().astype(bool), {"source": "/x/café.png"}, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "meta").iterdir()) == [f"{decomposed}.json"] and store.check().problems == ()


def test_an_accepted_case_whose_file_holds_another_photo_now_is_not_shown_with_the_old_mask(make_napari_viewer, qtbot, plugin_env, tmp_path):  # noqa: F811
    from training.corrections.store import image_sha256
    from training.data.imageio import read_image

    folder = tmp_path / "clinic"
    folder.mkdir()
    photo = folder / "IMG_0001.png"
    Image.fromarray(_rgb(1)).save(photo)
    old = read_image(photo)  # accepted in an earlier session, from this very file
    CorrectionsStore(plugin_env["store"]).accept(
        "IMG_0001", old, _square().astype(bool), {"source": str(photo.absolute()), "image_sha256": image_sha256(old)})
    Image.fromarray(_rgb(2)).save(photo)  # another photo saved over it since (a camera's numbering started again)
    viewer = make_napari_viewer()
    cases, review = _dock(viewer, "Cases"), _dock(viewer, "Review and export")
    review.confirm = lambda *_: True
    review.export_folder.value = str(tmp_path / "out")
    cases.open_folder(folder)
    cases.show_case(0)
    assert "IMG_0001 mask" not in viewer.layers  # the old photo's mask was drawn on the new one, read "accepted"
    assert cases.state(cases.cases[0]) == "new"
    assert review.export() is None and not (tmp_path / "out").exists()  # it exported the old mask for the new photo
