"""The "Fine-tune" dock widget: train on the corrections store in a subprocess, manage model versions.

"Adapt to my corrections" runs ``mlffm adapt`` the same way: it picks
calibration alone or fine-tune + calibration by held-out Dice and writes an
``adapted-*`` version whose card shows the Dice and ECE before and after.

The work runs as ``python -m training.cli finetune`` (or ``adapt``) in a child process, so
GPU memory is freed when it ends and a crash cannot take napari down. Cancel
terminates the child and removes its partial outputs; the base model is
only ever read.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from magicgui.widgets import ComboBox, FileEdit, FloatSpinBox, Label, PushButton, SpinBox
from napari.qt.threading import create_worker

from model.devices import DEVICE_CHOICES
from model.files.checkpoint import remove_stale_temporaries
from training.corrections.model_store import list_versions, new_version_path, write_card
from training.files.outputs import lock_path_for
from training.commands.adapt import work_folder_for
from training.loop.trainer import resume_path_for

from ..settings import SETTINGS
from . import common, dock_life
from .curves import TrainingCurves
from .dock_container import DockContainer
from .progress import InlineProgress

HELD_OUT = re.compile(r"held out (\d+)")  # in the CLI's "fine-tuning on N cases (+R replay), held out K; ..." message


def dice_change(card: dict) -> str:
    """'Dice 0.812 -> 0.845' from a model card, or '' when it lacks the numbers (or they are no Dice in [0, 1])."""
    before, after = _share(card.get("val_dice_before")), _share(card.get("val_dice_after"))
    if before is not None and after is not None:
        return f"Dice {before:.3f} -> {after:.3f}"
    return ""


def _share(value: object) -> float | None:
    """``value`` when it is a real number in [0, 1] (a Dice, an ECE), else None: a card is a file anyone may edit."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0.0 <= value <= 1.0 else None  # NaN fails both comparisons


def finetune_command(store: Path, base: str | None, output: Path, epochs: int, minutes: float, device: str) -> list[str]:
    command = [sys.executable, "-m", "training.cli", "finetune", str(store), "-o", str(output), "--device", device, "--progress", "json"]
    if base:
        command += ["--checkpoint", base]
    command += ["--time-budget", str(minutes)] if minutes > 0 else ["--epochs", str(epochs)]
    return command


def adapt_command(store: Path, base: str | None, output: Path, minutes: float, device: str) -> list[str]:
    """``mlffm adapt`` with JSON progress; ``minutes`` 0 keeps adapt's default budget."""
    command = [sys.executable, "-m", "training.cli", "adapt", str(store), "-o", str(output), "--device", device, "--progress", "json"]
    if base:
        command += ["--checkpoint", base]
    return command + (["--time-budget", str(minutes)] if minutes > 0 else [])


def adapt_change(card: dict) -> str:
    """'calibration: held-out Dice 0.918 -> 0.938, ECE 0.031 -> 0.024' from an adapted model's card, or ''."""
    method = card.get("method")
    if not isinstance(method, str) or not method.isprintable() or not 0 < len(method) <= 40:
        return ""
    text = f"{method}: held-out {dice_change(card)}"
    before, after = _share(card.get("ece_before")), _share(card.get("ece_after"))
    if before is not None and after is not None:
        text += f", ECE {before:.3f} -> {after:.3f}"
    return text


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def widget_event(line: str) -> tuple:
    """One line of ``mlffm finetune --progress json`` output -> what the widget acts on.

    ('epoch', k, n) as epoch k of n starts; ('batch', k, b, batches, loss);
    ('curve', epoch, mean loss, val Dice) as an epoch ends (epoch 0: the
    Dice before, loss NaN); ('line', text) for messages and for any line
    that is not an event (warnings and errors on stderr).
    """
    try:
        event = json.loads(line)
    except ValueError:
        return ("line", line)
    kind = event.get("event") if isinstance(event, dict) else None
    try:
        if kind == "epoch_start":
            return ("epoch", int(event["epoch"]), int(event["epochs"]))
        if kind == "batch_end":
            return ("batch", int(event["epoch"]), int(event["batch"]), int(event["batches"]), _number(event.get("loss")))
        if kind == "epoch_end":
            return ("curve", int(event["epoch"]), _number(event.get("train_loss")), _number(event.get("val_dice")))
        if kind == "message":
            return ("line", str(event["text"]))
        if kind == "stage":  # mlffm adapt: a stage starts (total: its items, or null)
            total = event.get("total")
            return ("stage", str(event["name"]), None if total is None else int(total))
        if kind == "item":
            return ("item", int(event["done"]), int(event["total"]))
    except (KeyError, TypeError, ValueError):
        pass
    return ("line", line)


