"""Choosing the torch device: ``auto`` = cuda > mps > cpu."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn a device name into a ``torch.device``.

    ``auto`` picks CUDA, then Apple MPS, then the CPU. Asking for ``cuda`` or
    ``mps`` where it is absent raises ValueError (no silent fallback), so a
    user who asked for the GPU learns they are not getting it.
    """
    if isinstance(name, torch.device):  # checked as its name is: a torch.device("cuda") without CUDA is no way round
        name = str(name)
    key = str(name).strip().lower()
    if key == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_available() else torch.device("cpu")
    if key.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was requested but CUDA is not available here; use --device cpu or auto")
        return torch.device(key)
    if key == "mps":
        if not mps_available():
            raise ValueError("device 'mps' was requested but Apple MPS is not available here; use --device cpu or auto")
        return torch.device("mps")
    if key == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
