"""The "Propose masks" dock widget: several diffusion proposals and an uncertainty map for an image."""

from __future__ import annotations


from magicgui.widgets import CheckBox, ComboBox, FileEdit, Label, PushButton, SpinBox
from napari.layers import Image
from napari.qt.threading import create_worker

from model import Segmenter
from model.config import SegmenterConfig
from model.devices import DEVICE_CHOICES
from training.corrections.store import image_sha256

from .. import cases_model, refining, results
from ..settings import SAMPLES_RANGE, SETTINGS, STEPS_RANGE
from . import common, dock_life
from .dock_container import DockContainer
from .progress import InlineProgress, progress_text


def propose_job(
    checkpoint: str | None, device: str, image, n_samples: int | None, steps: int | None, seed: int, flat_field: bool | None = None,
    hash_pixels: bool = False,
):
    """Worker body: yields (done, total) per DDIM step, returns (proposal, info).

    ``flat_field``: True or False overrides the model's flat-field correction; None keeps it.

    Out-of-GPU-memory fallbacks (fewer samples per batch, then the CPU)
    happen inside ``Segmenter.propose_iter`` and come back as ``proposal.notes``.
    Expected failures come back as (None, {"error": one line}).
    """
    try:
        segmenter = common.get_segmenter(checkpoint, device, flat_field)
        proposal = yield from segmenter.propose_iter(image, n_samples, steps, seed)
    except (ValueError, OSError, RuntimeError) as err:  # expected failures: bad model file, bad image, device
        return None, {"error": common.one_line(err)}
    info = {**common.proposal_record(segmenter, checkpoint, proposal, n_samples, steps, seed), "seconds": round(proposal.seconds, 3)}
    if hash_pixels:  # the image is its file's, as read: the Cases dock notices another photo saved over it later
        info["image_sha256"] = image_sha256(image)
    return proposal, info


def _bounded(spin: SpinBox, value: int, what: str) -> int:
    """``value`` within the spin box's range; a model default outside it is shown at the nearest bound, with a warning."""
    if spin.min <= value <= spin.max:
        return value
    shown = min(max(value, spin.min), spin.max)
    common.notify(f"the model's default of {value} {what} is outside {spin.min}..{spin.max}; using {shown}", warning=True)
    return shown