def _cli_priority():
    """A ``preexec_fn`` giving the child the niceness of napari's main thread, i.e. of ``mlffm finetune`` run from the same shell.

    On Linux niceness is per thread and a child inherits its parent
    *thread's*; the worker thread that starts the child may run at another.
    """
    if not hasattr(os, "getpriority"):
        return None
    wanted = os.getpriority(os.PRIO_PROCESS, os.getpid())  # the process's main thread

    def apply() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, wanted)
        except OSError:  # raising priority may need privileges: keep the inherited one
            pass

    return apply


def finetune_job(command: list[str], handle: dict):
    """Worker body: runs the command and yields :func:`widget_event` tuples; returns (exit code, last text lines)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, preexec_fn=_cli_priority())
    handle["process"] = process
    tail: list[str] = []
    try:
        for line in process.stdout:
            line = line.strip()
            if not line:
                continue
            event = widget_event(line)
            if event[0] == "line":
                tail = (tail + [event[1]])[-20:]
            yield event
        return process.wait(), tail
    finally:
        if process.poll() is None:
            process.kill()  # SIGTERM would be a graceful stop that saves; a cancelled run saves nothing
            process.wait(timeout=30)


class FinetuneWidget(common.RunCancel, DockContainer):
    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        settings = SETTINGS.get()
        self.store = FileEdit(label="corrections store", mode="d", value=str(settings.store_path))
        self.model_folder = FileEdit(label="model folder", mode="d", value=str(settings.model_folder_path))
        self.base = ComboBox(label="base model", choices=common.model_choices)
        self.base_file = FileEdit(label="base file", filter="*.mlffm", mode="r", visible=False)
        self.epochs = SpinBox(label="epochs", value=10, min=1, max=1000)
        self.minutes = FloatSpinBox(label="or time budget (min, 0 = epochs)", value=0.0, min=0.0, max=10_000.0)
        self.device = ComboBox(label="device", choices=list(DEVICE_CHOICES), value=settings.device)
        self.run_button = PushButton(text="Fine-tune")
        self.status = Label(value="")
        self.versions = ComboBox(label="model versions", choices=self._version_choices)
        self.adapt_button = PushButton(text="Adapt to my corrections")
        self.use_button = PushButton(text="Use in Propose masks")
        self.extend([self.store, self.model_folder, self.base, self.base_file, self.epochs, self.minutes, self.device, self.run_button, self.adapt_button, self.status, self.versions, self.use_button])
        self.kind = "finetune"  # or "adapt": what the running (or last) job is
        self.curves = TrainingCurves()
        common.insert_native_after(self, self.status, self.curves)
        self._progress = InlineProgress()  # in the widget, not napari's activity bar: the child process keeps the CPU
        common.insert_native_after(self, self.status, self._progress)
        self.finish_rows(self.status)
        self.worker = None
        self.output: Path | None = None
        self._handle: dict = {}
        self._cancelled = False
        self.base.changed.connect(lambda v: setattr(self.base_file, "visible", v == common.OTHER_FILE))
        self.run_button.changed.connect(self.run_or_cancel)
        self.adapt_button.changed.connect(self.adapt_or_cancel)
        self.use_button.changed.connect(self.use_selected)
        self.store.changed.connect(lambda v: SETTINGS.update(corrections_store=str(v)))
        self.model_folder.changed.connect(self._on_model_folder)
        dock_life.watch_closing(self)  # destroyed, or closed by its dock's X
        self._select_active()

    def _version_choices(self, widget=None):
        versions = list_versions(SETTINGS.get().model_folder_path)
        return [(v.label + (f" ({dice_change(v.card)})" if dice_change(v.card) else ""), str(v.path) if v.path else "") for v in versions]

    def _on_model_folder(self, value) -> None:
        SETTINGS.update(model_folder=str(value))
        self.base.reset_choices()
        self._select_active()

    def _select_active(self):
        self.versions.reset_choices()
        active = SETTINGS.get().active_model
        if active in list(self.versions.choices):
            self.versions.value = active

    def use_selected(self, *_):
        value = self.versions.value
        if value and not Path(value).is_file():  # deleted since the list was drawn: Propose would fall back silently
            self.status.value = f"{Path(value).name} no longer exists: choose another version"
            self.versions.reset_choices()
            return
        SETTINGS.update(active_model=value or "")
        self.status.value = f"Propose masks now uses {Path(value).stem if value else 'the shipped default'}"

    def adapt_or_cancel(self, *_):
        if self.running:
            self.cancel()
        else:
            self.start("adapt")

    def start(self, kind: str = "finetune"):
        store = Path(self.store.value)
        if not (store / "images").is_dir():
            common.notify_error(f"{store}: not a corrections store (accept some cases first)")
            return None
        try:
            base = common.chosen_checkpoint(self.base.value, self.base_file.value)
        except ValueError as err:
            common.notify_error(err)
            return None
        folder = SETTINGS.get().model_folder_path
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            common.notify_error(f"{folder}: cannot make the model folder here ({err.strerror or type(err).__name__}); choose another in the settings")
            return None
        self.kind = kind
        if kind == "adapt":
            self.output = new_version_path(folder, "adapted")
            command = adapt_command(store, base, self.output, self.minutes.value, self.device.value)
        else:
            self.output = new_version_path(folder)
            command = finetune_command(store, base, self.output, self.epochs.value, self.minutes.value, self.device.value)
        self._handle = {}
        self._cancelled = False
        self.curves.clear()
        bar = self._progress
        what = "adapting" if kind == "adapt" else "fine-tuning"
        bar.begin(f"starting the {what} process...", 0 if self.minutes.value > 0 or kind == "adapt" else self.epochs.value)
        worker = create_worker(finetune_job, command, self._handle, _start_thread=False)
        worker.yielded.connect(lambda event: self._on_event(bar, event))
        worker.returned.connect(self._on_done)
        worker.errored.connect(lambda err: self._fail(common.one_line(err)))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        (self.adapt_button if kind == "adapt" else self.run_button).text = "Cancel"
        (self.run_button if kind == "adapt" else self.adapt_button).enabled = False
        self.status.value = "starting..."
        worker.start()
        return worker

    def cancel(self, *_):
        if self.worker is None:
            return
        self._cancelled = True
        process = self._handle.get("process")
        if process is not None and process.poll() is None:
            process.kill()  # SIGTERM would be a graceful stop that saves; a cancelled run saves nothing
        self.worker.quit()
        self._show_cancelling(self.adapt_button if self.kind == "adapt" else self.run_button)  # the button that reads Cancel

    def _on_event(self, bar, event):
        if self._cancelled or self.worker is None or self._closed:
            return  # a late message from a run that has ended, or a closed widget
        if event[0] == "stage":
            _, name, total = event
            self._stage = name
            bar.begin(f"adapting: {name}", total or 0)  # 0: a busy bar (fine-tuning runs for a time, not a count)
            self.status.value = name
        elif event[0] == "item":
            _, done, total = event
            text = f"{getattr(self, '_stage', 'adapting')}: {done}/{total}"
            if bar.set(done, total, text):  # throttled
                self.status.value = text
        elif event[0] == "epoch" and self.kind == "adapt":
            self.status.value = f"fine-tune candidate: epoch {event[1]}"
        elif event[0] == "epoch":
            _, k, n = event
            self._epochs = n
            bar.set(k - 1, n, f"epoch {k}/{n}", force=True)
            self.status.value = f"epoch {k}"
        elif event[0] == "batch":
            _, k, b, batches, loss = event
            text = f"epoch {k}: batch {b}/{batches}" + ("" if math.isnan(loss) else f", loss {loss:.4f}")
            n = getattr(self, "_epochs", k)
            if bar.set((k - 1) * batches + b, n * batches, text):  # throttled: a batch may take milliseconds
                self.status.value = text
        elif event[0] == "curve":
            self.curves.add_point(*event[1:])
        else:
            held_out = HELD_OUT.search(event[1])
            if held_out:
                self.curves.set_held_out(int(held_out.group(1)))
            self.status.value = event[1][:120]

    def _on_done(self, result):
        code, tail = result
        if self._cancelled:
            return
        if code != 0 or self.output is None or not self.output.is_file():
            self._fail(next((line for line in reversed(tail) if "error" in line), f"fine-tuning failed (exit {code})"))
            return
        card = write_card(self.output)
        if self._closed:
            return
        self.versions.reset_choices()
        where = ""
        if str(self.output) in list(self.versions.choices):
            self.versions.value = str(self.output)
        else:  # the model folder setting changed during the run: the version is not in the list shown
            where = f" in {self.output.parent}"
        change = adapt_change(card) if self.kind == "adapt" else dice_change(card)
        if self.kind == "adapt":
            self.status.value = f"saved {self.output.name}{where}" + (f": {change}" if change else "")
        else:
            self.status.value = f"saved {self.output.name}{where}" + (f": held-out {change}" if change else "")

    def _fail(self, message: str):
        if self._closed:
            return
        self.status.value = "failed: " + message
        common.notify_error(message)

    def _on_finished(self):
        if self._cancelled and self.output is not None:
            for path in (self.output, resume_path_for(self.output), self.output.with_suffix(".json"), lock_path_for(self.output)):
                path.unlink(missing_ok=True)
                remove_stale_temporaries(path)  # a child killed inside a save leaves its half-written .<name>.*.tmp
            shutil.rmtree(work_folder_for(self.output), ignore_errors=True)  # an adapt child's fine-tune candidate
            if not self._closed:
                self.status.value = "cancelled; base model untouched"
        elif self.output is not None:
            resume_path_for(self.output).unlink(missing_ok=True)  # only --resume needs it; the version list stays clean
        if not self._closed:
            self.run_button.enabled = self.adapt_button.enabled = True
            if self.kind == "adapt":
                self.adapt_button.text = "Adapt to my corrections"
        self._end_run(self.run_button, "Fine-tune")
