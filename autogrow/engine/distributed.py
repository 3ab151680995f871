"""Several processes (``torchrun``): who writes, how decisions reach every rank, metric sums.

Rank 0 is the only writer of the log and the snapshots. Every event is appended by rank 0 first
and then broadcast, so the other ranks fold exactly rank 0's events (the same growth decision
everywhere) and can never run ahead of a durable write. Messages are the events' JSON, sent as
byte tensors: no pickle.
"""

from __future__ import annotations

import gc
import json
import os
from typing import Any

import attrs
import torch
import torch.distributed as dist


@attrs.frozen
class Dist:
    """This process's place in the group; ``Dist()`` is the single-process case."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")  # where collectives' tensors live
    # A gloo group for small host-side agreements (stop requests) that must not wait on the GPU;
    # None = the default group (gloo already, on CPU).
    control: Any = attrs.field(default=None, eq=False, repr=False)
    # Started by torchrun: collectives run even for one process (`--nproc_per_node 1` exercises
    # the very code paths, NCCL included, that several processes use).
    launched: bool = False

    @property
    def enabled(self) -> bool:
        return self.launched or self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def launched_by_torchrun() -> bool:
    """torchrun (or a launcher like it) describes a process group in the environment."""
    return "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def init_from_env(device: str) -> Dist:
    """Join the group torchrun describes (NCCL on CUDA, gloo on CPU); single process otherwise."""
    if not launched_by_torchrun():
        return SINGLE
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    comm_device = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
    control = dist.new_group(backend="gloo") if use_cuda else None
    return Dist(rank=dist.get_rank(), world_size=dist.get_world_size(), device=comm_device,
                control=control, launched=True)


def shutdown(group: Dist) -> None:
    """Destroy the process group while the interpreter is fully alive. DDP wrappers that are
    garbage but not yet collected (reference cycles) still hold the gloo group; collected at
    interpreter exit, its worker threads were destroyed unjoined and the process aborted
    ("terminate called without an active exception", SIGABRT) after a finished run, under load."""
    if group.enabled and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
        gc.collect()


def broadcast_json(group: Dist, value: Any) -> Any:
    """Rank 0's JSON-able ``value`` on every rank (others pass anything, e.g. None)."""
    if not group.enabled:
        return value
    payload = json.dumps(value).encode() if group.is_main else b""
    size = torch.tensor([len(payload)], dtype=torch.int64, device=group.device)
    dist.broadcast(size, src=0)
    buf = torch.empty(int(size.item()), dtype=torch.uint8, device=group.device)
    if group.is_main:
        buf.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
    dist.broadcast(buf, src=0)
    return value if group.is_main else json.loads(bytes(buf.cpu().tolist()).decode())


def all_reduce_sum(group: Dist, *tensors: torch.Tensor) -> None:
    """Sum each tensor over all ranks, in place."""
    if group.enabled:
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


def all_reduce_max(group: Dist, value: int) -> int:
    """The largest ``value`` over all ranks, agreed on the host (gloo): no wait on the GPU."""
    if not group.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group.control)
    return int(t.item())


def gather_strings(group: Dist, text: str) -> list[str]:
    """Every rank's ``text`` (same length on all ranks, e.g. a hex digest), in rank order."""
    if not group.enabled:
        return [text]
    mine = torch.tensor(list(text.encode()), dtype=torch.uint8, device=group.device)
    out = [torch.empty_like(mine) for _ in range(group.world_size)]
    dist.all_gather(out, mine)
    return [bytes(t.cpu().tolist()).decode() for t in out]


def barrier(group: Dist) -> None:
    if group.enabled:
        dist.barrier()