class ProposeWidget(common.RunCancel, DockContainer):
    """Inputs, a Run button that becomes Cancel, and a progress bar inside the widget."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        settings = SETTINGS.get()
        self.image = ComboBox(label="image", choices=common.image_layer_choices(napari_viewer), nullable=True)
        self.model = ComboBox(label="model", choices=common.model_choices)
        self.model_file = FileEdit(label="model file", filter="*.mlffm", mode="r", visible=False)
        self.device = ComboBox(label="device", choices=list(DEVICE_CHOICES), value=settings.device)
        fallback = SegmenterConfig()  # until the chosen model's own defaults are read
        # bounded by what the plugin and the model allow (settings.SAMPLES_RANGE / STEPS_RANGE, the model's timesteps)
        self.samples = SpinBox(label="proposals", value=settings.samples or fallback.default_samples, min=SAMPLES_RANGE[0], max=SAMPLES_RANGE[1])
        self.steps = SpinBox(label="DDIM steps", value=settings.steps or fallback.default_steps, min=STEPS_RANGE[0], max=STEPS_RANGE[1])
        self.seed = SpinBox(label="seed", value=settings.seed, min=0, max=2**31 - 1)
        self.flat_field = CheckBox(text="correct vignetting and uneven light", value=bool(settings.flat_field))
        self.flat_field.tooltip = (
            "divide out the image's illumination field (a dark frame, a light ramp) before the model sees it; "
            "helps on strongly vignetted images, costs a little on evenly lit ones with the shipped weights"
        )
        self.run_button = PushButton(text="Run")
        self.status = Label(value="")
        self.extend([
            self.image, self.model, self.model_file, self.device, self.samples, self.steps, self.seed, self.flat_field,
            self.run_button, self.status,
        ])
        self.worker = None
        self._progress = InlineProgress()
        common.insert_native_after(self, self.status, self._progress)
        self.finish_rows(self.status)
        self.cases = cases_model.for_viewer(napari_viewer)
        self._select_active_model()
        self._show_model_defaults()
        self.model.changed.connect(lambda v: setattr(self.model_file, "visible", v == common.OTHER_FILE))
        self.model.changed.connect(self._show_model_defaults)
        self.model_file.changed.connect(self._show_model_defaults)
        self.run_button.changed.connect(self.run_or_cancel)
        napari_viewer.layers.events.inserted.connect(self.reset_choices)
        napari_viewer.layers.events.removed.connect(self.reset_choices)
        SETTINGS.changed.connect(self._on_settings)
        dock_life.watch_closing(self)  # destroyed, or closed by its dock's X
        self.image.value = self._default_image()

    # ----- choices -----------------------------------------------------
    def _default_image(self):
        active = self.viewer.layers.selection.active
        choices = [c for c in self.image.choices if c is not None]
        if active in choices:
            return active
        return choices[-1] if choices else None

    def reset_choices(self, event=None) -> None:
        super().reset_choices()
        if self.image.value is None:
            self.image.value = self._default_image()

    def _select_active_model(self) -> None:
        self.model.reset_choices()
        wanted = self._active_seen = SETTINGS.get().active_model
        values = [c for c in self.model.choices]
        if wanted and wanted in values:
            try:
                Segmenter.read_config(wanted)
            except (ValueError, OSError) as err:  # CheckpointError is a ValueError: the dock still opens
                common.notify(f"the active model cannot be used ({err}); using the shipped default", warning=True)
                wanted = ""
        if wanted in values:
            self.model.value = wanted
        elif "" in values:
            self.model.value = ""

    def _on_settings(self, settings) -> None:
        if settings.active_model == self._active_seen:  # another setting (this dock's own Run saves some): keep the choice
            chosen = self.model.value
            self.model.reset_choices()
            if chosen in list(self.model.choices):
                self.model.value = chosen
            return
        self._select_active_model()

    def _on_destroyed(self, *_):
        SETTINGS.changed.disconnect(self._on_settings)
        super()._on_destroyed()

    def checkpoint(self) -> str | None:
        return common.chosen_checkpoint(self.model.value, self.model_file.value)

    def _model_config(self) -> SegmenterConfig | None:
        """The chosen model's config, from its header; None when no model is chosen or it cannot be read."""
        try:
            checkpoint = self.checkpoint()
        except ValueError:
            return None
        return common.model_config(checkpoint)

    def _show_model_defaults(self, *_) -> None:
        """Where the settings leave samples, steps or the flat field to the model, show the chosen model's own."""
        settings, config = SETTINGS.get(), self._model_config()
        if config is None:
            return
        if settings.flat_field is None:
            self.flat_field.value = config.flat_field
        # DDIM steps the chosen model can take: at most its training timesteps (and the plugin's limit)
        self.steps.max = max(STEPS_RANGE[0], min(STEPS_RANGE[1], int(config.diffusion.timesteps)))
        if settings.samples is None:
            self.samples.value = _bounded(self.samples, config.default_samples, "proposals")
        if settings.steps is None:
            self.steps.value = _bounded(self.steps, config.default_steps, "DDIM steps")

    # ----- running -----------------------------------------------------

    def start(self):
        layer = self.image.value
        if layer is None:
            common.notify_error("open an image first (File > Open, or File > Open Sample)")
            return None
        try:
            checkpoint = self.checkpoint()
        except ValueError as err:
            common.notify_error(err)
            return None
        # values equal to the model's own defaults are saved as "the model's", so another model brings its own
        config = self._model_config()
        own = (config.default_samples, config.default_steps, config.flat_field) if config is not None else (None, None, None)
        samples = None if self.samples.value == own[0] else self.samples.value
        steps = None if self.steps.value == own[1] else self.steps.value
        flat = None if own[2] is None or self.flat_field.value == own[2] else self.flat_field.value
        SETTINGS.update(device=self.device.value, samples=samples, steps=steps, seed=self.seed.value, flat_field=flat)
        try:  # a layer of another kind under a result name is refused now, not after the run
            found = results.case_layers(self.viewer, layer.name)
            results.check_case_layers(found, layer.name, 0, 0, sized=())
            refining.check_not_refining(layer)
            self.cases.check_source(common.case_source(layer))  # a name that makes no case id, or the open folder's file's id
        except ValueError as err:
            self._on_error(err)
            return None
        image = results.image_data(layer)
        started_with = layer.data
        info = {"source": common.case_source(layer), "image_layer": layer.name}
        bar = self._progress
        bar.begin(f"loading the model for {layer.name}...", self.steps.value)
        worker = create_worker(
            propose_job, checkpoint, self.device.value, image, self.samples.value, self.steps.value, self.seed.value,
            self.flat_field.value, hash_pixels=bool(layer.metadata.get("source")), _start_thread=False,
        )
        worker.yielded.connect(lambda done_total: self._on_step(bar, done_total))
        self._launch(worker, self.run_button, f"proposing masks for {layer.name}", lambda result: self._on_done(layer, info, result, started_with))
        return worker

    def _still_chosen(self, checkpoint: str) -> bool:
        """Whether the dock's model choice still points at ``checkpoint`` ("" for the shipped default)."""
        try:
            return (self.checkpoint() or "") == checkpoint
        except ValueError:  # "other file" with no file chosen
            return False

    def cancel(self, *_):
        if self.worker is not None:
            self.worker.quit()  # the sampler stops at its next DDIM step
            self._show_cancelling(self.run_button)
            if not self._closed:
                self.status.value = "cancelled"

    def _on_step(self, bar, done_total):
        done, total = done_total
        if not self._closed and not self._cancelling:
            bar.set(done, total, progress_text(done, total))

    def _shown_again(self, info, extra):
        """The image layer now showing the run's file with the pixels it was proposed for (its case put away and
        opened again while the run went on), or None."""
        if not cases_model.is_file_source(info["source"]) or not isinstance(extra.get("image_sha256"), str):
            return None
        for other in self.viewer.layers:
            if isinstance(other, Image) and common.case_source(other) == info["source"]:
                try:
                    if image_sha256(results.image_data(other)) == extra["image_sha256"]:
                        return other
                except (TypeError, ValueError):
                    continue
        return None

    def _land_away(self, info, proposal, extra) -> None:
        """A run whose image layer was closed meanwhile (Cases stepped on, or the annotator closed it): a file's
        proposal is its case's, kept there for when it is shown again; a layer without a file had only its layer."""
        name = info.get("image_layer", "the image")
        if cases_model.is_file_source(info["source"]):
            try:
                self.cases.set_proposal(info["source"], proposal, {**info, **extra})
            except ValueError as err:  # its case id is now another listed file's (another folder opened meanwhile)
                self._on_error(f"{name} was put away while its masks were proposed; results dropped: {common.one_line(err)}")
                return
            line = f"{name} was put away while its masks were proposed: they are kept with its case and shown when it is opened again"
        else:
            line = f"image layer '{name}' was closed while its masks were proposed; results dropped"
        self.status.value = line
        common.notify(line, warning=not cases_model.is_file_source(info["source"]))

    def _on_done(self, layer, info, result, started_with=None):
        proposal, extra = result
        if self._closed:
            return
        if proposal is None:
            self._on_error(extra["error"])
            return
        if layer not in self.viewer.layers:
            again = self._shown_again(info, extra)
            if again is None:
                self._land_away(info, proposal, extra)
                return
            layer, started_with = again, None  # stepped away and back: the same file's same pixels, on screen again
        if started_with is not None and layer.data is not started_with:
            self._on_error(f"image '{layer.name}' was given other pixels while its masks were proposed; results dropped: run again")
            return
        if common.case_source(layer) != info["source"]:  # a layer without a file is its name's case: the result is the old name's
            self._on_error(f"image '{info['image_layer']}' was renamed to '{layer.name}' while its masks were proposed; results dropped: run again")
            return
        info = {**info, **extra}
        ran = "" if info.get("checkpoint") in (None, "", "shipped default") else str(info["checkpoint"])
        if ran != SETTINGS.get().active_model and self._still_chosen(ran):
            # the model that has just run (so it loads) becomes the active one: the choice stays shown, Propose all uses it;
            # not when another model was chosen during the run (that choice stands, and becomes active when it runs)
            SETTINGS.update(active_model=ran)
        try:
            _, kept = results.add_proposal_layers(self.viewer, layer, proposal, info)
            self.cases.set_proposal(info["source"], proposal, info)  # the proposal belongs to the image's case, whichever widget shows it
        except ValueError as err:  # a layer under a result name is not this image's (nothing was changed), or the case id is taken
            self._on_error(err)
            return
        message = f"{proposal.samples.shape[0]} proposals in {proposal.seconds:.1f} s on {extra['device']}"
        if kept:
            message += "; your edited mask was kept"
        for note in proposal.notes:
            common.notify(note, warning=True)
        self.status.value = message

    def _on_finished(self):
        self._end_run(self.run_button, "Run")
