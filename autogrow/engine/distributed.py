"""Several processes (``torchrun``): who writes, how decisions reach every rank, metric sums.

Rank 0 is the only writer of the log and the snapshots. Every event is appended by rank 0 first
and then broadcast, so the other ranks fold exactly rank 0's events (the same growth decision
everywhere) and can never run ahead of a durable write. Messages are the events' JSON, sent as
byte tensors: no pickle.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import traceback
from collections.abc import Iterator
from typing import Any

import attrs
import torch
import torch.distributed as dist
# Imported before any process group exists, on purpose: this module binds ``group.WORLD`` as
# the default argument of ten functions when first imported, and DDP imports it lazily. Imported
# after ``init_process_group``, it pins the default group for the life of the interpreter, so
# ``destroy_process_group`` frees nothing, gloo's threads run into interpreter finalization and
# a finished process can abort there (SIGABRT, "terminate called without an active exception").
import torch.distributed.nn.functional  # noqa: F401

from autogrow.config import launched_by_torchrun


@attrs.frozen
class Dist:
    """This process's place in the group; ``Dist()`` is the single-process case."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")  # where collectives' tensors live
    # Started by torchrun: collectives run even for one process (`--nproc_per_node 1` exercises
    # the very code paths, NCCL included, that several processes use).
    launched: bool = False

    @property
    def enabled(self) -> bool:
        return self.launched or self.world_size > 1

    @property
    def control(self) -> Any:
        """A gloo group for small host-side agreements (stop requests) that must not wait on
        the GPU; None = the default group (gloo already, on CPU). Held by this module, not by
        the value, so that :func:`shutdown` can let go of it."""
        return _CONTROL.get("group") if self.enabled else None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()
_CONTROL: dict[str, Any] = {}  # the control group of this process's group, while it runs


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
    if use_cuda:
        _CONTROL["group"] = dist.new_group(backend="gloo")
    return Dist(rank=dist.get_rank(), world_size=dist.get_world_size(), device=comm_device,
                launched=True)


def shutdown(group: Dist) -> None:
    """Destroy the process group while the interpreter is fully alive, and with it every thread
    it started. Whatever still references a group (a DDP wrapper or its reducer, a traceback's
    frames) keeps it, and its threads, alive past ``destroy_process_group``; torn down during
    interpreter finalization, they aborted finished runs (SIGABRT, "terminate called without an
    active exception"). So: drop this module's own reference, collect the garbage cycles that
    may hold wrappers, then destroy."""
    _CONTROL.clear()
    if group.enabled and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
        gc.collect()


def forget_frames(error: BaseException | None) -> None:
    """Clear the locals of the finished frames of ``error``'s traceback (and of the errors it
    chains to): they hold the run, its trainer and DDP wrapper, hence the process group, for as
    long as the error lives — past :func:`shutdown`, into interpreter exit."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__


THREADS_ENV = "AUTOGROW_TEST_THREADS"


def thread_count() -> int:
    """This process's live threads, as the kernel counts them (gloo's are native threads)."""
    return len(os.listdir("/proc/self/task"))


@contextlib.contextmanager
def process_group(device: str) -> Iterator[Dist]:
    """This process's place among those torchrun started (just itself without torchrun); on
    leaving, by any path, no process group nor any of its threads is left.

    Test hook: with ``AUTOGROW_TEST_THREADS=1`` it prints the thread count before the group
    started and after it was shut down (``autogrow-test: threads R BEFORE AFTER``, R the rank),
    so a test can show that nothing of the group outlived it."""
    before = thread_count()
    group = init_from_env(device)
    try:
        yield group
    except BaseException as err:
        forget_frames(err)
        raise
    finally:
        shutdown(group)
        if os.environ.get(THREADS_ENV):
            sys.stderr.flush()  # then one os.write: the line stays whole beside other ranks'
            os.write(2, f"autogrow-test: threads {group.rank} {before} {thread_count()}\n".encode())


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


def hold_rank0_buffers(group: Dist, module: torch.nn.Module) -> None:
    """Every rank takes rank 0's buffers (BatchNorm running statistics), in place.

    Training updates each rank's statistics from its own share of the batch; DDP copies rank
    0's at the start of the next training forward, so until then the ranks differ. Snapshots
    hold rank 0's tensors, so an evaluation on any other buffers would log numbers no snapshot
    can reproduce (a resume or a re-execution would get others). Training is unchanged: DDP
    would have copied the same values at its next step. One broadcast per dtype, not one per
    buffer (a deep net has hundreds): every rank holds the same net, so the same buffers in the
    same order."""
    if not group.enabled:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for buf in module.buffers():
        by_dtype.setdefault(buf.dtype, []).append(buf)
    for bufs in by_dtype.values():
        flat = torch.cat([buf.reshape(-1) for buf in bufs])
        dist.broadcast(flat, src=0)
        for buf, part in zip(bufs, flat.split([buf.numel() for buf in bufs])):
            buf.copy_(part.view_as(buf))


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
