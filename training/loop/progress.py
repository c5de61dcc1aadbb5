"""Reporters for the training loop: tqdm bars for people, JSON lines for programs.

``mlffm train|finetune --progress json`` writes one JSON object per line to
stdout, so a caller (the plugin's Fine-tune widget runs the command in a
child process) reads events instead of parsing text meant for people:

    {"event": "epoch_start", "epoch": 1, "epochs": 10, "batches": 25}
    {"event": "batch_end", "epoch": 1, "batch": 12, "batches": 25, "loss": 0.231, "terms": {"bce": 0.08, "dice": 0.12, "boundary": 0.031}}
    {"event": "epoch_end", "epoch": 1, "train_loss": 0.225, "val_dice": 0.861}
    {"event": "message", "text": "epoch 1: train loss 0.2250, val Dice 0.8610 (best), saved x.mlffm"}

Epoch 0 of ``epoch_end`` is the validation Dice before training (fine-tuning
scores the base model first), with a null ``train_loss``. ``batch_end`` is
sent at most every ``min_interval`` seconds and always for an epoch's last
batch; its ``terms`` are that batch's loss terms by name (``aux``: deep
supervision). Missing or non-finite numbers are null. Warnings and errors stay plain
text on stderr.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any, TextIO

from tqdm import tqdm


class TqdmReporter:
    """Shows one bar per epoch with the running loss; messages go above the bar."""

    def __init__(self, disable: bool = False) -> None:
        self.bar: tqdm | None = None
        self.disable = disable
        self.loss: float | None = None

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        self.bar = tqdm(total=batches, desc=f"epoch {epoch}/{epochs}", unit="batch", disable=self.disable, dynamic_ncols=True)

    def batch_end(self, losses: dict[str, float]) -> None:
        loss = losses.get("loss", float("nan"))
        self.loss = loss if self.loss is None else 0.95 * self.loss + 0.05 * loss
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{self.loss:.4f}")

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def message(self, text: str) -> None:
        tqdm.write(text)


def _number(value: Any) -> float | None:
    """A JSON-safe number: None for None, NaN and infinities."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class JsonLinesReporter:
    """Writes the loop's events as JSON lines (see the module docstring), flushed one by one."""

    def __init__(self, stream: TextIO | None = None, min_interval: float = 0.25) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.min_interval = min_interval
        self.epoch = 0
        self.batches = 0
        self.batch = 0
        self._last_sent = 0.0

    def _send(self, event: str, **fields: Any) -> None:
        self.stream.write(json.dumps({"event": event, **fields}) + "\n")
        self.stream.flush()

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        self.epoch, self.batches, self.batch = epoch, batches, 0
        self._send("epoch_start", epoch=epoch, epochs=epochs, batches=batches)

    def batch_end(self, losses: dict[str, float]) -> None:
        self.batch += 1
        now = time.monotonic()
        if self.batch < self.batches and now - self._last_sent < self.min_interval:
            return
        self._last_sent = now
        terms = {name: _number(value) for name, value in losses.items() if name != "loss"}
        self._send("batch_end", epoch=self.epoch, batch=self.batch, batches=self.batches, loss=_number(losses.get("loss")), terms=terms)

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self._send("epoch_end", epoch=epoch, train_loss=_number(metrics.get("train_loss")), val_dice=_number(metrics.get("val_dice")))

    def message(self, text: str) -> None:
        self._send("message", text=text)


def make_reporter(kind: str) -> TqdmReporter | JsonLinesReporter:
    """'bars' (tqdm, for a terminal) or 'json' (JSON lines on stdout, for programs)."""
    if kind == "bars":
        return TqdmReporter()
    if kind == "json":
        return JsonLinesReporter()
    raise ValueError(f"--progress must be 'bars' or 'json', got {kind!r}")
