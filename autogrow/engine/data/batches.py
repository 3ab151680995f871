"""Batches of one epoch: the global order, each rank's share of every global batch, and the
tensors the network eats.

Batch order and augmentation are pure functions of ``(seed, epoch, position)`` (see
:mod:`autogrow.engine.augment`), so a run can resume mid-epoch or change its world size and still
see the same data. Device-resident splits are cut and augmented on their device; on-disk splits
go through their :class:`~autogrow.engine.data.image_folder.FolderReader`.
"""

from __future__ import annotations

from typing import Iterator

import torch

from autogrow.engine.augment import augment_batch, epoch_augment_params, epoch_order, normalize
from autogrow.engine.data.splits import FolderSplit, Split, TensorSplit


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Number of global batches in an epoch of ``n`` samples."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, not {batch_size}")
    return n // batch_size if drop_last else -(-n // batch_size)


def shard_bounds(size: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[lo, hi)`` of a global batch of ``size`` that ``rank`` takes (contiguous, sizes differ ≤ 1)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
    q, r = divmod(size, world_size)
    lo = rank * q + min(rank, r)
    return lo, lo + q + (1 if rank < r else 0)


def _plan(
    order: torch.Tensor, batch_size: int, start_step: int, rank: int, world_size: int, drop_last: bool
) -> list[torch.Tensor]:
    """Per step from ``start_step``, the split positions this rank takes from the global batch.

    Built eagerly (views into ``order``) so bad arguments fail at the call, not at the first batch.
    """
    n = int(order.numel())
    steps = steps_per_epoch(n, batch_size, drop_last)
    if not 0 <= start_step <= steps:
        raise ValueError(f"start_step must be in [0, {steps}], not {start_step}")
    plan = []
    for step in range(start_step, steps):
        glob = order[step * batch_size : min((step + 1) * batch_size, n)]
        lo, hi = shard_bounds(int(glob.numel()), rank, world_size)
        plan.append(glob[lo:hi])
    shard_bounds(0, rank, world_size)  # validates rank even when the plan is empty
    return plan


def train_batches(
    split: Split,
    *,
    seed: int,
    epoch: int,
    batch_size: int,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    channels_last: bool = False,
    dtype: torch.dtype = torch.float32,
    augment: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Augmented ``(x, y)`` batches of one epoch, from step ``start_step``, for ``rank``.

    The global order and every sample's augmentation depend only on ``(seed, epoch, position)``;
    each global batch of ``batch_size`` is cut into ``world_size`` contiguous slices (rank ``r``
    takes slice ``r``, possibly empty on a short last batch), so the union over ranks is the
    one-process batch.
    """
    order = epoch_order(len(split), seed, epoch)
    if isinstance(split, TensorSplit):
        order = order.to(split.device)  # one copy per epoch; batches are views of it
    plan = _plan(order, batch_size, start_step, rank, world_size, drop_last)
    if isinstance(split, FolderSplit):
        return split.reader.batches(split, plan, (seed, epoch) if augment else None,
                                    channels_last=channels_last, dtype=dtype)
    return _tensor_train_batches(split, plan, seed, epoch, augment, channels_last, dtype)


def _tensor_train_batches(
    split: TensorSplit,
    plan: list[torch.Tensor],
    seed: int,
    epoch: int,
    augment: bool,
    channels_last: bool,
    dtype: torch.dtype,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    tf, dev = split.transform, split.device
    params = None
    if augment and (tf.crop_padding or tf.hflip):  # MNIST as the original: nothing to draw
        params = epoch_augment_params(len(split), seed, epoch, padding=tf.crop_padding, hflip=tf.hflip).to(dev)
    for positions in plan:
        idx = positions.to(dev)
        x = split.images.index_select(0, idx)
        y = split.labels.index_select(0, idx)
        if params is None:
            yield normalize(x, tf.mean, tf.std, dtype=dtype, channels_last=channels_last), y
        else:
            yield augment_batch(
                x, params.take(idx), padding=tf.crop_padding, mean=tf.mean, std=tf.std,
                dtype=dtype, channels_last=channels_last,
            ), y


def eval_batches(
    split: Split,
    batch_size: int,
    *,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
    channels_last: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised, unaugmented ``(x, y)`` batches in split order, sharded like :func:`train_batches`."""
    plan = _plan(torch.arange(len(split)), batch_size, start_step, rank, world_size, False)
    if isinstance(split, FolderSplit):
        return split.reader.batches(split, plan, None, channels_last=channels_last, dtype=dtype)
    return _tensor_eval_batches(split, plan, channels_last, dtype)


def _tensor_eval_batches(
    split: TensorSplit, plan: list[torch.Tensor], channels_last: bool, dtype: torch.dtype
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    tf = split.transform
    for positions in plan:
        if positions.numel():
            lo, hi = int(positions[0]), int(positions[-1]) + 1  # contiguous in eval order
        else:
            lo = hi = 0
        x = normalize(split.images[lo:hi], tf.mean, tf.std, dtype=dtype, channels_last=channels_last)
        yield x, split.labels[lo:hi]
