"""Running under ``torchrun``: one process per device, ``torch.distributed`` between them.

``torchrun --nproc_per_node N -m training.cli train|finetune|segment ...``
sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables;
:func:`session` reads them, joins the process group (NCCL for CUDA
training, gloo otherwise) and hands the command a :class:`Distributed`.
Without those variables (or with ``WORLD_SIZE=1``) it hands out
:data:`SINGLE`, whose methods do exactly what a single process always did.

Contract of a distributed training run (see docs/distributed.md):

* ``--batch-size`` is the global batch, as in a single process: every rank
  loads and augments the whole global batch, draws its timesteps and noise,
  and trains on its own contiguous slice of ``batch_size / world_size``
  items. All ranks' random generators therefore stay in step, the epoch
  order is the same everywhere, and the run computes what one process
  would (up to float summation order, and the boundary term's weight sum,
  which is normalised per rank). The learning rate is unchanged.
* One small all-reduce before each batch agrees on stopping: a Ctrl-C or
  SIGTERM on any rank, or the time budget, which only rank 0 measures (it
  also sends its clock's share of the budget for the learning-rate
  schedule). Every rank leaves the epoch at the same batch.
* Validation is sharded by batches of 32 images (each with the seed a single
  process gives it) and gathered, so every rank computes the same Dice.
* Only rank 0 writes files or prints progress; writes stay atomic.
* A lost rank (killed, crashed, out of memory) makes the others fail their
  next collective; :func:`session` turns that into :class:`PeerLostError`,
  one line, instead of a traceback. The process-group timeout
  (``MLFFM_DIST_TIMEOUT`` seconds, default 1800) bounds a rank that hangs.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch

from .interrupt import SignalScope, StopOnInterrupt

TIMEOUT_ENV = "MLFFM_DIST_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 1800.0


class PeerLostError(ConnectionError):
    """Another rank of a torchrun job died or hung; this rank stops without writing anything more."""


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 for a plain process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def label(self) -> str:
        return f"rank {self.rank} of {self.world_size}"

    # ----- training ----------------------------------------------------
    def wrap(self, network: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel around ``network`` (rank 0's weights are broadcast to all); the network itself when alone."""
        if not self.enabled:
            return network
        from torch.nn.parallel import DistributedDataParallel

        device = next(network.parameters()).device
        ids = [device] if device.type == "cuda" else None
        return DistributedDataParallel(network, device_ids=ids)

    def batch_part(self, batch_size: int) -> slice:
        """This rank's contiguous slice of a global batch of ``batch_size`` items."""
        if not self.enabled:
            return slice(None)
        per_rank = batch_size // self.world_size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    def check_batch(self, batch_size: int) -> None:
        if self.enabled and batch_size % self.world_size:
            raise ValueError(
                f"--batch-size {batch_size} is the global batch and must be a multiple of the {self.world_size} "
                f"processes (torchrun --nproc_per_node x --nnodes); try {max(self.world_size, batch_size // self.world_size * self.world_size)}"
            )

    def agree_to_stop(
        self, cancel: Callable[[], bool], elapsed: Callable[[], float], budget: float | None
    ) -> tuple[str | None, float]:
        """(None, "cancel"/"interrupt" or "time budget"; share of the budget spent) for the next batch, the same on every rank.

        ``cancel`` is asked on every rank (a signal may reach any of them);
        ``elapsed`` (seconds of training so far) only on rank 0.
        """
        if not self.enabled:
            if cancel():
                return "cancel", 0.0
            seconds = elapsed()
            if budget is not None and seconds > budget:
                return "time budget", 0.0
            return None, seconds / budget if budget else 0.0
        votes = torch.zeros(3, dtype=torch.float64)
        votes[0] = float(bool(cancel()))
        if self.is_main:
            seconds = elapsed()
            votes[1] = float(budget is not None and seconds > budget)
            votes[2] = seconds / budget if budget else 0.0
        self.all_reduce(votes)
        if votes[0] > 0:
            return "interrupt", 0.0  # under torchrun only a signal (SIGINT, SIGTERM) asks to stop
        if votes[1] > 0:
            return "time budget", 0.0
        return None, float(votes[2])

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks (itself when alone)."""
        if not self.enabled:
            return value
        total = torch.tensor([value], dtype=torch.float64)
        self.all_reduce(total)
        return float(total[0]) / self.world_size

    def validation_dice(self, segmenter: Any, data: Any, steps: int, seed: int = 0) -> float:
        """:func:`training.loop.trainer.validation_dice`, sharded by batch over the ranks and gathered in order."""
        from .trainer import validation_dice, validation_scores

        if not self.enabled:
            return validation_dice(segmenter, data, steps, seed=seed)
        if len(data) == 0:
            return float("nan")
        own = validation_scores(segmenter, data, steps, seed=seed, shard=(self.rank, self.world_size))
        gathered = self.all_gather(own)
        scores = [score for _, chunk in sorted(pair for part in gathered for pair in part) for score in chunk]
        return float(np.mean(scores))

    def prompt_validation(self, segmenter: Any, data: Any, steps: int, seed: int = 0) -> tuple[float, float]:
        """:func:`training.interactive.prompt_training.prompt_validation`, sharded by batch over the ranks."""
        from ..interactive.prompt_training import mean_prompt_scores, prompt_validation, prompt_validation_scores

        if not self.enabled or len(data) == 0:
            return prompt_validation(segmenter, data, steps, seed=seed)
        own = prompt_validation_scores(segmenter, data, steps, seed=seed, shard=(self.rank, self.world_size))
        return mean_prompt_scores([batch for part in self.all_gather(own) for batch in part])

    def check_same_weights(self, network: torch.nn.Module) -> str | None:
        """Raise RuntimeError unless every rank holds bit-identical weights; a line for the log, or None when alone."""
        if not self.enabled:
            return None
        digest = hashlib.sha256()
        for name, value in sorted(network.state_dict().items()):
            digest.update(name.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        digests = self.all_gather(digest.hexdigest())
        if len(set(digests)) != 1:
            raise RuntimeError(f"the {self.world_size} processes ended with different weights ({', '.join(d[:12] for d in digests)}): please report this bug")
        return f"all {self.world_size} processes hold identical weights (sha256 {digests[0][:12]})"

    def provenance(self, batch_size: int) -> dict[str, Any]:
        """What the provenance records about the job's shape (also for a single process)."""
        return {
            "world_size": self.world_size,
            "backend": self.backend,
            "global_batch": batch_size,
            "per_rank_batch": batch_size // self.world_size,
        }

    # ----- collectives ---------------------------------------------------
    def all_reduce(self, tensor: torch.Tensor) -> None:
        """Sum ``tensor`` (a CPU tensor) over the ranks in place; :class:`PeerLostError` if one is gone."""
        import torch.distributed as dist

        device = torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")
        moved = tensor.to(device)
        with peer_errors(self):
            dist.all_reduce(moved)
        tensor.copy_(moved.cpu())

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order."""
        import torch.distributed as dist

        if not self.enabled:
            return [value]
        out: list[Any] = [None] * self.world_size
        with peer_errors(self):
            dist.all_gather_object(out, value)
        return out


SINGLE = Distributed()


def peer_failure(err: BaseException) -> bool:
    """Whether ``err`` is a collective failing because another rank went away (or timed out)."""
    import torch.distributed as dist

    if isinstance(err, getattr(dist, "DistError", ())):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(
        word in text for word in ("gloo", "nccl", "connection", "peer", "timed out", "timeout", "broken pipe", "socket")
    )


@contextmanager
def peer_errors(ctx: Distributed) -> Iterator[None]:
    """Turn a failing collective into :class:`PeerLostError` with one line that says what happened."""
    try:
        yield
    except PeerLostError:
        raise
    except Exception as err:
        if not peer_failure(err):
            raise
        first = re.sub(r"^\[[^\]]*\]\s*", "", str(err).strip().splitlines()[0]) if str(err).strip() else ""
        first = (first[:160] + "...") if len(first) > 160 else first or type(err).__name__
        raise PeerLostError(
            f"{ctx.label}: lost contact with the other processes ({first}); "
            "another rank was killed, failed or hung. Files written so far are complete; rerun (with --resume for training) to continue"
        ) from None


def launch_environment() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from torchrun's environment, or None outside torchrun or for a world of one."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ValueError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (as torchrun sets them)") from None
    if world <= 1:
        return None
    if not 0 <= rank < world:
        raise ValueError(f"RANK {rank} is outside 0..{world - 1} (WORLD_SIZE {world})")
    return rank, world, local


def rank_device(requested: str, ctx: Distributed) -> str:
    """The device one rank uses: ``cuda:LOCAL_RANK`` where CUDA is asked for (or auto and present), else as requested."""
    key = str(requested).strip().lower()
    if ctx.enabled and torch.cuda.is_available() and key in ("auto", "cuda"):
        return f"cuda:{ctx.local_rank % torch.cuda.device_count()}"
    return requested


def timeout_seconds() -> float:
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
        return DEFAULT_TIMEOUT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 1 <= value <= 7 * 24 * 3600:
        raise ValueError(f"{TIMEOUT_ENV}={text!r}: expected seconds between 1 and 604800")
    return value


@contextmanager
def session(device: str = "auto", gpu_collectives: bool = True) -> Iterator[Distributed]:
    """Join the torchrun job described by the environment for the ``with`` block; :data:`SINGLE` outside one.

    ``gpu_collectives``: use NCCL when this rank runs on CUDA (training); gloo
    otherwise (segmentation only gathers a summary). Failures of collectives
    inside the block surface as :class:`PeerLostError`.
    """
    found = launch_environment()
    if found is None:
        yield SINGLE
        return
    import torch.distributed as dist

    rank, world, local = found
    probe = Distributed(rank, world, local)
    on_gpu = rank_device(device, probe).startswith("cuda")
    backend = "nccl" if on_gpu and gpu_collectives else "gloo"
    if on_gpu:
        torch.cuda.set_device(int(rank_device(device, probe).split(":")[1]))
    with peer_errors(probe):
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_seconds()))
    ctx = Distributed(rank, world, local, backend)
    lost = False
    try:
        with peer_errors(ctx):
            yield ctx
            # Leave together: a rank that tears the group down while another still talks to it
            # can abort the other in gloo ("terminate called without an active exception").
            dist.barrier()
    except PeerLostError:
        lost = True  # the group is broken: tearing it down could wait on the dead rank
        raise
    finally:
        if not lost:
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass


class StopOnSignals(SignalScope):
    """Under torchrun: SIGINT and SIGTERM ask the run to stop after this batch (all ranks agree through
    :meth:`Distributed.agree_to_stop`).

    torchrun forwards a Ctrl-C or a scheduler's SIGTERM to every rank, often
    twice in a row, so signals within ``grace`` seconds of the first count
    as one. A later one aborts this rank at once (``os._exit(130)``): files
    are written atomically, so nothing is left half-written, and the other
    ranks report the lost rank.
    """

    def __init__(self, ctx: Distributed, grace: float = 10.0) -> None:
        self.ctx = ctx
        self.grace = grace
        self.requested = False
        self._first = 0.0

    def __call__(self) -> bool:
        return self.requested

    def __bool__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        name = signal.Signals(signum).name
        if not self.requested:
            self.requested, self._first = True, now
            print(f"{self.ctx.label}: {name} received: all ranks stop after this batch and save (again after {self.grace:.0f} s to abort)", file=sys.stderr, flush=True)
        elif now - self._first > self.grace:
            print(f"{self.ctx.label}: {name} again: aborting this rank now (written files stay complete)", file=sys.stderr, flush=True)
            os._exit(130)

    def _restore_to(self, signum: int, previous: Any, exc_type: type[BaseException] | None) -> Any:
        # A rank leaving because another was lost is about to say so and exit; torchrun's agent sends it
        # SIGTERM meanwhile, which must not end it before its one line is printed.
        lost = exc_type is not None and issubclass(exc_type, PeerLostError) and signum == signal.SIGTERM
        return signal.SIG_IGN if lost else previous


def ignore_sigterm() -> None:
    """Ignore SIGTERM from now on (main thread only): a rank that lost a peer is about to say so and exit, and
    torchrun's agent sends it SIGTERM meanwhile, which must not end it before its one line is printed."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def stop_signals(ctx: Distributed) -> Any:
    """The stop flag for a training loop: Ctrl-C handling as before for one process, :class:`StopOnSignals` under torchrun."""
    if not ctx.enabled:
        return StopOnInterrupt()
    return StopOnSignals(ctx)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n; ValueError otherwise."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/n, e.g. 0/4 for the first of 4 jobs") from None
    if count < 1 or not 0 <= index < count or count > 1_000_000:
        raise ValueError(f"--shard {text!r}: need 0 <= i < n (the first job is 0/n)")
    return index, count
