"""argparse types that bound numbers at the command line, with the model layer's limits.

``--samples 100000000`` is refused by argparse in one line (``error:
argument --samples: ...``, exit 2) before any model is loaded; the model
layer (:mod:`model.inputs.limits`, ``Segmenter.sampling_settings``) checks the same
bounds again for the plugin and the Python API.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from model.inputs.limits import MAX_SAMPLES, MAX_SEED, MAX_STEPS


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers in ``low..high``."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


samples_arg = bounded_int(1, MAX_SAMPLES)
steps_arg = bounded_int(1, MAX_STEPS)
seed_arg = bounded_int(0, MAX_SEED)


def bounded_float(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` accepting finite floats in ``[low, high]`` (``(low, high]`` with ``low_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text[:40]!r}") from None
        inside = (low < value if low_open else low <= value) and value <= high
        if not inside:  # also refuses nan and inf
            raise argparse.ArgumentTypeError(f"must be in {'(' if low_open else '['}{low:g}, {high:g}], got {text[:40]}")
        return value

    parse.__name__ = "number"
    return parse


# Training numbers: bounded before any data is read or memory allocated.
epochs_arg = bounded_int(1, 1_000_000)
batch_size_arg = bounded_int(1, 4096)
limit_arg = bounded_int(1, 10_000_000)
lr_arg = bounded_float(0.0, 10.0, low_open=True)
minutes_arg = bounded_float(0.0, 60 * 24 * 365, low_open=True)
probability_arg = bounded_float(0.0, 1.0)


def path_arg(text: str) -> Path:
    """An argparse ``type`` for a path that refuses the empty string (``-o "$UNSET"`` would otherwise mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return Path(text)



FLAT_FIELD_HELP = "divide out vignetting, a black frame and uneven light before the network (model.inputs.shading)"


def add_flat_field_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--flat-field on|off``: ``what`` says what the choice does (override, or store in the written model)."""
    parser.add_argument("--flat-field", choices=("on", "off"), help=f"{FLAT_FIELD_HELP}: {what}")


def flat_field_choice(value: str | None, model_choice: bool) -> bool:
    """The flat-field choice a run uses: the parsed ``--flat-field`` ("on", "off"), or ``model_choice`` when not given."""
    return model_choice if value is None else value == "on"
