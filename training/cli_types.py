"""argparse types that bound numbers at the command line, with the model layer's limits.

``--samples 100000000`` is refused by argparse in one line (``error:
argument --samples: ...``, exit 2) before any model is loaded; the model
layer (:mod:`model.limits`, ``Segmenter.sampling_settings``) checks the same
bounds again for the plugin and the Python API.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from model.limits import MAX_SAMPLES, MAX_SEED, MAX_STEPS


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
