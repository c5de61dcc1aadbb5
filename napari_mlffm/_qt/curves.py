"""A small live plot of a training run: the mean training loss and the validation Dice per epoch.

Drawn with QPainter, so the plugin needs no plotting library. Both axes
autoscale to their values (loss on the left, Dice on the right), so a
change of 0.962 -> 0.970 is visible; the caption says how many cases were
held out to score the Dice. Epoch 0 holds the Dice before training, when it
is known.
"""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

LOSS_COLOUR = QColor(255, 140, 60)
DICE_COLOUR = QColor(90, 170, 255)


def axis_range(values: list[float], floor: float | None = None, ceiling: float | None = None, min_span: float = 0.01) -> tuple[float, float]:
    """(low, high) covering ``values`` with 10 % padding and at least ``min_span``, clipped to [floor, ceiling]."""
    if not values:
        return (floor or 0.0, ceiling if ceiling is not None else 1.0)
    low, high = min(values), max(values)
    pad = max((high - low) * 0.1, min_span / 2)
    low, high = low - pad, high + pad
    if floor is not None:
        low = max(low, floor)
    if ceiling is not None:
        high = min(high, ceiling)
    return low, high


class TrainingCurves(QWidget):
    """Loss and Dice against epoch; ``add_point`` appends (or replaces) an epoch and repaints."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.points: dict[int, tuple[float, float]] = {}
        self.held_out: int | None = None
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("orange: mean training loss per epoch (left scale); blue: Dice on the held-out cases (right scale); both autoscale")

    def clear(self) -> None:
        self.points = {}
        self.held_out = None
        self.update()

    def set_held_out(self, cases: int) -> None:
        self.held_out = int(cases)
        self.update()

    def scales(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """((loss low, loss high), (Dice low, Dice high)) as drawn."""
        losses, dices = self._series(0), self._series(1)
        loss = axis_range([v for _, v in losses], floor=0.0, min_span=1e-3)
        dice = axis_range([v for _, v in dices], floor=0.0, ceiling=1.0, min_span=0.01)
        return loss, dice

    def add_point(self, epoch: int, loss: float, dice: float) -> None:
        self.points[epoch] = (loss, dice)
        self.update()

    def _series(self, index: int) -> list[tuple[int, float]]:
        return [(e, v[index]) for e, v in sorted(self.points.items()) if math.isfinite(v[index])]

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        margin_left, margin_right, margin_top, margin_bottom = 44, 44, 10, 20
        area = QRectF(margin_left, margin_top, max(self.width() - margin_left - margin_right, 10), max(self.height() - margin_top - margin_bottom, 10))
        painter.setPen(QPen(QColor(140, 140, 140), 1))
        painter.drawRect(area)
        losses, dices = self._series(0), self._series(1)
        if not losses and not dices:
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "loss and val Dice appear here, epoch by epoch")
            painter.end()
            return
        last_epoch = max(max(self.points), 1)
        (loss_low, loss_high), (dice_low, dice_high) = self.scales()

        def polyline(series: list[tuple[int, float]], low: float, high: float, colour: QColor) -> None:
            span = max(high - low, 1e-12)
            points = [QPointF(area.left() + area.width() * e / last_epoch, area.bottom() - area.height() * min(max((v - low) / span, 0.0), 1.0)) for e, v in series]
            painter.setPen(QPen(colour, 2))
            painter.drawPolyline(QPolygonF(points))
            for point in points:
                painter.drawEllipse(point, 2.5, 2.5)

        polyline(losses, loss_low, loss_high, LOSS_COLOUR)
        polyline(dices, dice_low, dice_high, DICE_COLOUR)
        painter.setPen(LOSS_COLOUR)
        painter.drawText(QRectF(0, area.top() - 7, margin_left - 4, 14), Qt.AlignmentFlag.AlignRight, f"{loss_high:.3g}")
        painter.drawText(QRectF(0, area.bottom() - 7, margin_left - 4, 14), Qt.AlignmentFlag.AlignRight, f"{loss_low:.3g}")
        painter.setPen(DICE_COLOUR)
        painter.drawText(QRectF(area.right() + 4, area.top() - 7, margin_right, 14), Qt.AlignmentFlag.AlignLeft, f"{dice_high:.3f}")
        painter.drawText(QRectF(area.right() + 4, area.bottom() - 7, margin_right, 14), Qt.AlignmentFlag.AlignLeft, f"{dice_low:.3f}")
        painter.setPen(self.palette().windowText().color())
        latest = self.points[max(self.points)]
        held = f" ({self.held_out} held out)" if self.held_out is not None else ""
        caption = f"epoch {max(self.points)}: loss {latest[0]:.4f}, Dice{held} {latest[1]:.4f}"
        painter.drawText(QRectF(area.left(), area.bottom() + 3, area.width(), margin_bottom - 3), Qt.AlignmentFlag.AlignHCenter, caption)
        painter.end()
