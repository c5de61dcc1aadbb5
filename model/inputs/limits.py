"""Bounds on every number a user or a file supplies, checked before anything is allocated.

The command line, the plugin and the Python API share these limits, so a
value that one of them refuses, all of them refuse with the same one-line
``ValueError``. Out of memory during a proposal becomes
:class:`InsufficientMemoryError`, one line saying what was asked for.
"""

from __future__ import annotations

import math
import numbers

MAX_IMAGE_PIXELS = 120_000_000
"""Largest image (width x height) read from a file: big dermoscopy photos pass, decompression bombs do not."""

MAX_DECODED_IMAGE_BYTES = MAX_IMAGE_PIXELS * 4 * 4
"""Largest decoded first page (all its channels and bytes per sample): 120 Mpx of four float32 channels."""

MAX_ASPECT_RATIO = 10
"""Longest side over shortest side of an image: wide photographs pass; a 1 x 2,000,000 strip (which would
make the working-size resize and the full-resolution masks huge for no picture of skin) does not."""

MAX_SAMPLES = 256
"""Most proposals (diffusion samples) per image."""

MAX_STEPS = 1000
"""Most DDIM steps per proposal (a model also allows no more than its training timesteps)."""

MAX_WORKING_SIZE = 512
"""Largest working size (the square the network runs at, ``mlffm train --size``): the shipped model runs at 96;
a checkpoint claiming 2048 would need over 13 GB for one proposal of 16 samples."""

MAX_SEED = 2**63 - 1
"""Seeds are integers in 0..MAX_SEED (what a torch generator takes)."""

MAX_PROPOSAL_BYTES = 2**33
"""Most bytes one proposal of N samples of an H x W image may need at the image's resolution: the (N, H, W)
boolean masks and :data:`PROPOSAL_BYTES_PER_PIXEL` of float maps and their intermediates (8.6 GB:
16 samples of a 120-Mpx image need 6.7 GB, 256 samples of it 35 GB)."""

PROPOSAL_BYTES_PER_PIXEL = 40
"""Bytes per image pixel that one proposal needs beside its N masks: the probability, uncertainty and
consensus maps and the temporaries of resizing them (peak memory measured at 36-39 bytes per pixel with
one sample, 57 with 16)."""


class InsufficientMemoryError(MemoryError):
    """The machine ran out of memory for a proposal; the message says what was asked for, in one line."""


def check_int(name: str, value: object, low: int, high: int) -> int:
    """``value`` as an int in ``low..high``; ValueError otherwise (floats and bools are not ints)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {_shown(value)}")
    value = int(value)
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {_shown(value)}")
    return value


def check_float(name: str, value: object, low: float, high: float) -> float:
    """``value`` as a finite float in [low, high]; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {_shown(value)}")
    try:
        number = float(value)
    except (OverflowError, ValueError, TypeError):  # an int beyond float range, or a Real that will not convert
        number = math.nan
    if not (math.isfinite(number) and low <= number <= high):
        raise ValueError(f"{name} must be in [{low:g}, {high:g}], got {_shown(value)}")
    return number


def _shown(value: object) -> str:
    """``value`` for a one-line message: short, and never an error of its own (a 400-digit int is shown by its size)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)
        if abs(value) >= 10**30:
            return f"{'a negative' if value < 0 else 'an'} integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
        return str(value)
    try:
        text = repr(float(value)) if isinstance(value, numbers.Real) and not isinstance(value, bool) else repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__ must not replace the message
        text = f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def check_seed(seed: object) -> int:
    return check_int("seed", seed, 0, MAX_SEED)


def check_image_shape(height: int, width: int, name: str = "image") -> None:
    """Refuse an empty image or one whose sides differ by more than :data:`MAX_ASPECT_RATIO`, before any allocation."""
    height, width = int(height), int(width)
    if height < 1 or width < 1:
        raise ValueError(f"{name} is empty: {width} x {height} pixels")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        shown = f"{ratio:,.1f}".rstrip("0").rstrip(".")
        raise ValueError(
            f"{name} is {width} x {height} pixels: its sides differ {shown}:1, "
            f"above the limit of {MAX_ASPECT_RATIO}:1 (not a photograph this model can segment)"
        )


def check_proposal_size(n_samples: int, height: int, width: int) -> None:
    """Refuse, before anything is allocated, an image above :data:`MAX_IMAGE_PIXELS` (the bound on files
    applies to arrays too) or a proposal that would need more than :data:`MAX_PROPOSAL_BYTES`."""
    pixels = int(height) * int(width)
    if pixels > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"image is {width} x {height} pixels ({pixels / 1e6:,.0f} Mpx), above the limit of "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} Mpx: downsample it first"
        )
    need = (int(n_samples) + PROPOSAL_BYTES_PER_PIXEL) * pixels
    if need > MAX_PROPOSAL_BYTES:
        most = max(MAX_PROPOSAL_BYTES // max(pixels, 1) - PROPOSAL_BYTES_PER_PIXEL, 0)
        raise ValueError(
            f"{n_samples} samples of a {width} x {height} image need about {need / 1e9:.1f} GB "
            f"(limit {MAX_PROPOSAL_BYTES / 1e9:.1f} GB): use at most {most} samples or a smaller image"
        )


def is_out_of_memory(error: BaseException) -> bool:
    """True for a MemoryError, or a torch RuntimeError from a failed CPU allocation."""
    if isinstance(error, MemoryError):
        return True
    if isinstance(error, RuntimeError):
        text = str(error)
        return any(mark in text for mark in ("not enough memory", "DefaultCPUAllocator", "can't allocate memory", "Cannot allocate memory"))
    return False


def out_of_memory(error: BaseException, what: str) -> InsufficientMemoryError:
    """An :class:`InsufficientMemoryError` for ``what`` (e.g. "16 samples of a 640 x 480 image"), in one line."""
    detail = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    if "you tried to allocate" in detail:
        detail = "tried to allocate" + detail.split("you tried to allocate", 1)[1]
    return InsufficientMemoryError(f"out of memory proposing {what} ({detail[:160]}): use fewer samples, a smaller image or a machine with more memory")
