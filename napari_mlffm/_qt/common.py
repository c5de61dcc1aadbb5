"""Pieces shared by the dock widgets: image-layer choices, model choices, dialogs, messages."""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import FileEdit
from napari.layers import Image
from napari.utils.notifications import show_error, show_info, show_warning

from model import Segmenter, SegmenterConfig
from training.corrections.model_store import list_versions

from .. import layer_focus
from ..layer_focus import real_layer
from ..results import is_uncertainty_map, layer_names
from ..settings import SETTINGS

OTHER_FILE = "other file..."
_SEGMENTERS: dict[tuple[str, str], Segmenter] = {}


def image_layer_choices(viewer):
    """Choices of the image lists: every Image layer but the uncertainty maps the plugin drew for another."""

    def choices(widget=None) -> list[tuple[str, Image]]:
        images = [layer for layer in viewer.layers if isinstance(layer, Image)]
        maps = {layer_names(layer.name)["uncertainty"] for layer in images}
        return [(layer.name, layer) for layer in images if layer.name not in maps and not is_uncertainty_map(layer)]

    return choices


def image_of_layer(viewer, layer) -> Image | None:
    """The image layer ``layer`` belongs to: itself if it is an image to review, or the image whose mask,
    proposals, uncertainty, clicks or box layer it is; None otherwise."""
    if layer is None:
        return None
    images = [image for _, image in image_layer_choices(viewer)()]
    if isinstance(layer, Image) and any(real_layer(image) is real_layer(layer) for image in images):
        return layer
    owner = layer_focus.owner_image_name(viewer, layer)
    return next((image for image in images if image.name == owner), None)


def follow_active_image(dock) -> None:
    """``dock.image`` follows the viewer's active layer: selecting an image, or its mask, clicks or box layer,
    chooses that image, so the dock's keys (Shift-A, Shift-G, Shift-R, ...) act on what the annotator works on."""

    def on_active(*_):
        if getattr(dock, "_closed", False) or layer_focus.placing():
            return
        image = image_of_layer(dock.viewer, dock.viewer.layers.selection.active)
        if image is None or (dock.image.value is not None and real_layer(dock.image.value) is real_layer(image)):
            return
        try:
            dock.reset_choices()  # a layer just inserted may not be a choice yet
            dock.image.value = image
        except (ValueError, RuntimeError):
            pass  # not (yet) a choice, or the dock is being torn down

    dock.viewer.layers.selection.events.active.connect(on_active)


def model_choices(widget=None) -> list[tuple[str, str]]:
    """(label, value) pairs: value '' is the shipped default, a path a model file, OTHER_FILE asks for one."""
    versions = list_versions(SETTINGS.get().model_folder_path)
    choices = [(v.label, str(v.path) if v.path else "") for v in versions]
    active = SETTINGS.get().active_model
    if active and Path(active).is_file() and active not in [value for _, value in choices]:
        choices.append((Path(active).stem, active))
    return choices + [(OTHER_FILE, OTHER_FILE)]


def chosen_checkpoint(choice: str, file_value) -> str | None:
    """The model a (model ComboBox, FileEdit) pair points at: None for the shipped default."""
    if choice == OTHER_FILE:
        path = Path(str(file_value))
        if not path.is_file():
            raise ValueError(f"{path}: choose a model file (.mlffm)")
        return str(path)
    return choice or None


class RunCancel:
    """A widget whose one button starts work and, while it runs, cancels it."""

    worker = None
    _closed = False  # set when the Qt widget is destroyed (the viewer closed): no more UI updates

    def _on_destroyed(self, *_):
        self._closed = True
        self.cancel()

    @property
    def running(self) -> bool:
        return self.worker is not None

    _cancelling = False

    def run_or_cancel(self, *_):
        if self._cancelling:
            return  # a click while a cancel is under way neither cancels again nor starts a run
        if self.running:
            self.cancel()
        else:
            self.start()

    def _show_cancelling(self, button) -> None:
        """The button says at once that the cancel was heard, and takes no clicks until the run has ended."""
        self._cancelling = True
        if not self._closed:
            button.text = "Cancelling..."
            button.enabled = False

    _error_prefix = "failed: "  # the status line's start when a run fails

    def _launch(self, worker, button, status_text: str, on_done):
        """Start a created (not yet started) worker: its result to ``on_done``, errors and end to this widget; ``button`` says Cancel."""
        worker.returned.connect(on_done)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        button.text = "Cancel"
        self.status.value = status_text
        worker.start()
        return worker

    def _on_error(self, error) -> None:
        """A failed run: one line in the status and a notification (nothing once the widget is gone)."""
        if self._closed:
            return
        self.status.value = self._error_prefix + (error if isinstance(error, str) else one_line(error))
        notify_error(error)

    def _end_run(self, button, idle_text: str) -> None:
        """After a run: finish its progress read-out, forget the worker, restore the button (if the widget still exists)."""
        progress_bar = getattr(self, "_progress", None)
        if progress_bar is not None and not self._closed:
            progress_bar.finish()
        self.worker = None
        self._cancelling = False
        if not self._closed:
            button.text = idle_text
            button.enabled = True


