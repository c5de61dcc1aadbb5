"""Type and range checks of config values, derived from the frozen dataclasses' fields.

A config read from a file (a checkpoint's JSON) is checked here, field by
field, *before* any dataclass is constructed or anything allocated: ints
where the annotation says int (a bool or a float is not an int), floats
finite, tuples of bounded length, and every number within :data:`BOUNDS`.
The same checks run on a config built in Python when a :class:`Segmenter`
is made from it, so the API, the command line and checkpoints share them.

The checks follow the dataclasses: a field added with a default needs no
change here (its type is checked from its annotation, and a number without
a row in :data:`BOUNDS` must lie in ``-DEFAULT_BOUND..DEFAULT_BOUND``); give
it a row when a tighter range matters.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from typing import Any

from ..inputs.limits import MAX_SAMPLES, MAX_STEPS, MAX_WORKING_SIZE

DEFAULT_BOUND = 1 << 20
MAX_TUPLE_LENGTH = 16

BOUNDS: dict[str, tuple[float, float]] = {
    # field name (or "Class.field"): inclusive (low, high); for tuples, each item's range.
    "SegmenterConfig.size": (4, MAX_WORKING_SIZE),
    "NetworkConfig.in_channels": (1, 64),
    "NetworkConfig.widths": (4, 2048),
    "NetworkConfig.mask_widths": (4, 2048),
    "NetworkConfig.image_blocks": (1, 16),
    "NetworkConfig.mask_blocks": (1, 16),
    "NetworkConfig.time_dim": (4, 4096),
    "NetworkConfig.deep_supervision": (0, 6),
    "DiffusionConfig.timesteps": (2, 100_000),
    "SegmenterConfig.default_steps": (1, MAX_STEPS),
    "SegmenterConfig.default_samples": (1, MAX_SAMPLES),
    "SegmenterConfig.default_refine_samples": (1, MAX_SAMPLES),
    "SegmenterConfig.output_smoothing": (0.0, 64.0),
    "SegmenterConfig.flip_views": (1, 4),
    "SegmenterConfig.probability_temperature": (1e-3, 1e3),
    "SegmenterConfig.decision_threshold": (0.0, 1.0),
}

LENGTHS: dict[str, tuple[int, int]] = {
    "NetworkConfig.widths": (2, 8),
    "NetworkConfig.mask_widths": (2, 8),
}


def check_config_values(cls: type, data: Any, where: str = "") -> None:
    """Raise ValueError naming the first field of ``data`` (a dict meant for ``cls``) of the wrong type or range.

    Nested dataclass fields are checked recursively; unknown keys are
    refused. Missing keys are fine (the dataclass default applies).
    """
    if not isinstance(data, dict):
        raise ValueError(f"{where or cls.__name__} must be a JSON object, got {_kind(data)}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        _check_value(hints[name], value, f"{where}{name}", f"{cls.__name__}.{name}")


def check_config(config: Any) -> None:
    """The same checks on a constructed config dataclass (e.g. one built in Python)."""
    check_config_values(type(config), {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)})


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def _check_value(annotation: Any, value: Any, where: str, key: str) -> None:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return
        options = [o for o in options if o is not type(None)]
        if len(options) == 1:
            return _check_value(options[0], value, where, key)
        errors = []
        for option in options:
            try:
                return _check_value(option, value, where, key)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0])
    if dataclasses.is_dataclass(annotation):
        return check_config_values(annotation, value, f"{where}.")
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list, got {_kind(value)}")
        low, high = LENGTHS.get(key, (0, MAX_TUPLE_LENGTH))
        if not low <= len(value) <= high:
            raise ValueError(f"{where} must list {low}..{high} items, got {len(value)}")
        items = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(items) != len(value):
            raise ValueError(f"{where} must list {len(items)} items, got {len(value)}")
        for i, (item_type, item) in enumerate(zip(items, value)):
            _check_value(item_type, item, f"{where}[{i}]", key)
        return
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {_kind(value)}")
        return
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{where} must be an integer, got {_kind(value)}")
        return _check_range(int(value), where, key)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{where} must be a number, got {_kind(value)}")
        try:
            number = float(value)
        except (OverflowError, ValueError, TypeError):
            number = math.inf
        if not math.isfinite(number):
            raise ValueError(f"{where} must be finite, got {_shown(value)}")
        return _check_range(number, where, key)
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {_kind(value)}")
        if len(value) > 256:
            raise ValueError(f"{where} is too long ({len(value)} characters)")
        return
    # Any other annotation: left to the dataclass's own __post_init__ checks.


def _check_range(value: float, where: str, key: str) -> None:
    low, high = BOUNDS.get(key, (-DEFAULT_BOUND, DEFAULT_BOUND))
    if not low <= value <= high:
        raise ValueError(f"{where} must be in {low:g}..{high:g}, got {_shown(value)}")


def _shown(value: Any) -> str:
    """``value`` for a one-line message, whatever its size: a huge int by its number of digits, never an OverflowError."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)
        if abs(value) < 10**30:
            return str(value)
        return f"{'a negative' if value < 0 else 'an'} integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    try:
        return f"{float(value):.6g}"
    except (OverflowError, ValueError, TypeError):
        return _kind(value)


def _kind(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"
