"""A small live plot of a training run: the mean training loss and the validation Dice per epoch.

Drawn with QPainter, so the plugin needs no plotting library. The loss has
its own scale (0 to its largest value, left axis); the Dice is on 0-1
(right axis). Epoch 0 holds the Dice before training, when it is known.
"""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

LOSS_COLOUR = QColor(255, 140, 60)
DICE_COLOUR = QColor(90, 170, 255)


class TrainingCurves(QWidget):
    """Loss and Dice against epoch; ``add_point`` appends (or replaces) an epoch and repaints."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.points: dict[int, tuple[float, float]] = {}
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("orange: mean training loss per epoch (left scale); blue: validation Dice (0-1, right scale)")

    def clear(self) -> None:
        self.points = {}
        self.update()

    def add_point(self, epoch: int, loss: float, dice: float) -> None:
        self.points[epoch] = (loss, dice)
        self.update()

    def _series(self, index: int) -> list[tuple[int, float]]:
        return [(e, v[index]) for e, v in sorted(self.points.items()) if math.isfinite(v[index])]

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        margin_left, margin_right, margin_top, margin_bottom = 44, 36, 10, 20
        area = QRectF(margin_left, margin_top, max(self.width() - margin_left - margin_right, 10), max(self.height() - margin_top - margin_bottom, 10))
        painter.setPen(QPen(QColor(140, 140, 140), 1))
        painter.drawRect(area)
        losses, dices = self._series(0), self._series(1)
        if not losses and not dices:
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "loss and val Dice appear here, epoch by epoch")
            painter.end()
            return
        last_epoch = max(max(self.points), 1)
        top_loss = max((v for _, v in losses), default=1.0) or 1.0

        def polyline(series: list[tuple[int, float]], top: float, colour: QColor) -> None:
            points = [QPointF(area.left() + area.width() * e / last_epoch, area.bottom() - area.height() * min(max(v / top, 0.0), 1.0)) for e, v in series]
            painter.setPen(QPen(colour, 2))
            painter.drawPolyline(QPolygonF(points))
            for point in points:
                painter.drawEllipse(point, 2.5, 2.5)

        polyline(losses, top_loss, LOSS_COLOUR)
        polyline(dices, 1.0, DICE_COLOUR)
        painter.setPen(LOSS_COLOUR)
        painter.drawText(QRectF(0, area.top() - 7, margin_left - 4, 14), Qt.AlignmentFlag.AlignRight, f"{top_loss:.3g}")
        painter.drawText(QRectF(0, area.bottom() - 7, margin_left - 4, 14), Qt.AlignmentFlag.AlignRight, "0")
        painter.setPen(DICE_COLOUR)
        painter.drawText(QRectF(area.right() + 4, area.top() - 7, margin_right, 14), Qt.AlignmentFlag.AlignLeft, "1")
        painter.drawText(QRectF(area.right() + 4, area.bottom() - 7, margin_right, 14), Qt.AlignmentFlag.AlignLeft, "0")
        painter.setPen(self.palette().windowText().color())
        latest = self.points[max(self.points)]
        caption = f"epoch {max(self.points)}: loss {latest[0]:.4f}, val Dice {latest[1]:.4f}"
        painter.drawText(QRectF(area.left(), area.bottom() + 3, area.width(), margin_bottom - 3), Qt.AlignmentFlag.AlignHCenter, caption)
        painter.end()
