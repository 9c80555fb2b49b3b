"""Data parallelism across processes with torch.distributed (``torchrun --nproc_per_node=K -m seelike ...``).

Each rank streams a disjoint, deterministic share of the batches (batch i goes to rank i mod K) into
its accumulators; the driver then checks that every rank finished and all-reduces the accumulators'
summed state (:meth:`~seelike.analyses.base.SummedState.sync`), so every rank ends with the state of
one process that saw every batch. Only rank 0 writes results, figures and reports. Backend: NCCL
when the models run on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch
import torch.distributed as dist

from seelike.errors import SeelikeError

__all__ = ["RankFailedError", "all_ranks_ok", "batch_size_for_ranks", "init_from_environment", "is_main_process", "rank_share",
           "world"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class RankFailedError(SeelikeError):
    """Another rank of a distributed run failed, so the summed state would miss its share."""


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside a distributed run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """Whether this process writes results (rank 0, or the only process)."""
    return world()[0] == 0


def init_from_environment(device: str = "cpu", timeout_minutes: float = 30.0) -> bool:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, MASTER_ADDR, ...); False outside torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    log.info("rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return True


def rank_share(batches: Iterable[T]) -> Iterator[T]:
    """This rank's batches: batch i when i mod world size == rank (all of them outside a distributed run)."""
    rank, size = world()
    for index, batch in enumerate(batches):
        if index % size == rank:
            yield batch


def batch_size_for_ranks(images: int, batch_size: int) -> int:
    """``batch_size``, or less where ``images`` would otherwise make fewer batches than there are ranks (a pass
    needs a batch on every rank).

    Only for passes whose results do not depend on how the images are batched, such as the probes' sums;
    minibatch CKA's estimate does, so its passes keep the batch size they were given (and say when it is too large).
    """
    ranks = world()[1]
    return max(1, min(batch_size, -(-images // ranks)))


def all_ranks_ok(ok: bool) -> None:
    """Every rank reports whether its share succeeded; raise on every rank if any failed (rank 0 says which)."""
    rank, size = world()
    if size == 1:
        return
    flags = torch.zeros(size, dtype=torch.int64)
    flags[rank] = int(ok)
    if dist.get_backend() == "nccl":  # NCCL reduces CUDA tensors only
        flags = flags.cuda()
    dist.all_reduce(flags)
    failed = [r for r, flag in enumerate(flags.tolist()) if not flag]
    if failed:
        raise RankFailedError(f"rank(s) {failed} of {size} failed (see their error above); no result was written")
