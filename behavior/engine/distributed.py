"""Several processes on one job (``torchrun``): who this process is, and the few collective steps the stages use.

torchrun starts one process per rank and tells each its place through the environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``). Without those variables everything here is the one-process
identity: rank 0 of 1, barriers that return at once, gathers of one list. So a stage written with these helpers
runs unchanged in one process, and only ``python -m`` under torchrun pays for communication.

Collectives act only inside :func:`collective` (a training run that is one job over all ranks): a bench under
torchrun gives each rank runs of its own, and their single-process training must not wait for the others.

The process group is Gloo on CPUs and NCCL on GPUs, chosen from the device. Waiting for the others is bounded
(``TIMEOUT``): a rank that never arrives stops the job with one line naming what was awaited, not a hang.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from behavior.errors import BehaviorError

# Long enough for rank 0's pre-scan of a big set while the others wait for its result.
TIMEOUT = datetime.timedelta(seconds=float(os.environ.get("BEHAVIOR_DIST_TIMEOUT", 1800)))
T = TypeVar("T")


class DistributedError(BehaviorError):
    """The processes of a job could not find or wait for each other."""


@dataclass(frozen=True)
class World:
    rank: int  # this process, 0 .. size - 1
    size: int  # processes in the job
    local_rank: int  # this process on its machine (picks the GPU)

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world() -> World:
    """This process's place in the job, from torchrun's environment (rank 0 of 1 without it)."""
    def number(key: str, default: int) -> int:
        value = os.environ.get(key, "")
        try:
            return int(value) if value else default
        except ValueError:
            raise DistributedError(f"{key}={value}: not an integer (set by torchrun)") from None

    size = number("WORLD_SIZE", 1)
    rank = number("RANK", 0)
    if size < 1 or not 0 <= rank < size:
        raise DistributedError(f"RANK={rank}, WORLD_SIZE={size}: the rank must be in [0, WORLD_SIZE)")
    return World(rank, size, number("LOCAL_RANK", rank))


def start(device: torch.device) -> World:
    """Join the job's process group (once; nothing to do in one process): NCCL for CUDA, Gloo otherwise."""
    here = world()
    if not here.distributed or dist.is_initialized():
        return here
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(here.local_rank)
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        dist.init_process_group(backend, rank=here.rank, world_size=here.size, timeout=TIMEOUT)
    except Exception as err:  # a rendezvous that times out or is refused: say what was awaited
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DistributedError(f"rank {here.rank} of {here.size}: could not join the others at {where} "
                               f"({backend}, waited up to {TIMEOUT.total_seconds():.0f} s): {first}") from None
    return here


SINGLE = World(0, 1, 0)  # one process: every helper here is an identity
_ACTIVE = SINGLE


@contextlib.contextmanager
def collective(here: World) -> Iterator[World]:
    """Within this block the helpers below act over ``here`` (the job's ranks); outside it they are identities."""
    global _ACTIVE
    previous, _ACTIVE = _ACTIVE, here
    try:
        yield here
    finally:
        _ACTIVE = previous


def active() -> World:
    """The ranks the current work is shared over (rank 0 of 1 outside :func:`collective`)."""
    return _ACTIVE


def _shared() -> bool:
    return _ACTIVE.distributed and dist.is_initialized()


def rank_device(device: torch.device, here: World) -> torch.device:
    """This rank's GPU (``cuda:LOCAL_RANK``, wrapping round when there are more ranks than GPUs) when a job of
    several processes runs on CUDA without a GPU named; else ``device`` (a ``cuda:i`` the user named is kept)."""
    if device.type == "cuda" and here.distributed and device.index is None:
        return torch.device("cuda", here.local_rank % max(1, torch.cuda.device_count()))
    return device


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(what: str) -> None:
    """Wait until every rank arrives; ``what`` names the step in the error when one does not."""
    if not _shared():
        return
    try:
        dist.monitored_barrier(timeout=TIMEOUT) if dist.get_backend() == "gloo" else dist.barrier()
    except Exception as err:
        raise DistributedError(f"rank {dist.get_rank()}: waited {TIMEOUT.total_seconds():.0f} s for the other "
                               f"ranks at '{what}': {str(err).strip().splitlines()[0]}") from None


def broadcast(value: T, source: int = 0) -> T:
    """Rank ``source``'s ``value`` on every rank (any picklable object)."""
    if not _shared():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=source)
    return box[0]


def gather(values: Sequence[T]) -> list[T]:
    """Every rank's ``values`` joined in rank order, on every rank."""
    if not _shared():
        return list(values)
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, list(values))
    return [v for part in parts for v in part]


def on_main(work: Callable[[], T]) -> T:
    """``work()`` done once, by rank 0, and its result (or its one-line error) on every rank: a pre-scan or a
    check is not repeated N times, and a refusal stops every rank, not only the one that saw it."""
    if not _shared():
        return work()
    outcome: tuple[T | None, BehaviorError | None] = (None, None)
    if dist.get_rank() == 0:
        try:
            outcome = (work(), None)
        except BehaviorError as err:
            outcome = (None, err)
    value, error = broadcast(outcome)
    if error is not None:
        if dist.get_rank() != 0:
            error.from_rank_0 = True  # said by rank 0 already: the entry point keeps the other ranks quiet
        raise error
    return value


def gather_predictions(indices: np.ndarray, labels: np.ndarray, probs: np.ndarray):
    """Each rank predicted its shard (``shard``: clips rank, rank + size, ...); every rank gets them all back in
    the order of the whole list, as one process would have produced them."""
    here = _ACTIVE
    if not _shared():
        return indices, labels, probs
    parts = gather([(here.rank + np.asarray(indices) * here.size, labels, probs)])
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return indices, labels, probs
    joined = [np.concatenate([p[k] for p in parts]) for k in range(3)]
    order = np.argsort(joined[0], kind="stable")
    return tuple(a[order] for a in joined)


def wrap(model: torch.nn.Module, device: torch.device, sync_bn: bool = False) -> torch.nn.Module:
    """The model as it trains: DistributedDataParallel under torchrun (optionally with SyncBatchNorm), else itself."""
    if not _shared():
        return model
    from torch.nn.parallel import DistributedDataParallel

    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside DistributedDataParallel: what checkpoints save and evaluation runs (no collectives)."""
    return getattr(model, "module", model)


def all_sum(values: Sequence[float]) -> list[float]:
    """The sums over ranks (an epoch's loss, correct and seen counts), on every rank."""
    if not _shared():
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def shard(items: Sequence[T], here: World | None = None) -> list[T]:
    """This rank's share of ``items``: every size-th one from its rank on (no padding, no duplicates); ``here``
    defaults to the :func:`active` ranks."""
    here = here or _ACTIVE
    return list(items[here.rank::here.size])