def get_segmenter(checkpoint: str | None, device: str, flat_field: bool | None = None) -> Segmenter:
    """Load (once per file and device) a segmenter; runs in worker threads too.

    ``flat_field`` True or False overrides the model's flat-field correction
    (model/inputs/shading.py); None keeps the model's choice.
    """
    key = (checkpoint or "", device)
    if key not in _SEGMENTERS:
        _SEGMENTERS[key] = Segmenter.load(Path(checkpoint) if checkpoint else None, device)
    segmenter = _SEGMENTERS[key]
    if flat_field is None or flat_field == segmenter.config.flat_field:
        return segmenter
    return segmenter.with_options(flat_field=flat_field)


def proposal_record(segmenter: Segmenter, checkpoint: str | None, proposal, n_samples: int | None, steps: int | None, seed: int) -> dict:
    """What made a proposal, for its layers and records: model, device, and the samples and steps actually used."""
    return {
        "checkpoint": checkpoint or "shipped default", "checkpoint_id": segmenter.checkpoint_id, "device": str(segmenter.device),
        "samples": len(proposal.samples), "steps": segmenter.sampling_settings(n_samples, steps)[1], "seed": seed,
        "flat_field": segmenter.config.flat_field,
    }


def model_config(checkpoint: str | None) -> SegmenterConfig | None:
    """A model's config (its sampling defaults, flat-field choice, timesteps), read from its header only; None when it cannot be read."""
    try:
        return Segmenter.read_config(Path(checkpoint) if checkpoint else None)
    except (ValueError, OSError):
        return None


def forget_segmenters() -> None:
    _SEGMENTERS.clear()


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text


def notify_error(error: BaseException | str) -> None:
    show_error(error if isinstance(error, str) else one_line(error))


def notify(message: str, warning: bool = False) -> None:
    (show_warning if warning else show_info)(message)


def confirm(parent, title: str, question: str) -> bool:
    """Ask a yes/no question (tests replace this with a function returning a fixed answer)."""
    from qtpy.QtWidgets import QMessageBox

    answer = QMessageBox.question(parent, title, question, QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
    return answer == QMessageBox.Yes


def case_source(layer) -> str:
    """The source a layer's case is keyed by: its file (the reader and the Cases widget record it), else its name."""
    return str(layer.metadata.get("source") or layer.name)


def path_tail(path, max_chars: int = 40) -> str:
    """A path for a status line: whole if short, else '…/' and as many of its last parts as fit."""
    text = str(path)
    if len(text) <= max_chars:
        return text
    parts, tail = Path(text).parts, ""
    for part in reversed(parts):
        candidate = part if not tail else f"{part}/{tail}"
        if len(candidate) + 2 > max_chars:
            break
        tail = candidate
    return "…/" + (tail or Path(text).name[-(max_chars - 2):])


def insert_native_after(container, anchor, widget) -> None:
    """Put a plain Qt ``widget`` into a magicgui ``container``'s layout, right below the row holding ``anchor``."""
    layout = container.body.layout()
    for index in range(layout.count()):
        row = layout.itemAt(index).widget()
        if row is not None and (row is anchor.native or row.isAncestorOf(anchor.native)):
            layout.insertWidget(index + 1, widget)
            return
    layout.addWidget(widget)


ROW_LABEL_MAX_PX = 110  # a longer row label wraps onto a second line


def fit_width(container, *status_labels) -> None:
    """Keep a dock narrow: every label wraps, combo boxes and status lines never widen it.

    ``status_labels`` (magicgui Labels whose text changes: status, read-out)
    also ignore their text's width, so a long line wraps or is cut instead
    of pushing the canvas aside.
    """
    from qtpy.QtWidgets import QComboBox, QLabel, QSizePolicy

    for label in container.native.findChildren(QLabel):
        label.setWordWrap(True)
        if label.minimumWidth() > ROW_LABEL_MAX_PX:  # magicgui gives every row label the widest one's width
            label.setMinimumWidth(ROW_LABEL_MAX_PX)
    for combo in container.native.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(8)
    for row in container:
        if isinstance(row, FileEdit):  # magicgui's "Choose directory" took most of a narrow row: the path had ~40 px; "..." with a tooltip, as file pickers do
            row.choose_btn.text = "..."
            row.choose_btn.tooltip = f"choose the {'folder' if str(row.mode.value) == 'd' else 'file'} in a dialog"
    for label in status_labels:
        native = label.native
        native.setWordWrap(True)
        native.setMinimumWidth(1)
        native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)


def file_list(paths) -> str:
    """A dialog's list of files, one per line, by name (the folder is said once, above)."""
    return "\n".join(f"  {Path(p).name}" for p in paths)


def replace_question(stem: str, folder, replaced: list, removed: list) -> str:
    """The question before an export replaces files: every file it replaces and every one it removes, by name."""
    count = len(replaced) + len(removed)
    lines = [f"{count} file{'s' if count != 1 else ''} of {stem} {'are' if count != 1 else 'is'} already in {folder}. "
             f"Replace {'them' if count != 1 else 'it'}?"]
    if replaced:
        lines += ["Replaced:", file_list(replaced)]
    if removed:
        lines += ["Removed (this export has no such map, and its sidecar would not describe it):", file_list(removed)]
    return "\n".join(lines)
