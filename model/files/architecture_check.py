"""The stored config and weights against the network they describe, checked before anything is allocated.

The network for a config is built on PyTorch's meta device (no memory), so a
checkpoint whose config would build an oversized network, or whose weights'
names or shapes differ from that network's, is refused with one line naming
the file (:class:`CheckpointError`) before any weight is copied.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np
import torch

from ..config import SegmenterConfig
from ..nets.network import DualPathUNet
from .checkpoint import CheckpointError

MODEL_PREFIX = "model."
"""The prefix of the network's tensors in a checkpoint (other tensors are the training state's)."""
MAX_NETWORK_PARAMETERS = 1_000_000_000
"""Largest network built (4 GB of float32 weights); counted on the meta device before anything is allocated."""


def config_of(path: str | os.PathLike, meta: dict[str, Any]) -> SegmenterConfig:
    """The config in a checkpoint's ``meta``; CheckpointError naming ``path`` if it is not usable or too large."""
    try:
        config = SegmenterConfig.from_dict(meta["config"])
        check_network_size(config)
        return config
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: checkpoint config is not usable ({err})") from None


def _meta_state_shapes(config: SegmenterConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the network's state for ``config``, built on the meta device (nothing allocated)."""
    return {name: shape for name, shape, _ in _network_state(config.network)}


@functools.lru_cache(maxsize=16)
def _network_state(network_config) -> tuple[tuple[str, tuple[int, ...], bool], ...]:
    """(name, shape, is floating point) of each tensor of the network's state."""
    with torch.device("meta"):
        network = DualPathUNet(network_config)
    return tuple((name, tuple(t.shape), t.is_floating_point()) for name, t in network.state_dict().items())


def check_network_size(config: SegmenterConfig) -> None:
    """ValueError if ``config`` builds a network above :data:`MAX_NETWORK_PARAMETERS`."""
    count = sum(int(np.prod(shape)) for shape in _meta_state_shapes(config).values())
    if count > MAX_NETWORK_PARAMETERS:
        raise ValueError(f"the network of this config has {count / 1e9:.1f} billion parameters, above the limit of {MAX_NETWORK_PARAMETERS / 1e9:.0f} billion")


def check_weight_shapes(path: str | os.PathLike, config: SegmenterConfig, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse, before the network is built, weights whose names or shapes differ from the config's architecture."""
    expected = _meta_state_shapes(config)
    stored = {k[len(MODEL_PREFIX):]: tuple(v.shape) for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    wrong = sorted(k for k in set(expected) & set(stored) if expected[k] != stored[k])
    if missing or extra or wrong:
        first = (
            f"missing {missing[0]}" if missing else f"unexpected {extra[0]}" if extra
            else f"{wrong[0]} is {list(stored[wrong[0]])}, the config needs {list(expected[wrong[0]])}"
        )
        raise CheckpointError(f"{path}: weights do not match the stored architecture ({first})")
    # Integer bytes relabelled as weights would load as numbers near 1e9 and give masks; a weight is floating point.
    floating = {name: is_float for name, _, is_float in _network_state(config.network)}
    for name, tensor in tensors.items():
        key = name[len(MODEL_PREFIX):]
        if name.startswith(MODEL_PREFIX) and tensor.is_floating_point() != floating[key]:
            need = "a floating-point" if floating[key] else "an integer"
            raise CheckpointError(f"{path}: weights do not match the stored architecture ({key} is {tensor.dtype}, the network needs {need} tensor)")
