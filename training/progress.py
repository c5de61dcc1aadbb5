"""A tqdm reporter for the training loop (the command line's progress bars)."""

from __future__ import annotations

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
