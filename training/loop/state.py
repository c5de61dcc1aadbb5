"""Training state in the one checkpoint format: optimizer, EMA and RNG as named tensors.

A resumable file is an ordinary ``.mlffm`` checkpoint whose model tensors are
the raw weights, plus ``ema.*`` (the moving average), ``optim.*`` (AdamW
moments) and ``rng.torch`` (the data generator's state), with the counters
and optimizer hyper-parameters in the JSON metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

EMA_PREFIX = "ema."
OPTIM_PREFIX = "optim."
RNG_KEY = "rng.torch"


class EMA:
    """Exponential moving average of a network's parameters and buffers.

    The decay warms up as min(decay, (1 + n) / (10 + n)) so early averages
    are not dominated by the random initialisation.
    """

    def __init__(self, network: torch.nn.Module, decay: float, only: Callable[[str], bool] | None = None) -> None:
        """``only``: a test on state-dict names; the others are copied, not averaged (frozen weights stay bit for bit)."""
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.only = only
        self.updates = 0
        self.shadow = {k: v.detach().clone().float() for k, v in network.state_dict().items()}

    @torch.no_grad()
    def update(self, network: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        state = network.state_dict()
        floats = [name for name, value in state.items() if value.dtype.is_floating_point and (self.only is None or self.only(name))]
        shadows = [self.shadow[name] for name in floats]
        # One fused update for all float tensors (hundreds of small kernels on a GPU otherwise).
        torch._foreach_mul_(shadows, decay)
        torch._foreach_add_(shadows, [state[name].detach().float() for name in floats], alpha=1 - decay)
        averaged = set(floats)
        copied = [name for name in state if name not in averaged]
        if copied:  # frozen weights and integer buffers: copied exactly, in one fused call
            torch._foreach_copy_([self.shadow[name] for name in copied], [state[name].detach().to(self.shadow[name].dtype) for name in copied])

    def copy_to(self, network: torch.nn.Module) -> None:
        network.load_state_dict({k: v.to(network.state_dict()[k].dtype) for k, v in self.shadow.items()})


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Flatten an optimizer's state: tensors ``optim.<param index>.<key>`` and JSON param groups."""
    state = optimizer.state_dict()
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            tensors[f"{OPTIM_PREFIX}{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, state["param_groups"]


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> None:
    """Inverse of :func:`optimizer_to_tensors`."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if not name.startswith(OPTIM_PREFIX):
            continue
        index, key = name[len(OPTIM_PREFIX):].split(".", 1)
        state.setdefault(int(index), {})[key] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except ValueError:  # other parameters train now than when it was saved
        raise ValueError(
            "its optimizer state is for another set of trained parameters: resume with the --freeze-base and --click-prob the run started with"
        ) from None


def pack_training_state(
    ema: EMA, optimizer: torch.optim.Optimizer, generator: torch.Generator, counters: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Everything beyond the model weights needed to resume, as (tensors, metadata)."""
    tensors = {EMA_PREFIX + k: v for k, v in ema.shadow.items()}
    optim_tensors, groups = optimizer_to_tensors(optimizer)
    tensors.update(optim_tensors)
    tensors[RNG_KEY] = generator.get_state()
    meta = dict(counters, param_groups=groups, ema_updates=ema.updates)
    return tensors, meta


def unpack_training_state(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], ema: EMA, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> None:
    """Restore what :func:`pack_training_state` saved; raises ValueError if it is incomplete."""
    if RNG_KEY not in tensors or "param_groups" not in meta:
        raise ValueError("this checkpoint holds no training state to resume from (was it written by --resume-able training?)")
    for name in ema.shadow:
        if EMA_PREFIX + name in tensors:
            ema.shadow[name] = tensors[EMA_PREFIX + name].float().clone()
    ema.updates = int(meta.get("ema_updates", 0))
    optimizer_from_tensors(optimizer, tensors, meta["param_groups"])
    generator.set_state(tensors[RNG_KEY])
