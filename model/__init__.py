"""Headless core of napari-mlffm: the MLFFM-SegDiff network, diffusion and `Segmenter`.

Pure PyTorch and numpy; never imports napari, Qt or magicgui.
"""

from .files.checkpoint import CheckpointError
from .config import DiffusionConfig, NetworkConfig, SegmenterConfig
from .devices import resolve_device
from .inputs.limits import InsufficientMemoryError
from .segmenter import NoDefaultWeightsError, Proposal, Segmenter, default_weights_path

__all__ = [
    "CheckpointError",
    "DiffusionConfig",
    "InsufficientMemoryError",
    "NetworkConfig",
    "NoDefaultWeightsError",
    "Proposal",
    "Segmenter",
    "SegmenterConfig",
    "default_weights_path",
    "resolve_device",
]
